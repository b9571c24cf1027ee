"""A real ``redis-server`` for tests: 127.0.0.1, a free port, no persistence, a temp dir.

``running_redis`` starts one and always stops it; it skips the test, with the package to
install, only when the ``redis-server`` binary is missing (Debian/Ubuntu package:
``redis-server``). Use it from a fixture::

    @pytest.fixture(scope="module")
    def redis_url(tmp_path_factory):
        with running_redis(tmp_path_factory.mktemp("redis")) as server:
            yield server.url
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

APT_PACKAGE = "redis-server"
READY_ATTEMPTS = 200  # x 0.05 s: a stuck server fails the test after ~10 s, never hangs it
STOP_TIMEOUT_S = 10.0


@dataclass
class RedisServer:
    process: subprocess.Popen
    port: int
    password: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(f"redis-server is not installed (apt-get install -y {APT_PACKAGE})")
    return binary


def _command(
    binary: str, port: int, workdir: Path, password: str | None, extra: tuple[str, ...]
) -> list[str]:
    command = [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--daemonize",
        "no",
        "--logfile",
        str(workdir / "redis.log"),
    ]
    return command + (["--requirepass", password] if password else []) + list(extra)


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            reply = conn.recv(64)
    except OSError:
        return False
    # An authenticated server answers NOAUTH: it is up all the same.
    return reply.startswith((b"+PONG", b"-NOAUTH"))


def _wait_ready(server: RedisServer, workdir: Path) -> None:
    for _ in range(READY_ATTEMPTS):
        if server.process.poll() is not None:
            log = (workdir / "redis.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"redis-server exited with {server.process.returncode}:\n{log}")
        if _answers_ping(server.port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not answer on port {server.port}")


@contextmanager
def running_redis(
    workdir: Path, password: str | None = None, extra: tuple[str, ...] = (), port: int | None = None
) -> Iterator[RedisServer]:
    """A started server, stopped on exit (also when the test fails); on ``port`` to bring one
    back where clients expect it."""
    binary, port = redis_binary(), port or free_port()
    process = subprocess.Popen(
        _command(binary, port, Path(workdir), password, extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = RedisServer(process, port, password)
    try:
        _wait_ready(server, Path(workdir))
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    """A fresh server per test (import it into a conftest to share it)."""
    with running_redis(tmp_path) as server:
        yield server
