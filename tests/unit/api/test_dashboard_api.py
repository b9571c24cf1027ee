"""What the dashboard needs from the API: recent candles, the scoreboard, the page and its
files, and a WebSocket a browser can authenticate (the key in the first message)."""

from __future__ import annotations

import pytest
from starlette.websockets import WebSocketDisconnect

from serve_app.api.static import FILES
from tests.unit.api.conftest import make_client

SERIES = ("binance", "BTC/USDT", "1m")
CANDLES = {
    "open_time": [60_000, 120_000, 180_000],
    "open": [1.0, 2.0, 3.0],
    "high": [1.5, 2.5, 3.5],
    "low": [0.5, 1.5, 2.5],
    "close": [2.0, 3.0, 4.0],
    "volume": [10.0, float("nan"), 30.0],
}


def test_candles_come_newest_last_with_a_missing_volume_as_null(client):
    client.backend.series[SERIES] = CANDLES
    answer = client.get(
        "/v1/candles",
        params={"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m", "limit": 2},
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["count"] == 2
    assert [c["open_time"] for c in body["candles"]] == [120_000, 180_000]
    assert body["candles"][0] == {
        "open_time": 120_000,
        "open": 2.0,
        "high": 2.5,
        "low": 1.5,
        "close": 3.0,
        "volume": None,
    }


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"exchange": "binance", "symbol": "ETH/USDT", "timeframe": "1m"}, 404, "symbol"),
        ({"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "2m"}, 422, "timeframe"),
        ({"exchange": "binance", "symbol": "BTCUSDT", "timeframe": "1m"}, 422, "symbol"),
        ({"symbol": "BTC/USDT", "timeframe": "1m"}, 422, "exchange"),
        (
            {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m", "limit": 0},
            422,
            "limit",
        ),
    ],
)
def test_a_bad_candles_request_names_the_field(client, params, status, field):
    client.backend.series[SERIES] = CANDLES
    answer = client.get("/v1/candles", params=params)
    assert answer.status_code == status
    assert field in answer.json()["detail"][0]["loc"]


def test_the_scoreboard_lists_each_model_beside_its_baseline(client):
    client.backend.outcome_metrics = {
        "window": 500,
        "pending": 3,
        "models": {
            "direction-1m": {
                "1m": {
                    "model_type": "direction",
                    "version": "v1",
                    "scored": 40,
                    "expired": 1,
                    "dropped": 0,
                    "count": 40,
                    "accuracy": 0.55,
                    "brier": 0.24,
                    "log_loss": 0.68,
                    "baseline": {"accuracy": 0.5, "brier": 0.25, "log_loss": 0.69},
                    "calibration": [{"p": 0.45, "observed": 0.4, "n": 20}],
                }
            }
        },
    }
    body = client.get("/v1/scoreboard").json()
    (row,) = body["models"]
    assert (body["window"], body["pending"]) == (500, 3)
    assert row["metrics"] == {"accuracy": 0.55, "brier": 0.24, "log_loss": 0.68}
    assert row["baseline"]["brier"] == 0.25 and row["calibration"][0]["n"] == 20
    assert row["serving"] == client.get("/v1/status").json()["api"]["served_models"]["direction-1m"]


def test_the_dashboard_page_and_its_files_are_served_and_nothing_else(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    library = client.get("/static/vendor/lightweight-charts.standalone.production.js")
    assert library.status_code == 200 and "javascript" in library.headers["content-type"]
    assert "vendor/lightweight-charts.LICENSE.txt" in FILES
    for bad in (
        "/static/../static.py",
        "/static/%2e%2e/static.py",
        "/static/nope.js",
        "/static/vendor/",
    ):
        assert client.get(bad).status_code == 404, bad
    assert "/" not in client.get("/openapi.json").json()["paths"]


def test_a_page_needs_no_key_but_the_api_does(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEYS", "k-1,k-2")
    client, _ = make_client(tmp_path, require_api_key=True, api_keys_env="TEST_KEYS")
    assert client.get("/").status_code == 200
    assert client.get("/v1/scoreboard").status_code == 401
    assert client.get("/v1/scoreboard", headers={"X-API-Key": "k-2"}).status_code == 200


def test_a_browser_authenticates_its_stream_with_the_first_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEYS", "k-1")
    client, _ = make_client(tmp_path, require_api_key=True, api_keys_env="TEST_KEYS")
    with client.websocket_connect("/v1/stream") as socket:
        socket.send_json({"action": "auth", "api_key": "k-1"})
        assert socket.receive_json() == {"type": "auth", "ok": True}
        socket.send_json({"action": "subscribe"})
        assert socket.receive_json()["type"] == "snapshot"
    for first in ({"action": "auth", "api_key": "wrong"}, {"action": "subscribe"}):
        with client.websocket_connect("/v1/stream") as socket:
            socket.send_json(first)
            with pytest.raises(WebSocketDisconnect) as closed:
                socket.receive_json()
            assert closed.value.code == 1008
