"""Which model versions a backfill runs: ``type[@version]`` specs resolved in the registry.

``direction`` means the production version (as the live pipeline serves it), else the
newest; ``direction@v2`` that version; ``direction@all`` every version; ``all`` every
version of every type. A spec naming a version that does not exist for a requested
timeframe is an error; a type with no model at all for a timeframe is skipped (there is
no 30m model, say) and reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.batch.backfill.predict import LoadedModel
from orchestrator.config import MODEL_TYPES
from orchestrator.models.registry import ModelRegistry, RegistryError, open_registry

ALL = "all"


@dataclass(frozen=True)
class ModelSpec:
    model_type: str
    version: str | None = None  # None: production; ALL: every version

    @classmethod
    def parse(cls, text: str) -> list[ModelSpec]:
        """``"direction@all,volatility"`` -> specs; ``all`` expands to every type."""
        specs = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            if item == ALL:
                specs.extend(cls(t, ALL) for t in MODEL_TYPES)
                continue
            model_type, _, version = item.partition("@")
            if model_type not in MODEL_TYPES:
                raise ValueError(
                    f"unknown model type {model_type!r} in --models; "
                    f"expected one of {MODEL_TYPES} or 'all'"
                )
            specs.append(cls(model_type, version or None))
        return specs


DEFAULT_SPECS = tuple(ModelSpec(t) for t in MODEL_TYPES)


def select_models(
    models_dir: Path | str, specs: tuple[ModelSpec, ...], timeframes: tuple[str, ...]
) -> tuple[list[LoadedModel], list[str]]:
    """Checked models for every (spec, timeframe), and the (type, timeframe) pairs skipped."""
    registry = open_registry(models_dir)
    chosen: dict[str, LoadedModel] = {}
    skipped = []
    for timeframe in timeframes:
        for spec in specs:
            manifests = _manifests(registry, spec, timeframe)
            if not manifests:
                skipped.append(f"{spec.model_type}-{timeframe}")
            for manifest in manifests:
                chosen.setdefault(
                    manifest.key, LoadedModel(manifest, registry.load_bytes(manifest))
                )
    return list(chosen.values()), skipped


def _manifests(registry: ModelRegistry, spec: ModelSpec, timeframe: str) -> list:
    if spec.version == ALL:
        return registry.manifests(spec.model_type, timeframe)
    try:
        return [registry.resolve(spec.model_type, timeframe, spec.version)]
    except RegistryError:
        if spec.version is not None:
            raise
        return []
