"""The model registry in ``models_onnx/``: one folder per model id and version.

Layout: ``models_onnx/<model_id>/<version>/{model.onnx, manifest.json}`` where model_id is
``<model_type>-<timeframe>``. Loading verifies the checksum; a model whose feature names the
feature engine does not produce is refused at start-up, never served wrong.
Pure: no Ray, only the filesystem.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.features import FEATURE_NAMES

MANIFEST = "manifest.json"
Stage = Literal["production", "staging", "archived"]


class RegistryError(RuntimeError):
    """A model cannot be served: missing, corrupted, or built for other features."""


class ModelManifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    model_id: str
    model_type: str
    timeframe: str
    version: str
    stage: Stage = "staging"
    file: str = "model.onnx"
    sha256: str
    feature_names: tuple[str, ...]
    metrics: dict = Field(default_factory=dict)
    created_at: str = ""

    @property
    def key(self) -> str:
        return f"{self.model_id}@{self.version}"


def model_id(model_type: str, timeframe: str) -> str:
    return f"{model_type}-{timeframe}"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _version_sort_key(version: str) -> tuple[int, str]:
    digits = version.lstrip("v")
    return (int(digits), version) if digits.isdigit() else (-1, version)


class Registry:
    def __init__(self, root: Path):
        self.root = Path(root)

    def manifests(self, model_type: str | None = None, timeframe: str | None = None) -> list[ModelManifest]:
        found = [self._read(p) for p in sorted(self.root.glob(f"*/*/{MANIFEST}"))]
        return [
            m
            for m in found
            if (model_type is None or m.model_type == model_type)
            and (timeframe is None or m.timeframe == timeframe)
        ]

    def resolve(self, model_type: str, timeframe: str, version: str | None = None) -> ModelManifest:
        """The requested version, else the newest production one, else the newest of any stage."""
        candidates = self.manifests(model_type, timeframe)
        if version is not None:
            candidates = [m for m in candidates if m.version == version]
        elif any(m.stage == "production" for m in candidates):
            candidates = [m for m in candidates if m.stage == "production"]
        if not candidates:
            wanted = f"{model_id(model_type, timeframe)}@{version or 'production'}"
            raise RegistryError(f"no model {wanted} in {self.root}; run scripts/train_models.py")
        return max(candidates, key=lambda m: _version_sort_key(m.version))

    def load_bytes(self, manifest: ModelManifest) -> bytes:
        """The model file, after checking its checksum and its features against the engine's."""
        data = (self.root / manifest.model_id / manifest.version / manifest.file).read_bytes()
        if sha256_of(data) != manifest.sha256:
            raise RegistryError(f"{manifest.key}: checksum mismatch, the model file is corrupted")
        check_feature_names(manifest)
        return data

    def _read(self, path: Path) -> ModelManifest:
        try:
            return ModelManifest.model_validate(json.loads(path.read_text()))
        except (ValueError, OSError) as exc:
            raise RegistryError(f"unreadable manifest {path}: {exc}") from exc


def check_feature_names(manifest: ModelManifest) -> None:
    unknown = [n for n in manifest.feature_names if n not in FEATURE_NAMES]
    if unknown:
        raise RegistryError(
            f"{manifest.key} needs features the engine does not compute: {unknown}; retrain it"
        )
