"""Schema-driven fuzzing of the API from its own OpenAPI document (schemathesis, in-process
over ASGI, LocalBackend with the committed models): no request may produce a 500."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from orchestrator.config import ApiConfig
from serve_app.api import create_api
from serve_app.local_backend import LocalBackend
from serve_app.registry import Registry
from tests.unit.api.conftest import MODELS

_LOG_DIR = Path(tempfile.mkdtemp(prefix="tickcast-fuzz-"))
_APP = create_api(
    ApiConfig(rate_limit_per_s=1e9, rate_limit_burst=10**9, max_rows=64),
    LocalBackend(MODELS, _LOG_DIR, served={"direction-1m": None}),
    Registry(MODELS),
)
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_makes_the_api_fail(case):
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text}"
    # A documented status with a body that matches the documented schema.
    case.validate_response(response, checks=(schemathesis.checks.response_schema_conformance,))
