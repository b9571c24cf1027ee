#!/usr/bin/env python
"""Backfill predictions over candle history, with realized outcomes and an evaluation report.

Features come from the batch twin of the live engine, predictions from the same ONNX models
through Ray Data (feature tasks, then an actor pool holding ONNX Runtime sessions), rows
from the live event builder: a backfilled prediction is the one the live pipeline makes
for that candle. Re-running a range replaces it. Examples::

    tickcast backfill --data ../shared/data/binance-spot-1m \\
        --data binanceusdm=../shared/data/binance-usdm-1m --data ../shared/data/binance-spot-1h \\
        --timeframes 1m,5m,1h --models all --out /tmp/tickcast-backfill
    tickcast backfill --data data/history --symbols BTC/USDT,ETH/USDT \\
        --start 2024-03-01 --end 2024-04-01 --timeframes 1h --models direction@v2
    # on a cluster:
    ray job submit --working-dir . -- python -m orchestrator.cli.main backfill --data ...

``--data`` is ``PATH`` or ``EXCHANGE=PATH``: a folder of candle files (Parquet, Binance
kline zips) or the dataset ``tickcast fetch-history`` writes; the label names the rows'
exchange (default: binance, or what a dataset stores). Output (``--out``):
``predictions/`` and ``outcomes/`` (the live logs' layout and schemas: ``read_log`` and
``query_log`` read them) and ``completion.json``, the record printed at the end and
published on Redis (``--redis-url``). The report (``--report``, default ``OUT/report``) is
``report.md`` with PNG plots.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from orchestrator.batch.backfill.job import MODEL_TIMEFRAMES, BackfillOptions, run_backfill
from orchestrator.batch.backfill.models import DEFAULT_SPECS, ModelSpec
from orchestrator.batch.backfill.sources import DataSource
from orchestrator.batch.backfill.writer import DEFAULT_FLUSH_ROWS
from orchestrator.market.timeframes import timeframe_ms
from orchestrator.models.compiled import ENGINES


def epoch_ms(text: str) -> int:
    """ISO date or date-time; without a zone it is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or date-time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def timeframe_list(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    for name in names:
        try:
            timeframe_ms(name)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return names


def model_specs(text: str) -> tuple[ModelSpec, ...]:
    try:
        return tuple(ModelSpec.parse(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data",
        action="append",
        required=True,
        type=DataSource.parse,
        metavar="[EXCHANGE=]PATH",
        help="candle folder (repeatable)",
    )
    p.add_argument(
        "--symbols",
        type=lambda t: tuple(s for s in t.split(",") if s),
        help="comma-separated, e.g. BTC/USDT,ETH/USDT (default: every symbol)",
    )
    p.add_argument("--start", type=epoch_ms, help="first instant (UTC); candles closing from it")
    p.add_argument("--end", type=epoch_ms, help="end instant, exclusive (UTC)")
    p.add_argument(
        "--timeframes",
        type=timeframe_list,
        default=MODEL_TIMEFRAMES,
        help=f"comma-separated (default: {','.join(MODEL_TIMEFRAMES)})",
    )
    p.add_argument(
        "--models",
        type=model_specs,
        default=DEFAULT_SPECS,
        help="type[@version|@all] list or 'all' (default: production version of each type)",
    )
    p.add_argument(
        "--out",
        type=local_or_uri,
        default=local_or_uri("var/backfill"),
        help="output folder or object-store URI (s3://bucket/prefix), apart from the live log "
        "(default: var/backfill)",
    )
    p.add_argument(
        "--report",
        type=Path,
        help="report folder (default: OUT/report; var/backfill/report "
        "when OUT is on an object store)",
    )
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--redis-url", help="publish the completion record to this Redis")
    p.add_argument(
        "--executor",
        choices=("ray", "local"),
        default="ray",
        help="ray: Ray Data (default); local: this process only",
    )
    p.add_argument("--num-actors", type=int, default=2, help="ONNX actor pool size")
    p.add_argument("--actor-cpus", type=float, default=0.5, help="CPUs per ONNX actor")
    p.add_argument("--feature-cpus", type=float, default=0.5, help="CPUs per feature task")
    p.add_argument("--batch-size", type=int, default=65_536, help="rows per model batch")
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="auto: tree-ensemble models compiled to native code (checked against ONNX "
        "Runtime on their first rows), the others on ONNX Runtime; onnx: all on ONNX Runtime",
    )
    p.add_argument(
        "--flush-rows",
        type=int,
        default=DEFAULT_FLUSH_ROWS,
        help="prediction rows held in memory (~200 B each) before files are "
        "written; each write rewrites the partitions it touches",
    )
    p.add_argument(
        "--models-dir", default=None, help="registry: folder or mlflow:<URI>; default models_onnx/"
    )
    p.add_argument("--no-progress", action="store_true", help="no Ray Data progress bars")
    args = p.parse_args(argv)
    if args.start is not None and args.end is not None and args.start >= args.end:
        p.error("--start must be before --end")
    return args


def local_or_uri(text: str) -> str:
    """A URI as given; a local path made absolute against the working directory (the
    storage layer resolves relative paths against the repository, as configs do)."""
    return text if "://" in text else str(Path(text).resolve())


def options_from(args: argparse.Namespace) -> BackfillOptions:
    default_report = Path("var/backfill/report") if "://" in args.out else Path(args.out) / "report"
    report = None if args.no_report else (args.report or default_report)
    extra = {"models_dir": args.models_dir} if args.models_dir else {}
    return BackfillOptions(
        sources=tuple(args.data),
        out=args.out,
        timeframes=args.timeframes,
        models=args.models,
        symbols=args.symbols,
        start_ms=args.start,
        end_ms=args.end,
        report_dir=report,
        redis_url=args.redis_url,
        executor=args.executor,
        num_actors=args.num_actors,
        actor_cpus=args.actor_cpus,
        feature_cpus=args.feature_cpus,
        batch_size=args.batch_size,
        engine=args.engine,
        flush_rows=args.flush_rows,
        **extra,
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    options = options_from(args)
    if options.executor == "ray":
        from orchestrator.batch.backfill.ray_data import ensure_ray

        ensure_ray()
        if args.no_progress:
            import ray

            ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        record = run_backfill(options, say=lambda line: print(line, file=sys.stderr, flush=True))
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"backfill: {exc}") from None
    print(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()
