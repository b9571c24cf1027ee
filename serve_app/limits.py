"""Who may call the API and how often (pure: no Ray, no web framework).

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

    def __init__(self, rate_per_s: float, burst: int, max_callers: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
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
