"""The admin endpoints' HTTP contract: their own key, validation naming the field, the
backend's refusals passed through with their status (the real feeds: tests/integration)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from orchestrator.config import ApiConfig
from orchestrator.models.registry import Registry
from serve_app.api.app import create_api
from serve_app.api.backend import BackendError
from serve_app.api.local_backend import LocalBackend
from tests.unit.api.conftest import MODELS

ADMIN = {"X-Admin-Key": "admin-1"}
URL = "/v1/admin/feeds/replay-0/symbols"


class FeedsBackend(LocalBackend):
    """LocalBackend plus one feed whose exchange lists a few markets."""

    markets = {"BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"}

    def __init__(self, tmp_path):
        super().__init__(MODELS, tmp_path / "log", served={"direction-1m": None})
        self.carried = ["BTC/USDT"]

    async def feed_symbols(self, feed: str) -> dict:
        self._check(feed)
        return {"feed": feed, "symbols": list(self.carried)}

    async def change_symbols(self, feed, add, remove, warmup_minutes) -> dict:
        self._check(feed)
        unknown = [s for s in add if s not in self.markets]
        if unknown:
            raise BackendError(422, f"feed {feed}: not on binance: {', '.join(unknown)}")
        added = [s for s in add if s not in self.carried]
        removed = [s for s in remove if s in self.carried]
        self.carried = [s for s in self.carried + added if s not in removed]
        return {
            "feed": feed,
            "exchange": "binance",
            "added": added,
            "removed": removed,
            "unchanged": [s for s in add + remove if s not in added + removed],
            "warmup_candles": 60 * len(added) if warmup_minutes is None else 0,
            "warmup_from": 0 if added else None,
            "symbols": len(self.carried),
        }

    def _check(self, feed: str) -> None:
        if feed != "replay-0":
            raise BackendError(404, f"no feed {feed!r}; feeds: replay-0")


@pytest.fixture
def admin(tmp_path, monkeypatch) -> TestClient:
    monkeypatch.setenv("TEST_ADMIN_KEYS", "admin-1")
    monkeypatch.setenv("TEST_KEYS", "reader-1")
    config = ApiConfig(
        require_api_key=True, api_keys_env="TEST_KEYS", admin_keys_env="TEST_ADMIN_KEYS"
    )
    return TestClient(create_api(config, FeedsBackend(tmp_path), Registry(MODELS)))


def test_admin_needs_its_own_key(admin):
    body = {"symbols": ["ETH/USDT"]}
    assert admin.post(URL, json=body).status_code == 401
    read_key = admin.post(URL, json=body, headers={"X-API-Key": "reader-1"})
    assert read_key.status_code == 401 and "X-Admin-Key" in read_key.text
    in_url = admin.post(URL + "?api_key=admin-1", json=body)
    assert in_url.status_code == 401  # an admin key never rides in a URL (logs keep URLs)
    assert admin.post(URL, json=body, headers=ADMIN).status_code == 200


def test_admin_is_off_without_admin_keys(tmp_path, monkeypatch):
    monkeypatch.delenv("TICKCAST_ADMIN_KEYS", raising=False)
    client = TestClient(create_api(ApiConfig(), FeedsBackend(tmp_path), Registry(MODELS)))
    off = client.get(URL, headers=ADMIN)
    assert off.status_code == 403 and "TICKCAST_ADMIN_KEYS" in off.text


def test_add_list_and_remove_symbols(admin):
    added = admin.post(URL, json={"symbols": ["ETH/USDT", "BTC/USDT"]}, headers=ADMIN).json()
    assert added["added"] == ["ETH/USDT"] and added["unchanged"] == ["BTC/USDT"]
    assert added["warmup_candles"] == 60 and added["symbols"] == 2
    assert admin.get(URL, headers=ADMIN).json()["symbols"] == ["BTC/USDT", "ETH/USDT"]
    removed = admin.request("DELETE", URL, json={"symbols": ["BTC/USDT"]}, headers=ADMIN)
    assert removed.status_code == 200 and removed.json()["removed"] == ["BTC/USDT"]
    assert admin.get(URL, headers=ADMIN).json()["symbols"] == ["ETH/USDT"]


@pytest.mark.parametrize(
    ("url", "body", "status", "named"),
    [
        (URL, {"symbols": ["DOGE/USDT"]}, 422, "DOGE/USDT"),  # not a market of the exchange
        (URL, {"symbols": ["BTCUSDT"]}, 422, "symbols"),  # not a unified symbol
        (URL, {"symbols": []}, 422, "symbols"),
        (URL, {"symbols": ["ETH/USDT"], "warmup_minutes": -1}, 422, "warmup_minutes"),
        (URL, {"symbols": ["ETH/USDT"], "extra": 1}, 422, "extra"),
        ("/v1/admin/feeds/nope-9/symbols", {"symbols": ["ETH/USDT"]}, 404, "nope-9"),
        ("/v1/admin/feeds/bad feed/symbols", {"symbols": ["ETH/USDT"]}, 422, "feed"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_problem(admin, url, body, status, named):
    answer = admin.post(url, json=body, headers=ADMIN)
    assert answer.status_code == status and named in answer.text
