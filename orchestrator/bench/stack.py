#!/usr/bin/env python
"""Start `serve run <config>` and report time to the first prediction and the memory of the
whole stack (every process in its session: Ray, Serve, and tickcast's actors).

    python orchestrator/bench/stack.py configs/local.yaml

RSS double-counts shared pages (the object store, shared libraries); PSS splits them
fairly between processes, so the PSS sum is the honest "memory the stack costs".
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from orchestrator import PROJECT_ROOT


def session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB; (0, 0) if it is gone."""
    try:
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
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
    if title.startswith("ray::ServeReplica:"):
        deployment = title.split(":")[-1]
        return "model replica" if deployment.startswith("model-") else f"replica {deployment}"
    if title.startswith("ray::"):
        return title.split()[0]
    return "ray/serve core (gcs, raylet, dashboard, serve run...)"


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default="configs/local.yaml")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds to run before measuring memory")
    args = parser.parse_args(argv)
    config = yaml.safe_load((PROJECT_ROOT / args.config).read_text())
    port = config.get("http_options", {}).get("port", 8000)
    with tempfile.TemporaryDirectory() as tmp:
        config["applications"][0]["args"].setdefault("sink", {})["log_dir"] = f"{tmp}/predictions"
        config["applications"][0]["args"].setdefault("stream", {})["state_dir"] = f"{tmp}/state"
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        serve_bin = Path(sys.executable).with_name("serve")
        proc = subprocess.Popen([str(serve_bin), "run", str(path)], cwd=PROJECT_ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            ttfp = first_prediction(f"http://127.0.0.1:{port}", proc, 180)
            time.sleep(args.settle)
            pids = session_pids(proc.pid)
            rss, pss = map(sum, zip(*(memory_kb(p) for p in pids), strict=True))
            kinds: dict[str, list[int]] = {}
            for pid in pids:
                kinds.setdefault(process_kind(pid), []).append(memory_kb(pid)[1])
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=60)
    print(f"| measure | {args.config} |\n| --- | --- |")
    print(f"| serve run -> first prediction | {ttfp:.1f} s |")
    print(f"| processes in the stack | {len(pids)} |")
    print(f"| resident memory, PSS sum | {pss / 1024:.0f} MiB |")
    print(f"| resident memory, RSS sum (double-counts shared pages) | {rss / 1024:.0f} MiB |")
    print("\n| process kind | count | PSS each (mean) |\n| --- | --- | --- |")
    for kind, sizes in sorted(kinds.items(), key=lambda kv: -sum(kv[1])):
        print(f"| {kind} | {len(sizes)} | {sum(sizes) / len(sizes) / 1024:.0f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
