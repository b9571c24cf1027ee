"""The Markdown report: one row per model beside its baseline, strategy table, PNG plots."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from sklearn.metrics import accuracy_score, mean_absolute_error

from orchestrator.batch.evaluation.report import evaluate, write_report

RNG = np.random.default_rng(5)
T0 = 1_767_225_600_000


def _rows(model_id: str, model_type: str, n: int, symbols=("AAA/USDT", "BBB/USDT")) -> dict:
    r = RNG.normal(0, 0.01, n)
    if model_type == "direction":
        value = np.clip(0.5 + 5 * r + RNG.normal(0, 0.02, n), 0, 1)
        realized, baseline = (r > 0).astype(float), np.full(n, np.nan)
    else:
        realized = np.abs(r)
        value, baseline = realized + RNG.normal(0, 0.001, n), realized + RNG.normal(0, 0.004, n)
    signal = np.where(value >= 0.6, "LONG", np.where(value <= 0.4, "SHORT", "NEUTRAL"))
    half = n // 2
    return {
        "model_id": [model_id] * n,
        "model_version": ["v1"] * n,
        "model_type": [model_type] * n,
        "exchange": ["x"] * n,
        "symbol": [symbols[0]] * half + [symbols[1]] * (n - half),
        "timeframe": [model_id.split("-")[1]] * n,
        "open_time": np.r_[np.arange(half), np.arange(n - half)] * 60_000 + T0,
        "value": value,
        "p_low": np.full(n, np.nan),
        "realized": realized,
        "baseline": baseline,
        "next_return": r,
        "signal": signal.tolist() if model_type == "direction" else [None] * n,
    }


def _table(*parts: dict) -> pa.Table:
    return pa.concat_tables([pa.table(p) for p in parts], promote_options="default")


def test_report_holds_each_model_beside_its_baseline_and_the_plots(tmp_path):
    direction, volatility = (
        _rows("direction-1m", "direction", 400),
        _rows("volatility-1m", "volatility", 300),
    )
    path = write_report(
        _table(volatility, direction),
        tmp_path,
        {"sources": ["a", "b"]},
        {"direction-1m@v1": (T0, T0 + 49 * 60_000)},
    )
    text = path.read_text()
    accuracy = accuracy_score(direction["realized"], direction["value"] >= 0.5)
    assert f"| direction-1m | v1 | 400 | 2 | 25% | {accuracy:.4g} /" in text  # 50 of 200
    mae = mean_absolute_error(volatility["realized"], volatility["value"])
    assert f"| {mae:.4g} /" in text
    assert "| volatility-1m | v1 | 300 | 2 | n/a |" in text
    assert "## Strategy following the direction signal" in text
    for name in ("calibration-direction-1m@v1.png", "equity-direction-1m@v1.png"):
        assert f"![{name}]({name})" in text
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "equity-volatility-1m@v1.png").exists()
    assert "- sources: a, b" in text


def test_results_are_ordered_and_counted():
    results = evaluate(
        _table(
            _rows("direction-5m", "direction", 50),
            _rows("direction-1m", "direction", 60, symbols=("A", "A")),
        )
    )
    assert [(r.key, r.rows, r.series) for r in results] == [
        ("direction-1m@v1", 60, 1),
        ("direction-5m@v1", 50, 2),
    ]
    assert results[0].strategy.summary()["rows"] == 60


def test_an_empty_run_still_gets_a_report(tmp_path):
    text = write_report(None, tmp_path, {}).read_text()
    assert text.startswith("# Backfill evaluation") and "prediction rows: 0" in text
