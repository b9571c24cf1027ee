"""Soak: the application under a steady load for a while, sampled every minute, written up.

`serve run` of a paced synthetic market (``--symbols`` symbols, one candle per symbol per
second of wall time, so a minute of market per second), one WebSocket client subscribed to
everything and a steady HTTP client (latest predictions of a random symbol, twice a second;
status every 5 s). Every ``--every-s`` it samples each process's memory (PSS) and CPU,
the queues (sink buffer, bus buffer, batches a feed waits on, outcomes pending) and the 1m
tick latency p99 of the last 60 ticks (the shards' ``recent_p99``). It writes a Markdown
report with one PNG per series to ``--out`` and prints the summary: each process kind's
memory growth after the first ``--settle-min`` minutes (the baseline is that sample, from
the same run), the tick p99 over time, and whether any queue only grew.

    tickcast bench soak [--minutes 30] [--symbols 1000] [--out var/soak] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from pathlib import Path

import httpx

from orchestrator import resolve_path
from orchestrator.bench.browser import dashboard_config, new_port, serve_run, wait_for_predictions
from orchestrator.bench.harness import (
    add_smoke_flag,
    apply_smoke,
    cpu_seconds,
    print_header,
    print_table,
    session_pids,
)
from orchestrator.bench.stack import memory_kb, process_kind


class ClientLoad:
    """The steady HTTP and WebSocket load, in two threads, until ``stop``."""

    def __init__(self, base: str, symbols: list[str]):
        self.base, self.symbols = base, symbols
        self.stopping = threading.Event()
        self.requests = self.errors = self.stream_messages = 0
        self._threads = [threading.Thread(target=t, daemon=True) for t in (self._http, self._ws)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _http(self) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as client:
            beat = 0
            while not self.stopping.wait(0.5):
                beat += 1
                path = "/v1/status" if beat % 10 == 0 else "/v1/predictions/latest"
                params = {} if beat % 10 == 0 else {"symbol": random.choice(self.symbols)}
                try:
                    client.get(path, params=params).raise_for_status()
                    self.requests += 1
                except httpx.HTTPError:
                    self.errors += 1

    def _ws(self) -> None:
        from websockets.sync.client import connect

        url = self.base.replace("http://", "ws://") + "/v1/stream"
        while not self.stopping.is_set():
            try:
                with connect(url, open_timeout=10) as socket:
                    socket.send(json.dumps({"action": "subscribe"}))
                    while not self.stopping.is_set():
                        try:
                            socket.recv(timeout=1)
                            self.stream_messages += 1
                        except TimeoutError:
                            continue
            except Exception:  # noqa: BLE001 - a dropped stream reconnects, and is counted
                self.errors += 1
                self.stopping.wait(1)


def sample(base: str, sid: int, started: float) -> dict:
    status = httpx.get(f"{base}/v1/status", timeout=30).json()
    by_kind: dict[str, dict] = {}
    core: dict[str, int] = {}  # Ray's own processes one by one: which of them grows
    for pid in session_pids(sid):
        kind = process_kind(pid)
        entry = by_kind.setdefault(kind, {"pss_kb": 0, "cpu_s": 0.0, "n": 0})
        pss = memory_kb(pid)[1]
        entry["pss_kb"] += pss
        entry["cpu_s"] += cpu_seconds(pid)
        entry["n"] += 1
        if kind.startswith("ray/serve core"):
            name = process_name(pid)
            core[name] = core.get(name, 0) + pss
    shards = [s for s in status["shards"] if s.get("up", True)]
    p99 = [s["latency_ms"]["1m"]["recent_p99"] for s in shards if "1m" in s.get("latency_ms", {})]
    sink = status["sink"]
    return {
        "minute": round((time.monotonic() - started) / 60, 2),
        "processes": by_kind,
        "tick_p99_ms": max(p99) if p99 else None,
        "core_pss_kb": core,
        # cumulative seconds per shard stage and ticks: the report shows ms per tick per minute
        "stages": _summed([s.get("stage_seconds", {}) for s in shards]),
        "ticks": sum(s.get("ticks", 0) for s in shards),
        "queues": {
            "sink buffer rows": sink.get("buffered", 0),
            "bus waiting rows": (sink.get("bus") or {}).get("waiting", 0),
            "feed unacked batches": sum(f.get("unacked_batches", 0) for f in status["feeds"]),
            "outcomes pending": sum(s.get("outcomes_pending", 0) for s in shards),
        },
        "predictions": sink.get("received", 0),
    }


def process_name(pid: int) -> str:
    """The program a process runs (gcs_server, raylet, the dashboard's python ...)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    words = [Path(a.decode(errors="replace")).name for a in argv[:3] if a]
    script = next((w for w in words[1:] if w.endswith(".py")), None)
    return script or (words[0] if words else "?")


def _summed(parts: list[dict]) -> dict[str, float]:
    total: dict[str, float] = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0.0) + value
    return total


def stage_rows(samples: list[dict]) -> list[tuple]:
    """Per sample: ms per tick spent in each shard stage since the previous sample."""
    rows = []
    for before, now in zip(samples, samples[1:], strict=False):
        ticks = now["ticks"] - before["ticks"]
        per_tick = {
            k: (v - before["stages"].get(k, 0.0)) * 1000 / ticks if ticks else None
            for k, v in now["stages"].items()
        }
        rows.append((now["minute"], ticks, per_tick))
    return rows


def summarize(samples: list[dict], settle_min: float) -> tuple[list[tuple], list[tuple]]:
    """(memory rows per process kind, queue rows), growth against the settled sample."""
    settled = next((s for s in samples if s["minute"] >= settle_min), samples[0])
    last = samples[-1]
    memory = []
    for kind, now in sorted(last["processes"].items(), key=lambda kv: -kv[1]["pss_kb"]):
        then = settled["processes"].get(kind, {}).get("pss_kb")
        growth = (now["pss_kb"] - then) / then * 100 if then else None
        cpu = now["cpu_s"] / max(last["minute"] * 60, 1e-9) * 100
        memory.append(
            (
                kind,
                now["n"],
                then and then // 1024,
                now["pss_kb"] // 1024,
                None if growth is None else f"{growth:+.1f}",
                f"{cpu:.1f}",
            )
        )
    queues = []
    for name in last["queues"]:
        series = [s["queues"][name] for s in samples]
        half = series[len(series) // 2 :]
        only_grew = len(half) > 2 and all(b > a for a, b in zip(half, half[1:], strict=False))
        queues.append((name, max(series), series[-1], "yes" if only_grew else "no"))
    return memory, queues


def write_report(out: Path, samples: list[dict], memory, queues, args, load: ClientLoad) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    minutes = [s["minute"] for s in samples]
    kinds = sorted({k for s in samples for k in s["processes"]})
    plots = {
        "memory": (
            {
                k: [s["processes"].get(k, {}).get("pss_kb", 0) / 1024 for s in samples]
                for k in kinds
            },
            "PSS, MiB",
        ),
        "tick_p99": ({"1m tick p99": [s["tick_p99_ms"] or 0 for s in samples]}, "ms"),
        "queues": ({q: [s["queues"][q] for s in samples] for q in samples[0]["queues"]}, "items"),
    }
    for name, (series, unit) in plots.items():
        fig, ax = plt.subplots(figsize=(8, 4))
        for label, values in series.items():
            ax.plot(minutes, values, label=label)
        ax.set_xlabel("minutes")
        ax.set_ylabel(unit)
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=80)
        plt.close(fig)
    lines = [
        f"# Soak: {args.minutes} min, {args.symbols} paced synthetic symbols",
        "",
        f"HTTP requests {load.requests:,} (errors {load.errors}), stream messages "
        f"{load.stream_messages:,}, predictions {samples[-1]['predictions']:,}.",
        "",
        "| process kind | n | PSS at settle, MiB | PSS at end, MiB | growth % | CPU % |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {' | '.join('-' if v is None else str(v) for v in row)} |" for row in memory],
        "",
        "| queue | max | at end | only grew in the second half |",
        "| --- | ---: | ---: | --- |",
        *[f"| {' | '.join(str(v) for v in row)} |" for row in queues],
        "",
        "| minute | 1m tick p99, ms |",
        "| ---: | ---: |",
        *[f"| {s['minute']} | {s['tick_p99_ms']} |" for s in samples],
        "",
        "Shard time per tick by stage since the previous sample, ms (model_wait overlaps the "
        "next batch's features):",
        "",
        *_stage_table(samples),
        "",
        "Ray's own processes, PSS in MiB at the settled sample and at the end:",
        "",
        *_core_table(samples, args.settle_min),
        "",
        "![memory](memory.png) ![tick p99](tick_p99.png) ![queues](queues.png)",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    (out / "samples.json").write_text(json.dumps(samples, indent=1))
    return report


def _stage_table(samples: list[dict]) -> list[str]:
    rows = stage_rows(samples)
    stages = sorted({k for _, _, per in rows for k in per})
    lines = [
        "| minute | ticks | " + " | ".join(stages) + " |",
        "| ---: | ---: | " + " | ".join("---:" for _ in stages) + " |",
    ]
    for minute, ticks, per in rows:
        cells = ["-" if per.get(k) is None else f"{per[k]:.2f}" for k in stages]
        lines.append(f"| {minute} | {ticks} | " + " | ".join(cells) + " |")
    return lines


def _core_table(samples: list[dict], settle_min: float) -> list[str]:
    settled = next((s for s in samples if s["minute"] >= settle_min), samples[0])
    last = samples[-1]
    lines = ["| process | at settle | at end | growth MiB |", "| --- | ---: | ---: | ---: |"]
    for name in sorted(last["core_pss_kb"], key=lambda n: -last["core_pss_kb"][n]):
        then, now = settled["core_pss_kb"].get(name, 0) // 1024, last["core_pss_kb"][name] // 1024
        lines.append(f"| {name} | {then} | {now} | {now - then:+d} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--every-s", type=float, default=60.0)
    parser.add_argument("--settle-min", type=float, default=5.0)
    parser.add_argument(
        "--out", default="var/soak", help="report folder (relative: the repository)"
    )
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    apply_smoke(parser, args, minutes=0.25, symbols=20, every_s=5.0, settle_min=0.1)
    print_header("soak", f"{args.minutes} min, {args.symbols} symbols", smoke=args.smoke)
    samples: list[dict] = []
    with tempfile.TemporaryDirectory() as folder:
        tmp, port = Path(folder), new_port()
        base = f"http://127.0.0.1:{port}"
        config = dashboard_config(tmp, port, args.symbols, environment="soak")
        with serve_run(config, tmp / "serve.log") as proc:
            wait_for_predictions(base, proc, 300, minimum=args.symbols)
            symbols = [f"SYN{i:04d}/USDT" for i in range(args.symbols)]
            load = ClientLoad(base, symbols)
            load.start()
            started = time.monotonic()
            try:
                while time.monotonic() - started < args.minutes * 60:
                    time.sleep(args.every_s)
                    samples.append(sample(base, proc.pid, started))
            finally:
                load.stop()
    memory, queues = summarize(samples, args.settle_min)
    report = write_report(resolve_path(args.out), samples, memory, queues, args, load)
    print_table(
        ("process kind", "n", "PSS at settle, MiB", "PSS at end, MiB", "growth %", "CPU %"), memory
    )
    print()
    print_table(("queue", "max", "at end", "only grew in the second half"), queues)
    p99 = [s["tick_p99_ms"] for s in samples if s["tick_p99_ms"] is not None]
    print(
        f"1m tick p99: first {p99[0] if p99 else '-'} ms, last {p99[-1] if p99 else '-'} ms, "
        f"max {max(p99) if p99 else '-'} ms; report: {report}"
    )
    return 0
