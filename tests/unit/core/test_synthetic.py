import asyncio

import numpy as np
import pyarrow as pa
import pytest

from orchestrator.config import SyntheticFeedConfig
from orchestrator.feeds.synthetic import SyntheticSource
from orchestrator.market.schema import CANDLE_SCHEMA
from orchestrator.market.synthetic import SyntheticMarket
from orchestrator.market.timeframes import MINUTE_MS


def _closes(market: SyntheticMarket, minutes: int) -> np.ndarray:
    return np.array([market.next_minute().close for _ in range(minutes)])


def test_same_seed_same_market_and_other_seed_differs():
    a, b, c = SyntheticMarket(4, seed=1), SyntheticMarket(4, seed=1), SyntheticMarket(4, seed=2)
    first = _closes(a, 50)
    np.testing.assert_array_equal(first, _closes(b, 50))
    assert not np.allclose(first, _closes(c, 50))


def test_candles_are_well_formed_and_minutes_advance():
    market = SyntheticMarket(20, seed=3)
    previous_close = None
    for i in range(500):
        m = market.next_minute()
        assert m.open_time == market.open_time - MINUTE_MS
        assert np.all(m.high >= np.maximum(m.open, m.close))
        assert np.all(m.low <= np.minimum(m.open, m.close))
        assert np.all(m.low > 0) and np.all(m.volume > 0)
        if previous_close is not None:
            np.testing.assert_array_equal(m.open, previous_close)
        previous_close = m.close
        assert i < 500


def test_volatility_regimes_switch():
    market = SyntheticMarket(50, seed=5)
    seen_turbulent = np.zeros(50, dtype=bool)
    for _ in range(2000):
        market.next_minute()
        seen_turbulent |= market.turbulent
    assert 0 < seen_turbulent.sum() < 50 or seen_turbulent.all()
    assert seen_turbulent.any()


def test_snapshot_restore_continues_identically():
    market = SyntheticMarket(5, seed=9)
    _closes(market, 100)
    restored = SyntheticMarket.from_snapshot(market.snapshot())
    np.testing.assert_array_equal(_closes(market, 100), _closes(restored, 100))


def test_unaligned_start_is_rejected():
    with pytest.raises(ValueError, match="aligned"):
        SyntheticMarket(1, start_ms=1)


def test_source_emits_schema_batches_and_stops_at_max_minutes():
    source = SyntheticSource(
        SyntheticFeedConfig(speed=0, max_minutes=3, symbols=("A/USDT", "B/USDT"))
    )

    async def drain():
        out = []
        while (batch := await source.next_batch()) is not None:
            out.append(batch)
        return out

    batches = asyncio.run(drain())
    assert len(batches) == 3
    assert [b.column("symbol").to_pylist() for b in batches] == [["A/USDT", "B/USDT"]] * 3
    times = [b.column("open_time")[0].as_py() for b in batches]
    assert np.all(np.diff(times) == MINUTE_MS)
    assert source.status()["minutes_emitted"] == 3


def test_a_multi_minute_batch_holds_the_same_candles_as_one_minute_batches():
    def drain(batch_minutes: int) -> pa.Table:
        source = SyntheticSource(
            SyntheticFeedConfig(speed=0, max_minutes=7, n_symbols=5, batch_minutes=batch_minutes)
        )

        async def run():
            out = []
            while (batch := await source.next_batch()) is not None:
                out.append(batch)
            return out

        return pa.Table.from_batches(asyncio.run(run()))

    one_by_one, in_threes = drain(1), drain(3)
    assert one_by_one.schema.equals(CANDLE_SCHEMA)
    assert in_threes.num_rows == one_by_one.num_rows == 35
    assert in_threes.equals(one_by_one)  # minute after minute, every symbol in each
