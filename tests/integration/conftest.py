"""One local Ray cluster shared by every integration test of the session."""

from __future__ import annotations

import os
import socket

import pytest

from tests.kafka_support import kafka_broker  # noqa: F401 - a real Kafka broker per test
from tests.mlflow_support import mlflow_server  # noqa: F401 - a real MLflow server per session
from tests.redis_server import redis_server  # noqa: F401 - a real redis-server per test

ADMIN_KEY = "integration-admin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster():
    import ray
    from ray import serve

    # Serve replicas inherit this process's environment: the admin endpoints' key.
    os.environ.setdefault("TICKCAST_ADMIN_KEYS", ADMIN_KEY)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # A free port, so the suite never collides with a tickcast serving on 8000.
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    ray.tickcast_http = f"http://127.0.0.1:{port}"  # the proxy's address, for HTTP tests
    yield ray
    serve.shutdown()
    ray.shutdown()


@pytest.fixture
def serve_app(ray_cluster):
    """Deletes every Serve application a test started, so tests do not see each other's."""
    from ray import serve

    yield serve
    for name in list(serve.status().applications):
        serve.delete(name)
