"""The evaluation report of a backfill: Markdown tables and PNG plots.

``evaluate`` turns the backfill's evaluation rows (``orchestrator.batch.backfill.predict.
evaluation_of``) into per-model results: metrics beside baselines (``metrics``) and, for
direction models, the signal-following strategy beside buy-and-hold (``strategy``).
``write_report`` writes ``report.md`` with one calibration plot per classifier and one
equity plot per direction model (matplotlib, Agg backend: no display needed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from orchestrator.batch.evaluation.metrics import ModelScores, score_model
from orchestrator.batch.evaluation.strategy import FEE_PER_TRADE, StrategyResult, run_strategy
from orchestrator.models.training.report import TIMEFRAME_ORDER

REPORT_FILE = "report.md"
_SORT = ["model_id", "model_version", "exchange", "symbol", "open_time"]


@dataclass(frozen=True)
class ModelResult:
    model_id: str
    version: str
    model_type: str
    timeframe: str
    rows: int
    series: int
    scores: ModelScores
    strategy: StrategyResult | None
    in_training: float | None = None  # share of rows inside the model's training range

    @property
    def key(self) -> str:
        return f"{self.model_id}@{self.version}"


def evaluate(
    evaluation: pa.Table | None, training_ranges: dict[str, tuple[int, int]] | None = None
) -> list[ModelResult]:
    """One result per model version in the rows, ordered by type, timeframe, version.

    ``training_ranges`` maps a model key to the (first, last) open time it was trained on."""
    if evaluation is None or evaluation.num_rows == 0:
        return []
    frame = evaluation.to_pandas().sort_values(_SORT, kind="stable")
    groups = frame.groupby(["model_id", "model_version"], observed=True, sort=False)
    results = [_result(group, training_ranges or {}) for _, group in groups]
    return sorted(results, key=_order)


def _order(result: ModelResult) -> tuple:
    tf = result.timeframe
    rank = TIMEFRAME_ORDER.index(tf) if tf in TIMEFRAME_ORDER else len(TIMEFRAME_ORDER)
    return (result.model_type, rank, result.version)


def _result(group: pd.DataFrame, training_ranges: dict[str, tuple[int, int]]) -> ModelResult:
    column = {
        name: group[name].to_numpy()
        for name in ("open_time", "value", "p_low", "realized", "baseline", "next_return")
    }
    model_type = str(group["model_type"].iloc[0])
    series = _series_codes(group)
    strategy = None
    if model_type == "direction":
        strategy = run_strategy(
            series,
            column["open_time"],
            group["signal"].astype(object).to_numpy(),
            column["next_return"],
        )
    model_id, version = str(group["model_id"].iloc[0]), str(group["model_version"].iloc[0])
    span = training_ranges.get(f"{model_id}@{version}")
    in_training = (
        None
        if span is None
        else float(np.mean((column["open_time"] >= span[0]) & (column["open_time"] <= span[1])))
    )
    return ModelResult(
        model_id=model_id,
        version=version,
        in_training=in_training,
        model_type=model_type,
        timeframe=str(group["timeframe"].iloc[0]),
        rows=len(group),
        series=len(np.unique(series)),
        scores=score_model(
            model_type, column["realized"], column["value"], column["p_low"], column["baseline"]
        ),
        strategy=strategy,
    )


def _series_codes(group: pd.DataFrame) -> np.ndarray:
    """An integer per (exchange, symbol), constant over each run of the sorted rows."""
    exchange = pd.Categorical(group["exchange"].astype(str)).codes.astype(np.int64)
    symbol = pd.Categorical(group["symbol"].astype(str)).codes.astype(np.int64)
    return exchange * (symbol.max() + 1) + symbol


# --- writing -------------------------------------------------------------------------------


def write_report(
    evaluation: pa.Table | None,
    out_dir: Path,
    run: dict,
    training_ranges: dict[str, tuple[int, int]] | None = None,
) -> Path:
    """Write ``report.md`` and its plots into ``out_dir``; returns the report's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = evaluate(evaluation, training_ranges)
    plots = {r.key: draw_plots(r, out_dir) for r in results}
    path = out_dir / REPORT_FILE
    path.write_text(render_markdown(results, run, plots))
    return path


def render_markdown(results: list[ModelResult], run: dict, plots: dict[str, list[str]]) -> str:
    parts = [_heading(run, results), _definitions()]
    classifiers = [r for r in results if r.scores.rows and "log_loss" in r.scores.model]
    regressors = [r for r in results if r.scores.rows and "rmse" in r.scores.model]
    if classifiers:
        parts.append(
            "## Classifiers (model / baseline)\n\n"
            + _metric_table(
                classifiers,
                (
                    ("accuracy", "accuracy"),
                    ("roc_auc", "ROC AUC"),
                    ("brier", "Brier"),
                    ("log_loss", "log loss"),
                    ("ece", "ECE"),
                ),
            )
        )
    if regressors:
        parts.append(
            "## Regressors (model / baseline)\n\n"
            + _metric_table(regressors, (("mae", "MAE"), ("rmse", "RMSE"), ("corr", "corr")))
        )
    strategies = [r for r in results if r.strategy is not None]
    if strategies:
        parts.append(_strategy_table(strategies))
    parts.append(_plot_list(plots))
    return "\n\n".join(p for p in parts if p) + "\n"


def _heading(run: dict, results: list[ModelResult]) -> str:
    lines = ["# Backfill evaluation", ""]
    for key in ("sources", "symbols", "start", "end", "timeframes", "models", "executor"):
        if run.get(key) is not None:
            value = run[key]
            lines.append(
                f"- {key}: {', '.join(map(str, value)) if isinstance(value, list) else value}"
            )
    lines.append(
        f"- model versions evaluated: {len(results)}; prediction rows: "
        f"{sum(r.rows for r in results):,}"
    )
    return "\n".join(lines)


def _definitions() -> str:
    return (
        "Metrics are over the predictions whose realized label is known (same labels as live "
        "outcome scoring). Baselines: direction, a constant P(up) equal to the range's own up "
        "share; swing, the range's class frequencies (both know the range's base rates, so "
        "they are slightly stronger than a real constant forecast); volatility, historical "
        "volatility (std of the last N log returns, N = the label horizon); return, no change "
        "(0). ECE: expected calibration error over 10 quantile bins. *beats* = Brier and log "
        "loss (classifiers) or MAE and RMSE (regressors) both below the baseline's.\n\n"
        "**In-sample warning**: `in training period` is the share of rows whose candle lies "
        "inside the model's training range (from its manifest); those candles may have been "
        "trained on (all of them, or some symbols' at that time), so scores and strategy "
        "returns over them are optimistic. The out-of-sample (walk-forward) figures are in "
        "each model's manifest."
    )


def _metric_table(results: list[ModelResult], columns: tuple) -> str:
    head = [
        "model",
        "version",
        "rows",
        "series",
        "in training period",
        *(label for _, label in columns),
        "beats",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r.model_id, r.version, f"{r.scores.rows:,}", str(r.series), _share(r.in_training)]
        for key, _ in columns:
            cells.append(f"{_fmt(r.scores.model.get(key))} / {_fmt(r.scores.baseline.get(key))}")
        cells.append("yes" if r.scores.beats_baseline else "**no**")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _strategy_table(results: list[ModelResult]) -> str:
    head = [
        "model",
        "version",
        "rows",
        "series",
        "in training period",
        "time in market",
        "position units traded",
        "strategy",
        f"strategy, {FEE_PER_TRADE:.1%} fee per trade",
        "buy and hold",
    ]
    lines = [
        "## Strategy following the direction signal (equal-weight portfolio)",
        "",
        "Long on LONG, short on SHORT, flat on NEUTRAL (signal thresholds from the "
        "signals config), one candle at a time; buy-and-hold holds every series "
        "throughout, without fees.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in results:
        s = r.strategy.summary()
        lines.append(
            "| "
            + " | ".join(
                [
                    r.model_id,
                    r.version,
                    f"{s['rows']:,}",
                    str(s["series"]),
                    _share(r.in_training),
                    f"{s['exposure']:.1%}",
                    f"{s['trades']:,.0f}",
                    _pct(s["gross_return"]),
                    _pct(s["net_return"]),
                    _pct(s["hold_return"]),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def _plot_list(plots: dict[str, list[str]]) -> str:
    lines = ["## Plots", ""]
    for names in plots.values():
        lines.extend(f"![{name}]({name})" for name in names)
    return "\n".join(lines) if len(lines) > 2 else ""


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "0" if abs(value) < 1e-9 else f"{value:.4g}"  # a constant's ECE is 0 up to rounding


def _pct(value: float) -> str:
    return f"{value:+.2%}"


# --- plots ----------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def draw_plots(result: ModelResult, out_dir: Path) -> list[str]:
    """PNG files for one model: its calibration curve(s), and equity curves if direction."""
    names = []
    if result.scores.calibrations:
        names.append(_calibration_plot(result, out_dir))
    if result.strategy is not None and len(result.strategy.curves.times):
        names.append(_equity_plot(result, out_dir))
    return names


def _calibration_plot(result: ModelResult, out_dir: Path) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for curve in result.scores.calibrations:
        ax.plot(
            curve.predicted, curve.observed, marker="o", label=f"{curve.name}, ECE {curve.ece:.3f}"
        )
    low = min(min(c.predicted.min(), c.observed.min()) for c in result.scores.calibrations)
    high = max(max(c.predicted.max(), c.observed.max()) for c in result.scores.calibrations)
    ax.plot([low, high], [low, high], color="grey", linestyle="--", label="perfect")
    ax.set(
        title=f"Calibration {result.key}",
        xlabel="mean predicted probability",
        ylabel="observed frequency",
    )
    ax.legend(loc="upper left")
    return _save(fig, out_dir / f"calibration-{result.key}.png", plt)


def _equity_plot(result: ModelResult, out_dir: Path) -> str:
    plt = _pyplot()
    curves = result.strategy.curves
    when = curves.times.astype("datetime64[ms]")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(when, curves.gross, label="strategy", linewidth=1)
    ax.plot(when, curves.net, label=f"strategy, {FEE_PER_TRADE:.1%} fee", linewidth=1)
    ax.plot(when, curves.hold, label="buy and hold", linewidth=1)
    ax.set(title=f"Equity {result.key} (equal-weight, start = 1)", ylabel="value")
    ax.legend(loc="best")
    fig.autofmt_xdate()
    return _save(fig, out_dir / f"equity-{result.key}.png", plt)


def _save(fig, path: Path, plt) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name
