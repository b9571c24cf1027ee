#!/usr/bin/env python
"""Train the models in models_onnx/ from real candles, export them to ONNX, and record
their out-of-sample metrics beside a naive baseline.

    python scripts/train_models.py --data ../shared/data

Features come only from the batch twin (``compute_features``), the same definitions the
live pipeline computes incrementally, so what is trained is what is served.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator import resolve_path
from orchestrator.features import REQUIRED_FEATURES, compute_features
from orchestrator.features.drift import training_distribution
from orchestrator.labels import next_direction
from serve_app.registry import MANIFEST, sha256_of

SEED = 20260321
LGBM_PARAMS = dict(
    n_estimators=120, num_leaves=15, learning_rate=0.05, min_child_samples=400,
    subsample=0.8, subsample_freq=1, colsample_bytree=0.8, reg_lambda=1.0,
    random_state=SEED, deterministic=True, force_row_wise=True, n_jobs=1, verbose=-1,
)


@dataclass
class Dataset:
    features: np.ndarray  # (n, len(feature_names)) float64
    labels: np.ndarray  # (n,) 0/1
    open_time: np.ndarray  # (n,) int64 ms, for time-ordered splitting
    feature_names: tuple[str, ...]


def load_symbol_frames(directory: Path) -> dict[str, pd.DataFrame]:
    files = sorted(directory.glob("*.parquet"))
    if not files:
        raise SystemExit(f"no candle files in {directory}")
    return {f.stem.split("-")[0]: pd.read_parquet(f) for f in files}


def direction_dataset(frames: dict[str, pd.DataFrame]) -> Dataset:
    parts = []
    for frame in frames.values():
        feats = compute_features(frame)
        table = feats[list(REQUIRED_FEATURES)].assign(
            label=next_direction(frame["close"].to_numpy()),
            open_time=frame["date"].astype("datetime64[ms, UTC]").astype("int64").to_numpy(),
        )
        parts.append(table.dropna())
    data = pd.concat(parts).sort_values("open_time", kind="stable")
    # Rounded to float32 once, here: ONNX tree ensembles compare in float32, so training on the
    # values the served model will see keeps native and ONNX predictions equal.
    x = data[list(REQUIRED_FEATURES)].to_numpy(np.float32).astype(np.float64)
    return Dataset(x, data["label"].to_numpy(), data["open_time"].to_numpy(), REQUIRED_FEATURES)


def walk_forward_folds(open_time: np.ndarray, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window folds split on time: train on everything before a cutoff, test after."""
    cutoffs = np.quantile(open_time, np.linspace(0.5, 1.0, n_folds + 1))
    folds = []
    for lo, hi in zip(cutoffs[:-1], cutoffs[1:], strict=True):
        train = np.flatnonzero(open_time < lo)
        test = np.flatnonzero((open_time >= lo) & (open_time <= hi))
        folds.append((train, test))
    return folds


def classifier_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    p = np.clip(p, 1e-7, 1 - 1e-7)
    return {
        "accuracy": float(np.mean((p >= 0.5) == (y == 1))),
        "roc_auc": float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan"),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
    }


def evaluate_walk_forward(data: Dataset, n_folds: int = 3) -> dict:
    """Out-of-sample metrics over time-ordered folds; the baseline predicts the training
    set's majority class with its base rate as probability."""
    from lightgbm import LGBMClassifier

    y_all, p_model, p_base = [], [], []
    for train, test in walk_forward_folds(data.open_time, n_folds):
        model = LGBMClassifier(**LGBM_PARAMS).fit(data.features[train], data.labels[train])
        y_all.append(data.labels[test])
        p_model.append(model.predict_proba(data.features[test])[:, 1])
        p_base.append(np.full(len(test), data.labels[train].mean()))
    y, pm, pb = (np.concatenate(a) for a in (y_all, p_model, p_base))
    model_m, base_m = classifier_metrics(y, pm), classifier_metrics(y, pb)
    return {
        "validation": f"walk-forward, {n_folds} expanding folds over the last half of the data",
        "test_rows": int(len(y)),
        "model": model_m,
        "baseline": {"name": "majority class (training base rate)", **base_m},
        "beats_baseline": bool(model_m["accuracy"] > base_m["accuracy"] and model_m["log_loss"] < base_m["log_loss"]),
    }


def float32_exact_thresholds(model) -> None:
    """Round every split threshold down to the nearest float32, in place.

    ONNX tree ensembles hold thresholds as float32. For any float32 input x,
    ``x <= t`` holds exactly when ``x <= largest_float32_not_above(t)``, so after this
    rounding the native model makes the same decisions it made before, and the ONNX copy
    makes those decisions too: both agree to float32 summation error, not to split flips.
    """
    import lightgbm

    lines = model.booster_.model_to_string().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("threshold="):
            exact = np.array(line.removeprefix("threshold=").split(), dtype=np.float64)
            down = exact.astype(np.float32)
            down = np.where(down.astype(np.float64) > exact, np.nextafter(down, np.float32(-np.inf)), down)
            lines[i] = "threshold=" + " ".join(repr(float(v)) for v in down)
    # tree_sizes holds byte offsets of the old text; without it LightGBM parses sequentially.
    lines = [line for line in lines if not line.startswith("tree_sizes=")]
    model._Booster = lightgbm.Booster(model_str="\n".join(lines) + "\n")


def export_onnx(model, feature_names: tuple[str, ...], metadata: dict) -> bytes:
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    onnx_model = convert_lightgbm(
        model, initial_types=[("features", FloatTensorType([None, len(feature_names)]))],
        zipmap=False, target_opset=15,
    )
    onnx_model.graph.name = f"{metadata['model_type']}-{metadata['timeframe']}"  # not a random uuid: reproducible bytes
    for key, value in {**metadata, "feature_names": json.dumps(list(feature_names))}.items():
        prop = onnx_model.metadata_props.add()
        prop.key, prop.value = key, value if isinstance(value, str) else json.dumps(value)
    return onnx_model.SerializeToString()


def onnx_parity(model_bytes: bytes, native, x: np.ndarray) -> float:
    """Max |P_onnx - P_native| on the given rows."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    onnx_p = sess.run(["probabilities"], {"features": x.astype(np.float32)})[0][:, 1]
    return float(np.max(np.abs(onnx_p - native.predict_proba(x.astype(np.float32))[:, 1])))


def train_direction(frames: dict[str, pd.DataFrame], out: Path, version: str, data_label: str) -> dict:
    from lightgbm import LGBMClassifier

    data = direction_dataset(frames)
    report = evaluate_walk_forward(data)
    model = LGBMClassifier(**LGBM_PARAMS).fit(data.features, data.labels)
    float32_exact_thresholds(model)
    span = [_iso(data.open_time.min()), _iso(data.open_time.max())]
    meta = {"model_type": "direction", "timeframe": "1m", "version": version, "training_range": span}
    model_bytes = export_onnx(model, data.feature_names, meta)
    report["onnx_max_abs_diff"] = onnx_parity(model_bytes, model, data.features[-5000:])
    manifest = {
        "model_id": "direction-1m", "model_type": "direction", "timeframe": "1m",
        "version": version, "stage": "production", "file": "model.onnx",
        "sha256": sha256_of(model_bytes), "feature_names": list(data.feature_names),
        "metrics": report, "training": {"data": data_label, "range": span, "rows": int(len(data.labels))},
        "training_distribution": training_distribution(data.features, data.feature_names),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    folder = out / "direction-1m" / version
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(model_bytes)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).isoformat(timespec="minutes")


def print_report(manifest: dict) -> None:
    m, b = manifest["metrics"]["model"], manifest["metrics"]["baseline"]
    print(f"\n{manifest['model_id']}@{manifest['version']}  ({manifest['metrics']['test_rows']} out-of-sample rows)")
    print(f"{'metric':<10}{'model':>10}{'baseline':>10}")
    for key in ("accuracy", "roc_auc", "brier", "log_loss"):
        print(f"{key:<10}{m[key]:>10.4f}{b[key]:>10.4f}")
    print(f"beats baseline: {manifest['metrics']['beats_baseline']}; "
          f"ONNX vs native max |dp| = {manifest['metrics']['onnx_max_abs_diff']:.2e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", help="root of the real data set")
    parser.add_argument("--out", default="models_onnx", help="registry directory")
    parser.add_argument("--version", default="v1")
    args = parser.parse_args(argv)
    data_root = resolve_path(args.data)
    frames = load_symbol_frames(data_root / "binance-spot-1m")
    manifest = train_direction(frames, resolve_path(args.out), args.version, "binance-spot-1m")
    print_report(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
