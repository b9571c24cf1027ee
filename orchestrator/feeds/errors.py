"""ccxt behind one boundary: every exchange failure becomes one of four feed errors.

- ``transient``: the network or the exchange hiccuped; retry with backoff.
- ``rate_limited``: the exchange asked us to slow down; retry, waiting longer.
- ``invalid``: this request or its answer is bad (unknown symbol, malformed JSON);
  retrying the same thing will not help, but the source keeps running.
- ``fatal``: configuration or permission problems, and anything we do not recognise;
  the source stops and says why.

The mapping is data: ``KIND_BY_ERROR`` is looked up along the exception's MRO (the most
specific class wins), and ``QUIRKS`` lists the exchange-specific exceptions to that rule.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar


class ErrorKind(StrEnum):
    TRANSIENT = "transient"
    RATE_LIMITED = "rate_limited"
    INVALID = "invalid"
    FATAL = "fatal"


RETRYABLE_KINDS = frozenset({ErrorKind.TRANSIENT, ErrorKind.RATE_LIMITED})
MAX_MESSAGE_CHARS = 300


class FeedError(Exception):
    """Base of the feed's own errors; ``kind`` says how callers should react."""

    kind: ClassVar[ErrorKind] = ErrorKind.FATAL

    def __init__(self, message: str, *, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TransientFeedError(FeedError):
    kind = ErrorKind.TRANSIENT


class RateLimitedFeedError(FeedError):
    kind = ErrorKind.RATE_LIMITED


class InvalidFeedError(FeedError):
    kind = ErrorKind.INVALID


class FatalFeedError(FeedError):
    kind = ErrorKind.FATAL


ERROR_CLASS_BY_KIND: Mapping[ErrorKind, type[FeedError]] = {
    cls.kind: cls
    for cls in (TransientFeedError, RateLimitedFeedError, InvalidFeedError, FatalFeedError)
}


@dataclass(frozen=True)
class ErrorQuirk:
    """An exception to ``KIND_BY_ERROR`` for one error shape, found by reading ccxt's source."""

    error: type[BaseException]
    kind: ErrorKind
    why: str
    exchange: str = "*"
    message_pattern: str | None = None  # regex searched in str(exc)
    cause: type[BaseException] | None = None  # required somewhere in the __cause__ chain
    exact_type: bool = False  # match type(exc) is error, not its subclasses

    def matches(self, exc: BaseException, exchange: str) -> bool:
        if self.exchange not in ("*", exchange) or not isinstance(exc, self.error):
            return False
        if self.exact_type and type(exc) is not self.error:
            return False
        if self.message_pattern is not None and not re.search(self.message_pattern, str(exc)):
            return False
        return self.cause is None or any(isinstance(c, self.cause) for c in _causes(exc))


@functools.cache
def error_tables() -> tuple[Mapping[type[BaseException], ErrorKind], tuple[ErrorQuirk, ...]]:
    """(kind by error class, quirks): built on first use, so that a process which reads the
    feed config but never talks to an exchange does not import ccxt (~0.4 s)."""
    import aiohttp
    import ccxt

    # Looked up along type(exc).__mro__, so the most specific listed class wins (for example
    # RateLimitExceeded before NetworkError, BadSymbol before BadRequest before ExchangeError).
    kind_by_error: dict[type[BaseException], ErrorKind] = {
        ccxt.RateLimitExceeded: ErrorKind.RATE_LIMITED,
        ccxt.DDoSProtection: ErrorKind.TRANSIENT,
        ccxt.RequestTimeout: ErrorKind.TRANSIENT,
        ccxt.ExchangeNotAvailable: ErrorKind.TRANSIENT,  # OnMaintenance is a subclass
        ccxt.InvalidNonce: ErrorKind.TRANSIENT,
        ccxt.NetworkError: ErrorKind.TRANSIENT,
        ccxt.BadResponse: ErrorKind.INVALID,  # NullResponse is a subclass
        ccxt.OperationFailed: ErrorKind.TRANSIENT,
        ccxt.BadSymbol: ErrorKind.INVALID,
        ccxt.BadRequest: ErrorKind.INVALID,
        ccxt.ArgumentsRequired: ErrorKind.INVALID,
        ccxt.OperationRejected: ErrorKind.INVALID,  # MarketClosed and friends
        ccxt.AuthenticationError: ErrorKind.FATAL,  # PermissionDenied, AccountSuspended
        ccxt.NotSupported: ErrorKind.FATAL,
        ccxt.ExchangeError: ErrorKind.FATAL,
        # Failures raised below ccxt (our own awaits, websocket plumbing).
        TimeoutError: ErrorKind.TRANSIENT,
        ConnectionError: ErrorKind.TRANSIENT,
        aiohttp.ClientError: ErrorKind.TRANSIENT,
        OSError: ErrorKind.TRANSIENT,
        ValueError: ErrorKind.INVALID,  # json.JSONDecodeError included
    }

    quirks = (
        ErrorQuirk(
            ccxt.DDoSProtection,
            ErrorKind.RATE_LIMITED,
            message_pattern=r"\b429\b",
            why="binance.handle_errors raises DDoSProtection (not RateLimitExceeded) for HTTP 429",
        ),
        ErrorQuirk(
            ccxt.DDoSProtection,
            ErrorKind.RATE_LIMITED,
            message_pattern=r"\b418\b",
            why="binance answers 418 (IP auto-ban) after ignored 429s: back off like a 429, longer",
        ),
        ErrorQuirk(
            ccxt.ExchangeError,
            ErrorKind.TRANSIENT,
            cause=aiohttp.ClientError,
            exact_type=True,
            why=(
                "ccxt wraps aiohttp payload errors (connection cut mid-body) in a bare "
                "ExchangeError"
            ),
        ),
        ErrorQuirk(
            ccxt.ExchangeError,
            ErrorKind.TRANSIENT,
            cause=OSError,
            exact_type=True,
            why="socket errors surfacing through ccxt as ExchangeError are network failures",
        ),
    )
    return kind_by_error, quirks


def __getattr__(name: str):
    """``KIND_BY_ERROR`` and ``QUIRKS`` as before, built when first asked for."""
    if name == "KIND_BY_ERROR":
        return error_tables()[0]
    if name == "QUIRKS":
        return error_tables()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current = exc.__cause__ or exc.__context__
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def classify(exc: BaseException, exchange: str = "*") -> ErrorKind:
    """The kind of ``exc``: quirks first, then the most specific class in the table, else fatal."""
    if isinstance(exc, FeedError):
        return exc.kind
    kind_by_error, quirks = error_tables()
    for quirk in quirks:
        if quirk.matches(exc, exchange):
            return quirk.kind
    for cls in type(exc).__mro__:
        if cls in kind_by_error:
            return kind_by_error[cls]
    return ErrorKind.FATAL


def short_message(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    """``Type: message`` cut to a readable length, with any known secret value masked."""
    text = mask_secrets(f"{type(exc).__name__}: {exc}", secrets)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def to_feed_error(
    exc: BaseException,
    exchange: str = "*",
    *,
    retry_after_s: float | None = None,
    secrets: tuple[str, ...] = (),
) -> FeedError:
    """Wrap ``exc`` in the feed error of its kind (``exc`` itself if it already is one)."""
    if isinstance(exc, FeedError):
        return exc
    kind = classify(exc, exchange)
    error = ERROR_CLASS_BY_KIND[kind](short_message(exc, secrets), retry_after_s=retry_after_s)
    error.__cause__ = exc
    return error


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The ``Retry-After`` header in seconds, if present and numeric (HTTP dates are ignored)."""
    if not headers:
        return None
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None
