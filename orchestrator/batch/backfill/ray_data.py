"""The backfill's predictions stage on Ray Data: a thin shell around the pure functions.

    candle tables (one block per series)
      -> map_batches(feature_rows)        one whole series per call (batch_size=None)
      -> map_batches(BatchPredictor)      an actor pool holding ONNX Runtime sessions
      -> iter_batches on the driver       (which writes; see orchestrator.batch.backfill.job)

Ray Data fuses the two maps into one actor-pool stage, so each actor computes a series'
features and predicts them without a trip through the object store. A block is never
split before ``feature_rows`` (``batch_size=None`` hands it whole blocks, and it keeps
each series whole even if given several), so every series' features start at its first
candle, as in the live pipeline. Model bytes travel in the actors' constructor arguments,
so workers on other nodes of a cluster need no models folder. Ray Data shows its own
progress bars.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyarrow as pa
import ray

from orchestrator.batch.backfill.features import feature_rows
from orchestrator.batch.backfill.predict import BatchPredictor, LoadedModel


def ensure_ray() -> None:
    """Join the cluster ``RAY_ADDRESS`` names (as ``ray job submit`` sets it), else start a
    local one; a driver that already called ``ray.init`` keeps its cluster."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:  # a cluster of this machine for this job; progress shows in the terminal
        ray.init(include_dashboard=False)


def predict_with_ray_data(
    series: list[pa.Table], models: list[LoadedModel], options, now_ms: int
) -> Iterator[pa.Table]:
    """Predicted rows of every series, as the pipeline's output blocks arrive."""
    ensure_ray()
    dataset = ray.data.from_arrow(series)
    dataset = dataset.map_batches(
        feature_rows,
        fn_kwargs={
            "start_ms": options.start_ms,
            "end_ms": options.end_ms,
            "label_types": tuple(sorted({m.manifest.model_type for m in models})),
        },
        batch_size=None,
        batch_format="pyarrow",
        num_cpus=options.feature_cpus,
    )
    dataset = dataset.map_batches(
        BatchPredictor,
        fn_constructor_kwargs={
            "models": models,
            "high": options.signals.high,
            "very_high": options.signals.very_high,
            "now_ms": now_ms,
            "environment": options.environment,
            "engine": options.engine,
        },
        batch_size=options.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=options.num_actors),
        num_cpus=options.actor_cpus,
    )
    yield from dataset.iter_batches(batch_format="pyarrow", batch_size=None)
