"""ShardState: the streaming feature path must equal the batch path, through restores."""

import pickle

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from orchestrator.features import FEATURE_NAMES, compute_features, warm_rows
from orchestrator.features.specs import MAX_WARMUP
from orchestrator.market.resample import resample
from orchestrator.market.schema import candles_from_arrays
from orchestrator.market.synthetic import SyntheticMarket
from orchestrator.stream.shard import WARM_ONE_MINUTE, ShardState, merge_by_timeframe

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


def _only(batches, symbols: list[str]) -> list[pa.RecordBatch]:
    keep = pa.array(symbols)
    return [b.filter(pc.is_in(b.column("symbol"), value_set=keep)) for b in batches]


def _of(rows: dict, symbols: list[str]) -> dict:
    return {key: value for key, value in rows.items() if key[1] in symbols}


def _identical(a, b) -> bool:
    """Equal to the bit: dicts key by key, arrays by dtype, shape and bytes (of strings)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_identical(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) and a.dtype == object:
        return b.dtype == object and a.tolist() == b.tolist()
    if isinstance(a, np.ndarray):
        return (a.dtype, a.shape, a.tobytes()) == (b.dtype, b.shape, b.tobytes())
    return a == b


def _state_without_counters(state: ShardState) -> dict:
    return {k: v for k, v in state.snapshot().items() if k != "candles_in"}


def test_a_dropped_symbol_leaves_the_others_as_if_it_had_never_been_there():
    minutes, kept, gone = _minutes(600, seed=5), SYMBOLS[:2], SYMBOLS[2]
    state, twin = ShardState(("1m", "5m"), chart_candles=50), ShardState(("1m", "5m"), 50)
    rows, twin_rows = _collect(state, minutes[:200]), _collect(twin, _only(minutes[:200], kept))
    assert state.drop("x", [gone]) == 1
    assert state.keys == twin.keys == [f"x:{s}" for s in kept]
    assert state.candles("x", gone, "1m") is None
    rows |= _collect(state, _only(minutes[200:400], kept))
    twin_rows |= _collect(twin, _only(minutes[200:400], kept))
    assert _identical(_of(rows, kept), twin_rows)
    assert {tf for tf, _, _ in twin_rows} == {"1m", "5m"}  # both timeframes warm: compared
    assert _identical(_state_without_counters(state), _state_without_counters(twin))
    for symbol in kept:
        for timeframe in ("1m", "5m"):
            chart = state.candles("x", symbol, timeframe)
            assert chart["open_time"].size
            assert _identical(chart, twin.candles("x", symbol, timeframe))

    # The dropped symbol trades again: a new slot, as cold as in a shard that never saw it.
    fresh = ShardState(("1m", "5m"), chart_candles=50)
    back = _collect(state, minutes[400:])
    assert _identical(_of(back, kept), _collect(twin, _only(minutes[400:], kept)))
    assert _identical(_of(back, [gone]), _collect(fresh, _only(minutes[400:], [gone])))
    first_warm = min(t for tf, s, t in back if (tf, s) == ("1m", gone))
    assert first_warm == minutes[400 + MAX_WARMUP].column("open_time")[0].as_py()
    assert state.keys == [*twin.keys, f"x:{gone}"]
    assert state.candles("x", gone, "1m")["open_time"].size == 50


def test_a_snapshot_taken_after_a_drop_continues_bit_for_bit():
    minutes = _minutes(600, seed=6)
    state = ShardState(TIMEFRAMES)
    _collect(state, minutes[:300])
    state.drop("x", [SYMBOLS[0]])  # the first slot: every other one moves
    restored = ShardState.from_snapshot(pickle.loads(pickle.dumps(state.snapshot())))
    assert restored.keys == [f"x:{s}" for s in SYMBOLS[1:]]
    after = _only(minutes[300:], SYMBOLS[1:])
    rows = _collect(restored, after)
    assert {tf for tf, _, _ in rows} == set(TIMEFRAMES)
    assert _identical(rows, _collect(state, after))
    assert _identical(restored.snapshot(), state.snapshot())


def test_dropping_unknown_symbols_changes_nothing_and_dropping_all_leaves_an_empty_shard():
    minutes = _minutes(120, seed=7)
    state = ShardState(("1m", "5m"), chart_candles=10)
    _collect(state, minutes[:60])
    before = state.snapshot()
    assert state.drop("x", ["NOPE/USDT"]) == state.drop("y", SYMBOLS) == state.drop("x", []) == 0
    assert _identical(state.snapshot(), before)

    assert state.drop("x", [*SYMBOLS, SYMBOLS[0], "NOPE/USDT"]) == 3
    empty = state.snapshot()
    assert empty["keys"] == [] and len(empty["last_time"]) == 0
    assert all(len(e["keys"]) == 0 for e in empty["engines"].values())
    assert empty["aggregator"]["n_slots"] == 0
    (tick,) = state.process(minutes[60])
    assert (len(tick.features), tick.cold) == (0, 3)  # every symbol registered again, cold
    fresh = ShardState(("1m", "5m"), chart_candles=10)
    _collect(fresh, minutes[60:61])
    rows = _collect(state, minutes[61:])
    assert rows and _identical(rows, _collect(fresh, minutes[61:]))


def _partial_candle(minutes: list[pa.RecordBatch], timeframe: str, start: int) -> pa.RecordBatch:
    """The in-progress ``timeframe`` candle of ``minutes`` (one period's first minutes)."""
    table = pa.Table.from_batches(minutes)
    ohlcv = {}
    for name, fold in (("open", "first"), ("high", "max"), ("low", "min"), ("close", "last")):
        ohlcv[name] = np.array(
            [
                getattr(pc, fold)(table.filter(pc.equal(table["symbol"], s))[name]).as_py()
                for s in SYMBOLS
            ]
        )
    ohlcv["volume"] = np.array(
        [pc.sum(table.filter(pc.equal(table["symbol"], s))["volume"]).as_py() for s in SYMBOLS]
    )
    return candles_from_arrays("x", SYMBOLS, timeframe, [start] * len(SYMBOLS), ohlcv)


def test_a_timeframe_warmed_from_its_own_candles_continues_as_if_streamed_from_1m():
    """Closed 15m candles (``warm_timeframe``) and the open period's partial candle
    (``open_period``) leave the 15m features exactly where 1m streaming would have."""
    batches = _minutes(15 * 60, seed=3)
    streamed = _collect(ShardState(("1m", "15m")), batches)
    closed, partial = 45 * 15, 7  # 45 closed periods, then 7 minutes into the next one
    warmed = ShardState(("1m", "15m"))
    warmed.warm_timeframe("15m", resample(pa.Table.from_batches(batches[:closed]), "15m"))
    start = batches[closed].column("open_time")[0].as_py()
    through = batches[closed + partial - 1].column("open_time")[0].as_py()
    warmed.open_period(
        "15m", _partial_candle(batches[closed : closed + partial], "15m", start), through
    )
    rest = _collect(warmed, batches[closed + partial :])
    later = {k: v for k, v in streamed.items() if k[0] == "15m" and k[2] >= start}
    assert len(later) == 15 * len(SYMBOLS)  # every close after the warm-up, the open one first
    assert {k for k in rest if k[0] == "15m"} == set(later)
    for key, expected in later.items():
        np.testing.assert_allclose(rest[key], expected, rtol=1e-12, atol=1e-12, equal_nan=True)
    with pytest.raises(ValueError, match="not a higher timeframe"):
        warmed.warm_timeframe("1m", batches[0])


def test_a_warm_up_leaves_every_timeframe_where_processing_the_history_would():
    """``warm_up`` folds only a new series' newest WARM_ONE_MINUTE 1m candles into its 1m
    features: the live ticks after it equal those after ``process`` of the same history (1m
    within float rounding, the higher timeframes exactly); a series the 1m features already
    hold gets every candle, gap-free."""
    history, live = _minutes(2 * WARM_ONE_MINUTE + 60, seed=4), _minutes(120, seed=5)
    live = [_shifted(b, len(history)) for b in live]
    full = ShardState(TIMEFRAMES, chart_candles=WARM_ONE_MINUTE + 100)
    full.process(pa.Table.from_batches(history))
    fast = ShardState(TIMEFRAMES, chart_candles=WARM_ONE_MINUTE + 100)
    assert fast.warm_up(pa.Table.from_batches(history)) == len(history) * len(SYMBOLS)
    assert fast.candles_in == full.candles_in
    assert fast.engines["1m"].candles_seen([0, 1, 2]).tolist() == [WARM_ONE_MINUTE] * 3
    expected, got = _collect(full, live), _collect(fast, live)
    assert got.keys() == expected.keys() and {k[0] for k in got} == set(TIMEFRAMES)
    for key, value in expected.items():
        if key[0] == "1m":
            np.testing.assert_allclose(got[key], value, rtol=1e-12, atol=1e-15, equal_nan=True)
        else:
            np.testing.assert_array_equal(got[key], value)
    # Charts hold the skipped 1m candles too.
    chart, full_chart = (s.candles("x", "A/USDT", "1m", 10_000) for s in (fast, full))
    assert chart is not None and full_chart is not None and chart.keys() == full_chart.keys()
    assert len(chart["open_time"]) == WARM_ONE_MINUTE + 100
    for column, values in full_chart.items():
        np.testing.assert_array_equal(chart[column], values)
    # A series already held is folded whole: the 1m features see every candle of the batch.
    again = _minutes(WARM_ONE_MINUTE + 10, seed=6)
    fast.warm_up(pa.Table.from_batches([_shifted(b, len(history) + 120) for b in again]))
    assert fast.engines["1m"].candles_seen([0]).tolist() == [2 * WARM_ONE_MINUTE + 130]


def _shifted(batch: pa.RecordBatch, minutes: int) -> pa.RecordBatch:
    """``batch`` moved ``minutes`` later (the synthetic market starts every seed at one time)."""
    times = pc.add(batch.column("open_time"), minutes * 60_000)
    close_times = pc.add(batch.column("close_time"), minutes * 60_000)
    columns = dict(zip(batch.schema.names, batch.columns, strict=True))
    columns.update(open_time=times, close_time=close_times)
    return pa.RecordBatch.from_arrays(list(columns.values()), schema=batch.schema)
