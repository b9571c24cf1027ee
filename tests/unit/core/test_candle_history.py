"""Recent candles for charts: the ring, and a shard's history equal to its input candles
(1m as given, higher timeframes as the batch resampler builds them)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from orchestrator.market.resample import resample
from orchestrator.stream.history import COLUMNS, CandleHistory
from orchestrator.stream.keyindex import KeyIndex
from orchestrator.stream.shard import ShardState
from tests.unit.core.test_shard_state import SYMBOLS, _minutes

MINUTE = 60_000


def _candles(times) -> dict:
    times = np.asarray(times, dtype=np.float64)
    return {c: times / MINUTE + i for i, c in enumerate(COLUMNS)}


def test_the_ring_keeps_the_newest_candles_oldest_first():
    ring = CandleHistory("1m", size=4, n_slots=2)
    for t in range(10):
        ring.write([0], [t * MINUTE], _candles([t * MINUTE]))
    got = ring.read(0)
    assert got["open_time"].tolist() == [6 * MINUTE, 7 * MINUTE, 8 * MINUTE, 9 * MINUTE]
    assert got["close"].tolist() == [6 + 3, 7 + 3, 8 + 3, 9 + 3]
    assert ring.read(0, limit=2)["open_time"].tolist() == [8 * MINUTE, 9 * MINUTE]
    assert ring.read(1)["open_time"].tolist() == []  # a slot with no candle yet


def test_a_gap_longer_than_the_ring_leaves_no_stale_candle():
    ring = CandleHistory("1m", size=4, n_slots=1)
    for t in (0, 1, 2, 3, 9):  # 9 lands in column 1, beside 0, 2 and 3 from the last lap
        ring.write([0], [t * MINUTE], _candles([t * MINUTE]))
    assert ring.read(0)["open_time"].tolist() == [9 * MINUTE]


def test_slots_grow_and_a_forgotten_slot_starts_again():
    ring = CandleHistory("5m", size=3, n_slots=1)
    ring.resize(3)
    ring.write([2, 0], [5 * MINUTE, 5 * MINUTE], _candles([5 * MINUTE, 5 * MINUTE]))
    ring.forget([2])
    assert ring.read(2)["open_time"].size == 0 and ring.read(0)["open_time"].size == 1
    with pytest.raises(ValueError):
        CandleHistory("1m", size=0)


def test_a_key_index_finds_without_inserting():
    index = KeyIndex(":")
    index.slots(["x", "y"], ["A", "B"])
    assert (index.find("y:B"), index.find("z:C")) == (1, None)
    assert len(index) == 2


def test_a_shards_history_equals_its_input_candles_on_every_timeframe():
    batches = _minutes(130)
    state = ShardState(("1m", "5m", "15m"), chart_candles=20)
    for batch in batches:
        state.process(batch)
    candles = pa.Table.from_batches(batches)
    for timeframe in ("1m", "5m", "15m"):
        table = candles if timeframe == "1m" else resample(candles, timeframe)
        for symbol in SYMBOLS:
            want = table.filter(pc.equal(table["symbol"], symbol)).to_pydict()
            got = state.candles("x", symbol, timeframe, limit=5)
            n = len(got["open_time"])
            assert n == 5  # 130 minutes close eight 15m candles
            # resample also builds the still-open last candle; the shard holds closed ones
            closed = [t for t in want["open_time"] if t <= got["open_time"][-1]]
            assert len(closed) >= len(want["open_time"]) - 1
            assert got["open_time"].tolist() == closed[-n:], (timeframe, symbol)
            for column in COLUMNS:
                expected = [want[column][want["open_time"].index(t)] for t in closed[-n:]]
                np.testing.assert_allclose(got[column], expected, rtol=1e-12)
    assert state.candles("x", "NOPE/USDT", "1m") is None
    assert state.candles("x", SYMBOLS[0], "1h") is None


def test_history_survives_a_restore_empty_and_refills():
    batches = _minutes(30)
    state = ShardState(("1m",), chart_candles=10)
    for batch in batches[:20]:
        state.process(batch)
    restored = ShardState.from_snapshot(state.snapshot(), chart_candles=10)
    assert restored.candles("x", SYMBOLS[0], "1m")["open_time"].size == 0  # not checkpointed
    for batch in batches[20:]:
        restored.process(batch)
    assert restored.candles("x", SYMBOLS[0], "1m")["open_time"].size == 10
    assert ShardState(("1m",)).candles("x", SYMBOLS[0], "1m") is None  # off by default
