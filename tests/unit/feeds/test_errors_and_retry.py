"""Error classification (table + quirks) and the retry decorator, with an injected sleep."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import ccxt
import pytest

from orchestrator.feeds.errors import (
    ErrorKind,
    FatalFeedError,
    InvalidFeedError,
    RateLimitedFeedError,
    TransientFeedError,
    classify,
    retry_after_seconds,
    to_feed_error,
)
from orchestrator.feeds.retry import (
    Backoff,
    BackoffPolicy,
    RetryPolicy,
    backoff_delay,
    with_retries,
)
from tests.unit.feeds.support import RecordingSleep, run


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ccxt.NetworkError("x"), ErrorKind.TRANSIENT),
        (ccxt.RequestTimeout("x"), ErrorKind.TRANSIENT),
        (ccxt.ExchangeNotAvailable("x"), ErrorKind.TRANSIENT),
        (ccxt.OnMaintenance("x"), ErrorKind.TRANSIENT),
        (ccxt.DDoSProtection("cloudflare says wait"), ErrorKind.TRANSIENT),
        (ccxt.InvalidNonce("x"), ErrorKind.TRANSIENT),
        (ccxt.RateLimitExceeded("x"), ErrorKind.RATE_LIMITED),
        (ccxt.BadRequest("x"), ErrorKind.INVALID),
        (ccxt.BadSymbol("x"), ErrorKind.INVALID),
        (ccxt.BadResponse("x"), ErrorKind.INVALID),
        (ccxt.NullResponse("x"), ErrorKind.INVALID),
        (ccxt.MarketClosed("x"), ErrorKind.INVALID),
        (json.JSONDecodeError("bad", "[", 0), ErrorKind.INVALID),
        (ccxt.AuthenticationError("x"), ErrorKind.FATAL),
        (ccxt.PermissionDenied("x"), ErrorKind.FATAL),
        (ccxt.AccountSuspended("x"), ErrorKind.FATAL),
        (ccxt.NotSupported("x"), ErrorKind.FATAL),
        (ccxt.ExchangeError("x"), ErrorKind.FATAL),
        (KeyError("surprise"), ErrorKind.FATAL),
        (TimeoutError(), ErrorKind.TRANSIENT),
        (ConnectionResetError(), ErrorKind.TRANSIENT),
        (aiohttp.ServerDisconnectedError(), ErrorKind.TRANSIENT),
    ],
)
def test_classification_table(exc, kind):
    assert classify(exc) is kind


def test_quirks_override_the_table():
    assert (
        classify(ccxt.DDoSProtection("binance 429 Too Many Requests {}")) is ErrorKind.RATE_LIMITED
    )
    assert classify(ccxt.DDoSProtection("binance 418 I'm a Teapot {}")) is ErrorKind.RATE_LIMITED
    assert (
        classify(ccxt.DDoSProtection("binance 4290 weird")) is ErrorKind.TRANSIENT
    )  # whole number only
    wrapped = ccxt.ExchangeError("binance GET /klines")
    wrapped.__cause__ = aiohttp.ClientPayloadError("connection cut")
    assert classify(wrapped) is ErrorKind.TRANSIENT
    auth = ccxt.AuthenticationError("bad key")
    auth.__cause__ = aiohttp.ClientPayloadError("irrelevant")
    assert classify(auth) is ErrorKind.FATAL  # the wrapping quirk matches a bare ExchangeError only


def test_to_feed_error_wraps_once_masks_secrets_and_keeps_the_cause():
    original = ccxt.RateLimitExceeded("key=abc123 slow down")
    error = to_feed_error(original, "binance", retry_after_s=2.0, secrets=("abc123",))
    assert isinstance(error, RateLimitedFeedError) and error.kind is ErrorKind.RATE_LIMITED
    assert error.__cause__ is original and error.retry_after_s == 2.0
    assert "abc123" not in str(error) and "RateLimitExceeded" in str(error)
    assert to_feed_error(error) is error
    assert len(str(to_feed_error(ccxt.NetworkError("x" * 5000)))) <= 300


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"Retry-After": "soon"}, None),
        ({}, None),
        (None, None),
        ({"Retry-After": "-4"}, 0.0),
    ],
)
def test_retry_after_header(headers, seconds):
    assert retry_after_seconds(headers) == seconds


def test_backoff_is_capped_exponential_with_full_jitter():
    policy = BackoffPolicy(base_delay_s=1.0, max_delay_s=10.0, rate_limit_factor=3.0)
    top = [backoff_delay(n, policy, rand=lambda: 1.0) for n in range(1, 7)]
    assert top == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff_delay(3, policy, rand=lambda: 0.25) == 1.0
    assert backoff_delay(1, policy, rand=lambda: 0.0) == 0.0  # full jitter reaches zero
    limited = [
        backoff_delay(n, policy, kind=ErrorKind.RATE_LIMITED, rand=lambda: 1.0) for n in (1, 2, 5)
    ]
    assert limited == [3.0, 6.0, 30.0]  # base and cap both scaled
    assert (
        backoff_delay(1, policy, kind=ErrorKind.RATE_LIMITED, retry_after_s=7.0, rand=lambda: 0.0)
        == 7.0
    )
    assert (
        backoff_delay(1, policy, kind=ErrorKind.RATE_LIMITED, retry_after_s=1e6, rand=lambda: 0.0)
        == 30.0
    )


def test_stateful_backoff_grows_and_resets():
    backoff = Backoff(BackoffPolicy(base_delay_s=1.0, max_delay_s=4.0), rand=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 1.0


class FlakyCall:
    """Raises the given exceptions in turn, then returns ``"ok"``."""

    def __init__(self, *failures: BaseException):
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self, value: str = "ok") -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return value


def _retrying(call, sleep, policy=None, **kwargs):
    policy = policy or RetryPolicy(
        max_attempts=4, base_delay_s=1.0, max_delay_s=8.0, rate_limit_factor=4.0
    )
    return with_retries(policy, sleep=sleep, rand=lambda: 0.5, **kwargs)(call)


def test_transient_failures_are_retried_with_backoff_until_success():
    sleep, seen = RecordingSleep(), []
    call = FlakyCall(ccxt.NetworkError("a"), ccxt.ExchangeNotAvailable("b"))
    retried = _retrying(
        call, sleep, on_error=lambda error, attempt: seen.append((error.kind, attempt))
    )
    assert run(retried("done")) == "done"
    assert call.calls == 3 and sleep.delays == [0.5, 1.0]
    assert seen == [(ErrorKind.TRANSIENT, 1), (ErrorKind.TRANSIENT, 2)]


def test_rate_limited_waits_longer_and_honours_the_retry_after_hint():
    sleep = RecordingSleep()
    call = FlakyCall(ccxt.RateLimitExceeded("slow"), ccxt.RateLimitExceeded("slow"))
    hints = iter([None, 9.0])
    retried = _retrying(call, sleep, retry_after_hint=lambda: next(hints))
    assert run(retried()) == "ok"
    assert sleep.delays == [2.0, 9.0]  # 0.5 * (1.0 * 4); then the 9 s Retry-After floor


def test_attempts_are_bounded_and_the_last_error_is_ours_with_the_cause():
    sleep = RecordingSleep()
    call = FlakyCall(*(ccxt.RequestTimeout(str(i)) for i in range(10)))
    with pytest.raises(TransientFeedError) as raised:
        run(_retrying(call, sleep)())
    assert call.calls == 4 and len(sleep.delays) == 3
    assert isinstance(raised.value.__cause__, ccxt.RequestTimeout)


@pytest.mark.parametrize(
    ("failure", "error_type"),
    [
        (ccxt.BadSymbol("nope"), InvalidFeedError),
        (ccxt.AuthenticationError("key"), FatalFeedError),
        (RuntimeError("bug"), FatalFeedError),
        (InvalidFeedError("ours"), InvalidFeedError),
    ],
)
def test_invalid_and_fatal_errors_are_not_retried(failure, error_type):
    sleep = RecordingSleep()
    call = FlakyCall(failure)
    with pytest.raises(error_type):
        run(_retrying(call, sleep)())
    assert call.calls == 1 and sleep.delays == []


def test_cancellation_is_never_swallowed():
    async def scenario():
        started = asyncio.Event()

        async def hang():
            started.set()
            await asyncio.sleep(60)

        task = asyncio.ensure_future(_retrying(hang, RecordingSleep())())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario())
