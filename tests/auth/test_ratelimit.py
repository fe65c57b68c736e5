"""Token buckets with an injected clock."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from novakms.auth.ratelimit import KeyedRateLimiter, TokenBucket

# ---------------------------------------------------------------------------------- TokenBucket


def test_burst_then_refusal_with_wait() -> None:
    bucket = TokenBucket(rate=2.0, burst=5, now=100.0)
    assert [bucket.take(100.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(100.0) == pytest.approx(0.5)
    assert bucket.take(100.0, cost=3) == pytest.approx(1.5)
    # refusals consumed nothing
    assert bucket.tokens(100.0) == pytest.approx(0.0)


def test_refill_over_time() -> None:
    bucket = TokenBucket(rate=10.0, burst=3, now=0.0)
    for _ in range(3):
        assert bucket.take(0.0) == 0.0
    assert bucket.take(0.05) == pytest.approx(0.05)
    assert bucket.take(0.1) == 0.0  # exactly one token after 0.1 s
    assert bucket.take(0.1) > 0
    assert bucket.tokens(1000.0) == 3  # capped at burst
    assert bucket.is_full(1000.0)
    assert not bucket.is_full(0.1)


def test_waiting_the_returned_time_succeeds() -> None:
    bucket = TokenBucket(rate=3.0, burst=1, now=1_000_000.123)
    now = 1_000_000.123
    assert bucket.take(now) == 0.0
    for _ in range(100):
        wait = bucket.take(now)
        assert wait > 0
        now += wait
        assert bucket.take(now) == 0.0


def test_clock_going_backwards() -> None:
    bucket = TokenBucket(rate=1.0, burst=2, now=50.0)
    assert bucket.take(50.0) == 0.0
    assert bucket.take(50.0) == 0.0
    # the clock jumps back 10 s: no negative refill, no crash, wait includes the gap
    assert bucket.tokens(40.0) == 0.0
    assert bucket.take(40.0) == pytest.approx(11.0)
    assert bucket.take(45.0) == pytest.approx(6.0)
    # no tokens are earned for time already counted
    assert bucket.take(50.5) == pytest.approx(0.5)
    assert bucket.take(51.0) == 0.0
    assert bucket.take(51.0) > 0


def test_cost_bounds() -> None:
    bucket = TokenBucket(rate=1.0, burst=2, now=0.0)
    assert bucket.take(0.0, cost=0) == 0.0
    assert bucket.take(0.0, cost=2) == 0.0
    assert bucket.take(0.0, cost=0) == 0.0
    for cost in (-1.0, 2.5, math.nan):
        with pytest.raises(ValueError, match="cost"):
            bucket.take(0.0, cost=cost)


@pytest.mark.parametrize(
    ("rate", "burst", "match"),
    [
        (0.0, 10, "rate"),
        (-1.0, 10, "rate"),
        (math.nan, 10, "rate"),
        (1.0, 0.5, "burst"),
        (1.0, 0, "burst"),
        (1.0, math.inf, "burst"),
        (1.0, math.nan, "burst"),
    ],
)
def test_bad_config(rate: float, burst: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TokenBucket(rate=rate, burst=burst, now=0.0)
    with pytest.raises(ValueError, match=match):
        KeyedRateLimiter(rate=rate, burst=burst)


def test_unlimited_bucket() -> None:
    bucket = TokenBucket(rate=math.inf, burst=1, now=0.0)
    assert all(bucket.take(0.0) == 0.0 for _ in range(10_000))
    assert bucket.take(-5.0) == 0.0
    assert bucket.is_full(0.0)


# ---------------------------------------------------------------------------------- keyed


def test_keys_are_independent() -> None:
    limiter = KeyedRateLimiter(rate=1.0, burst=2)
    assert limiter.take("a", 0.0) == 0.0
    assert limiter.take("a", 0.0) == 0.0
    assert limiter.take("a", 0.0) == pytest.approx(1.0)
    assert limiter.take("b", 0.0) == 0.0
    assert limiter.take("a", 1.0) == 0.0
    assert len(limiter) == 2
    assert "a" in limiter
    assert "c" not in limiter


def test_unlimited_limiter_stores_nothing() -> None:
    limiter = KeyedRateLimiter(rate=math.inf, burst=1, max_keys=1)
    assert limiter.unlimited
    assert all(limiter.take(str(i), 0.0) == 0.0 for i in range(1000))
    assert len(limiter) == 0


def test_bad_max_keys() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_keys"):
            KeyedRateLimiter(rate=1.0, burst=1, max_keys=bad)  # type: ignore[arg-type]


def test_full_buckets_are_dropped_before_lru() -> None:
    limiter = KeyedRateLimiter(rate=1.0, burst=10, max_keys=2)
    for _ in range(10):
        assert limiter.take("drained", 0.0) == 0.0  # least recently used, but not full
    assert limiter.take("light", 1.0) == 0.0  # full again at t = 2
    assert limiter.take("new", 5.0) == 0.0
    # "light" (full, carries no state) went first; "drained" kept its state
    assert "light" not in limiter
    assert "drained" in limiter
    assert limiter.take("drained", 5.0, cost=6) == pytest.approx(1.0)


def test_least_recently_used_is_evicted_when_nothing_is_full() -> None:
    limiter = KeyedRateLimiter(rate=1.0, burst=10, max_keys=3)
    for key in ("a", "b", "c"):
        assert limiter.take(key, 0.0, cost=10) == 0.0
    assert limiter.take("a", 0.5) > 0  # touch "a": "b" is now the least recently used
    assert limiter.take("d", 1.0) == 0.0
    assert "b" not in limiter
    assert {"a", "c", "d"} == {k for k in "abcd" if k in limiter}
    assert len(limiter) == 3


def test_cheap_path_drops_full_buckets_at_lru_end() -> None:
    limiter = KeyedRateLimiter(rate=1.0, burst=1, max_keys=100)
    for i in range(99):
        limiter.take(str(i), float(i))
    limiter.take("99", 99.5)
    # at t = 100 buckets 0..98 are full (no state): the first new key drops all of them and
    # stops at "99", which is still refilling
    assert limiter.take("new-0", 100.0) == 0.0
    assert len(limiter) == 2
    for i in range(1, 50):
        assert limiter.take(f"new-{i}", 100.0) == 0.0
    assert len(limiter) == 51
    assert limiter.take("99", 100.0) == pytest.approx(0.5)


def test_limiter_clock_going_backwards() -> None:
    limiter = KeyedRateLimiter(rate=1.0, burst=1)
    assert limiter.take("a", 10.0) == 0.0
    assert limiter.take("a", 5.0) == pytest.approx(6.0)
    # a new key seen with an old time starts at the limiter's latest time
    assert limiter.take("b", 5.0) == 0.0
    assert limiter.take("b", 5.0) == pytest.approx(6.0)
    assert limiter.take("a", 11.0) == 0.0


def test_cost_validated_before_creating_a_bucket() -> None:
    limiter = KeyedRateLimiter(rate=1.0, burst=2)
    with pytest.raises(ValueError, match="cost"):
        limiter.take("a", 0.0, cost=3)
    assert len(limiter) == 0


# ---------------------------------------------------------------------------------- properties

OPS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=11),  # key index
        st.floats(min_value=-2.0, max_value=3.0, allow_nan=False),  # time step (may go back)
        st.sampled_from([0.0, 0.5, 1.0, 1.0, 1.0, 2.0]),  # cost
    ),
    max_size=300,
)


@settings(max_examples=300)
@given(
    ops=OPS,
    rate=st.floats(min_value=0.1, max_value=20.0),
    burst=st.integers(min_value=2, max_value=6),
    max_keys=st.integers(min_value=1, max_value=8),
)
def test_memory_is_bounded(
    ops: list[tuple[int, float, float]], rate: float, burst: int, max_keys: int
) -> None:
    limiter = KeyedRateLimiter(rate=rate, burst=burst, max_keys=max_keys)
    now = 0.0
    for key, step, cost in ops:
        now += step
        wait = limiter.take(f"k{key}", now, cost)
        assert wait >= 0.0
        assert math.isfinite(wait)
        assert len(limiter) <= max_keys


@settings(max_examples=300)
@given(
    ops=OPS,
    rate=st.floats(min_value=0.1, max_value=20.0),
    burst=st.integers(min_value=2, max_value=6),
    spare=st.integers(min_value=0, max_value=4),
)
def test_never_allows_more_than_burst_plus_refill(
    ops: list[tuple[int, float, float]], rate: float, burst: int, spare: int
) -> None:
    # With at most max_keys keys no state is ever lost (only full buckets may be dropped), so
    # each key is held to burst + rate * elapsed, whatever the clock does.
    keys = 12
    limiter = KeyedRateLimiter(rate=rate, burst=burst, max_keys=keys + spare)
    first_seen: dict[int, float] = {}
    allowed: defaultdict[int, float] = defaultdict(float)
    now, latest = 0.0, -math.inf
    for key, step, cost in ops:
        now += step
        latest = max(latest, now)  # the latest time the limiter has seen
        first_seen.setdefault(key, latest)
        if limiter.take(f"k{key}", now, cost) == 0.0:
            allowed[key] += cost
        elapsed = latest - first_seen[key]
        assert allowed[key] <= burst + rate * elapsed + 1e-6 * len(ops)


@settings(max_examples=300)
@given(
    steps=st.lists(st.floats(min_value=-1.0, max_value=2.0, allow_nan=False), max_size=200),
    rate=st.floats(min_value=0.1, max_value=50.0),
    burst=st.integers(min_value=1, max_value=10),
)
def test_bucket_bound_and_wait_is_exact(steps: list[float], rate: float, burst: int) -> None:
    bucket = TokenBucket(rate=rate, burst=burst, now=0.0)
    now = latest = allowed = 0.0
    for step in steps:
        now += step
        latest = max(latest, now)
        wait = bucket.take(now)
        if wait == 0.0:
            allowed += 1
        else:
            # nothing was consumed, and after the wait the request passes
            assert bucket.tokens(now) < 1
            assert bucket.tokens(now + wait) >= 1 - 1e-6
        assert allowed <= burst + rate * latest + 1e-6 * len(steps)


def test_slow_path_frees_slack_slots_at_once() -> None:
    limiter = KeyedRateLimiter(rate=1.0, burst=10, max_keys=128)  # slack = 128 // 64 = 2
    for i in range(128):
        assert limiter.take(str(i), 0.0, cost=5) == 0.0
    assert limiter.take("new", 0.0) == 0.0
    # nothing was full: the two least recently used went, so the next new key is O(1)
    assert len(limiter) == 127
    assert "0" not in limiter
    assert "1" not in limiter
    assert "2" in limiter
