"""Typed configuration of one ccxt exchange feed, and the one place ccxt clients are built.

Secrets never live in the config: it names the environment variables that hold them
(``api_key_env``...), and ``build_client`` reads those variables at the last moment.
``describe()`` is the config's public face for status pages.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestrator.feeds.errors import mask_secrets
from orchestrator.feeds.retry import BackoffPolicy, RetryPolicy

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_PARAMS = frozenset(
    {"apiKey", "secret", "password", "uid", "privateKey", "walletAddress", "token"}
)

# Exchange quirks as data: ccxt options our feeds want by default, per exchange id.
# ``config.ccxt_options`` is deep-merged over them.
DEFAULT_CCXT_OPTIONS: Mapping[str, Mapping[str, Any]] = {
    "binance": {
        # We read spot candles: without this, load_markets also calls the USD-M and COIN-M
        # futures exchangeInfo endpoints (two more hosts, more weight, more ways to fail).
        "fetchMarkets": {"types": ["spot"]},
        # fetch_currencies needs a signed sapi call; markets alone are enough for candles.
        "fetchCurrencies": False,
        # With credentials, load_markets would also call the signed margin-pairs endpoints.
        "fetchMargins": False,
    },
}


class ExchangeConfig(BaseModel):
    """One exchange, one group of symbols, one transport (REST polling or websockets)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["ccxt"] = "ccxt"
    exchange: str = Field(
        description="ccxt exchange id, e.g. 'binance'; also the candles' exchange"
    )
    symbols: tuple[str, ...] = Field(
        min_length=1, description="ccxt unified symbols, e.g. 'BTC/USDT'"
    )
    mode: Literal["rest", "websocket"] = "rest"
    warmup_minutes: int = Field(
        0, ge=0, le=20_000, description="REST history fetched at start to warm features up"
    )
    symbols_per_actor: int = Field(
        250, ge=1, description="symbols one feed actor carries; more symbols start more actors"
    )
    poll_interval_s: float = Field(
        2.0, ge=0, description="REST: time between polls; ws: longest wait"
    )
    sandbox: bool = Field(False, description="use the exchange's testnet (ccxt set_sandbox_mode)")
    urls: dict[str, Any] = Field(default_factory=dict, description="deep-merged into ccxt's `urls`")
    enable_rate_limit: bool = Field(True, description="ccxt's built-in request throttling")
    rate_limit_ms: float | None = Field(None, gt=0, description="override ccxt's `rateLimit`")
    timeout_ms: int = Field(10_000, gt=0, description="ccxt request timeout")
    api_key_env: str | None = Field(
        None, description="NAME of the env variable holding the API key"
    )
    api_secret_env: str | None = Field(
        None, description="NAME of the env variable holding the secret"
    )
    password_env: str | None = Field(
        None, description="NAME of the env variable holding a passphrase"
    )
    ccxt_options: dict[str, Any] = Field(
        default_factory=dict, description="merged into ccxt `options`"
    )
    ccxt_params: dict[str, Any] = Field(
        default_factory=dict, description="extra ccxt constructor params"
    )
    max_concurrency: int = Field(8, ge=1, le=1024, description="REST requests in flight at once")
    ws_symbols_per_subscription: int = Field(100, ge=1, le=1024)
    ws_rest_fallback: bool = Field(
        True, description="poll REST while the socket is down or silent, and once after a reconnect"
    )
    ws_silence_s: float = Field(
        30.0,
        gt=0,
        description="no message for this long counts as down (ccxt's ping takes minutes)",
    )
    page_limit: int = Field(1000, ge=1, le=10_000, description="candles per REST page")
    start_lookback_minutes: int = Field(5, ge=1, description="history the first poll asks for")
    stale_after_periods: int = Field(3, ge=1, description="no new candle for this many minutes")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    reconnect: BackoffPolicy = Field(
        default_factory=lambda: BackoffPolicy(base_delay_s=1.0, max_delay_s=60.0)
    )

    @field_validator("exchange")
    @classmethod
    def _known_exchange(cls, value: str) -> str:
        import ccxt  # here, not at the top: every process reads the config, few talk to ccxt

        if value not in ccxt.exchanges:
            raise ValueError(f"unknown ccxt exchange id {value!r}")
        return value

    @field_validator("symbols")
    @classmethod
    def _unique_unified_symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in value if "/" not in s or s != s.strip() or " " in s]
        if bad:
            raise ValueError(f"not ccxt unified symbols (BASE/QUOTE): {bad[:5]}")
        duplicates = sorted({s for s in value if value.count(s) > 1})
        if duplicates:
            raise ValueError(f"duplicate symbols: {duplicates[:5]}")
        return value

    @field_validator("api_key_env", "api_secret_env", "password_env")
    @classmethod
    def _env_variable_name(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.match(value):
            raise ValueError("must be the NAME of an environment variable (letters, digits, _)")
        return value

    @field_validator("ccxt_params")
    @classmethod
    def _no_inline_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        found = sorted(SECRET_PARAMS & set(value))
        if found:
            raise ValueError(
                f"secrets {found} must come from *_env variables, never from the config"
            )
        return value

    @model_validator(mode="after")
    def _websocket_needs_ccxt_pro(self) -> ExchangeConfig:
        if self.mode != "websocket":
            return self
        import ccxt.pro as ccxt_pro

        if self.exchange not in ccxt_pro.exchanges:
            raise ValueError(f"mode 'websocket': ccxt.pro has no exchange {self.exchange!r}")
        if self.poll_interval_s <= 0:
            raise ValueError(
                "poll_interval_s must be > 0 in mode 'websocket' (it paces REST fallback)"
            )
        return self

    def describe(self) -> dict:
        """Plain, JSON-able, secret-free summary for status pages."""
        return {
            "exchange": self.exchange,
            "mode": self.mode,
            "symbols": len(self.symbols),
            "sandbox": self.sandbox,
            "url_overrides": sorted(self.urls),
            "credentials_from_env": [
                name for name in (self.api_key_env, self.api_secret_env, self.password_env) if name
            ],
        }


class MissingCredentialError(ValueError):
    """A configured credential variable is not set; names the variable, never a value."""


def read_credentials(
    config: ExchangeConfig, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """ccxt credential params read from the variables the config names (empty if none)."""
    environ = os.environ if environ is None else environ
    wanted = {
        "apiKey": config.api_key_env,
        "secret": config.api_secret_env,
        "password": config.password_env,
    }
    credentials = {}
    for param, variable in wanted.items():
        if variable is None:
            continue
        value = environ.get(variable)
        if not value:
            raise MissingCredentialError(
                f"environment variable {variable} (for {param}) is not set"
            )
        credentials[param] = value
    return credentials


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` merged into a copy of ``base``; nested mappings merge, the rest replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def ccxt_constructor_params(
    config: ExchangeConfig, environ: Mapping[str, str] | None = None
) -> dict:
    """Everything ccxt's exchange constructor gets (secrets included: never log this)."""
    options = deep_merge(DEFAULT_CCXT_OPTIONS.get(config.exchange, {}), config.ccxt_options)
    params: dict[str, Any] = {
        **config.ccxt_params,
        "enableRateLimit": config.enable_rate_limit,
        "timeout": config.timeout_ms,
        "options": options,
    }
    if config.rate_limit_ms is not None:
        params["rateLimit"] = config.rate_limit_ms
    credentials = read_credentials(config, environ)
    params.update(credentials)
    # ccxt logs request headers at DEBUG, API key included: give it a logger that masks them.
    params["logger"] = redacting_logger(
        f"orchestrator.feeds.ccxt.{config.exchange}", credentials.values()
    )
    return params


class RedactSecrets(logging.Filter):
    """Masks known secret values in every record of the logger it is attached to."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            masked = mask_secrets(message, self.secrets)
            if masked != message:
                record.msg, record.args = masked, None
        return True


def redacting_logger(name: str, secrets: Iterable[str]) -> logging.Logger:
    """The logger ``name`` with one ``RedactSecrets`` filter that also masks ``secrets``."""
    logger = logging.getLogger(name)
    redactor = next((f for f in logger.filters if isinstance(f, RedactSecrets)), None)
    if redactor is None:
        redactor = RedactSecrets()
        logger.addFilter(redactor)
    redactor.secrets.update(s for s in secrets if s)
    return logger


def build_client(
    config: ExchangeConfig,
    *,
    websocket: bool | None = None,
    environ: Mapping[str, str] | None = None,
):
    """A ccxt client for ``config``: ``ccxt.pro`` for websockets, ``ccxt.async_support`` for REST.

    A ``ccxt.pro`` client is also a full REST client (it subclasses the async one), which
    is how the websocket source repairs gaps. Call ``await client.close()`` when done.
    """
    import ccxt.async_support as ccxt_async
    import ccxt.pro as ccxt_pro

    websocket = config.mode == "websocket" if websocket is None else websocket
    module = ccxt_pro if websocket else ccxt_async
    client = getattr(module, config.exchange)(ccxt_constructor_params(config, environ))
    if config.sandbox:
        client.set_sandbox_mode(True)
    if config.urls:
        client.urls = deep_merge(client.urls, config.urls)
    install_strict_json(client)
    return client


def install_strict_json(client) -> None:
    """Make a body that looks like JSON but does not parse raise ``BadResponse``.

    ccxt's ``parse_json`` swallows the decode error and hands the raw text to the parser,
    which for ``fetch_ohlcv`` silently yields ``[]``: a truncated answer would look like
    "no new candles". Non-JSON bodies (an HTML error page) still take ccxt's usual path.
    """

    import ccxt

    def strict_parse_json(http_response):
        if not client.is_json_encoded_object(http_response):
            return None
        try:
            return client.on_json_response(http_response)
        except ValueError as exc:
            raise ccxt.BadResponse(
                f"{client.id} answered malformed JSON ({len(http_response)} bytes)"
            ) from exc

    client.parse_json = strict_parse_json
