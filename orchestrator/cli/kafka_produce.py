"""Write candles to a Kafka topic, as an upstream producer would: from candle files (the
replay layouts: Parquet, Binance zips, a fetch-history dataset) or the synthetic market.

    tickcast kafka-produce --bootstrap-servers 127.0.0.1:9092 --topic tickcast.candles \\
        --data ../shared/data/binance-spot-1m --format binance --minutes 600

Messages are keyed by symbol and written in time order, ``--minutes`` minutes at a time per
``--speed`` (minutes per second; 0: as fast as the broker takes them). Security settings
come from ``TICKCAST_KAFKA_*`` environment variables, as for the pipeline.
"""

from __future__ import annotations

import argparse
import time

import pyarrow as pa
import pyarrow.compute as pc

from orchestrator import resolve_path
from orchestrator.config import KafkaConnection
from orchestrator.feeds.kafka import candle_producer, publish_candles
from orchestrator.feeds.replay import load_timeline, replay_files
from orchestrator.market.formats import FORMATS
from orchestrator.market.schema import candles_from_arrays
from orchestrator.market.synthetic import SyntheticMarket

OHLCV = ("open", "high", "low", "close", "volume")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--format", choices=[f for f in FORMATS if f != "auto"], default="tickcast")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", help="a folder of 1m candle files (default: synthetic)")
    source.add_argument("--synthetic", type=int, default=5, metavar="N", help="N symbols")
    parser.add_argument("--symbols", nargs="*", help="with --data: only these")
    parser.add_argument("--exchange", default="binance", help="the candles' exchange label")
    parser.add_argument("--minutes", type=int, default=None, help="default: every minute")
    parser.add_argument("--speed", type=float, default=0.0, help="minutes per second; 0: fast")
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


def candles(args: argparse.Namespace) -> pa.Table:
    if args.data:
        files = replay_files(resolve_path(args.data), tuple(args.symbols) if args.symbols else None)
        table = load_timeline(files, args.exchange)
        if args.minutes is not None:
            times = pc.unique(table.column("open_time")).to_numpy()
            if len(times) > args.minutes:
                table = table.filter(pc.less(table.column("open_time"), int(times[args.minutes])))
        return table
    market = SyntheticMarket(args.synthetic, seed=args.seed)
    symbols = [f"SYN{i:04d}/USDT" for i in range(args.synthetic)]
    minutes = []
    for _ in range(args.minutes or 1440):
        m = market.next_minute()
        ohlcv = {k: getattr(m, k) for k in OHLCV}
        opened = [m.open_time] * args.synthetic
        minutes.append(candles_from_arrays("synthetic", symbols, "1m", opened, ohlcv))
    return pa.Table.from_batches(minutes)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    connection = KafkaConnection(bootstrap_servers=args.bootstrap_servers)
    table = candles(args)
    if args.speed <= 0:
        sent = publish_candles(connection, args.topic, table, args.format)
    else:
        sent, producer = 0, candle_producer(connection)
        times = table.column("open_time")
        for open_time in pc.unique(times).to_pylist():
            minute = table.filter(pc.equal(times, open_time))
            sent += publish_candles(connection, args.topic, minute, args.format, producer)
            time.sleep(1.0 / args.speed)
    print(f"{sent} candles ({args.format}) written to {args.topic} on {args.bootstrap_servers}")
    return 0
