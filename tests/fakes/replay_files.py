"""A replay folder written at test time from the synthetic market: as many 1m candle files
as a test needs (the real data has three 1m symbols), in the layout of ../shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.market.synthetic import SyntheticMarket

COLUMNS = ("open", "high", "low", "close", "volume")


def write_replay_folder(
    folder: Path, n_symbols: int, minutes: int, seed: int = 3
) -> dict[str, pd.DataFrame]:
    """``S000_USDT-1m.parquet`` .. one file per symbol; returns each symbol's candles
    (``open_time`` in epoch ms and OHLCV), as written."""
    folder.mkdir(parents=True, exist_ok=True)
    market = SyntheticMarket(n_symbols, seed=seed)
    steps = [market.next_minute() for _ in range(minutes)]
    open_time = np.array([m.open_time for m in steps], dtype=np.int64)
    frames = {}
    for i in range(n_symbols):
        symbol = f"S{i:03d}/USDT"
        frame = pd.DataFrame(
            {"open_time": open_time} | {c: [getattr(m, c)[i] for m in steps] for c in COLUMNS}
        )
        on_disk = frame.drop(columns="open_time")
        on_disk.insert(0, "date", pd.to_datetime(open_time, unit="ms", utc=True))
        on_disk.to_parquet(folder / f"{symbol.replace('/', '_')}-1m.parquet", index=False)
        frames[symbol] = frame
    return frames
