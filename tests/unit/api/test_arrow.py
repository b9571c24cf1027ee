"""POST /v1/predict with Arrow IPC bodies, the JSON answer built without pydantic, and the
registry look-ups cached off the request path."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from orchestrator.features import FEATURE_NAMES
from orchestrator.models.predictor import OnnxPredictor
from orchestrator.models.registry import Registry, RegistryError
from serve_app.api.backend import BackendError
from serve_app.api.predict import FeatureLists
from serve_app.api.schemas import ARROW_STREAM, PredictResponse
from tests.unit.api.conftest import MODELS, make_client

QUERY = {"model_type": "direction", "timeframe": "1m"}
ARROW = {"content-type": ARROW_STREAM}


def _predictor() -> OnnxPredictor:
    registry = Registry(MODELS)
    manifest = registry.resolve("direction", "1m")
    return OnnxPredictor(manifest, registry.load_bytes(manifest))


NAMES = list(_predictor().manifest.feature_names)


def arrow_body(columns: dict, compression: str | None = None, chunk: int | None = None) -> bytes:
    table = pa.table(columns)
    sink = pa.BufferOutputStream()
    with ipc.new_stream(
        sink, table.schema, options=ipc.IpcWriteOptions(compression=compression)
    ) as w:
        w.write_table(table, max_chunksize=chunk)
    return sink.getvalue().to_pybytes()


def feature_columns(n: int, dtype=np.float32, names=NAMES, seed: int = 0) -> dict:
    x = np.random.default_rng(seed).normal(size=(n, len(names))).astype(dtype)
    return {name: x[:, i] for i, name in enumerate(names)}


def expected_prob_up(columns: dict) -> np.ndarray:
    full = np.full((len(next(iter(columns.values()))), len(FEATURE_NAMES)), np.nan)
    for name, values in columns.items():
        full[:, FEATURE_NAMES.index(name)] = values
    return _predictor().predict(full)[:, 0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_arrow_rows_predict_what_the_model_predicts(client, dtype):
    columns = feature_columns(300, dtype)
    answer = client.post(
        "/v1/predict", params=QUERY, content=arrow_body(columns, chunk=128), headers=ARROW
    )
    assert answer.status_code == 200, answer.text
    parsed = PredictResponse.model_validate(answer.json())  # the documented shape
    assert parsed.model_id == "direction-1m" and parsed.outputs == ["prob_up"]
    np.testing.assert_allclose(
        [p["prob_up"] for p in parsed.predictions], expected_prob_up(columns)
    )


def test_arrow_and_json_bodies_give_the_same_answer_in_any_column_order(client):
    columns = feature_columns(5, np.float64, seed=3)
    reordered = dict(reversed(list(columns.items())))
    unused = next(n for n in FEATURE_NAMES if n not in NAMES)  # known, but not this model's
    extra = {**columns, unused: np.full(5, 50.0)}
    by_arrow = [
        client.post("/v1/predict", params=QUERY, content=arrow_body(c), headers=ARROW).json()
        for c in (columns, reordered, extra)
    ]
    rows = np.column_stack(list(columns.values())).tolist()
    by_json = client.post(
        "/v1/predict", json={**QUERY, "rows": rows, "columns": list(columns)}
    ).json()
    assert by_arrow[0] == by_arrow[1] == by_arrow[2] == by_json


def test_a_named_version_and_an_unknown_one(client):
    served = client.get("/v1/models").json()["models"]
    version = next(m["version"] for m in served if m["serving"])
    body = arrow_body(feature_columns(2))
    ok = client.post(
        "/v1/predict", params={**QUERY, "version": version}, content=body, headers=ARROW
    )
    assert ok.status_code == 200 and ok.json()["version"] == version
    missing = client.post(
        "/v1/predict", params={**QUERY, "version": "v999"}, content=body, headers=ARROW
    )
    assert missing.status_code == 404 and "v999" in missing.text


def _loc(answer) -> list:
    return answer.json()["detail"][0]["loc"]


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"timeframe": "1m"}, ["query", "model_type"]),
        ({"model_type": "direction"}, ["query", "timeframe"]),
        ({**QUERY, "timeframe": "7m"}, ["query", "timeframe"]),
        ({**QUERY, "model_type": "magic"}, ["query", "model_type"]),
        ({**QUERY, "version": "latest"}, ["query", "version"]),
    ],
)
def test_arrow_bodies_need_a_valid_model_in_the_query(client, params, loc):
    answer = client.post(
        "/v1/predict", params=params, content=arrow_body(feature_columns(1)), headers=ARROW
    )
    assert answer.status_code == 422 and _loc(answer) == loc


def _with(columns: dict, **changes) -> dict:
    return {**columns, **changes}


BASE = feature_columns(4)
BAD_BODIES = [
    (arrow_body(_with(BASE, nope=np.zeros(4))), 422, ["body", "columns"], "unknown features"),
    (
        arrow_body({k: v for k, v in BASE.items() if k != NAMES[0]}),
        422,
        ["body", "columns"],
        NAMES[0],
    ),
    (
        arrow_body(_with(BASE, **{NAMES[1]: ["a", "b", "c", "d"]})),
        422,
        ["body", "columns"],
        "string",
    ),
    (
        arrow_body(_with(BASE, **{NAMES[1]: pa.array([1.0, None, 2.0, 3.0])})),
        422,
        ["body", "columns"],
        "null",
    ),
    (
        arrow_body(_with(BASE, **{NAMES[2]: np.array([1.0, np.nan, 2.0, 3.0])})),
        422,
        ["body", "columns"],
        "finite",
    ),
    (
        arrow_body(_with(BASE, **{NAMES[2]: np.array([1.0, np.inf, 2.0, 3.0])})),
        422,
        ["body", "columns"],
        "finite",
    ),
    (arrow_body(feature_columns(0)), 422, ["body"], "no rows"),
    (arrow_body(BASE)[:-40], 422, ["body"], "Arrow"),
    (b"\x00" * 64, 422, ["body"], "Arrow"),
    (b"", 422, ["body"], "empty"),
    (b'{"model_type": "direction"}', 422, ["body"], "Arrow"),
    (arrow_body(BASE, compression="zstd"), 422, ["body"], "compressed"),
    (arrow_body(BASE, compression="lz4"), 422, ["body"], "compressed"),
]


@pytest.mark.parametrize(("body", "status", "loc", "words"), BAD_BODIES)
def test_every_bad_arrow_body_is_a_4xx_naming_the_problem(client, body, status, loc, words):
    answer = client.post("/v1/predict", params=QUERY, content=body, headers=ARROW)
    assert answer.status_code == status, answer.text
    assert _loc(answer) == loc and words in answer.text


def test_duplicate_columns_and_integer_columns(client):
    table = pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0])], names=[NAMES[0], NAMES[0]])
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    duplicate = client.post(
        "/v1/predict", params=QUERY, content=sink.getvalue().to_pybytes(), headers=ARROW
    )
    assert duplicate.status_code == 422 and "unique" in duplicate.text
    integers = {k: np.arange(3, dtype=np.int64) for k in NAMES}  # numeric: accepted
    as_floats = {k: np.arange(3, dtype=np.float64) for k in NAMES}
    a = client.post("/v1/predict", params=QUERY, content=arrow_body(integers), headers=ARROW)
    b = client.post("/v1/predict", params=QUERY, content=arrow_body(as_floats), headers=ARROW)
    assert a.status_code == 200 and a.json() == b.json()


def test_too_many_rows_is_413_before_anything_is_decoded(tmp_path):
    client, _ = make_client(tmp_path, max_rows=10)
    body = arrow_body(feature_columns(11), chunk=4)
    answer = client.post("/v1/predict", params=QUERY, content=body, headers=ARROW)
    assert answer.status_code == 413 and "at most 10 rows" in answer.text
    ok = client.post(
        "/v1/predict", params=QUERY, content=arrow_body(feature_columns(10), chunk=4), headers=ARROW
    )
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 10


def test_a_body_of_another_media_type_is_415_and_query_fields_do_not_go_with_json(client):
    wrong = client.post(
        "/v1/predict", params=QUERY, content=b"a,b\n1,2", headers={"content-type": "text/csv"}
    )
    assert wrong.status_code == 415 and _loc(wrong) == ["header", "Content-Type"]
    rows = np.column_stack(list(feature_columns(1).values())).tolist()
    mixed = client.post("/v1/predict", params={"timeframe": "1m"}, json={**QUERY, "rows": rows})
    assert mixed.status_code == 422 and _loc(mixed) == ["query", "timeframe"]
    bare = client.post(
        "/v1/predict",
        content=f'{{"model_type": "direction", "timeframe": "1m", "rows": {rows}}}'.encode(),
    )  # no content type: JSON, as before
    assert bare.status_code == 200


def test_json_answers_are_exactly_what_pydantic_would_write(client):
    rows = np.column_stack(list(feature_columns(3).values())).tolist()
    answer = client.post("/v1/predict", json={**QUERY, "rows": rows})
    assert answer.json() == PredictResponse.model_validate(answer.json()).model_dump()


def test_the_openapi_document_offers_both_body_media_types(client):
    operation = client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]
    content = operation["requestBody"]["content"]
    assert set(content) == {"application/json", ARROW_STREAM}
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert content["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1] in schemas
    assert {"rows", "columns", "features", "candles"} <= set(
        schemas["PredictRequest"]["properties"]
    )
    assert {p["name"] for p in operation["parameters"]} == {"model_type", "timeframe", "version"}


class CountingRegistry:
    def __init__(self, fail: bool = False):
        self.resolved, self.fail = 0, fail

    def resolve(self, model_type, timeframe, version=None):
        self.resolved += 1
        if self.fail:
            raise RegistryError(f"no model {model_type}-{timeframe}")
        return type("Manifest", (), {"feature_names": (f"f{self.resolved}",)})()


def test_feature_lists_resolve_once_per_ttl_and_remember_404s():
    now = [0.0]
    registry = CountingRegistry()
    lists = FeatureLists(registry, ttl_s=1.0, clock=lambda: now[0])
    assert lists.needed("direction", "1m", None) == lists.needed("direction", "1m", None) == ("f1",)
    now[0] = 1.5
    assert lists.needed("direction", "1m", None) == ("f2",)  # a promotion is seen after the ttl
    assert lists.needed("direction", "1m", "v1") == ("f3",)  # each version on its own
    missing = FeatureLists(CountingRegistry(fail=True), clock=lambda: now[0])
    for _ in range(3):
        with pytest.raises(BackendError, match="no model swing-1m") as caught:
            missing.needed("swing", "1m", None)
        assert caught.value.status == 404
    assert missing._registry.resolved == 1


def test_feature_lists_stay_bounded():
    registry = CountingRegistry()
    lists = FeatureLists(registry, max_entries=4, clock=lambda: 0.0)
    for i in range(10):
        lists.needed("direction", "1m", f"v{i}")
    lists.needed("direction", "1m", "v9")
    lists.needed("direction", "1m", "v0")  # forgotten: resolved again
    assert registry.resolved == 11
