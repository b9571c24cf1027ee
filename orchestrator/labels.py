"""Labels for supervised training, built only from what follows each candle (pure).

A label at index t uses candles t+1.. only; features at t use candles ..t only. The last
candles, whose future is not known yet, get NaN and are never trained on.
"""

from __future__ import annotations

import numpy as np


def next_direction(close: np.ndarray) -> np.ndarray:
    """1.0 if the next candle closes above this one, 0.0 if not, NaN for the last candle."""
    close = np.asarray(close, dtype=np.float64)
    label = np.full(len(close), np.nan)
    label[:-1] = (close[1:] > close[:-1]).astype(np.float64)
    return label
