"""The KubeRay deployment (configs/kuberay/): the RayService manifest is valid against
KubeRay's own CRD schema, it runs configs/production.yaml unchanged, its image is this
version's, secrets come from a Secret, and the shared volume holds the state and the log."""

from __future__ import annotations

import tomllib

import jsonschema
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from orchestrator import PROJECT_ROOT
from orchestrator.config import parse_config

KUBERAY = PROJECT_ROOT / "configs" / "kuberay"


@pytest.fixture(scope="module")
def manifest() -> dict:
    docs = list(yaml.safe_load_all((KUBERAY / "rayservice.yaml").read_text()))
    (service,) = [d for d in docs if d["kind"] == "RayService"]
    return service


@pytest.fixture(scope="module")
def crd_schema(shared_schemas) -> dict:
    crd = yaml.safe_load((shared_schemas / "kuberay" / "ray.io_rayservices.yaml").read_text())
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"]


def pods(manifest: dict) -> list[dict]:
    cluster = manifest["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [g["template"]["spec"] for g in groups]


def test_the_manifest_is_valid_against_kuberays_crd(manifest, crd_schema):
    jsonschema.validate(manifest, crd_schema)
    broken = {**manifest, "spec": {**manifest["spec"], "rayClusterConfig": {}}}
    with pytest.raises(jsonschema.ValidationError, match="headGroupSpec"):  # it can fail
        jsonschema.validate(broken, crd_schema)


def test_it_serves_production_yaml_unchanged(manifest):
    served = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    assert served == yaml.safe_load((PROJECT_ROOT / "configs" / "production.yaml").read_text())
    ServeDeploySchema.model_validate(served)
    for app in served["applications"]:
        parse_config(app["args"])


def test_image_secrets_and_object_storage(manifest):
    """No pod keeps state on its own disk: models, checkpoints and log on object storage,
    reached with credentials from the Secret (never inline)."""
    version = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    args = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"][0]["args"]
    for location in (args["models_dir"], args["stream"]["state_dir"], args["sink"]["log_dir"]):
        assert location.startswith("s3://")
    for pod in pods(manifest):
        (container,) = pod["containers"]
        assert container["image"].endswith(f"tickcast:{version}")
        env = {e["name"]: e for e in container["env"]}
        assert "value" not in env["TICKCAST_API_KEYS"]  # from the Secret, never inline
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} <= set(env)
        assert all("secretKeyRef" in e["valueFrom"] for e in env.values())
        assert "volumeMounts" not in container and "volumes" not in pod
    limits = [p["containers"][0]["resources"]["limits"]["memory"] for p in pods(manifest)]
    assert all(int(m.removesuffix("Gi")) >= 4 for m in limits)  # Ray alone takes ~1.5 GiB


def test_the_dockerfile_starts_from_rays_image_of_this_ray():
    dockerfile = (KUBERAY / "Dockerfile").read_text()
    pinned = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    ray = next(d for d in pinned["dependencies"] if d.startswith("ray["))
    assert f"FROM rayproject/ray:{ray.split('==')[1]}-py311" in dockerfile
    assert 'pip install --no-cache-dir -e ".[mlflow]"' in dockerfile  # the registry client
