"""Labels for supervised training, built only from each candle and what follows it (pure).

A label at index t reads the candle at t (known when t closes) and the candles after it up
to its horizon; features at t read candles ..t only. Candles whose future is not known yet
get NaN and are never trained on. Horizons are fixed constants, so a model's label means
the same thing in training, in its manifest and in the live outcome tracker.

Label definitions (``c``, ``h``, ``l`` are close, high, low; ``r[i] = ln(c[i] / c[i-1])``):

* ``direction``   1 if c[t+1] > c[t] else 0                          horizon 1
* ``return``      r[t+1] = ln(c[t+1] / c[t])                          horizon 1
* ``volatility``  population std of r[t+1], ..., r[t+N], N = ``VOLATILITY_HORIZON``
* ``swing``       0 none, 1 swing high, 2 swing low, K = ``SWING_ORDER``:
  swing high when h[t] > every high of the K candles before and >= every high of the K
  candles after (a tie goes to the earliest candle); swing low mirrors it on the lows; a
  candle that is both (an outside bar engulfing its 2K neighbours) is "none": it is not a
  one-sided turning point. It is confirmed K candles later; its K predecessors are known
  at t, so only the K successors are the future being predicted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# Ten candles: long enough for a std to mean something, short enough to be confirmed soon.
VOLATILITY_HORIZON = 10
# Five candles each side: the classic fractal width (Williams uses 2; 5 marks swings a
# trader would call one, not every wiggle).
SWING_ORDER = 5
SWING_CLASSES = ("none", "swing_high", "swing_low")


@dataclass(frozen=True)
class LabelSpec:
    """What a model type predicts: its label's name, definition and horizon in candles."""

    name: str
    definition: str
    horizon: int  # candles after t the label reads
    lookback: int = 0  # candles before t the label reads (all known at t)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "definition": self.definition,
            "horizon": self.horizon,
            "lookback": self.lookback,
        }


LABEL_SPECS: dict[str, LabelSpec] = {
    "direction": LabelSpec("next_direction", "1 if close[t+1] > close[t] else 0", 1),
    "return": LabelSpec("next_log_return", "ln(close[t+1] / close[t])", 1),
    "volatility": LabelSpec(
        "forward_volatility",
        f"population std of the {VOLATILITY_HORIZON} one-candle log returns after t",
        VOLATILITY_HORIZON,
    ),
    "swing": LabelSpec(
        "swing_point",
        f"0 none, 1 swing high, 2 swing low: high[t] > the {SWING_ORDER} highs before and >= "
        f"the {SWING_ORDER} after (lows mirrored); both at once counts as none",
        SWING_ORDER,
        SWING_ORDER,
    ),
}


def next_direction(close: np.ndarray) -> np.ndarray:
    """1.0 if the next candle closes above this one, 0.0 if not, NaN for the last candle."""
    close = np.asarray(close, dtype=np.float64)
    label = np.full(len(close), np.nan)
    label[:-1] = (close[1:] > close[:-1]).astype(np.float64)
    return label


def log_returns(close: np.ndarray) -> np.ndarray:
    """r[i] = ln(c[i] / c[i-1]); r[0] is NaN (no previous candle)."""
    close = np.asarray(close, dtype=np.float64)
    out = np.full(len(close), np.nan)
    out[1:] = np.log(close[1:] / close[:-1])
    return out


def next_log_return(close: np.ndarray) -> np.ndarray:
    """ln(c[t+1] / c[t]); NaN for the last candle."""
    label = np.full(len(close), np.nan)
    label[:-1] = log_returns(close)[1:]
    return label


def forward_volatility(close: np.ndarray, horizon: int = VOLATILITY_HORIZON) -> np.ndarray:
    """Population std of the ``horizon`` log returns after t; NaN for the last ``horizon``."""
    returns = log_returns(close)
    label = np.full(len(returns), np.nan)
    if len(returns) > horizon:
        # Window starting at r[t+1] ends at r[t+horizon].
        label[: len(returns) - horizon] = sliding_window_view(returns[1:], horizon).std(axis=1)
    return label


def trailing_volatility(close: np.ndarray, horizon: int = VOLATILITY_HORIZON) -> np.ndarray:
    """Population std of the ``horizon`` log returns up to and including t (known at t).

    The naive "historical volatility" forecast of ``forward_volatility``.
    """
    returns = log_returns(close)
    out = np.full(len(returns), np.nan)
    if len(returns) > horizon:
        out[horizon:] = sliding_window_view(returns[1:], horizon).std(axis=1)
    return out


def swing_points(high: np.ndarray, low: np.ndarray, order: int = SWING_ORDER) -> np.ndarray:
    """0 none, 1 swing high, 2 swing low (see module doc); NaN without ``order`` each side."""
    high, low = np.asarray(high, dtype=np.float64), np.asarray(low, dtype=np.float64)
    n, width = len(high), 2 * order + 1
    label = np.full(n, np.nan)
    if n < width:
        return label
    is_high = _one_sided_extreme(sliding_window_view(high, width), order)
    is_low = _one_sided_extreme(-sliding_window_view(low, width), order)
    only_high, only_low = is_high & ~is_low, is_low & ~is_high
    label[order : n - order] = np.where(only_high, 1.0, np.where(only_low, 2.0, 0.0))
    return label


def _one_sided_extreme(windows: np.ndarray, order: int) -> np.ndarray:
    """Centre strictly above everything before it and at least everything after it."""
    centre = windows[:, order]
    before, after = windows[:, :order].max(axis=1), windows[:, order + 1 :].max(axis=1)
    return (centre > before) & (centre >= after)
