"""What every benchmark repeats: the machine line, Markdown tables, best-of-N timing, a free
port, the processes of a session, and the ``--smoke`` flag.

A benchmark prints ``header(...)`` first (cores and load average: the machine is shared and
other jobs slow every figure alike), then its tables with ``print_table``. With ``--smoke``
it runs at tiny sizes in seconds so the test suite catches a changed signature; its figures
then mean nothing and no target is judged (``targets_not_judged``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import numbers
import os
import random
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator import PROJECT_ROOT, resolve_path

DEFAULT_DATA = "../shared/data"  # the shared real data set, relative to the repository
SMOKE_HELP = (
    "smoke run: tiny sizes, a few seconds; checks that the benchmark runs, "
    "its figures mean nothing and no target is judged"
)
SMOKE_NOTE = "SMOKE RUN (tiny sizes: the figures mean nothing)"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the machine ---------------------------------------------------------------------------


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine(note: str | None = None) -> str:
    """``"2 cores (load average 0.31, 0.40, 0.52)"``, with ``note`` inside the brackets."""
    return f"{os.cpu_count()} cores (load average {load_average()}{f'; {note}' if note else ''})"


def header(name: str, *details: str, note: str | None = None, smoke: bool = False) -> str:
    """The first line of a benchmark's output: what ran, on which machine, at what load."""
    parts = [f"tickcast {name} benchmark: {machine(note)}", *details]
    if smoke:
        parts.append(SMOKE_NOTE)
    return ", ".join(parts)


def print_header(name: str, *details: str, note: str | None = None, smoke: bool = False) -> None:
    print(header(name, *details, note=note, smoke=smoke), flush=True)


# --- Markdown tables -----------------------------------------------------------------------

Cell = str | int | float | None
# A cell that reads as a figure: "1,234", "-0.5", "3.4x", "12.0 ms", "20.6 / 28.8 ms", "12%".
_FIGURE = re.compile(r"^[-+]?(\d[\d,]*(\.\d*)?|\.\d+)(x|%)?(\s|$)")
_EMPTY = {"", "-", "—"}


def format_cell(value: Any, spec: str | None = None) -> str:
    """Strings as given; None and NaN as ``-``; ints with thousands separators; floats with
    ``spec`` (default ``,.0f``: whole numbers with thousands separators)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral) and spec is None:
        return f"{int(value):,}"
    if isinstance(value, numbers.Real) and math.isnan(value):
        return "-"
    return format(value, spec or ",.0f")


def is_figure(text: str) -> bool:
    return bool(_FIGURE.match(text.strip()))


def markdown_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    formats: Sequence[str | None] | None = None,
    align: str | None = None,
) -> str:
    """A Markdown table, padded so it also reads in a terminal.

    ``formats``: a format spec per column for its int and float cells (None: the default
    of ``format_cell``). ``align``: ``"l"``/``"r"`` per column; by default a column is
    right-aligned when most of its non-empty cells are numbers or read as figures. Rows
    shorter than ``headers`` are padded with empty cells; a ``|`` in a cell is escaped.
    """
    n = len(headers)
    formats = list(formats or [None] * n) + [None] * n
    text = []
    for row in rows:
        if len(row) > n:
            raise ValueError(f"a row of {len(row)} cells under {n} headers: {row!r}")
        cells = [format_cell(v, formats[i]).replace("|", "\\|") for i, v in enumerate(row)]
        text.append(cells + [""] * (n - len(cells)))
    if align is None:
        align = "".join("r" if _mostly_figures([r[i] for r in text]) else "l" for i in range(n))
    if len(align) != n or set(align) - {"l", "r"}:
        raise ValueError(f"align must be {n} of 'l'/'r', not {align!r}")
    widths = [max([len(headers[i]), 3, *(len(r[i]) for r in text)]) for i in range(n)]

    def line(cells: Sequence[str]) -> str:
        padded = (
            c.rjust(w) if a == "r" else c.ljust(w)
            for c, w, a in zip(cells, widths, align, strict=True)
        )
        return "| " + " | ".join(padded) + " |"

    rule = (
        "| "
        + " | ".join(
            "-" * (w - 1) + ":" if a == "r" else "-" * w for w, a in zip(widths, align, strict=True)
        )
        + " |"
    )
    return "\n".join([line(headers), rule, *(line(r) for r in text)])


def _mostly_figures(cells: list[str]) -> bool:
    """Most filled cells are figures (a few may say "not measured")."""
    filled = [c for c in cells if c.strip() not in _EMPTY]
    return 2 * sum(map(is_figure, filled)) > len(filled)


def print_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    formats: Sequence[str | None] | None = None,
    align: str | None = None,
) -> None:
    print(markdown_table(headers, rows, formats, align), flush=True)


# --- timing: best of N (on a shared machine the slower repeats measure the neighbours) -------


def best_seconds(work: Callable[..., Any], *args: Any, repeats: int = 3, loops: int = 1) -> float:
    """Seconds per call of ``work(*args)``: the fastest of ``repeats`` runs of ``loops`` calls."""
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(loops):
            work(*args)
        best = min(best, (time.perf_counter() - started) / loops)
    return best


def best_times(work: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of the fastest of ``repeats`` runs. CPU
    time barely moves when other jobs load the machine; wall time does."""
    best = (math.inf, math.inf)
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def best_rate(work: Callable[[], int], repeats: int) -> float:
    """Items per second of the fastest of ``repeats`` runs; ``work`` returns its item count."""
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        count = work()
        best = max(best, count / (time.perf_counter() - started))
    return best


def percentile(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(samples, q)) if len(samples) else math.nan


# --- processes and ports ---------------------------------------------------------------------


# Ray's workers take ports in 10002-19999 by default; the kernel hands out its ephemeral
# range (usually 32768-60999) to whatever binds port 0, and `serve run` starts Ray's many
# processes before its HTTP proxy binds: a port the OS chose for us was seen taken by then
# ("Failed to bind to address"). Ports between the two ranges are nobody's choice.
QUIET_PORTS = (20000, 32000)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now, outside the ranges Ray and the kernel pick from."""
    low, high = QUIET_PORTS
    for port in random.sample(range(low, high), 200):
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high}")


def session_pids(sid: int) -> list[int]:
    """Every process of session ``sid`` (a server started with ``start_new_session``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


def start_session(command: list[str], output, env: dict | None = None) -> subprocess.Popen:
    """``command`` in its own session (so ``stop_session`` reaches every process it starts),
    from the repository, with Ctrl-C at its default: a shell script's background jobs
    inherit SIGINT ignored, and ``serve run`` would then never shut down."""
    return subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_session(proc: subprocess.Popen, grace_s: float = 60.0) -> None:
    """Ctrl-C (``serve run`` shuts Serve and Ray down), then SIGKILL for whatever of the
    session is still there after ``grace_s``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    for pid in session_pids(proc.pid) + [proc.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def stop_process(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``grace_s`` (a server the tests or a
    benchmark started: moto, the Kafka broker)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace_s)


def machine_ticks() -> tuple[int, int]:
    """(all CPU ticks, ticks stolen by the hypervisor) so far, over every core (/proc/stat);
    two readings give the share of a run's CPU time this virtual machine did not get."""
    try:
        fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return sum(fields[:8]), fields[7] if len(fields) > 7 else 0


def stolen_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share (0-1) of the CPU time between two ``machine_ticks`` readings that the
    hypervisor gave to others; 0 when unknown."""
    total = after[0] - before[0]
    return (after[1] - before[1]) / total if total > 0 else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (Linux /proc); 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


# --- data and the smoke flag -----------------------------------------------------------------


def data_root(path: str | Path) -> Path:
    """A ``--data`` argument as a path (relative to the repository)."""
    return resolve_path(path)


def add_smoke_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)


def apply_smoke(parser: argparse.ArgumentParser, args: argparse.Namespace, **sizes: Any) -> None:
    """In a smoke run, set each of ``sizes`` on ``args`` unless its option was given a value
    other than its default on the command line."""
    if not getattr(args, "smoke", False):
        return
    for name, value in sizes.items():
        if getattr(args, name) == parser.get_default(name):
            setattr(args, name, value)


def targets_not_judged() -> None:
    print("targets: not judged in a smoke run")
