"""Typed, frozen configuration for the pipeline; unknown keys are errors naming the field.

One section per component (bytewax/nautilus style), each field in the section of the
component it drives. ``TickcastConfig`` is what the Serve application's ``args`` in
``configs/*.yaml`` parse into, once, in the application builder (``parse_config``); the
deployments get the frozen model and the actors their own settings (``FeedSettings``,
``ShardSettings``), never a dict to validate again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator import resolve_path
from orchestrator.feeds.ccxt.config import ExchangeConfig
from orchestrator.market.timeframes import TIMEFRAMES


class StrictModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_timeframe(value: str) -> str:
    if value not in TIMEFRAMES:
        raise ValueError(f"unknown timeframe {value!r}; expected one of {list(TIMEFRAMES)}")
    return value


class OfflineFeedConfig(StrictModel):
    """What the offline sources (synthetic, replay) share."""

    batch_minutes: int = Field(
        1,
        ge=1,
        le=1440,
        description=(
            "at speed 0 (as fast as possible), minutes sent per batch: per-call costs are shared "
            "across them; a paced feed always sends one minute at a time"
        ),
    )

    speed: float  # defined by each source, with its own default

    @property
    def minutes_per_batch(self) -> int:
        return self.batch_minutes if self.speed == 0 else 1


class SyntheticFeedConfig(OfflineFeedConfig):
    """Deterministic random-walk market; the embedded default (no files, no network)."""

    kind: Literal["synthetic"] = "synthetic"
    exchange: str = "synthetic"
    symbols: tuple[str, ...] = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
    n_symbols: int | None = Field(
        None, ge=1, description="generate SYN0000/USDT.. instead of `symbols`"
    )
    seed: int = 7
    speed: float = Field(
        10.0, ge=0, description="candles per second per symbol; 0 = as fast as possible"
    )
    max_minutes: int | None = Field(
        None, ge=1, description="stop after this many candles per symbol"
    )
    warmup_minutes: int = Field(0, ge=0, description="history sent at start to warm features up")
    start: datetime | None = Field(
        None,
        description=(
            "the market's first minute (UTC; minute-aligned), warm-up included; default "
            "2026-01-01T00:00:00Z"
        ),
    )

    @field_validator("start")
    @classmethod
    def _minute_aligned(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        if value.second or value.microsecond:
            raise ValueError("start must be a whole minute")
        return value

    @property
    def start_ms(self) -> int | None:
        return None if self.start is None else int(self.start.timestamp() * 1000)

    def symbol_list(self) -> tuple[str, ...]:
        if self.n_symbols is None:
            return self.symbols
        return tuple(f"SYN{i:04d}/USDT" for i in range(self.n_symbols))


class ReplayFeedConfig(OfflineFeedConfig):
    """Replay of history files: Parquet candle files or Binance kline zip archives."""

    kind: Literal["replay"] = "replay"
    exchange: str = "binance"
    path: str = Field(
        description="directory of *.parquet / *.zip files; relative to the repository"
    )
    symbols: tuple[str, ...] | None = Field(None, description="default: every file in `path`")
    speed: float = Field(
        0.0, ge=0, description="candles per second per symbol; 0 = as fast as possible"
    )
    max_minutes: int | None = Field(
        None, ge=1, description="live (after warm-up) minutes to replay"
    )
    warmup_minutes: int = Field(
        0, ge=0, description="first minutes sent at once to warm features up"
    )
    fallback: Literal["none", "synthetic"] = Field(
        "none", description="synthetic: run the synthetic market instead when `path` is absent"
    )

    def resolved_or_fallback(self) -> ReplayFeedConfig | SyntheticFeedConfig:
        """This feed, or the synthetic market standing in for it when its files are absent."""
        if self.fallback == "none" or resolve_path(self.path).is_dir():
            return self
        return SyntheticFeedConfig(
            exchange="synthetic",
            symbols=self.symbols or SyntheticFeedConfig().symbols,
            speed=self.speed,
            max_minutes=self.max_minutes,
            warmup_minutes=self.warmup_minutes,
            batch_minutes=self.batch_minutes,
        )


KAFKA_ENV_PREFIX = "TICKCAST_KAFKA_"


class KafkaConnection(StrictModel):
    """Where a Kafka cluster is. Security settings never come from the config file: every
    environment variable ``TICKCAST_KAFKA_<NAME>`` becomes the librdkafka setting ``<name>``
    with ``_`` read as ``.`` (``TICKCAST_KAFKA_SASL_PASSWORD`` -> ``sasl.password``)."""

    bootstrap_servers: str = Field(
        description="host:port[,host:port...] of the brokers", min_length=1
    )

    def client_config(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """librdkafka settings; its own log lines go through Python logging (one logger, one
        format string: the actors' rate limit keeps an outage to a few lines a minute)."""
        settings: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "logger": logging.getLogger("orchestrator.kafka.client"),
        }
        settings.update(overrides or {})
        for name, value in os.environ.items():
            if name.startswith(KAFKA_ENV_PREFIX) and len(name) > len(KAFKA_ENV_PREFIX):
                settings[name[len(KAFKA_ENV_PREFIX) :].lower().replace("_", ".")] = value
        return settings


class KafkaFeedConfig(KafkaConnection):
    """Closed 1m candles consumed from Kafka topics (orchestrator/feeds/kafka.py)."""

    kind: Literal["kafka"] = "kafka"
    exchange: str = Field("kafka", description="labels every candle of this feed")
    topics: tuple[str, ...] = Field(min_length=1)
    format: Literal["auto", "tickcast", "binance", "cryptofeed"] = Field(
        "auto", description="the messages' format; auto: told apart per message"
    )
    symbols: tuple[str, ...] | None = Field(
        None, description="only these symbols (others are quarantined); default: any"
    )
    group_id: str | None = Field(
        None, description="consumer group the offsets are committed to; default tickcast-<feed>"
    )
    start: Literal["committed", "earliest", "latest"] | datetime = Field(
        "committed",
        description=(
            "with no checkpoint of this feed: the group's committed offsets (earliest where "
            "none), the earliest or latest offsets, or the first offsets at a time (a replay)"
        ),
    )
    stop_at_end: bool = Field(
        False, description="finish once every partition is read to its end (a replay, tests)"
    )
    max_messages: int = Field(10_000, ge=1, le=1_000_000, description="messages per batch")
    poll_s: float = Field(0.1, gt=0, le=10, description="longest wait for a message")
    warmup_minutes: Literal[0] = Field(
        0, description="features warm up on the first candles (a topic has no history call)"
    )

    @field_validator("start")
    @classmethod
    def _utc(cls, value):
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @property
    def start_ms(self) -> int | None:
        return int(self.start.timestamp() * 1000) if isinstance(self.start, datetime) else None


FeedConfig = Annotated[
    SyntheticFeedConfig | ReplayFeedConfig | ExchangeConfig | KafkaFeedConfig,
    Field(discriminator="kind"),
]


class FeatureConfig(StrictModel):
    """The feature shards: how many, on which timeframes, and what they do when late."""

    shards: int = Field(1, ge=1, le=256)
    timeframes: tuple[str, ...] = ("1m",)
    num_cpus: float = Field(0.25, gt=0)
    log_features: bool = Field(False, description="also write every feature row to the log")
    chart_candles: int = Field(
        200,
        ge=0,
        le=5000,
        description="recent candles per symbol and timeframe a shard keeps for GET /v1/candles "
        "and the dashboard's chart (48 bytes each, not checkpointed); 0: off",
    )
    backpressure: Literal["wait", "skip_stale"] = Field(
        "wait",
        description="wait: predict every tick, however late; skip_stale: update features "
        "but skip predicting ticks older than max_lag_s (counted)",
    )
    max_lag_s: float = Field(30.0, gt=0)

    @field_validator("timeframes")
    @classmethod
    def _known_timeframes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_timeframe(t) for t in value)


class StreamConfig(StrictModel):
    """The feed -> shard stream and its checkpoints (both ends act on these)."""

    state_dir: str = Field(
        "var/state",
        description=(
            "feed and shard checkpoints, one folder per environment; relative to the repository"
        ),
    )
    checkpoint_every: int = Field(
        100,
        ge=1,
        description=(
            "checkpoint the shards, then the feed, every N minutes of candles a feed routes"
        ),
    )
    warmup_minutes_per_batch: int = Field(
        10,
        ge=1,
        description=(
            "a symbol added while running: minutes of its history sent before each batch of "
            "its feed (each costs the shard about a millisecond), until it is warm"
        ),
    )
    in_flight: int = Field(
        2,
        ge=1,
        le=16,
        description=(
            "batches a feed keeps in flight to each shard: the shard computes the next batch's "
            "features while the last one waits for its models (bounded: this is the queue)"
        ),
    )


class OutcomeConfig(StrictModel):
    """Live scoring of predictions against what the market did next (in the shards)."""

    window: int = Field(
        500,
        ge=10,
        description=(
            "outcomes per model and timeframe in the running metrics (each feature shard keeps its "
            "own window; /v1/status merges them)"
        ),
    )


ModelType = Literal["direction", "volatility", "return", "swing"]
MODEL_TYPES: tuple[str, ...] = ("direction", "volatility", "return", "swing")


ModelRole = Literal["production", "shadow", "canary"]


class ModelRef(StrictModel):
    """One model the pipeline runs. ``production`` (the champion) publishes its signals;
    a challenger beside it (docs/models.md#champion-and-challenger) is another version that
    predicts every row too: as ``shadow`` it is only logged and scored, as ``canary`` it
    publishes for ``canary_fraction`` of the symbols (chosen by a stable hash) instead of
    the champion. A challenger without a ``version`` runs the registry's challenger (MLflow's
    alias ``challenger``; ``tickcast registry challenger``)."""

    model_type: ModelType = "direction"
    timeframe: str = "1m"
    version: str | None = Field(
        None,
        description="default: the registry's production version (for a shadow or canary, "
        "the version marked challenger), followed as it moves",
    )
    role: ModelRole = "production"
    canary_fraction: float | None = Field(
        None, gt=0, lt=1, description="a canary's share of symbols (required for a canary)"
    )

    @field_validator("timeframe")
    @classmethod
    def _known_timeframe(cls, value: str) -> str:
        return _check_timeframe(value)

    @model_validator(mode="after")
    def _challenger_fields(self) -> ModelRef:
        if (self.role == "canary") != (self.canary_fraction is not None):
            raise ValueError("canary_fraction is required for a canary and only for one")
        return self

    @property
    def key(self) -> str:
        return f"{self.model_type}-{self.timeframe}"

    @property
    def serving_key(self) -> str:
        """The name its deployment serves it by: the key, with the role for a challenger."""
        return self.key if self.role == "production" else f"{self.key}-{self.role}"


class SignalConfig(StrictModel):
    """Probability thresholds mapping P(up) to LONG / SHORT / NEUTRAL and confidence tiers."""

    high: float = Field(0.6, gt=0.5, lt=1.0)
    very_high: float = Field(0.7, gt=0.5, lt=1.0)
    ood_z_limit: float = Field(
        8.0,
        gt=0,
        description=(
            "a feature row is in_distribution when every feature its model reads is within "
            "this many training standard deviations of the training mean"
        ),
    )
    neutral_out_of_distribution: bool = Field(
        False, description="a direction signal on a row outside the training distribution: NEUTRAL"
    )
    max_model_age_days: float | None = Field(
        None,
        gt=0,
        description=(
            "a direction signal from a model whose training ended longer ago than this "
            "(at the candle's close): NEUTRAL; none: no limit"
        ),
    )

    @model_validator(mode="after")
    def _ordered(self) -> SignalConfig:
        if self.very_high < self.high:
            raise ValueError("signals.very_high must be >= signals.high")
        return self


class AutoscalingConfig(StrictModel):
    """Ray Serve autoscaling for one kind of deployment (passed through as-is)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    target_ongoing_requests: float = Field(32, gt=0)
    upscale_delay_s: float = Field(10.0, ge=0)
    downscale_delay_s: float = Field(120.0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be >= min_replicas")
        return self


class ServingConfig(StrictModel):
    max_batch_size: int = Field(64, ge=1, le=4096)
    # 0: requests reach the models already merged (the ingress coalesces HTTP predicts; a
    # shard sends whole matrices), so waiting for company only adds latency; @serve.batch
    # still merges calls that queue while the model is busy.
    batch_wait_timeout_s: float = Field(0.0, ge=0, le=1)
    num_cpus: float = Field(0.25, gt=0)
    resources: dict[str, float] = Field(
        {},
        description="custom resources each model replica needs (pins replicas to nodes; see "
        "placement)",
    )
    autoscaling: AutoscalingConfig | None = Field(
        None, description="model deployments; none: 1 replica"
    )
    model_groups: Literal["none", "timeframe", "all"] = Field(
        "none",
        description=(
            "models per Serve deployment: none (one each, scaled each on its own), "
            "timeframe (one per timeframe) or all (one for every model): fewer processes"
        ),
    )
    engine: Literal["onnx", "auto"] = Field(
        "onnx",
        description=(
            "onnx: every model in ONNX Runtime; auto: a model that is one tree ensemble "
            "compiled to native code (about 4x less CPU per row; each replica compiles its "
            "models at start, 0.5-3 s each, or loads them from the cache)"
        ),
    )
    registry_poll_s: float = Field(
        10.0,
        ge=0,
        description=(
            "how often a model deployment asks the registry for the production version of "
            "each model its config does not pin (a promotion or rollback, or an MLflow "
            "alias moved, goes live within this); 0: never"
        ),
    )
    ingress_num_cpus: float = Field(0.1, gt=0)
    ingress_max_ongoing_requests: int = Field(
        256, ge=1, description="HTTP requests and open streams"
    )
    ingress_autoscaling: AutoscalingConfig | None = None
    # A handle call costs milliseconds of CPU, a row microseconds: the ingress merges HTTP
    # predicts for one model that arrive while a call for it is out (serve_app/api/coalesce.py).
    coalesce_window_s: float = Field(
        0.01, ge=0, le=0.1, description="ingress: wait for company at most this; 0: off"
    )
    coalesce_max_rows: int = Field(
        4096, ge=1, le=100_000, description="ingress: rows per merged call"
    )


class ApiConfig(StrictModel):
    """The public HTTP/WebSocket API: who may call it, and how much."""

    require_api_key: bool = Field(False, description="production: true")
    api_keys_env: str = Field("TICKCAST_API_KEYS", description="env variable: comma-separated keys")
    admin_keys_env: str = Field(
        "TICKCAST_ADMIN_KEYS",
        description="env variable: comma-separated admin keys (X-Admin-Key); unset: admin off",
    )
    rate_limit_per_s: float = Field(
        50.0, gt=0, description="requests per second per key (or client)"
    )
    rate_limit_burst: int = Field(100, ge=1)
    max_rows: int = Field(1024, ge=1, le=100_000, description="rows per POST /v1/predict")
    max_body_bytes: int = Field(2_000_000, ge=1024)
    max_window: int = Field(2000, ge=40, description="candles per POST /v1/predict window")
    cors_origins: tuple[str, ...] = Field((), description="empty: CORS off")
    stream_queue: int = Field(1000, ge=1, description="messages a slow WebSocket client may lag")
    page_size: int = Field(500, ge=1, le=10_000, description="default rows per history page")


class KafkaSinkConfig(KafkaConnection):
    """Prediction events and outcomes written to Kafka topics (orchestrator/sinks/kafka_out.py)."""

    predictions_topic: str = "tickcast.predictions"
    outcomes_topic: str | None = Field(
        "tickcast.outcomes", description="scored outcomes; null: not written to Kafka"
    )
    transactional: bool = Field(
        True,
        description=(
            "write in transactions: a read_committed consumer sees each event once even when "
            "the sink dies mid-batch; false: an idempotent producer (at least once across a "
            "sink crash)"
        ),
    )
    transactional_id: str | None = Field(
        None, description="default tickcast-sink-<environment>: one per application"
    )
    flush_seconds: float = Field(
        0.25, gt=0, le=60, description="longest an event waits before its transaction commits"
    )
    partitions: int = Field(6, ge=1, description="partitions of a topic the sink creates")
    replication: int = Field(
        -1, ge=-1, description="replicas of a topic the sink creates; -1: the broker's default"
    )
    buffer_rows: int = Field(
        1_000_000,
        ge=1000,
        description=(
            "events kept while the brokers are down (they are also on disk until written); past "
            "it the oldest are dropped and counted (the Parquet log keeps them all)"
        ),
    )
    max_backoff_s: float = Field(30.0, gt=0, description="longest wait between retries")
    timeout_s: float = Field(
        15.0, gt=0, le=300, description="a write, commit or look-up taking longer is an outage"
    )


class SinkConfig(StrictModel):
    log_dir: str = "var/predictions"
    flush_rows: int = Field(5000, ge=1)
    flush_seconds: float = Field(5.0, gt=0)
    redis_url: str | None = Field(
        None, description="redis://host:port/db: publish to Redis Streams"
    )
    redis_stream: str = "tickcast:predictions"
    redis_maxlen: int = Field(100_000, ge=100)
    bus_buffer_rows: int = Field(
        100_000,
        ge=0,
        description=(
            "predictions kept while the bus is down, sent when it is back; past it the oldest "
            "are dropped and counted (the Parquet log keeps them all)"
        ),
    )
    bus_max_backoff_s: float = Field(30.0, gt=0, description="longest wait between retries")
    kafka: KafkaSinkConfig | None = Field(None, description="also write events to Kafka")
    dedupe_window_s: float = Field(
        900.0,
        ge=0,
        description=(
            "the last stretch of writing (by the log files' times) whose predictions and "
            "outcomes a restarted sink drops when a replay repeats them, beside those of "
            "the log's two newest dates"
        ),
    )
    compact_every_s: float = Field(
        60.0, ge=0, description="how often the logs' small files are merged; 0 turns it off"
    )
    compact_fanout: int = Field(
        8, ge=2, description="files of one level merged into one of the next"
    )
    compact_closed_after_s: float = Field(
        3600.0, gt=0, description="a folder unwritten this long is merged into one file"
    )


class Placement(StrictModel):
    """Where one kind of actor runs on a multi-node cluster (docs/cluster.md)."""

    strategy: Literal["DEFAULT", "SPREAD"] = Field(
        "DEFAULT",
        description="Ray's scheduling strategy: SPREAD puts the actors on different nodes",
    )
    resources: dict[str, float] = Field(
        {},
        description=(
            "custom resources each actor needs, to pin it to nodes that offer them "
            "(`ray start --resources='{\"tickcast-shard\": 4}'`, a KubeRay group's rayStartParams)"
        ),
    )

    def actor_options(self, num_cpus: float) -> dict:
        options: dict = {"num_cpus": num_cpus, "scheduling_strategy": self.strategy}
        if self.resources:
            options["resources"] = dict(self.resources)
        return options


class PlacementConfig(StrictModel):
    """Placement of the pipeline's actors; model replicas: ``serving.resources``."""

    pipeline: Placement = Placement()  # the supervisor: owns the feeds, shards and sink
    feeds: Placement = Placement(strategy="SPREAD")
    shards: Placement = Placement(strategy="SPREAD")
    sink: Placement = Placement()


class TickcastConfig(StrictModel):
    """Everything the Serve application needs; `configs/*.yaml` `args` parse into this."""

    environment: str = "local"
    # The model registry: a folder (the embedded default) or mlflow:<tracking URI>.
    models_dir: str = "models_onnx"
    feeds: tuple[FeedConfig, ...] = (SyntheticFeedConfig(),)
    features: FeatureConfig = FeatureConfig()
    stream: StreamConfig = StreamConfig()
    outcomes: OutcomeConfig = OutcomeConfig()
    models: tuple[ModelRef, ...] = (ModelRef(),)
    signals: SignalConfig = SignalConfig()
    serving: ServingConfig = ServingConfig()
    sink: SinkConfig = SinkConfig()
    api: ApiConfig = ApiConfig()
    placement: PlacementConfig = PlacementConfig()

    @model_validator(mode="after")
    def _models_on_computed_timeframes(self) -> TickcastConfig:
        for ref in self.models:
            if ref.timeframe not in self.features.timeframes:
                raise ValueError(
                    f"models: {ref.key} needs timeframe {ref.timeframe!r} in features.timeframes"
                )
        return self

    @model_validator(mode="after")
    def _one_champion_one_challenger(self) -> TickcastConfig:
        """Per model: at most one production entry and one challenger; a canary replaces
        its champion on some symbols, so it needs one; a challenger pinned to the version
        its champion pins would be the same model twice."""
        roles: dict[str, dict[str, ModelRef]] = {}
        for ref in self.models:
            kind = "production" if ref.role == "production" else "challenger"
            if kind in roles.setdefault(ref.key, {}):
                raise ValueError(f"models: {ref.key} has more than one {kind} entry")
            roles[ref.key][kind] = ref
        for key, entry in roles.items():
            champion, challenger = entry.get("production"), entry.get("challenger")
            if challenger is None:
                continue
            if challenger.role == "canary" and champion is None:
                raise ValueError(f"models: the canary of {key} needs a production entry")
            pinned = challenger.version is not None
            if champion is not None and pinned and challenger.version == champion.version:
                raise ValueError(f"models: {key}'s challenger is its champion's version")
        return self

    def canary_fractions(self) -> dict[str, float]:
        """model id -> the share of symbols its canary publishes for."""
        return {
            ref.key: float(ref.canary_fraction)
            for ref in self.models
            if ref.role == "canary" and ref.canary_fraction is not None
        }

    @property
    def run_dir(self) -> str:
        """Checkpoints of this environment: restarted actors, a restarted supervisor and a
        restarted application all resume from the same folder."""
        state = self.stream.state_dir
        if "://" in state:  # an object-store prefix, named without opening a client for it
            return f"{state.rstrip('/')}/{self.environment}"
        return str(resolve_path(state) / self.environment)

    def sink_settings(self) -> SinkConfig:
        """The sink's section, its Kafka transactional id named after the environment when
        the config leaves it out (one writer per application: a restarted sink fences the
        one before it)."""
        kafka = self.sink.kafka
        if kafka is None or kafka.transactional_id is not None:
            return self.sink
        named = kafka.model_copy(update={"transactional_id": f"tickcast-sink-{self.environment}"})
        return self.sink.model_copy(update={"kafka": named})

    def feed_settings(self) -> list[FeedSettings]:
        return [
            FeedSettings(
                name=name,
                source=source,
                run_dir=self.run_dir,
                checkpoint_every=self.stream.checkpoint_every,
                in_flight=self.stream.in_flight,
                warmup_minutes_per_batch=self.stream.warmup_minutes_per_batch,
            )
            for name, source in feed_actors(self.feeds)
        ]

    def shard_settings(self) -> list[ShardSettings]:
        return [
            ShardSettings(
                shard_id=i,
                n_shards=self.features.shards,
                features=self.features,
                signals=self.signals,
                outcomes=self.outcomes,
                run_dir=self.run_dir,
                environment=self.environment,
                canaries=self.canary_fractions(),
            )
            for i in range(self.features.shards)
        ]


class FeedSettings(StrictModel):
    """What one feed actor needs: its source, its checkpoint folder and its stream window."""

    name: str
    source: FeedConfig
    run_dir: str
    checkpoint_every: int = Field(100, ge=1)
    in_flight: int = Field(1, ge=1)
    warmup_minutes_per_batch: int = Field(10, ge=1)


class ShardSettings(StrictModel):
    """What one feature shard needs: which shard it is, its features, signal thresholds,
    outcome window and checkpoint folder."""

    shard_id: int = Field(ge=0)
    n_shards: int = Field(ge=1)
    features: FeatureConfig
    signals: SignalConfig = SignalConfig()
    outcomes: OutcomeConfig = OutcomeConfig()
    run_dir: str
    environment: str = "local"
    canaries: dict[str, float] = {}  # model id -> share of symbols its canary publishes for


class ConfigError(ValueError):
    """A config that does not parse; the message names every bad field."""


# Fields that moved to the section of the component they drive (CHANGELOG 0.2.0).
MOVED_FIELDS = {
    ("features", "state_dir"): "stream.state_dir",
    ("features", "checkpoint_every"): "stream.checkpoint_every",
    ("features", "in_flight"): "stream.in_flight",
    ("sink", "outcome_window"): "outcomes.window",
}


def parse_config(args: Mapping[str, Any] | TickcastConfig | None) -> TickcastConfig:
    """The application's ``args`` as a ``TickcastConfig``, or a ``ConfigError`` naming
    every bad field (and where a moved field lives now)."""
    if isinstance(args, TickcastConfig):
        return args
    try:
        return TickcastConfig.model_validate(args or {})
    except ValidationError as exc:
        moved = [
            f"{section}.{key} is now {new}"
            for (section, key), new in MOVED_FIELDS.items()
            if isinstance((args or {}).get(section), Mapping) and key in args[section]
        ]
        hint = "".join(f"\n  moved: {m}" for m in moved)
        raise ConfigError(f"invalid tickcast config (application args):\n{exc}{hint}") from None


def feed_symbol_lists(config: TickcastConfig) -> list[list[str] | None]:
    """Per feed, the symbols its config names (None: every file of a replay): the part of
    the config a redeploy changes in place (``Pipeline.reconfigure``), never by a restart."""
    return [
        list(feed.symbol_list())
        if isinstance(feed, SyntheticFeedConfig)
        else (None if feed.symbols is None else list(feed.symbols))
        for feed in config.feeds
    ]


def with_feed_symbols(
    config: TickcastConfig, symbols: list[list[str] | None] | None
) -> TickcastConfig:
    """``config`` with each feed's symbols replaced; None for ``symbols``: every feed's list
    emptied, the stand-in the deployments are bound with (the lists travel in user_config)."""
    lists = symbols if symbols is not None else [()] * len(config.feeds)
    if len(lists) != len(config.feeds):
        raise ConfigError(f"{len(lists)} symbol lists for {len(config.feeds)} feeds")
    feeds = []
    for feed, listed in zip(config.feeds, lists, strict=True):
        update: dict[str, Any] = {"symbols": None if listed is None else tuple(listed)}
        if isinstance(feed, SyntheticFeedConfig):
            update["n_symbols"] = None
        feeds.append(feed.model_copy(update=update))
    return config.model_copy(update={"feeds": tuple(feeds)})


def feed_actors(feeds: tuple[FeedConfig, ...]) -> list[tuple[str, FeedConfig]]:
    """(actor name, config) per feed actor: an exchange feed is split into groups of
    ``symbols_per_actor`` symbols, one actor each; other feeds run in one actor."""
    actors = []
    for i, feed in enumerate(feeds):
        if isinstance(feed, ReplayFeedConfig):
            feed = feed.resolved_or_fallback()
        if not isinstance(feed, ExchangeConfig):
            actors.append((f"{feed.kind}-{i}", feed))
            continue
        size = feed.symbols_per_actor
        for j in range(0, len(feed.symbols), size):
            group = feed.model_copy(update={"symbols": feed.symbols[j : j + size]})
            actors.append((f"ccxt-{feed.exchange}-{i}-{j // size}", group))
    return actors
