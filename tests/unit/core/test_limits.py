from serve_app.api.auth import RateLimiter, key_is_valid, load_api_keys


def test_api_keys_come_from_the_named_variable():
    keys = load_api_keys("KEYS", {"KEYS": " a1, b2 ,,"})
    assert keys == {"a1", "b2"}
    assert (
        key_is_valid("b2", keys) and not key_is_valid("b3", keys) and not key_is_valid(None, keys)
    )
    assert load_api_keys("MISSING", {}) == frozenset()


def test_token_bucket_allows_a_burst_then_the_rate():
    now = [0.0]
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.allow("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.allow("k") == 0.5  # empty: the next token comes in half a second
    assert limiter.allow("other") == 0.0  # buckets are per caller
    now[0] = 0.5
    assert limiter.allow("k") == 0.0
    assert limiter.allow("k") > 0


def test_limiter_memory_is_bounded():
    limiter = RateLimiter(1.0, 1, max_callers=10, clock=lambda: 0.0)
    for i in range(100):
        limiter.allow(f"caller-{i}")
    assert len(limiter._buckets) == 10
