"""One retry decorator for every exchange call, and the backoff maths it shares with reconnects.

Backoff is capped exponential with *full jitter* (a uniform draw in ``[0, ceiling]``), so
many symbols or many processes that failed together do not retry in lockstep. Only
transient and rate-limited errors are retried; rate-limited ones wait ``rate_limit_factor``
times longer and never less than the exchange's ``Retry-After``. ``sleep`` and ``rand`` are
injectable so tests never sleep for real.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.feeds.errors import RETRYABLE_KINDS, ErrorKind, FeedError, to_feed_error

P = ParamSpec("P")
T = TypeVar("T")
Sleep = Callable[[float], Awaitable[object]]
Rand = Callable[[], float]


class BackoffPolicy(BaseModel):
    """Capped exponential backoff with full jitter."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_delay_s: float = Field(0.5, gt=0, description="ceiling of the first wait")
    max_delay_s: float = Field(
        30.0, gt=0, description="cap of the ceiling (before rate_limit_factor)"
    )
    rate_limit_factor: float = Field(
        4.0, ge=1, description="rate-limited waits are this much longer"
    )


class RetryPolicy(BackoffPolicy):
    max_attempts: int = Field(5, ge=1, description="calls in total, the first one included")


def backoff_delay(
    attempt: int,
    policy: BackoffPolicy,
    *,
    kind: ErrorKind = ErrorKind.TRANSIENT,
    retry_after_s: float | None = None,
    rand: Rand = random.random,
) -> float:
    """Seconds to wait after failed ``attempt`` (1-based): ``rand() * min(cap, base * 2**(n-1))``.

    Rate-limited errors scale base and cap by ``rate_limit_factor`` and wait at least the
    exchange's ``Retry-After`` (itself capped, so a hostile header cannot stall us for hours).
    """
    factor = policy.rate_limit_factor if kind is ErrorKind.RATE_LIMITED else 1.0
    cap = policy.max_delay_s * factor
    ceiling = min(cap, policy.base_delay_s * factor * 2.0 ** (attempt - 1))
    delay = rand() * ceiling
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, cap))
    return delay


class Backoff:
    """Stateful backoff for a loop that never gives up (websocket reconnects)."""

    def __init__(self, policy: BackoffPolicy, *, rand: Rand = random.random):
        self.policy = policy
        self.failures = 0
        self._rand = rand

    def next_delay(
        self, kind: ErrorKind = ErrorKind.TRANSIENT, retry_after_s: float | None = None
    ) -> float:
        self.failures += 1
        return backoff_delay(
            self.failures, self.policy, kind=kind, retry_after_s=retry_after_s, rand=self._rand
        )

    def reset(self) -> None:
        self.failures = 0


def with_retries(
    policy: RetryPolicy,
    *,
    exchange: str = "*",
    sleep: Sleep = asyncio.sleep,
    rand: Rand = random.random,
    on_error: Callable[[FeedError, int], None] | None = None,
    retry_after_hint: Callable[[], float | None] | None = None,
    secrets: tuple[str, ...] = (),
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Decorate an async exchange call: map failures to ``FeedError`` and retry the retryable.

    ``on_error(error, attempt)`` sees every failure (for counters); ``retry_after_hint()``
    may supply the exchange's ``Retry-After`` for a rate-limited failure. The error raised
    after the last attempt (or at once, for invalid and fatal ones) is the ``FeedError``.
    """

    def decorate(call: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(call)
        async def retried(*args: P.args, **kwargs: P.kwargs) -> T:
            attempt = 1
            while True:
                try:
                    return await call(*args, **kwargs)
                except Exception as exc:  # CancelledError is a BaseException: never caught
                    error = _as_feed_error(exc, exchange, retry_after_hint, secrets)
                    if on_error is not None:
                        on_error(error, attempt)
                    if error.kind not in RETRYABLE_KINDS or attempt >= policy.max_attempts:
                        if error is exc:
                            raise
                        raise error from exc
                    await sleep(
                        backoff_delay(
                            attempt,
                            policy,
                            kind=error.kind,
                            retry_after_s=error.retry_after_s,
                            rand=rand,
                        )
                    )
                    attempt += 1

        return retried

    return decorate


def _as_feed_error(
    exc: BaseException,
    exchange: str,
    retry_after_hint: Callable[[], float | None] | None,
    secrets: tuple[str, ...],
) -> FeedError:
    error = to_feed_error(exc, exchange, secrets=secrets)
    if error.kind is ErrorKind.RATE_LIMITED and error.retry_after_s is None and retry_after_hint:
        error.retry_after_s = retry_after_hint()
    return error
