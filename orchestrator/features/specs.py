"""The feature set: every feature's name, formula, warm-up and source columns, in ONE place.

``FEATURE_NAMES`` is the column order of every feature matrix in the system (live rows,
training sets, backfills, model inputs). Both twins (``IncrementalFeatures`` and
``compute_features``) read their periods from the constants below and mask each feature
to NaN before its ``warmup`` index, so this table is authoritative.

Conventions shared by every formula:

* ``c, h, l, v`` are close, high, low, volume of the candle; ``c[t-k]`` is k candles back.
* Indicators that TA-Lib has follow TA-Lib exactly (checked against the C library 0.8.1
  bundled with the python package; default unstable period 0):
  EMAs are seeded with the simple average of their first n inputs, RSI/ATR/ADX use Wilder
  smoothing seeded the same way, Bollinger uses the population standard deviation.
* Every price-scale quantity is divided by a price, so one model serves many symbols.
* Degenerate windows never produce inf or NaN once warm; they get the neutral value stated
  in the formula ("flat" means max == min over the window, compared exactly, so both twins
  take the same branch). Zero volume is legal: volume features say "no information"
  (volume_z_20 = 0, mfi_14 = 50, taker_buy_ratio = 0.5).
* ``warmup`` is the 0-based index of the first non-NaN value on a fresh series: a feature
  has a value from the (warmup + 1)-th candle on.
* ``seeded`` features are EMA/Wilder recursions: after warm-up they still depend (with a
  weight decaying geometrically) on where the series started, exactly as TA-Lib's do.
  Every other feature depends only on its last ``warmup + 1`` candles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np

RSI_PERIOD = 14
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
BB_PERIOD, BB_DEVS = 20, 2.0
ATR_PERIOD = 14
ROC_PERIOD = 10
STOCH_FASTK, STOCH_SLOWK, STOCH_SLOWD = 14, 3, 3
WILLR_PERIOD = 14
CCI_PERIOD = 20
ADX_PERIOD = 14
MFI_PERIOD = 14
SMA_FAST, SMA_SLOW = 5, 20
EMA_PERIOD = 12
VOL_PERIOD = 20
VOLUME_Z_PERIOD = 20
RETURN_LAGS = (1, 5, 15)

# Longest rolling window any feature reads; the incremental twin keeps this many candles.
WINDOW = max(
    BB_PERIOD,
    CCI_PERIOD,
    VOL_PERIOD,
    VOLUME_Z_PERIOD,
    SMA_FAST,
    SMA_SLOW,
    MFI_PERIOD,
    STOCH_FASTK,
    WILLR_PERIOD,
    max(RETURN_LAGS) + 1,
    ROC_PERIOD + 1,
)


@dataclass(frozen=True)
class FeatureSpec:
    """One feature: how it is computed, from which columns, and when it becomes valid."""

    name: str
    formula: str
    warmup: int
    source: tuple[str, ...]
    optional: bool = False
    seeded: bool = False


_C, _HLC, _HLCV = ("close",), ("high", "low", "close"), ("high", "low", "close", "volume")


def _returns() -> tuple[FeatureSpec, ...]:
    return tuple(FeatureSpec(f"ret_{k}", f"ln(c / c[t-{k}])", k, _C) for k in RETURN_LAGS)


def _momentum() -> tuple[FeatureSpec, ...]:
    macd_warm = MACD_SLOW - 1 + MACD_SIGNAL - 1
    return (
        FeatureSpec(
            "rsi_14",
            "TA-Lib RSI(14): 100 * G / (G + L), G and L Wilder averages of gains and losses "
            "of close, seeded with the mean of the first 14; 50 when G + L == 0",
            RSI_PERIOD,
            _C,
            seeded=True,
        ),
        FeatureSpec(
            "macd",
            "TA-Lib MACD(12, 26, 9) line / c: (EMA12 - EMA26) / c; EMA26 seeded with the mean "
            "of closes 0..25, EMA12 with the mean of closes 14..25 (TA-Lib's alignment)",
            macd_warm,
            _C,
            seeded=True,
        ),
        FeatureSpec(
            "macd_signal",
            "TA-Lib MACD signal / c: EMA9 of the MACD line (seeded with the mean of its first 9 "
            "values), divided by c",
            macd_warm,
            _C,
            seeded=True,
        ),
        FeatureSpec("macd_hist", "(MACD line - signal) / c", macd_warm, _C, seeded=True),
        FeatureSpec("roc_10", "TA-Lib ROC(10): 100 * (c / c[t-10] - 1)", ROC_PERIOD, _C),
        FeatureSpec(
            "stoch_k",
            "TA-Lib STOCH(14, 3 SMA, 3 SMA) slow %K: SMA3 of fast %K = 100 * (c - LL14) / "
            "(HH14 - LL14); fast %K = 50 when HH14 == LL14",
            STOCH_FASTK - 1 + STOCH_SLOWK - 1 + STOCH_SLOWD - 1,
            _HLC,
        ),
        FeatureSpec(
            "stoch_d",
            "TA-Lib STOCH slow %D: SMA3 of slow %K (TA-Lib emits %K and %D from the same index)",
            STOCH_FASTK - 1 + STOCH_SLOWK - 1 + STOCH_SLOWD - 1,
            _HLC,
        ),
        FeatureSpec(
            "willr_14",
            "TA-Lib WILLR(14): -100 * (HH14 - c) / (HH14 - LL14); -50 when HH14 == LL14",
            WILLR_PERIOD - 1,
            _HLC,
        ),
        FeatureSpec(
            "cci_20",
            "TA-Lib CCI(20): (tp - SMA20(tp)) / (0.015 * mean |tp - SMA20(tp)|), "
            "tp = (h + l + c) / 3; 0 when tp is flat over the window",
            CCI_PERIOD - 1,
            _HLC,
        ),
        FeatureSpec(
            "adx_14",
            "TA-Lib ADX(14): Wilder average of DX = 100 |+DI - -DI| / (+DI + -DI) over Wilder "
            "sums of +DM, -DM and true range; first ADX = mean of the first 14 DX; a candle "
            "whose TR sum or DI sum is 0 leaves ADX unchanged (counts as DX 0 while seeding)",
            2 * ADX_PERIOD - 1,
            _HLC,
            seeded=True,
        ),
        FeatureSpec(
            "mfi_14",
            "TA-Lib MFI(14): 100 * P / (P + N), P and N sums over 14 candles of tp * v where tp "
            "rose / fell (a move within 1e-14 relative counts as no move); 50 when P + N == 0",
            MFI_PERIOD,
            _HLCV,
        ),
    )


def _volatility_and_trend() -> tuple[FeatureSpec, ...]:
    return (
        FeatureSpec(
            "bb_pctb_20",
            "TA-Lib BBANDS(20, 2, 2, SMA) %B: (c - lower) / (upper - lower), bands = SMA20(c) "
            "+- 2 population std; 0.5 when close is flat over the window",
            BB_PERIOD - 1,
            _C,
        ),
        FeatureSpec(
            "bb_width_20",
            "(upper - lower) / SMA20(c) of the same bands; 0 when flat",
            BB_PERIOD - 1,
            _C,
        ),
        FeatureSpec(
            "atr_14",
            "TA-Lib ATR(14) / c: Wilder average of true range (seeded with the mean of TR "
            "1..14) as a fraction of close (natr_14 / 100; ATR itself is price-scaled)",
            ATR_PERIOD,
            _HLC,
            seeded=True,
        ),
        FeatureSpec("natr_14", "TA-Lib NATR(14): 100 * ATR14 / c", ATR_PERIOD, _HLC, seeded=True),
        FeatureSpec("sma_ratio_5", "c / SMA5(c)", SMA_FAST - 1, _C),
        FeatureSpec("sma_ratio_20", "c / SMA20(c)", SMA_SLOW - 1, _C),
        FeatureSpec(
            "ema_ratio_12",
            "c / EMA12(c), TA-Lib EMA seeded with the mean of the first 12 closes",
            EMA_PERIOD - 1,
            _C,
            seeded=True,
        ),
        FeatureSpec(
            "vol_20",
            "population std of the last 20 one-candle log returns ln(c / c[t-1]); 0 when flat",
            VOL_PERIOD,
            _C,
        ),
        FeatureSpec(
            "volume_z_20",
            "(v - mean20(v)) / std20(v), population std over the last 20 volumes including "
            "this one; 0 when volume is flat over the window (e.g. all zero)",
            VOLUME_Z_PERIOD - 1,
            ("volume",),
        ),
        FeatureSpec("hl_range", "(h - l) / c", 0, _HLC),
        FeatureSpec("close_pos", "(c - l) / (h - l); 0.5 when h == l", 0, _HLC),
    )


def _calendar_and_flow() -> tuple[FeatureSpec, ...]:
    return (
        FeatureSpec(
            "hour_sin",
            "sin(2 pi H / 24), H = UTC hour (0..23) of the candle's open time",
            0,
            ("open_time",),
        ),
        FeatureSpec("hour_cos", "cos(2 pi H / 24)", 0, ("open_time",)),
        FeatureSpec(
            "taker_buy_ratio",
            "taker_buy_base / v; 0.5 when v == 0; NaN when the source has no taker volume "
            "(never invented)",
            0,
            ("taker_buy_base", "volume"),
            optional=True,
        ),
    )


FEATURE_SPECS: tuple[FeatureSpec, ...] = (
    *_returns(),
    *_momentum(),
    *_volatility_and_trend(),
    *_calendar_and_flow(),
)
FEATURE_NAMES: tuple[str, ...] = tuple(s.name for s in FEATURE_SPECS)
REQUIRED_FEATURES: tuple[str, ...] = tuple(s.name for s in FEATURE_SPECS if not s.optional)
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}
WARMUPS: np.ndarray = np.array([s.warmup for s in FEATURE_SPECS], dtype=np.int64)
MAX_WARMUP: int = int(max(s.warmup for s in FEATURE_SPECS if not s.optional))

_REQUIRED_COLUMNS = np.array([not s.optional for s in FEATURE_SPECS])


def warm_rows(rows: np.ndarray) -> np.ndarray:
    """Boolean mask of rows whose every REQUIRED feature is finite (ready to predict on)."""
    matrix = np.asarray(rows, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != len(FEATURE_NAMES):
        raise ValueError(
            f"warm_rows expects a (n, {len(FEATURE_NAMES)}) feature matrix, got {matrix.shape}"
        )
    # numpy types .all(axis=...) as scalar-or-array; on a 2-D matrix it is a 1-D array.
    return cast(np.ndarray, np.isfinite(matrix[:, _REQUIRED_COLUMNS]).all(axis=1))
