import numpy as np
import pyarrow as pa

from orchestrator.models.labels import next_direction
from orchestrator.stream.routing import ShardRouter, shard_indices, shard_of
from orchestrator.stream.signals import direction_signals


def test_direction_signals_thresholds_are_symmetric():
    p = np.array([0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35, 0.3, 0.2])
    signal, tier = direction_signals(p, high=0.6, very_high=0.7)
    assert signal.to_pylist() == ["LONG"] * 4 + ["NEUTRAL"] * 3 + ["SHORT"] * 4
    assert tier.to_pylist() == [
        "VERY_HIGH",
        "VERY_HIGH",
        "HIGH",
        "HIGH",
        "LOW",
        "LOW",
        "LOW",
        "HIGH",
        "HIGH",
        "VERY_HIGH",
        "VERY_HIGH",
    ]


def test_sharding_is_stable_and_matches_scalar_version():
    exchanges = np.array(["binance"] * 200 + ["kraken"] * 200, dtype=object)
    symbols = np.array([f"S{i}/USDT" for i in range(400)], dtype=object)
    shards = shard_indices(exchanges, symbols, 7)
    expected = [shard_of(e, s, 7) for e, s in zip(exchanges, symbols, strict=True)]
    np.testing.assert_array_equal(shards, expected)
    assert set(shards) == set(range(7))  # 400 keys spread over every shard
    assert shard_of("binance", "BTC/USDT", 7) == shard_of("binance", "BTC/USDT", 7)


def test_next_direction_uses_only_the_following_candle():
    close = np.array([1.0, 2.0, 2.0, 1.5, 3.0])
    np.testing.assert_array_equal(next_direction(close)[:-1], [1.0, 0.0, 0.0, 1.0])
    assert np.isnan(next_direction(close)[-1])
    # Changing candle k can only change labels k-1 (its future) and k (its past): never others.
    changed = close.copy()
    changed[2] = 10.0
    diff = next_direction(close)[:-1] != next_direction(changed)[:-1]
    assert 1 in np.flatnonzero(diff) and set(np.flatnonzero(diff)) <= {1, 2}


def test_trend_labels_from_indicators():
    from orchestrator.features import FEATURE_NAMES
    from orchestrator.stream.signals import trend_labels

    rows = np.zeros((5, len(FEATURE_NAMES)))
    cols = {n: FEATURE_NAMES.index(n) for n in ("rsi_14", "macd_hist", "sma_ratio_20")}
    for i, (rsi, hist, ratio) in enumerate(
        [(75, -1, 0.9), (25, 1, 1.1), (50, 1, 1.1), (50, -1, 0.9), (50, 1, 0.9)]
    ):
        rows[i, cols["rsi_14"]], rows[i, cols["macd_hist"]], rows[i, cols["sma_ratio_20"]] = (
            rsi,
            hist,
            ratio,
        )
    assert trend_labels(rows, FEATURE_NAMES).to_pylist() == [
        "OVERBOUGHT",
        "OVERSOLD",
        "BULLISH",
        "BEARISH",
        "NEUTRAL",
    ]


def test_the_feed_router_routes_like_shard_of_across_batches():
    router = ShardRouter(5)
    for start in (0, 150, 90):  # new, then known and new keys mixed
        exchanges = pa.array(["binance"] * 100)
        symbols = pa.array([f"S{i}/USDT:USDT" for i in range(start, start + 100)])
        expected = [shard_of("binance", s, 5) for s in symbols.to_pylist()]
        np.testing.assert_array_equal(router.shards(exchanges, symbols), expected)
