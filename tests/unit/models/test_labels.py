"""Label definitions, and the look-ahead contract: features at t read nothing after t;
labels at t read only candle t, its ``lookback`` predecessors and its ``horizon`` successors."""

import numpy as np
import pytest

from orchestrator.features import REQUIRED_FEATURES, compute_features
from orchestrator.models.labels import (
    LABEL_SPECS,
    SWING_ORDER,
    VOLATILITY_HORIZON,
    forward_volatility,
    log_returns,
    next_direction,
    next_log_return,
    swing_points,
    trailing_volatility,
)
from orchestrator.models.training.datasets import labelled_candles
from tests.unit.models.helpers import (
    MINUTE_MS,
    perturbed_after,
    perturbed_before,
    random_candles,
    real_candles,
)

LABEL_FUNCTIONS = {
    "direction": lambda c: next_direction(c["close"].to_numpy()),
    "return": lambda c: next_log_return(c["close"].to_numpy()),
    "volatility": lambda c: forward_volatility(c["close"].to_numpy()),
    "swing": lambda c: swing_points(c["high"].to_numpy(), c["low"].to_numpy()),
}


def test_direction_and_return_definitions():
    close = np.array([10.0, 11.0, 11.0, 9.0, 12.0])
    np.testing.assert_array_equal(next_direction(close)[:-1], [1, 0, 0, 1])
    np.testing.assert_allclose(next_log_return(close)[:-1], np.log(close[1:] / close[:-1]))
    assert np.isnan(next_direction(close)[-1]) and np.isnan(next_log_return(close)[-1])


def test_volatility_is_the_population_std_of_the_next_n_returns():
    close = random_candles(60, seed=3)["close"].to_numpy()
    r = np.log(close[1:] / close[:-1])  # r[i - 1] = ln(c[i] / c[i - 1])
    n = VOLATILITY_HORIZON
    forward, trailing = forward_volatility(close), trailing_volatility(close)
    for t in (0, 17, len(close) - n - 1):
        assert forward[t] == pytest.approx(np.std(r[t : t + n]), rel=1e-12)
    for t in (n, 33, len(close) - 1):
        assert trailing[t] == pytest.approx(np.std(r[t - n : t]), rel=1e-12)
    assert np.isnan(forward[-n:]).all() and np.isfinite(forward[:-n]).all()
    assert np.isnan(trailing[:n]).all() and np.isfinite(trailing[n:]).all()
    np.testing.assert_array_equal(log_returns(close)[1:], r)


def test_swing_points_on_a_hand_made_series():
    k = 2
    high = np.array([5, 6, 9, 7, 6, 6, 8, 8, 7, 4, 5, 6], dtype=float)
    low = high - 1
    low[9] = 1.0  # a lone low
    label = swing_points(high, low, k)
    assert np.isnan(label[:k]).all() and np.isnan(label[-k:]).all()
    assert label[2] == 1  # 9 beats the 2 before and the 2 after
    assert label[6] == 1 and label[7] == 0  # equal highs: the earliest one is the swing
    assert label[9] == 2
    assert label[4] == 2 and label[5] == 0  # lows 5, 5: again the earliest
    assert label[3] == label[8] == 0


def test_a_candle_that_is_both_a_swing_high_and_low_is_none():
    high = np.array([5, 5, 9, 5, 5], dtype=float)
    low = np.array([4, 4, 1, 4, 4], dtype=float)
    assert swing_points(high, low, 2)[2] == 0
    low[2] = 4.5  # now only a high
    assert swing_points(high, low, 2)[2] == 1


@pytest.mark.parametrize("model_type", sorted(LABEL_FUNCTIONS))
def test_labels_read_only_their_window(model_type):
    spec, label_of = LABEL_SPECS[model_type], LABEL_FUNCTIONS[model_type]
    candles = random_candles(400, seed=11)
    base = label_of(candles)
    reads_the_future = []
    for t in range(30, 370, 17):
        after = label_of(perturbed_after(candles, t + spec.horizon, seed=t))
        np.testing.assert_array_equal(after[: t + 1], base[: t + 1])
        before = label_of(perturbed_before(candles, t - spec.lookback, seed=t))
        np.testing.assert_array_equal(before[t:], base[t:])
        nearer = label_of(perturbed_after(candles, t, seed=t))
        reads_the_future.append(not np.array_equal(nearer[: t + 1], base[: t + 1], equal_nan=True))
    # The check can fail: candles right after t do change labels at or before t.
    assert any(reads_the_future)
    assert np.isnan(base[len(base) - spec.horizon :]).all()


def test_label_specs_match_the_constants():
    assert LABEL_SPECS["volatility"].horizon == VOLATILITY_HORIZON
    assert LABEL_SPECS["swing"].horizon == LABEL_SPECS["swing"].lookback == SWING_ORDER
    assert LABEL_SPECS["direction"].horizon == LABEL_SPECS["return"].horizon == 1


def _assert_past_unchanged(candles, t):
    base = compute_features(candles)
    changed = compute_features(perturbed_after(candles, t, seed=t))
    np.testing.assert_array_equal(changed.to_numpy()[: t + 1], base.to_numpy()[: t + 1])
    assert not np.array_equal(changed.to_numpy()[t + 1 :], base.to_numpy()[t + 1 :], equal_nan=True)


def test_features_at_t_read_nothing_after_t_synthetic():
    candles = random_candles(700, seed=5)
    for t in (40, 333, 650):
        _assert_past_unchanged(candles, t)


def test_features_at_t_read_nothing_after_t_real_data(shared_data):
    candles = real_candles(shared_data, 2_000)
    for t in (100, 1_234, 1_900):
        _assert_past_unchanged(candles, t)


def test_training_rows_keep_features_and_labels_causal():
    """The dataset builder adds no look-ahead of its own: rows up to t keep their features
    when later candles change, and their labels when candles beyond the horizon change."""
    candles = random_candles(500, seed=8)
    t = 300
    base = labelled_candles(candles, MINUTE_MS).set_index("open_time")
    changed = labelled_candles(perturbed_after(candles, t, seed=1), MINUTE_MS)
    changed = changed.set_index("open_time")
    until_t = base.index[base.index <= candles["open_time"][t]]
    features = list(REQUIRED_FEATURES)
    np.testing.assert_array_equal(changed.loc[until_t, features], base.loc[until_t, features])
    for model_type, spec in LABEL_SPECS.items():
        safe = base.index[base.index <= candles["open_time"][t - spec.horizon]]
        np.testing.assert_array_equal(changed.loc[safe, model_type], base.loc[safe, model_type])
