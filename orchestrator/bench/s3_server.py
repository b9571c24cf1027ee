"""A local S3-compatible server (moto's ``moto_server``, from the test extras) on 127.0.0.1
with one bucket, for the storage tests and ``tickcast bench storage``: a real HTTP S3 API,
reached the way production reaches S3 (endpoint and keys from the environment)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs

from orchestrator.bench.harness import free_port, stop_process

BUCKET = "tickcast"


@contextlib.contextmanager
def s3_server(log_path: Path, bucket: str = BUCKET) -> Iterator[dict[str, str]]:
    """Start ``moto_server``, create ``bucket``; yields the environment a client needs
    (``AWS_ENDPOINT_URL`` and keys). Stopped on exit."""
    binary = Path(sys.executable).with_name("moto_server")
    command = str(binary) if binary.exists() else shutil.which("moto_server")
    if command is None:
        raise RuntimeError("moto_server is missing: pip install 'moto[server]' (the test extras)")
    port = free_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "tickcast-test",
        "AWS_SECRET_ACCESS_KEY": "tickcast-test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [command, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _create_bucket(env, bucket, server, log_path)
            yield env
        finally:
            stop_process(server)


def _create_bucket(env: dict, bucket: str, server: subprocess.Popen, log_path: Path) -> None:
    admin = pafs.S3FileSystem(
        endpoint_override=env["AWS_ENDPOINT_URL"],
        access_key=env["AWS_ACCESS_KEY_ID"],
        secret_key=env["AWS_SECRET_ACCESS_KEY"],
        region=env["AWS_DEFAULT_REGION"],
        allow_bucket_creation=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            admin.create_dir(bucket)
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start (see {log_path})") from None
            time.sleep(0.2)
