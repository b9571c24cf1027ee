"""ShardState: the streaming feature path must equal the batch path, through restores."""

import numpy as np
import pyarrow as pa
import pytest

from orchestrator.features import FEATURE_NAMES, compute_features, warm_rows
from orchestrator.market.resample import resample
from orchestrator.market.schema import candles_from_arrays
from orchestrator.market.synthetic import SyntheticMarket
from orchestrator.stream.shard import ShardState, merge_by_timeframe

SYMBOLS = ["A/USDT", "B/USDT", "C/USDT"]
TIMEFRAMES = ("1m", "5m", "15m")


def _minutes(n: int, seed: int = 1) -> list[pa.RecordBatch]:
    market = SyntheticMarket(len(SYMBOLS), seed=seed)
    batches = []
    for _ in range(n):
        m = market.next_minute()
        ohlcv = {k: getattr(m, k) for k in ("open", "high", "low", "close", "volume")}
        batches.append(candles_from_arrays("x", SYMBOLS, "1m", [m.open_time] * 3, ohlcv))
    return batches


def _collect(state: ShardState, batches) -> dict:
    rows = {}
    for batch in batches:
        for tick in state.process(batch):
            for sym, t, feats in zip(tick.symbol, tick.open_time, tick.features, strict=True):
                rows[(tick.timeframe, sym, int(t))] = feats
    return rows


def test_streaming_ticks_equal_batch_features_on_every_timeframe():
    batches = _minutes(15 * 60)
    streamed = _collect(ShardState(TIMEFRAMES), batches)
    candles = pa.Table.from_batches(batches)
    for tf in TIMEFRAMES:
        tf_candles = candles if tf == "1m" else resample(candles, tf)
        for sym in SYMBOLS:
            frame = tf_candles.filter(pa.compute.equal(tf_candles["symbol"], sym)).to_pandas()
            batch = compute_features(frame)
            warm = warm_rows(batch.to_numpy())
            assert warm.sum() > 0, (tf, sym)
            for t, expected in zip(frame["open_time"][warm], batch.to_numpy()[warm], strict=True):
                got = streamed.pop((tf, sym, int(t)))
                np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12, equal_nan=True)
    assert streamed == {}  # nothing streamed that the batch path did not also produce


def test_restore_from_snapshot_continues_bit_for_bit_and_skips_replayed_candles():
    batches = _minutes(400, seed=2)
    uninterrupted = _collect(ShardState(TIMEFRAMES), batches)
    first = ShardState(TIMEFRAMES)
    before = _collect(first, batches[:250])
    restored = ShardState.from_snapshot(first.snapshot())
    after = _collect(restored, batches[200:])  # overlaps what the snapshot already holds
    assert set(before) | set(after) == set(uninterrupted)
    assert not set(before) & set(after)
    for key, value in {**before, **after}.items():
        np.testing.assert_array_equal(value, uninterrupted[key])


def test_symbols_of_one_minute_split_across_batches():
    batches = _minutes(60, seed=3)
    whole = _collect(ShardState(("1m", "5m")), batches)
    split = []
    for b in batches:
        split += [b.slice(0, 1), b.slice(1, 2)]
    assert _collect(ShardState(("1m", "5m")), split).keys() == whole.keys()


def test_reset_makes_a_symbol_warm_up_again():
    batches = _minutes(100, seed=4)
    state = ShardState(("1m",))
    _collect(state, batches[:80])
    state.reset("x", ["B/USDT"])
    (tick,) = state.process(batches[80])
    assert sorted(tick.symbol) == ["A/USDT", "C/USDT"] and tick.cold == 1
    assert tick.features.shape[1] == len(FEATURE_NAMES)


def test_unknown_snapshot_version_is_refused():
    with pytest.raises(ValueError, match="version"):
        ShardState.from_snapshot({"version": 99})


def test_a_multi_minute_batch_merged_per_timeframe_equals_minute_by_minute():
    minutes = _minutes(200)
    expected = _collect(ShardState(TIMEFRAMES), minutes)
    state, rows = ShardState(TIMEFRAMES), {}
    for start in range(0, len(minutes), 25):
        batch = pa.Table.from_batches(minutes[start : start + 25])
        merged = merge_by_timeframe(state.process(batch))
        assert len({t.timeframe for t in merged}) == len(merged)  # one tick per timeframe
        for tick in merged:
            assert np.all(np.diff(tick.open_time) >= 0)  # rows stay in time order
            for sym, t, feats in zip(tick.symbol, tick.open_time, tick.features, strict=True):
                rows[(tick.timeframe, sym, int(t))] = feats
    assert rows.keys() == expected.keys() and len(rows) > 400
    assert all(np.array_equal(rows[k], expected[k], equal_nan=True) for k in rows)
