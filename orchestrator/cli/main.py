"""``tickcast``: one command for the batch jobs, tools and benchmarks.

Each subcommand is a module with ``main(argv)``; it is imported only when it runs, so
``tickcast --help`` answers at once and one tool's dependencies never slow another.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# name -> (module, one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "fetch-history": (
        "orchestrator.cli.fetch_history",
        "download candles with ccxt, or import Binance zips, into Parquet",
    ),
    "train": (
        "orchestrator.cli.train",
        "train every model from candle files and export it to ONNX",
    ),
    "calibration-study": (
        "orchestrator.cli.calibration_study",
        "held-out calibration error of direction models under candidate calibration methods",
    ),
    "backfill": (
        "orchestrator.cli.backfill",
        "predict over history with the live code; outcomes and a report",
    ),
    "registry": ("orchestrator.cli.registry", "list, promote, roll back and copy model versions"),
    "stream": (
        "orchestrator.cli.stream_client",
        "print the live prediction stream (WS /v1/stream)",
    ),
    "kafka-produce": (
        "orchestrator.cli.kafka_produce",
        "write candles (files or synthetic) to a Kafka topic, as an upstream producer",
    ),
    "bench": ("orchestrator.cli.main", "run a benchmark: tickcast bench NAME --help"),
}
# name -> (module, one line of help); each prints a table beside a baseline from the same run
BENCHMARKS: dict[str, tuple[str, str]] = {
    "pipeline": (
        "orchestrator.bench.pipeline",
        "live pipeline: symbol-candles/s and tick latency vs one process",
    ),
    "features": (
        "orchestrator.bench.features",
        "incremental and batch features vs pandas rolling windows",
    ),
    "feeds": ("orchestrator.bench.feeds", "candle intake: archives, aggregation, replay vs pandas"),
    "models": ("orchestrator.bench.models", "ONNX Runtime vs the native libraries, per row"),
    "backfill": ("orchestrator.bench.backfill", "backfill rows/s vs a trading-notebook loop"),
    "http": ("orchestrator.bench.http", "POST /v1/predict through Serve vs plain uvicorn"),
    "stack": (
        "orchestrator.bench.stack",
        "serve run: time to first prediction and memory per process",
    ),
    "dashboard": (
        "orchestrator.bench.dashboard",
        "the web page: weight, time to first chart, browser memory",
    ),
    "symbols": (
        "orchestrator.bench.symbols",
        "symbols added and removed while running: the others' tick latency vs steady",
    ),
    "history": (
        "orchestrator.bench.history",
        "history pages of a 30-day log: latency, memory, files vs the previous reader",
    ),
    "storage": (
        "orchestrator.bench.storage",
        "durable writes and reads on an object store (S3) vs a local folder",
    ),
    "kafka": (
        "orchestrator.bench.kafka",
        "Kafka in and out: events/s into a topic, candles/s through the pipeline vs plain loops",
    ),
    "soak": (
        "orchestrator.bench.soak",
        "the application for N minutes under load: memory, latency, queues",
    ),
}


def usage(commands: dict[str, tuple[str, str]], prog: str) -> str:
    width = max(map(len, commands))
    lines = [f"usage: {prog} COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in commands.items()]
    lines += ["", f"'{prog} COMMAND --help' describes each one."]
    return "\n".join(lines)


def dispatch(argv: Sequence[str], commands: dict[str, tuple[str, str]], prog: str) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(commands, prog))
        return 0 if argv else 2
    name, rest = argv[0], list(argv[1:])
    if name not in commands:
        print(f"{prog}: unknown command {name!r}\n\n{usage(commands, prog)}", file=sys.stderr)
        return 2
    if prog == "tickcast" and name == "bench":
        return dispatch(rest, BENCHMARKS, "tickcast bench")
    module = importlib.import_module(commands[name][0])
    sys.argv[0] = f"{prog} {name}"  # argparse's prog: help and errors name the real command
    result = module.main(rest)
    return result if isinstance(result, int) else 0


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(sys.argv[1:] if argv is None else argv, COMMANDS, "tickcast")


if __name__ == "__main__":
    sys.exit(main())
