"""Who may call the API and how much: API keys, the per-caller rate limit, the body limit.

API keys come from an environment variable named in the config (never from the config
itself). Rate limits are token buckets per key — or per client address when keys are off —
kept per ingress replica: with N replicas the cluster-wide ceiling is N times the setting.
"""

from __future__ import annotations

import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Callable

from fastapi import Request

from serve_app.api.schemas import ApiError

API_KEY_HEADER = "X-API-Key"
ADMIN_KEY_HEADER = "X-Admin-Key"


def load_api_keys(env_name: str, environ: dict | None = None) -> frozenset[str]:
    raw = (environ if environ is not None else os.environ).get(env_name, "")
    return frozenset(k.strip() for k in raw.split(",") if k.strip())


def key_is_valid(candidate: str | None, keys: frozenset[str]) -> bool:
    """Constant-time comparison against every configured key."""
    if not candidate:
        return False
    return any(hmac.compare_digest(candidate.encode(), k.encode()) for k in keys)


class RateLimiter:
    """Token buckets keyed by caller; ``allow`` returns 0 when allowed, else seconds to wait."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        max_callers: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.rate, self.burst, self._clock = rate_per_s, float(burst), clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max_callers = max_callers

    def allow(self, caller: str) -> float:
        now = self._clock()
        tokens, last = self._buckets.pop(caller, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
        self._buckets[caller] = (tokens - 1.0 if wait == 0.0 else tokens, now)
        if len(self._buckets) > self._max_callers:  # bounded memory: forget the idlest caller
            self._buckets.popitem(last=False)
        return wait


class BodyLimit:
    """Refuses bodies over ``max_bytes`` with 413, counting what arrives (chunked bodies too)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _too_large(send, self.max_bytes)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await _too_large(send, self.max_bytes)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send, limit: int) -> None:
    message = f"body larger than {limit} bytes"
    body = (
        f'{{"detail": [{{"loc": ["body"], "msg": "{message}", "type": "value_error"}}]}}'.encode()
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def caller_of(request_or_socket, keys: frozenset[str], required: bool) -> str:
    """The caller's identity for rate limiting; raises 401 without a valid key when required."""
    key = request_or_socket.headers.get(API_KEY_HEADER) or request_or_socket.query_params.get(
        "api_key"
    )
    if required and not key_is_valid(key, keys):
        raise ApiError(401, f"header.{API_KEY_HEADER}", "missing or unknown API key")
    if key and key_is_valid(key, keys):
        return f"key:{key}"
    client = request_or_socket.client
    return f"ip:{client.host if client else 'unknown'}"


async def guard(request: Request) -> str:
    state = request.app.state
    caller = caller_of(request, state.keys, state.config.require_api_key)
    wait = state.limiter.allow(caller)
    if wait:
        raise ApiError(429, "header", f"rate limit exceeded; retry after {max(1, round(wait))} s")
    return caller


async def admin_guard(request: Request) -> str:
    """Changes to the running system need an admin key (never a read key, never in the URL);
    with no admin key configured the admin endpoints are off."""
    state = request.app.state
    if not state.admin_keys:
        raise ApiError(
            403, "header", f"admin endpoints are off: set {state.config.admin_keys_env} to enable"
        )
    key = request.headers.get(ADMIN_KEY_HEADER)
    if not key_is_valid(key, state.admin_keys):
        raise ApiError(401, f"header.{ADMIN_KEY_HEADER}", "missing or unknown admin key")
    caller = f"admin:{key}"
    wait = state.limiter.allow(caller)
    if wait:
        raise ApiError(429, "header", f"rate limit exceeded; retry after {max(1, round(wait))} s")
    return caller
