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


OVERBOUGHT, OVERSOLD, BULLISH, BEARISH = "OVERBOUGHT", "OVERSOLD", "BULLISH", "BEARISH"
RSI_OVERBOUGHT, RSI_OVERSOLD = 70.0, 30.0


def trend_labels(features: np.ndarray, feature_names: tuple[str, ...]) -> np.ndarray:
    """A trader's one-word reading of the indicators, per row.

    OVERBOUGHT at RSI-14 >= 70, OVERSOLD at <= 30; otherwise BULLISH when the MACD histogram
    and the close against its 20-candle average both point up, BEARISH when both point down,
    and NEUTRAL when they disagree.
    """
    rsi = features[:, feature_names.index("rsi_14")]
    hist = features[:, feature_names.index("macd_hist")]
    above = features[:, feature_names.index("sma_ratio_20")] - 1.0
    trend = np.where((hist > 0) & (above > 0), BULLISH, np.where((hist < 0) & (above < 0), BEARISH, NEUTRAL))
    trend = np.where(rsi <= RSI_OVERSOLD, OVERSOLD, trend)
    return np.where(rsi >= RSI_OVERBOUGHT, OVERBOUGHT, trend).astype(object)
