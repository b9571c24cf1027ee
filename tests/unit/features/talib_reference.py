"""Every feature re-derived from TA-Lib (or pandas where TA-Lib has no such indicator).

Where a window is degenerate TA-Lib's answer differs from ours by documented choice
(it reports 0 where we report the neutral value); the reference applies our rule there,
deciding "degenerate" from the raw candles with TA-Lib's own MAX/MIN, never from our code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import talib
from talib import MA_Type

from orchestrator.features import FEATURE_NAMES
from tests.unit.features.helpers import open_time_ms

# Power-of-two scale: multiplying by it is exact, so it only moves tiny variances away
# from TA-Lib's absolute "is zero" epsilon on STDDEV without changing a single bit.
_EXACT_SCALE = 2.0**20


def reference_features(frame: pd.DataFrame) -> np.ndarray:
    """(n, len(FEATURE_NAMES)) reference matrix for one symbol's candles."""
    c, h, lo, v = (frame[x].to_numpy(np.float64) for x in ("close", "high", "low", "volume"))
    ref = {
        **_returns(c),
        **_momentum(h, lo, c, v),
        **_bands(h, lo, c, v),
        **_candle_shape(frame, h, lo, c, v),
    }
    return np.column_stack([ref[name] for name in FEATURE_NAMES])


def _flat(x: np.ndarray, n: int) -> np.ndarray:
    return talib.MAX(x, n) == talib.MIN(x, n)


def _any_recent(flag: np.ndarray, n: int) -> np.ndarray:
    return pd.Series(flag.astype(float)).rolling(n, min_periods=1).max().to_numpy() > 0


def _returns(c: np.ndarray) -> dict:
    out = {f"ret_{k}": np.log(talib.ROCR(c, k)) for k in (1, 5, 15)}
    out["roc_10"] = talib.ROC(c, 10)
    return out


def _momentum(h, lo, c, v) -> dict:
    rsi = talib.RSI(c, 14)
    no_move_yet = np.maximum.accumulate(np.abs(np.diff(c, prepend=c[0]))) == 0
    macd, signal, hist = talib.MACD(c, 12, 26, 9)
    return {
        "rsi_14": np.where(no_move_yet & np.isfinite(rsi), 50.0, rsi),
        "macd": macd / c,
        "macd_signal": signal / c,
        "macd_hist": hist / c,
        **_stochastic(h, lo, c),
        "willr_14": np.where(
            talib.MAX(h, 14) == talib.MIN(lo, 14), -50.0, talib.WILLR(h, lo, c, 14)
        ),
        "cci_20": talib.CCI(h, lo, c, 20),
        "adx_14": talib.ADX(h, lo, c, 14),
        "mfi_14": _mfi(h, lo, c, v),
    }


def _stochastic(h, lo, c) -> dict:
    slow_k, slow_d = talib.STOCH(h, lo, c, 14, 3, MA_Type.SMA, 3, MA_Type.SMA)
    flat = talib.MAX(h, 14) == talib.MIN(lo, 14)
    if not flat.any():
        return {"stoch_k": slow_k, "stoch_d": slow_d}
    # Where a flat range touched the %K/%D window, rebuild STOCH from its TA-Lib parts with
    # our neutral fast %K (50 instead of TA-Lib's 0).
    fast_k = np.where(flat, 50.0, talib.STOCHF(h, lo, c, 14, 3, MA_Type.SMA)[0])
    rebuilt_k = talib.SMA(fast_k, 3)
    rebuilt_d = talib.SMA(rebuilt_k, 3)
    rebuilt_k[:17] = np.nan
    return {
        "stoch_k": np.where(_any_recent(flat, 3), rebuilt_k, slow_k),
        "stoch_d": np.where(_any_recent(flat, 5), rebuilt_d, slow_d),
    }


def _mfi(h, lo, c, v) -> np.ndarray:
    tp = (h + lo + c) / 3.0
    no_flow = (np.diff(tp, prepend=np.nan) == 0) | (v == 0)
    window_empty = pd.Series(no_flow.astype(float)).rolling(14).min().to_numpy() == 1
    return np.where(window_empty, 50.0, talib.MFI(h, lo, c, v, 14))


def _bands(h, lo, c, v) -> dict:
    upper, middle, lower = talib.BBANDS(c, 20, 2.0, 2.0, MA_Type.SMA)
    flat = _flat(c, 20)
    with np.errstate(divide="ignore", invalid="ignore"):
        pctb = (c - lower) / (upper - lower)
        vol_z = (v - talib.SMA(v, 20)) / talib.STDDEV(v, 20, 1.0)
    log_ret = np.log(talib.ROCR(c, 1))
    return {
        "bb_pctb_20": np.where(flat, 0.5, pctb),
        "bb_width_20": np.where(flat, 0.0, (upper - lower) / middle),
        "atr_14": talib.ATR(h, lo, c, 14) / c,
        "natr_14": talib.NATR(h, lo, c, 14),
        "sma_ratio_5": c / talib.SMA(c, 5),
        "sma_ratio_20": c / talib.SMA(c, 20),
        "ema_ratio_12": c / talib.EMA(c, 12),
        "vol_20": talib.STDDEV(log_ret * _EXACT_SCALE, 20, 1.0) / _EXACT_SCALE,
        "volume_z_20": np.where(_flat(v, 20), 0.0, vol_z),
    }


def _candle_shape(frame: pd.DataFrame, h, lo, c, v) -> dict:
    hour = pd.to_datetime(open_time_ms(frame), unit="ms", utc=True).hour.to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        close_pos = np.where(h == lo, 0.5, (c - lo) / (h - lo))
        if "taker_buy_base" in frame.columns:
            taker = frame["taker_buy_base"].to_numpy(np.float64)
            ratio = np.where(v == 0, 0.5, taker / v)
            ratio[np.isnan(taker)] = np.nan
        else:
            ratio = np.full(len(c), np.nan)
    return {
        "hl_range": (h - lo) / c,
        "close_pos": close_pos,
        "hour_sin": np.sin(2 * np.pi * hour / 24),
        "hour_cos": np.cos(2 * np.pi * hour / 24),
        "taker_buy_ratio": ratio,
    }
