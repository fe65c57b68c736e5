"""Token-bucket rate limiting with an injected clock (DESIGN §8, PROTOCOL §10).

Pure: nothing here reads a clock; every call takes ``now`` (seconds on any monotonic scale,
e.g. ``trio.current_time()``). Used for the per-wallet request limit (keyed on the
*authenticated* wallet, never on anything the client merely claims) and the per-source
handshake limit.

A bucket holds up to ``burst`` tokens and gains ``rate`` tokens per second. A request of
``cost`` tokens is allowed if that many tokens are there (they are consumed); otherwise nothing
is consumed and the caller learns how many seconds to wait.

* **Disabling**: ``rate=math.inf`` (``float("inf")``) means unlimited: every ``take`` returns
  0.0 and a :class:`KeyedRateLimiter` stores nothing. ``burst`` must still be valid.
* **Clock going backwards**: time before the latest ``now`` seen is treated as that latest
  ``now`` — no negative refill, no crash, and no extra tokens; refilling resumes once the clock
  passes the latest time again, and the returned wait includes that gap.
* **Rounding**: a request is allowed when it is short by at most ``1e-6`` tokens, so that a
  caller who waits exactly the returned time is not refused because of float rounding.
"""

from __future__ import annotations

import math
from collections import OrderedDict

__all__ = ["KeyedRateLimiter", "TokenBucket"]

_EPSILON = 1e-6
"""Token shortfall tolerated as float rounding."""


def _check_config(rate: float, burst: float) -> None:
    """Validate a bucket configuration.

    Args:
        rate: tokens per second; ``math.inf`` disables limiting.
        burst: bucket capacity in tokens.

    Raises:
        ValueError: ``rate`` is not positive (or NaN); ``burst`` is below 1, infinite or NaN.
    """
    if not rate > 0:
        raise ValueError(f"rate must be positive (math.inf disables limiting), got {rate!r}")
    if not 1 <= burst < math.inf:
        raise ValueError(f"burst must be a finite number of at least 1, got {burst!r}")


def _check_cost(cost: float, burst: float) -> None:
    """Validate a request cost.

    Args:
        cost: tokens the request needs.
        burst: the bucket capacity.

    Raises:
        ValueError: ``cost`` is negative, NaN, or larger than ``burst`` (it could never pass).
    """
    if not 0 <= cost <= burst:
        raise ValueError(f"cost must be between 0 and burst ({burst}), got {cost!r}")


class TokenBucket:
    """One token bucket, starting full at ``now``.

    Args:
        rate: tokens added per second; ``math.inf`` means unlimited.
        burst: capacity (at least 1); also the initial number of tokens.
        now: the current time in seconds.

    Raises:
        ValueError: invalid ``rate`` or ``burst`` (see :func:`_check_config`).
    """

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, *, rate: float, burst: float, now: float) -> None:
        _check_config(rate, burst)
        self._rate = float(rate)
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = float(now)

    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self._rate

    @property
    def burst(self) -> float:
        """Capacity in tokens."""
        return self._burst

    def _available(self, now: float) -> float:
        """Tokens available at ``now`` (without changing state).

        Args:
            now: the current time; times before the last update count as the last update.

        Returns:
            The refilled token count, at most ``burst``.
        """
        if self._rate == math.inf:
            return self._burst
        elapsed = now - self._last
        if not elapsed > 0:  # clock went backwards, stood still, or NaN: no refill
            return self._tokens
        return min(self._burst, self._tokens + elapsed * self._rate)

    def tokens(self, now: float) -> float:
        """Tokens available at ``now``.

        Args:
            now: the current time.

        Returns:
            The available tokens (at most ``burst``).
        """
        return self._available(now)

    def is_full(self, now: float) -> bool:
        """Whether the bucket has refilled to capacity (then it carries no state).

        Args:
            now: the current time.

        Returns:
            True if ``burst`` tokens are available.
        """
        return self._available(now) >= self._burst

    def take(self, now: float, cost: float = 1.0) -> float:
        """Try to consume ``cost`` tokens.

        Args:
            now: the current time.
            cost: tokens the request needs (0 .. burst).

        Returns:
            0.0 if allowed (the tokens were consumed); otherwise the seconds from ``now`` until
            enough tokens exist (nothing was consumed).

        Raises:
            ValueError: ``cost`` is negative, NaN or larger than ``burst``.
        """
        _check_cost(cost, self._burst)
        if self._rate == math.inf:
            return 0.0
        tokens = self._available(now)
        if now > self._last:
            self._tokens, self._last = tokens, now
        if tokens + _EPSILON >= cost:
            self._tokens = tokens - cost
            return 0.0
        behind = self._last - now if self._last > now else 0.0
        return behind + (cost - tokens) / self._rate


class KeyedRateLimiter:
    """Token buckets keyed by a string (a wallet, a connection source), with bounded memory.

    Buckets are created full on a key's first request. At most ``max_keys`` buckets are kept.
    When a new key arrives and the limiter is full, room is made in this order:

    1. buckets that have refilled to full are dropped — they carry no state, so dropping them
       changes no decision (the limiter's clock never goes backwards, so a recreated bucket is
       identical to the dropped one);
    2. then, if fewer than ``slack = max(1, max_keys // 64)`` slots are free, the least
       recently used buckets are evicted until ``slack`` are, so that the O(n) search for full
       buckets runs at most once per ``slack`` new keys. An evicted key starts again with a
       full bucket (it regains up to ``burst`` tokens): this only happens when more than
       ``max_keys - slack`` keys are active at once, and then ``max_keys`` should be raised.

    The cheap case — the least recently used bucket is already full — costs O(1).

    Args:
        rate: tokens per second per key; ``math.inf`` disables limiting (nothing is stored).
        burst: capacity per key (at least 1).
        max_keys: the most buckets kept at once (at least 1).

    Raises:
        ValueError: invalid ``rate``, ``burst`` or ``max_keys``.
    """

    __slots__ = ("_buckets", "_burst", "_max_keys", "_now", "_rate", "_slack")

    def __init__(self, *, rate: float, burst: float, max_keys: int = 100_000) -> None:
        _check_config(rate, burst)
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError(f"max_keys must be an integer of at least 1, got {max_keys!r}")
        self._rate = float(rate)
        self._burst = float(burst)
        self._max_keys = max_keys
        self._slack = max(1, max_keys // 64)
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._now = -math.inf

    @property
    def unlimited(self) -> bool:
        """True when limiting is disabled (``rate == math.inf``)."""
        return self._rate == math.inf

    @property
    def max_keys(self) -> int:
        """The most buckets kept at once."""
        return self._max_keys

    def __len__(self) -> int:
        """The number of buckets currently held."""
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` currently has a bucket."""
        return key in self._buckets

    def take(self, key: str, now: float, cost: float = 1.0) -> float:
        """Try to consume ``cost`` tokens from ``key``'s bucket.

        Args:
            key: whose bucket (e.g. the authenticated wallet).
            now: the current time.
            cost: tokens the request needs (0 .. burst).

        Returns:
            0.0 if allowed; otherwise the seconds from ``now`` until enough tokens exist.

        Raises:
            ValueError: ``cost`` is negative, NaN or larger than ``burst``.
        """
        _check_cost(cost, self._burst)
        if self._rate == math.inf:
            return 0.0
        if now > self._now:
            self._now = now
        clock = self._now
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._make_room(clock)
            bucket = TokenBucket(rate=self._rate, burst=self._burst, now=clock)
            self._buckets[key] = bucket
        else:
            self._buckets.move_to_end(key)
        wait = bucket.take(clock, cost)
        return 0.0 if wait == 0.0 else wait + (clock - now if clock > now else 0.0)

    def _make_room(self, now: float) -> None:
        """Free at least one slot: full buckets first, then the least recently used.

        Args:
            now: the limiter's (non-decreasing) clock.
        """
        buckets = self._buckets
        # Cheap path: the least recently used buckets are the likeliest to have refilled.
        while buckets:
            key, bucket = next(iter(buckets.items()))
            if not bucket.is_full(now):
                break
            del buckets[key]
        if len(buckets) < self._max_keys:
            return
        # Slow path, O(n): drop every full bucket; then, so that the next slow path is at least
        # ``slack`` insertions away, evict least recently used (non-full) buckets down to target.
        for key in [k for k, b in buckets.items() if b.is_full(now)]:
            del buckets[key]
        target = self._max_keys - self._slack
        while len(buckets) > target:
            buckets.popitem(last=False)
