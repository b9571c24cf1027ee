"""Incremental multi-timeframe aggregation: parity with batch resample, gaps, snapshots."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from orchestrator.market.aggregate import (
    DEFAULT_TIMEFRAMES,
    CompletedCandles,
    TimeframeAggregator,
    concat_completed,
    iter_minutes,
)
from orchestrator.market.archives import read_candles
from orchestrator.market.resample import resample
from orchestrator.market.schema import CANDLE_SCHEMA
from orchestrator.market.timeframes import MINUTE_MS, timeframe_ms
from tests.unit.market.test_resample import assert_same_candles, hand_candles, random_candles

DAY0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC


def slot_map(candles: pa.Table) -> tuple[list[str], dict[str, int]]:
    symbols = pc.unique(candles["symbol"]).to_pylist()
    return symbols, {s: i for i, s in enumerate(symbols)}


def stream(aggregator, candles: pa.Table, *, reset_after_gaps: bool = False):
    """Feed ``candles`` minute by minute; returns the completed candles per timeframe."""
    symbols, slots = slot_map(candles)
    exchange = candles["exchange"][0].as_py()
    completed = {tf: [] for tf in aggregator.timeframes}
    last_seen = np.full(len(symbols), -1, dtype=np.int64)
    for minute in iter_minutes(candles, slots, len(symbols)):
        if reset_after_gaps:
            gapped = minute.present & (last_seen >= 0) & (minute.open_time - last_seen > MINUTE_MS)
            aggregator.reset_symbols(np.flatnonzero(gapped))
            last_seen[minute.present] = minute.open_time
        for timeframe, done in aggregator.update(
            minute.open_time, minute.columns, minute.present
        ).items():
            if len(done):
                completed[timeframe].append(done)
    return {
        tf: concat_completed(parts, tf).to_candles(exchange, symbols)
        for tf, parts in completed.items()
    }


def assert_parity(candles: pa.Table, streamed: dict[str, pa.Table]) -> None:
    for timeframe, table in streamed.items():
        expected = resample(candles, timeframe)
        assert expected.num_rows > 0, timeframe
        assert_same_candles(table, expected)


# --- parity with the batch twin -----------------------------------------------------------


@pytest.mark.realdata
def test_streaming_real_spot_minutes_equals_batch_resample(shared_data):
    paths = sorted((shared_data / "binance-spot-1m").glob("*-1m.parquet"))
    candles = pa.concat_tables(read_candles(p, "binance") for p in paths)
    aggregator = TimeframeAggregator(3)
    assert_parity(candles, stream(aggregator, candles))
    assert aggregator.status()["rejected_candles"] == 0


@pytest.mark.realdata
def test_streaming_real_futures_minutes_keeps_optional_columns(shared_data):
    paths = sorted((shared_data / "binance-usdm-1m").glob("*.zip"))[:2]
    candles = pa.concat_tables(read_candles(p, "binanceusdm") for p in paths)
    ten_days = pc.less(candles["open_time"], candles["open_time"][0].as_py() + 10 * 86_400_000)
    candles = candles.filter(ten_days)
    streamed = stream(TimeframeAggregator(2, ("15m", "4h", "1d")), candles)
    assert streamed["1d"]["trade_count"].null_count == 0
    assert_parity(candles, streamed)


def test_streaming_random_minutes_with_gaps_equals_batch_resample():
    rng = np.random.default_rng(21)
    candles = random_candles(rng, 8, 4 * 1440 + 333, missing_fraction=0.0001)
    nulls = rng.random(candles.num_rows) < 0.001  # a few unknown trade counts
    counts = pa.array(np.where(nulls, 0, candles["trade_count"].to_numpy()), mask=nulls)
    candles = candles.set_column(11, CANDLE_SCHEMA.field("trade_count"), counts)
    aggregator = TimeframeAggregator(8)
    streamed = stream(aggregator, candles)
    assert_parity(candles, streamed)
    assert streamed["5m"]["trade_count"].null_count > 0
    assert aggregator.status()["dropped_buckets"]["5m"] > 8  # gaps, not only the first buckets


def test_resetting_slots_after_each_gap_keeps_parity():
    rng = np.random.default_rng(4)
    candles = random_candles(rng, 5, 2 * 1440, missing_fraction=0.001, with_optional=False)
    aggregator = TimeframeAggregator(5, ("5m", "1h", "1d"))
    assert_parity(candles, stream(aggregator, candles, reset_after_gaps=True))


# --- hand-made behaviour --------------------------------------------------------------------


def feed(aggregator, candles: pa.Table, n_slots: int = 1):
    return [
        aggregator.update(m.open_time, m.columns, m.present)
        for m in iter_minutes(candles, {"A/USDT": 0, "B/USDT": 1}, n_slots)
    ]


def test_bucket_is_emitted_with_its_last_minute():
    aggregator = TimeframeAggregator(1, ("5m",))
    outputs = feed(aggregator, hand_candles("A/USDT", list(range(10))))
    emitted_at = [i for i, out in enumerate(outputs) if len(out["5m"])]
    assert emitted_at == [4, 9]
    assert outputs[4]["5m"].open_time.tolist() == [DAY0]
    assert outputs[9]["5m"].open_time.tolist() == [DAY0 + 5 * MINUTE_MS]


def test_missing_minute_drops_the_bucket_in_every_timeframe_holding_it():
    minutes = [m for m in range(60) if m != 7]
    aggregator = TimeframeAggregator(1, ("5m", "15m", "1h"))
    outputs = feed(aggregator, hand_candles("A/USDT", minutes))
    emitted = {
        tf: [t for out in outputs for t in out[tf].open_time.tolist()] for tf in ("5m", "15m")
    }
    assert DAY0 + 5 * MINUTE_MS not in emitted["5m"] and len(emitted["5m"]) == 11
    assert emitted["15m"] == [DAY0 + 15 * MINUTE_MS * k for k in (1, 2, 3)]
    assert aggregator.status()["dropped_buckets"] == {"5m": 1, "15m": 1, "1h": 1}


def test_bucket_missing_its_last_minute_is_counted_when_the_next_starts():
    aggregator = TimeframeAggregator(1, ("5m",))
    feed(aggregator, hand_candles("A/USDT", [0, 1, 2, 3, 5, 6]))
    assert aggregator.status()["dropped_buckets"]["5m"] == 1


def test_stale_repeated_and_misaligned_candles_are_rejected_and_counted():
    aggregator = TimeframeAggregator(1, ("5m",))
    candles = hand_candles("A/USDT", [0, 1, 2])
    feed(aggregator, candles)
    columns = {name: np.array([1.0]) for name in ("open", "high", "low", "close", "volume")}
    for open_time in (DAY0 + MINUTE_MS, DAY0 + 2 * MINUTE_MS, DAY0 + 3 * MINUTE_MS + 1):
        assert len(aggregator.update(open_time, columns)["5m"]) == 0
    assert aggregator.status()["rejected_candles"] == 3
    outputs = feed(aggregator, hand_candles("A/USDT", [3, 4]))
    assert len(outputs[-1]["5m"]) == 1  # the rejected candles did not spoil the bucket


def test_reset_lets_a_slot_restart_from_an_earlier_minute():
    aggregator = TimeframeAggregator(2, ("5m",))
    feed(
        aggregator,
        pa.concat_tables([hand_candles("A/USDT", [0, 1, 2]), hand_candles("B/USDT", [0, 1, 2])]),
        n_slots=2,
    )
    aggregator.reset_symbols([0])
    assert aggregator.status()["dropped_buckets"]["5m"] == 1  # A's partial bucket
    outputs = feed(
        aggregator,
        pa.concat_tables([hand_candles("A/USDT", [0, 1, 2, 3, 4]), hand_candles("B/USDT", [3, 4])]),
        n_slots=2,
    )
    assert outputs[-1]["5m"].slots.tolist() == [0, 1]
    assert aggregator.status()["rejected_candles"] == 0


def test_per_slot_open_times_are_accepted():
    aggregator = TimeframeAggregator(2, ("5m",))
    columns = {name: np.array([1.0, 2.0]) for name in ("open", "high", "low", "close", "volume")}
    for minute in range(5):
        out = aggregator.update(
            np.array([DAY0, DAY0 + 5 * MINUTE_MS]) + minute * MINUTE_MS, columns
        )
    assert out["5m"].open_time.tolist() == [DAY0, DAY0 + 5 * MINUTE_MS]
    assert out["5m"].values["volume"].tolist() == [5.0, 10.0]


def test_to_candles_builds_schema_rows():
    aggregator = TimeframeAggregator(2, ("5m",))
    both = pa.concat_tables(
        [hand_candles("A/USDT", list(range(5))), hand_candles("B/USDT", list(range(5)))]
    )
    done = feed(aggregator, both, n_slots=2)[-1]["5m"]
    assert isinstance(done, CompletedCandles)
    table = done.to_candles(["ex0", "ex1"], ["A/USDT", "B/USDT"])
    assert table.schema.equals(CANDLE_SCHEMA)
    assert table["exchange"].to_pylist() == ["ex0", "ex1"]
    assert table["close_time"].to_pylist() == [DAY0 + timeframe_ms("5m") - 1] * 2


# --- snapshots ------------------------------------------------------------------------------


def test_snapshot_restores_mid_bucket_and_continues_identically():
    rng = np.random.default_rng(8)
    candles = random_candles(rng, 4, 1440 + 77, missing_fraction=0.001)
    cut = candles["open_time"][0].as_py() + 700 * MINUTE_MS  # mid-bucket for every timeframe
    early = candles.filter(pc.less(candles["open_time"], cut))
    late = candles.filter(pc.greater_equal(candles["open_time"], cut))
    straight = TimeframeAggregator(4)
    expected = stream(straight, early), stream(straight, late)
    first = TimeframeAggregator(4)
    stream(first, early)
    snapshot = first.snapshot()
    restored = TimeframeAggregator.from_snapshot(pickle.loads(pickle.dumps(snapshot)))
    stream(first, late)  # the original keeps going: the snapshot must not change with it
    resumed = stream(TimeframeAggregator.from_snapshot(snapshot), late)
    for timeframe in DEFAULT_TIMEFRAMES:
        assert_same_candles(resumed[timeframe], expected[1][timeframe], rtol=0)
    assert stream(restored, late)["1h"].equals(resumed["1h"])
    assert restored.status() == first.status()


def test_snapshot_of_another_shape_is_refused():
    snapshot = TimeframeAggregator(3).snapshot()
    snapshot["filled"] = snapshot["filled"][:, :2]
    with pytest.raises(ValueError, match="filled"):
        TimeframeAggregator.from_snapshot(snapshot)
    with pytest.raises(ValueError, match="version"):
        TimeframeAggregator.from_snapshot({**TimeframeAggregator(1).snapshot(), "version": 99})


@pytest.mark.parametrize("timeframes", [("1m",), ("7m",)])
def test_bad_timeframes_are_refused(timeframes):
    with pytest.raises(ValueError):
        TimeframeAggregator(1, timeframes)


def test_update_without_a_required_column_is_refused():
    with pytest.raises(ValueError, match="volume"):
        TimeframeAggregator(1).update(
            DAY0, {k: np.ones(1) for k in ("open", "high", "low", "close")}
        )


def test_resize_keeps_open_buckets_and_adds_empty_slots():
    from orchestrator.market.aggregate import TimeframeAggregator

    agg = TimeframeAggregator(1, ("5m",))
    ones = {c: np.ones(1) for c in ("open", "high", "low", "close", "volume")}
    for minute in range(3):
        agg.update(minute * 60_000, ones)
    agg.resize(2)
    twos = {c: np.full(2, 2.0) for c in ("open", "high", "low", "close", "volume")}
    agg.update(3 * 60_000, twos, present=np.array([True, False]))
    done = agg.update(4 * 60_000, twos)
    assert list(done["5m"].slots) == [0]  # slot 1 joined mid-bucket: its bucket is incomplete
    assert done["5m"].values["volume"][0] == 3 * 1.0 + 2 * 2.0
    assert agg.snapshot()["n_slots"] == 2
