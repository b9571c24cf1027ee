"""Replay of real archives in both formats, and warm-up history from the offline sources."""

import asyncio

import numpy as np
import pyarrow as pa
import pytest

from orchestrator.config import ReplayFeedConfig, SyntheticFeedConfig
from orchestrator.feeds.replay import ReplaySource, replay_files
from orchestrator.feeds.synthetic import SyntheticSource
from orchestrator.market.schema import CANDLE_SCHEMA
from orchestrator.market.timeframes import MINUTE_MS


def _drain(source) -> list[pa.RecordBatch]:
    async def run():
        out = []
        while (batch := await source.next_batch()) is not None:
            out.append(batch)
        return out

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("folder", "n_symbols", "has_taker"),
    [("binance-spot-1m", 3, False), ("binance-usdm-1m", 6, True)],
)
def test_replay_emits_every_symbol_minute_by_minute(shared_data, folder, n_symbols, has_taker):
    source = ReplaySource(
        ReplayFeedConfig(path=str(shared_data / folder), max_minutes=30, warmup_minutes=50)
    )
    history = asyncio.run(source.history(50))
    live = _drain(source)
    assert history.schema == CANDLE_SCHEMA and history.num_rows == 50 * n_symbols
    assert len(live) == 30 and all(b.num_rows == n_symbols for b in live)
    times = [history.column("open_time")[-1].as_py()] + [
        b.column("open_time")[0].as_py() for b in live
    ]
    assert np.all(np.diff(times) == MINUTE_MS)  # live continues right after the history
    assert (live[0].column("taker_buy_base").null_count == 0) == has_taker
    assert source.status()["minutes_emitted"] == 80


def test_replay_selects_symbols_and_rejects_an_empty_choice(shared_data):
    path = shared_data / "binance-spot-1m"
    assert [(p.name, s) for p, s in replay_files(path, ("ETH/USDT",))] == [
        ("ETH_USDT-1m.parquet", "ETH/USDT")
    ]
    with pytest.raises(FileNotFoundError, match="DOGE/USDT"):
        replay_files(path, ("DOGE/USDT",))
    with pytest.raises(FileNotFoundError, match="not a directory"):
        replay_files(path / "missing", None)


def test_synthetic_history_then_live_is_the_same_market_as_live_only():
    config = SyntheticFeedConfig(speed=0, max_minutes=20, seed=3)
    warmed = SyntheticSource(config)
    history = asyncio.run(warmed.history(10))
    closes = np.concatenate(
        [history.column("close").to_numpy()]
        + [b.column("close").to_numpy() for b in _drain(warmed)]
    )
    reference = SyntheticSource(config.model_copy(update={"max_minutes": 30}))
    expected = np.concatenate([b.column("close").to_numpy() for b in _drain(reference)])
    np.testing.assert_array_equal(closes, expected)


def test_replay_reads_the_dataset_fetch_history_writes(shared_data, tmp_path):
    from orchestrator.cli import fetch_history

    zips = sorted((shared_data / "binance-usdm-1m").glob("*.zip"))[:2]
    fetch_history.main(
        [
            "import-zip",
            *map(str, zips),
            "--exchange",
            "binance",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    source = ReplaySource(
        ReplayFeedConfig(
            path=str(tmp_path), exchange="usdm-replay", max_minutes=5, symbols=("ALGO/USDT",)
        )
    )
    batches = _drain(source)
    assert len(batches) == 5
    assert {b.column("symbol")[0].as_py() for b in batches} == {"ALGO/USDT"}
    assert {b.column("exchange")[0].as_py() for b in batches} == {"usdm-replay"}


def test_a_fast_replay_batches_minutes_and_a_paced_one_does_not(shared_data):
    config = ReplayFeedConfig(path=str(shared_data / "binance-spot-1m"), max_minutes=20)
    one = pa.Table.from_batches(_drain(ReplaySource(config)))
    batches = _drain(ReplaySource(config.model_copy(update={"batch_minutes": 7})))
    assert [len(set(b.column("open_time").to_pylist())) for b in batches] == [7, 7, 6]
    assert pa.Table.from_batches(batches).equals(one)
    assert config.model_copy(update={"batch_minutes": 7, "speed": 5.0}).minutes_per_batch == 1


def test_synthetic_batches_minutes_up_to_max_minutes():
    config = SyntheticFeedConfig(speed=0, max_minutes=10, seed=4)
    one = pa.Table.from_batches(_drain(SyntheticSource(config)))
    source = SyntheticSource(config.model_copy(update={"batch_minutes": 4}))
    batches = _drain(source)
    assert [len(set(b.column("open_time").to_pylist())) for b in batches] == [4, 4, 2]
    assert pa.Table.from_batches(batches).equals(one)
    assert source.status()["minutes_emitted"] == 10
