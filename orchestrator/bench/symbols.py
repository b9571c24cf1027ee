"""Symbols added and removed while running: what it costs the symbols that stay.

`serve run` of a paced synthetic market (``--symbols`` symbols, a candle each per second of
wall time), then three phases of ``--phase-s`` seconds each: steady (the baseline, same run),
churn (every ``--every-s`` the admin endpoint adds ``--churn`` new symbols, warmed up on
``--warmup`` minutes of history, and removes the ones it added the round before), and
steady again. From the prediction log it prints, per phase, the tick latency of the symbols
that were there all along (emit to prediction, per row), the longest gap between two of
their ticks (a paced feed sends one a second: a tick held back by a change shows there) and
the ticks they missed; then the admin requests' durations.

    tickcast bench symbols [--symbols 500] [--churn 50] [--phase-s 90] [--smoke]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.bench.browser import dashboard_config, new_port, serve_run, wait_for_predictions
from orchestrator.bench.harness import add_smoke_flag, apply_smoke, print_header, print_table
from orchestrator.market.timeframes import MINUTE_MS
from orchestrator.sinks.parquet_log import read_log

ADMIN_KEY = "bench-admin"
FEED_URL = "/v1/admin/feeds/synthetic-0/symbols"


def churn(client: httpx.Client, rounds: int, size: int, warmup: int, every_s: float) -> list:
    """Each round adds ``size`` new symbols and removes the previous round's: (request,
    seconds, warm-up candles) per call."""
    calls, previous = [], []
    for r in range(rounds):
        started = time.monotonic()
        added = [f"CH{r:03d}{i:04d}/USDT" for i in range(size)]
        answer = client.post(FEED_URL, json={"symbols": added, "warmup_minutes": warmup})
        answer.raise_for_status()
        calls.append(("add", time.monotonic() - started, answer.json()["warmup_candles"]))
        if previous:
            started = time.monotonic()
            client.request("DELETE", FEED_URL, json={"symbols": previous}).raise_for_status()
            calls.append(("remove", time.monotonic() - started, 0))
        previous = added
        time.sleep(max(0.0, every_s - (time.monotonic() - started)))
    return calls


def phase_rows(log, symbols: list[str], phases: list[tuple[str, float, float]]) -> list[tuple]:
    """Per phase: the symbols there all along, their ticks, rows, latency and missed ticks."""
    table = log.filter(pc.is_in(log.column("symbol"), value_set=pa.array(symbols, pa.string())))
    predicted_at = table.column("predicted_at").to_numpy()
    latency = table.column("latency_ms").to_numpy()
    open_time = table.column("open_time").to_numpy()
    symbol = np.asarray(table.column("symbol").to_pylist(), dtype=object)
    model = np.asarray(table.column("model_id").to_pylist(), dtype=object)
    rows = []
    for name, start_ms, end_ms in phases:
        inside = (predicted_at >= start_ms) & (predicted_at < end_ms)
        minutes = np.unique(open_time[inside])
        if not len(minutes):
            rows.append((name, 0, 0, None, None, None, None, None))
            continue
        first_model = model[inside] == model[inside][0]
        keys = set(zip(symbol[inside][first_model], open_time[inside][first_model], strict=True))
        expected = len(symbols) * (int((minutes[-1] - minutes[0]) // MINUTE_MS) + 1)
        p50, p99 = np.percentile(latency[inside], [50, 99])
        # A paced feed sends a minute a second: a tick that waited behind a change shows as a
        # longer gap between two ticks' predictions (emit-to-predict latency cannot see it).
        tick_done = [predicted_at[inside & (open_time == m)].max() for m in minutes]
        rows.append(
            (
                name,
                len(minutes),
                int(inside.sum()),
                float(p50),
                float(p99),
                float(latency[inside].max()),
                float(np.diff(tick_done).max() / 1000) if len(tick_done) > 1 else None,
                expected - len(keys),
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--churn", type=int, default=50, help="symbols added (and removed) a round")
    parser.add_argument("--warmup", type=int, default=60, help="warm-up minutes of a new symbol")
    parser.add_argument("--phase-s", type=float, default=90.0)
    parser.add_argument("--every-s", type=float, default=15.0, help="seconds between rounds")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    apply_smoke(parser, args, symbols=20, churn=5, phase_s=8.0, every_s=4.0)
    print_header(
        "symbols",
        f"{args.symbols} symbols, {args.churn} added and removed every {args.every_s} s",
        smoke=args.smoke,
    )
    with tempfile.TemporaryDirectory() as folder:
        tmp, port = Path(folder), new_port()
        base = f"http://127.0.0.1:{port}"
        config = dashboard_config(tmp, port, args.symbols, environment="symbols")
        with serve_run(config, tmp / "serve.log", env={"TICKCAST_ADMIN_KEYS": ADMIN_KEY}) as proc:
            wait_for_predictions(base, proc, 300, minimum=args.symbols)
            headers = {"X-Admin-Key": ADMIN_KEY}
            with httpx.Client(base_url=base, timeout=120, headers=headers) as client:
                marks = [time.time()]
                time.sleep(args.phase_s)
                marks.append(time.time())
                rounds = max(1, int(args.phase_s // args.every_s))
                calls = churn(client, rounds, args.churn, args.warmup, args.every_s)
                marks.append(time.time())
                time.sleep(args.phase_s)
                marks.append(time.time())
            time.sleep(3.0)  # the sink flushes every second
        log = read_log(tmp / "predictions")
    names = ("steady (baseline)", "adding and removing", "steady after")
    phases = [(n, a * 1000, b * 1000) for n, a, b in zip(names, marks, marks[1:], strict=False)]
    original = [f"SYN{i:04d}/USDT" for i in range(args.symbols)]
    print_table(
        ("phase", "ticks", "rows", "p50 ms", "p99 ms", "max ms", "longest tick gap s", "missed"),
        phase_rows(log, original, phases),
        formats=(None, None, None, ".1f", ".1f", ".1f", ".2f", None),
    )
    print()
    durations: dict[str, list] = {}
    for kind, seconds, candles in calls:
        durations.setdefault(kind, []).append((seconds, candles))
    print_table(
        ("request", "n", "median s", "max s", "warm-up candles each"),
        [
            (
                f"{kind} {args.churn} symbols",
                len(v),
                float(np.median([s for s, _ in v])),
                max(s for s, _ in v),
                v[0][1],
            )
            for kind, v in durations.items()
        ],
        formats=(None, None, ".2f", ".2f", None),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
