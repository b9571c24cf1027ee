"""Mapping a direction probability to a trading signal and a confidence tier (pure)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

LONG, SHORT, NEUTRAL = "LONG", "SHORT", "NEUTRAL"
VERY_HIGH, HIGH, LOW = "VERY_HIGH", "HIGH", "LOW"
SIGNALS, TIERS = (LONG, SHORT, NEUTRAL), (VERY_HIGH, HIGH, LOW)  # the words by code


def direction_signals(
    prob_up: np.ndarray, high: float, very_high: float, neutral: np.ndarray | None = None
) -> tuple[pa.StringArray, pa.StringArray]:
    """LONG at p >= high, SHORT at p <= 1 - high, else NEUTRAL; tier by distance from 0.5.

    Thresholds are symmetric: ``very_high=0.7`` means VERY_HIGH at p >= 0.7 or p <= 0.3.
    Rows where ``neutral`` is True are NEUTRAL with tier LOW whatever their probability (a
    row outside the training distribution, a model past its age limit).
    """
    prob_up = np.asarray(prob_up, dtype=np.float64)
    conviction = np.maximum(prob_up, 1.0 - prob_up)
    signal = np.where(prob_up >= high, 0, np.where(prob_up <= 1.0 - high, 1, 2))  # SIGNALS
    tier = np.where(conviction >= very_high, 0, np.where(conviction >= high, 1, 2))  # TIERS
    if neutral is not None:
        signal, tier = np.where(neutral, 2, signal), np.where(neutral, 2, tier)
    return _words(SIGNALS, signal), _words(TIERS, tier)


def _words(vocabulary: tuple[str, ...], codes: np.ndarray) -> pa.StringArray:
    """The word of each code, as Arrow strings: a take from the vocabulary, ~20 times
    cheaper than building an object array of Python strings and converting it."""
    return pa.array(vocabulary, pa.string()).take(pa.array(codes.astype(np.int8)))


OVERBOUGHT, OVERSOLD, BULLISH, BEARISH = "OVERBOUGHT", "OVERSOLD", "BULLISH", "BEARISH"
TRENDS = (OVERBOUGHT, OVERSOLD, BULLISH, BEARISH, NEUTRAL)
RSI_OVERBOUGHT, RSI_OVERSOLD = 70.0, 30.0


def trend_labels(features: np.ndarray, feature_names: tuple[str, ...]) -> pa.StringArray:
    """A trader's one-word reading of the indicators, per row.

    OVERBOUGHT at RSI-14 >= 70, OVERSOLD at <= 30; otherwise BULLISH when the MACD histogram
    and the close against its 20-candle average both point up, BEARISH when both point down,
    and NEUTRAL when they disagree.
    """
    rsi = features[:, feature_names.index("rsi_14")]
    hist = features[:, feature_names.index("macd_hist")]
    above = features[:, feature_names.index("sma_ratio_20")] - 1.0
    trend = np.where((hist > 0) & (above > 0), 2, np.where((hist < 0) & (above < 0), 3, 4))
    trend = np.where(rsi <= RSI_OVERSOLD, 1, trend)
    return _words(TRENDS, np.where(rsi >= RSI_OVERBOUGHT, 0, trend))  # codes index TRENDS
