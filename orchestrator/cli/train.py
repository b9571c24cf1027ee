#!/usr/bin/env python
"""Train every model in models_onnx/ from real candles, export them to ONNX, and print their
out-of-sample metrics beside naive baselines.

    tickcast train --data ../shared/data

Model types direction (LightGBM v1, stacked ensemble v2), volatility, return and swing, for
1m, 5m, 15m (1m spot + USD-M futures, resampled), 1h (a sample of the 136 hourly pairs),
4h and 1d (every hourly pair, resampled). Features come only from the batch twin
(``compute_features``), computed per symbol, so what is trained is what is served. The
training logic lives in ``orchestrator.models.training``; this script reads files, runs it in
parallel (one thread per model, ``--jobs`` processes) and writes the registry.
Byte-reproducible: the same data gives the same .onnx files and manifests.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator import resolve_path
from orchestrator.market.archives import read_candles
from orchestrator.market.resample import resample
from orchestrator.market.timeframes import timeframe_ms
from orchestrator.models.training.datasets import (
    MODEL_TYPES,
    TimeframeSet,
    labelled_candles,
    model_data,
    pool_symbols,
)
from orchestrator.models.training.pipeline import (
    ModelPlan,
    TrainedModel,
    assign_stages,
    plans_for,
    train_model,
)
from orchestrator.models.training.report import metrics_table

TIMEFRAMES = ("1m", "5m", "15m", "1h", "4h", "1d")
SPOT_1M, USDM_1M, SPOT_1H = "binance-spot-1m", "binance-usdm-1m", "binance-spot-1h"
# Hourly pairs for the 1h models: enough breadth to generalize, few enough for the
# 10-minute budget on 2 cores (every pair still feeds the 4h and 1d models).
HOURLY_PAIRS = 48
# Relative cost of one model per row, to start the longest jobs first.
_COST = {"stacked": 5.0, "swing": 1.5}

# Filled before the worker processes fork, so they inherit the data instead of pickling it.
_SETS: dict[str, TimeframeSet] = {}
_SOURCES: dict[str, dict] = {}


def read_folder(folder: Path, pattern: str, exchange: str) -> pa.Table:
    files = sorted(folder.glob(pattern))
    if not files:
        raise SystemExit(f"no candle files {pattern} in {folder}")
    return pa.concat_tables([read_candles(f, exchange) for f in files])


def evenly_spaced(items: list, n: int) -> list:
    """n items spread evenly over a sorted list (all of them if it is shorter)."""
    if n >= len(items):
        return items
    return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))]


def candle_sets(root: Path, hourly_pairs: int, futures: bool) -> dict[str, tuple[pa.Table, dict]]:
    """Candles and their provenance for every timeframe."""
    minute = read_folder(root / SPOT_1M, "*.parquet", "binance")
    minute_sources = [SPOT_1M]
    if futures and (root / USDM_1M).is_dir():
        minute = pa.concat_tables([minute, read_folder(root / USDM_1M, "*.zip", "binanceusdm")])
        minute_sources.append(USDM_1M)
    hourly = read_folder(root / SPOT_1H, "*.parquet", "binance")
    pairs = evenly_spaced(sorted(set(hourly.column("symbol").to_pylist())), hourly_pairs)
    sampled = hourly.filter(pc.is_in(hourly.column("symbol"), pa.array(pairs)))
    from_minute = {"data": minute_sources, "derivation": "1m resampled, complete buckets only"}
    from_hour = {"data": [SPOT_1H], "derivation": "1h resampled, complete buckets only"}
    return {
        "1m": (minute, {"data": minute_sources}),
        "5m": (resample(minute, "5m"), from_minute),
        "15m": (resample(minute, "15m"), from_minute),
        "1h": (
            sampled,
            {
                "data": [SPOT_1H],
                "sample": f"{len(pairs)} of the pairs, evenly spaced in alphabetical order",
            },
        ),
        "4h": (resample(hourly, "4h"), from_hour),
        "1d": (resample(hourly, "1d"), from_hour),
    }


def timeframe_set(candles: pa.Table, timeframe: str, source: dict) -> TimeframeSet:
    """Features and labels computed per (exchange, symbol), then pooled."""
    columns = ["exchange", "symbol", "open_time", "open", "high", "low", "close", "volume"]
    frame = candles.select(columns).to_pandas()
    step = timeframe_ms(timeframe)
    tables = {
        f"{exchange}:{symbol}": labelled_candles(group.sort_values("open_time"), step)
        for (exchange, symbol), group in frame.groupby(["exchange", "symbol"], sort=True)
    }
    return pool_symbols(tables, timeframe, step, "+".join(source["data"]))


def limit_threads() -> None:
    """One BLAS/OpenMP thread per worker: parallelism is across models, and results do
    not depend on how many threads summed them."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _train(plan: ModelPlan) -> TrainedModel:
    started = time.process_time()
    data = _SETS[plan.timeframe]
    source = {**_SOURCES[plan.timeframe], "symbols": list(data.symbols)}
    trained = train_model(plan, model_data(data, plan.model_type), source)
    return replace(trained, cpu_seconds=time.process_time() - started)


def _cost(plan: ModelPlan) -> float:
    rows = len(_SETS[plan.timeframe].open_time)
    return rows * _COST.get(plan.learner, _COST.get(plan.model_type, 1.0))


def train_all(plans: list[ModelPlan], jobs: int) -> list[TrainedModel]:
    from tqdm import tqdm

    ordered = sorted(plans, key=_cost, reverse=True)
    with tqdm(total=len(ordered), desc="training", unit="model") as bar:
        if jobs <= 1:
            limit_threads()
            return [_advance(bar, _train(p)) for p in ordered]
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=limit_threads) as pool:
            futures = [pool.submit(_train, p) for p in ordered]
            return [_advance(bar, f.result()) for f in as_completed(futures)]


def _advance(bar, trained: TrainedModel) -> TrainedModel:
    bar.set_postfix_str(f"{trained.plan.model_id}@{trained.plan.version}")
    bar.update(1)
    return trained


def write_model(out: Path, trained: TrainedModel) -> None:
    """model.onnx and manifest.json; created_at survives a retrain that changed nothing."""
    from orchestrator.models.registry import MANIFEST

    manifest = trained.manifest
    folder = out / manifest["model_id"] / manifest["version"]
    folder.mkdir(parents=True, exist_ok=True)
    manifest["created_at"] = _created_at(folder / MANIFEST, manifest["sha256"])
    (folder / manifest["file"]).write_bytes(trained.model_bytes)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _created_at(path: Path, sha256: str) -> str:
    try:
        previous = json.loads(path.read_text())
        if previous.get("sha256") == sha256 and previous.get("created_at"):
            return previous["created_at"]
    except (OSError, ValueError):
        pass
    return datetime.now(UTC).isoformat(timespec="seconds")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", help="root of the real data set")
    parser.add_argument("--out", default="models_onnx", help="registry directory")
    parser.add_argument("--jobs", type=int, default=2, help="models trained in parallel")
    parser.add_argument("--hourly-pairs", type=int, default=HOURLY_PAIRS)
    parser.add_argument("--no-futures", action="store_true", help="1m spot only")
    parser.add_argument("--timeframes", default=",".join(TIMEFRAMES))
    parser.add_argument("--types", default=",".join(MODEL_TYPES))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    timeframes = [t for t in args.timeframes.split(",") if t]
    sets = candle_sets(resolve_path(args.data), args.hourly_pairs, not args.no_futures)
    for timeframe in timeframes:
        candles, source = sets[timeframe]
        _SETS[timeframe] = timeframe_set(candles, timeframe, source)
        _SOURCES[timeframe] = source
    loaded = time.perf_counter()
    types = set(args.types.split(","))
    plans = [p for t in timeframes for p in plans_for(t) if p.model_type in types]
    trained = train_all(plans, args.jobs)
    assign_stages([t.manifest for t in trained])
    out = resolve_path(args.out)
    for model in trained:
        write_model(out, model)
    done = time.perf_counter()
    print("\n" + metrics_table([t.manifest for t in trained]))
    print("\n" + cost_summary(trained))
    print(
        f"\n{len(trained)} models written to {out}; data {loaded - started:.1f} s, "
        f"training {done - loaded:.1f} s, total {done - started:.1f} s wall "
        f"({args.jobs} jobs; {time.process_time():.0f} s CPU in this process)"
    )
    return 0


def cost_summary(trained: list[TrainedModel], show: int = 6) -> str:
    """CPU seconds per model (independent of what else shares the machine)."""
    slowest = sorted(trained, key=lambda t: -t.cpu_seconds)[:show]
    total = sum(t.cpu_seconds for t in trained)
    listed = ", ".join(f"{t.plan.model_id}@{t.plan.version} {t.cpu_seconds:.0f}" for t in slowest)
    return f"model training CPU: {total:.0f} s in all; slowest: {listed}"


if __name__ == "__main__":
    sys.exit(main())
