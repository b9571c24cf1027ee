"""The feature table: names, order, documentation, and the warm_rows mask."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from orchestrator.features import (
    FEATURE_NAMES,
    FEATURE_SPECS,
    REQUIRED_FEATURES,
    FeatureSpec,
    compute_features,
    warm_rows,
)
from orchestrator.features.specs import MAX_WARMUP
from tests.unit.features.helpers import random_walk

BRIEFED = (
    "ret_1",
    "ret_5",
    "ret_15",
    "rsi_14",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_pctb_20",
    "bb_width_20",
    "atr_14",
    "natr_14",
    "roc_10",
    "stoch_k",
    "stoch_d",
    "willr_14",
    "cci_20",
    "adx_14",
    "mfi_14",
    "sma_ratio_5",
    "sma_ratio_20",
    "ema_ratio_12",
    "vol_20",
    "volume_z_20",
    "hl_range",
    "close_pos",
    "hour_sin",
    "hour_cos",
    "taker_buy_ratio",
)
SOURCES = {"open_time", "open", "high", "low", "close", "volume", "taker_buy_base"}


def test_feature_table_is_complete_and_ordered():
    assert len(FEATURE_SPECS) >= 24
    assert tuple(spec.name for spec in FEATURE_SPECS) == FEATURE_NAMES
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert set(BRIEFED) <= set(FEATURE_NAMES)


def test_only_taker_ratio_is_optional():
    assert tuple(n for n in FEATURE_NAMES if n != "taker_buy_ratio") == REQUIRED_FEATURES
    assert [s.name for s in FEATURE_SPECS if s.optional] == ["taker_buy_ratio"]


@pytest.mark.parametrize("spec", FEATURE_SPECS, ids=lambda s: s.name)
def test_every_feature_is_documented(spec: FeatureSpec):
    assert len(spec.formula) > 10
    assert spec.warmup >= 0
    assert spec.source and set(spec.source) <= SOURCES


def test_specs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        FEATURE_SPECS[0].warmup = 0  # type: ignore[misc]


def test_warm_rows_needs_every_required_feature_but_not_the_optional_one():
    rows = compute_features(random_walk(80, seed=1, taker=False)).to_numpy(copy=True)
    warm = warm_rows(rows)
    assert not warm[:MAX_WARMUP].any()
    assert warm[MAX_WARMUP:].all()
    assert np.isnan(rows[:, FEATURE_NAMES.index("taker_buy_ratio")]).all()
    rows[MAX_WARMUP + 3, FEATURE_NAMES.index("adx_14")] = np.nan
    rows[MAX_WARMUP + 4, FEATURE_NAMES.index("vol_20")] = np.inf
    assert warm_rows(rows).sum() == len(rows) - MAX_WARMUP - 2


def test_warm_rows_rejects_a_matrix_of_the_wrong_width():
    with pytest.raises(ValueError, match="feature matrix"):
        warm_rows(np.zeros((3, len(FEATURE_NAMES) - 1)))
