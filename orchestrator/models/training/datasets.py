"""Training sets: features and labels of one timeframe, each symbol computed on its own and
then pooled (pure: candles in, arrays out).

Features come only from ``compute_features`` (the batch twin of the live engine) and are
rounded to float32 once, here: that is the precision an ONNX model receives, so the native
model is trained on exactly the values the served one will see. Every symbol's series is
split where candles are missing, so no feature, label or baseline ever spans a gap or a
symbol boundary; pooled rows are ordered by (open time, symbol), never shuffled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from orchestrator.features import REQUIRED_FEATURES, compute_features
from orchestrator.models.labels import (
    LABEL_SPECS,
    forward_volatility,
    next_direction,
    next_log_return,
    swing_points,
    trailing_volatility,
)

MODEL_TYPES = ("direction", "volatility", "return", "swing")
HIST_VOLATILITY = "hist_volatility"  # the volatility model's naive forecast, known at t


def contiguous_runs(open_time: np.ndarray, step_ms: int) -> list[tuple[int, int]]:
    """[start, stop) row ranges of consecutive candles (each exactly ``step_ms`` apart)."""
    breaks = np.flatnonzero(np.diff(np.asarray(open_time)) != step_ms) + 1
    edges = [0, *breaks.tolist(), len(open_time)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def labelled_candles(candles: pd.DataFrame, step_ms: int) -> pd.DataFrame:
    """One symbol's warm rows: REQUIRED_FEATURES, open_time, every label, the baseline.

    ``candles``: one symbol, time-ordered, with ``open_time`` (epoch ms), open, high, low,
    close, volume. Rows before the features are warm are dropped; labels stay NaN where
    their future is unknown (the model types drop those rows themselves).
    """
    open_time = candles["open_time"].to_numpy(np.int64)
    runs = [_labelled_run(candles.iloc[a:b]) for a, b in contiguous_runs(open_time, step_ms)]
    table = pd.concat(runs, ignore_index=True)
    warm = np.isfinite(table[list(REQUIRED_FEATURES)].to_numpy()).all(axis=1)
    return table[warm].reset_index(drop=True)


def _labelled_run(candles: pd.DataFrame) -> pd.DataFrame:
    close = candles["close"].to_numpy(np.float64)
    high, low = candles["high"].to_numpy(np.float64), candles["low"].to_numpy(np.float64)
    features = compute_features(candles.reset_index(drop=True))[list(REQUIRED_FEATURES)]
    return features.assign(
        **{
            "open_time": candles["open_time"].to_numpy(np.int64),
            "direction": next_direction(close),
            "return": next_log_return(close),
            "volatility": forward_volatility(close),
            "swing": swing_points(high, low),
            HIST_VOLATILITY: trailing_volatility(close),
        }
    )


@dataclass(frozen=True)
class TimeframeSet:
    """Every symbol's labelled rows of one timeframe, pooled and ordered by time."""

    timeframe: str
    step_ms: int
    source: str  # which data set(s) the candles came from
    features: np.ndarray  # (n, len(REQUIRED_FEATURES)) float32
    open_time: np.ndarray  # (n,) int64 ms
    symbol_codes: np.ndarray  # (n,) int64 index into symbols
    symbols: tuple[str, ...]
    columns: dict[str, np.ndarray]  # labels by model type, and HIST_VOLATILITY


def pool_symbols(
    tables: dict[str, pd.DataFrame], timeframe: str, step_ms: int, source: str
) -> TimeframeSet:
    """Pool per-symbol ``labelled_candles`` tables, ordered by (open time, symbol)."""
    symbols = tuple(sorted(tables))
    frame = pd.concat(
        [tables[s].assign(symbol_code=i) for i, s in enumerate(symbols)], ignore_index=True
    )
    frame = frame.sort_values(["open_time", "symbol_code"], kind="stable")
    return TimeframeSet(
        timeframe=timeframe,
        step_ms=step_ms,
        source=source,
        features=frame[list(REQUIRED_FEATURES)].to_numpy(np.float32),
        open_time=frame["open_time"].to_numpy(np.int64),
        symbol_codes=frame["symbol_code"].to_numpy(np.int64),
        symbols=symbols,
        columns={c: frame[c].to_numpy(np.float64) for c in (*MODEL_TYPES, HIST_VOLATILITY)},
    )


@dataclass(frozen=True)
class ModelData:
    """The rows one model type trains on: features, target, time, and its naive forecast."""

    model_type: str
    timeframe: str
    features: np.ndarray  # (n, f) float32
    target: np.ndarray  # (n,) float64; class index for classifiers
    open_time: np.ndarray  # (n,) int64 ms
    purge_ms: int  # label horizon in ms: walk-forward purges training rows this close
    baseline: np.ndarray | None  # (n,) row-wise naive forecast for regressors, else None
    feature_names: tuple[str, ...] = REQUIRED_FEATURES


def model_data(data: TimeframeSet, model_type: str) -> ModelData:
    """Rows of ``data`` whose ``model_type`` label (and baseline) is known."""
    target = data.columns[model_type]
    baseline = _row_baseline(data, model_type)
    keep = np.isfinite(target) & (np.isfinite(baseline) if baseline is not None else True)
    return ModelData(
        model_type=model_type,
        timeframe=data.timeframe,
        features=data.features[keep],
        target=target[keep],
        open_time=data.open_time[keep],
        purge_ms=LABEL_SPECS[model_type].horizon * data.step_ms,
        baseline=None if baseline is None else baseline[keep],
    )


def _row_baseline(data: TimeframeSet, model_type: str) -> np.ndarray | None:
    if model_type == "volatility":
        return data.columns[HIST_VOLATILITY]
    if model_type == "return":
        return np.zeros(len(data.open_time))
    return None
