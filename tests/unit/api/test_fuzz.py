"""Schema-driven fuzzing of the API from its own OpenAPI document (schemathesis, in-process
over ASGI, LocalBackend with the committed models): no request may produce a 500. Arrow
bodies come from a strategy of our own: streams of well- and ill-typed columns, whole,
compressed, cut short or with flipped bytes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from orchestrator.config import ApiConfig
from orchestrator.features import FEATURE_NAMES
from orchestrator.models.registry import Registry
from serve_app.api.app import create_api
from serve_app.api.local_backend import LocalBackend
from serve_app.api.schemas import ARROW_STREAM
from tests.unit.api.conftest import MODELS

COLUMN_TYPES = {
    "float32": np.float32,
    "float64": np.float64,
    "int16": np.int16,
    "uint64": np.uint64,
}
ODD_KINDS = ["int16", "uint64", "string", "bool", "nan"]


@st.composite
def arrow_streams(draw) -> bytes:
    names = draw(
        st.one_of(
            st.permutations(FEATURE_NAMES),
            st.lists(st.sampled_from([*FEATURE_NAMES, "nope", ""]), max_size=30),
        )
    )
    n_rows = draw(st.integers(0, 70))
    # Often what a client sends (every feature, one float type), so well-formed streams reach
    # the model too; sometimes with one odd column.
    kinds = dict.fromkeys(names, draw(st.sampled_from(["float32", "float64"])))
    if names and draw(st.booleans()):
        kinds[draw(st.sampled_from(names))] = draw(st.sampled_from(ODD_KINDS))
    columns = {name: _column(kind, n_rows) for name, kind in kinds.items()}
    table = pa.table(columns) if columns else pa.schema([]).empty_table()
    sink = pa.BufferOutputStream()
    options = ipc.IpcWriteOptions(compression=draw(st.sampled_from([None, None, None, "zstd"])))
    with ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table, max_chunksize=draw(st.integers(1, 80)))
    return _damage(draw, sink.getvalue().to_pybytes())


def _column(kind: str, n_rows: int) -> pa.Array:
    if kind in ("string", "bool"):
        return pa.array(
            ["x" if kind == "string" else True] * n_rows,
            pa.string() if kind == "string" else pa.bool_(),
        )
    values = np.arange(n_rows) % 7 if kind != "nan" else np.full(n_rows, np.nan)
    return pa.array(values.astype(COLUMN_TYPES.get(kind, np.float64)))


def _damage(draw, body: bytes) -> bytes:
    how = draw(st.sampled_from(["whole"] * 4 + ["cut", "flip"]))
    if how == "cut" and body:
        return body[: draw(st.integers(0, len(body) - 1))]
    if how == "flip" and body:
        at = draw(st.integers(0, len(body) - 1))
        return body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1 :]
    return body


schemathesis.openapi.media_type(ARROW_STREAM, arrow_streams())

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
    assert response.status_code < 500, (
        f"{case.method} {case.path} -> {response.status_code}: {response.text}"
    )
    # A documented status with a body that matches the documented schema.
    case.validate_response(response, checks=(schemathesis.checks.response_schema_conformance,))
