"""Helpers for the feature tests: series makers, real-data readers, the incremental driver."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.features import FEATURE_NAMES, IncrementalFeatures

MINUTE_MS = 60_000
START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
CANDLE_COLUMNS = ("open", "high", "low", "close", "volume")

# Twin parity: 1e-9 relative, with an absolute floor of 1e-12 in the feature's own units
# for values at or crossing zero (every feature is O(1e-4)..O(100), so 1e-12 is far below
# anything a model can resolve; in practice the twins agree bit for bit).
TWIN_RTOL, TWIN_ATOL = 1e-9, 1e-12
# TA-Lib parity: 1e-6 relative once warm, absolute floor 1e-9 (TA-Lib keeps running sums,
# so where an oscillator crosses zero it returns residues like 2e-13 where we return 0).
TALIB_RTOL, TALIB_ATOL = 1e-6, 1e-9


def random_walk(
    n: int,
    seed: int,
    *,
    price: float = 100.0,
    vol: float = 0.01,
    taker: bool = True,
    step_ms: int = MINUTE_MS,
) -> pd.DataFrame:
    """OHLCV candles of a geometric random walk with plausible highs, lows and volumes."""
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    open_ = np.concatenate(([price], close))[:n]
    body_hi, body_lo = np.maximum(open_, close), np.minimum(open_, close)
    high = body_hi * (1 + rng.uniform(0, vol, n))
    low = body_lo * (1 - rng.uniform(0, vol, n))
    volume = rng.lognormal(3.0, 1.0, n)
    frame = pd.DataFrame(
        {
            "open_time": START_MS + step_ms * np.arange(n, dtype=np.int64),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
        }
    )
    if taker:
        frame["taker_buy_base"] = volume * rng.uniform(0, 1, n)
    return frame


def open_time_ms(frame: pd.DataFrame) -> np.ndarray:
    if "open_time" in frame.columns:
        return frame["open_time"].to_numpy(np.int64)
    return pd.DatetimeIndex(frame["date"]).tz_convert("UTC").as_unit("ms").asi8


def read_candles(path: Path) -> pd.DataFrame:
    """A shared-data file as a candle frame: parquet as is, a Binance kline zip via pandas."""
    if path.suffix == ".zip":
        frame = pd.read_csv(path, compression="zip")
        return frame.rename(columns={"taker_buy_volume": "taker_buy_base"})
    return pd.read_parquet(path)


def real_data_files(root: Path, hourly_sample: int = 12) -> list[Path]:
    """Every 1m, native and USD-M file, and an evenly spread sample of the 136 hourly ones."""
    files = sorted((root / "binance-spot-1m").glob("*.parquet"))
    files += sorted((root / "binance-spot-native").glob("*.parquet"))
    files += sorted((root / "binance-usdm-1m").glob("*.zip"))
    hourly = sorted((root / "binance-spot-1h").glob("*.parquet"))
    step = max(1, len(hourly) // hourly_sample)
    return files + hourly[::step]


def segments(frame: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    """Consecutive pieces of at most ``size`` rows (each a fresh series for the engine)."""
    return [frame.iloc[i : i + size] for i in range(0, len(frame), size)]


def run_incremental(
    frames: list[pd.DataFrame], engine: IncrementalFeatures | None = None
) -> list[np.ndarray]:
    """Feed every frame to one engine, one slot per frame, all active slots per call.

    Even steps pass slots in ascending order (the in-place fast path), odd steps in
    reverse (the gather/scatter path), so both are checked against the batch twin.
    """
    engine = engine or IncrementalFeatures()
    slots = engine.add_symbols([f"sym{i}" for i in range(len(frames))])
    lengths = np.array([len(f) for f in frames])
    steps = int(lengths.max(initial=0))
    columns = {
        c: _stack([f[c].to_numpy(np.float64) for f in frames], steps) for c in CANDLE_COLUMNS
    }
    columns["taker_buy_base"] = _stack([_taker(f) for f in frames], steps)
    times = _stack([open_time_ms(f) for f in frames], steps, fill=0, dtype=np.int64)
    out = [np.full((n, len(FEATURE_NAMES)), np.nan) for n in lengths]
    for t in range(steps):
        active = np.flatnonzero(lengths > t)
        if t % 2:
            active = active[::-1]
        rows = engine.update(
            slots[active],
            times[t, active],
            *(columns[c][t, active] for c in CANDLE_COLUMNS),
            columns["taker_buy_base"][t, active],
        )
        for i, row in zip(active, rows, strict=True):
            out[i][t] = row
    return out


def _taker(frame: pd.DataFrame) -> np.ndarray:
    if "taker_buy_base" not in frame.columns:
        return np.full(len(frame), np.nan)
    return frame["taker_buy_base"].to_numpy(np.float64)


def _stack(series: list[np.ndarray], steps: int, fill=np.nan, dtype=np.float64) -> np.ndarray:
    out = np.full((steps, len(series)), fill, dtype=dtype)
    for i, s in enumerate(series):
        out[: len(s), i] = s
    return out


def assert_features_close(
    actual: np.ndarray,
    expected: np.ndarray,
    *,
    rtol: float,
    atol: float,
    label: str = "",
    names: tuple[str, ...] = FEATURE_NAMES,
) -> None:
    """Same NaN pattern, and |a - e| <= atol + rtol * |e| everywhere else."""
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    assert actual.shape == expected.shape, f"{label}: shape {actual.shape} != {expected.shape}"
    nan_diff = np.isnan(actual) != np.isnan(expected)
    if nan_diff.any():
        r, c = np.argwhere(nan_diff)[0]
        raise AssertionError(
            f"{label}: NaN mismatch at row {r} {names[c]}: "
            f"{actual[r, c]!r} vs {expected[r, c]!r} ({nan_diff.sum()} cells)"
        )
    assert not np.isinf(actual).any(), f"{label}: inf in features"
    with np.errstate(invalid="ignore"):
        bad = np.abs(actual - expected) > atol + rtol * np.abs(expected)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise AssertionError(
            f"{label}: {names[c]} differs at row {r}: {actual[r, c]!r} vs "
            f"{expected[r, c]!r} ({bad.sum()} cells)"
        )


def _flat_candles(frame: pd.DataFrame, rows: slice, price: float) -> None:
    for column in ("open", "high", "low", "close"):
        frame.loc[frame.index[rows], column] = price


def adversarial_series() -> dict[str, pd.DataFrame]:
    """Series built to hit every degenerate branch and numeric extreme."""
    n = 160
    constant = random_walk(n, seed=10)
    _flat_candles(constant, slice(None), 0.1)  # 0.1 is not representable: means round
    constant["volume"] = 0.0
    constant["taker_buy_base"] = 0.0
    flat_middle = random_walk(n, seed=11)
    _flat_candles(flat_middle, slice(40, 100), float(flat_middle["close"].iloc[39]))
    zero_volume = random_walk(n, seed=12)
    zero_volume.loc[zero_volume.index[30:90], ["volume", "taker_buy_base"]] = 0.0
    spike = random_walk(n, seed=13)
    spike.loc[spike.index[70], ["high", "close"]] *= 1000.0
    spike.loc[spike.index[71], ["open", "high"]] *= 1000.0
    tick_grid = random_walk(n, seed=14, price=0.1, vol=0.002)
    tick_grid[["open", "high", "low", "close"]] = tick_grid[["open", "high", "low", "close"]].round(
        4
    )
    gap = random_walk(n, seed=15)
    gap.loc[gap.index[80:], "open_time"] += 7 * 3_600_000 + 13 * MINUTE_MS
    partly_missing = random_walk(n, seed=16)
    partly_missing.loc[partly_missing.index[::3], "taker_buy_base"] = np.nan
    tiny = random_walk(n, seed=17, price=1e-8)
    tiny["volume"] *= 1e12
    return {
        "constant": constant,
        "flat_middle": flat_middle,
        "zero_volume": zero_volume,
        "spike": spike,
        "tick_grid": tick_grid,
        "time_gap": gap,
        "taker_partly_missing": partly_missing,
        "tiny_prices": tiny,
        "huge_prices": random_walk(n, seed=18, price=1e7),
        "no_taker_column": random_walk(n, seed=19, taker=False),
        "too_short": random_walk(12, seed=20),
    }
