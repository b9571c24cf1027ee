#!/usr/bin/env python
"""Prediction cost per row: ONNX Runtime (as the server runs it) beside the native library's
own predict, for each model type, at batch sizes 1, 64 and 1,024.

    tickcast bench models --data ../shared/data [--smoke]

Each model is trained with the production settings (``orchestrator.models.training``) on real 1m
candles (or a seeded random walk when the data is absent), exported to ONNX, and both
copies predict the same rows. The ONNX session is the server's (``make_session``: one
thread, no spinning); native predicts run single-threaded too. Figures are the best of
several timed repeats (as ``timeit`` advises: on a shared machine the slower repeats
measure the neighbours, not the model).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from orchestrator import resolve_path
from orchestrator.bench.harness import (
    DEFAULT_DATA,
    add_smoke_flag,
    apply_smoke,
    best_seconds,
    print_header,
)
from orchestrator.bench.harness import print_table as print_table_md
from orchestrator.models.predictor import make_session
from orchestrator.models.training.datasets import labelled_candles, model_data, pool_symbols
from orchestrator.models.training.models import make_learner
from orchestrator.models.training.onnx_export import OUTPUTS, finalize, to_onnx

MINUTE_MS = 60_000
BATCHES = (1, 64, 1024)
MODELS = (
    ("direction", "lightgbm"),
    ("direction", "stacked"),
    ("volatility", "lightgbm"),
    ("return", "lightgbm"),
    ("swing", "lightgbm"),
)


def load_candles(data_root, rows: int) -> tuple[dict[str, pd.DataFrame], str]:
    folder = resolve_path(data_root) / "binance-spot-1m"
    files = sorted(folder.glob("*.parquet"))
    if not files:
        return {"SYNTH": random_walk(rows)}, "seeded random walk (no real data found)"
    frames = {}
    for path in files:
        frame = pd.read_parquet(path).iloc[-rows:]
        open_time = frame["date"].astype("datetime64[ms, UTC]").astype("int64").to_numpy()
        frames[path.stem] = frame.drop(columns="date").assign(open_time=open_time)
    return frames, f"{len(files)} x {rows} real 1m candles from {folder}"


def random_walk(n: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    wick = np.abs(rng.normal(0, 0.001, (2, n))) * close
    return pd.DataFrame(
        {
            "open_time": MINUTE_MS * np.arange(n, dtype=np.int64),
            "open": open_,
            "high": np.maximum(open_, close) + wick[0],
            "low": np.minimum(open_, close) - wick[1],
            "close": close,
            "volume": rng.gamma(2.0, 10.0, n),
        }
    )


def per_row_us(predict, x: np.ndarray, budget_s: float, repeats: int = 7) -> float:
    """Best of ``repeats`` of the time per row, each repeat running ~budget_s / repeats."""
    predict(x)  # warm-up
    once = best_seconds(predict, x, repeats=1)
    loops = max(1, int(budget_s / repeats / max(once, 1e-7)))
    return best_seconds(predict, x, repeats=repeats, loops=loops) / len(x) * 1e6


def bench_model(
    model_type: str, learner_name: str, rows, budget_s: float, repeats: int = 7
) -> list[tuple]:
    learner = make_learner(model_type, learner_name)
    learner.fit(rows.features, rows.target, rows.open_time, rows.purge_ms)
    outputs = OUTPUTS[model_type]
    session = make_session(finalize(to_onnx(learner, rows.features.shape[1]), "bench", {}))
    name = session.get_inputs()[0].name

    def onnx_predict(x):
        return session.run([outputs["tensor"]], {name: x})[0][:, outputs["columns"]]

    results = []
    for batch in BATCHES:
        x = np.ascontiguousarray(rows.features[-batch:], dtype=np.float32)
        onnx_us = per_row_us(onnx_predict, x, budget_s, repeats)
        native_us = per_row_us(learner.predict, x, budget_s, repeats)
        results.append((f"{model_type} ({learner_name})", len(x), onnx_us, native_us))
    return results


HEADERS = ("model", "batch", "ONNX Runtime us/row", "native us/row", "native / ONNX")


def print_table(results: list[tuple]) -> None:
    print_table_md(
        HEADERS,
        [
            (model, batch, onnx_us, native_us, f"{native_us / onnx_us:,.1f}x")
            for model, batch, onnx_us, native_us in results
        ],
        formats=(None, None, ",.2f", ",.2f", None),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--rows", type=int, default=20_000, help="1m candles per symbol")
    parser.add_argument("--budget", type=float, default=0.5, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per measurement")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    apply_smoke(parser, args, rows=1_500, budget=0.005, repeats=1)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # native predicts single-threaded, as the ONNX session is
        frames, described = load_candles(args.data, args.rows)
        tables = {
            s: labelled_candles(f.reset_index(drop=True), MINUTE_MS) for s, f in frames.items()
        }
        data = pool_symbols(tables, "1m", MINUTE_MS, "bench")
        print_header(
            "models", f"training data: {described}; {len(data.open_time)} rows", smoke=args.smoke
        )
        results = []
        for model_type, learner_name in MODELS:
            results += bench_model(
                model_type, learner_name, model_data(data, model_type), args.budget, args.repeats
            )
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
