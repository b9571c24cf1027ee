"""Storage by URI: what each durable write and read costs on an object store, beside the
same operation on a local folder in the same run (the baseline).

The object store is an S3 server on 127.0.0.1 (moto's ``moto_server``, started here) unless
``--s3 s3://bucket/prefix`` names another (its endpoint and keys from the environment, as
in production). Operations: a write-ahead-log record of one shard call (the sink answers
the shard after it), a shard checkpoint, a Parquet log flush, and a history page read.

    tickcast bench storage [--repeats 30] [--rows 1000] [--s3 s3://bucket/prefix] [--smoke]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from orchestrator.bench.harness import (
    add_smoke_flag,
    apply_smoke,
    percentile,
    print_header,
    print_table,
    targets_not_judged,
)
from orchestrator.bench.history import prediction_rows
from orchestrator.sinks.history import HistoryQuery, query_log
from orchestrator.sinks.parquet_log import ParquetLog
from orchestrator.sinks.wal import WriteAheadLog
from orchestrator.storage import locate
from orchestrator.stream.checkpoint import load_checkpoint, save_checkpoint
from orchestrator.stream.events import PREDICTION_SCHEMA

MINUTE_MS = 60_000


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="samples per operation")
    parser.add_argument("--rows", type=int, default=1000, help="symbols (rows) per shard call")
    parser.add_argument("--flush-rows", type=int, default=20_000, help="rows per log flush")
    parser.add_argument("--state-mib", type=float, default=4.0, help="checkpoint size (MiB)")
    parser.add_argument("--s3", help="an s3:// prefix to measure instead of a local server")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    apply_smoke(parser, args, repeats=3, rows=50, flush_rows=500, state_mib=0.1)
    return parser, args


def samples_ms(work: Callable[[int], object], repeats: int) -> list[float]:
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        work(i)
        times.append((time.perf_counter() - started) * 1000)
    return times


def measure(root: str, args: argparse.Namespace) -> dict[str, list[float]]:
    """Per operation, the milliseconds of each repeat under ``root``."""
    symbols = [f"S{i:05d}/USDT" for i in range(args.rows)]
    call = prediction_rows([0], symbols, "1m", ("direction",)).cast(PREDICTION_SCHEMA)
    wal = WriteAheadLog(f"{root}/log-wal", PREDICTION_SCHEMA)
    state = {"state": np.random.default_rng(0).bytes(int(args.state_mib * 2**20)), "seq": {}}
    checkpoint = locate(root) / "state" / "shard-0-of-1.pkl"
    log = ParquetLog(f"{root}/log", flush_rows=10**12)
    per_flush = max(1, args.flush_rows // args.rows)

    def flush(i: int) -> None:
        times = [(i * per_flush + m) * MINUTE_MS for m in range(per_flush)]
        log.append(prediction_rows(times, symbols, "1m", ("direction",)))
        log.flush()

    page = HistoryQuery(symbol=symbols[len(symbols) // 2], limit=100, descending=True)
    results = {
        "WAL record (one shard call)": samples_ms(lambda _: wal.append(call), args.repeats),
        "checkpoint write": samples_ms(lambda _: save_checkpoint(checkpoint, state), args.repeats),
        "checkpoint read": samples_ms(lambda _: load_checkpoint(checkpoint), args.repeats),
        "log flush": samples_ms(flush, args.repeats),
        "history page (newest 100 of a symbol)": samples_ms(
            lambda _: query_log(f"{root}/log", page), args.repeats
        ),
    }
    wal.truncate()
    return results


@contextlib.contextmanager
def environment(values: dict[str, str]):
    """``values`` in ``os.environ`` for the block (the suite runs this in its own process)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def main(argv: Sequence[str] | None = None) -> int:
    _, args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tickcast-storage-")))
        if args.s3:
            remote, where = args.s3.rstrip("/") + f"/bench-{uuid.uuid4().hex[:8]}", args.s3
        else:
            from orchestrator.bench.s3_server import s3_server

            env = stack.enter_context(s3_server(tmp / "moto.log"))
            stack.enter_context(environment(env))
            remote, where = f"s3://tickcast/bench-{uuid.uuid4().hex[:8]}", "moto_server"
        print_header(
            "storage",
            f"{args.rows} rows a shard call, {args.flush_rows} rows a flush, "
            f"{args.state_mib} MiB checkpoints, {args.repeats} repeats",
            f"object store: {where}",
            smoke=args.smoke,
        )
        local = measure(str(tmp / "local"), args)
        s3 = measure(remote, args)
        locate(remote).delete_tree()
    rows = []
    for name, baseline in local.items():
        theirs = s3[name]
        rows.append(
            (
                name,
                percentile(baseline, 50),
                percentile(baseline, 99),
                percentile(theirs, 50),
                percentile(theirs, 99),
                percentile(theirs, 50) / max(percentile(baseline, 50), 1e-9),
            )
        )
    print_table(
        ("operation", "local p50 ms", "local p99 ms", "S3 p50 ms", "S3 p99 ms", "S3 / local"),
        rows,
        (None, ".2f", ".2f", ".1f", ".1f", ".0f"),
    )
    wal_p50 = percentile(s3["WAL record (one shard call)"], 50)
    print(
        f"a sink whose WAL is on this store takes at most ~{1000 / max(wal_p50, 1e-9):.0f} "
        "shard calls a second (one upload each)"
    )
    if args.smoke:
        targets_not_judged()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
