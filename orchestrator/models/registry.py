"""The model registry in ``models_onnx/``: one folder per model id and version.

Layout: ``models_onnx/<model_id>/<version>/{model.onnx, manifest.json}`` where model_id is
``<model_type>-<timeframe>``. Loading verifies the checksum; a model whose feature names the
feature engine does not produce is refused at start-up, never served wrong.

Stages: ``promote`` makes one version production and archives the one it replaces,
remembering it in the new version's ``previous_production``; ``rollback`` follows that link
back (and again, further back: promotions form a stack). Manifests are rewritten whole,
atomically (a temp file renamed over the old one), keeping every field they carry.
Pure: no Ray, only the filesystem.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
    # Which columns of which output tensor the server reports, in order (a plain dict):
    # {"tensor": str, "columns": [int], "names": [str]}; the first name is the primary value.
    outputs: dict | None = None
    previous_production: str | None = None  # the version this one replaced when promoted

    @property
    def key(self) -> str:
        return f"{self.model_id}@{self.version}"

    @field_validator("outputs")
    @classmethod
    def _outputs_are_complete(cls, value: dict | None) -> dict | None:
        if value is None:
            return value
        tensor, columns, names = value.get("tensor"), value.get("columns"), value.get("names")
        if not isinstance(tensor, str) or not tensor:
            raise ValueError("outputs.tensor must name an output tensor")
        if not columns or not all(isinstance(c, int) and c >= 0 for c in columns):
            raise ValueError("outputs.columns must be a non-empty list of column indices")
        if not isinstance(names, list) or len(names) != len(columns):
            raise ValueError("outputs.names must name every column, in order")
        return value


def model_id(model_type: str, timeframe: str) -> str:
    return f"{model_type}-{timeframe}"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_model_id(model_id_: str) -> tuple[str, str]:
    """``volatility-4h`` -> (``volatility``, ``4h``)."""
    model_type, sep, timeframe = model_id_.rpartition("-")
    if not sep or not model_type or not timeframe:
        raise RegistryError(f"model id {model_id_!r} is not <model_type>-<timeframe>")
    return model_type, timeframe


def _version_sort_key(version: str) -> tuple[int, str]:
    digits = version.lstrip("v")
    return (int(digits), version) if digits.isdigit() else (-1, version)


class Registry:
    def __init__(self, root: Path):
        self.root = Path(root)
        # Parsed manifests by path, valid while the file's mtime and size are unchanged: a
        # request path resolves models often, and re-parsing 30 manifests cost ~10 ms each time.
        self._parsed: dict[Path, tuple[tuple[int, int], ModelManifest]] = {}

    def manifests(
        self, model_type: str | None = None, timeframe: str | None = None
    ) -> list[ModelManifest]:
        # One model's folder when the model is named (a request resolves one model; listing
        # all thirty folders per request was its largest cost), every folder otherwise.
        folder = model_id(model_type, timeframe) if model_type and timeframe else "*"
        found = [self._read(p) for p in sorted(self.root.glob(f"{folder}/*/{MANIFEST}"))]
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
            raise RegistryError(f"no model {wanted} in {self.root}; run `tickcast train`")
        return max(candidates, key=lambda m: _version_sort_key(m.version))

    def load_bytes(self, manifest: ModelManifest) -> bytes:
        """The model file, after checking its checksum and its features against the engine's."""
        data = (self.root / manifest.model_id / manifest.version / manifest.file).read_bytes()
        if sha256_of(data) != manifest.sha256:
            raise RegistryError(f"{manifest.key}: checksum mismatch, the model file is corrupted")
        check_feature_names(manifest)
        return data

    def versions(self, model_id_: str) -> list[ModelManifest]:
        """Every version of one model, oldest first."""
        return sorted(
            self.manifests(*split_model_id(model_id_)), key=lambda m: _version_sort_key(m.version)
        )

    def manifest(self, model_id_: str, version: str) -> ModelManifest:
        split_model_id(model_id_)
        path = self.root / model_id_ / version / MANIFEST
        if not path.is_file():
            raise RegistryError(f"no model {model_id_}@{version} in {self.root}")
        return self._read(path)

    def production(self, model_id_: str) -> ModelManifest | None:
        """The newest production version, or None."""
        found = [m for m in self.versions(model_id_) if m.stage == "production"]
        return found[-1] if found else None

    def promote(self, model_id_: str, version: str) -> ModelManifest:
        """Make ``version`` production; archive the production version(s) it replaces.

        The model file is verified first (checksum, features): a broken model is never
        promoted. The new production manifest is written before the old one is archived,
        so a crash in between leaves two production versions (``resolve`` serves the
        newest), never none.
        """
        target = self.manifest(model_id_, version)
        if target.stage == "production":
            return target
        self.load_bytes(target)
        replaced = [m for m in self.versions(model_id_) if m.stage == "production"]
        previous = replaced[-1].version if replaced else target.previous_production
        promoted = self._update(target, stage="production", previous_production=previous)
        for manifest in replaced:
            self._update(manifest, stage="archived")
        return promoted

    def rollback(self, model_id_: str) -> ModelManifest:
        """Restore the version the current production one replaced; archive the current."""
        current = self.production(model_id_)
        if current is None:
            raise RegistryError(f"{model_id_} has no production version to roll back")
        if current.previous_production is None:
            raise RegistryError(
                f"{current.key} replaced no earlier version: nothing to roll back to"
            )
        target = self.manifest(model_id_, current.previous_production)
        self.load_bytes(target)
        restored = self._update(target, stage="production")
        self._update(current, stage="archived")
        return restored

    def _update(self, manifest: ModelManifest, **changes) -> ModelManifest:
        """Rewrite one manifest with ``changes``, keeping every other field as stored."""
        path = self.root / manifest.model_id / manifest.version / MANIFEST
        raw = json.loads(path.read_text())
        raw.update(changes)
        updated = ModelManifest.model_validate(raw)
        write_atomically(path, json.dumps(raw, indent=2) + "\n")
        return updated

    def _read(self, path: Path) -> ModelManifest:
        try:
            stat = path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            cached = self._parsed.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            manifest = ModelManifest.model_validate(json.loads(path.read_text()))
        except (ValueError, OSError) as exc:
            raise RegistryError(f"unreadable manifest {path}: {exc}") from exc
        self._parsed[path] = (stamp, manifest)
        return manifest


def write_atomically(path: Path, text: str) -> None:
    """Write a file so a reader sees the old content or the new, never half of either."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_feature_names(manifest: ModelManifest) -> None:
    unknown = [n for n in manifest.feature_names if n not in FEATURE_NAMES]
    if unknown:
        raise RegistryError(
            f"{manifest.key} needs features the engine does not compute: {unknown}; retrain it"
        )
