#!/usr/bin/env python
"""End-to-end throughput and per-tick latency of the live pipeline.

Two runs of the whole Serve application (feed actor -> feature shards -> ONNX model
deployment -> sink) on the synthetic market with N symbols (default 1,000):

* throughput: the market replays as fast as it can, ``--batch-minutes`` minutes per feed
  batch (``batch_minutes`` at speed 0): symbol-candles predicted per second, the latency of
  a batch, and the CPU time each stage spent per symbol-candle;
* tick latency: one minute per batch at ``--pace`` ticks per second, as a live feed
  delivers them: candle-close-to-prediction latency of a 1,000-symbol tick (p50, p99).

The throughput run and its baseline repeat ``--repeat`` times (default 3), each pair back
to back: on a shared 2-core VM the same code's CPU per symbol-candle moves by a fifth from
one run to the next, so the target is judged on the median run, and every run is printed.

The baseline does the same work in one plain Python process (the same feature engine,
model on the same ``--engine`` and prediction events; no Ray, no log, no outcome scoring).
``--engine auto`` (the default, as ``configs/production.yaml`` serves) runs the direction
model's trees compiled to native code in both; ``--engine onnx`` on ONNX Runtime.
``--smoke``: 20 symbols, 30 minutes, one throughput run and an 8-tick latency run, no
target judged.

    tickcast bench pipeline [--symbols 1000] [--minutes 2000] [--shards 1] [--in-flight 2]
        [--engine auto|onnx] [--repeat 3] [--smoke]

``--matrix``: the production shape instead, 10,000 symbols on six timeframes and 24 models
(``orchestrator/bench/matrix.py``; its own options).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import pyarrow as pa

from orchestrator import PROJECT_ROOT
from orchestrator.bench.harness import (
    add_smoke_flag,
    apply_smoke,
    cpu_seconds,
    machine_ticks,
    percentile,
    print_header,
    print_table,
    stolen_share,
)
from orchestrator.market.schema import candles_from_arrays
from orchestrator.market.synthetic import SyntheticMarket
from orchestrator.models.compiled import ENGINES, predictor_factory
from orchestrator.models.registry import Registry
from orchestrator.sinks.latest import LatestStore
from orchestrator.stream.events import ModelOutput, TickRows, build_predictions
from orchestrator.stream.shard import ShardState, merge_by_timeframe

WARMUP_MINUTES = 40  # unpaced history first, so every measured minute predicts


def baseline(
    n_symbols: int, minutes: int, batch_minutes: int, engine: str = "onnx"
) -> tuple[float, list[float]]:
    """(symbol-candles/s, per-tick latencies in ms) in one process, the model on ``engine``."""
    registry = Registry(PROJECT_ROOT / "models_onnx")
    manifest = registry.resolve("direction", "1m")
    predictor = predictor_factory(engine)(manifest, registry.load_bytes(manifest))
    symbols = [f"SYN{i:04d}/USDT" for i in range(n_symbols)]
    market, state, store = SyntheticMarket(n_symbols, seed=7), ShardState(("1m",)), LatestStore()
    for _ in range(WARMUP_MINUTES):
        state.process(market_minute(market, symbols))
    batches = [_minutes(market, symbols, batch_minutes) for _ in range(minutes // batch_minutes)]
    latencies, started = [], time.perf_counter()
    for batch in batches:
        t0 = time.perf_counter()
        for tick in merge_by_timeframe(state.process(batch)):
            values = predictor.predict(tick.features)
            out = ModelOutput(
                manifest.model_id, "direction", manifest.version, ("prob_up",), values
            )
            rows = TickRows(tick.exchange, tick.symbol, "1m", tick.open_time, tick.close, t0 * 1000)
            store.update(build_predictions(out, rows, time.perf_counter() * 1000, 0.6, 0.7))
        latencies.append((time.perf_counter() - t0) * 1000)
    return n_symbols * len(batches) * batch_minutes / (time.perf_counter() - started), latencies


def market_minute(market: SyntheticMarket, symbols: list[str]) -> pa.RecordBatch:
    m = market.next_minute()
    ohlcv = {k: getattr(m, k) for k in ("open", "high", "low", "close", "volume")}
    return candles_from_arrays("synthetic", symbols, "1m", [m.open_time] * len(symbols), ohlcv)


def _minutes(market: SyntheticMarket, symbols: list[str], count: int) -> pa.Table:
    return pa.Table.from_batches([market_minute(market, symbols) for _ in range(count)])


def through_serve(
    n_symbols: int,
    minutes: int,
    shards: int,
    batch_minutes: int,
    pace: float,
    in_flight: int,
    batch_wait_s: float,
    engine: str,
) -> dict:
    """Status of the finished run, with ``cpu``: CPU seconds per stage during it."""
    from ray import serve

    from serve_app.app import build_app

    with tempfile.TemporaryDirectory() as tmp:
        args = {
            "environment": "bench",
            "feeds": [
                {
                    "kind": "synthetic",
                    "n_symbols": n_symbols,
                    "speed": pace,
                    "seed": 7,
                    "max_minutes": minutes,
                    "warmup_minutes": WARMUP_MINUTES,
                    "batch_minutes": batch_minutes,
                }
            ],
            # Checkpoints as by default: every 100 minutes of candles.
            "features": {"shards": shards, "num_cpus": 0.1},
            "stream": {"state_dir": f"{tmp}/state", "in_flight": in_flight},
            "serving": {
                "num_cpus": 0.1,
                "max_batch_size": 64,
                "batch_wait_timeout_s": batch_wait_s,
                "engine": engine,
            },
            "sink": {"log_dir": f"{tmp}/log", "flush_rows": 200_000},
        }
        serve.run(build_app(args), name="tickcast", route_prefix=None)
        try:
            return wait_done(serve.get_deployment_handle("Pipeline", app_name="tickcast"))
        finally:
            serve.delete("tickcast")


def wait_done(pipeline, poll_s: float = 0.5) -> dict:
    """The final status. Progress is polled from the feed actor alone (it reports when its
    live replay started and ended); the whole pipeline's status, which reaches every actor
    and the shards' outcome and drift summaries, is asked for twice, so the measurement
    itself costs the measured stages nothing while they run."""
    import ray

    feed = pipeline.actors.remote().result()["feeds"][0]
    before = walls = None
    ticks = machine_ticks()
    while True:
        progress = ray.get(feed.status.remote())
        if before is None and progress.get("live_since"):
            before, walls = cpu_by_stage(pipeline), shard_stages(pipeline.status.remote().result())
            ticks = machine_ticks()
        if progress.get("done"):
            after, stolen = cpu_by_stage(pipeline), stolen_share(ticks, machine_ticks())
            status = pipeline.status.remote().result()
            # A run shorter than one poll (a smoke run) counts its warm-up too.
            before, walls = before or {}, walls or {}
            return {
                **status,
                "cpu": {k: after[k] - before.get(k, 0.0) for k in after},
                "stages": {k: v - walls.get(k, 0.0) for k, v in shard_stages(status).items()},
                "stolen": stolen,
            }
        time.sleep(poll_s)


def shard_stages(status: dict) -> dict[str, float]:
    """Wall seconds so far per shard stage (features, model_wait, events, outcomes), summed
    over the shards."""
    stages: dict[str, float] = {}
    for shard in status["shards"]:
        for stage, seconds in shard.get("stage_seconds", {}).items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    return stages


def cpu_by_stage(pipeline) -> dict[str, float]:
    """CPU seconds used so far by each stage's processes (Linux /proc); every other process
    of this Ray node (controller, proxy, supervisor, ingress, raylet, GCS, ...) as one."""
    import ray
    from ray import serve

    actors = pipeline.actors.remote().result()
    deployments = serve.status().applications["tickcast"].deployments
    models = [name for name in deployments if name.startswith(("model-", "models"))]
    known = {
        "feed": ray.get([f.pid.remote() for f in actors["feeds"]]),
        "feature shards": ray.get([s.pid.remote() for s in actors["shards"]]),
        "sink": [ray.get(actors["sink"].pid.remote())],
        "model replicas": [
            serve.get_deployment_handle(name, app_name="tickcast").pid.remote().result()
            for name in models
        ],
    }
    cpu = {stage: sum(map(cpu_seconds, pids)) for stage, pids in known.items()}
    mine = {pid for pids in known.values() for pid in pids}
    cpu["Ray and Serve (all other processes)"] = sum(map(cpu_seconds, node_processes() - mine))
    return cpu


def node_processes() -> set[int]:
    """This node's Ray daemons and every worker process the raylet started."""
    import ray

    daemons = {
        p.process.pid
        for procs in ray._private.worker._global_node.all_processes.values()
        for p in procs
    }
    raylets = {p.process.pid for p in ray._private.worker._global_node.all_processes["raylet"]}
    workers = set()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) in raylets:
                    workers.add(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return daemons | workers


def _latency(status: dict) -> tuple[float, float]:
    """The worst shard's p50 and p99 of 1m tick latency."""
    shard_lat = [s["latency_ms"].get("1m", {}) for s in status["shards"]]
    return (
        max(s.get("p50", float("nan")) for s in shard_lat),
        max(s.get("p99", float("nan")) for s in shard_lat),
    )


def _cpu_per_candle(status: dict) -> float:
    """CPU µs the whole node spent per symbol-candle predicted."""
    return sum(status["cpu"].values()) / _rate(status)[0] * 1e6


def _rate(status: dict) -> tuple[int, float]:
    feed = status["feeds"][0]
    predicted = sum(s["rows_predicted"] for s in status["shards"])
    return predicted, predicted / (feed["done_at"] - feed["live_since"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--matrix" in argv:  # the production shape: orchestrator/bench/matrix.py
        from orchestrator.bench import matrix

        return matrix.main([a for a in argv if a != "--matrix"])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument(
        "--minutes", type=int, default=2000, help="minutes replayed as fast as possible"
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=1,
        help="feature shards (on 2 cores one leaves the other core to the rest)",
    )
    parser.add_argument(
        "--batch-minutes",
        type=int,
        default=10,
        help="minutes per feed batch in the throughput run (batch_minutes at speed 0)",
    )
    parser.add_argument(
        "--pace", type=float, default=4.0, help="ticks per second in the latency run"
    )
    parser.add_argument("--latency-minutes", type=int, default=120)
    parser.add_argument("--in-flight", type=int, default=2, help="batches in flight per shard")
    parser.add_argument(
        "--batch-wait-s",
        type=float,
        default=0.0,
        help="the model deployments' @serve.batch wait (serving.batch_wait_timeout_s)",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="serving.engine, and the baseline's (production: auto, tree ensembles compiled)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="throughput runs, each beside its own baseline run; judged on the median",
    )
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    apply_smoke(parser, args, symbols=20, minutes=30, latency_minutes=8, pace=8.0, repeat=1)
    print_header("pipeline", smoke=args.smoke)
    _, base_tick = baseline(args.symbols, args.latency_minutes, 1, args.engine)

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    runs = []
    try:
        for _ in range(max(1, args.repeat)):
            base_rate, base_lat = baseline(
                args.symbols, args.minutes, args.batch_minutes, args.engine
            )
            fast = through_serve(
                args.symbols,
                args.minutes,
                args.shards,
                args.batch_minutes,
                0,
                args.in_flight,
                args.batch_wait_s,
                args.engine,
            )
            runs.append((_rate(fast)[1], base_rate, base_lat, fast))
        paced = through_serve(
            args.symbols,
            args.latency_minutes,
            args.shards,
            1,
            args.pace,
            args.in_flight,
            args.batch_wait_s,
            args.engine,
        )
    finally:
        ray.shutdown()
    print(
        f"{args.symbols} symbols, {args.shards} shards, engine {args.engine}, 2 CPUs; "
        "throughput run: "
        f"{args.minutes} minutes as fast as possible, {args.batch_minutes} minutes per batch, "
        f"{len(runs)} times; latency run: {args.latency_minutes} one-minute ticks at "
        f"{args.pace:g} ticks/s\n"
    )
    print_table(
        (
            "throughput run",
            "Serve pipeline",
            "baseline",
            "ratio",
            "CPU µs / symbol-candle",
            "cores busy",
            "stolen",
        ),
        [
            (
                f"{i + 1}",
                rate,
                base_rate,
                f"{rate / base_rate:.2f}",
                f"{_cpu_per_candle(fast):.2f}",
                f"{rate * _cpu_per_candle(fast) / 1e6:.2f} of 2",
                f"{fast['stolen']:.1%}",
            )
            for i, (rate, base_rate, _, fast) in enumerate(runs)
        ],
    )
    # The median run (by throughput) stands for the command: its latency and stages below.
    # (the lower of the middle two for an even count)
    rate, base_rate, base_lat, fast = sorted(runs, key=lambda r: r[0])[(len(runs) - 1) // 2]
    predicted = _rate(fast)[0]
    (f50, f99), (t50, t99) = _latency(fast), _latency(paced)
    print(f"\nthe median run ({rate:,.0f} symbol-candles/s) in detail:\n")
    print_table(
        (
            "path",
            "symbol-candles/s",
            "batch latency p50 / p99",
            f"{args.symbols:,}-symbol tick latency p50 / p99",
        ),
        [
            (
                "Serve pipeline (feed -> shards -> model -> sink)",
                rate,
                f"{f50:.1f} / {f99:.1f} ms",
                f"{t50:.1f} / {t99:.1f} ms",
            ),
            (
                "baseline: one process, no Ray",
                base_rate,
                f"{percentile(base_lat, 50):.1f} / {percentile(base_lat, 99):.1f} ms",
                f"{percentile(base_tick, 50):.1f} / {percentile(base_tick, 99):.1f} ms",
            ),
        ],
    )
    if args.smoke:
        targets = "targets: not judged in a smoke run"
    else:
        targets = (
            f"targets: >= 100,000 symbol-candles/s in the median run "
            f"({'met' if rate >= 100_000 else 'NOT met'}), "
            f"tick p99 < 50 ms ({'met' if t99 < 50 else 'NOT met'})"
        )
    print(f"\nratio Serve / baseline: {rate / base_rate:.2f}x; {targets}")
    print(
        f"CPU time the hypervisor took from this machine during the throughput run: "
        f"{fast['stolen']:.1%} (figures of runs with much of it are not comparable)"
    )
    print(
        "latency: the feed emits a batch -> its predictions handed to the sink "
        "(worst shard's percentile)\n"
    )
    print("latency run, per shard:", [s["latency_ms"].get("1m") for s in paced["shards"]], "\n")
    cpu = sorted(fast["cpu"].items(), key=lambda kv: -kv[1])
    print_table(
        ("stage (throughput run)", "CPU µs per symbol-candle"),
        [
            *((stage, seconds / predicted * 1e6) for stage, seconds in cpu),
            (f"total (2 cores give {2e6 / rate:.2f})", sum(fast["cpu"].values()) / predicted * 1e6),
        ],
        formats=(None, ",.2f"),
    )
    print()
    print_table(
        ("shard stage (wall, summed over shards)", "µs per symbol-candle"),
        [(stage, seconds / predicted * 1e6) for stage, seconds in fast["stages"].items()],
        formats=(None, ",.2f"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
