"""A simple strategy that follows a direction model's signal, beside buy-and-hold (pure).

Per series (one exchange and symbol), candle by candle in time order:

* position at the close of candle t: +1 (long) on a LONG signal, -1 (short) on SHORT,
  0 (flat) on NEUTRAL; held until the close of t+1, so it earns ``pos * R`` where
  ``R = exp(r[t+1]) - 1`` is the next candle's simple return (0 where it is unknown: the
  last candle, or a gap);
* a fee of ``fee`` (0.1%) of the position per trade: changing the position by ``d`` costs
  ``fee * |d|`` (flat -> long is one trade, long -> short two); the first position is
  bought, the last one is not sold (positions are marked to market at the end);
* buy-and-hold earns ``R`` on every candle, without fees.

A model's series are combined as an equal-weight portfolio rebalanced every candle: its
return at a time is the mean return of the series that have a candle then.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orchestrator.stream.signals import LONG, SHORT

FEE_PER_TRADE = 0.001


def positions(signal: np.ndarray) -> np.ndarray:
    """+1 LONG, -1 SHORT, 0 otherwise (NEUTRAL, or no signal)."""
    signal = np.asarray(signal, dtype=object)
    return np.where(signal == LONG, 1.0, np.where(signal == SHORT, -1.0, 0.0))


@dataclass(frozen=True)
class SeriesReturns:
    """Per-candle simple returns of one series: strategy without and with fees, and hold."""

    gross: np.ndarray
    net: np.ndarray
    hold: np.ndarray
    trades: np.ndarray  # |position change| at each candle (2 for a reversal)


def series_returns(
    position: np.ndarray, next_log_return: np.ndarray, fee: float = FEE_PER_TRADE
) -> SeriesReturns:
    """Returns of one time-ordered series (see the module doc for the rules)."""
    hold = np.expm1(np.nan_to_num(next_log_return, nan=0.0))
    gross = position * hold
    trades = np.abs(np.diff(position, prepend=0.0))
    net = (1.0 - fee * trades) * (1.0 + gross) - 1.0
    return SeriesReturns(gross, net, hold, trades)


@dataclass(frozen=True)
class EquityCurves:
    """An equal-weight portfolio's value over time (starting at 1), three ways."""

    times: np.ndarray  # candle open times, ms
    gross: np.ndarray
    net: np.ndarray
    hold: np.ndarray

    def total(self, name: str) -> float:
        curve = getattr(self, name)
        return float(curve[-1] - 1.0) if len(curve) else 0.0


def portfolio(times: np.ndarray, returns: SeriesReturns) -> EquityCurves:
    """Equal-weight combination of many series' returns, by candle time."""
    unique, slot = np.unique(times, return_inverse=True)
    counts = np.bincount(slot, minlength=len(unique))

    def compounded(r: np.ndarray) -> np.ndarray:
        return np.cumprod(1.0 + np.bincount(slot, weights=r, minlength=len(unique)) / counts)

    return EquityCurves(
        unique, compounded(returns.gross), compounded(returns.net), compounded(returns.hold)
    )


@dataclass(frozen=True)
class StrategyResult:
    rows: int
    series: int
    trades: float  # position units traded (a reversal counts 2)
    exposure: float  # share of candles with a position
    curves: EquityCurves

    def summary(self) -> dict:
        return {
            "rows": self.rows,
            "series": self.series,
            "trades": self.trades,
            "exposure": self.exposure,
            "gross_return": self.curves.total("gross"),
            "net_return": self.curves.total("net"),
            "hold_return": self.curves.total("hold"),
        }


def run_strategy(
    series_code: np.ndarray,
    open_time: np.ndarray,
    signal: np.ndarray,
    next_log_return: np.ndarray,
    fee: float = FEE_PER_TRADE,
) -> StrategyResult:
    """The strategy over rows of many series (sorted by series, then time)."""
    position = positions(signal)
    parts = [
        series_returns(position[a:b], next_log_return[a:b], fee) for a, b in _runs(series_code)
    ]
    joined = SeriesReturns(
        *(
            np.concatenate([getattr(p, f) for p in parts]) if parts else np.empty(0)
            for f in ("gross", "net", "hold", "trades")
        )
    )
    return StrategyResult(
        len(position),
        len(parts),
        float(joined.trades.sum()),
        float(np.mean(position != 0)) if len(position) else 0.0,
        portfolio(open_time, joined),
    )


def _runs(codes: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of equal codes."""
    if not len(codes):
        return []
    edges = np.flatnonzero(np.diff(codes)) + 1
    bounds = [0, *edges.tolist(), len(codes)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))
