"""The file registry, on a local folder and on an S3 server (``storage_root``)."""

import json

import pytest

from orchestrator.features import FEATURE_NAMES
from orchestrator.models.registry import PromotionRefused, Registry, RegistryError, sha256_of
from orchestrator.storage import locate


def _publish(root, version, stage, data=b"model-bytes", features=None, beats=True):
    folder = locate(root) / "direction-1m" / version
    (folder / "model.onnx").write_bytes(data)
    manifest = {
        "model_id": "direction-1m",
        "model_type": "direction",
        "timeframe": "1m",
        "version": version,
        "stage": stage,
        "sha256": sha256_of(data),
        "feature_names": list(features or FEATURE_NAMES[:3]),
        "metrics": {
            "model": {"log_loss": 0.69 if beats else 0.70, "brier": 0.249},
            "baseline": {"log_loss": 0.695, "brier": 0.25},
            "beats_baseline": beats,
        },
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_resolve_prefers_newest_production_then_explicit_version(storage_root):
    _publish(storage_root, "v1", "production")
    _publish(storage_root, "v2", "production")
    _publish(storage_root, "v10", "staging")
    registry = Registry(storage_root)
    assert registry.resolve("direction", "1m").version == "v2"
    assert registry.resolve("direction", "1m", "v10").version == "v10"
    with pytest.raises(RegistryError, match="direction-5m"):
        registry.resolve("direction", "5m")


def test_corrupted_model_is_refused(storage_root):
    folder = _publish(storage_root, "v1", "production")
    (folder / "model.onnx").write_bytes(b"tampered")
    registry = Registry(storage_root)
    with pytest.raises(RegistryError, match="checksum"):
        registry.load_bytes(registry.resolve("direction", "1m"))


def test_model_for_unknown_features_is_refused(storage_root):
    _publish(storage_root, "v1", "production", features=["rsi_14", "not_a_feature"])
    registry = Registry(storage_root)
    with pytest.raises(RegistryError, match="not_a_feature"):
        registry.load_bytes(registry.resolve("direction", "1m"))


def test_unreadable_manifest_is_a_clear_error(storage_root):
    folder = _publish(storage_root, "v1", "production")
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(RegistryError, match="unreadable manifest"):
        Registry(storage_root).manifests()


def _stages(registry):
    return {m.version: m.stage for m in registry.versions("direction-1m")}


def test_promote_makes_one_production_and_archives_the_replaced_one(storage_root):
    _publish(storage_root, "v1", "production")
    _publish(storage_root, "v2", "staging")
    registry = Registry(storage_root)
    promoted = registry.promote("direction-1m", "v2")
    assert promoted.stage == "production" and promoted.previous_production == "v1"
    assert _stages(registry) == {"v1": "archived", "v2": "production"}
    assert registry.resolve("direction", "1m").version == "v2"
    assert registry.promote("direction-1m", "v2").previous_production == "v1"  # idempotent


def test_rollback_walks_back_through_promotions(storage_root):
    for version, stage in (("v1", "production"), ("v2", "staging"), ("v3", "staging")):
        _publish(storage_root, version, stage)
    registry = Registry(storage_root)
    registry.promote("direction-1m", "v2")
    registry.promote("direction-1m", "v3")
    assert registry.rollback("direction-1m").version == "v2"
    assert _stages(registry) == {"v1": "archived", "v2": "production", "v3": "archived"}
    assert registry.rollback("direction-1m").version == "v1"
    assert _stages(registry) == {"v1": "production", "v2": "archived", "v3": "archived"}
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback("direction-1m")


def test_rollback_without_production_is_a_clear_error(storage_root):
    _publish(storage_root, "v1", "staging")
    with pytest.raises(RegistryError, match="no production version"):
        Registry(storage_root).rollback("direction-1m")


def test_a_corrupted_model_is_never_promoted(storage_root):
    _publish(storage_root, "v1", "production")
    folder = _publish(storage_root, "v2", "staging")
    (folder / "model.onnx").write_bytes(b"tampered")
    registry = Registry(storage_root)
    with pytest.raises(RegistryError, match="checksum"):
        registry.promote("direction-1m", "v2")
    assert _stages(registry) == {"v1": "production", "v2": "staging"}


def test_stage_changes_keep_every_other_manifest_field(storage_root):
    _publish(storage_root, "v1", "production")
    folder = _publish(storage_root, "v2", "staging")
    raw = json.loads((folder / "manifest.json").read_text())
    raw["training_distribution"] = {"mean": [1.5]}
    raw["outputs"] = {"tensor": "probabilities", "columns": [1], "names": ["prob_up"]}
    (folder / "manifest.json").write_text(json.dumps(raw))
    registry = Registry(storage_root)
    registry.promote("direction-1m", "v2")
    stored = json.loads((folder / "manifest.json").read_text())
    assert stored == {**raw, "stage": "production", "previous_production": "v1"}
    assert registry.resolve("direction", "1m").outputs["names"] == ["prob_up"]
    assert [e.name for e in folder.files()] == ["manifest.json", "model.onnx"]


def test_promoting_a_missing_version_names_it(storage_root):
    _publish(storage_root, "v1", "production")
    with pytest.raises(RegistryError, match="direction-1m@v7"):
        Registry(storage_root).promote("direction-1m", "v7")
    with pytest.raises(RegistryError, match="model_type"):
        Registry(storage_root).promote("direction", "v1")


@pytest.mark.parametrize(
    "outputs",
    [
        {"tensor": "", "columns": [1], "names": ["p"]},
        {"tensor": "probabilities", "columns": [], "names": []},
        {"tensor": "probabilities", "columns": [1, 2], "names": ["p"]},
        {"tensor": "probabilities", "columns": [-1], "names": ["p"]},
    ],
)
def test_malformed_outputs_are_refused(storage_root, outputs):
    folder = _publish(storage_root, "v1", "production")
    raw = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**raw, "outputs": outputs}))
    with pytest.raises(RegistryError, match="outputs"):
        Registry(storage_root).manifests()


def _cli():
    from orchestrator.cli import registry

    return registry


def test_cli_lists_promotes_and_rolls_back(storage_root, capsys):
    _publish(storage_root, "v1", "production")
    _publish(storage_root, "v2", "staging")
    _publish(storage_root, "v10", "staging")
    cli = _cli()
    assert cli.main(["--root", storage_root, "promote", "direction-1m", "v2"]) == 0
    assert "direction-1m@v2 is now production (replaced v1)" in capsys.readouterr().out
    assert cli.main(["--root", storage_root, "list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[:3] == ["model", "version", "stage"]
    assert [line.split()[1:3] for line in listing[1:]] == [  # in version order, v2 before v10
        ["v1", "archived"],
        ["v2", "production"],
        ["v10", "staging"],
    ]
    assert cli.main(["--root", storage_root, "rollback", "direction-1m"]) == 0
    assert _stages(Registry(storage_root)) == {
        "v1": "production",
        "v2": "archived",
        "v10": "staging",
    }
    assert cli.main(["--root", storage_root, "rollback", "direction-1m"]) == 2
    assert "nothing to roll back" in capsys.readouterr().err


def test_manifests_are_parsed_once_and_reread_when_the_file_changes(storage_root):
    import json as json_module

    from orchestrator.models.registry import Registry as CachedRegistry

    _publish(storage_root, "v1", "production")
    registry = CachedRegistry(storage_root)
    first = registry.resolve("direction", "1m")
    assert registry.resolve("direction", "1m") is first  # cached: the same parsed object
    path = locate(storage_root) / "direction-1m" / "v1" / "manifest.json"  # size changes too
    data = json_module.loads(path.read_text())
    data["stage"] = "staging"
    path.write_text(json_module.dumps(data))
    assert registry.resolve("direction", "1m").stage == "staging"


def test_promotion_without_evidence_is_refused_and_forcing_it_is_recorded(storage_root):
    _publish(storage_root, "v1", "production")
    _publish(storage_root, "v2", "staging", beats=False)
    registry = Registry(storage_root)
    with pytest.raises(PromotionRefused, match=r"does not beat its naive baseline.*log_loss 0\.7"):
        registry.promote("direction-1m", "v2")
    with pytest.raises(PromotionRefused, match="--force --reason"):
        registry.promote("direction-1m", "v2", reason="  ", force=True)
    with pytest.raises(PromotionRefused):  # a reason alone does not force
        registry.promote("direction-1m", "v2", reason="I like it")
    assert _stages(registry) == {"v1": "production", "v2": "staging"}
    assert registry.history("direction-1m") == []
    registry.promote("direction-1m", "v2", reason="regime change, v1 stale", force=True)
    assert _stages(registry) == {"v1": "archived", "v2": "production"}
    registry.rollback("direction-1m", reason="v2 lost money")
    entries = registry.history("direction-1m")
    assert [(e["action"], e["version"]) for e in entries] == [("promote", "v2"), ("rollback", "v1")]
    assert entries[0]["forced"] is True and entries[0]["reason"] == "regime change, v1 stale"
    assert entries[0]["replaced"] == "v1" and "does not beat" in entries[0]["evidence"]
    assert entries[1]["reason"] == "v2 lost money" and entries[1]["replaced"] == "v2"
    assert all(e["at"] and e["by"] for e in entries)


def test_a_version_without_metrics_has_no_evidence(storage_root):
    folder = _publish(storage_root, "v1", "staging")
    raw = json.loads((folder / "manifest.json").read_text())
    del raw["metrics"]
    (folder / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(PromotionRefused, match="no out-of-sample comparison"):
        Registry(storage_root).promote("direction-1m", "v1")


def test_demote_takes_a_version_out_of_production_with_a_reason(storage_root):
    _publish(storage_root, "v1", "production", beats=False)
    registry = Registry(storage_root)
    with pytest.raises(RegistryError, match="needs a reason"):
        registry.demote("direction-1m", "v1", reason=" ")
    assert registry.demote("direction-1m", "v1", reason="fails its baseline").stage == "staging"
    assert registry.production("direction-1m") is None
    assert registry.resolve("direction", "1m").version == "v1"  # still servable by name
    (entry,) = registry.history("direction-1m")
    assert (entry["action"], entry["was"], entry["reason"]) == (
        "demote",
        "production",
        "fails its baseline",
    )


def test_copy_between_registries_checks_the_model_and_arrives_as_staging(storage_root):
    _publish(f"{storage_root}/a", "v1", "production")
    source, target = Registry(f"{storage_root}/a"), Registry(f"{storage_root}/b")
    copied = source.copy_to(target, "direction-1m", "v1")
    assert copied.stage == "staging" and copied.previous_production is None
    assert target.load_bytes(target.manifest("direction-1m", "v1")) == b"model-bytes"
    assert target.manifest("direction-1m", "v1").metrics["beats_baseline"] is True
    with pytest.raises(RegistryError, match="already in"):
        source.copy_to(target, "direction-1m", "v1")
    corrupted = _publish(f"{storage_root}/a", "v2", "staging")
    (corrupted / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(RegistryError, match="checksum"):
        source.copy_to(target, "direction-1m", "v2")
    assert [m.version for m in target.versions("direction-1m")] == ["v1"]
