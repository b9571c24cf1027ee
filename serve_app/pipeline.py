"""Pipeline: the supervisor deployment that starts the feed, feature and sink actors.

The actors are created by this replica, so Ray ties their lives to it: ``serve run`` brings
the whole pipeline up with the application and ``serve shutdown`` takes it down. Ray
restarts a dead actor; the supervisor restarts a feed's loop after that. If the supervisor
itself dies, Serve restarts it, its actors die with it, and the new ones resume from the
checkpoints in ``stream.state_dir/<environment>`` (the sink drops the predictions they repeat).
"""

from __future__ import annotations

import asyncio
import logging
import os

import numpy as np
import ray
from ray import serve

from orchestrator.actors.feed import (
    FeedActor,
    SymbolsNotChangeable,
    UnknownSymbols,
    declared_symbols,
)
from orchestrator.actors.metrics import PipelineMetrics
from orchestrator.actors.shard import FeatureShard
from orchestrator.actors.sink import PredictionSink
from orchestrator.config import (
    ConfigError,
    FeedSettings,
    SyntheticFeedConfig,
    TickcastConfig,
    with_feed_symbols,
)
from orchestrator.features.drift import RunningMoments, drift_psi, summarize_psi
from orchestrator.models.registry import open_registry
from orchestrator.storage import locate
from orchestrator.stream.outcomes import merge_metrics
from orchestrator.stream.routing import shard_of
from serve_app.api.backend import BackendError
from serve_app.model_group import calls_per_tick

log = logging.getLogger("ray.serve")


def training_distributions(config: TickcastConfig) -> dict[str, dict]:
    """Per timeframe, the training feature distribution of its first model that stored one."""
    registry = open_registry(config.models_dir)
    found: dict[str, dict] = {}
    for ref in config.models:
        manifest = registry.resolve(ref.model_type, ref.timeframe, ref.version, ref.role)
        distribution = getattr(manifest, "training_distribution", None)
        if distribution and ref.timeframe not in found:
            found[ref.timeframe] = distribution
    return found


def drift_report(distribution: dict, shard_parts: list[tuple]) -> dict:
    if not shard_parts or sum(counts.sum() for counts, _ in shard_parts) == 0:
        return {"rows": 0}
    counts = sum(c for c, _ in shard_parts)
    moments = RunningMoments.from_snapshot(shard_parts[0][1])
    for _, other in shard_parts[1:]:
        moments.merge(RunningMoments.from_snapshot(other))
    names = distribution["feature_names"]
    return {
        "rows": int(moments.count.max()),
        **summarize_psi(drift_psi(distribution, counts)),
        "live_mean": dict(zip(names, np.round(moments.mean, 6).tolist(), strict=True)),
        "live_std": dict(zip(names, np.round(moments.std, 6).tolist(), strict=True)),
        "training_mean": dict(zip(names, distribution["mean"], strict=True)),
    }


def models_by_timeframe(config: TickcastConfig, handles: dict) -> dict[str, list]:
    """Timeframe -> what a shard calls on each of its ticks: one handle per deployment (a
    group's models of that timeframe are one call)."""
    grouped: dict[str, list] = {}
    for ref in config.models:
        grouped.setdefault(ref.timeframe, []).append(handles[ref.serving_key])
    return {tf: calls_per_tick(members) for tf, members in grouped.items()}


def startup_summary(config: TickcastConfig) -> str:
    """What runs, in a few lines a newcomer reads among Ray's: feeds, shards, models, outputs."""
    feeds = [
        f"{s.name} ({s.source.kind}, {s.source.exchange}, {_symbols(s.source)})"
        for s in config.feed_settings()
    ]
    models = ", ".join(
        m.key if m.role == "production" else f"{m.key} {m.version} ({m.role})"
        for m in config.models
    )
    bus = config.sink.redis_url and config.sink.redis_url.split("@")[-1]  # no password
    return "\n".join(
        [
            f"tickcast {config.environment} started:",
            f"  feeds:  {'; '.join(feeds) or 'none'}",
            f"  shards: {config.features.shards} on {', '.join(config.features.timeframes)}",
            f"  models: {models}",
            f"  log:    {locate(config.sink.log_dir)}; bus: {bus or 'off'}; "
            f"kafka: {_kafka_out(config)}",
            "  API and dashboard: the Serve proxy (http_options), e.g. http://127.0.0.1:8000/",
        ]
    )


def _kafka_out(config: TickcastConfig) -> str:
    kafka = config.sink.kafka
    if kafka is None:
        return "off"
    topics = ", ".join(t for t in (kafka.predictions_topic, kafka.outcomes_topic) if t)
    mode = "transactions" if kafka.transactional else "idempotent"
    return f"{topics} on {kafka.bootstrap_servers} ({mode})"


def _symbols(source) -> str:
    if isinstance(source, SyntheticFeedConfig):
        return f"{len(source.symbol_list())} symbols"
    if source.symbols is not None:
        return f"{len(source.symbols)} symbols"
    return "any symbol on its topics" if source.kind == "kafka" else "every symbol in its files"


SUPERVISE_EVERY_S = 1.0
METRICS_EVERY_ROUNDS = 10


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.1})
class Pipeline:
    async def __init__(self, config: TickcastConfig, model_handles: dict):
        self.config = config
        self.run_id = config.environment
        place = config.placement
        self.sink = PredictionSink.options(**place.sink.actor_options(0.1)).remote(
            self.config.sink_settings()
        )
        by_tf = models_by_timeframe(self.config, model_handles)
        self.drift_reference = training_distributions(self.config)
        self.shards = [
            FeatureShard.options(**place.shards.actor_options(config.features.num_cpus)).remote(
                settings, by_tf, self.sink, self.drift_reference
            )
            for settings in config.shard_settings()
        ]
        # The feeds start in the first reconfigure: their symbol lists come in user_config,
        # so a `serve deploy` that changes only them reconfigures this replica in place.
        self.feed_names: list[str] = []  # status and quarantine name them
        self.feeds: list = []
        self._symbol_lists: list | None = None
        self.feed_restarts = 0
        self.metrics = PipelineMetrics()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def reconfigure(self, user_config: dict) -> None:
        """``{"symbols": [per feed: its symbol list, or None for every replay file]}``.

        The first call starts the feeds; a later one (``serve deploy`` with other lists)
        declares the new lists to the running feeds, starts feed actors a longer list needs
        and retires those it no longer does, without stopping anything else."""
        lists = user_config.get("symbols")
        if not isinstance(lists, list):
            raise ConfigError(
                "the Pipeline's user_config needs `symbols`: one list per feed (null: every "
                f"replay file); got {user_config!r}"
            )
        if lists == self._symbol_lists:
            return
        config = with_feed_symbols(self.config, lists)
        settings = {s.name: s for s in config.feed_settings()}
        if self._symbol_lists is None:
            self._start_feeds(list(settings.values()))
            log.info("%s", startup_summary(config))
        else:
            await self._redeclare(settings)
        self._symbol_lists = lists

    def _start_feeds(self, settings: list[FeedSettings]) -> None:
        for feed in settings:
            options = self.config.placement.feeds.actor_options(0.1)
            self.feeds.append(FeedActor.options(**options).remote(feed, self.shards))
            self.feed_names.append(feed.name)

    async def _redeclare(self, settings: dict[str, FeedSettings]) -> None:
        running = dict(zip(self.feed_names, self.feeds, strict=True))
        for name in [n for n in running if n not in settings]:
            await self._retire(name, running[name])
        kept = [n for n in settings if n in running]
        results = await asyncio.gather(
            *(running[n].declare.remote(declared_symbols(settings[n].source)) for n in kept),
            return_exceptions=True,
        )
        for name, result in zip(kept, results, strict=True):
            if isinstance(result, BaseException):  # the others still change; this one says why
                log.error("feed %s: new symbol list not applied: %s", name, result)
            else:
                await self._forget_removed(result)
        self._start_feeds([s for n, s in settings.items() if n not in running])
        log.info("feeds redeclared: %s", ", ".join(settings))

    async def _retire(self, name: str, feed) -> None:
        """A feed actor the new config no longer has: its symbols go, then the actor."""
        try:
            await self._forget_removed(await feed.declare.remote([]))
        except Exception:  # noqa: BLE001 - retiring goes on: the actor is killed below
            log.warning("feed %s: symbols not dropped before retiring", name, exc_info=True)
        ray.kill(feed, no_restart=True)
        index = self.feed_names.index(name)
        del self.feed_names[index], self.feeds[index]

    async def _forget_removed(self, result: dict) -> None:
        if result["removed"]:
            await self.sink.forget.remote(result["exchange"], result["removed"])

    def _feed(self, name: str):
        if name not in self.feed_names:
            raise BackendError(404, f"no feed {name!r}; feeds: {', '.join(self.feed_names)}")
        return self.feeds[self.feed_names.index(name)]

    async def feed_symbols(self, name: str) -> dict:
        return {"feed": name, "symbols": await self._feed(name).symbols.remote()}

    async def change_symbols(
        self, name: str, add: list[str], remove: list[str], warmup_minutes: int | None = None
    ) -> dict:
        """The admin endpoint: symbols added to and removed from one running feed."""
        feed = self._feed(name)
        try:
            result = await feed.change_symbols.remote(add, remove, warmup_minutes)
        except UnknownSymbols as exc:
            raise BackendError(422, _message(exc)) from None
        except SymbolsNotChangeable as exc:
            raise BackendError(409, _message(exc)) from None
        await self._forget_removed(result)
        return result

    async def _supervise(self) -> None:
        """Keep every feed's loop running: after Ray restarts a feed actor, start it again.
        Also refreshes the pipeline-wide gauges (outcome quality, drift) every few rounds."""
        rounds = 0
        while True:
            rounds += 1
            if rounds % METRICS_EVERY_ROUNDS == 0:
                await self._publish_metrics()
            feeds = list(self.feeds)  # a redeploy may add or retire feeds meanwhile
            results = await asyncio.gather(
                *(f.status.remote() for f in feeds), return_exceptions=True
            )
            for feed, status in zip(feeds, results, strict=True):
                if isinstance(status, dict) and not status["running"] and not status["done"]:
                    self.feed_restarts += status["epoch"] > 0
                    feed.start.remote()
            await asyncio.sleep(SUPERVISE_EVERY_S)

    async def _publish_metrics(self) -> None:
        try:
            self.metrics.outcomes(await self.outcome_metrics())
            self.metrics.sink(await self.sink.status.remote())
            self.metrics.drift(await self.drift())
        except Exception:  # noqa: BLE001 - monitoring never takes the supervisor down
            log.warning("pipeline metrics not refreshed this round", exc_info=True)

    async def latest(self, symbol: str | None = None, timeframe: str | None = None) -> list[dict]:
        return await self.sink.latest.remote(symbol, timeframe)

    async def status(self) -> dict:
        names = list(self.feed_names)
        feeds, shards, (sink,) = await asyncio.gather(
            _statuses(list(self.feeds)), _statuses(self.shards), _statuses([self.sink])
        )
        for name, feed in zip(names, feeds, strict=True):
            feed.setdefault("name", name)  # a feed that is down still says which it is
        return {
            "environment": self.config.environment,
            "run_id": self.run_id,
            "feeds": feeds,
            "shards": shards,
            "sink": sink,
            "drift": await self.drift(),
            "outcomes": await self.outcome_metrics(),
            "supervisor": {"feed_restarts": self.feed_restarts},
        }

    async def outcome_metrics(self) -> dict:
        """Outcome quality per model and timeframe, merged over the shards that score it."""
        return merge_metrics(await _statuses_of(self.shards, "outcome_metrics"))

    async def drift(self) -> dict:
        """Per timeframe: PSI of live features against the model's training distribution,
        and their live mean and std beside the training ones."""
        per_shard = await asyncio.gather(
            *(s.drift_counts.remote() for s in self.shards), return_exceptions=True
        )
        per_shard = [c for c in per_shard if isinstance(c, dict)]  # a restarting shard is skipped
        return {
            tf: drift_report(d, [c[tf] for c in per_shard if tf in c])
            for tf, d in self.drift_reference.items()
        }

    async def candles(
        self, exchange: str, symbol: str, timeframe: str, limit: int | None = None
    ) -> dict | None:
        """Recent candles of one series, from the shard that owns it (None: not held)."""
        shard = self.shards[shard_of(exchange, symbol, len(self.shards))]  # the feeds' routing
        return await shard.candles.remote(exchange, symbol, timeframe, limit)

    async def flush(self) -> int:
        return await self.sink.flush.remote()

    def pid(self) -> int:
        return os.getpid()

    async def quarantine(self, limit: int = 100) -> dict[str, list[dict] | str]:
        """Recent rejected candles per feed (reason and raw payload)."""
        names, feeds = list(self.feed_names), list(self.feeds)
        results = await asyncio.gather(
            *(f.quarantine.remote(limit) for f in feeds), return_exceptions=True
        )
        return {
            n: r if isinstance(r, list) else f"unavailable: {type(r).__name__}"
            for n, r in zip(names, results, strict=True)
        }

    def __del__(self):
        # Serve calls this when the application shuts down: checkpoint every shard once
        # more, so the last state is on disk (best effort: the actors die with us).
        try:
            ray.get([s.checkpoint.remote() for s in self.shards], timeout=10)
        except Exception:  # noqa: BLE001 - shutting down; nothing left to report to
            log.warning("final shard checkpoint did not complete")

    def actors(self) -> dict:
        """Actor handles of the pipeline (operators and crash tests use them)."""
        return {
            "feeds": self.feeds,
            "shards": self.shards,
            "sink": self.sink,
            "run_id": self.run_id,
        }


def _message(exc: Exception) -> str:
    """An actor's exception's own message, without Ray's traceback and class names."""
    return str(getattr(exc, "cause", None) or exc).splitlines()[-1]


async def _statuses(actors: list) -> list[dict]:
    return await _statuses_of(actors, "status")


async def _statuses_of(actors: list, method: str) -> list[dict]:
    """Each actor's answer; one that is down (restarting) reports that instead of failing all."""
    calls = (getattr(a, method).remote() for a in actors)
    results = await asyncio.gather(*calls, return_exceptions=True)
    return [r if isinstance(r, dict) else {"up": False, "error": type(r).__name__} for r in results]
