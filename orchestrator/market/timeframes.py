"""Timeframes as data: names, lengths in milliseconds and UTC bucket alignment."""

from __future__ import annotations

import numpy as np

MINUTE_MS = 60_000
TIMEFRAME_MS: dict[str, int] = {
    "1m": MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": 60 * MINUTE_MS,
    "4h": 240 * MINUTE_MS,
    "1d": 1440 * MINUTE_MS,
}
TIMEFRAMES: tuple[str, ...] = tuple(TIMEFRAME_MS)


def timeframe_ms(timeframe: str) -> int:
    """Length of one candle of ``timeframe`` in milliseconds; ValueError names the bad value."""
    try:
        return TIMEFRAME_MS[timeframe]
    except KeyError:
        raise ValueError(f"unknown timeframe {timeframe!r}; expected one of {TIMEFRAMES}") from None


def bucket_start(open_time_ms: np.ndarray | int, timeframe: str) -> np.ndarray | int:
    """Open time of the ``timeframe`` bucket holding each 1m open time (UTC epoch alignment)."""
    step = timeframe_ms(timeframe)
    return open_time_ms - (open_time_ms % step)


def is_aligned(open_time_ms: np.ndarray | int, timeframe: str) -> np.ndarray | bool:
    return (open_time_ms % timeframe_ms(timeframe)) == 0


def run_bounds(open_time: np.ndarray) -> np.ndarray:
    """Start offsets of each run of equal open times in a time-ordered array, then its length:
    rows ``bounds[i]:bounds[i + 1]`` share one minute (``[0]`` for an empty array)."""
    edges = np.flatnonzero(np.diff(open_time)) + 1
    return (
        np.concatenate([[0], edges, [len(open_time)]]) if len(open_time) else np.zeros(1, np.int64)
    )
