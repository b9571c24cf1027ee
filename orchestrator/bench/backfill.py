#!/usr/bin/env python
"""Benchmark the backfill's features + predictions against a trading-notebook baseline.

Prints one table of candle rows per second through the backfill code path:
features only (``feature_rows``: batch twin, warm mask, realized labels), then features
plus each 1m model alone (``BatchPredictor``: ONNX Runtime, the live prediction rows from
``build_predictions`` and their outcomes), then plus every 1m model; each in this process
(one core, with the CPU time per row and the part of it inside ONNX Runtime) and in two
worker processes (both cores, no Ray), and, for features only, the production direction
model, the cheapest single model and all models, through Ray Data as ``orchestrator/cli/backfill.py``
runs it (end to end including the actors' start, and steady: the rows after the first
output block over the time after it). Beside them the naive
baseline, as most trading notebooks do it: for each row, pandas rolling/ewm indicators
over the last ``--window`` candles, then one model call per row per model (timed on
``--baseline-rows`` rows).

Data: the real 1m candles (``--data``, default ../shared/data: binance-spot-1m and
binance-usdm-1m, 9 series), each repeated ``--scale`` times under other symbol names.

    python orchestrator/bench/backfill.py [--data ../shared/data] [--scale 3] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
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
from orchestrator.features import FEATURE_NAMES

TARGET_ROWS_PER_S = 1_000_000  # features + one model, 2 cores
TARGET_RATIO = 100  # times the naive baseline
MODELS_DIR = PROJECT_ROOT / "models_onnx"
NOW_MS = 1_800_000_000_000

# Set in the parent before the worker processes fork, so they inherit it.
_WORK: dict = {}


def candle_series(data: Path, scale: int) -> list[pa.Table]:
    options = BackfillOptions(sources=(DataSource(data / "binance-spot-1m"),
                                       DataSource(data / "binance-usdm-1m", "binanceusdm")),
                              out=Path("unused"))
    series = load_candles(options, ("1m",))
    copies = []
    for k in range(scale):
        for table in series:
            symbol = pa.repeat(f"{table.column('symbol')[0].as_py()}#{k}", table.num_rows)
            copies.append(table.set_column(1, "symbol", symbol))
    return copies


def cases() -> list[tuple[str, list]]:
    """(name, models): features alone, each 1m model alone, then every 1m model."""
    every = select_models(MODELS_DIR, tuple(ModelSpec.parse("all")), ("1m",))[0]
    production = {m.key for m in select_models(MODELS_DIR, (ModelSpec("direction"),),
                                               ("1m",))[0]}
    singles = [(f"+ {m.key}{' (production)' if m.key in production else ''}", [m])
               for m in every]
    return [("features only", []), *singles, (f"+ all {len(every)} models", every)]


# --- the backfill code path, in process ------------------------------------------------------

def session_seconds(series: list[pa.Table], models: list, repeats: int) -> float:
    """CPU seconds of the models' ONNX Runtime sessions alone (``OnnxPredictor.predict``
    on every series' feature rows): the floor under each case's CPU time."""
    from orchestrator.batch.backfill.features import feature_matrix
    from orchestrator.models.predictor import OnnxPredictor

    matrices = [feature_matrix(feature_rows(c, label_types=())) for c in series]
    predictors = [OnnxPredictor(m.manifest, m.model_bytes) for m in models]
    return best_times(lambda: [p.predict(x) for p in predictors for x in matrices], repeats)[1]


def run_series(series: list[pa.Table], models: list) -> int:
    """Rows predicted (or feature rows, without models) for every series."""
    predictor = BatchPredictor(models, 0.6, 0.7, NOW_MS) if models else None
    produced = 0
    for candles in series:
        rows = feature_rows(candles, label_types=label_types(models) if models else ())
        produced += (predictor(rows) if predictor else rows).num_rows
    return produced


def _worker(part: int) -> int:
    series, models = _WORK["series"][part::2], _WORK["models"]
    predictor = BatchPredictor(models, 0.6, 0.7, NOW_MS) if models else None
    out = []
    for candles in series:
        rows = feature_rows(candles, label_types=label_types(models) if models else ())
        out.append(predictor(rows) if predictor else rows)
    return sum(t.num_rows for t in out)


def best_seconds(work, repeats: int) -> float:
    return best_times(work, repeats)[0]


def best_times(work, repeats: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of the fastest of ``repeats`` runs. CPU
    time barely moves when other jobs load the machine; wall time does."""
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def two_processes(series: list[pa.Table], models: list, repeats: int) -> float:
    _WORK.update(series=series, models=models)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(_worker, (0, 1)))  # fork and warm both workers
        return best_seconds(lambda: list(pool.map(_worker, (0, 1))), repeats)


# --- the backfill code path, through Ray Data -------------------------------------------------

def ray_run(series: list[pa.Table], models: list, repeats: int) -> tuple[float, float]:
    """Through the Ray Data stage (candle tables in, every output block in the driver), best
    of ``repeats``: (end-to-end seconds, steady rate). The steady rate counts the rows that
    arrived after the first block, over the time after it: the pipeline once its actors are
    up and busy, without their start-up (seconds per run, whatever the data size)."""
    import ray

    from orchestrator.batch.backfill.ray_data import predict_with_ray_data

    options = BackfillOptions(sources=(), out=Path("unused"), num_actors=2, actor_cpus=1.0,
                              feature_cpus=1.0, batch_size=65_536)

    def blocks():
        if models:
            return predict_with_ray_data(series, models, options, NOW_MS)
        dataset = ray.data.from_arrow(series).map_batches(
            feature_rows, batch_size=None, batch_format="pyarrow", num_cpus=1.0)
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

def naive_seconds(candles: pa.Table, models: list, rows: int, window: int
                  ) -> tuple[float, dict[str, float]]:
    """Seconds per row of a notebook's loop: pandas indicators over the last ``window``
    candles, and (timed apart, per model) one model call with that row."""
    from orchestrator.models.predictor import OnnxPredictor

    frame = candles.select(["open_time", "open", "high", "low", "close", "volume",
                            "taker_buy_base"]).to_pandas()
    frame["taker_buy_base"] = frame["taker_buy_base"].astype(float)
    start = time.perf_counter()
    features = [pandas_features(frame.iloc[t - window + 1: t + 1]).iloc[-1][list(FEATURE_NAMES)]
                .to_numpy(dtype=np.float64)[None, :] for t in range(window, window + rows)]
    per_row = (time.perf_counter() - start) / rows
    calls = {}
    for model in models:
        predictor = OnnxPredictor(model.manifest, model.model_bytes)
        start = time.perf_counter()
        for row in features:
            predictor.predict(row)
        calls[model.key] = (time.perf_counter() - start) / rows
    return per_row, calls


# --- the table ----------------------------------------------------------------------------------

def measure(series: list[pa.Table], args) -> list[tuple]:
    """Every case without Ray first (worker processes fork before Ray starts), then Ray."""
    rows_in = sum(t.num_rows for t in series)
    all_cases = cases()
    naive_features, naive_calls = naive_seconds(series[0], all_cases[-1][1], args.baseline_rows,
                                                args.window)
    plain = []
    for name, models in all_cases:
        run_series(series[:1], models)  # load sessions, warm caches
        wall, cpu = best_times(lambda m=models: run_series(series, m), args.repeats)
        both = rows_in / two_processes(series, models, args.repeats)
        naive = 1.0 / (naive_features + sum(naive_calls[m.key] for m in models))
        session = session_seconds(series, models, args.repeats) / rows_in if models else 0.0
        plain.append((name, models, (rows_in / wall, cpu / rows_in, session), both, naive))
        print(f"  measured {name} without Ray", file=sys.stderr, flush=True)
    from orchestrator.batch.backfill.ray_data import ensure_ray

    ensure_ray()
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    ray_run(series, [], 1)  # start Ray's worker processes (imports) once, untimed
    singles = [p for p in plain if len(p[1]) == 1]
    cheapest = min(singles, key=lambda p: p[2][1])[0]
    results = []
    for name, models, (local, cpu_per_row, session), both, naive in plain:
        ray_rate = steady = float("nan")
        if len(models) != 1 or name.endswith("(production)") or name == cheapest:
            total, steady = ray_run(series, models, args.ray_repeats)
            ray_rate = rows_in / total
            print(f"  measured {name} through Ray Data", file=sys.stderr, flush=True)
        results.append((name, local, cpu_per_row, session, both, ray_rate, steady, naive))
    return results


def print_table(results: list[tuple], rows_in: int, args) -> None:
    head = (f"{'case':<38}{'1 process':>11}{'CPU us':>8}{'ORT us':>8}{'2-core cap':>12}"
            f"{'2 processes':>13}{'Ray Data':>10}{'Ray steady':>12}{'naive':>7}{'best/naive':>12}")
    print(head)
    print("-" * len(head))
    for name, local, cpu, session, both, ray_rate, steady, naive in results:
        print(f"{name:<38}{local:>11,.0f}{cpu * 1e6:>8.2f}{session * 1e6:>8.2f}{2 / cpu:>12,.0f}"
              f"{both:>13,.0f}{_cell(ray_rate, 10)}{_cell(steady, 12)}{naive:>7,.0f}"
              f"{best_rate(local, both, ray_rate) / naive:>11,.0f}x")
    print(f"candle rows per second; {rows_in:,} rows in. CPU us: CPU time per row in one "
          "process; ORT us: the part of it spent in the models' ONNX Runtime sessions; 2-core "
          "cap: 2 / CPU us, what two idle cores could do. Ray Data: end to end, the actors' "
          "start included; 'Ray steady': after the first output block (actors up). naive: "
          f"pandas indicators over {args.window} candles per row + one call per row per model "
          f"({args.baseline_rows:,} rows).")


def best_rate(local: float, both: float, ray_rate: float) -> float:
    return max(local, both, np.nan_to_num(ray_rate))


def _cell(value: float, width: int, spec: str = ",.0f") -> str:
    return f"{'-' if np.isnan(value) else format(value, spec):>{width}}"


def print_targets(results: list[tuple]) -> None:
    """The target names "one model": the verdict takes the fastest single model, and the
    production direction model's figure is printed beside it, met or not."""
    singles = [r for r in results if r[0].startswith("+ ") and not r[0].startswith("+ all")]
    best = max(singles, key=lambda r: best_rate(r[1], r[4], r[5]))
    production = next(r for r in results if r[0].endswith("(production)"))
    for label, r in (("fastest single model", best), ("production direction model", production)):
        rate = best_rate(r[1], r[4], r[5])
        verdict = "met" if rate >= TARGET_ROWS_PER_S else "NOT met"
        print(f"target features + one model >= {TARGET_ROWS_PER_S:,} rows/s on 2 cores, "
              f"{label} ({r[0][2:]}): best {rate:,.0f} (2 processes {r[4]:,.0f}, Ray Data "
              f"{_cell(r[5], 0).strip()}, Ray steady {_cell(r[6], 0).strip()}; 2-core cap "
              f"{2 / r[2]:,.0f}; ONNX Runtime alone {r[3] * 1e6:.2f} us/row, a cap of "
              f"{2 / r[3]:,.0f}) -> {verdict}")
    ratio = best_rate(production[1], production[4], production[5]) / production[7]
    print(f"target >= {TARGET_RATIO}x the naive baseline (production direction model): "
          f"{ratio:,.0f}x -> {'met' if ratio >= TARGET_RATIO else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=PROJECT_ROOT.parent / "shared" / "data")
    parser.add_argument("--scale", type=int, default=3, help="copies of each real series")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ray-repeats", type=int, default=2)
    parser.add_argument("--baseline-rows", type=int, default=2000)
    parser.add_argument("--window", type=int, default=100,
                        help="candles the naive baseline recomputes over per row")
    parser.add_argument("--quick", action="store_true", help="scale 1, one repeat, 300 rows")
    args = parser.parse_args(argv)
    if args.quick:
        args.scale, args.repeats, args.ray_repeats, args.baseline_rows = 1, 1, 2, 300
    series = candle_series(args.data, args.scale)
    rows_in = sum(t.num_rows for t in series)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"tickcast backfill benchmark: {os.cpu_count()} cores (load average {load}), "
          f"{len(series)} series x 1m, {rows_in:,} candle rows")
    results = measure(series, args)
    print_table(results, rows_in, args)
    print_targets(results)


if __name__ == "__main__":
    main()
