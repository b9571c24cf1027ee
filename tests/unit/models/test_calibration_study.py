"""The calibration study: candidate methods fitted only on the past, the references no method
can reach, and its tie to the figures `tickcast train` stores."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator import PROJECT_ROOT
from orchestrator.cli import calibration_study as cli
from orchestrator.models.calibration_study import METHODS, FoldPredictions, study
from orchestrator.models.registry import Registry

HOUR_MS = 3_600_000


def _folds(rng, base_shifts: list[float], rows: int = 24_000) -> FoldPredictions:
    """Hourly rows of a model whose P(up) ranks well and is calibrated in shape, while each
    fold's outcomes are shifted by its own base-rate change (the market's regime)."""
    p, y, t = [], [], []
    for k, shift in enumerate(base_shifts):
        raw = rng.uniform(0.4, 0.6, rows)
        truth = np.clip(raw + shift, 0.01, 0.99)
        p.append(raw)
        y.append((rng.uniform(size=rows) < truth).astype(np.float64))
        t.append((k * rows + np.arange(rows)) * HOUR_MS // 100)  # 100 rows an hour
    return FoldPredictions(p=p, y=y, open_ms=t, label_ms=HOUR_MS)


def test_a_moving_base_rate_is_what_no_map_from_the_past_follows():
    result = study(_folds(np.random.default_rng(1), [0.0, 0.0, 0.08, 0.08]))
    assert result["rows"] == 3 * 24_000
    assert result["base_rates"][2] - result["base_rates"][1] == pytest.approx(0.08, abs=0.02)
    # Fitted on the folds before, the map is right in shape and wrong in level.
    assert result["isotonic"] > 0.03
    # Knowing each fold's own base rate leaves about the noise floor of the measure.
    assert result["base rate known"] < result["noise floor"] + 0.006
    # A shift that persists for a whole fold is followed by the rolling recalibration.
    assert result["rolling 7 days"] < result["isotonic"] / 2


def test_a_calibrated_stationary_model_measures_its_noise_floor():
    """Noise floor: 10 bins of n/10 rows each; a bin's rate errs by about sqrt(p(1-p)/m) and
    the mean absolute error of that is sqrt(2/pi) times it."""
    rows = 20_000
    result = study(_folds(np.random.default_rng(2), [0.0, 0.0, 0.0], rows))
    expected = np.sqrt(2 / np.pi) * np.sqrt(0.25 / (2 * rows / 10))
    assert result["noise floor"] == pytest.approx(expected, rel=0.25)
    for name in ("raw", "isotonic", "Platt"):
        assert result[name] < 2.5 * expected, name


def test_the_table_marks_what_meets_the_target():
    row = {"rows": 1_234, "base_rates": [0.5, 0.48]}
    row.update({name: 0.03 for name in [*METHODS, "base rate known"]})
    row.update({"isotonic": 0.0195, "noise floor": 0.01})
    text = cli.table({("5m", "lightgbm", 3): row})
    line = text.splitlines()[2]
    assert line.startswith("| direction-5m v1 | 3 | 1,234 | 0.500 0.480 | 0.0300 | **0.0195** |")
    assert line.endswith("| 0.0300 | **0.0100** |")


def test_the_studys_isotonic_column_is_the_shipped_figure(shared_data, monkeypatch, capsys):
    """Trained anew on the real data with the training fold count, the study's isotonic
    ECE for 15m v1 is the held-out ECE its manifest records (training is reproducible)."""
    manifest = Registry(PROJECT_ROOT / "models_onnx").manifest("direction-15m", "v1")
    monkeypatch.setattr(cli, "_DATA", {})
    argv = ["--data", str(shared_data), "--timeframes", "15m", "--learners", "lightgbm"]
    assert cli.main([*argv, "--folds", "3", "--jobs", "1"]) == 0
    row = capsys.readouterr().out.splitlines()[2].split(" | ")
    assert row[0] == "| direction-15m v1" and row[1] == "3"
    assert int(row[2].replace(",", "")) == manifest.metrics["test_rows"]
    isotonic = float(row[5].strip("*"))
    assert isotonic == pytest.approx(manifest.calibration["ece_after"], abs=5e-5)


def test_an_unknown_learner_is_refused_by_name():
    with pytest.raises(SystemExit, match="unknown learner forest"):
        cli.main(["--learners", "lightgbm,forest"])


def test_the_rolling_window_reads_only_outcomes_known_before_each_row():
    """The scored fold's second half flipped: what the rolling method predicted before the
    change is the same (no row saw its own outcome or a later one), after it it is not."""
    folds = _folds(np.random.default_rng(3), [0.0, 0.0])
    half = len(folds.y[1]) // 2
    flipped = folds.y[1].copy()
    flipped[half:] = 1.0 - flipped[half:]
    changed = FoldPredictions(folds.p, [folds.y[0], flipped], folds.open_ms, folds.label_ms)
    before = METHODS["rolling 7 days"](folds, 1)
    after = METHODS["rolling 7 days"](changed, 1)
    assert np.array_equal(before[:half], after[:half])
    assert not np.allclose(before[half + 200 :], after[half + 200 :])


@pytest.mark.parametrize("folds", ["3,x", "1", ""])
def test_fold_counts_that_cannot_be_scored_are_refused(folds):
    with pytest.raises(SystemExit, match="--folds"):
        cli.main(["--folds", folds])
