"""Batch twin: every feature of one symbol's candles at once (training, backfill).

Same definitions and the same arithmetic as ``IncrementalFeatures`` (see ``kernels``):
rolling windows are ``sliding_window_view``s over the series padded with NaN in front
(NaN standing for "before the series began", as in the incremental history), and the
EMA / Wilder recursions run through ``scipy.signal.lfilter``, whose first-order update
``gain * x + decay * y`` rounds exactly like the incremental twin's.

Rows are computed in blocks of ``_BLOCK_ROWS`` and written into the output block by block.
Whole-series temporaries (~60 arrays as long as the series) made the kernel fault in ~100 MB
of fresh pages per call, which cost more than the arithmetic; a block's temporaries are
small enough for malloc to recycle and for the caches to hold. Blocking changes no number:
a non-seeded value reads only the candles its warm-up spans (``_LEAD_ROWS``), so each block
is computed from that many earlier candles too, and every recursion continues from its
value on the previous block's last candle, exactly as ``lfilter`` continues within a call.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from orchestrator.features import kernels as k
from orchestrator.features import specs as s

_PRICE_VOLUME = ("open", "high", "low", "close", "volume")
# A block's float64 temporaries (block + lead + window rows) stay under 128 KiB, glibc's
# default mmap threshold, so malloc recycles them even where that threshold never rises.
_BLOCK_ROWS = 16_000
# specs: every non-seeded feature depends only on its last warmup + 1 candles.
_LEAD_ROWS = max(spec.warmup for spec in s.FEATURE_SPECS if not spec.seeded)
# Every recursion seeds within the first block; later blocks only continue them.
if max(r.seed_index for r in (*k.STAGE1, *k.STAGE2)) >= _BLOCK_ROWS:
    raise ImportError("the first block must seed every recursion")


def compute_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Features of one symbol's time-ordered candles; same index, columns FEATURE_NAMES.

    ``frame`` has ``open_time`` (int64 epoch ms) or ``date`` (tz-aware), open, high, low,
    close, volume and optionally ``taker_buy_base``. Rows before a feature's warm-up are
    NaN. Invalid candles or non-increasing times raise ValueError naming the row.
    """
    columns = _columns(frame)
    n = len(frame)
    by_feature = np.empty((len(s.FEATURE_NAMES), n))
    carry: dict[str, float] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for start in range(0, n, _BLOCK_ROWS):
            stop = min(n, start + _BLOCK_ROWS)
            values = _block_values(columns, start, stop)
            _add_recursions(values, carry)
            k.assemble(values, out=by_feature[:, start:stop])
    for i, warmup in enumerate(s.WARMUPS):
        by_feature[i, : min(int(warmup), n)] = np.nan
    return pd.DataFrame(by_feature.T, index=frame.index, columns=list(s.FEATURE_NAMES), copy=False)


def _columns(frame: pd.DataFrame) -> dict:
    missing = [c for c in _PRICE_VOLUME if c not in frame.columns]
    if missing:
        raise ValueError(f"candle frame lacks columns {missing}")
    cols = {c: frame[c].to_numpy(dtype=np.float64) for c in _PRICE_VOLUME}
    taker = frame["taker_buy_base"] if "taker_buy_base" in frame.columns else None
    cols["taker_buy_base"] = None if taker is None else taker.to_numpy(np.float64, na_value=np.nan)
    cols["open_time"] = _open_time_ms(frame)
    _check_rows(frame, cols)
    return cols


def _open_time_ms(frame: pd.DataFrame) -> np.ndarray:
    if "open_time" in frame.columns:
        return frame["open_time"].to_numpy(dtype=np.int64)
    if "date" not in frame.columns:
        raise ValueError("candle frame needs an 'open_time' (epoch ms) or 'date' column")
    dates = pd.DatetimeIndex(frame["date"])
    if dates.tz is None:
        raise ValueError("candle 'date' column must be timezone-aware (UTC)")
    return dates.tz_convert("UTC").tz_localize(None).as_unit("ms").asi8.copy()


def _check_rows(frame: pd.DataFrame, c: dict) -> None:
    bad = k.invalid_candles(
        c["open"], c["high"], c["low"], c["close"], c["volume"], c["taker_buy_base"]
    )
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"invalid candle at row {frame.index[i]!r}: "
            f"{frame.iloc[i][list(_PRICE_VOLUME)].to_dict()}"
        )
    steps = np.diff(c["open_time"])
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0)) + 1
        raise ValueError(f"open_time must increase strictly; row {frame.index[i]!r} does not")


def _block_values(columns: dict, start: int, stop: int) -> dict:
    """Candle and window values of rows start..stop-1, computed from the _LEAD_ROWS candles
    before ``start`` on (what those rows read), then trimmed to the block."""
    lead = min(start, _LEAD_ROWS)
    piece = {
        name: None if col is None else col[start - lead : stop] for name, col in columns.items()
    }
    values = _window_values(piece)
    return {name: None if v is None else v[lead:] for name, v in values.items()}


def _windows(x: np.ndarray, n: int) -> np.ndarray:
    """(len(x), n) view: row t holds x[t-n+1..t], NaN where that is before the start."""
    return sliding_window_view(np.concatenate((np.full(n - 1, np.nan), x)), n)


def _lag(x: np.ndarray, lag: int) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    if lag < len(x):
        out[lag:] = x[: len(x) - lag]
    return out


def _window_values(c: dict) -> dict:
    close, high, low, volume = c["close"], c["high"], c["low"], c["volume"]
    prev_close = _lag(close, 1)
    tp = k.typical_price(high, low, close)
    values = {**c, "tp": tp, "true_range": k.true_range(high, low, prev_close)}
    values["plus_dm"], values["minus_dm"] = k.directional_movement(
        high, low, _lag(high, 1), _lag(low, 1)
    )
    values["gain"], values["loss"] = k.gains_losses(close, prev_close)
    pos, neg = k.money_flows(tp, _lag(tp, 1), volume)
    logret = k.log_return(close, prev_close)
    values.update(_stochastic(close, high, low))
    values.update(_window_stats(close, volume, logret, tp, pos, neg))
    return values


def _rolling_flat(x: np.ndarray, n: int) -> np.ndarray:
    """window_flat over every n-window, in O(len) by counting changes (same booleans:
    a window is flat iff none of its n - 1 consecutive pairs differ; NaN always differs)."""
    changed = np.ones(len(x), dtype=np.int64)
    changed[1:] = x[1:] != x[:-1]
    count = np.cumsum(changed)
    flat = np.zeros(len(x), dtype=bool)
    if len(x) >= n:
        flat[n - 1 :] = count[n - 1 :] == count[: len(x) - n + 1]
    return flat


def _stochastic(close: np.ndarray, high: np.ndarray, low: np.ndarray) -> dict:
    hh = k.seq_max(_windows(high, s.STOCH_FASTK))
    ll = k.seq_min(_windows(low, s.STOCH_FASTK))
    fast_k = k.stoch_fast_k(close, hh, ll)
    slow_k = k.window_mean(_windows(fast_k, s.STOCH_SLOWK))
    same = s.WILLR_PERIOD == s.STOCH_FASTK
    return {
        "slow_k": slow_k,
        "slow_d": k.window_mean(_windows(slow_k, s.STOCH_SLOWD)),
        "willr_hh": hh if same else k.seq_max(_windows(high, s.WILLR_PERIOD)),
        "willr_ll": ll if same else k.seq_min(_windows(low, s.WILLR_PERIOD)),
    }


def _window_stats(close, volume, logret, tp, pos, neg) -> dict:
    out = {}
    periods = (
        ("close", close, s.BB_PERIOD),
        ("volume", volume, s.VOLUME_Z_PERIOD),
        ("logret", logret, s.VOL_PERIOD),
    )
    for name, x, period in periods:
        w = _windows(x, period)
        out[f"{name}_mean"] = mean = k.window_mean(w)
        out[f"{name}_std"] = k.window_std(w, mean)
        out[f"{name}_flat"] = _rolling_flat(x, period)
    tp_window = _windows(tp, s.CCI_PERIOD)
    out["tp_mean"] = tp_mean = k.window_mean(tp_window)
    out["tp_mad"] = k.window_mean_abs_dev(tp_window, tp_mean)
    out["tp_flat"] = _rolling_flat(tp, s.CCI_PERIOD)
    out["pos_flow_sum"] = k.seq_sum(_windows(pos, s.MFI_PERIOD))
    out["neg_flow_sum"] = k.seq_sum(_windows(neg, s.MFI_PERIOD))
    out["sma_5"] = k.window_mean(_windows(close, s.SMA_FAST))
    for lag in k.CLOSE_LAGS:
        out[f"close_lag_{lag}"] = _lag(close, lag)
    return out


def _add_recursions(values: dict, carry: dict[str, float]) -> None:
    """Add every recursion's values over this block. ``carry`` maps each recursion to its
    value on the previous block's last candle; empty on the first block, which seeds them."""
    for r in k.STAGE1:
        values[r.name] = _block_recursion(values[r.input], r, carry)
    values["macd_line"] = values["macd_fast"] - values["macd_slow"]
    values["dx"], values["dx_valid"] = k.directional_index(
        values["plus_dm"], values["minus_dm"], values["tr_sum"]
    )
    for r in k.STAGE2:
        values[r.name] = _block_recursion(values[r.input], r, carry, values.get(r.valid))


def _block_recursion(
    x: np.ndarray, r: k.Recursion, carry: dict[str, float], valid: np.ndarray | None = None
) -> np.ndarray:
    if r.name in carry:
        y = continued_recursion(x, r, carry[r.name], valid)
    else:
        y = seeded_recursion(x, r, valid)
    carry[r.name] = float(y[-1])
    return y


def seeded_recursion(x: np.ndarray, r: k.Recursion, valid: np.ndarray | None = None) -> np.ndarray:
    """Full-length values of recursion ``r`` over input ``x``; NaN before its seed index."""
    out = np.full(x.shape, np.nan)
    seed_at = r.seed_index
    if len(x) <= seed_at:
        return out
    seed_inputs = x[r.first : seed_at + 1]
    if valid is not None:
        seed_inputs = np.where(valid[r.first : seed_at + 1], seed_inputs, 0.0)
    total = np.cumsum(seed_inputs)[-1]  # sequential, like the incremental accumulator
    out[seed_at] = seed = total / r.length if r.average else total
    rest_valid = None if valid is None else valid[seed_at + 1 :]
    out[seed_at + 1 :] = continued_recursion(x[seed_at + 1 :], r, seed, rest_valid)
    return out


def continued_recursion(
    x: np.ndarray, r: k.Recursion, last: float, valid: np.ndarray | None = None
) -> np.ndarray:
    """Values of the seeded recursion ``r`` over ``x``, given its value ``last`` before x[0]."""
    # Imported here: scipy.signal costs ~0.7 s of imports, paid only by the processes that
    # compute batch features (training, backfill), not by every model replica and actor.
    from scipy.signal import lfilter

    steps = x if valid is None else x[valid]
    # lfilter's state is decay * y, so passing decay * last continues the run bit for bit.
    y = lfilter([r.gain], [1.0, -r.decay], steps, zi=[r.decay * last])[0] if len(steps) else steps
    if valid is None:
        return y
    # an invalid input repeats the previous value
    return np.concatenate(([last], y))[np.cumsum(valid)]
