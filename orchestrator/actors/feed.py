"""FeedActor: runs one feed source behind the closed-candle gate and routes final candles
to the feature shards.

Whatever the source, candles pass validation (bad ones are quarantined and counted), the
exactly-once gate, and gap repair (``fetch_range`` where the source has it) before any shard
sees them. One bad message never stops the feed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.exceptions import RayActorError

from orchestrator import resolve_path
from orchestrator.actors import every_batch
from orchestrator.actors.metrics import FeedMetrics
from orchestrator.config import (
    FeedSettings,
    KafkaFeedConfig,
    ReplayFeedConfig,
    SyntheticFeedConfig,
)
from orchestrator.feeds.base import (
    ChangesSymbols,
    CommitsPosition,
    FetchesRange,
    HasHistory,
    Prefetches,
    Rejecting,
    Snapshottable,
    TakesAnySymbol,
)
from orchestrator.feeds.ccxt.config import ExchangeConfig
from orchestrator.health.log_limit import limit_logging
from orchestrator.market.gate import CandleGate, Gap
from orchestrator.market.schema import CANDLE_SCHEMA
from orchestrator.market.timeframes import MINUTE_MS
from orchestrator.market.validate import table_to_batch
from orchestrator.storage import Location, locate
from orchestrator.stream.checkpoint import load_checkpoint, save_checkpoint
from orchestrator.stream.routing import ShardRouter

log = logging.getLogger(__name__)


SourceConfig = SyntheticFeedConfig | ReplayFeedConfig | ExchangeConfig | KafkaFeedConfig


def build_source(config: SourceConfig, state: dict | None = None, name: str = "feed"):
    """The source for a feed config (imported lazily: a replay never loads ccxt.pro).
    ``state`` is a source snapshot to resume from (offline sources and Kafka offsets; live
    exchanges just go on); ``name`` is the feed's (Kafka's default consumer group)."""
    if isinstance(config, SyntheticFeedConfig):
        from orchestrator.feeds.synthetic import SyntheticSource

        return SyntheticSource(config, state)
    if isinstance(config, ReplayFeedConfig):
        from orchestrator.feeds.replay import ReplaySource

        return ReplaySource(config, state)
    if isinstance(config, KafkaFeedConfig):
        from orchestrator.feeds.kafka import KafkaSource

        return KafkaSource(config, state, name)
    if config.mode == "websocket":
        from orchestrator.feeds.ccxt.ws import CcxtWsSource

        return CcxtWsSource(config)
    from orchestrator.feeds.ccxt.rest import CcxtRestSource

    return CcxtRestSource(config)


class SymbolsNotChangeable(TypeError):
    """This feed's source cannot add or remove symbols while it runs."""


class UnknownSymbols(ValueError):
    """Symbols the feed's exchange (or replay folder) does not have; the message names them."""


def declared_symbols(config: SourceConfig) -> list:
    """The symbols a feed's config names; for a replay of "every file", the files' symbols."""
    if isinstance(config, SyntheticFeedConfig):
        return list(config.symbol_list())
    if isinstance(config, ReplayFeedConfig) and config.symbols is None:
        from orchestrator.feeds.replay import replay_files

        return sorted({symbol for _, symbol in replay_files(resolve_path(config.path), None)})
    return list(config.symbols or ())


def _load_or_none(path: Location) -> dict | None:
    try:
        return load_checkpoint(path)
    except Exception:  # an unreadable checkpoint means a fresh start, not a dead feed
        log.exception("feed checkpoint %s unreadable; starting fresh", path)
        return None


TIME_ORDER = [("open_time", "ascending"), ("symbol", "ascending")]


def now_ms() -> int:
    return int(time.time() * 1000)


class ShardLink:
    """The feed's ordered, replayable channel to one shard.

    Every batch gets the next sequence number and stays buffered until the shard reports
    a checkpoint covering it; if the shard dies, the batches after its restored checkpoint
    are sent again in order. Up to ``in_flight`` batches are outstanding at once (the shard
    processes them in sequence order); a full window makes ``send`` wait: backpressure.
    """

    def __init__(self, feed: str, shard, in_flight: int = 1):
        self.feed, self.shard = feed, shard
        self.next_seq = 0
        self.unacked: deque[tuple[int, pa.RecordBatch, float, bool]] = (
            deque()
        )  # seq, batch, emitted, warm-up
        self.recoveries = 0
        self.errors = 0
        self._window = asyncio.Semaphore(in_flight)
        self._outstanding: set[asyncio.Task] = set()
        self._recovering = asyncio.Lock()

    async def send(self, batch: pa.RecordBatch, emitted_at_ms: float, warmup: bool = False) -> None:
        """Returns once the batch is on its way (a window slot was free)."""
        item = (self.next_seq, batch, emitted_at_ms, warmup)
        self.unacked.append(item)
        self.next_seq += 1
        await self._window.acquire()
        task = asyncio.get_running_loop().create_task(self._deliver(item))
        self._outstanding.add(task)
        task.add_done_callback(self._outstanding.discard)

    def in_flight(self) -> list[asyncio.Task]:
        """The deliveries under way now (not those sent after)."""
        return list(self._outstanding)

    async def drain(self) -> None:
        """Wait until every batch sent so far has been processed."""
        while self._outstanding:
            await asyncio.gather(*self._outstanding)

    async def _deliver(self, item: tuple) -> None:
        try:
            self._ack(await self.shard.on_candles.remote(self.feed, *item))
        except RayActorError:
            await self._recover()
        except Exception:  # counted; the batch stays unacked and the stream goes on
            self.errors += 1
            log.exception("feed %s: shard call failed", self.feed)
        finally:
            self._window.release()

    def _ack(self, durable_seq: int) -> None:
        while self.unacked and self.unacked[0][0] <= durable_seq:
            self.unacked.popleft()

    async def _recover(self) -> None:
        """Wait for Ray to restart the shard, then replay what its checkpoint lacks, in order
        (one recovery at a time: every failed call of the window lands here)."""
        async with self._recovering:
            self.recoveries += 1
            while True:
                try:
                    self._ack(await self.shard.checkpointed_seq.remote(self.feed))
                    for item in list(self.unacked):
                        self._ack(await self.shard.on_candles.remote(self.feed, *item))
                    return
                except RayActorError:
                    await asyncio.sleep(0.2)


@ray.remote(max_restarts=-1)
class FeedActor:
    """Crash safety: every ``checkpoint_every`` minutes the feed checkpoints all shards, then
    itself (source position, gate). Nothing it routed before is then lost: a restarted feed
    resumes from its checkpoint under a new epoch, and shards skip candles they already have.
    """

    def __init__(self, settings: FeedSettings, shards: list):
        limit_logging()  # a failure repeated per batch is a few lines, then a count
        self.name = name = settings.name
        config, in_flight = settings.source, settings.in_flight
        self._path = locate(settings.run_dir) / f"feed-{name}.pkl"
        snap = _load_or_none(self._path)
        self._source = build_source(config, snap and snap["source"], name)
        any_symbol = isinstance(self._source, TakesAnySymbol) and self._source.takes_any_symbol()
        self._gate = (
            CandleGate.from_snapshot(snap["gate"])
            if snap
            else CandleGate(
                self._source.exchange, "1m", symbols=None if any_symbol else self._source.symbols
            )
        )
        self._epoch = snap["epoch"] + 1 if snap else 0
        self._warmed = bool(snap and snap["warmed"])
        # Candles of symbols added while running, not yet sent: their history first, then any
        # live candle of theirs that came meanwhile. A few minutes of it go before each batch,
        # so the other symbols' ticks never wait behind a whole warm-up.
        self._warming: pa.Table | None = snap.get("warming") if snap else None
        self._warmup_minutes_per_batch = settings.warmup_minutes_per_batch
        # Symbols added or removed while running outlive a restart (their own small record,
        # written at each change), until a redeploy names another list: then the config wins.
        self._declared = declared_symbols(config)
        self._symbols_path = locate(settings.run_dir) / f"feed-{name}-symbols.pkl"
        record = _load_or_none(self._symbols_path)
        kept = record and record["declared"] == self._declared and record["symbols"]
        # A restored offline source brings its own set: the target overrides it either way.
        self._target: list[str] | None = list(kept) if kept else (self._declared if snap else None)
        self._changing = asyncio.Lock()  # held by each batch; a change goes between two
        self._admin = asyncio.Lock()  # one symbol change at a time
        self._links = [ShardLink(f"{name}#{self._epoch}", shard, in_flight) for shard in shards]
        self._router = ShardRouter(len(shards))
        self._checkpoint_every, self._since_checkpoint = settings.checkpoint_every, 0
        self._warmup_minutes = config.warmup_minutes
        self._metrics = FeedMetrics(name)
        self._metrics_due = 0.0
        self._counters = {
            "batches": 0,
            "candles": 0,
            "source_errors": 0,
            "step_errors": 0,
            "warmup_candles": 0,
            "unrepairable_gaps": 0,
            "checkpoints": 0,
            "symbols_added": 0,
            "symbols_removed": 0,
            "position_commits": 0,
            "position_commit_errors": 0,
        }
        self._last_open_time: int | None = None
        self._done = False
        self._times: dict[str, float] = {}  # wall clock: live_since (after warm-up), done_at
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Start the feed loop; also restarts a loop that died (the supervisor calls this)."""
        if self._task is None or (self._task.done() and not self._done):
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async with self._changing:
            if self._warmup_minutes and not self._warmed:
                started = time.monotonic()
                await self._warm_up()
                sent = time.monotonic()
                # Live candles start once the shards hold the history (and their model routers
                # are up), so the first live tick does not queue behind the warm-up.
                await asyncio.gather(*(link.drain() for link in self._links))
                log.info(
                    "feed %s: live; its %d warm-up candles took %.1f s to fetch, then %.1f s"
                    " in the shards",
                    self.name,
                    self._counters["warmup_candles"],
                    sent - started,
                    time.monotonic() - sent,
                )
        if self._target is not None and isinstance(self._source, ChangesSymbols):
            await self._restore_symbols(self._target)
        self._times["live_since"] = time.time()
        while True:
            failed = False
            async with self._changing:  # fair: a waiting symbol change goes before the next
                try:
                    batch = await self._source.next_batch()
                except Exception:  # a source error is counted and retried, never fatal
                    self._counters["source_errors"] += 1
                    log.exception("feed %s: source error", self.name)
                    failed = True
                else:
                    if batch is None:
                        break
                    await self._step(batch)
            if failed:
                await asyncio.sleep(1.0)
        await self._route(self._gate.flush(now_ms() + 10**12))  # a finished source: all is final
        await self._warm_some(everything=True)
        await self.checkpoint()
        self._done = True
        self._times["done_at"] = time.time()
        log.info("feed %s: source exhausted", self.name)

    async def _warm_up(self) -> None:
        """Send history first, marked warm-up: shards update state but predict nothing."""
        try:
            history = await self._history(self._warmup_minutes)
            await self._route(self._gate.offer(history, now_ms()), warmup=True)
            self._counters["warmup_candles"] = history.num_rows
            self._warmed = True
        except Exception:  # no history is a slower start, not a dead feed
            log.exception("feed %s: warm-up failed; features warm up on live candles", self.name)

    async def _history(self, minutes: int) -> pa.RecordBatch:
        if isinstance(self._source, HasHistory):
            return await self._source.history(minutes)
        if not isinstance(self._source, FetchesRange):
            raise TypeError(f"{self._source!r} has neither history nor fetch_range")
        end = now_ms() // MINUTE_MS * MINUTE_MS  # the open minute is not history yet
        parts = await asyncio.gather(
            *(
                self._source.fetch_range(s, end - minutes * MINUTE_MS, end)
                for s in self._source.symbols
            )
        )
        return table_to_batch(
            pa.Table.from_batches([p for p in parts if p.num_rows], CANDLE_SCHEMA)
        )

    async def _step(self, batch: pa.RecordBatch) -> None:
        try:
            if isinstance(self._source, Rejecting):  # messages that held no candle at all
                for rejects in self._source.take_rejects():
                    self._gate.quarantine.add(rejects)
            await self._warm_some()
            await self._route(self._gate.offer(batch, now_ms()))
            await self._repair_gaps()
            self._publish_metrics()
            # Counted in minutes, so a fast replay's multi-minute batches checkpoint as often
            # (in candles) as a live feed: the sink's replay memory is sized for that.
            self._since_checkpoint += max(1, pc.count_distinct(batch.column("open_time")).as_py())
            if self._since_checkpoint >= self._checkpoint_every:
                await self.checkpoint()
        except Exception:  # one bad batch is counted and logged; the feed goes on
            self._counters["step_errors"] += 1
            log.exception("feed %s: batch failed", self.name)

    async def _repair_gaps(self) -> None:
        for gap in self._gate.take_gaps():
            repaired = await self._fetch_gap(gap)
            resolution = self._gate.resolve_gap(gap, repaired, now_ms())
            if not resolution.unrepairable:
                await self._route(resolution.candles)
                continue
            # Indicators must not bridge a hole: the candles after the last hole follow a reset.
            after = pc.greater_equal(
                resolution.candles.column("open_time"), resolution.unrepairable[-1].end_ms
            )
            await self._route(resolution.candles.filter(pc.invert(after)))
            await self._reset_after_gap(gap)
            await self._route(resolution.candles.filter(after))

    async def _reset_after_gap(self, gap: Gap) -> None:
        self._counters["unrepairable_gaps"] += 1
        log.warning("feed %s: unrepairable gap %s; %s warms up again", self.name, gap, gap.symbol)
        shard_id = self._router.shards([gap.exchange], [gap.symbol])[0]
        await self._links[shard_id].drain()  # the reset goes between the batches around it
        await self._links[shard_id].shard.reset_symbols.remote(gap.exchange, [gap.symbol])

    # --- symbols added and removed while running ----------------------------------------
    async def change_symbols(
        self, add: list[str], remove: list[str], warmup_minutes: int | None = None
    ) -> dict:
        """Add and remove symbols (the admin endpoint). The new symbols' history is fetched
        while the feed runs; it pauses between two batches only to switch its set and queue
        that history. The answer comes once the change is recorded: a restart keeps it."""
        async with self._admin:
            return await self._change(add, remove, warmup_minutes)

    async def declare(self, symbols: list[str]) -> dict:
        """A redeploy names ``symbols`` for this feed: run exactly those from now on."""
        async with self._admin:
            before, self._declared = self._declared, list(symbols)
            try:
                return await self._change(*self._difference(symbols), None)
            except Exception:  # not applied: the list last applied stays the declared one
                self._declared = before
                raise

    def symbols(self) -> list[str]:
        return list(self._source.symbols)

    def _difference(self, target: list[str]) -> tuple[list[str], list[str]]:
        current, wanted = set(self._source.symbols), set(target)
        add = [s for s in target if s not in current]
        return add, [s for s in self._source.symbols if s not in wanted]

    async def _restore_symbols(self, target: list[str]) -> None:
        """After a restart, the set recorded last (additions warm up again)."""
        async with self._admin:
            try:
                await self._change(*self._difference(target), None)
            except Exception:  # e.g. a symbol delisted since: the config's set runs instead
                log.exception("feed %s: could not restore its symbols", self.name)

    async def _change(self, add: list[str], remove: list[str], warmup_minutes: int | None) -> dict:
        if not isinstance(self._source, ChangesSymbols):
            raise SymbolsNotChangeable(
                f"feed {self.name}: a {type(self._source).__name__} cannot change symbols"
            )
        current = set(self._source.symbols)
        adding = [s for s in dict.fromkeys(add) if s not in current]
        removing = [s for s in dict.fromkeys(remove) if s in current]
        minutes = self._warmup_minutes if warmup_minutes is None else warmup_minutes
        if adding:
            if unknown := await self._source.unknown_symbols(adding):
                raise UnknownSymbols(
                    f"feed {self.name}: not on {self._source.exchange}: {', '.join(unknown)}"
                )
            if isinstance(self._source, Prefetches):
                await self._source.prefetch(adding, minutes)
        async with self._changing:  # between two batches
            in_flight = self._stop(removing) if removing else []
            history, warmup_from = await self._start(adding, minutes) if adding else (0, None)
        if removing:
            await self._drop(removing, in_flight)
        save_checkpoint(
            self._symbols_path,
            {"symbols": list(self._source.symbols), "declared": self._declared},
        )
        self._counters["symbols_added"] += len(adding)
        self._counters["symbols_removed"] += len(removing)
        if adding or removing:
            log.info(
                "feed %s: +%d symbols (%d warm-up candles), -%d; %d now",
                self.name,
                len(adding),
                history,
                len(removing),
                len(self._source.symbols),
            )
        return {
            "feed": self.name,
            "exchange": self._source.exchange,
            "added": adding,
            "removed": removing,
            "unchanged": [s for s in (*add, *remove) if s not in adding and s not in removing],
            "warmup_candles": history,
            "warmup_from": warmup_from,
            "symbols": len(self._source.symbols),
        }

    async def _start(self, symbols: list[str], warmup_minutes: int) -> tuple[int, int | None]:
        """Their history is queued, to go a few minutes before each batch, marked warm-up,
        with their live candles behind it: their first candle after it is predicted."""
        history = await self._source.add_symbols(symbols, warmup_minutes)
        self._gate.set_symbols(self._source.symbols)
        final = self._gate.offer(history, now_ms())
        if final.num_rows == 0:
            return 0, None
        self._hold(final)
        return history.num_rows, int(pc.min(final["open_time"]).as_py())

    def _stop(self, symbols: list[str]) -> list[asyncio.Task]:
        """Nothing more is routed for them; returns the deliveries still under way."""
        self._source.remove_symbols(symbols)
        self._gate.set_symbols(self._source.symbols)
        self._gate.forget(symbols)
        if self._warming is not None:
            kept = pc.invert(pc.is_in(self._warming["symbol"], value_set=pa.array(symbols)))
            self._warming = self._warming.filter(kept) if pc.any(kept).as_py() else None
        return [task for link in self._links for task in link.in_flight()]

    async def _drop(self, symbols: list[str], in_flight: list[asyncio.Task]) -> None:
        """Once the batches that may still carry them are through (the feed goes on), every
        shard drops their features, charts and pending outcomes."""
        await asyncio.gather(*in_flight, return_exceptions=True)
        exchange = self._source.exchange
        shard_of_symbol = self._router.shards([exchange] * len(symbols), symbols)
        await asyncio.gather(
            *(
                self._links[shard_id].shard.drop_symbols.remote(
                    exchange,
                    [s for s, i in zip(symbols, shard_of_symbol, strict=True) if i == shard_id],
                )
                for shard_id in np.unique(shard_of_symbol)
            )
        )

    def _hold(self, candles: pa.RecordBatch | pa.Table) -> None:
        table = candles if isinstance(candles, pa.Table) else pa.Table.from_batches([candles])
        parts = [table] if self._warming is None else [self._warming, table]
        self._warming = pa.concat_tables(parts).sort_by(TIME_ORDER)

    async def _warm_some(self, everything: bool = False) -> None:
        """Send the next ``warmup_minutes_per_batch`` minutes of the warming candles (all of
        them when the source is done), marked warm-up."""
        if self._warming is None:
            return
        times = self._warming["open_time"]
        minutes = pc.unique(times).to_numpy()
        if everything or len(minutes) <= self._warmup_minutes_per_batch:
            chunk, self._warming = self._warming, None
        else:
            later = pc.greater_equal(times, int(np.sort(minutes)[self._warmup_minutes_per_batch]))
            chunk, self._warming = (
                self._warming.filter(pc.invert(later)),
                self._warming.filter(later),
            )
        await self._route(table_to_batch(chunk), warmup=True)

    async def _fetch_gap(self, gap: Gap) -> pa.RecordBatch | None:
        if not isinstance(self._source, FetchesRange):
            return None
        try:
            return await self._source.fetch_range(gap.symbol, gap.start_ms, gap.end_ms)
        except Exception:
            log.exception("feed %s: gap repair failed for %s", self.name, gap)
            return None

    async def _route(self, batch: pa.RecordBatch, warmup: bool = False) -> None:
        if self._warming is not None and not warmup and batch.num_rows:
            held = pc.is_in(batch.column("symbol"), value_set=pc.unique(self._warming["symbol"]))
            if pc.any(held).as_py():  # a symbol still warming up: after its history, in order
                self._hold(batch.filter(held))
                batch = batch.filter(pc.invert(held))
        if batch.num_rows == 0:
            return
        emitted_at_ms = time.time() * 1000.0
        shard_of_row = self._router.shards(batch.column("exchange"), batch.column("symbol"))
        sends = [
            self._links[shard_id].send(
                batch.filter(pa.array(shard_of_row == shard_id)), emitted_at_ms, warmup
            )
            for shard_id in np.unique(shard_of_row)
        ]
        # A shard's full window is the backpressure: a feed never runs more than ``in_flight``
        # batches ahead of its slowest shard.
        await asyncio.gather(*sends)
        self._counters["batches"] += 1
        self._counters["candles"] += batch.num_rows
        self._metrics.candles(batch.num_rows)
        self._last_open_time = int(pc.max(batch.column("open_time")).as_py())

    async def checkpoint(self) -> bool:
        """Shards first (everything routed so far becomes durable), then this feed's position."""
        try:
            await asyncio.gather(*(link.drain() for link in self._links))
            await asyncio.gather(*(link.shard.checkpoint.remote() for link in self._links))
        except RayActorError:  # a shard is restarting: its link replays; checkpoint next time
            return False
        source = self._source.snapshot() if isinstance(self._source, Snapshottable) else None
        save_checkpoint(
            self._path,
            {
                "source": source,
                "epoch": self._epoch,
                "gate": self._gate.snapshot(),
                "warmed": self._warmed,
                "warming": self._warming,
            },
        )
        for link in self._links:
            link.unacked.clear()
        self._since_checkpoint = 0
        self._counters["checkpoints"] += 1
        if isinstance(self._source, CommitsPosition):
            await self._commit(source)
        return True

    async def _commit(self, position: dict | None) -> None:
        """Upstream learns the checkpointed position; failing that (a broker outage) costs
        nothing but a re-read after a crash: the checkpoint itself holds the position."""
        try:
            await self._source.commit(position)
            self._counters["position_commits"] += 1
        except Exception as exc:  # noqa: BLE001 - the next checkpoint commits again
            self._counters["position_commit_errors"] += 1
            log.warning("feed %s: committing its position upstream failed: %s", self.name, exc)

    def _publish_metrics(self) -> None:
        if time.monotonic() >= self._metrics_due:  # at most once a second, not per batch
            self._metrics.gate(self._gate.status(), self._source.status())
            self._metrics_due = time.monotonic() + 1.0

    def pid(self) -> int:
        return os.getpid()

    def quarantine(self, limit: int = 100) -> list[dict]:
        """The most recent rejected candles: reason, exchange, symbol, open time, raw row."""
        return [r.to_dict() for r in self._gate.quarantine.records[-limit:]]

    @every_batch
    def status(self) -> dict:
        return {
            "name": self.name,
            "epoch": self._epoch,
            "running": self._task is not None and not self._task.done(),
            "done": self._done,
            "last_open_time": self._last_open_time,
            "source": self._source.status(),
            "gate": self._gate.status(),
            "shard_recoveries": sum(link.recoveries for link in self._links),
            "shard_call_errors": sum(link.errors for link in self._links),
            "unacked_batches": sum(len(link.unacked) for link in self._links),
            "warming_candles": 0 if self._warming is None else self._warming.num_rows,
            **self._times,
            **self._counters,
        }
