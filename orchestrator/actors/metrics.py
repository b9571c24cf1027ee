"""Prometheus metrics through ``ray.util.metrics``: they appear on Ray's metrics endpoint and
in the dashboard. Only actors create them (the pure modules never import Ray).

Counters of things that are rare when all is well (rejects, duplicates, skipped ticks) are
exported at zero from the start: a series that appears only on its first increment leaves
its dashboard panel, and any alert on it, empty exactly when all is well.
"""

from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

from orchestrator.market.validate import REASONS


def export_zero(counter: Counter, tags: dict[str, str]) -> None:
    """Make ``counter``'s series exist at 0. Ray's ``inc`` refuses 0, so this records the
    point through the recording method ``inc`` itself ends in."""
    counter._record(0.0, tags=tags)


class FeedMetrics:
    """Per-feed counters, updated from the gate's cumulative counters as deltas."""

    def __init__(self, feed: str):
        self._tags = {"feed": feed}
        self._candles = Counter(
            "tickcast_feed_candles_total", "final candles routed to shards", tag_keys=("feed",)
        )
        self._rejects = Counter(
            "tickcast_feed_rejected_total",
            "candles quarantined, by reason",
            tag_keys=("feed", "reason"),
        )
        self._duplicates = Counter(
            "tickcast_feed_duplicates_total", "late duplicates dropped", tag_keys=("feed",)
        )
        self._stale = Gauge(
            "tickcast_feed_stale_symbols",
            "symbols with no candle for N periods",
            tag_keys=("feed",),
        )
        self._seen: dict[str, int] = {}
        self._stale.set(0.0, tags=self._tags)
        export_zero(self._candles, self._tags)
        export_zero(self._duplicates, self._tags)
        for reason in REASONS:
            export_zero(self._rejects, {**self._tags, "reason": reason})

    def candles(self, n: int) -> None:
        if n:
            self._candles.inc(n, tags=self._tags)

    def gate(self, gate_status: dict, source_status: dict) -> None:
        counters = gate_status
        for reason, total in counters.get("quarantined", {}).items():
            self._inc_delta(
                self._rejects, f"reject:{reason}", total, {**self._tags, "reason": reason}
            )
        self._inc_delta(self._duplicates, "duplicates", counters.get("duplicates", 0), self._tags)
        self._stale.set(source_status.get("stale_count", 0), tags=self._tags)

    def _inc_delta(self, metric: Counter, key: str, total: int, tags: dict) -> None:
        delta = total - self._seen.get(key, 0)
        if delta > 0:
            metric.inc(delta, tags=tags)
            self._seen[key] = total


LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
BATCH_BOUNDARIES = [1, 8, 32, 64, 128, 256, 512, 1024, 4096]


NEUTRAL_REASONS = ("out_of_distribution", "model_age")
NAN = float("nan")


class ShardMetrics:
    """Per-shard tick metrics: latency from candle emission to prediction, batch sizes,
    predictions per model, queue lag and skipped stale ticks."""

    def __init__(self, shard: int):
        self._tags = {"shard": str(shard)}
        self._latency = Histogram(
            "tickcast_tick_latency_ms",
            "feed emit -> predictions recorded, per tick",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=("timeframe",),
        )
        self._rows = Histogram(
            "tickcast_model_batch_rows",
            "rows per model call (one call per tick)",
            boundaries=BATCH_BOUNDARIES,
            tag_keys=("timeframe",),
        )
        self._predictions = Counter(
            "tickcast_predictions_total", "predictions made", tag_keys=("model_id",)
        )
        self._outside = Counter(
            "tickcast_out_of_distribution_total",
            "predictions on a row outside the model's training distribution",
            tag_keys=("shard",),
        )
        self._neutral = Counter(
            "tickcast_signals_forced_neutral_total",
            "direction signals turned NEUTRAL by signals config, by reason",
            tag_keys=("shard", "reason"),
        )
        export_zero(self._outside, self._tags)
        for reason in NEUTRAL_REASONS:
            export_zero(self._neutral, {**self._tags, "reason": reason})
        self._lag = Gauge(
            "tickcast_shard_lag_ms", "age of the batch a shard starts on", tag_keys=("shard",)
        )
        self._skipped = Counter(
            "tickcast_stale_ticks_skipped_total",
            "ticks not predicted: too late",
            tag_keys=("shard",),
        )
        export_zero(self._skipped, self._tags)
        self._lag.set(0.0, tags=self._tags)

    def tick(self, timeframe: str, rows: int, latency_ms: float) -> None:
        tags = {"timeframe": timeframe}
        self._latency.observe(latency_ms, tags=tags)
        self._rows.observe(rows, tags=tags)

    def predictions(self, model_id: str, n: int) -> None:
        self._predictions.inc(n, tags={"model_id": model_id})

    def out_of_distribution(self, n: int) -> None:
        if n:
            self._outside.inc(n, tags=self._tags)

    def forced_neutral(self, reason: str, n: int) -> None:
        if n:
            self._neutral.inc(n, tags={**self._tags, "reason": reason})

    def lag(self, lag_ms: float) -> None:
        self._lag.set(lag_ms, tags=self._tags)

    def skipped(self) -> None:
        self._skipped.inc(1, tags=self._tags)


class PipelineMetrics:
    """Pipeline-wide gauges the supervisor refreshes: outcome quality and feature drift."""

    def __init__(self):
        self._accuracy = Gauge(
            "tickcast_outcome_accuracy",
            "running accuracy of classifiers",
            tag_keys=("model_id", "timeframe"),
        )
        self._brier = Gauge(
            "tickcast_outcome_brier",
            "running Brier score of classifiers",
            tag_keys=("model_id", "timeframe"),
        )
        self._mae = Gauge(
            "tickcast_outcome_mae", "running MAE of regressors", tag_keys=("model_id", "timeframe")
        )
        tags = ("model_id", "timeframe", "role")
        self._challenger = {
            "improvement": Gauge(
                "tickcast_challenger_improvement",
                "mean live loss of the champion minus its challenger's on the same candles "
                "(> 0 favours the challenger)",
                tag_keys=tags,
            ),
            "ci_low": Gauge(
                "tickcast_challenger_improvement_ci_low", "95% interval, low end", tag_keys=tags
            ),
            "ci_high": Gauge(
                "tickcast_challenger_improvement_ci_high", "95% interval, high end", tag_keys=tags
            ),
            "pairs": Gauge(
                "tickcast_challenger_pairs", "candles both versions were scored on", tag_keys=tags
            ),
        }
        self._psi = Gauge(
            "tickcast_feature_drift_psi_max",
            "largest PSI of live features vs training",
            tag_keys=("timeframe",),
        )
        self._duplicates = Gauge("tickcast_sink_duplicates_dropped", "replayed predictions dropped")
        self._duplicates.set(0.0)
        self._bus_up = Gauge("tickcast_bus_up", "1 while the event bus answers, 0 while it is down")
        self._bus_waiting = Gauge("tickcast_bus_waiting_rows", "predictions waiting for the bus")
        self._bus_dropped = Gauge(
            "tickcast_bus_dropped_rows", "predictions dropped from a full bus buffer"
        )
        self._kafka = {
            "up": Gauge("tickcast_kafka_up", "1 while the Kafka sink's brokers answer, else 0"),
            "waiting": Gauge("tickcast_kafka_waiting_events", "events waiting for Kafka"),
            "written": Gauge("tickcast_kafka_written_events", "events the sink wrote to Kafka"),
            "dropped": Gauge(
                "tickcast_kafka_dropped_events", "events dropped from a full Kafka queue"
            ),
        }

    def outcomes(self, metrics: dict) -> None:
        for model_id, per_tf in metrics.get("models", {}).items():
            for timeframe, m in per_tf.items():
                tags = {"model_id": model_id, "timeframe": timeframe}
                for gauge, key in (
                    (self._accuracy, "accuracy"),
                    (self._brier, "brier"),
                    (self._mae, "mae"),
                ):
                    if m.get(key) is not None:
                        gauge.set(float(m[key]), tags=tags)
        for model_id, per_tf in metrics.get("challengers", {}).items():
            for timeframe, m in per_tf.items():
                c = m.get("comparison") or {}
                tags = {"model_id": model_id, "timeframe": timeframe, "role": m["role"]}
                # NaN until there is a value (no pair, too few blocks for an interval): the
                # series exist from the challenger's first outcome, its panel shows a gap.
                improvement = c.get("improvement")
                low, high = c.get("ci95") or (None, None)
                for name, value in (
                    ("pairs", c.get("pairs", 0)),
                    ("improvement", improvement),
                    ("ci_low", low),
                    ("ci_high", high),
                ):
                    self._challenger[name].set(NAN if value is None else float(value), tags=tags)

    def drift(self, report: dict) -> None:
        for timeframe, r in report.items():
            if r.get("max_psi") is not None:
                self._psi.set(float(r["max_psi"]), tags={"timeframe": timeframe})

    def sink(self, status: dict) -> None:
        if "duplicates_dropped" in status:
            self._duplicates.set(status["duplicates_dropped"])
        bus = status.get("bus") or {}
        if bus.get("state") in ("up", "down"):  # not before the first try
            self._bus_up.set(0.0 if bus["state"] == "down" else 1.0)
            self._bus_waiting.set(bus["waiting"])
            self._bus_dropped.set(bus["dropped"])
        kafka = status.get("kafka") or {}
        if kafka.get("state") in ("up", "down"):
            self._kafka["up"].set(0.0 if kafka["state"] == "down" else 1.0)
            for name in ("waiting", "written", "dropped"):
                self._kafka[name].set(kafka[name])
