"""Every route of the public API, and every way a request can be wrong: 4xx naming the
field, never a 500."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from orchestrator.features import FEATURE_NAMES, compute_features
from orchestrator.models.predictor import OnnxPredictor
from orchestrator.models.registry import Registry
from orchestrator.sinks.parquet_log import ParquetLog
from tests.fakes.predictions import direction_predictions
from tests.unit.api.conftest import MODELS, make_client


def _predictor() -> OnnxPredictor:
    registry = Registry(MODELS)
    manifest = registry.resolve("direction", "1m")
    return OnnxPredictor(manifest, registry.load_bytes(manifest))


def _feature_rows(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    names = list(_predictor().manifest.feature_names)
    return names, np.random.default_rng(seed).normal(size=(n, len(names))) * 0.01 + 0.5


def _predictions(open_time: int, symbols=("A/USDT", "B/USDT")):
    return direction_predictions(open_time, symbols)


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_predict_rows_match_the_model_run_directly(client):
    names, x = _feature_rows(5)
    body = {"model_type": "direction", "timeframe": "1m", "rows": x.tolist()}
    answer = client.post("/v1/predict", json=body).json()
    full = np.full((5, len(FEATURE_NAMES)), np.nan)
    full[:, [FEATURE_NAMES.index(n) for n in names]] = x
    expected = _predictor().predict(full)[:, 0]
    assert answer["outputs"] == ["prob_up"] and answer["model_id"] == "direction-1m"
    np.testing.assert_allclose([p["prob_up"] for p in answer["predictions"]], expected)


def test_predict_features_by_name_and_columns_in_any_order(client):
    names, x = _feature_rows(2, seed=1)
    by_name = [dict(zip(names, row, strict=True)) for row in x.tolist()]
    a = client.post(
        "/v1/predict", json={"model_type": "direction", "timeframe": "1m", "features": by_name}
    )
    reordered = {
        "model_type": "direction",
        "timeframe": "1m",
        "columns": names[::-1],
        "rows": [row[::-1] for row in x.tolist()],
    }
    b = client.post("/v1/predict", json=reordered)
    assert a.status_code == b.status_code == 200
    assert a.json()["predictions"] == b.json()["predictions"]


def test_predict_from_a_window_of_real_candles(client, shared_data):
    frame = pd.read_parquet(shared_data / "binance-spot-1m" / "BTC_USDT-1m.parquet").iloc[:120]
    frame["open_time"] = frame["date"].astype("datetime64[ms, UTC]").astype("int64")
    candles = frame[["open_time", "open", "high", "low", "close", "volume"]].to_dict("records")
    answer = client.post(
        "/v1/predict", json={"model_type": "direction", "timeframe": "1m", "candles": candles}
    )
    assert answer.status_code == 200, answer.text
    expected = _predictor().predict(compute_features(frame).to_numpy(copy=True)[-1:])[0, 0]
    assert answer.json()["open_time"] == candles[-1]["open_time"]
    assert answer.json()["predictions"][0]["prob_up"] == pytest.approx(expected, abs=1e-12)
    short = client.post(
        "/v1/predict", json={"model_type": "direction", "timeframe": "1m", "candles": candles[:20]}
    )
    assert short.status_code == 422 and "warm" in short.text


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"model_type": "direction", "timeframe": "1m"}, 422, "exactly one"),
        ({"model_type": "direction", "timeframe": "7m", "rows": [[1.0]]}, 422, "timeframe"),
        ({"model_type": "magic", "timeframe": "1m", "rows": [[1.0]]}, 422, "model_type"),
        ({"model_type": "direction", "timeframe": "1m", "rows": [[1.0]]}, 422, "rows"),
        (
            {"model_type": "direction", "timeframe": "1m", "features": [{"rsi_14": 1.0}]},
            422,
            "features",
        ),
        (
            {"model_type": "direction", "timeframe": "1m", "features": [{"nope": 1.0}]},
            422,
            "features",
        ),
        (
            {"model_type": "direction", "timeframe": "1m", "rows": [[1.0]], "columns": ["nope"]},
            422,
            "columns",
        ),
        (
            {"model_type": "direction", "timeframe": "1m", "version": "latest", "rows": [[1.0]]},
            422,
            "version",
        ),
        (
            {"model_type": "direction", "timeframe": "1m", "version": "v999", "rows": [[1.0]]},
            404,
            "v999",
        ),
        ({"model_type": "swing", "timeframe": "30m", "rows": [[1.0]]}, 404, "swing-30m"),
        ({"model_type": "direction", "timeframe": "1m", "rows": [[1.0]], "extra": 1}, 422, "extra"),
        (
            {
                "model_type": "direction",
                "timeframe": "1m",
                "candles": [
                    {"open_time": 0, "open": 1, "high": 0.5, "low": 1, "close": 1, "volume": 1}
                ]
                * 40,
            },
            422,
            "candles",
        ),
    ],
)
def test_bad_predict_requests_get_a_4xx_naming_the_problem(client, body, status, field):
    answer = client.post("/v1/predict", json=body)
    assert answer.status_code == status, answer.text
    assert field in answer.text


def test_non_finite_numbers_and_broken_json_are_422(client):
    names, _ = _feature_rows(1)
    raw = (
        '{"model_type": "direction", "timeframe": "1m", "rows": [['
        + ", ".join(["NaN"] * len(names))
        + "]]}"
    )
    answer = client.post("/v1/predict", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code == 422
    assert (
        client.post(
            "/v1/predict", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )


def test_row_and_body_limits(tmp_path):
    client, _ = make_client(tmp_path, max_rows=3, max_body_bytes=4096)
    names, x = _feature_rows(4)
    too_many = client.post(
        "/v1/predict", json={"model_type": "direction", "timeframe": "1m", "rows": x.tolist()}
    )
    assert too_many.status_code == 413 and "at most 3 rows" in too_many.text
    huge = client.post(
        "/v1/predict",
        content=b"[" + b"1," * 5000 + b"1]",
        headers={"content-type": "application/json"},
    )
    assert huge.status_code == 413 and "body larger" in huge.text


def test_api_keys_and_rate_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEYS", "secret-1,secret-2")
    client, _ = make_client(
        tmp_path,
        require_api_key=True,
        api_keys_env="TEST_KEYS",
        rate_limit_per_s=0.001,
        rate_limit_burst=2,
    )
    assert client.get("/v1/predictions/latest").status_code == 401
    assert client.get("/v1/predictions/latest", headers={"X-API-Key": "wrong"}).status_code == 401
    ok = {"X-API-Key": "secret-1"}
    assert [client.get("/v1/predictions/latest", headers=ok).status_code for _ in range(2)] == [
        200,
        200,
    ]
    limited = client.get("/v1/predictions/latest", headers=ok)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert (
        client.get("/v1/predictions/latest", headers={"X-API-Key": "secret-2"}).status_code == 200
    )
    assert client.get("/healthz").status_code == 200  # health needs no key


def test_cors_is_off_unless_configured(tmp_path):
    plain, _ = make_client(tmp_path)
    headers = {"Origin": "https://example.org"}
    assert "access-control-allow-origin" not in plain.get("/healthz", headers=headers).headers
    cors, _ = make_client(tmp_path, cors_origins=("https://example.org",))
    assert (
        cors.get("/healthz", headers=headers).headers["access-control-allow-origin"]
        == "https://example.org"
    )


def test_latest_and_history_with_filters_and_pages(client, tmp_path):
    client.backend.store.update(_predictions(60_000))
    latest = client.get("/v1/predictions/latest", params={"symbol": "B/USDT"}).json()
    assert latest["count"] == 1 and latest["predictions"][0]["signal"] == "LONG"
    log = ParquetLog(tmp_path / "log", flush_rows=1)
    for minute in range(4):
        log.append(_predictions(minute * 60_000))
    page = client.get("/v1/predictions", params={"symbol": "A/USDT", "limit": 3}).json()
    assert page["total"] is None and page["next_offset"] == 3 and len(page["predictions"]) == 3
    last = client.get(
        "/v1/predictions", params={"symbol": "A/USDT", "limit": 3, "offset": 3, "count": True}
    ).json()
    assert last["next_offset"] is None and last["predictions"][0]["open_time"] == 180_000
    assert last["total"] == 4 and last["next_cursor"] is None
    after = client.get(
        "/v1/predictions", params={"symbol": "A/USDT", "limit": 3, "cursor": page["next_cursor"]}
    ).json()
    assert [p["open_time"] for p in after["predictions"]] == [180_000]
    newest = client.get(
        "/v1/predictions", params={"symbol": "A/USDT", "limit": 2, "order": "desc"}
    ).json()
    assert [p["open_time"] for p in newest["predictions"]] == [180_000, 120_000]
    wrong = client.get("/v1/predictions", params={"cursor": page["next_cursor"], "order": "desc"})
    assert wrong.status_code == 422 and "other order" in wrong.text
    assert client.get("/v1/predictions", params={"cursor": "x" * 600}).status_code == 422
    assert client.get("/v1/predictions", params={"offset": 100_001}).status_code == 422
    assert client.get("/v1/predictions", params={"start": -1}).status_code == 422
    assert client.get("/v1/predictions", params={"symbol": "no-slash"}).status_code == 422


def test_models_and_status(client):
    models = client.get("/v1/models").json()["models"]
    served = [m for m in models if m["serving"]]
    assert [m["model_id"] for m in served] == ["direction-1m"]
    assert served[0]["metrics"] and served[0]["feature_names"]
    status = client.get("/v1/status").json()
    assert status["api"]["served_models"]["direction-1m"] == served[0]["version"]


def test_websocket_snapshot_then_live_predictions_and_commands(client):
    client.backend.store.update(_predictions(60_000))
    with client.websocket_connect("/v1/stream") as socket:
        socket.send_json({"action": "subscribe", "symbols": ["A/USDT"]})
        snapshot = socket.receive_json()
        assert snapshot["type"] == "snapshot"
        assert [p["symbol"] for p in snapshot["predictions"]] == ["A/USDT"]
        client.backend.store.update(_predictions(120_000))
        live = socket.receive_json()
        assert (live["type"], live["symbol"], live["open_time"]) == (
            "prediction",
            "A/USDT",
            120_000,
        )
        socket.send_text('{"action": "dance"}')
        assert socket.receive_json()["type"] == "error"
        socket.send_json({"action": "stats"})
        assert socket.receive_json()["type"] == "stats"


def test_websocket_never_sends_a_prediction_older_than_its_snapshot(client):
    """A poll answered before a subscription but delivered after its snapshot (a reply in
    transit from the sink) is dropped: the stream goes on from the snapshot's cursor."""
    import asyncio
    import time

    backend = client.backend
    polled = backend.since

    async def since_in_transit(cursor, timeout_s):
        answer = await polled(cursor, timeout_s)
        await asyncio.sleep(0.4 if answer[1] else 0)
        return answer

    backend.since = since_in_transit
    with client.websocket_connect("/v1/stream") as socket:
        time.sleep(0.2)  # the stream starts from now
        backend.store.update(_predictions(60_000))
        time.sleep(0.15)  # read by a poll, whose answer is on its way
        backend.store.update(_predictions(120_000))
        socket.send_json({"action": "subscribe", "symbols": ["A/USDT"]})
        snapshot = socket.receive_json()
        assert [p["open_time"] for p in snapshot["predictions"]] == [120_000]
        backend.store.update(_predictions(180_000))
        live = socket.receive_json()
        assert (live["type"], live["open_time"]) == ("prediction", 180_000)


def test_model_columns_are_picked_by_name_as_a_view_or_a_gather():
    from orchestrator.models.predictor import column_selector

    rows = np.arange(40.0).reshape(4, 10)
    for columns in ([2, 3, 4], [0], [4, 2, 7], [3, 5]):
        selector = column_selector(columns)
        assert isinstance(selector, slice) == (columns in ([2, 3, 4], [0]))
        np.testing.assert_array_equal(rows[:, selector], rows[:, columns])


def test_a_predictor_refuses_rows_that_are_not_full_feature_rows():
    predictor = _predictor()
    with pytest.raises(ValueError, match="rows must be"):
        predictor.predict(np.zeros((3, 20)))
