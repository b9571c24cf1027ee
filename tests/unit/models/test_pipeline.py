"""One model from rows to manifest: evaluation beside the baseline, export, stages, table."""

import hashlib

import numpy as np
import pytest

from orchestrator.models.training.datasets import labelled_candles, model_data, pool_symbols
from orchestrator.models.training.onnx_export import OUTPUTS, onnx_outputs
from orchestrator.models.training.pipeline import (
    ModelPlan,
    assign_stages,
    baseline_output,
    evaluate,
    plans_for,
    train_model,
)
from orchestrator.models.training.report import metrics_table
from tests.unit.models.helpers import MINUTE_MS, random_candles


@pytest.fixture(scope="module")
def synthetic():
    tables = {
        f"S{i}": labelled_candles(random_candles(1_200, seed=40 + i), MINUTE_MS) for i in range(3)
    }
    return pool_symbols(tables, "1m", MINUTE_MS, "synthetic")


def test_plans_cover_every_type_and_the_stacked_direction():
    plans = plans_for("4h")
    assert {(p.model_id, p.version, p.learner) for p in plans} == {
        ("direction-4h", "v1", "lightgbm"),
        ("direction-4h", "v2", "stacked"),
        ("volatility-4h", "v1", "lightgbm"),
        ("return-4h", "v1", "lightgbm"),
        ("swing-4h", "v1", "lightgbm"),
    }


def test_baselines_use_only_the_training_rows(synthetic):
    rows = model_data(synthetic, "swing")
    train, test = np.arange(100), np.arange(100, 150)
    out = baseline_output(rows, train, test)
    expected = np.bincount(rows.target[train].astype(int), minlength=3) / 100
    np.testing.assert_allclose(out, np.tile(expected, (50, 1)))
    vol = model_data(synthetic, "volatility")
    np.testing.assert_array_equal(baseline_output(vol, train, test)[:, 0], vol.baseline[test])


def test_evaluation_reports_model_and_baseline(synthetic):
    rows = model_data(synthetic, "volatility")
    report = evaluate(ModelPlan("volatility", "1m", "v1", "lightgbm"), rows)
    assert report["test_rows"] == sum(f["test_rows"] for f in report["folds"])
    assert set(report["model"]) == {"mae", "rmse", "corr"}
    assert report["baseline"]["name"].startswith("historical volatility")
    assert report["beats_baseline"] == (
        report["model"]["mae"] < report["baseline"]["mae"]
        and report["model"]["rmse"] < report["baseline"]["rmse"]
    )


def test_train_model_exports_what_the_manifest_says(synthetic):
    rows = model_data(synthetic, "direction")
    trained = train_model(ModelPlan("direction", "1m", "v1", "lightgbm"), rows, {"data": ["x"]})
    manifest = trained.manifest
    assert manifest["sha256"] == hashlib.sha256(trained.model_bytes).hexdigest()
    assert manifest["size_bytes"] == len(trained.model_bytes)
    assert manifest["outputs"] == {"tensor": "probabilities", "columns": [1], "names": ["prob_up"]}
    assert manifest["metrics"]["onnx_max_abs_diff"] <= 1e-5
    assert manifest["training"]["rows"] == len(rows.target)
    served = onnx_outputs(trained.model_bytes, rows.features[-10:], OUTPUTS["direction"])
    assert served.shape == (10, 1) and np.all((served > 0) & (served < 1))


def _manifest(model_id, version, **model):
    return {
        "model_id": model_id,
        "version": version,
        "timeframe": model_id.split("-")[1],
        "model_type": model_id.split("-")[0],
        "stage": "staging",
        "learner": {},
        "metrics": {"model": model, "baseline": model, "test_rows": 1, "beats_baseline": False},
    }


def test_stages_go_to_the_lower_out_of_sample_log_loss_among_those_beating_the_baseline():
    manifests = [
        _manifest("direction-1h", "v1", log_loss=0.69, accuracy=0.5, roc_auc=0.5, brier=0.25),
        _manifest("direction-1h", "v2", log_loss=0.68, accuracy=0.5, roc_auc=0.5, brier=0.25),
        _manifest("direction-1h", "v3", log_loss=0.60, accuracy=0.5, roc_auc=0.5, brier=0.25),
        _manifest("return-1h", "v1", rmse=1.0, mae=1.0, corr=None),
        _manifest("return-4h", "v1", rmse=1.0, mae=1.0, corr=None),
    ]
    for m in (*manifests[:2], manifests[3]):
        m["metrics"]["beats_baseline"] = True
    assign_stages(manifests)
    # v3 has the lowest loss but does not beat its baseline; return-4h has no version that does
    stages = ["staging", "production", "staging", "production", "staging"]
    assert [m["stage"] for m in manifests] == stages
    # within SELECTION_MARGIN of the best, the simpler, older version serves
    close = [
        _manifest("direction-1m", "v1", log_loss=0.6930, accuracy=0.5, roc_auc=0.5, brier=0.25),
        _manifest("direction-1m", "v2", log_loss=0.6926, accuracy=0.5, roc_auc=0.5, brier=0.25),
    ]
    for m in close:
        m["metrics"]["beats_baseline"] = True
    assign_stages(close)
    assert [m["stage"] for m in close] == ["production", "staging"]
    table = metrics_table(manifests)
    assert "| direction-1h | v2 |" in table and "| return-1h | v1 |" in table
    assert "n/a / n/a" in table  # an undefined correlation is shown, not hidden
