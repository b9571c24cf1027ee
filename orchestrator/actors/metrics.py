"""Prometheus metrics through ``ray.util.metrics``: they appear on Ray's metrics endpoint and
in the dashboard. Only actors create them (the pure modules never import Ray)."""

from __future__ import annotations

from ray.util.metrics import Counter, Gauge


class FeedMetrics:
    """Per-feed counters, updated from the gate's cumulative counters as deltas."""

    def __init__(self, feed: str):
        self._tags = {"feed": feed}
        self._candles = Counter("tickcast_feed_candles_total", "final candles routed to shards",
                                tag_keys=("feed",))
        self._rejects = Counter("tickcast_feed_rejected_total", "candles quarantined, by reason",
                                tag_keys=("feed", "reason"))
        self._duplicates = Counter("tickcast_feed_duplicates_total", "late duplicates dropped",
                                   tag_keys=("feed",))
        self._stale = Gauge("tickcast_feed_stale_symbols", "symbols with no candle for N periods",
                            tag_keys=("feed",))
        self._seen: dict[str, int] = {}

    def candles(self, n: int) -> None:
        if n:
            self._candles.inc(n, tags=self._tags)

    def gate(self, gate_status: dict, source_status: dict) -> None:
        counters = gate_status
        for reason, total in counters.get("quarantined", {}).items():
            self._inc_delta(self._rejects, f"reject:{reason}", total, {**self._tags, "reason": reason})
        self._inc_delta(self._duplicates, "duplicates", counters.get("duplicates", 0), self._tags)
        self._stale.set(source_status.get("stale_count", 0), tags=self._tags)

    def _inc_delta(self, metric: Counter, key: str, total: int, tags: dict) -> None:
        delta = total - self._seen.get(key, 0)
        if delta > 0:
            metric.inc(delta, tags=tags)
            self._seen[key] = total
