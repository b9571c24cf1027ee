"""The metrics table printed after training, as Markdown (pure)."""

from __future__ import annotations

CLASSIFIER_METRICS = (
    ("accuracy", "accuracy"),
    ("roc_auc", "ROC AUC"),
    ("brier", "Brier"),
    ("log_loss", "log loss"),
)
REGRESSOR_METRICS = (("mae", "MAE"), ("rmse", "RMSE"), ("corr", "corr"))
TIMEFRAME_ORDER = ("1m", "5m", "15m", "30m", "1h", "4h", "1d")


def metrics_table(manifests: list[dict]) -> str:
    """Two Markdown tables (classifiers, regressors): each cell is "model / baseline"."""
    ordered = sorted(manifests, key=_order)
    classifiers = [m for m in ordered if "log_loss" in m["metrics"]["model"]]
    regressors = [m for m in ordered if "rmse" in m["metrics"]["model"]]
    parts = []
    for rows, columns in ((classifiers, CLASSIFIER_METRICS), (regressors, REGRESSOR_METRICS)):
        if rows:
            parts.append(_table(rows, columns))
    return "\n\n".join(parts)


def _table(manifests: list[dict], columns: tuple) -> str:
    head = [
        "model",
        "version",
        "learner",
        "stage",
        "test rows",
        *(f"{label} (model / baseline)" for _, label in columns),
        "beats baseline",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for manifest in manifests:
        lines.append("| " + " | ".join(_row(manifest, columns)) + " |")
    return "\n".join(lines)


def _row(manifest: dict, columns: tuple) -> list[str]:
    metrics = manifest["metrics"]
    learner = manifest.get("learner", {}).get("learner", "")
    cells = [
        manifest["model_id"],
        manifest["version"],
        learner,
        manifest["stage"],
        str(metrics["test_rows"]),
    ]
    for key, _ in columns:
        cells.append(f"{_fmt(metrics['model'][key])} / {_fmt(metrics['baseline'][key])}")
    cells.append("yes" if metrics["beats_baseline"] else "**no**")
    return cells


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _order(manifest: dict) -> tuple:
    tf = manifest["timeframe"]
    rank = TIMEFRAME_ORDER.index(tf) if tf in TIMEFRAME_ORDER else len(TIMEFRAME_ORDER)
    return (manifest["model_type"], rank, manifest["version"])
