#!/usr/bin/env python
"""End-to-end throughput and per-tick latency of the live pipeline.

The synthetic market with N symbols (default 1,000) replays as fast as it can through the
whole Serve application (feed actor -> feature shards -> ONNX model deployment -> sink), and
the table shows symbol-candles predicted per second and the candle-close-to-prediction
latency of a tick (p50, p99). The baseline does the same work in one plain Python process:
the same feature engine, the same ONNX model, the same prediction events, no Ray.

    python scripts/bench_pipeline.py [--symbols 1000] [--minutes 300] [--shards 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np

from orchestrator import PROJECT_ROOT
from orchestrator.events import ModelOutput, TickRows, build_predictions
from orchestrator.market.schema import candles_from_arrays
from orchestrator.market.synthetic import SyntheticMarket
from orchestrator.shard import ShardState
from orchestrator.sinks.latest import LatestStore
from serve_app.inference import OnnxPredictor
from serve_app.registry import Registry

WARMUP_MINUTES = 40  # unpaced history first, so every measured minute predicts


def baseline(n_symbols: int, minutes: int) -> tuple[float, list[float]]:
    """(symbol-candles/s, per-tick latencies in ms) in one process."""
    registry = Registry(PROJECT_ROOT / "models_onnx")
    manifest = registry.resolve("direction", "1m")
    predictor = OnnxPredictor(manifest, registry.load_bytes(manifest))
    symbols = [f"SYN{i:04d}/USDT" for i in range(n_symbols)]
    market, state, store = SyntheticMarket(n_symbols, seed=7), ShardState(("1m",)), LatestStore()
    batches = [_minute(market, symbols) for _ in range(WARMUP_MINUTES + minutes)]
    for batch in batches[:WARMUP_MINUTES]:
        state.process(batch)
    latencies, started = [], time.perf_counter()
    for batch in batches[WARMUP_MINUTES:]:
        t0 = time.perf_counter()
        for tick in state.process(batch):
            values = predictor.predict(tick.features)
            out = ModelOutput(manifest.model_id, "direction", manifest.version, ("prob_up",), values)
            rows = TickRows(tick.exchange, tick.symbol, "1m", tick.open_time, tick.close, t0 * 1000)
            store.update(build_predictions(out, rows, time.perf_counter() * 1000, 0.6, 0.7))
        latencies.append((time.perf_counter() - t0) * 1000)
    return n_symbols * minutes / (time.perf_counter() - started), latencies


def _minute(market: SyntheticMarket, symbols: list[str]):
    m = market.next_minute()
    ohlcv = {k: getattr(m, k) for k in ("open", "high", "low", "close", "volume")}
    return candles_from_arrays("synthetic", symbols, "1m", [m.open_time] * len(symbols), ohlcv)


def through_serve(n_symbols: int, minutes: int, shards: int) -> tuple[float, dict]:
    import ray
    from ray import serve

    from serve_app.app import build_app

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            args = {
                "environment": "bench",
                "feeds": [{"kind": "synthetic", "n_symbols": n_symbols, "speed": 0, "seed": 7,
                           "max_minutes": minutes, "warmup_minutes": WARMUP_MINUTES}],
                "features": {"shards": shards, "num_cpus": 0.1, "state_dir": f"{tmp}/state",
                             "checkpoint_every": 1000},
                "serving": {"num_cpus": 0.1, "max_batch_size": 64},
                "sink": {"log_dir": f"{tmp}/log", "flush_rows": 200_000},
            }
            serve.run(build_app(args), name="tickcast", route_prefix=None)
            pipeline = serve.get_deployment_handle("Pipeline", app_name="tickcast")
            started, status = _wait_done(pipeline)
            elapsed = time.perf_counter() - started
            predicted = sum(s["rows_predicted"] for s in status["shards"])
            return predicted / elapsed, status
    finally:
        ray.shutdown()


def _wait_done(pipeline) -> tuple[float, dict]:
    started = None
    while True:
        status = pipeline.status.remote().result()
        feed = status["feeds"][0]
        if started is None and feed.get("warmup_candles"):
            started = time.perf_counter()  # the live replay starts once warm-up is routed
        if feed.get("done"):
            return started or time.perf_counter(), status
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=300)
    parser.add_argument("--shards", type=int, default=2)
    args = parser.parse_args(argv)
    base_rate, base_lat = baseline(args.symbols, args.minutes)
    rate, status = through_serve(args.symbols, args.minutes, args.shards)
    shard_lat = [s["latency_ms"].get("1m", {}) for s in status["shards"]]
    p50 = max(s.get("p50", float("nan")) for s in shard_lat)
    p99 = max(s.get("p99", float("nan")) for s in shard_lat)
    print(f"{args.symbols} symbols x {args.minutes} minutes, {args.shards} shards, 2 CPUs\n")
    print("| path | symbol-candles/s | tick latency p50 | tick latency p99 |\n| --- | --- | --- | --- |")
    print(f"| Serve pipeline (feed -> shards -> model -> sink) | {rate:,.0f} | {p50:.1f} ms | {p99:.1f} ms |")
    print(f"| baseline: one process, no Ray | {base_rate:,.0f} | {np.percentile(base_lat, 50):.1f} ms | "
          f"{np.percentile(base_lat, 99):.1f} ms |")
    print(f"\nratio Serve / baseline: {rate / base_rate:.2f}x; targets: >= 100,000 symbol-candles/s "
          f"({'met' if rate >= 100_000 else 'NOT met'}), p99 < 50 ms ({'met' if p99 < 50 else 'NOT met'})")
    print("latency: feed emits a minute's batch -> that tick's predictions handed to the sink (per shard; "
          "the worst shard's percentile shown)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
