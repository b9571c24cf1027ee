"""Arithmetic shared by both twins, so a live row and a backfilled row are the same numbers.

``IncrementalFeatures`` (one candle per call, many symbols) and ``compute_features`` (one
symbol, every candle) feed these functions arrays of different shapes but apply the same
elementwise operations in the same order. Elementwise add, multiply, divide, sqrt and
comparisons are exact IEEE operations, so the twins agree bit for bit wherever they reach
here with the same inputs. Two rules make that possible:

* rolling sums are sequential, oldest candle first (``seq_sum``), never numpy's pairwise
  reductions, whose rounding depends on memory layout;
* degenerate cases are decided by exact comparisons on raw values (a window is "flat" when
  its max equals its min), never by testing a computed standard deviation against zero.

Windows are arrays whose LAST axis is time, oldest first: ``(..., n)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orchestrator.features import specs as s

# Two numbers closer than this (relative to their magnitude) are "the same typical price"
# for the money flow index: current TA-Lib's scale-aware dead zone, kept so MFI agrees with it
# and stays scale-free (an absolute epsilon would depend on the quote currency).
MFI_DEAD_ZONE = 1e-14
# Every lag of close any feature reads (returns and rate of change).
CLOSE_LAGS: tuple[int, ...] = tuple(sorted({*s.RETURN_LAGS, s.ROC_PERIOD}))
_HOUR_MS = 3_600_000
_HOUR_ANGLE = 2.0 * np.pi * np.arange(24) / 24.0
HOUR_SIN = np.sin(_HOUR_ANGLE)
HOUR_COS = np.cos(_HOUR_ANGLE)


@dataclass(frozen=True)
class Recursion:
    """A seeded first-order recursion, TA-Lib style.

    The input ``x`` exists from candle index ``first``. The first ``length`` inputs are
    summed (sequentially); at index ``seed_index`` the state becomes that sum, or its mean
    when ``average``. After that ``y = decay * y + gain * x``. When ``valid`` names a mask,
    an invalid input adds 0 while seeding and leaves ``y`` unchanged afterwards (ADX).
    """

    name: str
    input: str
    first: int
    length: int
    decay: float
    gain: float
    average: bool
    valid: str | None = None

    @property
    def seed_index(self) -> int:
        return self.first + self.length - 1


def _ema(name: str, source: str, first: int, period: int) -> Recursion:
    alpha = 2.0 / (period + 1)
    return Recursion(name, source, first, period, 1.0 - alpha, alpha, True)


def _wilder_average(name: str, source: str, first: int, period: int) -> Recursion:
    return Recursion(name, source, first, period, (period - 1) / period, 1.0 / period, True)


def _wilder_sum(name: str, source: str, period: int) -> Recursion:
    # TA-Lib's ADX seeds its DM/TR sums with period - 1 values (candles 1..period-1), then
    # applies sum - sum / period + x from candle `period` on.
    return Recursion(name, source, 1, period - 1, (period - 1) / period, 1.0, False)


# Stage 1 reads only candle-derived inputs; stage 2 reads stage-1 results of the same candle.
STAGE1: tuple[Recursion, ...] = (
    _ema("ema_12", "close", 0, s.EMA_PERIOD),
    _ema("macd_slow", "close", 0, s.MACD_SLOW),
    # TA-Lib starts the fast EMA so that both seed on the same candle (index slow - 1).
    _ema("macd_fast", "close", s.MACD_SLOW - s.MACD_FAST, s.MACD_FAST),
    _wilder_average("rsi_gain", "gain", 1, s.RSI_PERIOD),
    _wilder_average("rsi_loss", "loss", 1, s.RSI_PERIOD),
    _wilder_average("atr", "true_range", 1, s.ATR_PERIOD),
    _wilder_sum("plus_dm", "plus_dm", s.ADX_PERIOD),
    _wilder_sum("minus_dm", "minus_dm", s.ADX_PERIOD),
    _wilder_sum("tr_sum", "true_range", s.ADX_PERIOD),
)
STAGE2: tuple[Recursion, ...] = (
    _ema("macd_signal", "macd_line", s.MACD_SLOW - 1, s.MACD_SIGNAL),
    Recursion(
        "adx",
        "dx",
        s.ADX_PERIOD,
        s.ADX_PERIOD,
        (s.ADX_PERIOD - 1) / s.ADX_PERIOD,
        1.0 / s.ADX_PERIOD,
        True,
        valid="dx_valid",
    ),
)


# --- windows ---------------------------------------------------------------------------


def seq_sum(windows: np.ndarray) -> np.ndarray:
    """Sum over the last axis, oldest first, one vector add per step (layout-independent)."""
    total = windows[..., 0] + windows[..., 1]
    for j in range(2, windows.shape[-1]):
        total += windows[..., j]
    return total


def window_mean(windows: np.ndarray) -> np.ndarray:
    return seq_sum(windows) / windows.shape[-1]


def window_std(windows: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Population std, two-pass (no E[x^2] - E[x]^2 cancellation on high prices)."""
    d = windows[..., 0] - mean
    total = d * d
    for j in range(1, windows.shape[-1]):
        np.subtract(windows[..., j], mean, out=d)
        total += np.multiply(d, d, out=d)
    return np.sqrt(total / windows.shape[-1])


def window_mean_abs_dev(windows: np.ndarray, mean: np.ndarray) -> np.ndarray:
    total = np.abs(windows[..., 0] - mean)
    d = np.empty_like(total)
    for j in range(1, windows.shape[-1]):
        np.subtract(windows[..., j], mean, out=d)
        total += np.abs(d, out=d)
    return total / windows.shape[-1]


def seq_max(windows: np.ndarray) -> np.ndarray:
    """Max over the last axis, NaN if any value is NaN (exact, so layout never matters)."""
    out = np.maximum(windows[..., 0], windows[..., 1])
    for j in range(2, windows.shape[-1]):
        np.maximum(out, windows[..., j], out=out)
    return out


def seq_min(windows: np.ndarray) -> np.ndarray:
    out = np.minimum(windows[..., 0], windows[..., 1])
    for j in range(2, windows.shape[-1]):
        np.minimum(out, windows[..., j], out=out)
    return out


def window_flat(windows: np.ndarray) -> np.ndarray:
    """True where every value in the window is identical (False while any is NaN)."""
    return seq_max(windows) == seq_min(windows)


# --- per-candle inputs -------------------------------------------------------------------


def typical_price(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    return (high + low + close) / 3.0


def log_return(close: np.ndarray, prev_close: np.ndarray) -> np.ndarray:
    return np.log(close / prev_close)


def true_range(high: np.ndarray, low: np.ndarray, prev_close: np.ndarray) -> np.ndarray:
    rng = np.maximum(high - low, np.abs(high - prev_close))
    return np.maximum(rng, np.abs(low - prev_close))


def directional_movement(
    high: np.ndarray, low: np.ndarray, prev_high: np.ndarray, prev_low: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(+DM, -DM) of one candle, TA-Lib's case analysis (ties give neither)."""
    up = high - prev_high
    down = prev_low - low
    minus = np.where((down > 0) & (up < down), down, 0.0)
    plus = np.where((up > 0) & (up > down), up, 0.0)
    return plus, minus


def gains_losses(close: np.ndarray, prev_close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = close - prev_close
    return np.where(d < 0, 0.0, d), np.where(d < 0, -d, 0.0)


def money_flows(
    tp: np.ndarray, prev_tp: np.ndarray, volume: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) raw money flow tp * v, split by the direction of tp."""
    d = tp - prev_tp
    still = np.abs(d) <= MFI_DEAD_ZONE * (np.abs(tp) + np.abs(prev_tp))
    flow = np.where(still, 0.0, tp * volume)
    falling = d < 0
    return np.where(falling, 0.0, flow), np.where(falling, flow, 0.0)


def stoch_fast_k(close: np.ndarray, hh: np.ndarray, ll: np.ndarray) -> np.ndarray:
    return _neutral_ratio(100.0 * (close - ll), hh - ll, 50.0)


def directional_index(
    plus_dm: np.ndarray, minus_dm: np.ndarray, tr_sum: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(DX, valid): DX is undefined when the TR sum or the DI sum is zero."""
    minus_di = 100.0 * (minus_dm / tr_sum)
    plus_di = 100.0 * (plus_dm / tr_sum)
    di_sum = minus_di + plus_di
    valid = (tr_sum != 0) & (di_sum != 0)
    return 100.0 * (np.abs(minus_di - plus_di) / di_sum), valid


def invalid_candles(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    taker_buy_base: np.ndarray | None,
) -> np.ndarray:
    """Rows the engine refuses: non-finite or non-positive prices, high < low, negative or
    non-finite volume, negative or infinite taker volume (NaN taker volume means missing)."""
    prices = np.stack([open_, high, low, close])
    bad = ~(np.isfinite(prices).all(axis=0) & (prices > 0).all(axis=0) & (high >= low))
    bad |= ~(np.isfinite(volume) & (volume >= 0))
    if taker_buy_base is not None:
        bad |= ~(np.isnan(taker_buy_base) | (np.isfinite(taker_buy_base) & (taker_buy_base >= 0)))
    return bad


# --- final formulas ----------------------------------------------------------------------


def _neutral_ratio(num: np.ndarray, den: np.ndarray, neutral: float) -> np.ndarray:
    """num / den, or ``neutral`` where den == 0 (never inf)."""
    out = num / den
    out[den == 0] = neutral
    return out


def _return_features(v: dict) -> dict[str, np.ndarray]:
    c = v["close"]
    out = {f"ret_{k}": np.log(c / v[f"close_lag_{k}"]) for k in s.RETURN_LAGS}
    out["roc_10"] = (c / v[f"close_lag_{s.ROC_PERIOD}"] - 1.0) * 100.0
    return out


def _momentum_features(v: dict) -> dict[str, np.ndarray]:
    c, gain, loss = v["close"], v["rsi_gain"], v["rsi_loss"]
    hh, ll = v["willr_hh"], v["willr_ll"]
    pos, neg = v["pos_flow_sum"], v["neg_flow_sum"]
    tp_dev = v["tp"] - v["tp_mean"]
    return {
        "rsi_14": _neutral_ratio(100.0 * gain, gain + loss, 50.0),
        "macd": v["macd_line"] / c,
        "macd_signal": v["macd_signal"] / c,
        "macd_hist": (v["macd_line"] - v["macd_signal"]) / c,
        "stoch_k": v["slow_k"],
        "stoch_d": v["slow_d"],
        "willr_14": _neutral_ratio(-100.0 * (hh - c), hh - ll, -50.0),
        "cci_20": np.where(v["tp_flat"], 0.0, _neutral_ratio(tp_dev, 0.015 * v["tp_mad"], 0.0)),
        "adx_14": v["adx"],
        "mfi_14": _neutral_ratio(100.0 * pos, pos + neg, 50.0),
    }


def _volatility_features(v: dict) -> dict[str, np.ndarray]:
    c, mean, std, flat = v["close"], v["close_mean"], v["close_std"], v["close_flat"]
    upper, lower = mean + s.BB_DEVS * std, mean - s.BB_DEVS * std
    h, low = v["high"], v["low"]
    return {
        "bb_pctb_20": np.where(flat, 0.5, _neutral_ratio(c - lower, upper - lower, 0.5)),
        "bb_width_20": np.where(flat, 0.0, (upper - lower) / mean),
        "atr_14": v["atr"] / c,
        "natr_14": (v["atr"] / c) * 100.0,
        "sma_ratio_5": c / v["sma_5"],
        "sma_ratio_20": c / mean,
        "ema_ratio_12": c / v["ema_12"],
        "vol_20": np.where(v["logret_flat"], 0.0, v["logret_std"]),
        "volume_z_20": np.where(
            v["volume_flat"],
            0.0,
            _neutral_ratio(v["volume"] - v["volume_mean"], v["volume_std"], 0.0),
        ),
        "hl_range": (h - low) / c,
        "close_pos": _neutral_ratio(c - low, h - low, 0.5),
    }


def _calendar_and_flow_features(v: dict) -> dict[str, np.ndarray]:
    hour = (v["open_time"] // _HOUR_MS) % 24
    taker, volume = v["taker_buy_base"], v["volume"]
    if taker is None:
        ratio = np.full(volume.shape, np.nan)
    else:
        ratio = np.where(np.isnan(taker), np.nan, _neutral_ratio(taker, volume, 0.5))
    return {"hour_sin": HOUR_SIN[hour], "hour_cos": HOUR_COS[hour], "taker_buy_ratio": ratio}


def assemble(values: dict, out: np.ndarray | None = None) -> np.ndarray:
    """Feature matrix, TRANSPOSED: (len(FEATURE_NAMES), n), from one twin's values; written
    into ``out`` when given (the batch twin's rows of its output).

    Column-major because both twins want it: pandas stores a frame's columns that way, and
    the incremental twin's rows are a cheap transpose of a small block.

    Callers wrap this in ``np.errstate(divide="ignore", invalid="ignore")``: every division
    by zero here is replaced by its documented neutral value before it is returned.
    """
    columns = {
        **_return_features(values),
        **_momentum_features(values),
        **_volatility_features(values),
        **_calendar_and_flow_features(values),
    }
    if out is None:
        out = np.empty((len(s.FEATURE_NAMES), values["close"].shape[0]))
    for i, name in enumerate(s.FEATURE_NAMES):
        out[i] = columns[name]
    return out
