"""MLflow's Model Registry as tickcast's model registry (``models_dir: mlflow:<tracking URI>``).

Where models come from a training platform that registers them in MLflow, tickcast serves
them from there. The mapping:

- **Names**: one registered model per tickcast model id, ``tickcast-<model_type>-<timeframe>``
  (``TICKCAST_MLFLOW_PREFIX`` changes the prefix).
- **Versions**: an MLflow model version holds the ONNX model logged with ``mlflow.onnx``
  and, in its MLmodel ``metadata``, the tickcast manifest (feature names, outputs, label,
  training range, metrics, training distribution). Its tickcast version (``v2``) is the tag
  ``tickcast.version``; versions registered without that tag are ``v<MLflow version>``.
- **Roles**: the alias ``champion`` is the production version (moving it in MLflow's UI is a
  promotion the pipeline follows); ``challenger`` is the version a shadow or canary
  config entry without a version runs (and follows as the alias moves). A version
  tagged ``tickcast.stage=archived`` is archived, any other is staging.
  ``tickcast.previous_production`` is the version a promotion replaced (what rollback uses).
- **History**: each promotion, rollback and demotion is a registered-model tag
  ``tickcast.history.<time>`` holding the entry as JSON (visible in MLflow's UI).

Credentials and endpoints come from MLflow's own environment variables
(``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, ``MLFLOW_S3_ENDPOINT_URL``
…), never from tickcast's config. A version's model file is downloaded once per process
(versions are immutable in MLflow); stages and aliases are read on every listing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path

from orchestrator.models.registry import (
    ModelManifest,
    ModelRegistry,
    RegistryError,
    model_id,
    split_model_id,
)

CHAMPION = "champion"
CHALLENGER = "challenger"  # the version a shadow or canary entry without a version runs
VERSION_TAG, STAGE_TAG, PREVIOUS_TAG = (
    "tickcast.version",
    "tickcast.stage",
    "tickcast.previous_production",
)
HISTORY_TAG = "tickcast.history."
EXPERIMENT = "tickcast-models"
# No progress bars on stderr from every download in a serving process's log.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
METADATA_KEY = "tickcast_manifest"


def _mlflow():
    try:
        import mlflow
    except ImportError as exc:  # the serving image may lack the extra
        raise RegistryError(
            "an mlflow: registry needs the mlflow client: pip install 'tickcast[mlflow]'"
        ) from exc
    return mlflow


class MlflowRegistry(ModelRegistry):
    def __init__(self, tracking_uri: str | None = None):
        mlflow = _mlflow()
        self.uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
        if not self.uri:
            raise RegistryError("mlflow: with no tracking URI; set MLFLOW_TRACKING_URI")
        self.location = f"mlflow:{self.uri}"
        self.prefix = os.environ.get("TICKCAST_MLFLOW_PREFIX", "tickcast-")
        self._client = mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        self._files = Path(tempfile.mkdtemp(prefix="tickcast-mlflow-"))
        weakref.finalize(self, shutil.rmtree, self._files, True)  # downloads go with it
        self._bodies: dict[tuple[str, str], tuple[dict, Path]] = {}  # (name, mlflow version)

    def name(self, model_id_: str) -> str:
        return f"{self.prefix}{model_id_}"

    # -- reading ---------------------------------------------------------------------------
    def manifests(
        self, model_type: str | None = None, timeframe: str | None = None
    ) -> list[ModelManifest]:
        if model_type and timeframe:
            names = [self.name(model_id(model_type, timeframe))]
        else:
            names = [
                m.name
                for m in self._call(self._client.search_registered_models, max_results=1000)
                if m.name.startswith(self.prefix)
            ]
        found = []
        for name in names:
            champion = self._champion(name)
            for version in self._versions_of(name):
                manifest = self._manifest_of(version, champion)
                if (model_type is None or manifest.model_type == model_type) and (
                    timeframe is None or manifest.timeframe == timeframe
                ):
                    found.append(manifest)
        return found

    def manifest(self, model_id_: str, version: str) -> ModelManifest:
        split_model_id(model_id_)
        name = self.name(model_id_)
        for found in self._versions_of(name):
            if self._tickcast_version(found) == version:
                return self._manifest_of(found, self._champion(name))
        raise RegistryError(f"no model {model_id_}@{version} in {self.location}")

    def model_bytes(self, manifest: ModelManifest) -> bytes:
        if manifest.mlflow_version is None:  # a manifest read elsewhere: find its version here
            manifest = self.manifest(manifest.model_id, manifest.version)
        body, folder = self._body(self.name(manifest.model_id), str(manifest.mlflow_version))
        return (folder / body.get("file", "model.onnx")).read_bytes()

    def history(self, model_id_: str) -> list[dict]:
        try:
            tags = self._client.get_registered_model(self.name(model_id_)).tags
        except Exception as exc:
            if _not_found(exc):
                return []
            raise RegistryError(f"{self.location}: {exc}") from exc
        return [json.loads(tags[k]) for k in sorted(tags) if k.startswith(HISTORY_TAG)]

    def _versions_of(self, name: str) -> list:
        return list(self._call(self._client.search_model_versions, f"name='{name}'"))

    def _tickcast_version(self, found) -> str:
        return found.tags.get(VERSION_TAG) or f"v{found.version}"

    def _manifest_of(self, found, champion: str | None) -> ModelManifest:
        body, _ = self._body(found.name, str(found.version))
        stage = (
            "production"
            if champion == str(found.version)
            else ("archived" if found.tags.get(STAGE_TAG) == "archived" else "staging")
        )
        try:
            return ModelManifest.model_validate(
                {
                    **body,
                    "version": self._tickcast_version(found),
                    "stage": stage,
                    "previous_production": found.tags.get(PREVIOUS_TAG) or None,
                    "mlflow_version": str(found.version),
                }
            )
        except ValueError as exc:
            raise RegistryError(f"{found.name} v{found.version}: bad manifest: {exc}") from exc

    def _body(self, name: str, version: str) -> tuple[dict, Path]:
        """A version's manifest (from its MLmodel metadata) and the folder of its files,
        downloaded once: an MLflow model version's files never change."""
        cached = self._bodies.get((name, version))
        if cached is not None:
            return cached
        import yaml

        folder = self._files / f"{name}-{version}"
        # The version's own artifact location, not ``models:/name/version``: resolving that
        # goes through the process-wide registry URI, which a serving process never sets.
        source = self._call(self._client.get_model_version_download_uri, name, version)
        self._call(
            _mlflow().artifacts.download_artifacts,
            artifact_uri=source,
            dst_path=str(folder),
            tracking_uri=self.uri,
        )
        mlmodel = next(folder.rglob("MLmodel"), None)
        if mlmodel is None:
            raise RegistryError(f"{name} v{version}: no MLmodel file in its artifacts")
        meta = (yaml.safe_load(mlmodel.read_text()) or {}).get("metadata") or {}
        if METADATA_KEY not in meta:
            raise RegistryError(
                f"{name} v{version} has no tickcast manifest in its MLmodel metadata: log it "
                "with `tickcast registry copy` or mlflow.onnx.log_model(metadata="
                "{'tickcast_manifest': manifest})"
            )
        self._bodies[(name, version)] = (meta[METADATA_KEY], mlmodel.parent)
        return self._bodies[(name, version)]

    def _call(self, method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except RegistryError:
            raise
        except Exception as exc:  # MlflowException, connection errors: one clear error type
            raise RegistryError(f"{self.location}: {type(exc).__name__}: {exc}") from exc

    # -- writing ---------------------------------------------------------------------------
    def publish(self, manifest: ModelManifest, model_bytes: bytes) -> ModelManifest:
        """Log the ONNX model with ``mlflow.onnx.log_model`` (the manifest in its metadata) in
        a run of the ``tickcast-models`` experiment, register it, tag its tickcast version."""
        import onnx

        mlflow = _mlflow()
        name = self.name(manifest.model_id)
        for found in self._versions_of(name):
            if self._tickcast_version(found) == manifest.version:
                raise RegistryError(f"{manifest.key} is already in {self.location}")
        body = manifest.model_dump(exclude={"stage", "previous_production", "mlflow_version"})
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        mlflow.set_experiment(EXPERIMENT)
        metrics = {
            f"{side}_{k}": v
            for side in ("model", "baseline")
            for k, v in (manifest.metrics.get(side) or {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        with mlflow.start_run(run_name=manifest.key) as run:
            mlflow.log_params(
                {
                    "model_id": manifest.model_id,
                    "version": manifest.version,
                    "sha256": manifest.sha256,
                }
            )
            if metrics:
                mlflow.log_metrics(metrics)
            info = self._call(
                mlflow.onnx.log_model,
                onnx.load_model_from_string(model_bytes),
                name="model",
                registered_model_name=name,
                metadata={METADATA_KEY: body},
                save_as_external_data=False,  # one file, the bytes the checksum is of
                pip_requirements=["onnxruntime"],  # no dependency inference at log time
                await_registration_for=60,
            )
        version = str(info.registered_model_version)
        self._call(self._client.set_model_version_tag, name, version, VERSION_TAG, manifest.version)
        self._call(self._client.set_model_version_tag, name, version, "run_id", run.info.run_id)
        stored = self.manifest(manifest.model_id, manifest.version)
        if self.load_bytes(stored) != model_bytes:  # the flavour wrote other bytes: say so now
            raise RegistryError(f"{manifest.key}: MLflow stored a different model file")
        return stored

    def _set_stage(self, manifest: ModelManifest, **changes) -> ModelManifest:
        name, version = self.name(manifest.model_id), str(manifest.mlflow_version)
        stage = changes.get("stage", manifest.stage)
        if "previous_production" in changes:
            self._call(
                self._client.set_model_version_tag,
                name,
                version,
                PREVIOUS_TAG,
                changes["previous_production"] or "",
            )
        if stage == "production":
            self._call(self._client.set_registered_model_alias, name, CHAMPION, version)
            self._call(self._client.set_model_version_tag, name, version, STAGE_TAG, "production")
        else:
            holder = self._champion(name)
            if holder == version:
                self._call(self._client.delete_registered_model_alias, name, CHAMPION)
            self._call(self._client.set_model_version_tag, name, version, STAGE_TAG, stage)
        return self.manifest(manifest.model_id, manifest.version)

    def _champion(self, name: str) -> str | None:
        return self._alias(name, CHAMPION)

    def _alias(self, name: str, alias: str) -> str | None:
        """The MLflow version ``alias`` points at (search results carry no aliases; the
        registered model does)."""
        try:
            aliases = self._client.get_registered_model(name).aliases
        except Exception as exc:
            if _not_found(exc):
                return None
            raise RegistryError(f"{self.location}: {type(exc).__name__}: {exc}") from exc
        found = aliases.get(alias) if isinstance(aliases, dict) else None
        return None if found is None else str(found)

    def _challenger_version(self, model_id_: str) -> str | None:
        held = self._alias(self.name(model_id_), CHALLENGER)
        if held is None:
            return None
        for manifest in self.versions(model_id_):
            if str(manifest.mlflow_version) == held:
                return manifest.version
        return None

    def _mark_challenger(self, model_id_: str, manifest: ModelManifest | None) -> None:
        name = self.name(model_id_)
        if manifest is not None:
            version = str(manifest.mlflow_version)
            self._call(self._client.set_registered_model_alias, name, CHALLENGER, version)
        elif self._alias(name, CHALLENGER) is not None:
            self._call(self._client.delete_registered_model_alias, name, CHALLENGER)

    def _record(self, model_id_: str, entry: dict) -> None:
        key = f"{HISTORY_TAG}{time.time_ns():020d}"
        name = self.name(model_id_)
        self._call(self._client.set_registered_model_tag, name, key, json.dumps(entry))


def _not_found(exc: Exception) -> bool:
    return (
        "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", ""))
        or "not found" in str(exc).lower()
    )
