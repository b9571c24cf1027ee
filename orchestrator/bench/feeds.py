"""Benchmark the candle intake path against plain pandas doing the same work, in one run.

Rows (candles per second, best of ``--repeat`` runs):
  (a0) parse alone (unzip + CSV -> CANDLE_SCHEMA), for reference
  (a) parse + validate Binance kline zips  vs  pd.read_csv + pandas checks
  (b) incremental 1m -> 6 timeframes, 1,000 symbols  vs  pandas resample per symbol
  (c) batch resample 1m -> 6 timeframes  vs  one pandas group-by over (symbol, bucket)
  (d) replay through a feed actor (Parquet files -> gate -> sharded batches to 2 counting
      shard actors, as fast as possible)  vs  pandas reading the same files and walking
      them minute by minute in one process, with the same checks and no Ray.
For (b) and (c) a rate counts each 1m candle once, although it feeds all six timeframes.

    tickcast bench feeds [--data ../shared/data] [--symbols 1000] [--minutes 1440]
        [--no-replay] [--smoke]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from orchestrator.bench.harness import (
    DEFAULT_DATA,
    add_smoke_flag,
    apply_smoke,
    best_rate,
    data_root,
    print_header,
    print_table,
    targets_not_judged,
)
from orchestrator.market.aggregate import DEFAULT_TIMEFRAMES, TimeframeAggregator
from orchestrator.market.archives import BINANCE_KLINE_COLUMNS, read_candles
from orchestrator.market.resample import resample
from orchestrator.market.schema import candles_from_columns
from orchestrator.market.timeframes import MINUTE_MS, timeframe_ms

try:
    from orchestrator.market.validate import validate_candles
except ImportError:  # another module's job; bench parsing alone until it exists
    validate_candles = None

START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
PARSE_TARGET, AGGREGATE_TARGET = 1_000_000, 500_000
PANDAS_RULES = {"5m": "5min", "15m": "15min", "30m": "30min", "1h": "1h", "4h": "4h", "1d": "1D"}


# --- (a) parse + validate ---------------------------------------------------------------------


def archive_paths(data: Path, scratch: Path, smoke: bool = False) -> tuple[list[Path], str]:
    """The real Binance zips under ``data`` (a smoke run: the first one), else a synthetic
    zip of a month of minutes (a smoke run: 2,000)."""
    found = sorted((data / "binance-usdm-1m").glob("*.zip"))[: 1 if smoke else None]
    if found:
        return found, f"{len(found)} real zip{'s' if len(found) > 1 else ''}"
    rows = 2_000 if smoke else 40_320
    return [write_synthetic_zip(scratch, "SYNTHUSDT", rows)], "1 synthetic zip (no --data)"


def write_synthetic_zip(folder: Path, symbol: str, rows: int) -> Path:
    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, rows)))
    open_ = np.r_[100.0, close[:-1]]
    times = START_MS + np.arange(rows, dtype=np.int64) * MINUTE_MS
    volume = rng.exponential(10, rows).round(2)
    columns = [
        times,
        open_.round(4),
        (np.maximum(open_, close) * 1.0005).round(4),
        (np.minimum(open_, close) * 0.9995).round(4),
        close.round(4),
        volume,
        times + MINUTE_MS - 1,
        (volume * close).round(5),
        rng.integers(1, 900, rows),
        (volume / 2).round(2),
        (volume * close / 2).round(5),
        np.zeros(rows, np.int64),
    ]
    buffer = io.BytesIO()
    pa_csv.write_csv(pa.table(dict(zip(BINANCE_KLINE_COLUMNS, columns, strict=True))), buffer)
    path = folder / f"{symbol}-1m-2026-01.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{symbol}-1m-2026-01.csv", buffer.getvalue().replace(b'"', b""))
    return path


def parse_and_validate(paths: list[Path], validate: bool) -> int:
    rows = 0
    for path in paths:
        candles = read_candles(path, "binanceusdm")
        if validate:
            candles = validate_candles(candles, timeframe="1m").valid
        rows += candles.num_rows
    return rows


def pandas_parse_and_check(paths: list[Path]) -> int:
    rows = 0
    for path in paths:
        frame = pd.read_csv(path)  # pandas unzips a single-file archive itself
        frame.columns = list(BINANCE_KLINE_COLUMNS)  # headerless archives would differ here
        rows += len(frame[pandas_valid_rows(frame)])
    return rows


def pandas_valid_rows(frame: pd.DataFrame) -> pd.Series:
    o, h, lo, c, v = (frame[k] for k in ("open", "high", "low", "close", "volume"))
    prices = frame[["open", "high", "low", "close", "volume"]]
    ok = prices.notna().all(axis=1) & np.isfinite(prices).all(axis=1)
    ok &= (o > 0) & (lo > 0) & (h >= lo) & (h >= np.maximum(o, c)) & (lo <= np.minimum(o, c))
    ok &= (v >= 0) & (frame["open_time"] % MINUTE_MS == 0)
    return ok & (frame["close_time"] == frame["open_time"] + MINUTE_MS - 1)


# --- (b), (c) aggregation -------------------------------------------------------------------


def synthetic_minutes(n_symbols: int, n_minutes: int) -> dict[str, np.ndarray]:
    """Random-walk candles as (minute, symbol) arrays."""
    rng = np.random.default_rng(7)
    close = 10 ** rng.uniform(0, 4, n_symbols) * np.exp(
        np.cumsum(rng.normal(0, 1e-3, (n_minutes, n_symbols)), axis=0)
    )
    open_ = np.vstack([close[:1], close[:-1]])
    wick = 1 + rng.exponential(5e-4, (2, n_minutes, n_symbols))
    return {
        "open": open_,
        "high": np.maximum(open_, close) * wick[0],
        "low": np.minimum(open_, close) / wick[1],
        "close": close,
        "volume": rng.exponential(10.0, (n_minutes, n_symbols)),
    }


def aggregate_incrementally(minutes: dict[str, np.ndarray]) -> int:
    n_minutes, n_symbols = minutes["close"].shape
    aggregator = TimeframeAggregator(n_symbols, DEFAULT_TIMEFRAMES)
    for i in range(n_minutes):
        aggregator.update(START_MS + i * MINUTE_MS, {k: v[i] for k, v in minutes.items()})
    return n_minutes * n_symbols


def minutes_table(minutes: dict[str, np.ndarray]) -> pa.Table:
    """Symbol-major CANDLE_SCHEMA table of the same candles."""
    n_minutes, n_symbols = minutes["close"].shape
    names = np.array([f"S{s:04d}/USDT" for s in range(n_symbols)], dtype=object)
    times = np.tile(START_MS + np.arange(n_minutes, dtype=np.int64) * MINUTE_MS, n_symbols)
    return candles_from_columns(
        exchange="bench",
        symbol=pa.array(np.repeat(names, n_minutes), pa.string()),
        timeframe="1m",
        open_time=times,
        columns={k: v.T.ravel() for k, v in minutes.items()},
    )


def resample_all(table: pa.Table) -> int:
    for timeframe in DEFAULT_TIMEFRAMES:
        resample(table, timeframe)
    return table.num_rows


def pandas_frame(table: pa.Table) -> pd.DataFrame:
    frame = table.select(
        ["symbol", "open_time", "open", "high", "low", "close", "volume"]
    ).to_pandas()
    frame["date"] = pd.to_datetime(frame["open_time"], unit="ms", utc=True)
    return frame


PANDAS_AGG = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}


def pandas_resample_per_symbol(frame: pd.DataFrame) -> int:
    for _, part in frame.groupby("symbol", sort=False):
        indexed = part.set_index("date")
        for timeframe in DEFAULT_TIMEFRAMES:
            buckets = indexed.resample(PANDAS_RULES[timeframe])
            out, size = buckets.agg(PANDAS_AGG), buckets.size()
            out[size == timeframe_ms(timeframe) // MINUTE_MS]
    return len(frame)


def pandas_groupby_all(frame: pd.DataFrame) -> int:
    for timeframe in DEFAULT_TIMEFRAMES:
        grouped = frame.groupby(["symbol", pd.Grouper(key="date", freq=PANDAS_RULES[timeframe])])
        out, size = grouped.agg(PANDAS_AGG), grouped.size()
        out[size == timeframe_ms(timeframe) // MINUTE_MS]
    return len(frame)


# --- (d) replay through a feed actor -------------------------------------------------------


def write_replay_files(folder: Path, n_symbols: int, n_minutes: int) -> None:
    minutes = synthetic_minutes(n_symbols, n_minutes)
    table = minutes_table(minutes).to_pandas()
    for i, (_, part) in enumerate(table.groupby("symbol", sort=True)):
        frame = part.assign(date=pd.to_datetime(part["open_time"], unit="ms", utc=True))
        columns = ["date", "open", "high", "low", "close", "volume"]
        frame[columns].to_parquet(folder / f"S{i:04d}_USDT-1m.parquet")


def replay_rates(n_symbols: int, n_minutes: int) -> tuple[float, float]:
    """(feed actor candles/s, pandas candles/s) over the same Parquet files."""
    import ray

    from orchestrator.actors.feed import FeedActor
    from orchestrator.config import FeedSettings, ReplayFeedConfig

    @ray.remote(num_cpus=0.1)
    class CountingShard:
        def __init__(self):
            self.candles = 0

        def on_candles(self, feed, seq, batch, emitted_at_ms, warmup=False) -> int:
            self.candles += batch.num_rows
            return seq

        def checkpointed_seq(self, feed) -> int:
            return -1

        def checkpoint(self) -> None:  # the feed checkpoints its shards, then itself
            pass

        def reset_symbols(self, exchange, symbols) -> None:
            pass

        def count(self) -> int:
            return self.candles

    with tempfile.TemporaryDirectory() as folder:
        write_replay_files(Path(folder), n_symbols, n_minutes)
        baseline = best_rate(lambda: pandas_replay(Path(folder)), 1)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            shards = [CountingShard.remote() for _ in range(2)]
            source = ReplayFeedConfig(path=folder, speed=0)
            state = Path(folder) / "state"
            settings = FeedSettings(name="bench", source=source, run_dir=str(state))
            feed = FeedActor.remote(settings, shards)
            ray.get(feed.status.remote())  # loaded: time the replay, not the file reading
            started = time.perf_counter()
            ray.get(feed.start.remote())
            while not ray.get(feed.status.remote())["done"]:
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            delivered = sum(ray.get([s.count.remote() for s in shards]))
        finally:
            ray.shutdown()
    return delivered / elapsed, baseline


def pandas_replay(folder: Path) -> int:
    """The naive way: one frame, then a loop over minutes with the same checks."""
    paths = sorted(folder.glob("*.parquet"))
    frame = pd.concat([pd.read_parquet(p).assign(symbol=p.stem.split("-")[0]) for p in paths])
    frame["open_time"] = frame["date"].dt.as_unit("ms").astype("int64")
    frame["close_time"] = frame["open_time"] + MINUTE_MS - 1
    frame = frame.sort_values(["open_time", "symbol"])
    delivered = 0
    for _, minute in frame.groupby("open_time", sort=True):
        valid = minute[pandas_valid_rows(minute).to_numpy()]
        shard = valid["symbol"].map(hash) % 2
        delivered += sum(len(part) for _, part in valid.groupby(shard))
    return delivered


HEADERS = ("workload", "ours c/s", "pandas c/s", "ratio", "target", "met")


def row(
    name: str, ours: float | None, baseline: float | None, target: int | None, judge: bool = True
) -> tuple:
    ratio = f"{ours / baseline:.1f}x" if ours and baseline else "-"
    verdict = "-" if not (ours and target) else ("ok" if ours >= target else "BELOW")
    if not judge and verdict != "-":
        verdict = "not judged"
    return (name, ours or "not measured", baseline or "not measured", ratio, target, verdict)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="shared data root")
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=1440)
    parser.add_argument(
        "--baseline-symbols",
        type=int,
        default=100,
        help="symbols for the slow per-symbol pandas baseline (a rate per candle)",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--no-replay", action="store_true", help="skip (d), the only row that starts Ray"
    )
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    apply_smoke(parser, args, symbols=20, minutes=150, baseline_symbols=5, repeat=1)
    print_header("feeds", smoke=args.smoke)
    judge = not args.smoke

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        paths, source = archive_paths(data_root(args.data), Path(scratch), args.smoke)
        validating = validate_candles is not None
        parse_only = best_rate(lambda: parse_and_validate(paths, False), args.repeat)
        rows.append(row(f"(a0) parse only (unzip + CSV), {source}", parse_only, None, None))
        ours = best_rate(lambda: parse_and_validate(paths, validating), args.repeat)
        baseline = best_rate(lambda: pandas_parse_and_check(paths), args.repeat)
        label = "parse + validate" if validating else "parse only (TODO: validate.py missing)"
        rows.append(row(f"(a) {label}, {source}", ours, baseline, PARSE_TARGET, judge))

    minutes = synthetic_minutes(args.symbols, args.minutes)
    table = minutes_table(minutes)
    frame = pandas_frame(table)
    few = frame[frame["symbol"].isin(frame["symbol"].unique()[: args.baseline_symbols])]
    ours = best_rate(lambda: aggregate_incrementally(minutes), args.repeat)
    baseline = best_rate(lambda: pandas_resample_per_symbol(few), 1)
    rows.append(
        row(
            f"(b) incremental 1m->6 tfs, {args.symbols} symbols",
            ours,
            baseline,
            AGGREGATE_TARGET,
            judge,
        )
    )
    ours = best_rate(lambda: resample_all(table), args.repeat)
    baseline = best_rate(lambda: pandas_groupby_all(frame), 1)
    rows.append(
        row(f"(c) batch resample 1m->6 tfs, {table.num_rows:,} candles", ours, baseline, None)
    )
    replay_symbols, replay_minutes = min(args.symbols, 200), min(args.minutes, 1440)
    name = f"(d) replay via feed actor, {replay_symbols} symbols x {replay_minutes} min"
    if args.no_replay:
        rows.append((name, "skipped (--no-replay)"))
    else:
        rows.append(row(name, *replay_rates(replay_symbols, replay_minutes), None))

    print_table(HEADERS, rows)
    print(
        f"\nbaselines: (a) pd.read_csv + pandas checks; (b) DataFrame.resample per symbol on "
        f"{args.baseline_symbols} symbols; (c) groupby([symbol, Grouper(date)]) on all."
    )
    if args.smoke:
        targets_not_judged()
    return 0


if __name__ == "__main__":
    sys.exit(main())
