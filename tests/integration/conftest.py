"""One local Ray cluster shared by every integration test of the session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
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
