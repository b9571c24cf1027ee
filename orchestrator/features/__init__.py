"""Features: one definition (``specs``), two twins that agree to the last bit.

``IncrementalFeatures`` serves the streaming path (one candle per symbol per call, every
symbol of a shard at once); ``compute_features`` serves training and backfill (one
symbol, every candle). Both call the arithmetic in ``kernels``; ``drift`` compares live
feature distributions with a model's training distribution. Pure logic: no Ray, no I/O.
"""

from orchestrator.features.batch import compute_features
from orchestrator.features.incremental import IncrementalFeatures
from orchestrator.features.specs import (
    FEATURE_NAMES,
    FEATURE_SPECS,
    REQUIRED_FEATURES,
    FeatureSpec,
    warm_rows,
)

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_SPECS",
    "REQUIRED_FEATURES",
    "FeatureSpec",
    "IncrementalFeatures",
    "compute_features",
    "warm_rows",
]
