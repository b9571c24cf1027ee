"""ExchangeConfig validation, secrets from named env variables, and ccxt client building."""

from __future__ import annotations

import logging

import ccxt
import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro
import pytest
from pydantic import ValidationError

from orchestrator.feeds.ccxt.config import (
    ExchangeConfig,
    MissingCredentialError,
    build_client,
    ccxt_constructor_params,
    deep_merge,
    read_credentials,
)
from tests.unit.feeds.support import run

BASE = {"exchange": "binance", "symbols": ("BTC/USDT",)}


def _error_for(**fields) -> str:
    with pytest.raises(ValidationError) as raised:
        ExchangeConfig(**{**BASE, **fields})
    return str(raised.value)


@pytest.mark.parametrize(
    ("fields", "named", "says"),
    [
        ({"exchange": "nope"}, "exchange", "unknown ccxt exchange id"),
        ({"symbols": ()}, "symbols", "at least 1"),
        ({"symbols": ("BTCUSDT",)}, "symbols", "BASE/QUOTE"),
        ({"symbols": ("BTC/USDT", "BTC/USDT")}, "symbols", "duplicate"),
        ({"mode": "fax"}, "mode", "'rest' or 'websocket'"),
        ({"poll_interval_s": -1}, "poll_interval_s", "greater than or equal"),
        ({"api_key_env": "MY KEY"}, "api_key_env", "NAME of an environment variable"),
        ({"ccxt_params": {"secret": "s3cr3t"}}, "ccxt_params", "must come from *_env"),
        ({"retry": {"max_attempts": 0}}, "retry.max_attempts", "greater than or equal"),
        ({"surprise": 1}, "surprise", "Extra inputs are not permitted"),
    ],
)
def test_bad_fields_are_rejected_with_the_field_named(fields, named, says):
    message = _error_for(**fields)
    assert named in message and says in message


def test_websocket_mode_needs_ccxt_pro_and_a_poll_interval():
    assert "ccxt.pro has no exchange" in _error_for(exchange="btcbox", mode="websocket")
    assert "poll_interval_s must be > 0" in _error_for(mode="websocket", poll_interval_s=0)


def test_config_is_frozen_and_secret_free_in_repr():
    config = ExchangeConfig(**BASE, api_key_env="TICKCAST_KEY", api_secret_env="TICKCAST_SECRET")
    with pytest.raises(ValidationError):
        config.mode = "websocket"
    assert "TICKCAST_KEY" in repr(config)
    assert config.describe()["credentials_from_env"] == ["TICKCAST_KEY", "TICKCAST_SECRET"]


def test_credentials_come_from_the_named_variables_only():
    config = ExchangeConfig(**BASE, api_key_env="K", api_secret_env="S")
    assert read_credentials(config, {"K": "key", "S": "sec"}) == {"apiKey": "key", "secret": "sec"}
    with pytest.raises(MissingCredentialError, match="environment variable S") as raised:
        read_credentials(config, {"K": "key"})
    assert "key" not in str(raised.value).replace("environment variable", "")
    assert read_credentials(ExchangeConfig(**BASE), {}) == {}


def test_deep_merge_merges_nested_and_copies():
    base = {"api": {"public": "a", "ws": {"spot": "w"}}, "x": [1]}
    merged = deep_merge(base, {"api": {"ws": {"spot": "W"}}, "x": [2]})
    assert merged == {"api": {"public": "a", "ws": {"spot": "W"}}, "x": [2]}
    assert base["api"]["ws"]["spot"] == "w"


def test_constructor_params_merge_default_options_and_overrides():
    config = ExchangeConfig(
        **BASE,
        rate_limit_ms=7,
        timeout_ms=1234,
        ccxt_options={"fetchMarkets": {"types": ["linear"]}, "custom": 1},
    )
    params = ccxt_constructor_params(config, {})
    assert (
        params["rateLimit"] == 7 and params["timeout"] == 1234 and params["enableRateLimit"] is True
    )
    assert params["options"]["fetchMarkets"] == {"types": ["linear"]}  # override wins
    assert params["options"]["fetchCurrencies"] is False and params["options"]["custom"] == 1


def test_build_client_rest_and_pro_with_url_overrides_and_strict_json():
    async def scenario():
        urls = {
            "api": {"public": "http://127.0.0.1:9/api/v3", "ws": {"spot": "ws://127.0.0.1:9/ws"}}
        }
        rest = build_client(ExchangeConfig(**BASE, urls=urls), environ={})
        pro = build_client(ExchangeConfig(**BASE, urls=urls, mode="websocket"), environ={})
        try:
            assert isinstance(rest, ccxt_async.binance) and not isinstance(rest, ccxt_pro.binance)
            assert isinstance(pro, ccxt_pro.binance)
            assert rest.urls["api"]["public"] == "http://127.0.0.1:9/api/v3"
            assert rest.urls["api"]["sapi"].startswith("https://")  # untouched keys survive
            assert pro.urls["api"]["ws"]["spot"] == "ws://127.0.0.1:9/ws"
            assert rest.parse_json('{"ok": 1}') == {"ok": 1}
            assert rest.parse_json("<html>busy</html>") is None  # not JSON: ccxt's own path
            with pytest.raises(ccxt.BadResponse, match="malformed JSON"):
                rest.parse_json('[[1, "2"')
        finally:
            await rest.close()
            await pro.close()

    run(scenario())


def test_sandbox_switches_to_testnet_urls():
    async def scenario():
        client = build_client(ExchangeConfig(**BASE, sandbox=True), environ={})
        try:
            return client.urls["api"]["public"]
        finally:
            await client.close()

    assert "testnet" in run(scenario())


def test_ccxt_debug_logs_are_masked(caplog):
    caplog.set_level(logging.DEBUG)
    config = ExchangeConfig(**BASE, api_key_env="K", api_secret_env="S")

    async def scenario():
        client = build_client(config, environ={"K": "visible-key-123", "S": "visible-secret-456"})
        try:
            assert client.apiKey == "visible-key-123"
            # what ccxt's fetch() logs for a signed request
            client.logger.debug(
                "%s %s, Request: %s %s", "GET", "/x", {"X-MBX-APIKEY": client.apiKey}, None
            )
        finally:
            await client.close()

    run(scenario())
    assert "X-MBX-APIKEY" in caplog.text
    assert "visible-key-123" not in caplog.text and "visible-secret-456" not in caplog.text
