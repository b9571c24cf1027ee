#!/usr/bin/env python
"""Benchmark the backfill's features + predictions against a trading-notebook baseline.

Prints one table of candle rows per second through the backfill code path:
features only (``feature_rows``: batch twin, warm mask, realized labels), then features
plus each 1m model alone (``BatchPredictor``: tree ensembles compiled to native code, the
others on ONNX Runtime; the live prediction rows from ``build_predictions`` and their
outcomes), the production direction model on ONNX Runtime (the compiled path's baseline),
then plus every 1m model; each in this process (one core, with the CPU time per row and
the part of it inside the models) and in two
worker processes (both cores, no Ray), and, for features only, the production direction
model, the cheapest single model and all models, through Ray Data as ``tickcast backfill``
(``orchestrator/cli/backfill.py``) runs it (end to end including the actors' start, and
steady: the rows after the first output block over the time after it). Beside them the naive
baseline, as most trading notebooks do it: for each row, pandas rolling/ewm indicators
over the last ``--window`` candles, then one model call per row per model (timed on
``--baseline-rows`` rows).

Data: the real 1m candles (``--data``, default ../shared/data: binance-spot-1m and
binance-usdm-1m, 9 series), each repeated ``--scale`` times under other symbol names.

    tickcast bench backfill [--data ../shared/data] [--scale 3] [--quick | --smoke]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa

from orchestrator import PROJECT_ROOT
from orchestrator.batch.backfill.features import feature_rows
from orchestrator.batch.backfill.job import BackfillOptions, label_types, load_candles
from orchestrator.batch.backfill.models import ModelSpec, select_models
from orchestrator.batch.backfill.predict import BatchPredictor
from orchestrator.batch.backfill.sources import DataSource
from orchestrator.bench.features import pandas_features  # the same pandas baseline
from orchestrator.bench.harness import (
    DEFAULT_DATA,
    add_smoke_flag,
    apply_smoke,
    best_times,
    data_root,
    format_cell,
    print_header,
    targets_not_judged,
)
from orchestrator.bench.harness import print_table as print_table_md
from orchestrator.features import FEATURE_NAMES

TARGET_ROWS_PER_S = 1_000_000  # features + one model, 2 cores
TARGET_RATIO = 100  # times the naive baseline
MODELS_DIR = PROJECT_ROOT / "models_onnx"
NOW_MS = 1_800_000_000_000

# Set in the parent before the worker processes fork, so they inherit it.
_WORK: dict = {}


def candle_series(data: Path, scale: int, rows: int | None = None) -> list[pa.Table]:
    """The real 1m series under ``data``, each repeated ``scale`` times; with ``rows``, the
    last ``rows`` candles of each."""
    options = BackfillOptions(
        sources=(
            DataSource(data / "binance-spot-1m"),
            DataSource(data / "binance-usdm-1m", "binanceusdm"),
        ),
        out=Path("unused"),
    )
    series = load_candles(options, ("1m",))
    if rows is not None:
        series = [t.slice(max(0, t.num_rows - rows)) for t in series]
    return repeated(series, scale)


def synthetic_series(count: int, rows: int) -> list[pa.Table]:
    """``count`` seeded random walks of ``rows`` 1m candles (a smoke run without real data)."""
    from orchestrator.bench.features import synthetic_candles
    from orchestrator.market.schema import candles_from_columns

    series = []
    for i in range(count):
        frame = synthetic_candles(rows, seed=i)
        series.append(
            candles_from_columns(
                exchange="synthetic",
                symbol=f"SYN{i}/USDT",
                timeframe="1m",
                open_time=frame["open_time"].to_numpy(),
                columns={
                    c: frame[c].to_numpy()
                    for c in ("open", "high", "low", "close", "volume", "taker_buy_base")
                },
            )
        )
    return series


def repeated(series: list[pa.Table], scale: int) -> list[pa.Table]:
    copies = []
    for k in range(scale):
        for table in series:
            symbol = pa.repeat(f"{table.column('symbol')[0].as_py()}#{k}", table.num_rows)
            copies.append(table.set_column(1, "symbol", symbol))
    return copies


def cases() -> list[tuple[str, list, str]]:
    """(name, models, engine): features alone, each 1m model alone (tree ensembles compiled),
    the production direction model on ONNX Runtime (the previous path, the baseline of the
    compiled one), then every 1m model."""
    every = select_models(MODELS_DIR, tuple(ModelSpec.parse("all")), ("1m",))[0]
    production = select_models(MODELS_DIR, (ModelSpec("direction"),), ("1m",))[0]
    keys = {m.key for m in production}
    singles = [(f"+ {m.key}{' (production)' if m.key in keys else ''}", [m], "auto") for m in every]
    return [
        ("features only", [], "auto"),
        *singles,
        (f"+ {production[0].key} (production, ONNX Runtime)", production, "onnx"),
        (f"+ all {len(every)} models", every, "auto"),
    ]


# --- the backfill code path, in process ------------------------------------------------------


def model_seconds(series: list[pa.Table], models: list, engine: str, repeats: int) -> float:
    """CPU seconds of the models' predictors alone (compiled trees or ONNX Runtime sessions,
    as ``engine`` picks, on every series' feature rows): the floor under a case's CPU time."""
    from orchestrator.batch.backfill.features import feature_matrix
    from orchestrator.models.compiled import predictor_factory

    matrices = [feature_matrix(feature_rows(c, label_types=())) for c in series]
    make = predictor_factory(engine)
    predictors = [make(m.manifest, m.model_bytes) for m in models]
    for predictor in predictors:
        predictor.predict(matrices[0])  # a compiled model checks itself on its first call
    return best_times(lambda: [p.predict(x) for p in predictors for x in matrices], repeats)[1]


def run_series(series: list[pa.Table], models: list, engine: str = "auto") -> int:
    """Rows predicted (or feature rows, without models) for every series."""
    predictor = BatchPredictor(models, 0.6, 0.7, NOW_MS, engine=engine) if models else None
    produced = 0
    for candles in series:
        rows = feature_rows(candles, label_types=label_types(models) if models else ())
        produced += (predictor(rows) if predictor else rows).num_rows
    return produced


def _worker(part: int) -> int:
    series, models = _WORK["series"][part::2], _WORK["models"]
    predictor = BatchPredictor(models, 0.6, 0.7, NOW_MS, engine=_WORK["engine"]) if models else None
    out = []
    for candles in series:
        rows = feature_rows(candles, label_types=label_types(models) if models else ())
        out.append(predictor(rows) if predictor else rows)
    return sum(t.num_rows for t in out)


def two_processes(series: list[pa.Table], models: list, engine: str, repeats: int) -> float:
    _WORK.update(series=series, models=models, engine=engine)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(_worker, (0, 1)))  # fork and warm both workers
        return best_times(lambda: list(pool.map(_worker, (0, 1))), repeats)[0]


# --- the backfill code path, through Ray Data -------------------------------------------------


def ray_run(series: list[pa.Table], models: list, repeats: int) -> tuple[float, float]:
    """Through the Ray Data stage (candle tables in, every output block in the driver), best
    of ``repeats``: (end-to-end seconds, steady rate). The steady rate counts the rows that
    arrived after the first block, over the time after it: the pipeline once its actors are
    up and busy, without their start-up (seconds per run, whatever the data size)."""
    import ray

    from orchestrator.batch.backfill.ray_data import predict_with_ray_data

    options = BackfillOptions(
        sources=(),
        out=Path("unused"),
        num_actors=2,
        actor_cpus=1.0,
        feature_cpus=1.0,
        batch_size=65_536,
    )

    def blocks():
        if models:
            return predict_with_ray_data(series, models, options, NOW_MS)
        dataset = ray.data.from_arrow(series).map_batches(
            feature_rows, batch_size=None, batch_format="pyarrow", num_cpus=1.0
        )
        return dataset.iter_batches(batch_format="pyarrow", batch_size=None)

    best = (float("inf"), 0.0)
    for _ in range(repeats):
        start = time.perf_counter()
        arrivals = [(time.perf_counter(), block.num_rows) for block in blocks()]
        total = time.perf_counter() - start
        # output rows per candle row in: one per model, or one when there is no model
        per_candle = sum(n for _, n in arrivals) / sum(t.num_rows for t in series)
        rows_after = sum(n for _, n in arrivals[1:]) / per_candle
        span = arrivals[-1][0] - arrivals[0][0] if len(arrivals) > 1 else float("nan")
        steady = rows_after / span if span and span > 0 else float("nan")
        best = min(best, (total, steady), key=lambda pair: pair[0])
    return best


# --- the naive baseline -----------------------------------------------------------------------


def naive_seconds(
    candles: pa.Table, models: list, rows: int, window: int
) -> tuple[float, dict[str, float]]:
    """Seconds per row of a notebook's loop: pandas indicators over the last ``window``
    candles, and (timed apart, per model) one model call with that row."""
    from orchestrator.models.predictor import OnnxPredictor

    frame = candles.select(
        ["open_time", "open", "high", "low", "close", "volume", "taker_buy_base"]
    ).to_pandas()
    frame["taker_buy_base"] = frame["taker_buy_base"].astype(float)
    start = time.perf_counter()
    features = [
        pandas_features(frame.iloc[t - window + 1 : t + 1])
        .iloc[-1][list(FEATURE_NAMES)]
        .to_numpy(dtype=np.float64)[None, :]
        for t in range(window, window + rows)
    ]
    per_row = (time.perf_counter() - start) / rows
    calls = {}
    for model in models:
        predictor = OnnxPredictor(model.manifest, model.model_bytes)
        start = time.perf_counter()
        for row in features:
            predictor.predict(row)
        calls[model.key] = (time.perf_counter() - start) / rows
    return per_row, calls


def through_ray_data(name: str, models: list, cheapest: str, smoke: bool) -> bool:
    """Features only, the production model, the cheapest single model and all models; in a
    smoke run features only and the production model (both of Ray Data's code paths)."""
    if smoke:
        return not models or name.endswith("(production)")
    return len(models) != 1 or name.endswith("(production)") or name == cheapest


# --- the table ----------------------------------------------------------------------------------


def measure(series: list[pa.Table], args) -> list[tuple]:
    """Every case without Ray first (worker processes fork before Ray starts), then Ray."""
    rows_in = sum(t.num_rows for t in series)
    all_cases = cases()
    naive_features, naive_calls = naive_seconds(
        series[0], all_cases[-1][1], args.baseline_rows, args.window
    )
    plain = []
    for name, models, engine in all_cases:
        run_series(series[:1], models, engine)  # compile or load models, warm caches
        wall, cpu = best_times(lambda m=models, e=engine: run_series(series, m, e), args.repeats)
        both = rows_in / two_processes(series, models, engine, args.repeats)
        naive = 1.0 / (naive_features + sum(naive_calls[m.key] for m in models))
        session = model_seconds(series, models, engine, args.repeats) / rows_in if models else 0.0
        plain.append((name, models, (rows_in / wall, cpu / rows_in, session), both, naive))
        print(f"  measured {name} without Ray", file=sys.stderr, flush=True)
    from orchestrator.batch.backfill.ray_data import ensure_ray

    ensure_ray()
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    if not args.smoke:
        ray_run(series, [], 1)  # start Ray's worker processes (imports) once, untimed
    singles = [p for p in plain if len(p[1]) == 1]
    cheapest = min(singles, key=lambda p: p[2][1])[0]
    results = []
    for name, models, (local, cpu_per_row, session), both, naive in plain:
        ray_rate = steady = float("nan")
        if through_ray_data(name, models, cheapest, args.smoke):
            total, steady = ray_run(series, models, args.ray_repeats)
            ray_rate = rows_in / total
            print(f"  measured {name} through Ray Data", file=sys.stderr, flush=True)
        results.append((name, local, cpu_per_row, session, both, ray_rate, steady, naive))
    return results


HEADERS = (
    "case",
    "1 process",
    "CPU us",
    "model us",
    "2-core cap",
    "2 processes",
    "Ray Data",
    "Ray steady",
    "naive",
    "best/naive",
)
FORMATS = (None, ",.0f", ",.2f", ",.2f", ",.0f", ",.0f", ",.0f", ",.0f", ",.0f", None)


def print_table(results: list[tuple], rows_in: int, args) -> None:
    print_table_md(
        HEADERS,
        [
            (
                name,
                local,
                cpu * 1e6,
                session * 1e6,
                2 / cpu,
                both,
                ray_rate,
                steady,
                naive,
                f"{fastest(local, both, ray_rate) / naive:,.0f}x",
            )
            for name, local, cpu, session, both, ray_rate, steady, naive in results
        ],
        formats=FORMATS,
    )
    print(
        f"candle rows per second; {rows_in:,} rows in. CPU us: CPU time per row in one "
        "process; model us: the part of it spent in the models (compiled trees where a model is "
        "one tree ensemble, else ONNX Runtime; '(ONNX Runtime)': all ONNX Runtime); 2-core "
        "cap: 2 / CPU us, what two idle cores could do. Ray Data: end to end, the actors' "
        "start included; 'Ray steady': after the first output block (actors up). naive: "
        f"pandas indicators over {args.window} candles per row + one call per row per model "
        f"({args.baseline_rows:,} rows)."
    )


def fastest(local: float, both: float, ray_rate: float) -> float:
    return max(local, both, np.nan_to_num(ray_rate))


def print_targets(results: list[tuple]) -> None:
    """The target names "one model": the verdict takes the fastest single model, and the
    production direction model's figure is printed beside it, met or not."""
    singles = [r for r in results if r[0].startswith("+ ") and not r[0].startswith("+ all")]
    best = max(singles, key=lambda r: fastest(r[1], r[4], r[5]))
    production = next(r for r in results if r[0].endswith("(production)"))
    for label, r in (("fastest single model", best), ("production direction model", production)):
        rate = fastest(r[1], r[4], r[5])
        verdict = "met" if rate >= TARGET_ROWS_PER_S else "NOT met"
        print(
            f"target features + one model >= {TARGET_ROWS_PER_S:,} rows/s on 2 cores, "
            f"{label} ({r[0][2:]}): best {rate:,.0f} (2 processes {r[4]:,.0f}, Ray Data "
            f"{format_cell(r[5])}, Ray steady {format_cell(r[6])}; 2-core cap "
            f"{2 / r[2]:,.0f}; the model alone {r[3] * 1e6:.2f} us/row, a cap of "
            f"{2 / r[3]:,.0f}) -> {verdict}"
        )
    onnx = next(r for r in results if r[0].endswith("(production, ONNX Runtime)"))
    print(
        f"production direction model, compiled trees vs ONNX Runtime in this run: "
        f"2 processes {production[4]:,.0f} vs {onnx[4]:,.0f} rows/s; the model alone "
        f"{production[3] * 1e6:.2f} vs {onnx[3] * 1e6:.2f} us/row"
    )
    ratio = fastest(production[1], production[4], production[5]) / production[7]
    print(
        f"target >= {TARGET_RATIO}x the naive baseline (production direction model): "
        f"{ratio:,.0f}x -> {'met' if ratio >= TARGET_RATIO else 'NOT met'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=data_root(DEFAULT_DATA))
    parser.add_argument("--scale", type=int, default=3, help="copies of each real series")
    parser.add_argument("--rows", type=int, help="only the last ROWS candles of each series")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ray-repeats", type=int, default=2)
    parser.add_argument("--baseline-rows", type=int, default=2000)
    parser.add_argument(
        "--window", type=int, default=100, help="candles the naive baseline recomputes over per row"
    )
    parser.add_argument("--quick", action="store_true", help="scale 1, one repeat, 300 rows")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.scale, args.repeats, args.ray_repeats, args.baseline_rows = 1, 1, 2, 300
    apply_smoke(parser, args, scale=1, rows=2_000, repeats=1, ray_repeats=1, baseline_rows=20)
    real = all((args.data / d).is_dir() for d in ("binance-spot-1m", "binance-usdm-1m"))
    if real:
        series = candle_series(args.data, args.scale, args.rows)
    elif args.smoke:
        print(f"no real 1m candles under {args.data}: a smoke run on synthetic series")
        series = synthetic_series(3, args.rows)
    else:
        print(
            f"no real 1m candles under {args.data} (binance-spot-1m, binance-usdm-1m): pass --data",
            file=sys.stderr,
        )
        return 2
    rows_in = sum(t.num_rows for t in series)
    print_header(
        "backfill", f"{len(series)} series x 1m", f"{rows_in:,} candle rows", smoke=args.smoke
    )
    results = measure(series, args)
    print_table(results, rows_in, args)
    if args.smoke:
        targets_not_judged()
    else:
        print_targets(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
