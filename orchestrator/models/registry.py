"""The model registry: versions of each model, their stages, and the rules for changing them.

Two backends behind one interface (``ModelRegistry``): the file registry in
``models_onnx/`` (the embedded default: ``<model_id>/<version>/{model.onnx, manifest.json}``,
model_id ``<model_type>-<timeframe>``) and MLflow's Model Registry
(``orchestrator/models/mlflow_registry.py``, chosen by a ``mlflow:`` location). Loading
verifies the checksum; a model whose feature names the feature engine does not produce is
refused at start-up, never served wrong.

Stages: ``promote`` makes one version production and archives the one it replaces,
remembering it in the new version's ``previous_production``; ``rollback`` follows that link
back (and again, further back: promotions form a stack). **Promotion needs evidence**: a
version whose manifest does not show it beating its naive baseline out of sample is refused
unless forced with a reason. Every promotion, rollback and demotion is appended to the
model's history with who, when, why and whether it was forced. The file backend rewrites
manifests whole, atomically (a temp file renamed over the old one), keeping every field.
Pure: no Ray.
"""

from __future__ import annotations

import getpass
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.features import FEATURE_NAMES
from orchestrator.models.comparison import live_evidence_problem
from orchestrator.storage import Entry, Location, locate

MANIFEST = "manifest.json"
HISTORY = "history.jsonl"  # one JSON object per line, per model folder
ALIASES = "aliases.json"  # {"challenger": version}: the version a shadow or canary runs
Stage = Literal["production", "staging", "archived"]


class RegistryError(RuntimeError):
    """A model cannot be served: missing, corrupted, or built for other features."""


class PromotionRefused(RegistryError):
    """A promotion without the evidence it needs (and no forced reason)."""


class NoChallenger(RegistryError):
    """A challenger's role (shadow, canary) asked for the marked version, and none is."""


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
    mlflow_version: str | None = None  # MLflow's number of this version (MLflow registry)

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


def version_sort_key(version: str) -> tuple[int, str]:
    digits = version.lstrip("v")
    return (int(digits), version) if digits.isdigit() else (-1, version)


def evidence_problem(manifest: ModelManifest) -> str | None:
    """Why ``manifest`` may not become production on its own evidence, or None if it may:
    it must beat its naive baseline out of sample (``metrics.beats_baseline``, written by
    ``tickcast train`` from the walk-forward folds)."""
    beats = manifest.metrics.get("beats_baseline")
    if beats is None:
        return "has no out-of-sample comparison with a naive baseline in its manifest"
    if beats:
        return None
    model, baseline = manifest.metrics.get("model", {}), manifest.metrics.get("baseline", {})
    keys = [k for k in ("log_loss", "brier", "mae", "rmse") if model.get(k) is not None]
    shown = ", ".join(f"{k} {model[k]:.4g} vs {baseline.get(k, float('nan')):.4g}" for k in keys)
    return f"does not beat its naive baseline out of sample ({shown})"


def _evidence_held(live: dict | None) -> str:
    held = "beats its naive baseline out of sample"
    if live is None:
        return held
    return f"{held}, and its champion on {live['pairs']} live outcomes"


def _live_summary(live: dict | None) -> dict | None:
    """What of a live comparison the history keeps."""
    if live is None:
        return None
    keys = ("champion_version", "pairs", "blocks", "improvement", "ci95", "verdict")
    return {k: live.get(k) for k in keys}


def history_entry(action: str, manifest: ModelManifest, **fields) -> dict:
    return {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "by": _user(),
        "action": action,
        "model_id": manifest.model_id,
        "version": manifest.version,
        **fields,
    }


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "unknown"


class ModelRegistry:
    """The registry's rules over a backend's storage. A backend implements the storage
    methods below; the rules (what resolves, what may be promoted, what is recorded) are here
    once, so both backends behave alike."""

    location: str

    # -- storage, per backend ------------------------------------------------------------
    def manifests(
        self, model_type: str | None = None, timeframe: str | None = None
    ) -> list[ModelManifest]:
        raise NotImplementedError

    def manifest(self, model_id_: str, version: str) -> ModelManifest:
        raise NotImplementedError

    def model_bytes(self, manifest: ModelManifest) -> bytes:
        """The stored model file, unchecked."""
        raise NotImplementedError

    def _set_stage(self, manifest: ModelManifest, **changes) -> ModelManifest:
        """Record ``changes`` (stage, previous_production) on one version."""
        raise NotImplementedError

    def _record(self, model_id_: str, entry: dict) -> None:
        raise NotImplementedError

    def history(self, model_id_: str) -> list[dict]:
        """Every promotion, rollback and demotion of one model, oldest first."""
        raise NotImplementedError

    def publish(self, manifest: ModelManifest, model_bytes: bytes) -> ModelManifest:
        """Store a new version (its manifest as given, the stage kept)."""
        raise NotImplementedError

    def _challenger_version(self, model_id_: str) -> str | None:
        """The version marked as the model's challenger, or None."""
        raise NotImplementedError

    def _mark_challenger(self, model_id_: str, manifest: ModelManifest | None) -> None:
        """Mark ``manifest`` as the challenger (None: no challenger)."""
        raise NotImplementedError

    # -- the rules ---------------------------------------------------------------------------
    def resolve(
        self, model_type: str, timeframe: str, version: str | None = None, role: str = "production"
    ) -> ModelManifest:
        """The requested version; else, for a challenger's role (shadow, canary), the version
        marked challenger; else the newest production one, else the newest of any stage."""
        if version is None and role != "production":
            found = self.challenger(model_id(model_type, timeframe))
            if found is None:
                raise NoChallenger(
                    f"{model_id(model_type, timeframe)} has no challenger to run as {role}: "
                    "mark one (tickcast registry challenger <model> <version>) or pin a version"
                )
            return found
        candidates = self.manifests(model_type, timeframe)
        if version is not None:
            candidates = [m for m in candidates if m.version == version]
        elif any(m.stage == "production" for m in candidates):
            candidates = [m for m in candidates if m.stage == "production"]
        if not candidates:
            wanted = f"{model_id(model_type, timeframe)}@{version or 'production'}"
            raise RegistryError(f"no model {wanted} in {self.location}; run `tickcast train`")
        return max(candidates, key=lambda m: version_sort_key(m.version))

    def load_bytes(self, manifest: ModelManifest) -> bytes:
        """The model file, after checking its checksum and its features against the engine's."""
        data = self.model_bytes(manifest)
        if sha256_of(data) != manifest.sha256:
            raise RegistryError(f"{manifest.key}: checksum mismatch, the model file is corrupted")
        check_feature_names(manifest)
        return data

    def versions(self, model_id_: str) -> list[ModelManifest]:
        """Every version of one model, oldest first."""
        return sorted(
            self.manifests(*split_model_id(model_id_)), key=lambda m: version_sort_key(m.version)
        )

    def production(self, model_id_: str) -> ModelManifest | None:
        """The newest production version, or None."""
        found = [m for m in self.versions(model_id_) if m.stage == "production"]
        return found[-1] if found else None

    def promote(
        self,
        model_id_: str,
        version: str,
        *,
        reason: str | None = None,
        force: bool = False,
        live: dict | None = None,
    ) -> ModelManifest:
        """Make ``version`` production; archive the production version(s) it replaces.

        Refused (``PromotionRefused``) when the version does not beat its naive baseline out
        of sample, or, where it ran live as a challenger (``live``: its comparison with the
        champion, ``comparison.compare``), did not beat the champion with the interval clear
        of zero; unless ``force`` with a ``reason`` says why it should anyway; the reason
        (given or not forced) and the live comparison go into the history. The model file is
        verified first (checksum, features): a broken model is never promoted. The new
        production version is recorded before the old one is archived, so a crash in between
        leaves two production versions (``resolve`` serves the newest), never none. A
        promoted challenger is the champion now: its challenger mark is cleared (recorded),
        so a shadow that follows the mark keeps what it runs until another is marked.
        """
        target = self.manifest(model_id_, version)
        if target.stage == "production":
            return target
        problems = [p for p in (evidence_problem(target), live_evidence_problem(live)) if p]
        problem = "; and ".join(problems) or None
        if problem and not (force and reason and reason.strip()):
            raise PromotionRefused(
                f"{target.key} {problem}: not promoted. To promote it anyway, give the reason: "
                "--force --reason '...' (recorded in the registry's history)"
            )
        self.load_bytes(target)
        replaced = [m for m in self.versions(model_id_) if m.stage == "production"]
        previous = replaced[-1].version if replaced else target.previous_production
        promoted = self._set_stage(target, stage="production", previous_production=previous)
        for manifest in replaced:
            self._set_stage(manifest, stage="archived")
        self._record(
            model_id_,
            history_entry(
                "promote",
                promoted,
                replaced=previous,
                forced=problem is not None,
                reason=reason,
                evidence=problem or _evidence_held(live),
                live=_live_summary(live),
            ),
        )
        if self._challenger_version(model_id_) == version:
            self.set_challenger(model_id_, None, reason=f"{version} promoted to production")
        return promoted

    def challenger(self, model_id_: str) -> ModelManifest | None:
        """The version marked as challenger (MLflow: the alias ``challenger``), or None."""
        version = self._challenger_version(model_id_)
        return None if version is None else self.manifest(model_id_, version)

    def set_challenger(
        self, model_id_: str, version: str | None, *, reason: str | None = None
    ) -> ModelManifest | None:
        """Mark ``version`` as the model's challenger (None: clear the mark); a shadow or
        canary config entry without a version runs it, and follows the mark as it moves.
        The model file is verified first; the change is recorded."""
        target = None if version is None else self.manifest(model_id_, version)
        if target is not None:
            self.load_bytes(target)
        before = self.challenger(model_id_)
        self._mark_challenger(model_id_, target)
        shown = target or before
        if shown is not None:
            action = "challenger" if target is not None else "clear challenger"
            self._record(model_id_, history_entry(action, shown, reason=reason))
        return target

    def rollback(self, model_id_: str, *, reason: str | None = None) -> ModelManifest:
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
        restored = self._set_stage(target, stage="production")
        self._set_stage(current, stage="archived")
        self._record(
            model_id_, history_entry("rollback", restored, replaced=current.version, reason=reason)
        )
        return restored

    def demote(self, model_id_: str, version: str, *, reason: str) -> ModelManifest:
        """Take a production version out of production (to staging), with a reason; the
        model then serves only where a config names it (``resolve`` falls back to the
        newest version of any stage when none is production)."""
        if not reason.strip():
            raise RegistryError("a demotion needs a reason")
        target = self.manifest(model_id_, version)
        demoted = self._set_stage(target, stage="staging")
        self._record(model_id_, history_entry("demote", demoted, was=target.stage, reason=reason))
        return demoted

    def copy_to(self, other: ModelRegistry, model_id_: str, version: str) -> ModelManifest:
        """Copy one version into another registry (checked on the way: checksum, features);
        it arrives as staging: promotion there follows that registry's rules."""
        manifest = self.manifest(model_id_, version)
        data = self.load_bytes(manifest)
        fresh = manifest.model_copy(update={"stage": "staging", "previous_production": None})
        return other.publish(fresh, data)


class Registry(ModelRegistry):
    """The file registry (``models_onnx/``): a folder, or a prefix on an object store
    (``s3://bucket/models``), holding ``<model id>/<version>/manifest.json`` and its model."""

    def __init__(self, root: Location | Path | str):
        self.root = locate(root)
        self.location = self.root.uri
        # Parsed manifests by location, valid while the file's mtime and size are unchanged: a
        # request path resolves models often, and re-parsing 30 manifests cost ~10 ms each time.
        self._parsed: dict[str, tuple[tuple[float, int], ModelManifest]] = {}

    def manifests(
        self, model_type: str | None = None, timeframe: str | None = None
    ) -> list[ModelManifest]:
        # One model's folder when the model is named (a request resolves one model; listing
        # all thirty folders per request was its largest cost), every folder otherwise.
        named = model_id(model_type, timeframe) if model_type and timeframe else None
        found = [self._read(entry) for entry in self._manifest_entries(named)]
        return [
            m
            for m in found
            if (model_type is None or m.model_type == model_type)
            and (timeframe is None or m.timeframe == timeframe)
        ]

    def _manifest_entries(self, named: str | None) -> list[Entry]:
        """``<model>/<version>/manifest.json`` of one model or of all, sorted by path."""
        if self.root.local:  # a glob: two folder levels, not every file of the registry
            base = Path(self.root.path)
            paths = sorted(base.glob(f"{named or '*'}/*/{MANIFEST}"))
            return [Location(self.root.fs, str(p)).stat() for p in paths]
        top = self.root / named if named else self.root
        depth = 2 if named else 3  # path parts below ``top``
        prefix = len(top.path) + 1
        return [
            e
            for e in top.files(suffix=MANIFEST, recursive=True)
            if e.name == MANIFEST and e.location.path[prefix:].count("/") == depth - 1
        ]

    def model_bytes(self, manifest: ModelManifest) -> bytes:
        return (self.root / manifest.model_id / manifest.version / manifest.file).read_bytes()

    def manifest(self, model_id_: str, version: str) -> ModelManifest:
        split_model_id(model_id_)
        path = self.root / model_id_ / version / MANIFEST
        try:
            entry = path.stat()
        except FileNotFoundError:
            raise RegistryError(f"no model {model_id_}@{version} in {self.root}") from None
        return self._read(entry)

    def history(self, model_id_: str) -> list[dict]:
        try:
            text = (self.root / model_id_ / HISTORY).read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def _record(self, model_id_: str, entry: dict) -> None:
        path = self.root / model_id_ / HISTORY
        line = json.dumps(entry) + "\n"
        if path.local:
            with open(path.path, "a") as handle:
                handle.write(line)
            return
        # No appends on an object store: the history is rewritten whole (two registry
        # commands at the same instant could lose one's line: run them one at a time).
        try:
            before = path.read_text()
        except FileNotFoundError:
            before = ""
        path.write_text(before + line)

    def publish(self, manifest: ModelManifest, model_bytes: bytes) -> ModelManifest:
        folder = self.root / manifest.model_id / manifest.version
        if (folder / MANIFEST).exists():
            raise RegistryError(f"{manifest.key} is already in {self.root}")
        (folder / manifest.file).write_bytes(model_bytes)
        # the manifest last: a version is listed only once its model file is complete
        stored = manifest.model_dump(exclude={"mlflow_version"}, exclude_none=True)
        (folder / MANIFEST).write_text(json.dumps(stored, indent=2) + "\n")
        return manifest

    def _set_stage(self, manifest: ModelManifest, **changes) -> ModelManifest:
        """Rewrite one manifest with ``changes``, keeping every other field as stored."""
        path = self.root / manifest.model_id / manifest.version / MANIFEST
        raw = json.loads(path.read_text())
        raw.update(changes)
        updated = ModelManifest.model_validate(raw)
        path.write_text(json.dumps(raw, indent=2) + "\n")
        return updated

    def _challenger_version(self, model_id_: str) -> str | None:
        path = self.root / model_id_ / ALIASES
        try:
            return json.loads(path.read_text()).get("challenger")
        except FileNotFoundError:
            return None
        except (ValueError, OSError) as exc:
            raise RegistryError(f"unreadable {path}: {exc}") from exc

    def _mark_challenger(self, model_id_: str, manifest: ModelManifest | None) -> None:
        path = self.root / model_id_ / ALIASES
        if manifest is None:
            path.delete()
        else:
            path.write_text(json.dumps({"challenger": manifest.version}) + "\n")

    def _read(self, entry: Entry) -> ModelManifest:
        path = entry.location
        stamp = (entry.mtime, entry.size)
        cached = self._parsed.get(path.uri)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            manifest = ModelManifest.model_validate(json.loads(path.read_text()))
        except (ValueError, OSError) as exc:
            raise RegistryError(f"unreadable manifest {path}: {exc}") from exc
        self._parsed[path.uri] = (stamp, manifest)
        return manifest


def open_registry(location: str | Path) -> ModelRegistry:
    """The registry at a configured location: ``mlflow:<tracking URI>`` (or ``mlflow:`` for
    ``MLFLOW_TRACKING_URI``) is MLflow's Model Registry; anything else is a folder (relative
    paths against the project root) or an object-store prefix (``s3://bucket/models``)."""
    text = str(location)
    if text.startswith("mlflow:"):
        from orchestrator.models.mlflow_registry import MlflowRegistry  # mlflow only if used

        return MlflowRegistry(text.removeprefix("mlflow:") or None)
    return Registry(locate(text))


def check_feature_names(manifest: ModelManifest) -> None:
    unknown = [n for n in manifest.feature_names if n not in FEATURE_NAMES]
    if unknown:
        raise RegistryError(
            f"{manifest.key} needs features the engine does not compute: {unknown}; retrain it"
        )
