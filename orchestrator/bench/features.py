"""Benchmark the feature engine against a pandas rolling-window baseline, same run.

Prints one table:

* incremental: ``IncrementalFeatures.update`` with 1, 100 and 1,000 symbols per shard
  (one call per candle carrying every symbol), as symbol-candles/s and us per
  symbol-candle; the baseline is what most trading code does on each new candle: for
  each symbol, recompute the indicators with pandas rolling/ewm over the last
  ``--baseline-window`` candles and keep the last row;
* batch: ``compute_features`` rows/s on one long series, beside the same pandas
  indicators computed once over the whole series.

Data is a synthetic random walk generated here, or ``--data PATH`` (a candle parquet or
a Binance kline zip): its candles are replayed for every symbol, each at its own scale.

    tickcast bench features [--quick | --smoke] [--data PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.bench.harness import (
    add_smoke_flag,
    best_seconds,
    print_header,
    print_table,
    targets_not_judged,
)
from orchestrator.features import IncrementalFeatures, compute_features

TARGET_INCREMENTAL_1000 = 300_000  # symbol-candles/s, 1,000 symbols in one shard, 2 cores
TARGET_BATCH = 2_000_000  # rows/s


def synthetic_candles(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.002, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.002, n))
    volume = rng.lognormal(3.0, 1.0, n)
    return pd.DataFrame(
        {
            "open_time": 1_767_225_600_000 + 60_000 * np.arange(n, dtype=np.int64),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "taker_buy_base": volume * rng.uniform(0, 1, n),
        }
    )


def read_candles(path: Path) -> pd.DataFrame:
    if path.suffix == ".zip":
        frame = pd.read_csv(path, compression="zip")
        frame = frame.rename(columns={"taker_buy_volume": "taker_buy_base"})
    else:
        frame = pd.read_parquet(path)
    if "open_time" not in frame.columns:
        dates = pd.DatetimeIndex(frame["date"]).tz_convert("UTC").as_unit("ms")
        frame = frame.assign(open_time=dates.asi8)
    if "taker_buy_base" not in frame.columns:  # missing stays missing (NaN feature)
        frame = frame.assign(taker_buy_base=np.nan)
    return frame.reset_index(drop=True)


def candles(n: int, data: Path | None) -> pd.DataFrame:
    if data is None:
        return synthetic_candles(n)
    frame = read_candles(data)
    return frame.iloc[:n].reset_index(drop=True)


# --- the baseline: pandas rolling / ewm, per symbol -------------------------------------


def pandas_features(df: pd.DataFrame, vectorized_mad: bool = False) -> pd.DataFrame:
    """The same indicators as most trading code writes them (pandas rolling/ewm, `ta`-style
    CCI with rolling().apply for the mean deviation). A speed baseline, not a reference.

    ``vectorized_mad`` swaps that rolling().apply (most of the baseline's cost) for a
    numpy sliding window, to show the gap to the best plain-pandas version too."""
    c, h, lo, v = df["close"], df["high"], df["low"], df["volume"]
    out = {f"ret_{k}": np.log(c / c.shift(k)) for k in (1, 5, 15)}
    delta = c.diff()
    gain = delta.clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    loss = (-delta.clip(upper=0)).ewm(alpha=1 / 14, adjust=False).mean()
    out["rsi_14"] = 100 * gain / (gain + loss)
    macd = c.ewm(span=12, adjust=False).mean() - c.ewm(span=26, adjust=False).mean()
    signal = macd.ewm(span=9, adjust=False).mean()
    out.update(macd=macd / c, macd_signal=signal / c, macd_hist=(macd - signal) / c)
    out["roc_10"] = 100 * (c / c.shift(10) - 1)
    hh, ll = h.rolling(14).max(), lo.rolling(14).min()
    stoch_k = (100 * (c - ll) / (hh - ll)).rolling(3).mean()
    out.update(stoch_k=stoch_k, stoch_d=stoch_k.rolling(3).mean())
    out["willr_14"] = -100 * (hh - c) / (hh - ll)
    tp = (h + lo + c) / 3
    if vectorized_mad:
        w = np.lib.stride_tricks.sliding_window_view(tp.to_numpy(), 20)
        dev = np.abs(w - w.mean(axis=1, keepdims=True)).mean(axis=1)
        mad = pd.Series(np.concatenate((np.full(19, np.nan), dev)), index=tp.index)
    else:
        mad = tp.rolling(20).apply(lambda x: np.abs(x - x.mean()).mean(), raw=True)
    out["cci_20"] = (tp - tp.rolling(20).mean()) / (0.015 * mad)
    tr = pd.concat([h - lo, (h - c.shift()).abs(), (lo - c.shift()).abs()], axis=1).max(axis=1)
    atr = tr.ewm(alpha=1 / 14, adjust=False).mean()
    out.update(atr_14=atr / c, natr_14=100 * atr / c, adx_14=_pandas_adx(h, lo, tr))
    flow = tp * v
    rising = tp.diff() > 0
    pos = flow.where(rising, 0).rolling(14).sum()
    neg = flow.where(~rising, 0).rolling(14).sum()
    out["mfi_14"] = 100 * pos / (pos + neg)
    mid, sd = c.rolling(20).mean(), c.rolling(20).std(ddof=0)
    out.update(bb_pctb_20=(c - mid + 2 * sd) / (4 * sd), bb_width_20=4 * sd / mid)
    out.update(
        sma_ratio_5=c / c.rolling(5).mean(),
        sma_ratio_20=c / mid,
        ema_ratio_12=c / c.ewm(span=12, adjust=False).mean(),
    )
    out["vol_20"] = np.log(c).diff().rolling(20).std(ddof=0)
    out["volume_z_20"] = (v - v.rolling(20).mean()) / v.rolling(20).std(ddof=0)
    out.update(hl_range=(h - lo) / c, close_pos=(c - lo) / (h - lo))
    hour = pd.to_datetime(df["open_time"], unit="ms", utc=True).dt.hour
    out.update(hour_sin=np.sin(2 * np.pi * hour / 24), hour_cos=np.cos(2 * np.pi * hour / 24))
    out["taker_buy_ratio"] = df["taker_buy_base"] / v
    return pd.DataFrame(out)


def _pandas_adx(h: pd.Series, lo: pd.Series, tr: pd.Series) -> pd.Series:
    up, down = h.diff(), -lo.diff()
    plus = up.where((up > down) & (up > 0), 0.0).ewm(alpha=1 / 14, adjust=False).mean()
    minus = down.where((down > up) & (down > 0), 0.0).ewm(alpha=1 / 14, adjust=False).mean()
    atr = tr.ewm(alpha=1 / 14, adjust=False).mean()
    plus_di, minus_di = 100 * plus / atr, 100 * minus / atr
    dx = 100 * (plus_di - minus_di).abs() / (plus_di + minus_di)
    return dx.ewm(alpha=1 / 14, adjust=False).mean()


# --- measurements ------------------------------------------------------------------------


def shard_arrays(frame: pd.DataFrame, n_symbols: int) -> dict[str, np.ndarray]:
    """(candles, symbols) arrays: the same candles for every symbol at its own price scale."""
    scale = np.exp(np.linspace(-3, 3, n_symbols))
    out = {c: frame[c].to_numpy()[:, None] * scale for c in ("open", "high", "low", "close")}
    out["volume"] = np.repeat(frame["volume"].to_numpy()[:, None], n_symbols, axis=1)
    out["taker_buy_base"] = np.repeat(
        frame["taker_buy_base"].to_numpy()[:, None], n_symbols, axis=1
    )
    out["open_time"] = np.repeat(frame["open_time"].to_numpy()[:, None], n_symbols, axis=1)
    return out


def bench_incremental(frame: pd.DataFrame, n_symbols: int, warm: int = 40) -> float:
    """Seconds per symbol-candle for update() after warm-up (all symbols in every call)."""
    a = shard_arrays(frame, n_symbols)
    engine = IncrementalFeatures()
    slots = engine.add_symbols([f"bench:S{i}/USDT" for i in range(n_symbols)])

    def step(t: int) -> None:
        engine.update(
            slots,
            a["open_time"][t],
            a["open"][t],
            a["high"][t],
            a["low"][t],
            a["close"][t],
            a["volume"][t],
            a["taker_buy_base"][t],
        )

    for t in range(warm):
        step(t)
    start = time.perf_counter()
    for t in range(warm, len(frame)):
        step(t)
    return (time.perf_counter() - start) / ((len(frame) - warm) * n_symbols)


def bench_incremental_baseline(frame: pd.DataFrame, window: int, samples: int) -> float:
    """Seconds per symbol-candle when each new candle recomputes pandas over the window.

    The cost is per symbol (nothing is shared across symbols), so it is measured on
    ``samples`` symbol-candles and holds for any shard size."""
    start = time.perf_counter()
    for t in range(window, window + samples):
        pandas_features(frame.iloc[t - window : t + 1]).iloc[-1]
    return (time.perf_counter() - start) / samples


def bench_batch(frame: pd.DataFrame, fn, repeats: int) -> float:
    """Rows/s of fn(frame), best of ``repeats`` (the machine is shared)."""
    fn(frame.iloc[:1000])
    return len(frame) / best_seconds(fn, frame, repeats=repeats)


# (symbols per shard, candles) of the incremental cases; per-candle baseline samples; batch rows
SIZES = {
    "full": {
        "incremental": ((1, 4000), (100, 1500), (1000, 400)),
        "samples": 50,
        "batch": 200_000,
        "repeats": (5, 2, 3),
    },
    "quick": {
        "incremental": ((1, 800), (100, 300), (1000, 80)),
        "samples": 18,
        "batch": 40_000,
        "repeats": (5, 2, 3),
    },
    "smoke": {
        "incremental": ((1, 200), (100, 100), (1000, 80)),
        "samples": 3,
        "batch": 2_000,
        "repeats": (1, 1, 1),
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="candle parquet or Binance kline zip")
    parser.add_argument("--quick", action="store_true", help="a fifth of the candles")
    parser.add_argument(
        "--baseline-window",
        type=int,
        default=100,
        help="candles the per-candle pandas baseline recomputes over",
    )
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    sizes = SIZES["smoke" if args.smoke else "quick" if args.quick else "full"]
    print_header(
        "feature",
        "synthetic random walk" if args.data is None else str(args.data),
        note="other processes slow every figure alike",
        smoke=args.smoke,
    )
    rows = []
    for n_symbols, n_candles in sizes["incremental"]:
        frame = candles(max(n_candles, 80), args.data)
        ours = bench_incremental(frame, n_symbols)
        base = bench_incremental_baseline(
            candles(args.baseline_window + 60, args.data), args.baseline_window, sizes["samples"]
        )
        rows.append(
            (
                f"incremental, {n_symbols} symbol(s)/shard",
                1 / ours,
                ours,
                1 / base,
                base,
                "symbol-candles/s",
            )
        )
    big = candles(sizes["batch"], args.data)
    ours_repeats, base_repeats, fast_repeats = sizes["repeats"]
    ours_rows = bench_batch(big, compute_features, repeats=ours_repeats)
    base_rows = bench_batch(big, pandas_features, repeats=base_repeats)
    rows.append(
        (
            "batch compute_features",
            ours_rows,
            1 / ours_rows,
            base_rows,
            1 / base_rows,
            f"rows/s ({len(big):,} rows)",
        )
    )
    fast_rows = bench_batch(
        big, lambda f: pandas_features(f, vectorized_mad=True), repeats=fast_repeats
    )
    rows.append(
        (
            "  same, pandas without .apply",
            ours_rows,
            1 / ours_rows,
            fast_rows,
            1 / fast_rows,
            "rows/s (baseline's CCI vectorized)",
        )
    )
    print_table(HEADERS, table_rows(rows), formats=FORMATS)
    if args.smoke:
        targets_not_judged()
    else:
        print_targets(rows)
    return 0


HEADERS = ("case", "ours /s", "us each", "pandas /s", "us each", "speedup", "unit")
FORMATS = (None, ",.0f", ",.2f", ",.0f", ",.1f", None, None)


def table_rows(rows: list[tuple]) -> list[tuple]:
    return [
        (name, ours, ours_s * 1e6, base, base_s * 1e6, f"{ours / base:,.0f}x", unit)
        for name, ours, ours_s, base, base_s, unit in rows
    ]


def print_targets(rows: list[tuple]) -> None:
    incremental_1000, batch = rows[2][1], rows[3][1]
    for label, got, target in (
        ("incremental, 1000 symbols", incremental_1000, TARGET_INCREMENTAL_1000),
        ("batch", batch, TARGET_BATCH),
    ):
        verdict = "met" if got >= target else "NOT met"
        print(f"target {label}: >= {target:,}/s -> {got:,.0f}/s, {verdict}")


if __name__ == "__main__":
    sys.exit(main())
