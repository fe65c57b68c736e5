"""Unix-seconds clocks that follow trio's clock, so a ``MockClock`` moves them too.

Under ``trio.testing.MockClock(autojump_threshold=0)`` trio's clock jumps to the next deadline
as soon as every task is blocked: sleeps, timeouts and intervals cost no real time. The wall
clock (``time.time``) does not move with it, so a node run under a MockClock is built with
:func:`unix_clock` as its ``clock``: the server (handshake timestamps, rate limits, store
``now``), its peers' handshakes and the replicator (record validation, queue and acknowledgement
times, the tombstone GC cutoff) all read it.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

__all__ = ["EPOCH", "unix_clock"]

#: Unix seconds at trio time 0 (any fixed value: the runs do not depend on the date).
EPOCH = 1_800_000_000.0


def unix_clock(epoch: float = EPOCH) -> Callable[[], float]:
    """Unix seconds, ``epoch`` plus trio's current time."""

    def now() -> float:
        return epoch + trio.current_time()

    return now
