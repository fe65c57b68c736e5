"""Unix-seconds clocks that follow trio's clock, so a ``MockClock`` moves them too.

Under ``trio.testing.MockClock(autojump_threshold=0)`` trio's clock jumps to the next deadline
as soon as every task is blocked: sleeps, timeouts and intervals cost no real time. The wall
clock (``time.time``) does not move with it, so whatever a test runs under a MockClock must
read :func:`unix_clock` instead: the server's injectable ``clock`` (handshake timestamps, rate
limits, store ``now``) and — through :func:`follow_trio_clock`, a monkeypatch, because the
replicator reads ``time.time`` itself — the replicator's record times and tombstone GC cutoff.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import pytest
import trio

from novakms.cluster import replicator

__all__ = ["EPOCH", "follow_trio_clock", "unix_clock"]

#: Unix seconds at trio time 0 (any fixed value: the runs do not depend on the date).
EPOCH = 1_800_000_000.0


def unix_clock(epoch: float = EPOCH) -> Callable[[], float]:
    """Unix seconds, ``epoch`` plus trio's current time."""

    def now() -> float:
        return epoch + trio.current_time()

    return now


def follow_trio_clock(monkeypatch: pytest.MonkeyPatch, clock: Callable[[], float]) -> None:
    """Make the replicator read ``clock`` where it reads the wall clock (``_now_ms``, ``time``).

    The replicator stamps merges (``now_ms``), computes the tombstone GC cutoff and records
    ``last_ok`` / ``last_ack`` from ``time.time()``, not from an injected ``now``.
    """
    monkeypatch.setattr(replicator, "_now_ms", lambda: int(clock() * 1000))
    monkeypatch.setattr(replicator, "time", types.SimpleNamespace(time=clock))
