"""The closed-candle gate: finality, revisions, duplicates, gaps, bounds, snapshots."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.market.gate import CandleGate, Gap
from orchestrator.market.schema import CANDLE_SCHEMA, candles_from_arrays, candles_from_frame

MINUTE = 60_000
GRACE = 5_000
T0 = 1_700_000_040_000 - 1_700_000_040_000 % MINUTE
FAR_FUTURE = T0 + 10**12


def minute(i: int) -> int:
    return T0 + i * MINUTE


def clean_series(symbols=("BTC/USDT",), n: int = 30, seed: int = 0) -> pa.Table:
    """A gap-free series per symbol, sorted by (symbol, open_time)."""
    rng = np.random.default_rng(seed)
    parts = []
    for symbol in symbols:
        close = 100 + np.cumsum(rng.normal(0, 0.5, n))
        open_ = np.concatenate([[close[0]], close[:-1]])
        ohlcv = {
            "open": open_,
            "high": np.maximum(open_, close) + rng.uniform(0.01, 0.2, n),
            "low": np.minimum(open_, close) - rng.uniform(0.01, 0.2, n),
            "close": close,
            "volume": rng.uniform(0, 10, n),
        }
        times = np.array([minute(i) for i in range(n)], dtype=np.int64)
        parts.append(candles_from_arrays("binance", symbol, "1m", times, ohlcv))
    return pa.Table.from_batches(parts)


def candle(symbol: str, i: int, price: float = 100.0, volume: float = 1.0) -> pa.RecordBatch:
    ohlcv = {"open": [price], "high": [price + 1], "low": [price - 1], "close": [price]}
    ohlcv = {k: np.array(v) for k, v in ohlcv.items()} | {"volume": np.array([volume])}
    return candles_from_arrays("binance", symbol, "1m", np.array([minute(i)]), ohlcv)


def candles(symbol: str, indices) -> pa.Table:
    return pa.Table.from_batches([candle(symbol, i, 100.0 + i) for i in indices])


def times(batch) -> list[int]:
    return [(t - T0) // MINUTE for t in batch.column("open_time").to_pylist()]


def rows_of(table: pa.Table, symbol: str, start_ms: int, end_ms: int) -> pa.Table:
    t = table.column("open_time")
    mask = pc.and_(pc.equal(table.column("symbol"), symbol), pc.greater_equal(t, start_ms))
    return table.filter(pc.and_(mask, pc.less(t, end_ms)))


class Archive:
    """What ``fetch_range`` would return: the true candles of one symbol in [start, end)."""

    def __init__(self, truth: pa.Table) -> None:
        self.by_symbol = {}
        for symbol in pc.unique(truth.column("symbol")).to_pylist():
            rows = truth.filter(pc.equal(truth.column("symbol"), symbol)).sort_by("open_time")
            self.by_symbol[symbol] = (rows.column("open_time").to_numpy(), rows)

    def fetch(self, gap: Gap) -> pa.Table:
        times, rows = self.by_symbol[gap.symbol]
        start, end = np.searchsorted(times, [gap.start_ms, gap.end_ms])
        return rows.slice(start, end - start)


class Driver:
    """The feed actor's loop: offer, then resolve every gap (repairing from ``truth``)."""

    def __init__(self, gate: CandleGate, truth: pa.Table | None = None) -> None:
        self.gate = gate
        self.archive = None if truth is None else Archive(truth)
        self.out: list[pa.RecordBatch] = []
        self.holes: list[Gap] = []

    def offer(self, batch, now_ms: int) -> None:
        self.out.append(self.gate.offer(batch, now_ms))
        self.resolve(now_ms)

    def resolve(self, now_ms: int) -> None:
        while gaps := self.gate.take_gaps():
            for gap in gaps:
                repaired = None if self.archive is None else self.archive.fetch(gap)
                resolution = self.gate.resolve_gap(gap, repaired, now_ms)
                self.out.append(resolution.candles)
                self.holes.extend(resolution.unrepairable)

    def finish(self) -> pa.Table:
        self.out.append(self.gate.flush(FAR_FUTURE))
        self.resolve(FAR_FUTURE)
        return pa.Table.from_batches(self.out, schema=CANDLE_SCHEMA)


def assert_exactly_once_in_order(out: pa.Table) -> None:
    frame = out.select(["symbol", "open_time"]).to_pandas()
    assert not frame.duplicated().any()
    for _, group in frame.groupby("symbol"):
        assert group["open_time"].is_monotonic_increasing


def by_symbol_time(table: pa.Table) -> pa.Table:
    return table.sort_by([("symbol", "ascending"), ("open_time", "ascending")])


# --- finality ------------------------------------------------------------------------------


def test_first_candle_waits_for_period_end_plus_grace():
    gate = CandleGate("binance", grace_ms=GRACE)
    assert gate.offer(candle("A", 0), minute(0) + 10).num_rows == 0
    assert gate.flush(minute(1) + GRACE - 1).num_rows == 0
    out = gate.flush(minute(1) + GRACE)
    assert times(out) == [0] and out.schema.equals(CANDLE_SCHEMA)
    assert gate.flush(FAR_FUTURE).num_rows == 0
    assert gate.counters["emitted"] == 1 and gate.last_emitted("A") == minute(0)


def test_newer_candle_finalizes_the_previous_one():
    gate = CandleGate("binance")
    gate.offer(candle("A", 0), minute(0) + 1)
    out = gate.offer(candle("A", 1), minute(1) + 1)
    assert times(out) == [0]
    assert gate.counters["pending"] == 1


def test_revision_replaces_provisional_candle_last_write_wins():
    gate = CandleGate("binance")
    gate.offer(candle("A", 0, price=100.0), minute(0) + 1)
    gate.offer(candle("A", 0, price=101.0), minute(0) + 2)
    gate.offer(candle("A", 0, price=101.0), minute(0) + 3)  # same values again
    out = gate.offer(pa.Table.from_batches([candle("A", 0, 102.5), candle("A", 1)]), minute(1))
    assert out.column("close").to_pylist() == [102.5]
    assert gate.counters["revisions"] == 2 and gate.counters["duplicates"] == 1


def test_late_duplicate_of_emitted_candle_is_dropped_and_counted():
    gate = CandleGate("binance")
    gate.offer(candles("A", [0, 1, 2]), minute(2) + 1)
    out = gate.offer(pa.Table.from_batches([candle("A", 0, 555.0), candle("A", 1)]), minute(3))
    assert out.num_rows == 0
    assert gate.counters["duplicates"] == 2 and gate.counters["out_of_order"] == 0
    assert gate.counters["emitted"] == 2


def test_candle_older_than_first_emitted_is_out_of_order_and_quarantined():
    gate = CandleGate("binance")
    gate.offer(candles("A", [5, 6]), minute(6) + 1)
    out = gate.offer(candle("A", 3), minute(6) + 2)
    assert out.num_rows == 0 and gate.counters["out_of_order"] == 1
    record = gate.quarantine.records[-1]
    assert record.reason == "out_of_order" and record.open_time == minute(3)
    assert record.symbol == "A" and record.payload["close"] == 100.0
    assert gate.counters["quarantined"] == {"out_of_order": 1}


def test_invalid_candles_are_quarantined_not_emitted():
    gate = CandleGate("binance", symbols=["A"])
    bad = candle("B", 0)  # unknown symbol
    gate.offer(pa.Table.from_batches([bad, candle("A", 0)]), minute(0) + 1)
    out = gate.flush(FAR_FUTURE)
    assert out.column("symbol").to_pylist() == ["A"]
    assert gate.counters["quarantined"] == {"unknown_symbol": 1}
    assert gate.counters["rejected"] == 1 and gate.counters["received"] == 2


def test_output_is_ordered_by_open_time_then_symbol():
    gate = CandleGate("binance")
    rows = [candle(s, i) for i in (2, 0, 1) for s in ("ZEC", "ADA", "BTC")]
    out = gate.offer(pa.Table.from_batches(rows), FAR_FUTURE - 10**11)
    keys = list(
        zip(out.column("open_time").to_pylist(), out.column("symbol").to_pylist(), strict=True)
    )
    assert keys == sorted(keys) and len(keys) == 9


# --- gaps ----------------------------------------------------------------------------------


def gate_with_gap(**kwargs) -> CandleGate:
    """A emitted 0,1; then 4 and 5 arrive: minutes 2 and 3 are missing."""
    gate = CandleGate("binance", **kwargs)
    gate.offer(candles("A", [0, 1]), minute(1) + 1)
    assert gate.flush(minute(2) + GRACE).num_rows == 1
    gate.offer(candles("A", [4, 5]), minute(5) + 1)
    return gate


def test_gap_is_detected_once_and_holds_newer_candles():
    gate = gate_with_gap()
    gaps = gate.take_gaps()
    assert gaps == [Gap("binance", "A", "1m", minute(2), minute(4))]
    assert gaps[0].n_missing == 2 and list(gaps[0].missing_open_times) == [minute(2), minute(3)]
    assert gate.take_gaps() == []
    assert gate.flush(FAR_FUTURE).num_rows == 0
    assert gate.counters["held"] == 2 and gate.counters["gaps_detected"] == 1
    assert gate.open_gaps == tuple(gaps)


def test_fully_repaired_gap_emits_missing_then_held_in_order():
    gate = gate_with_gap()
    (gap,) = gate.take_gaps()
    resolution = gate.resolve_gap(gap, candles("A", [3, 2]), minute(6) + GRACE)
    assert times(resolution.candles) == [2, 3, 4, 5]
    assert resolution.unrepairable == ()
    counters = gate.counters
    assert counters["gaps_repaired"] == 1 and counters["gaps_unrepairable"] == 0
    assert counters["held"] == 0 and counters["emitted"] == 6


def test_partially_repaired_gap_marks_the_rest_unrepairable():
    gate = CandleGate("binance")
    gate.offer(candle("A", 0), minute(0) + 1)
    gate.offer(candles("A", [7, 8]), minute(8) + 1)
    (gap,) = gate.take_gaps()
    assert (gap.start_ms, gap.end_ms) == (minute(1), minute(7))
    resolution = gate.resolve_gap(gap, candles("A", [3, 4]), minute(8) + 2)
    assert times(resolution.candles) == [3, 4, 7]
    holes = [(h.start_ms, h.end_ms) for h in resolution.unrepairable]
    assert holes == [(minute(1), minute(3)), (minute(5), minute(7))]
    assert gate.unrepairable == list(resolution.unrepairable)
    counters = gate.counters
    assert counters["gaps_unrepairable"] == 1 and counters["candles_unrepairable"] == 4
    assert counters["candles_repaired"] == 2


def test_unrepairable_gap_releases_held_and_late_fillers_are_out_of_order():
    gate = gate_with_gap()
    (gap,) = gate.take_gaps()
    resolution = gate.resolve_gap(gap, None, minute(5) + 2)
    assert times(resolution.candles) == [4]  # 5 is still the open candle
    assert [(h.start_ms, h.end_ms) for h in resolution.unrepairable] == [(minute(2), minute(4))]
    gate.offer(candles("A", [3, 4]), minute(5) + 3)
    assert gate.counters["out_of_order"] == 1 and gate.counters["duplicates"] == 1
    assert [r.open_time for r in gate.quarantine.records] == [minute(3)]


def test_candle_arriving_inside_an_open_gap_waits_and_repair_wins():
    gate = gate_with_gap()
    (gap,) = gate.take_gaps()
    gate.offer(candle("A", 2, price=50.0), minute(5) + 2)
    assert gate.counters["out_of_order"] == 0 and gate.counters["held"] == 3
    resolution = gate.resolve_gap(gap, pa.Table.from_batches([candle("A", 2, 60.0)]), minute(5))
    assert times(resolution.candles) == [2, 4]
    assert resolution.candles.column("close").to_pylist()[0] == 60.0
    assert [(h.start_ms, h.end_ms) for h in resolution.unrepairable] == [(minute(3), minute(4))]


def test_repair_rows_outside_the_gap_or_invalid_are_not_used():
    gate = gate_with_gap(symbols=["A", "B"])
    (gap,) = gate.take_gaps()
    bad = candle("A", 3, price=-5.0)
    repaired = pa.Table.from_batches([candle("A", 1), candle("A", 2), candle("B", 3), bad])
    resolution = gate.resolve_gap(gap, repaired, minute(5) + 2)
    assert times(resolution.candles) == [2, 4]
    assert gate.counters["repair_ignored"] == 2
    assert gate.counters["quarantined"] == {"non_positive_price": 1}


def test_other_symbols_flow_while_one_is_held():
    gate = gate_with_gap()
    out = gate.offer(candles("B", [0, 1, 2]), minute(5) + 3)
    assert times(out) == [0, 1, 2] and gate.flush(FAR_FUTURE).num_rows == 0
    assert gate.last_emitted("A") == minute(1)


def test_second_hole_found_while_releasing_held_candles():
    gate = CandleGate("binance")
    gate.offer(candle("A", 0), minute(0) + 1)
    gate.offer(candles("A", [3, 7, 8]), minute(8) + 1)
    (first,) = gate.take_gaps()
    resolution = gate.resolve_gap(first, candles("A", [1, 2]), minute(8) + 2)
    assert times(resolution.candles) == [1, 2, 3]
    (second,) = gate.take_gaps()
    assert (second.start_ms, second.end_ms) == (minute(4), minute(7))
    resolution = gate.resolve_gap(second, candles("A", [4, 5, 6]), FAR_FUTURE - 10**11)
    assert times(resolution.candles) == [4, 5, 6, 7, 8]
    assert gate.counters["gaps_repaired"] == 2


def test_stale_gap_resolution_is_a_no_op():
    gate = gate_with_gap()
    (gap,) = gate.take_gaps()
    gate.resolve_gap(gap, None, minute(5) + 2)
    again = gate.resolve_gap(gap, candles("A", [2, 3]), minute(5) + 2)
    assert again.candles.num_rows == 0 and again.unrepairable == ()
    assert gate.counters["gaps_unrepairable"] == 1


def test_pending_per_symbol_is_bounded_and_overflow_is_recovered_by_repair():
    truth = candles("A", range(13))
    gate = CandleGate("binance", max_pending=3)
    driver = Driver(gate)
    gate.offer(candles("A", [0]), minute(0) + 1)
    gate.offer(candles("A", [2, 3, 4, 5, 6, 7]), minute(7) + 1)
    assert gate.counters["pending"] == 3 and gate.counters["overflow"] == 3
    driver.archive = Archive(truth)
    driver.resolve(minute(7) + 1)
    driver.offer(candles("A", [8, 9, 10, 11]), minute(11) + 1)  # 11 overflows behind gap 5..7
    assert gate.counters["overflow"] == 4
    driver.offer(candles("A", [12]), minute(12) + 1)
    out = driver.finish()  # 12 becomes final: the hole at 11 is found and repaired
    assert times(out) == list(range(1, 13))
    assert driver.holes == [] and gate.counters["gaps_repaired"] == 3


# --- exactly once under shuffles, duplicates and revisions ----------------------------------


def shuffled_stream(truth: pa.Table, rng, displacement: float, dup_rate: float) -> pa.Table:
    """Each symbol's first candle first; the rest displaced by up to ``displacement`` rows;
    some rows delivered again later."""
    n = truth.num_rows
    symbols = truth.column("symbol").to_numpy(zero_copy_only=False)
    first = np.concatenate([[True], symbols[1:] != symbols[:-1]])
    position = np.argsort(np.argsort(truth.column("open_time").to_numpy(), kind="stable"))
    order = np.argsort(np.where(first, -1.0, position + rng.uniform(0, displacement, n)))
    source = np.sort(rng.integers(0, n, int(n * dup_rate)))
    insert_at = np.sort(rng.integers(source + 1, n + 1))  # a copy arrives after its original
    return truth.take(np.insert(order, insert_at, order[source]))


def feed(driver: Driver, stream: pa.Table, chunk_sizes) -> None:
    start, seen = 0, T0
    for size in chunk_sizes:
        chunk = stream.slice(start, size)
        if chunk.num_rows == 0:
            break
        seen = max(seen, pc.max(chunk.column("open_time")).as_py())
        driver.offer(chunk, seen + MINUTE // 2)
        start += size


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(2, 40),
    n_symbols=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    displacement=st.sampled_from([0.0, 3.0, 20.0, 1000.0]),
    dup_rate=st.sampled_from([0.0, 0.3, 1.0]),
    chunk=st.integers(1, 25),
)
def test_exactly_once_under_shuffle_and_duplication(
    n, n_symbols, seed, displacement, dup_rate, chunk
):
    truth = clean_series(tuple(f"S{i}" for i in range(n_symbols)), n, seed)
    rng = np.random.default_rng(seed)
    stream = shuffled_stream(truth, rng, displacement, dup_rate)
    driver = Driver(CandleGate("binance"), truth)
    feed(driver, stream, [int(rng.integers(1, chunk + 1)) for _ in range(stream.num_rows)])
    out = driver.finish()
    assert_exactly_once_in_order(out)
    assert by_symbol_time(out).equals(truth)
    counters = driver.gate.counters
    assert driver.holes == [] and counters["out_of_order"] == 0
    assert counters["emitted"] == truth.num_rows and counters["pending"] == 0


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), seed=st.integers(0, 2**32 - 1), updates=st.integers(0, 4))
def test_live_stream_with_provisional_revisions_emits_final_values(n, seed, updates):
    """Every minute: a few provisional versions, then the final one, all symbols per batch."""
    truth = clean_series(("A", "B"), n, seed)
    rng = np.random.default_rng(seed)
    driver = Driver(CandleGate("binance"))
    for i in range(n):
        now = minute(i) + 1_000
        final = rows_of(truth, "A", minute(i), minute(i + 1))
        final = pa.concat_tables([final, rows_of(truth, "B", minute(i), minute(i + 1))])
        for _ in range(updates):
            provisional = final.set_column(8, "close", pa.array(final.column("low").to_numpy()))
            driver.offer(provisional, now)
            now += int(rng.integers(1, 5_000))
        driver.offer(final, now)
        if rng.random() < 0.5:
            driver.out.append(driver.gate.flush(minute(i + 1) + GRACE))
    out = driver.finish()
    assert_exactly_once_in_order(out)
    assert by_symbol_time(out).equals(truth)


# --- snapshots -----------------------------------------------------------------------------


def test_snapshot_restore_continues_identically():
    truth = clean_series(("A", "B", "C"), 40, seed=3)
    stream = shuffled_stream(truth, np.random.default_rng(3), 8.0, 0.3)
    half = stream.num_rows // 2
    gate = CandleGate("binance", max_pending=50)
    first = Driver(gate, truth)
    feed(first, stream.slice(0, half), [7] * half)
    gate.offer(candles("A", [45, 46]), minute(46) + 1)  # opens a gap on A, held at snapshot
    assert gate.open_gaps and gate.counters["held"] >= 1
    snapshot = pickle.loads(pickle.dumps(gate.snapshot()))
    restored = CandleGate.from_snapshot(snapshot)
    assert restored.status() == gate.status()
    assert restored.snapshot() == snapshot
    outputs = []
    for g in (gate, restored):
        driver = Driver(g, truth)
        feed(driver, stream.slice(half), [7] * half)
        outputs.append(driver.finish())
    assert outputs[0].equals(outputs[1])
    assert restored.counters == gate.counters


def test_restored_gate_hands_out_open_gaps_again():
    gate = gate_with_gap()
    (gap,) = gate.take_gaps()
    restored = CandleGate.from_snapshot(gate.snapshot())
    assert restored.take_gaps() == [gap]
    assert times(restored.resolve_gap(gap, candles("A", [2, 3]), minute(5) + 2).candles) == [
        2, 3, 4,
    ]  # fmt: skip


def test_snapshot_contains_only_plain_data():
    gate = gate_with_gap()
    gate.offer(candle("A", 0, price=-1.0), minute(5))

    def plain(value) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list | tuple):
            return all(plain(v) for v in value)
        return value is None or type(value) in (str, int, float, bool)

    assert plain(gate.snapshot())


def test_rejects_bad_configuration():
    with pytest.raises(ValueError, match="timeframe"):
        CandleGate("binance", "7m")
    with pytest.raises(ValueError, match="max_pending"):
        CandleGate("binance", max_pending=0)


# --- real data -----------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_files_shuffled_and_duplicated_come_out_exactly_equal(shared_data):
    parts = []
    for base in ("BTC", "ETH", "SOL"):
        frame = pd.read_parquet(shared_data / "binance-spot-1m" / f"{base}_USDT-1m.parquet")
        parts.append(candles_from_frame(frame, exchange="binance", symbol=base, timeframe="1m"))
    truth = pa.Table.from_batches(parts)
    rng = np.random.default_rng(7)
    stream = shuffled_stream(truth, rng, displacement=40.0, dup_rate=0.05)
    driver = Driver(CandleGate("binance", symbols=["BTC", "ETH", "SOL"]), truth)
    feed(driver, stream, rng.integers(1, 600, stream.num_rows).tolist())
    out = driver.finish()
    assert_exactly_once_in_order(out)
    assert by_symbol_time(out).equals(truth)
    counters = driver.gate.counters
    assert counters["rejected"] == 0 and counters["duplicates"] >= int(truth.num_rows * 0.05)
    assert driver.holes == []


def test_forget_drops_a_removed_symbol_so_it_can_start_again_from_older_history():
    gate = gate_with_gap()  # A: 0, 1 emitted; 4, 5 held behind the open gap 2-3
    gate.offer(candles("B", [0, 1, 2, 3, 4, 5]), minute(5) + 1)
    gate.forget(["A", "unknown"])
    assert gate.open_gaps == () and gate.take_gaps() == []
    assert gate.last_emitted("A") is None
    released = gate.flush(FAR_FUTURE)
    assert set(released.column("symbol").to_pylist()) == {"B"}  # A's held candles are gone
    again = gate.offer(candles("A", [0, 1, 2]), FAR_FUTURE)  # warm-up history, older than before
    assert times(again) == [0, 1, 2] and gate.counters["duplicates"] == 0
