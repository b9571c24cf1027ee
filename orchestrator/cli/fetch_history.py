"""Download candle history with ccxt, or import Binance public-data zips, into Parquet.

The dataset is hive-partitioned, one directory per series::

    OUT/exchange=binance/symbol=BTC_USDT/timeframe=1m/part-<first>-<last>.parquet

Each file holds complete ``CANDLE_SCHEMA`` rows (exchange and the real ``BTC/USDT`` symbol
included), so a file is readable on its own; read the whole tree with
``pyarrow.dataset.dataset(OUT, format="parquet")`` to get those columns as written, or with
``partitioning="hive"`` to prune by directory (the symbol then reads as ``BTC_USDT``).

Only closed candles are written (open time + timeframe <= the exchange's clock), so a
resumed download never has to revise what is on disk: each run starts just after the
newest candle of each series already there, and rows whose open time is already stored
are never written twice (imports are idempotent too). Requests go through ccxt's rate
limiter and the feeds' retry decorator.

Examples::

    tickcast fetch-history download --exchange binance --symbols BTC/USDT ETH/USDT \\
        --timeframe 1m --since 2024-01-01 --out data/history
    tickcast fetch-history import-zip --exchange binance --out data/history \\
        BTCUSDT-1m-2024-01.zip BTCUSDT-1m-2024-02.zip
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from tqdm import tqdm

from orchestrator.feeds.ccxt.common import FeedCounters, OhlcvFetcher, rows_to_batch
from orchestrator.feeds.ccxt.config import ExchangeConfig, build_client
from orchestrator.feeds.retry import RetryPolicy
from orchestrator.market.archives import path_safe_symbol, read_binance_zip
from orchestrator.market.timeframes import TIMEFRAMES, timeframe_ms
from orchestrator.market.validate import validate_candles
from orchestrator.storage import Location, locate, write_parquet

# --- the dataset layout --------------------------------------------------------------------


def series_dir(root: Location | str, exchange: str, symbol: str, timeframe: str) -> Location:
    return (
        locate(root)
        / f"exchange={exchange}"
        / f"symbol={path_safe_symbol(symbol)}"
        / f"timeframe={timeframe}"
    )


def stored_open_times(directory: Location) -> np.ndarray:
    """Open times already stored for one series (empty if none)."""
    files = [e.location.path for e in directory.files(suffix=".parquet") if e.name[0] != "."]
    if not files:
        return np.empty(0, dtype=np.int64)
    dataset = ds.dataset(files, format="parquet", filesystem=directory.fs)
    return dataset.to_table(columns=["open_time"]).column("open_time").to_numpy()


def write_new_candles(directory: Location, candles: pa.Table, stored: np.ndarray) -> int:
    """Write rows whose open time is not stored yet (last copy wins); returns rows written.
    Each file is published whole: a killed run leaves no torn file to trip the next."""
    fresh = candles.filter(pa.array(~np.isin(candles.column("open_time").to_numpy(), stored)))
    if fresh.num_rows == 0:
        return 0
    fresh = _last_per_open_time(fresh)
    times = fresh.column("open_time").to_numpy()
    write_parquet(fresh, directory / f"part-{times[0]}-{times[-1]}.parquet")
    return fresh.num_rows


def _last_per_open_time(table: pa.Table) -> pa.Table:
    times = table.column("open_time").to_numpy()
    order = np.argsort(times, kind="stable")
    sorted_times = times[order]
    last_of_run = np.append(sorted_times[1:] != sorted_times[:-1], True)
    return table.take(pa.array(order[last_of_run]))


# --- download ------------------------------------------------------------------------------


def parse_time_ms(text: str) -> int:
    """Epoch ms, or an ISO date/time (UTC unless it says otherwise)."""
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


async def exchange_now_ms(client) -> int:
    """The exchange's clock when it has one (it decides which candles are closed)."""
    if client.has.get("fetchTime"):
        return int(await client.fetch_time())
    return int(time.time() * 1000)


async def download(args: argparse.Namespace) -> dict:
    config = ExchangeConfig(
        exchange=args.exchange,
        symbols=tuple(args.symbols),
        urls=args.urls,
        ccxt_options=args.ccxt_options,
        page_limit=args.page_limit,
        retry=RetryPolicy(max_attempts=args.max_attempts, base_delay_s=args.retry_base_delay_s),
        **({"rate_limit_ms": args.rate_limit_ms} if args.rate_limit_ms else {}),
    )
    client = build_client(config, websocket=False)
    counters = FeedCounters()
    fetcher = OhlcvFetcher(client, config, counters, timeframe=args.timeframe)
    try:
        await fetcher.load_markets()
        until = parse_time_ms(args.until) if args.until else await exchange_now_ms(client)
        written = {}
        for symbol in config.symbols:
            written[symbol] = await download_series(fetcher, args, symbol, until)
    finally:
        await client.close()
    return {"written": written, **counters.as_dict()}


async def download_series(
    fetcher: OhlcvFetcher, args: argparse.Namespace, symbol: str, until: int
) -> int:
    """Fetch ``symbol`` from after its newest stored candle to the last closed one."""
    step = timeframe_ms(args.timeframe)
    directory = series_dir(args.out, args.exchange, symbol, args.timeframe)
    stored = stored_open_times(directory)
    start = max(args.since, int(stored.max()) + step) if len(stored) else args.since
    start = -(-start // step) * step
    end = until - until % step  # open times before this are closed by `until`
    written, pending = 0, []
    with tqdm(
        total=max(0, (end - start) // step), unit="candle", desc=symbol, disable=args.no_progress
    ) as bar:
        async for page in fetcher.pages(symbol, start, end):
            pending.extend(page)
            bar.update(len(page))
            if len(pending) >= args.rows_per_file:
                written += _flush(directory, args, symbol, pending, stored)
                stored, pending = stored_open_times(directory), []
    return written + _flush(directory, args, symbol, pending, stored)


def _flush(
    directory: Location, args: argparse.Namespace, symbol: str, rows: list, stored: np.ndarray
) -> int:
    if not rows:
        return 0
    batch, rejected = rows_to_batch(args.exchange, {symbol: rows}, args.timeframe)
    valid, rejects = validate_candles(batch, timeframe=args.timeframe)
    if rejected or len(rejects):
        print(
            f"{symbol}: skipped {rejected} unusable rows, {len(rejects)} invalid candles "
            f"{rejects.counts}",
            file=sys.stderr,
        )
    return write_new_candles(directory, pa.Table.from_batches([valid]), stored)


# --- import --------------------------------------------------------------------------------


def import_zips(args: argparse.Namespace) -> dict:
    written: dict[str, int] = {}
    for path in args.zips:
        table = read_binance_zip(
            path, exchange=args.exchange, symbol=args.symbol, timeframe=args.timeframe
        )
        if table.num_rows == 0:
            continue
        symbol = table.column("symbol")[0].as_py()
        timeframe = table.column("timeframe")[0].as_py()
        valid, rejects = validate_candles(table, timeframe=timeframe)
        if len(rejects):
            print(
                f"{path}: skipped {len(rejects)} invalid candles {rejects.counts}", file=sys.stderr
            )
        directory = series_dir(args.out, args.exchange, symbol, timeframe)
        count = write_new_candles(directory, _sorted(valid), stored_open_times(directory))
        written[str(path)] = count
    return {"written": written}


def _sorted(table: pa.Table) -> pa.Table:
    return table.take(pc.sort_indices(table, [("open_time", "ascending")]))


# --- command line --------------------------------------------------------------------------


def _json_object(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    get = commands.add_parser("download", help="download candles with ccxt (resumable)")
    get.add_argument("--exchange", required=True, help="ccxt exchange id")
    get.add_argument(
        "--symbols", nargs="+", required=True, help="ccxt unified symbols, e.g. BTC/USDT"
    )
    get.add_argument("--timeframe", default="1m", choices=TIMEFRAMES)
    get.add_argument(
        "--since", required=True, type=parse_time_ms, help="epoch ms or ISO date (UTC)"
    )
    get.add_argument("--until", help="epoch ms or ISO date (default: the exchange's clock now)")
    get.add_argument("--page-limit", type=int, default=1000, help="candles per request")
    get.add_argument("--rate-limit-ms", type=float, help="override ccxt's rateLimit")
    get.add_argument("--max-attempts", type=int, default=8, help="per request, retries included")
    get.add_argument("--retry-base-delay-s", type=float, default=0.5, help="first backoff ceiling")
    get.add_argument("--rows-per-file", type=int, default=100_000, help="flush a file every N rows")
    get.add_argument("--urls", type=_json_object, default={}, help="JSON merged into ccxt's urls")
    get.add_argument(
        "--ccxt-options", type=_json_object, default={}, help="JSON merged into options"
    )

    imp = commands.add_parser("import-zip", help="import Binance public-data kline zips")
    imp.add_argument("zips", nargs="+", type=Path)
    imp.add_argument("--exchange", default="binance")
    imp.add_argument(
        "--symbol", help="default: read from the file name (BTCUSDT-1m-... -> BTC/USDT)"
    )
    imp.add_argument("--timeframe", help="default: read from the file name")

    for sub in (get, imp):
        sub.add_argument(
            "--out",
            required=True,
            help="dataset root: a folder (relative: to the repository) or an object-store "
            "URI (s3://bucket/candles)",
        )
        sub.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    summary = asyncio.run(download(args)) if args.command == "download" else import_zips(args)
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
