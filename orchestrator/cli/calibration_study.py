#!/usr/bin/env python
"""Measure how well each candidate calibration method calibrates every direction model on its
held-out walk-forward folds, beside what no method can reach (the base rate known in advance,
the noise floor of the measure), under one or more fold counts.

    tickcast calibration-study --data ../shared/data --folds 3,6

The same data, features and learners as ``tickcast train`` (each model trained anew on
every fold); nothing is written. ``isotonic`` with the fold count of training is the
figure ``tickcast train`` stores in the manifest. Methods and references:
``orchestrator.models.calibration_study``; results: docs/models.md#the-calibration-study.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from orchestrator import resolve_path
from orchestrator.cli.train import (
    HOURLY_PAIRS,
    TIMEFRAMES,
    candle_sets,
    limit_threads,
    timeframe_set,
)
from orchestrator.models.calibration import CALIBRATION_BINS
from orchestrator.models.calibration_study import METHODS, REFERENCES, FoldPredictions, study
from orchestrator.models.training.datasets import ModelData, model_data
from orchestrator.models.training.pipeline import ModelPlan, fold_outputs
from orchestrator.models.training.walk_forward import N_FOLDS, walk_forward_folds

TARGET = 0.02  # the held-out ECE issue 17 asks of every direction model
LEARNERS = {"lightgbm": "v1", "stacked": "v2"}

# Filled before the worker processes fork, so they inherit the data instead of pickling it.
_DATA: dict[str, ModelData] = {}


def _study(task: tuple[str, str, int]) -> tuple[tuple[str, str, int], dict]:
    timeframe, learner, n_folds = task
    data = _DATA[timeframe]
    plan = ModelPlan("direction", timeframe, LEARNERS[learner], learner)
    folds = walk_forward_folds(data.open_time, data.purge_ms, n_folds)
    outputs = fold_outputs(plan, data, folds)
    predictions = FoldPredictions(
        p=[o[:, 1] for o in outputs],
        y=[data.target[f.test] for f in folds],
        open_ms=[data.open_time[f.test] for f in folds],
        label_ms=data.purge_ms,
    )
    return task, study(predictions)


def table(results: dict[tuple[str, str, int], dict]) -> str:
    """One row per (model version, fold count); ECE at or under TARGET is bold."""
    columns = [*METHODS, *REFERENCES, "noise floor"]
    head = ["model", "folds", "held-out rows", "fold base rates", *columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (timeframe, learner, n_folds), row in results.items():
        cells = [
            f"direction-{timeframe} {LEARNERS[learner]}",
            str(n_folds),
            f"{row['rows']:,}",
            " ".join(f"{r:.3f}" for r in row["base_rates"]),
            *(f"**{row[c]:.4f}**" if row[c] <= TARGET else f"{row[c]:.4f}" for c in columns),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", help="root of the real data set")
    parser.add_argument("--timeframes", default=",".join(TIMEFRAMES))
    parser.add_argument("--learners", default=",".join(LEARNERS), help="lightgbm, stacked")
    parser.add_argument("--folds", default=f"{N_FOLDS},6", help="fold counts to compare")
    parser.add_argument("--jobs", type=int, default=2, help="models trained in parallel")
    parser.add_argument("--hourly-pairs", type=int, default=HOURLY_PAIRS)
    parser.add_argument("--no-futures", action="store_true", help="1m spot only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    timeframes = [t for t in args.timeframes.split(",") if t]
    learners = [name for name in args.learners.split(",") if name]
    unknown = sorted(set(learners) - set(LEARNERS))
    if unknown:
        raise SystemExit(f"unknown learner {', '.join(unknown)}: choose from {', '.join(LEARNERS)}")
    try:
        counts = [int(n) for n in args.folds.split(",") if n]
    except ValueError:
        raise SystemExit(f"--folds takes fold counts like 3,6, not {args.folds!r}") from None
    if not counts or min(counts) < 2:
        raise SystemExit("--folds: each count needs at least 2 folds (the first is not scored)")
    sets = candle_sets(resolve_path(args.data), args.hourly_pairs, not args.no_futures)
    for timeframe in timeframes:
        candles, source = sets[timeframe]
        _DATA[timeframe] = model_data(timeframe_set(candles, timeframe, source), "direction")
    tasks = [(t, learner, n) for t in timeframes for learner in learners for n in counts]
    if args.jobs <= 1:
        limit_threads()
        done = dict(map(_study, tasks))
    else:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(args.jobs, mp_context=context, initializer=limit_threads) as pool:
            done = dict(pool.map(_study, tasks))
    print(table({task: done[task] for task in tasks}))
    print(
        f"\nECE: {CALIBRATION_BINS} quantile bins over the folds after the first, each fold "
        f"calibrated from what came before it; bold: at or under {TARGET}. "
        f"{time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
