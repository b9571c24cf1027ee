"""The public API in-process, no Ray: LocalBackend serves the committed registry models."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from orchestrator import PROJECT_ROOT
from orchestrator.config import ApiConfig
from orchestrator.models.registry import Registry
from serve_app.api.app import create_api
from serve_app.api.local_backend import LocalBackend

MODELS = PROJECT_ROOT / "models_onnx"


def make_client(tmp_path, **api_overrides) -> tuple[TestClient, LocalBackend]:
    backend = LocalBackend(MODELS, tmp_path / "log", served={"direction-1m": None})
    app = create_api(ApiConfig(**api_overrides), backend, Registry(MODELS))
    return TestClient(app), backend


@pytest.fixture
def client(tmp_path):
    test_client, backend = make_client(tmp_path)
    test_client.backend = backend
    return test_client
