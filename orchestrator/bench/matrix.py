"""The production shape: ``tickcast bench pipeline --matrix``.

10,000 symbols of the synthetic market on six timeframes (1m, 5m, 15m, 1h, 4h, 1d) with all
24 models (four types per timeframe), through the whole Serve application, one-minute
ticks paced at ``--pace`` per second. The live ticks run from ``--before`` minutes before a
day's end to ``--after`` minutes into the next day, so they include ticks where 1m alone
closes, 1m+5m, 1m+5m+15m, the hour (1m..1h) and the day (all six at once).

Higher timeframes would need weeks of 1m candles to warm up (a 1d feature needs 33 closed
days), so the run starts from a shard checkpoint seeded with 40 candles of each higher
timeframe per symbol (``ShardState.warm_timeframe``); the feed's warm-up minutes warm 1m.

It prints, per kind of tick, the latency from the feed emitting the candles to the last
prediction of the tick handed to the sink (p50 / p99 / max, the worst shard), beside the
same ticks computed in one plain process (the baseline: the same feature engine and models
on the same ``--engine``; no Ray, no events, outcomes or sink); the CPU each stage spent per
symbol-candle, the shard's wall time per stage; and the memory (PSS) of every process of
the node at the end of the run.

    tickcast bench pipeline --matrix [--symbols 10000] [--groups timeframe] [--engine auto]
        [--pace 0.5] [--before 62] [--after 3] [--shards 1] [--smoke]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from orchestrator import PROJECT_ROOT
from orchestrator.bench.harness import add_smoke_flag, apply_smoke, print_header, print_table
from orchestrator.bench.pipeline import market_minute, node_processes, wait_done
from orchestrator.bench.stack import stack_memory
from orchestrator.market.schema import candles_from_arrays
from orchestrator.market.synthetic import DEFAULT_START_MS, SyntheticMarket
from orchestrator.market.timeframes import timeframe_ms
from orchestrator.models.compiled import Predictor, predictor_factory
from orchestrator.models.registry import Registry
from orchestrator.stream.checkpoint import save_checkpoint
from orchestrator.stream.routing import shard_of
from orchestrator.stream.shard import ShardState, merge_by_timeframe

TIMEFRAMES = ("1m", "5m", "15m", "1h", "4h", "1d")
MODEL_TYPES = ("direction", "volatility", "return", "swing")
MINUTE_MS = 60_000
DAY_END_MS = DEFAULT_START_MS + 86_400_000  # 2026-01-02T00:00Z: every timeframe closes
SEEDED_CANDLES = 40  # per higher timeframe and symbol: more than the longest warm-up (33)
EXCHANGE = "synthetic"


def symbols_of(n: int) -> list[str]:
    return [f"SYN{i:04d}/USDT" for i in range(n)]


def live_start_ms(before: int) -> int:
    return DAY_END_MS - before * MINUTE_MS


def seeded_state(symbols: list[str], first_minute_ms: int) -> ShardState:
    """A shard state whose higher timeframes hold ``SEEDED_CANDLES`` closed candles each,
    the last one just before the period containing ``first_minute_ms``, and that period
    open up to the minute before it (as when warmed from an exchange's klines)."""
    state = ShardState(TIMEFRAMES)
    n, names = len(symbols), np.array(symbols, dtype=object)
    for timeframe in TIMEFRAMES[1:]:
        step = timeframe_ms(timeframe)
        current = first_minute_ms // step * step
        market = SyntheticMarket(n, seed=zlib.crc32(timeframe.encode()))
        for k in range(SEEDED_CANDLES + 1):
            m = market.next_minute()
            ohlcv = {f: getattr(m, f) for f in ("open", "high", "low", "close", "volume")}
            open_time = np.full(n, current - (SEEDED_CANDLES - k) * step, dtype=np.int64)
            batch = candles_from_arrays(EXCHANGE, names, timeframe, open_time, ohlcv)
            if k < SEEDED_CANDLES:
                state.warm_timeframe(timeframe, batch)
            elif first_minute_ms > current:
                state.open_period(timeframe, batch, first_minute_ms - MINUTE_MS)
    return state


def seed_checkpoints(run_dir: Path, symbols: list[str], shards: int, first_minute_ms: int) -> None:
    """What each shard restores at start (``FeatureShard.__init__``)."""
    for shard in range(shards):
        mine = [s for s in symbols if shard_of(EXCHANGE, s, shards) == shard]
        state = seeded_state(mine, first_minute_ms)
        save_checkpoint(
            run_dir / f"shard-{shard}-of-{shards}.pkl", {"state": state.snapshot(), "seq": {}}
        )


def kind_of(timeframes: set[str]) -> str:
    return "+".join(tf for tf in TIMEFRAMES if tf in timeframes)


def baseline(
    n_symbols: int, before: int, after: int, warmup: int, engine: str = "onnx"
) -> dict[str, list[float]]:
    """Per kind of tick, the milliseconds one plain process takes for it: features of every
    timeframe that closed, then each of its four models over the rows (on ``engine``)."""
    registry = Registry(PROJECT_ROOT / "models_onnx")
    make = predictor_factory(engine)
    predictors: dict[str, list[Predictor]] = {}
    for timeframe in TIMEFRAMES:
        for model_type in MODEL_TYPES:
            manifest = registry.resolve(model_type, timeframe)
            predictor = make(manifest, registry.load_bytes(manifest))
            predictors.setdefault(timeframe, []).append(predictor)
    symbols = symbols_of(n_symbols)
    first = live_start_ms(before) - warmup * MINUTE_MS
    state = seeded_state(symbols, first)
    market = SyntheticMarket(n_symbols, seed=7, start_ms=first)
    for _ in range(warmup):
        state.process(market_minute(market, symbols))
    latencies: dict[str, list[float]] = {}
    for _ in range(before + after):
        batch = market_minute(market, symbols)
        started = time.perf_counter()
        ticks = merge_by_timeframe(state.process(batch))
        for tick in ticks:
            for predictor in predictors[tick.timeframe]:
                predictor.answer(predictor.predict(tick.features))
        kind = kind_of({t.timeframe for t in ticks if len(t.features)})
        latencies.setdefault(kind, []).append((time.perf_counter() - started) * 1000)
    return latencies


def through_serve(args: argparse.Namespace) -> dict:
    """The finished run's status, with ``cpu`` (seconds per stage during the live ticks)
    and ``memory`` (``stack_memory`` of the node's processes at the end)."""
    from ray import serve

    from serve_app.app import build_app

    first = live_start_ms(args.before) - args.warmup * MINUTE_MS
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "environment": "bench-matrix",
            "feeds": [
                {
                    "kind": "synthetic",
                    "n_symbols": args.symbols,
                    "speed": args.pace,
                    "seed": 7,
                    "start": datetime.fromtimestamp(first / 1000, UTC).isoformat(),
                    "max_minutes": args.before + args.after,
                    "warmup_minutes": args.warmup,
                }
            ],
            "features": {"shards": args.shards, "num_cpus": 0.1, "timeframes": list(TIMEFRAMES)},
            "models": [
                {"model_type": m, "timeframe": tf} for tf in TIMEFRAMES for m in MODEL_TYPES
            ],
            "stream": {"state_dir": f"{tmp}/state"},
            "serving": {
                "num_cpus": 0.1,
                "max_batch_size": 64,
                "model_groups": args.groups,
                "engine": args.engine,
            },
            "sink": {"log_dir": f"{tmp}/log", "flush_rows": 200_000},
        }
        seed_checkpoints(
            Path(tmp) / "state" / "bench-matrix", symbols_of(args.symbols), args.shards, first
        )
        serve.run(build_app(config), name="tickcast", route_prefix=None)
        try:
            pipeline = serve.get_deployment_handle("Pipeline", app_name="tickcast")
            status = wait_done(pipeline, poll_s=2.0)
            time.sleep(2)  # the last ticks' predictions reach the sink
            status["memory"] = stack_memory(sorted(node_processes()))
            return status
        finally:
            serve.delete("tickcast")


def worst_by_kind(status: dict) -> dict[str, dict]:
    """Per kind of tick, the worst shard's latency summary."""
    kinds: dict[str, dict] = {}
    for shard in status["shards"]:
        for kind, summary in shard.get("batch_latency_ms", {}).items():
            if summary.get("ticks") and summary["p99"] >= kinds.get(kind, {}).get("p99", -1):
                kinds[kind] = summary
    return kinds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=10_000)
    parser.add_argument(
        "--groups",
        choices=("none", "timeframe", "all"),
        default="timeframe",
        help="serving.model_groups (production: timeframe)",
    )
    parser.add_argument(
        "--engine",
        choices=("onnx", "auto"),
        default="auto",
        help="serving.engine (production: auto, tree ensembles compiled)",
    )
    parser.add_argument("--pace", type=float, default=0.5, help="one-minute ticks per second")
    parser.add_argument("--before", type=int, default=62, help="live ticks before the day ends")
    parser.add_argument("--after", type=int, default=3, help="live ticks after it")
    parser.add_argument("--warmup", type=int, default=40, help="1m warm-up minutes")
    parser.add_argument("--shards", type=int, default=1)
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    apply_smoke(parser, args, symbols=40, before=16, after=1, pace=4.0, warmup=35)
    print_header("pipeline --matrix", f"{args.symbols:,} symbols x 24 models", smoke=args.smoke)
    base = baseline(args.symbols, args.before, args.after, args.warmup, args.engine)

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        status = through_serve(args)
    finally:
        ray.shutdown()
    serve_kinds = worst_by_kind(status)
    interval_ms = 1000.0 / args.pace
    print(
        f"{args.symbols:,} symbols, timeframes {', '.join(TIMEFRAMES)}, 24 models "
        f"(model_groups: {args.groups}, engine: {args.engine}), {args.shards} shard(s), 2 CPUs; "
        f"{args.before + args.after} one-minute ticks at {args.pace:g}/s "
        f"(one every {interval_ms:,.0f} ms), across the day's close\n"
    )
    rows = []
    for kind in sorted(set(base) | set(serve_kinds), key=lambda k: (k.count("+"), k)):
        s = serve_kinds.get(kind, {})
        b = base.get(kind, [])
        rows.append(
            (
                kind,
                s.get("ticks", 0),
                f"{s.get('p50', float('nan')):,.0f} / {s.get('p99', float('nan')):,.0f} / "
                f"{s.get('max', float('nan')):,.0f} ms",
                f"{np.percentile(b, 50):,.0f} / {np.percentile(b, 99):,.0f} / {max(b):,.0f} ms"
                if b
                else "-",
            )
        )
    print_table(
        (
            "tick kind (timeframes closing)",
            "ticks",
            "Serve: emit -> last prediction p50 / p99 / max",
            "baseline: one process p50 / p99 / max",
        ),
        rows,
    )
    shards = status["shards"]
    predicted = sum(s["rows_predicted"] for s in shards)
    skipped = sum(s.get("stale_ticks_skipped", 0) for s in shards)
    errors = sum(s.get("model_errors", 0) for s in shards)
    print(f"\npredictions: {predicted:,}; stale ticks skipped: {skipped}; model errors: {errors}")
    if args.smoke:
        print("targets: not judged in a smoke run")
    else:
        one = serve_kinds.get("1m", {}).get("p99", float("inf"))
        six = serve_kinds.get(kind_of(set(TIMEFRAMES)), {}).get("p99", float("inf"))
        _, pss, _ = status["memory"]
        print(
            f"targets: 1m-only p99 <= 500 ms ({'met' if one <= 500 else 'NOT met'}), "
            f"all-six p99 <= 1,500 ms ({'met' if six <= 1500 else 'NOT met'}), "
            f"stack <= 6 GiB PSS ({'met' if pss <= 6 * 1024 * 1024 else 'NOT met'}); "
            f"keeps up: {'yes' if skipped == 0 else 'NO'}"
        )
    print()
    cpu = sorted(status["cpu"].items(), key=lambda kv: -kv[1])
    candles = args.symbols * (args.before + args.after)  # live 1m symbol-candles
    print_table(
        ("stage (live ticks)", "CPU µs per 1m symbol-candle"),
        [
            *((stage, seconds / candles * 1e6) for stage, seconds in cpu),
            ("total", sum(status["cpu"].values()) / candles * 1e6),
        ],
        formats=(None, ",.2f"),
    )
    print()
    print_table(
        ("shard stage (live ticks; wall, summed over shards)", "µs per 1m symbol-candle"),
        [(stage, seconds / candles * 1e6) for stage, seconds in status["stages"].items()],
        formats=(None, ",.2f"),
    )
    rss, pss, kinds = status["memory"]
    print()
    print_table(
        ("process kind (end of run)", "count", "PSS sum"),
        [
            (kind, len(sizes), f"{sum(sizes) / 1024:,.0f} MiB")
            for kind, sizes in sorted(kinds.items(), key=lambda kv: -sum(kv[1]))
        ]
        + [("whole node", sum(len(v) for v in kinds.values()), f"{pss / 1024:,.0f} MiB")],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
