"""Zero-downtime version switch: under steady HTTP load, a new user_config version loads
beside the old one and swaps in; no request fails, and answers move from v1 to v2."""

from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest

from orchestrator import PROJECT_ROOT
from orchestrator.features import REQUIRED_FEATURES
from orchestrator.models.registry import Registry, sha256_of
from serve_app.app import build_app
from tests.integration.polling import post_until_stopped, until


def _publish_logistic_v2(registry_dir) -> None:
    """A second, different direction-1m version: a logistic regression exported by skl2onnx."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, len(REQUIRED_FEATURES))).astype(np.float32)
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    onnx_bytes = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}).SerializeToString()
    folder = registry_dir / "direction-1m" / "v2"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(onnx_bytes)
    manifest = {
        "model_id": "direction-1m",
        "model_type": "direction",
        "timeframe": "1m",
        "version": "v2",
        "stage": "staging",
        "sha256": sha256_of(onnx_bytes),
        "feature_names": list(REQUIRED_FEATURES),
        "outputs": {"tensor": "probabilities", "columns": [1], "names": ["prob_up"]},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _registry_with_two_versions(tmp_path):
    source = Registry(PROJECT_ROOT / "models_onnx").resolve("direction", "1m")
    root = tmp_path / "models"
    shutil.copytree(
        PROJECT_ROOT / "models_onnx" / "direction-1m" / source.version, root / "direction-1m" / "v1"
    )
    manifest = json.loads((root / "direction-1m" / "v1" / "manifest.json").read_text())
    manifest["version"], manifest["stage"] = "v1", "production"
    (root / "direction-1m" / "v1" / "manifest.json").write_text(json.dumps(manifest))
    _publish_logistic_v2(root)
    return root


@pytest.mark.parametrize("groups", ["none", "all"])
def test_switching_versions_under_load_drops_nothing(serve_app, ray_cluster, tmp_path, groups):
    """Also with every model in one deployment: the switched model moves to v2 under load,
    the other model of its group keeps its version and answers throughout."""
    models_dir = _registry_with_two_versions(tmp_path)
    other = Registry(PROJECT_ROOT / "models_onnx").resolve("volatility", "1m")
    shutil.copytree(
        PROJECT_ROOT / "models_onnx" / "volatility-1m" / other.version,
        models_dir / "volatility-1m" / other.version,
    )

    def args(version: str) -> dict:
        return {
            "models_dir": str(models_dir),
            "feeds": [],
            "serving": {"num_cpus": 0.1, "model_groups": groups},
            "models": [
                {"model_type": "direction", "timeframe": "1m", "version": version},
                {"model_type": "volatility", "timeframe": "1m"},
            ],
            "stream": {"state_dir": str(tmp_path / "state")},
            "sink": {"log_dir": str(tmp_path / "log")},
            "api": {"rate_limit_per_s": 1e6, "rate_limit_burst": 10**6},
        }

    serve_app.run(build_app(args("v1")), name="tickcast", route_prefix="/")
    body = {
        "model_type": "direction",
        "timeframe": "1m",
        "rows": [[0.1] * len(REQUIRED_FEATURES)] * 4,
    }
    stop, results, others = threading.Event(), [], []
    url = f"{ray_cluster.tickcast_http}/v1/predict"
    load = post_until_stopped
    workers = [threading.Thread(target=load, args=(url, body, stop, results)) for _ in range(3)]
    other_body = {**body, "model_type": "volatility"}
    workers.append(threading.Thread(target=load, args=(url, other_body, stop, others)))
    for worker in workers:
        worker.start()
    until(lambda: len(results) >= 30, "load before the switch")
    switch_started = time.monotonic()
    serve_app.run(build_app(args("v2")), name="tickcast", route_prefix="/")
    switch_done = time.monotonic()
    until(lambda: sum(t > switch_done + 1.0 for t, _, _ in list(results)) >= 30, "load after it")
    stop.set()
    for worker in workers:
        worker.join()

    failures = [r for r in results if r[1] != 200]
    assert failures == []
    before = [v for t, _, v in results if t < switch_started]
    after = [v for t, _, v in results if t > switch_done + 1.0]
    assert len(before) > 20 and set(before) == {"v1"}
    assert len(after) > 20 and set(after) == {"v2"}
    assert len(others) > 10 and {r[1] for r in others} == {200}
    assert {r[2] for r in others} == {other.version}
