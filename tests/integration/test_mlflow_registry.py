"""MLflow's Model Registry as tickcast's registry, against a real local MLflow server: the
registry commands (copy, list, promote on evidence, forced promotion, rollback, history)
work on it as on the folder registry; a model served from it predicts exactly what the
same model from models_onnx/ predicts; and a running application follows the ``champion``
alias when a user moves it in MLflow, without a restart and without a failed request, and
its shadow follows the ``challenger`` alias."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from mlflow import MlflowClient

from orchestrator import PROJECT_ROOT
from orchestrator.cli.registry import main as registry_cli
from orchestrator.features import FEATURE_NAMES, REQUIRED_FEATURES
from orchestrator.models.predictor import OnnxPredictor
from orchestrator.models.registry import Registry, open_registry
from serve_app.app import build_app
from tests.integration.polling import post_until_stopped, until

FILES = Registry(PROJECT_ROOT / "models_onnx")


def _aliases(uri: str, model_id: str) -> dict:
    return dict(MlflowClient(uri).get_registered_model(f"tickcast-{model_id}").aliases)


def test_registry_commands_work_on_mlflow_as_on_folders(mlflow_server, capsys, tmp_path):
    target = f"mlflow:{mlflow_server}"
    copies = (("direction-1m", "v1"), ("direction-1m", "v2"), ("direction-4h", "v2"))
    for model_id, version in copies:
        assert registry_cli(["copy", model_id, version, "--to", target]) == 0
    mlflow_registry = open_registry(target)

    rows = np.random.default_rng(7).normal(size=(200, len(FEATURE_NAMES)))
    for version in ("v1", "v2"):
        ours, theirs = (
            FILES.manifest("direction-1m", version),
            mlflow_registry.manifest("direction-1m", version),
        )
        assert theirs.stage == "staging" and theirs.mlflow_version is not None
        for field in ("feature_names", "outputs", "metrics", "sha256", "created_at"):
            assert getattr(theirs, field) == getattr(ours, field)
        assert theirs.training_distribution == ours.training_distribution
        assert theirs.label == ours.label and theirs.training == ours.training
        model = mlflow_registry.load_bytes(theirs)
        assert model == FILES.load_bytes(ours)
        np.testing.assert_array_equal(
            OnnxPredictor(theirs, model).predict(rows),
            OnnxPredictor(ours, FILES.load_bytes(ours)).predict(rows),
        )
    # logged as an MLflow ONNX model: MLflow's own loader reads the same graph
    import mlflow.onnx

    mlflow.set_tracking_uri(mlflow_server)
    v1 = mlflow_registry.manifest("direction-1m", "v1")
    loaded = mlflow.onnx.load_model(f"models:/tickcast-direction-1m/{v1.mlflow_version}")
    assert loaded.SerializeToString() == FILES.load_bytes(FILES.manifest("direction-1m", "v1"))

    cli = ["--root", target]
    assert registry_cli([*cli, "list", "--type", "direction"]) == 0
    listing = capsys.readouterr().out
    assert "direction-1m  v2" in listing and "direction-4h  v2" in listing

    # promotion on evidence: both direction-1m versions beat their baseline
    assert registry_cli([*cli, "promote", "direction-1m", "v1"]) == 0
    assert registry_cli([*cli, "promote", "direction-1m", "v2"]) == 0
    v2 = mlflow_registry.manifest("direction-1m", "v2")
    assert _aliases(mlflow_server, "direction-1m") == {"champion": v2.mlflow_version}
    assert mlflow_registry.manifest("direction-1m", "v1").stage == "archived"
    assert mlflow_registry.resolve("direction", "1m").version == "v2"

    # direction-4h v2 does not: refused, then forced with a reason, which is recorded
    capsys.readouterr()
    assert registry_cli([*cli, "promote", "direction-4h", "v2"]) == 2
    assert "does not beat its naive baseline" in capsys.readouterr().err
    assert mlflow_registry.manifest("direction-4h", "v2").stage == "staging"
    assert "champion" not in _aliases(mlflow_server, "direction-4h")
    with pytest.raises(SystemExit):  # --force without a reason: a usage error
        registry_cli([*cli, "promote", "direction-4h", "v2", "--force"])
    capsys.readouterr()
    forced = [*cli, "promote", "direction-4h", "v2", "--force", "--reason", "test of forcing"]
    assert registry_cli(forced) == 0
    (entry,) = mlflow_registry.history("direction-4h")
    assert entry["forced"] is True and entry["reason"] == "test of forcing"

    # rollback is one command, and recorded
    assert registry_cli([*cli, "rollback", "direction-1m", "--reason", "v2 misbehaves"]) == 0
    assert _aliases(mlflow_server, "direction-1m") == {"champion": v1.mlflow_version}
    history = mlflow_registry.history("direction-1m")
    assert [(e["action"], e["version"]) for e in history] == [
        ("promote", "v1"),
        ("promote", "v2"),
        ("rollback", "v1"),
    ]
    assert history[-1]["reason"] == "v2 misbehaves" and history[-1]["replaced"] == "v2"

    # the challenger role: tickcast's command sets MLflow's alias, and an alias moved in
    # MLflow is what a shadow without a version resolves to
    assert registry_cli([*cli, "challenger", "direction-1m", "v2", "--reason", "try v2"]) == 0
    assert _aliases(mlflow_server, "direction-1m")["challenger"] == v2.mlflow_version
    assert mlflow_registry.resolve("direction", "1m", role="shadow").version == "v2"
    client = MlflowClient(mlflow_server)
    client.set_registered_model_alias("tickcast-direction-1m", "challenger", v1.mlflow_version)
    assert mlflow_registry.resolve("direction", "1m", role="canary").version == "v1"
    assert registry_cli([*cli, "challenger", "direction-1m", "--clear"]) == 0
    assert "challenger" not in _aliases(mlflow_server, "direction-1m")
    assert mlflow_registry.history("direction-1m")[-1]["action"] == "clear challenger"
    # the marked challenger promoted is the champion: its challenger alias goes
    assert registry_cli([*cli, "challenger", "direction-1m", "v2"]) == 0
    assert registry_cli([*cli, "promote", "direction-1m", "v2"]) == 0
    assert _aliases(mlflow_server, "direction-1m") == {"champion": v2.mlflow_version}
    last = mlflow_registry.history("direction-1m")[-1]
    assert (last["action"], last["reason"]) == ("clear challenger", "v2 promoted to production")

    # and back to a folder: the same bytes
    back = tmp_path / "registry"
    assert registry_cli([*cli, "copy", "direction-1m", "v2", "--to", str(back)]) == 0
    copied = Registry(back).manifest("direction-1m", "v2")
    original = FILES.manifest("direction-1m", "v2")
    assert Registry(back).load_bytes(copied) == FILES.load_bytes(original)


def test_the_app_serves_from_mlflow_and_follows_the_champion_alias(
    mlflow_server, serve_app, ray_cluster, tmp_path
):
    target = f"mlflow:{mlflow_server}"
    registry = open_registry(target)
    for version in ("v1", "v2"):
        FILES.copy_to(registry, "direction-5m", version)
    registry.promote("direction-5m", "v1")
    registry.set_challenger("direction-5m", "v2")
    args = {
        "models_dir": target,
        "feeds": [],
        "features": {"timeframes": ["1m", "5m"]},
        "serving": {"num_cpus": 0.1, "registry_poll_s": 1.0, "model_groups": "none"},
        "models": [
            {"model_type": "direction", "timeframe": "5m"},
            {"model_type": "direction", "timeframe": "5m", "role": "shadow"},  # the alias
        ],
        "stream": {"state_dir": str(tmp_path / "state")},
        "sink": {"log_dir": str(tmp_path / "log")},
        "api": {"rate_limit_per_s": 1e6, "rate_limit_burst": 10**6},
    }
    serve_app.run(build_app(args), name="tickcast", route_prefix="/")
    body = {"model_type": "direction", "timeframe": "5m", "rows": [[0.1] * len(REQUIRED_FEATURES)]}
    stop, results = threading.Event(), []
    worker = threading.Thread(
        target=post_until_stopped,
        args=(f"{ray_cluster.tickcast_http}/v1/predict", body, stop, results, 0.05),
    )
    worker.start()
    try:
        until(lambda: len(results) >= 20, "answers from v1")
        # a user moves the alias in MLflow (its UI or client): no tickcast command, no restart
        v2 = registry.manifest("direction-5m", "v2").mlflow_version
        client = MlflowClient(mlflow_server)
        client.set_registered_model_alias("tickcast-direction-5m", "champion", v2)
        moved = time.monotonic()
        until(lambda: any(v == "v2" for _, _, v in list(results)), "v2 to serve", 60)
        switched = min(t for t, _, v in results if v == "v2")
        until(lambda: sum(t > switched for t, _, _ in list(results)) >= 20, "answers from v2")
    finally:
        stop.set()
        worker.join()
    assert [r for r in results if r[1] != 200] == []
    assert {v for t, _, v in results if t < moved} == {"v1"}
    assert {v for t, _, v in results if t > switched} == {"v2"}
    print(f"alias moved -> first v2 answer: {switched - moved:.1f} s (poll every 1 s)")

    # the shadow follows the challenger alias the same way, and outlives its removal
    shadow = serve_app.get_deployment_handle("model-direction-5m-shadow", app_name="tickcast")
    assert shadow.describe.remote().result()["version"] == "v2"
    v1 = registry.manifest("direction-5m", "v1").mlflow_version
    client.set_registered_model_alias("tickcast-direction-5m", "challenger", v1)
    until(lambda: shadow.describe.remote().result()["version"] == "v1", "the shadow on v1", 60)
    client.delete_registered_model_alias("tickcast-direction-5m", "challenger")
    time.sleep(3.0)  # three polls that find no challenger
    assert shadow.describe.remote().result()["version"] == "v1"
    served = serve_app.get_deployment_handle("model-direction-5m", app_name="tickcast")
    assert served.describe.remote().result()["version"] == "v2"
