"""Sampling of repetitive log events: the first few of each kind per window, then a count.

Pure (the caller passes the time). A flood of refused connections must not become a flood of
log lines: each kind of event (a refusal code and reason, from a fixed set in the code, never
a client-chosen value) may write ``burst`` lines per ``window`` seconds; the rest are only
counted, and the first line written after the window closes carries how many were left out
(``suppressed=N``). Every event is counted in the metrics whether or not it is logged.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Sampler"]


@dataclass(slots=True)
class _Window:
    started: float
    written: int = 0
    suppressed: int = 0


class Sampler:
    """Decides which events of each kind are written.

    Args:
        burst: lines per kind per window (at least 1).
        window: the window's length in seconds.
        max_kinds: kinds remembered at once; a new kind beyond it forgets the oldest window.

    Raises:
        ValueError: ``burst`` below 1 or ``window`` not positive.
    """

    def __init__(self, *, burst: int = 10, window: float = 10.0, max_kinds: int = 256) -> None:
        if burst < 1 or not window > 0:
            raise ValueError("burst must be at least 1 and window positive")
        self.burst = burst
        self.window = window
        self._max_kinds = max_kinds
        self._windows: dict[str, _Window] = {}

    def admit(self, kind: str, now: float) -> int | None:
        """Whether to write this event of ``kind`` at ``now``.

        Returns:
            None to leave the line out, else how many of its kind were left out before it
            (0 when none).
        """
        current = self._windows.get(kind)
        if current is None or now - current.started >= self.window:
            suppressed = 0 if current is None else current.suppressed
            if current is None and len(self._windows) >= self._max_kinds:
                del self._windows[next(iter(self._windows))]
            self._windows[kind] = _Window(started=now, written=1)
            return suppressed
        if current.written < self.burst:
            current.written += 1
            return 0
        current.suppressed += 1
        return None

    def pending(self) -> dict[str, int]:
        """Events left out and not yet reported, per kind."""
        return {kind: w.suppressed for kind, w in self._windows.items() if w.suppressed}
