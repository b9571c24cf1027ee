#!/usr/bin/env python
"""Start `serve run <config>` and report time to the first prediction and the memory of the
whole stack (every process in its session: Ray, Serve, and tickcast's actors).

    tickcast bench stack [configs/local.yaml] [--smoke]

``--smoke``: the config cut down to one small synthetic feed, one shard and one model, and
1 s of settling (about half a minute in all).

RSS double-counts shared pages (the object store, shared libraries); PSS splits them
fairly between processes, so the PSS sum is the honest "memory the stack costs".
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import yaml

from orchestrator import PROJECT_ROOT
from orchestrator.bench.harness import (
    add_smoke_flag,
    apply_smoke,
    free_port,
    print_header,
    print_table,
    session_pids,
    start_session,
    stop_session,
)


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB; (0, 0) if it is gone."""
    try:
        fields = dict(
            line.split(":", 1)
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
        )
    except (OSError, ValueError):
        return 0, 0
    return int(fields["Rss"].split()[0]), int(fields["Pss"].split()[0])


def process_kind(pid: int) -> str:
    """A short name for what a process is: a Serve replica's deployment, an actor class, or Ray."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return "gone"
    title = title.split(".")[0]  # an actor's title names the method it runs: one kind for all
    if title.startswith("ray::ServeReplica:"):
        deployment = title.split(":")[-1]
        return (
            "model replica"
            if deployment.startswith(("model-", "models"))
            else f"replica {deployment}"
        )
    if title.startswith("ray::"):
        return title.split()[0]
    return "ray/serve core (gcs, raylet, dashboard, serve run...)"


# Lines of `serve run`'s output that mark a step of the start: (label, phrase, the last such
# line rather than the first).
MILESTONES = (
    ("Ray started (raylet, GCS, dashboard)", "Started a local Ray instance", False),
    ("Serve started (controller, proxy)", "Started Serve in namespace", False),
    ("first model loaded (a model replica up)", "(stage ", False),
    ("last model loaded", "(stage ", True),
    ("pipeline started (feeds, shards, sink declared)", " started:", False),
    ("first feed live (its history featured by the shards)", ": live; its ", False),
)
_STAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")


def milestones(log: str, started_wall: float) -> list[tuple[str, float]]:
    """Seconds after ``started_wall`` (epoch) at which each ``MILESTONES`` line was logged."""
    lines = log.splitlines()
    found = []
    for label, phrase, last in MILESTONES:
        for line in reversed(lines) if last else lines:
            stamp = _STAMP.search(line)
            if phrase in line and stamp:
                at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f")
                found.append((label, at.timestamp() - started_wall))
                break
    return sorted(found, key=lambda step: step[1])


def first_prediction(base: str, proc: subprocess.Popen, budget_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < budget_s:
        if proc.poll() is not None:
            raise SystemExit(f"serve run exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/v1/predictions/latest", timeout=2).json().get("count"):
                return time.monotonic() - started
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise SystemExit("no prediction within the budget")


# A smoke run's stack: one small synthetic feed, one shard on 1m, one model, no Redis.
SMOKE_FEED = {
    "kind": "synthetic",
    "symbols": ["BTC/USDT", "ETH/USDT"],
    "speed": 10,
    "warmup_minutes": 60,
}
SMOKE_MODELS = [{"model_type": "direction", "timeframe": "1m"}]


def stack_config(config: dict, tmp: Path, port: int, smoke: bool = False) -> dict:
    """The config as ``serve run`` gets it: on 127.0.0.1:``port``, writing into ``tmp``; a
    smoke run's is minimal (``SMOKE_FEED``, ``SMOKE_MODELS``)."""
    config = copy.deepcopy(config)
    config["http_options"] = {**config.get("http_options", {}), "host": "127.0.0.1", "port": port}
    args = config["applications"][0]["args"]
    args.setdefault("sink", {})["log_dir"] = f"{tmp}/predictions"
    args.setdefault("stream", {})["state_dir"] = f"{tmp}/state"
    if smoke:
        args["feeds"] = [SMOKE_FEED]
        args["models"] = SMOKE_MODELS
        args["features"] = {**args.get("features", {}), "shards": 1, "timeframes": ["1m"]}
        args["sink"].pop("redis_url", None)
    return config


def stack_memory(pids: list[int]) -> tuple[int, int, dict[str, list[int]]]:
    """(RSS sum, PSS sum) in kB of ``pids``, and the PSS of each by process kind."""
    sizes = {pid: memory_kb(pid) for pid in pids}
    rss, pss = (sum(column) for column in zip(*sizes.values(), strict=True)) if sizes else (0, 0)
    kinds: dict[str, list[int]] = {}
    for pid in pids:
        kinds.setdefault(process_kind(pid), []).append(sizes[pid][1])
    return rss, pss, kinds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default="configs/local.yaml")
    parser.add_argument(
        "--settle", type=float, default=20.0, help="seconds to run before measuring memory"
    )
    parser.add_argument(
        "--budget", type=float, default=180.0, help="seconds serve run gets to a first prediction"
    )
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    apply_smoke(parser, args, settle=1.0, budget=120.0)
    label = f"{args.config} (smoke: 1 synthetic feed, 1 model)" if args.smoke else args.config
    print_header("stack", f"serve run {label}", smoke=args.smoke)
    config = yaml.safe_load((PROJECT_ROOT / args.config).read_text())
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(stack_config(config, Path(tmp), port, args.smoke)))
        serve_bin = Path(sys.executable).with_name("serve")
        log = Path(tmp) / "serve.log"
        started_wall = time.time()
        with open(log, "wb") as out:
            proc = start_session([str(serve_bin), "run", str(path)], out)
        try:
            ttfp = first_prediction(f"http://127.0.0.1:{port}", proc, args.budget)
            time.sleep(args.settle)
            pids = session_pids(proc.pid)
            rss, pss, kinds = stack_memory(pids)
            steps = milestones(log.read_text(errors="replace"), started_wall)
            if os.environ.get("TICKCAST_BENCH_KEEP_LOG"):
                Path(os.environ["TICKCAST_BENCH_KEEP_LOG"]).write_bytes(log.read_bytes())
        except SystemExit:
            tail = log.read_text(errors="replace").splitlines()[-20:]
            print("serve run's last lines:", *tail, sep="\n", file=sys.stderr)
            raise
        finally:
            stop_session(proc)
    print_table(
        ("measure", label),
        [
            ("serve run -> first prediction", f"{ttfp:.1f} s"),
            ("processes in the stack", len(pids)),
            ("resident memory, PSS sum", f"{pss / 1024:,.0f} MiB"),
            ("resident memory, RSS sum (double-counts shared pages)", f"{rss / 1024:,.0f} MiB"),
        ],
    )
    print()
    print_table(
        ("start-up step (serve run's log)", "s after serve run"),
        [*((label, f"{at:.1f}") for label, at in steps), ("first prediction", f"{ttfp:.1f}")],
    )
    print()
    print_table(
        ("process kind", "count", "PSS each (mean)"),
        [
            (kind, len(sizes), f"{sum(sizes) / len(sizes) / 1024:,.0f} MiB")
            for kind, sizes in sorted(kinds.items(), key=lambda kv: -sum(kv[1]))
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
