"""Symbols added to and removed from the running offline sources (synthetic, replay): history
that ends where the live candles go on, removal, unknown symbols, snapshots."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.config import ReplayFeedConfig, SyntheticFeedConfig
from orchestrator.feeds import replay
from orchestrator.feeds.base import ChangesSymbols
from orchestrator.feeds.replay import ReplaySource
from orchestrator.feeds.synthetic import SyntheticSource
from orchestrator.market.archives import path_safe_symbol
from orchestrator.market.schema import CANDLE_SCHEMA, candles_from_arrays
from orchestrator.market.synthetic import DEFAULT_START_MS, SyntheticMarket
from tests.unit.feeds.support import T0, candle_keys, candle_values, minutes, run

MINUTE_MS = 60_000
OHLCV = ("open", "high", "low", "close", "volume")


async def _batches(source, n: int) -> list[pa.RecordBatch]:
    return [await source.next_batch() for _ in range(n)]


def _drain(source) -> list[pa.RecordBatch]:
    async def drain():
        out = []
        while (batch := await source.next_batch()) is not None:
            out.append(batch)
        return out

    return run(drain())


def _times(batches: Iterable[pa.RecordBatch], symbol: str) -> list[int]:
    return [t for b in batches for s, t in candle_keys(b) if s == symbol]


def _symbols_in(batches: Iterable[pa.RecordBatch]) -> set[str]:
    return {s for b in batches for s, _ in candle_keys(b)}


def _assert_continues(history: pa.RecordBatch, live: list[pa.RecordBatch], symbol: str) -> None:
    """``symbol``'s live minutes start one minute after its history: no hole, no repeat."""
    times = _times([history], symbol) + _times(live, symbol)
    assert len(times) > len(_times([history], symbol))
    assert np.all(np.diff(times) == MINUTE_MS), times


def _assert_time_ordered(batch: pa.RecordBatch) -> None:
    times = batch.column("open_time").to_pylist()
    assert times == sorted(times)


# --- synthetic ----------------------------------------------------------------------------


def _synthetic_config(**overrides) -> SyntheticFeedConfig:
    fields = {"speed": 0, "seed": 5, "symbols": ("BTC/USDT", "ETH/USDT")}
    return SyntheticFeedConfig(**{**fields, **overrides})


def test_synthetic_added_symbols_get_history_ending_where_their_live_candles_start():
    source = SyntheticSource(_synthetic_config())
    assert isinstance(source, ChangesSymbols)

    async def scenario():
        await _batches(source, 3)
        history = await source.add_symbols(["SOL/USDT", "ETH/USDT", "XRP/USDT", "SOL/USDT"], 7)
        return history, source.symbols, await _batches(source, 2)

    history, symbols, live = run(scenario())
    assert symbols == ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT")  # ETH was carried
    assert history.schema == CANDLE_SCHEMA and history.num_rows == 2 * 7
    _assert_time_ordered(history)
    first_live = DEFAULT_START_MS + 3 * MINUTE_MS
    for symbol in ("SOL/USDT", "XRP/USDT"):
        assert _times([history], symbol) == [first_live - k * MINUTE_MS for k in range(7, 0, -1)]
        _assert_continues(history, live, symbol)
        last_close = candle_values(history)[(symbol, first_live - MINUTE_MS)][3]
        assert candle_values(live[0])[(symbol, first_live)][0] == last_close
    assert [b.column("symbol").to_pylist() for b in live] == [list(symbols)] * 2


def test_synthetic_history_depends_on_the_seed_and_the_symbol_only():
    async def history_of(seed: int, symbols: list[str], minutes_before: int) -> dict:
        source = SyntheticSource(_synthetic_config(seed=seed))
        await _batches(source, minutes_before)
        history = await source.add_symbols(symbols, 5)
        return {
            t - minutes_before * MINUTE_MS: v
            for (s, t), v in candle_values(history).items()
            if s == "SOL/USDT"
        }

    alone = run(history_of(5, ["SOL/USDT"], 2))
    assert alone == run(history_of(5, ["XRP/USDT", "SOL/USDT"], 2))  # whatever comes with it
    assert alone == run(history_of(5, ["SOL/USDT"], 9))  # whenever it is added
    assert alone != run(history_of(6, ["SOL/USDT"], 2))  # another feed, another walk


def test_synthetic_removed_symbols_are_gone_and_the_others_go_on():
    source = SyntheticSource(_synthetic_config(symbols=("A/USDT", "B/USDT", "C/USDT")))

    async def scenario():
        before = await _batches(source, 2)
        source.remove_symbols(["B/USDT", "NOPE/USDT"])
        return before, source.symbols, await _batches(source, 3)

    before, symbols, after = run(scenario())
    assert symbols == ("A/USDT", "C/USDT")
    assert [b.column("symbol").to_pylist() for b in after] == [["A/USDT", "C/USDT"]] * 3
    for symbol in symbols:  # each keeps its own walk: it opens where it closed
        last_close = candle_values(before[-1])[(symbol, _times(before, symbol)[-1])][3]
        assert candle_values(after[0])[(symbol, _times(after, symbol)[0])][0] == last_close


def test_synthetic_unknown_symbols_are_the_malformed_ones():
    source = SyntheticSource(_synthetic_config())
    asked = ["SOL/USDT", "SOLUSDT", "BTC/USDT:USDT", "SOL/", "a b/c", "", "X/Y/Z", "1000SHIB/USDT"]
    assert run(source.unknown_symbols(asked)) == ["SOLUSDT", "SOL/", "a b/c", "", "X/Y/Z"]
    with pytest.raises(ValueError, match="SOLUSDT"):
        run(source.add_symbols(["XRP/USDT", "SOLUSDT"], 3))
    assert source.symbols == ("BTC/USDT", "ETH/USDT")  # nothing added


def test_synthetic_snapshot_resumes_the_changed_symbol_set():
    config = _synthetic_config()
    source = SyntheticSource(config)

    async def scenario():
        await _batches(source, 2)
        await source.add_symbols(["SOL/USDT", "XRP/USDT"], 4)
        source.remove_symbols(["BTC/USDT"])
        await _batches(source, 1)
        restored = SyntheticSource(config, source.snapshot())
        return restored, await _batches(source, 3), await _batches(restored, 3)

    restored, expected, got = run(scenario())
    assert restored.symbols == source.symbols == ("ETH/USDT", "SOL/USDT", "XRP/USDT")
    assert all(a.equals(b) for a, b in zip(expected, got, strict=True))
    assert restored.status()["minutes_emitted"] == source.status()["minutes_emitted"]


def test_synthetic_reads_a_snapshot_without_a_symbol_list():
    config = _synthetic_config()
    source = SyntheticSource(config)
    run(_batches(source, 2))
    old = {k: v for k, v in source.snapshot().items() if k != "symbols"}
    restored = SyntheticSource(config, old)
    assert restored.symbols == config.symbols
    assert run(restored.next_batch()).equals(run(source.next_batch()))


# --- replay -------------------------------------------------------------------------------

FILE_MINUTES = 60


def _write_replay_folder(folder: Path, spans: dict[str, Iterable[int]]) -> dict:
    """One 1m Parquet file per symbol holding the minutes of ``spans`` (from T0) of a
    synthetic market; returns (symbol, open_time) -> (o, h, l, c, v) of every row written."""
    market = SyntheticMarket(len(spans), seed=11, start_ms=T0)
    generated = [market.next_minute() for _ in range(FILE_MINUTES)]
    written = {}
    for i, (symbol, kept) in enumerate(spans.items()):
        rows = [generated[k] for k in sorted(kept)]
        batch = candles_from_arrays(
            "file",
            symbol,
            "1m",
            np.array([m.open_time for m in rows], dtype=np.int64),
            {f: np.array([getattr(m, f)[i] for m in rows]) for f in OHLCV},
        )
        pq.write_table(
            pa.Table.from_batches([batch]), folder / f"{path_safe_symbol(symbol)}-1m.parquet"
        )
        written.update(candle_values(batch))
    return written


def _replay_config(folder: Path, **overrides) -> ReplayFeedConfig:
    return ReplayFeedConfig(path=str(folder), speed=0, **overrides)


ALL_MINUTES = range(FILE_MINUTES)


@pytest.fixture
def folder(tmp_path) -> tuple[Path, dict]:
    spans = {
        "A/USDT": ALL_MINUTES,
        "B/USDT": ALL_MINUTES,
        "C/USDT": ALL_MINUTES,
        "D/USDT": [k for k in ALL_MINUTES if not 10 <= k < 15],  # a hole others fill
    }
    return tmp_path, _write_replay_folder(tmp_path, spans)


def test_replay_added_symbols_get_their_rows_before_the_cursor_then_live(folder):
    path, written = folder
    source = ReplaySource(_replay_config(path, symbols=("A/USDT", "B/USDT")))
    assert isinstance(source, ChangesSymbols)

    async def scenario():
        warm = await source.history(10)
        before = await _batches(source, 3)  # minutes 10, 11, 12
        history = await source.add_symbols(["C/USDT", "A/USDT", "C/USDT"], 5)
        return warm, before, history, source.symbols, await _batches(source, 4)

    warm, before, history, symbols, live = run(scenario())
    assert _times([warm], "A/USDT") == minutes(*range(10))
    assert symbols == ("A/USDT", "B/USDT", "C/USDT")
    assert history.schema == CANDLE_SCHEMA
    assert candle_keys(history) == [("C/USDT", t) for t in minutes(8, 9, 10, 11, 12)]
    assert candle_values(history) == {k: written[k] for k in candle_keys(history)}
    _assert_continues(history, live, "C/USDT")
    assert [sorted(_symbols_in([b])) for b in live] == [list(symbols)] * 4
    assert _times(live, "A/USDT") == minutes(13, 14, 15, 16)  # the others went on as before
    assert all(candle_values(b) == {k: written[k] for k in candle_values(b)} for b in live)


def test_replay_history_is_what_the_files_hold_and_a_hole_is_filled_by_an_added_symbol(folder):
    path, written = folder
    source = ReplaySource(_replay_config(path, symbols=("D/USDT",)))

    async def scenario():
        await _batches(source, 12)  # minutes 0..9, then 15 and 16: D has no 10..14
        history = await source.add_symbols(["A/USDT"], 4)
        return history, await _batches(source, 2)

    history, live = run(scenario())
    assert _times([history], "A/USDT") == minutes(13, 14, 15, 16)
    _assert_continues(history, live, "A/USDT")
    assert _times(live, "D/USDT") == minutes(17, 18)


def test_replay_keeps_its_clock_and_end_time_when_symbols_change(folder):
    path, _ = folder
    # D lacks 10..14, so its 22nd minute is minute 26: the replay ends before minute 26,
    # whichever symbols it carries by then (5 + 16 of B's minutes would end at 21).
    config = _replay_config(path, symbols=("D/USDT",), warmup_minutes=5, max_minutes=16)
    source = ReplaySource(config)
    assert source.status()["minutes_total"] == 21

    async def scenario():
        await source.history(5)
        first = await _batches(source, 2)  # minutes 5 and 6
        history = await source.add_symbols(["B/USDT"], 3)
        source.remove_symbols(["D/USDT"])
        return first, history

    first, history = run(scenario())
    rest = _drain(source)
    assert _times(first, "D/USDT") == minutes(5, 6)
    assert _times([history], "B/USDT") == minutes(4, 5, 6)
    assert _times(rest, "B/USDT") == minutes(*range(7, 26))  # B fills 10..14, same end
    assert _symbols_in(rest) == {"B/USDT"}
    assert source.status() == {
        "kind": "replay",
        "symbols": 1,
        "minutes_emitted": 5 + 2 + 19,
        "minutes_total": 26,
    }


def test_replay_removed_symbols_are_never_sent_again(folder):
    path, _ = folder
    source = ReplaySource(
        _replay_config(path, symbols=("A/USDT", "B/USDT", "C/USDT"), max_minutes=10)
    )

    async def scenario():
        before = await _batches(source, 2)
        source.remove_symbols(["B/USDT", "NOPE/USDT", "C/USDT"])
        return before, source.symbols

    before, symbols = run(scenario())
    after = _drain(source)
    assert _symbols_in(before) == {"A/USDT", "B/USDT", "C/USDT"} and symbols == ("A/USDT",)
    assert _symbols_in(after) == {"A/USDT"} and _times(after, "A/USDT") == minutes(*range(2, 10))


def test_replay_without_symbols_idles_until_some_are_added(folder, monkeypatch):
    monkeypatch.setattr(replay, "IDLE_S", 0.0)
    path, _ = folder
    source = ReplaySource(_replay_config(path, symbols=("A/USDT",)))

    async def scenario():
        await _batches(source, 3)
        source.remove_symbols(["A/USDT"])
        idle = await _batches(source, 2)
        history = await source.add_symbols(["B/USDT"], 2)
        return idle, history, await _batches(source, 1)

    idle, history, live = run(scenario())
    assert [b.num_rows for b in idle] == [0, 0] and source.symbols == ("B/USDT",)
    assert _times([history], "B/USDT") == minutes(1, 2) and _times(live, "B/USDT") == minutes(3)


def test_replay_unknown_symbols_are_those_without_a_file(folder):
    path, _ = folder
    source = ReplaySource(_replay_config(path, symbols=("A/USDT",)))
    asked = ["C/USDT", "Z/USDT", "A/USDT", "D/USDT:USDT", "D/USDT"]
    assert run(source.unknown_symbols(asked)) == ["Z/USDT", "D/USDT:USDT"]
    with pytest.raises(ValueError, match="Z/USDT"):
        run(source.add_symbols(["C/USDT", "Z/USDT"], 3))
    assert source.symbols == ("A/USDT",)
    (path / "C_USDT-1h.parquet").write_bytes(b"")  # another timeframe is not a 1m file
    assert run(source.unknown_symbols(["B/USDT", "E/USDT"])) == ["E/USDT"]


def test_replay_snapshot_resumes_the_changed_symbol_set_on_the_same_clock(folder):
    path, _ = folder
    config = _replay_config(path, symbols=("A/USDT", "D/USDT"), max_minutes=30)
    source = ReplaySource(config)

    async def scenario():
        await _batches(source, 4)
        await source.add_symbols(["C/USDT"], 2)
        source.remove_symbols(["A/USDT"])
        await _batches(source, 3)

    run(scenario())
    snapshot = source.snapshot()
    restored = ReplaySource(config, snapshot)
    assert restored.symbols == source.symbols == ("C/USDT", "D/USDT")
    assert restored.status() == source.status()
    expected, got = _drain(source), _drain(restored)
    assert len(got) == len(expected) > 0
    assert all(a.equals(b) for a, b in zip(expected, got, strict=True))


def test_replay_reads_a_snapshot_from_before_symbols_could_change(folder):
    path, _ = folder
    config = _replay_config(path, symbols=("D/USDT",), max_minutes=20)
    fresh = _drain(ReplaySource(config))
    restored = ReplaySource(config, {"position": 12})  # an index: D lacks 10..14, so minute 17
    resumed = _drain(restored)
    assert [b.column("open_time")[0].as_py() for b in resumed] == minutes(*range(17, 25))
    assert all(a.equals(b) for a, b in zip(fresh[12:], resumed, strict=True))
    assert restored.status()["minutes_emitted"] == 20 and restored.symbols == ("D/USDT",)


def test_without_warm_up_an_added_symbol_starts_with_the_next_batch(folder):
    path, _ = folder
    sources = [
        SyntheticSource(_synthetic_config()),
        ReplaySource(_replay_config(path, symbols=("A/USDT",))),
    ]

    async def scenario(source):
        await _batches(source, 2)
        history = await source.add_symbols(["C/USDT"], 0)
        return history, await source.next_batch()

    for source in sources:
        history, live = run(scenario(source))
        assert history.schema == CANDLE_SCHEMA and history.num_rows == 0
        assert "C/USDT" in _symbols_in([live]) and "C/USDT" in source.symbols
