"""The prediction log's history queries at size: pages, memory and files as the log grows.

Writes a log the way the sink does (a file per flush of ``--flush-rows`` rows, 1m and 5m
predictions of two models for ``--symbols`` symbols). The first ``--early-days`` days are
left as written (a file per flush, as before compaction existed); from then on the log is
compacted as the sink's compactor does it (levels while a day is written, one file per
folder once it is over, the early days included). At both points it runs the same pages,
each set in a fresh process, with this reader and with the previous one (the whole filtered
log read and sorted, then sliced: the baseline), and prints their latency, the process's
peak memory and the log's files.

    tickcast bench history [--days 30] [--symbols 1000] [--queries 60] [--smoke]
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import resource
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from orchestrator.bench.harness import (
    add_smoke_flag,
    apply_smoke,
    percentile,
    print_header,
    print_table,
)
from orchestrator.market.timeframes import MINUTE_MS
from orchestrator.sinks.compaction import Compactor, live_files, partition_folders
from orchestrator.sinks.history import LOG_SCHEMA, HistoryQuery, all_of, query_log
from orchestrator.sinks.parquet_log import ParquetLog, utc_date
from orchestrator.stream.events import ModelOutput, TickRows, build_predictions

DAY_MS = 86_400_000
START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
OUTPUT_NAMES = {"direction": ("prob_up",), "volatility": ("volatility",)}


def prediction_rows(
    open_times: Sequence[int], symbols: Sequence[str], timeframe: str, model_types: Sequence[str]
) -> pa.Table:
    """Predictions of every symbol and model type for each candle (``exchange`` x), through
    the live pipeline's own ``build_predictions``; values are deterministic per row."""
    times = np.repeat(np.asarray(open_times, dtype=np.int64), len(symbols))
    names = np.tile(np.asarray(symbols, dtype=object), len(open_times))
    rows = TickRows(
        np.full(len(times), "x", dtype=object),
        names,
        timeframe,
        times,
        np.full(len(times), 100.0),
        emitted_at_ms=float(times[-1]) if len(times) else 0.0,
    )
    rng = np.random.default_rng(int(times[0]) % 2**32 if len(times) else 0)
    tables = []
    for model_type in model_types:
        values = rng.random((len(times), 1))  # as little compressible as real model outputs
        output = ModelOutput(
            f"{model_type}-{timeframe}", model_type, "v1", OUTPUT_NAMES[model_type], values
        )
        tables.append(build_predictions(output, rows, rows.emitted_at_ms + 5, 0.6, 0.7))
    return pa.concat_tables(tables)


def write_days(
    root: Path, first_day: int, days: int, symbols: list[str], flush_rows: int, compact: bool
) -> tuple[float, int]:
    """Days ``first_day``.. of 1m and 5m predictions, as the sink writes them; with
    ``compact``, merged by levels as they are written and each finished day (the days before
    too) into one file per folder, as the sink's compactor does. (seconds, rows)"""
    log = ParquetLog(root, flush_rows)
    compactor = Compactor(root)
    started, rows = time.perf_counter(), 0
    if compact:  # days written before without compaction are over
        for folder in compactor.partitions():
            compactor.compact(folder, closed=True)
    chunk = max(1, flush_rows // (2 * len(symbols)))  # minutes of 1m rows per append
    for day in range(first_day, first_day + days):
        day_start = START_MS + day * DAY_MS
        for minute in range(0, 1440, chunk):
            minutes = [day_start + m * MINUTE_MS for m in range(minute, min(minute + chunk, 1440))]
            for timeframe, step in (("1m", 1), ("5m", 5)):
                times = [t for t in minutes if (t // MINUTE_MS) % step == 0]
                if times:
                    table = prediction_rows(times, symbols, timeframe, ("direction", "volatility"))
                    log.append(table)
                    rows += table.num_rows
            if compact:
                compactor.run()  # the sink's periodic pass: levels only, the day is open
        log.flush()
        if compact and day > first_day:  # yesterday is over: one file per folder
            for folder in sorted(root.glob(f"date={utc_date(day_start - DAY_MS)}/*")):
                compactor.compact(folder, closed=True)
    return time.perf_counter() - started, rows


def previous_reader(root: Path, query: HistoryQuery) -> list[dict]:
    """The reader before this one, as it was: every row matching the filters read (the date
    folders outside the time range pruned), sorted, then the page cut."""
    conditions = [
        ds.field(c) == getattr(query, c)
        for c in ("symbol", "timeframe", "model_id")
        if getattr(query, c) is not None
    ]
    if query.start_ms is not None:
        conditions.append(ds.field("open_time") >= query.start_ms)
        conditions.append(ds.field("date") >= utc_date(query.start_ms))
    if query.end_ms is not None:
        conditions.append(ds.field("open_time") < query.end_ms)
        conditions.append(ds.field("date") <= utc_date(max(query.end_ms - 1, 0)))
    dataset = ds.dataset(root, schema=LOG_SCHEMA, format="parquet", partitioning="hive")
    table = dataset.to_table(filter=all_of(conditions)).sort_by(
        [("open_time", "ascending"), ("symbol", "ascending"), ("model_id", "ascending")]
    )
    return table.slice(query.offset, query.limit).to_pylist()


def query_kinds(symbols: list[str], days: int, n: int, seed: int) -> dict[str, list]:
    rng = random.Random(seed)
    end = START_MS + days * DAY_MS

    def start() -> int:
        return START_MS + rng.randrange(0, days * 1440 - 600) * MINUTE_MS

    return {
        "newest 10 of a symbol": [
            HistoryQuery(rng.choice(symbols), "1m", limit=10, descending=True) for _ in range(n)
        ],
        "500 of a symbol and model from a time": [
            HistoryQuery(rng.choice(symbols), "1m", "direction-1m", start(), end, 500)
            for _ in range(n)
        ],
        "500 of a symbol, 5m, from a time": [
            HistoryQuery(rng.choice(symbols), "5m", start_ms=start(), limit=500) for _ in range(n)
        ],
        "newest 100, no filter": [HistoryQuery(limit=100, descending=True) for _ in range(n)],
        "100 from a time, no filter": [
            HistoryQuery(start_ms=start(), limit=100) for _ in range(max(1, n // 4))
        ],
    }


def _run_queries(args: tuple) -> tuple[dict[str, list[float]], int]:
    """In a fresh process: each query's seconds per kind, and the process's peak RSS (KiB)."""
    root, kinds, reader = args
    times: dict[str, list[float]] = {}
    for kind, queries in kinds.items():
        if reader == "previous" and (kind.startswith("newest") or "no filter" in kind):
            continue  # no newest-first order then; unfiltered, it read the whole log
        for query in queries:
            started = time.perf_counter()
            if reader == "previous":
                previous_reader(root, query)
            else:
                query_log(root, query)
            times.setdefault(kind, []).append(time.perf_counter() - started)
    return times, _peak_rss_kib()


def _peak_rss_kib() -> int:
    """VmHWM: this process's peak since its exec (ru_maxrss would carry the parent's, taken
    over at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(root: Path, kinds: dict, reader: str) -> tuple[dict[str, list[float]], int]:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.map(_run_queries, [(root, kinds, reader)])[0]


def log_files(root: Path) -> tuple[int, int, int]:
    """(files, partition folders, most files in one folder)."""
    counts = [len(live_files(f)) for f in partition_folders(root)]
    return sum(counts), len(counts), max(counts, default=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tickcast bench history", description=__doc__)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--early-days", type=int, default=2)
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--flush-rows", type=int, default=20_000, help="production.yaml's")
    parser.add_argument("--queries", type=int, default=60, help="of each kind")
    parser.add_argument("--baseline-queries", type=int, default=3, help="of each kind")
    parser.add_argument("--dir", type=Path, help="write the log here (a new folder) and keep it")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    apply_smoke(
        parser,
        args,
        days=3,
        early_days=1,
        symbols=20,
        flush_rows=2000,
        queries=5,
        baseline_queries=2,
    )
    if args.dir is not None and args.dir.exists() and any(args.dir.iterdir()):
        parser.error(f"--dir {args.dir} is not empty: give a new folder")
    root = args.dir or Path(tempfile.mkdtemp(prefix="tickcast-history-"))
    symbols = [f"S{i:05d}/USDT" for i in range(args.symbols)]
    print_header(
        "history",
        f"{args.days} days x {args.symbols} symbols x 1m+5m x 2 models",
        f"flush {args.flush_rows:,} rows",
        smoke=args.smoke,
    )
    results, written = [], []
    try:
        done = rows = 0
        seconds = 0.0
        for days, compact in ((args.early_days, False), (args.days, True)):
            spent, added = write_days(root, done, days - done, symbols, args.flush_rows, compact)
            seconds, rows, done = seconds + spent, rows + added, days
            written.append((days, rows, seconds))
            kinds = query_kinds(symbols, days, args.queries, seed=days)
            few = {k: q[: args.baseline_queries] for k, q in kinds.items()}
            for reader, chosen in (("paged (this)", kinds), ("previous", few)):
                times, peak_kib = measure(root, chosen, reader.split()[0])
                files = log_files(root)
                for kind, samples in times.items():
                    ms = [s * 1000 for s in samples]
                    results.append(
                        (
                            f"{days} d" + ("" if compact else ", as written"),
                            kind,
                            reader,
                            len(ms),
                            percentile(ms, 50),
                            percentile(ms, 99),
                            max(ms),
                            peak_kib / 1024,
                            files[0],
                            files[2],
                        )
                    )
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    print_table(
        [
            "log",
            "page",
            "reader",
            "n",
            "p50 ms",
            "p99 ms",
            "max ms",
            "peak RSS MiB",
            "files",
            "most in a folder",
        ],
        results,
        [None, None, None, None, ",.1f", ",.1f", ",.1f", ",.0f", None, None],
    )
    print()
    print_table(
        ["log days", "rows", "write + compact s", "rows/s"],
        [(d, r, s, r / s) for d, r, s in written],
        [None, None, ",.1f", ",.0f"],
    )
    return 0
