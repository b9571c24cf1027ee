"""FeatureShard actor: rolling features for its symbols, one model call per (deployment, tick).

Crash safety: feeds ask shards to checkpoint (every ``checkpoint_every`` of their batches).
Ray restarts a dead shard (``max_restarts``) by running ``__init__`` again, which restores
the checkpoint; the feed then re-sends every batch after the checkpointed sequence number,
so no feature row is lost, and a row computed twice is computed identically. A model call
that fails because a replica died is retried until ``MODEL_RETRY_S`` has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.exceptions import RayActorError

from orchestrator.actors import every_batch
from orchestrator.actors.metrics import ShardMetrics
from orchestrator.config import ShardSettings
from orchestrator.features import FEATURE_NAMES
from orchestrator.features.drift import DriftMonitor
from orchestrator.health.log_limit import limit_logging
from orchestrator.market.timeframes import TIMEFRAMES
from orchestrator.storage import Location, locate
from orchestrator.stream.checkpoint import load_checkpoint, save_checkpoint
from orchestrator.stream.events import ModelOutput, SignalLimits, TickRows, build_predictions
from orchestrator.stream.outcomes import OutcomeTracker
from orchestrator.stream.routing import CanarySplit, publication
from orchestrator.stream.sequencing import BatchSequencer
from orchestrator.stream.shard import FeatureTick, ShardState, feature_rows, merge_by_timeframe
from orchestrator.stream.signals import trend_labels

log = logging.getLogger(__name__)
MODEL_RETRY_S = 60.0
SINK_RETRY_S = 0.2  # a dead sink: send again this often until Ray has restarted it
LATENCY_SAMPLES = 2000
SKIPPED = object()  # a tick with no warm row or no model: nothing to predict or settle
# Drift histograms need a sample, not every row: a live tick (one minute) is counted whole,
# a fast replay's many-minute batch by every k-th row.
DRIFT_ROWS_PER_TICK = 2000


RECENT_TICKS = 60  # "recent_p99": the last minute of a paced one-minute-per-second feed


def latency_summary(samples: list[float]) -> dict:
    if not samples:
        return {"ticks": 0}
    p50, p99 = np.percentile(samples, [50, 99])
    return {
        "ticks": len(samples),
        "p50": round(float(p50), 2),
        "p99": round(float(p99), 2),
        "max": round(float(np.max(samples)), 2),
        "worst_tick": int(np.argmax(samples)),
        "recent_p99": round(float(np.percentile(samples[-RECENT_TICKS:], 99)), 2),
    }


def _restorable(path: Location, timeframes: tuple[str, ...]) -> dict | None:
    """The shard's checkpoint, if it can be restored for this configuration."""
    try:
        snap = load_checkpoint(path)
        if snap is not None and tuple(snap["state"]["timeframes"]) != tuple(timeframes):
            log.warning("shard checkpoint %s is for other timeframes; starting fresh", path)
            return None
        return snap
    except Exception:  # a checkpoint we cannot read means a fresh start, not a dead shard
        log.exception("shard checkpoint %s unreadable; starting fresh", path)
        return None


@ray.remote(max_restarts=-1)
class FeatureShard:
    """One shard of the feature pool.

    ``models`` maps timeframe -> model DeploymentHandles; each tick makes exactly one call
    per (deployment, timeframe) carrying every closed symbol's row, never one per symbol: a
    deployment of one model answers a dict, a group's several models a list of them.
    """

    def __init__(
        self, settings: ShardSettings, models: dict, sink, drift_reference: dict | None = None
    ):
        limit_logging()  # a failure repeated per batch is a few lines, then a count
        self.shard_id = shard_id = settings.shard_id
        config = settings.features
        self._config, self._models, self._sink, self._signals = (
            config,
            models,
            sink,
            settings.signals,
        )
        self._environment = settings.environment
        self._path = locate(settings.run_dir) / f"shard-{shard_id}-of-{settings.n_shards}.pkl"
        snap = _restorable(self._path, config.timeframes)
        charts = config.chart_candles
        self._state = (
            ShardState.from_snapshot(snap["state"], charts)
            if snap
            else ShardState(config.timeframes, charts)
        )
        # feed -> last batch processed; batches are admitted in order (feeds pipeline them)
        self._batches = BatchSequencer(snap["seq"] if snap else {})
        self._durable: dict[str, int] = dict(
            self._batches.last
        )  # feed -> last batch in a checkpoint
        self._checkpointing = asyncio.Lock()
        self._routers_ready = False
        self._stage_s: dict[str, float] = {}
        # Outcome scoring lives with the candles it needs: each shard scores its own symbols'
        # predictions (in parallel with the other shards) and checkpoints it with the features.
        self._outcomes = (
            OutcomeTracker.from_snapshot(snap["outcomes"])
            if snap and "outcomes" in snap
            else OutcomeTracker(window=settings.outcomes.window)
        )
        # Live feature histograms in each timeframe's model training bins, checkpointed with
        # the features, so a restarted shard counts every row exactly once, as outcomes do.
        self._drift = {tf: DriftMonitor(d) for tf, d in (drift_reference or {}).items()}
        for tf, saved in (snap or {}).get("drift", {}).items():
            if tf in self._drift and not self._drift[tf].restore(saved):
                log.info(
                    "shard %d: %s drift bins changed since the checkpoint; counting afresh",
                    shard_id,
                    tf,
                )
        self._unconfirmed: list[asyncio.Task] = []  # sink calls a checkpoint awaits first
        self._counters = {
            "ticks": 0,
            "sink_resends": 0,
            "rows_predicted": 0,
            "rows_cold": 0,
            "model_errors": 0,
            "restored": int(snap is not None),
            "checkpoints": 0,
            "model_retries": 0,
            "stale_ticks_skipped": 0,
            "rows_out_of_distribution": 0,  # any model's rows outside its training data
            "signals_neutral_out_of_distribution": 0,  # direction signals forced NEUTRAL
            "signals_neutral_model_age": 0,
            "challenger_rows_same_as_champion": 0,  # dropped: the same version twice
        }
        self._canaries = CanarySplit(settings.canaries)
        age_days = settings.signals.max_model_age_days
        self._limits = SignalLimits(
            settings.signals.neutral_out_of_distribution,
            None if age_days is None else age_days * 86_400.0,
        )
        self._metrics = ShardMetrics(shard_id)
        self._latency: dict[str, deque] = {}  # recent tick latencies per timeframe (status p50/p99)
        self._batch_latency: dict[str, deque] = {}  # per kind of batch: "1m", "1m+5m", ...

    @every_batch
    async def on_candles(
        self, feed: str, seq: int, batch: pa.RecordBatch, emitted_at_ms: float, warmup: bool = False
    ) -> int:
        """Process batch ``seq`` of ``feed``; returns the feed's last checkpointed batch seq.

        A warm-up batch (history sent at start) only advances the features' state. The next
        batch may update features while this one waits for its model calls.
        """
        if not self._routers_ready:
            await self._warm_routers()
        async with self._batches.turn(feed, seq) as new:
            if new:
                lag_ms = time.time() * 1000.0 - emitted_at_ms
                self._metrics.lag(lag_ms)
                with self._timed("features"):
                    if warmup:
                        self._state.warm_up(batch)
                        ticks = []
                    else:
                        ticks = self._state.process(batch)
                await self._batches.advance(feed, seq)
                if not warmup and self._too_late(lag_ms):
                    self._counters["stale_ticks_skipped"] += len(ticks)
                    self._metrics.skipped()
                    ticks = []
                if not warmup and ticks:
                    await self._predict_ticks(ticks, emitted_at_ms)
        return self._durable.get(feed, -1)

    async def _warm_routers(self) -> None:
        """A handle's first call waits for Serve to tell its router where the replicas are
        (a second or more): pay that during warm-up, not on the first live tick."""
        handles = [h for group in self._models.values() for h in group]
        await asyncio.gather(*(h.describe.remote() for h in handles), return_exceptions=True)
        self._routers_ready = True

    async def _predict_ticks(self, ticks: list[FeatureTick], emitted_at_ms: float) -> None:
        """One model call per (deployment, timeframe) for all of the batch's ticks, concurrently,
        then ONE sink call with every timeframe's predictions; then the outcomes the batch's
        candles settle, in a second call. Scoring (the largest part of a big tick's shard work)
        never delays a prediction, and the batch is still finished, predictions and outcomes
        handed over, before a checkpoint can be taken."""
        self._counters["ticks"] += len(ticks)
        merged = merge_by_timeframe(ticks)
        done = await asyncio.gather(*(self._predict_tick(t, emitted_at_ms) for t in merged))
        predicted = [(t, p) for t, p in zip(merged, done, strict=True) if p is not SKIPPED]
        tables = [p for _, p in predicted if p is not None]
        if tables:
            self._to_sink("deliver", [(p, None) for p in tables])
        # Candle close to the batch's last prediction, by which timeframes closed in it.
        kind = "+".join(
            tf
            for tf in TIMEFRAMES
            if any(t.timeframe == tf and p is not None for t, p in predicted)
        )
        if kind:
            samples = self._batch_latency.setdefault(kind, deque(maxlen=LATENCY_SAMPLES))
            samples.append(time.time() * 1000.0 - emitted_at_ms)
        with self._timed("outcomes"):
            settled = [self._settle(t, p) for t, p in predicted]
        settled = [o for o in settled if o.num_rows]
        if settled:
            self._to_sink("deliver", [(None, o) for o in settled])

    def _to_sink(self, method: str, *args) -> None:
        """A sink call, sent now; the next checkpoint waits until it is delivered. While the
        sink is dead it is sent again (Ray restarts the sink, which drops what it already
        has), so what the shard handed over is never lost with a sink."""
        ref = getattr(self._sink, method).remote(*args)
        self._unconfirmed.append(
            asyncio.get_running_loop().create_task(self._confirm(ref, method, args))
        )

    async def _confirm(self, ref, method: str, args: tuple):
        while True:
            try:
                return await ref
            except RayActorError:
                self._counters["sink_resends"] += 1
                await asyncio.sleep(SINK_RETRY_S)
                ref = getattr(self._sink, method).remote(*args)

    def _settle(self, tick: FeatureTick, predictions: pa.Table | None) -> pa.Table:
        """The outcomes this tick's candles settle (in a multi-minute batch, also of the
        batch's own predictions), even if no model answered this time."""
        if predictions is not None:
            self._outcomes.add_predictions(predictions)
        return self._outcomes.observe_candles(
            tick.exchange,
            tick.symbol,
            tick.timeframe,
            tick.open_time,
            tick.close,
            tick.high,
            tick.low,
        )

    def _too_late(self, lag_ms: float) -> bool:
        return (
            self._config.backpressure == "skip_stale" and lag_ms > self._config.max_lag_s * 1000.0
        )

    def checkpointed_seq(self, feed: str) -> int:
        return self._durable.get(feed, -1)

    async def checkpoint(self) -> None:
        # Between batches: every admitted batch has finished (its predictions are handed
        # to the sink) and none starts until the snapshot is on disk. Rows sent to the sink
        # are not replayed after a restore, so the sink must confirm them first.
        async with self._checkpointing, self._batches.paused() as seq:
            state, outcomes = self._state.snapshot(), self._outcomes.snapshot()
            drift = {tf: m.snapshot() for tf, m in self._drift.items()}
            pending, self._unconfirmed = self._unconfirmed, []
            await asyncio.gather(*pending)
            save_checkpoint(
                self._path, {"state": state, "seq": seq, "outcomes": outcomes, "drift": drift}
            )
            self._durable = seq
            self._counters["checkpoints"] += 1

    def reset_symbols(self, exchange: str, symbols: list[str]) -> None:
        self._state.reset(exchange, symbols)

    async def drop_symbols(self, exchange: str, symbols: list[str]) -> int:
        """Symbols removed from their feed: their features, charts and pending outcomes go,
        and with them from the next checkpoint. Returns once the predictions already made
        for them are with the sink, so the sink may forget them after this."""
        async with self._checkpointing, self._batches.paused():
            await asyncio.gather(*self._unconfirmed, return_exceptions=True)
            dropped = self._state.drop(exchange, symbols)
            self._outcomes.drop(exchange, symbols)
        return dropped

    async def _predict_tick(self, tick: FeatureTick, emitted_at_ms: float):
        """One tick's predictions (None if no model answered), or ``SKIPPED`` when it has no
        warm row or no model (its candles then settle nothing either)."""
        self._counters["rows_cold"] += tick.cold
        if len(tick.features) == 0:
            return SKIPPED
        if tick.timeframe in self._drift:
            stride = -(
                -len(tick.features) // DRIFT_ROWS_PER_TICK
            )  # a systematic sample of big ticks
            self._drift[tick.timeframe].update(tick.features[::stride])
        if self._config.log_features:
            self._to_sink("record_features", feature_rows(tick))
        handles = self._models.get(tick.timeframe, [])
        if not handles:
            return SKIPPED
        with self._timed("model_wait"):
            results = await asyncio.gather(
                *(self._call_model(h, tick.features) for h in handles), return_exceptions=True
            )
        with self._timed("events"):
            rows = TickRows(
                tick.exchange,
                tick.symbol,
                tick.timeframe,
                tick.open_time,
                tick.close,
                emitted_at_ms,
                trend_labels(tick.features, FEATURE_NAMES),
            )
            # A call to several models of one group deployment answers a list, one per model.
            answers = [a for r in results for a in (r if isinstance(r, list) else [r])]
            published, dropped = publication(answers, tick.exchange, tick.symbol, self._canaries)
            self._counters["challenger_rows_same_as_champion"] += dropped
            tables = [
                t for t in (self._to_events(o, rows, p) for o, p in published) if t is not None
            ]
        latency_ms = time.time() * 1000.0 - emitted_at_ms
        self._latency.setdefault(tick.timeframe, deque(maxlen=LATENCY_SAMPLES)).append(latency_ms)
        self._metrics.tick(tick.timeframe, len(tick.features), latency_ms)
        return pa.concat_tables(tables) if tables else None

    @contextlib.contextmanager
    def _timed(self, stage: str):
        """Wall time per stage (status: where a batch's time goes; model_wait overlaps the
        next batch's features)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self._stage_s[stage] = self._stage_s.get(stage, 0.0) + time.perf_counter() - started

    async def _call_model(self, handle, features: np.ndarray) -> dict:
        """One tick's call, retried while the deployment has no healthy replica."""
        deadline = time.monotonic() + MODEL_RETRY_S
        delay = 0.1
        while True:
            try:
                return await handle.predict.remote(features)
            except Exception as exc:  # a dying replica surfaces as several error types
                if time.monotonic() >= deadline:
                    raise
                log.warning(
                    "shard %d: model call failed (%s); retrying", self.shard_id, type(exc).__name__
                )
                self._counters["model_retries"] += 1
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)

    def _to_events(self, output, rows: TickRows, published: np.ndarray | None) -> pa.Table | None:
        if isinstance(output, BaseException):
            self._counters["model_errors"] += 1
            log.warning("shard %d: model call failed: %s", self.shard_id, output)
            return None
        self._counters["rows_predicted"] += len(output.values)
        self._metrics.predictions(output.model_id, len(output.values))
        now_ms = time.time() * 1000.0
        table = build_predictions(
            output,
            rows,
            now_ms,
            self._signals.high,
            self._signals.very_high,
            environment=self._environment,
            limits=self._limits,
            role=output.role,
            published=published,
        )
        self._count_limits(output, table)
        return table

    def _count_limits(self, output: ModelOutput, table: pa.Table) -> None:
        """How often rows fall outside their model's training distribution, and how often
        that or the model's age turned a published direction signal NEUTRAL."""
        signals = pc.fill_null(table.column("published"), True)
        if output.in_distribution is not None:
            outside = int(len(output.in_distribution) - output.in_distribution.sum())
            self._counters["rows_out_of_distribution"] += outside
            self._metrics.out_of_distribution(outside)
            if output.model_type == "direction" and self._limits.neutral_out_of_distribution:
                forced = pc.sum(pc.and_(signals, pc.invert(table.column("in_distribution"))))
                outside = forced.as_py() or 0
                self._counters["signals_neutral_out_of_distribution"] += outside
                self._metrics.forced_neutral("out_of_distribution", outside)
        if output.model_type == "direction" and self._limits.max_model_age_s is not None:
            old = pc.and_(
                signals, pc.greater(table.column("model_age_s"), self._limits.max_model_age_s)
            )
            aged = pc.sum(old).as_py() or 0
            self._counters["signals_neutral_model_age"] += aged
            self._metrics.forced_neutral("model_age", aged)

    def candles(
        self, exchange: str, symbol: str, timeframe: str, limit: int | None = None
    ) -> dict | None:
        """Recent closed candles of one series as plain lists (GET /v1/candles)."""
        found = self._state.candles(exchange, symbol, timeframe, limit)
        return None if found is None else {k: v.tolist() for k, v in found.items()}

    @every_batch
    def outcome_metrics(self) -> dict:
        return self._outcomes.metrics()

    @every_batch
    def drift_counts(self) -> dict[str, tuple[np.ndarray, dict]]:
        """Per timeframe: live counts in the training bins and running moments (the
        pipeline merges shards)."""
        return {tf: (m.counts, m.moments.snapshot()) for tf, m in self._drift.items()}

    def pid(self) -> int:
        return os.getpid()

    @every_batch
    def status(self) -> dict:
        latency = {tf: latency_summary(list(v)) for tf, v in self._latency.items()}
        return {
            "shard": self.shard_id,
            "candles_in": self._state.candles_in,
            "latency_ms": latency,
            "batch_latency_ms": {
                kind: latency_summary(list(v)) for kind, v in self._batch_latency.items()
            },
            "stage_seconds": {k: round(v, 3) for k, v in self._stage_s.items()},
            "symbols": len(self._state.keys),
            "rejected_minutes": self._state.rejected_minutes,
            "outcomes_pending": self._outcomes.pending,
            "batches_given_up": self._batches.skipped,
            **self._counters,
        }
