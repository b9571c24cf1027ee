"""Mapping a direction probability to a trading signal and a confidence tier (pure)."""

from __future__ import annotations

import numpy as np

LONG, SHORT, NEUTRAL = "LONG", "SHORT", "NEUTRAL"
VERY_HIGH, HIGH, LOW = "VERY_HIGH", "HIGH", "LOW"


def direction_signals(prob_up: np.ndarray, high: float, very_high: float) -> tuple[np.ndarray, np.ndarray]:
    """LONG at p >= high, SHORT at p <= 1 - high, else NEUTRAL; tier by distance from 0.5.

    Thresholds are symmetric: ``very_high=0.7`` means VERY_HIGH at p >= 0.7 or p <= 0.3.
    """
    prob_up = np.asarray(prob_up, dtype=np.float64)
    conviction = np.maximum(prob_up, 1.0 - prob_up)
    signal = np.where(prob_up >= high, LONG, np.where(prob_up <= 1.0 - high, SHORT, NEUTRAL))
    tier = np.where(conviction >= very_high, VERY_HIGH, np.where(conviction >= high, HIGH, LOW))
    return signal.astype(object), tier.astype(object)
