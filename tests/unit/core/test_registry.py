import json

import pytest

from orchestrator.features import FEATURE_NAMES
from serve_app.registry import Registry, RegistryError, sha256_of


def _publish(root, version, stage, data=b"model-bytes", features=None):
    folder = root / "direction-1m" / version
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(data)
    manifest = {
        "model_id": "direction-1m", "model_type": "direction", "timeframe": "1m",
        "version": version, "stage": stage, "sha256": sha256_of(data),
        "feature_names": list(features or FEATURE_NAMES[:3]),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_resolve_prefers_newest_production_then_explicit_version(tmp_path):
    _publish(tmp_path, "v1", "production")
    _publish(tmp_path, "v2", "production")
    _publish(tmp_path, "v10", "staging")
    registry = Registry(tmp_path)
    assert registry.resolve("direction", "1m").version == "v2"
    assert registry.resolve("direction", "1m", "v10").version == "v10"
    with pytest.raises(RegistryError, match="direction-5m"):
        registry.resolve("direction", "5m")


def test_corrupted_model_is_refused(tmp_path):
    folder = _publish(tmp_path, "v1", "production")
    (folder / "model.onnx").write_bytes(b"tampered")
    registry = Registry(tmp_path)
    with pytest.raises(RegistryError, match="checksum"):
        registry.load_bytes(registry.resolve("direction", "1m"))


def test_model_for_unknown_features_is_refused(tmp_path):
    _publish(tmp_path, "v1", "production", features=["rsi_14", "not_a_feature"])
    registry = Registry(tmp_path)
    with pytest.raises(RegistryError, match="not_a_feature"):
        registry.load_bytes(registry.resolve("direction", "1m"))


def test_unreadable_manifest_is_a_clear_error(tmp_path):
    folder = _publish(tmp_path, "v1", "production")
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(RegistryError, match="unreadable manifest"):
        Registry(tmp_path).manifests()
