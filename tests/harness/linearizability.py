"""A linearizability checker for one compare-and-set register (Wing & Gong, with Lowe's memo).

The register is one KV key; its state is the key's current version, or None (absent). The
operations are the conditional writes clients make:

* ``put`` with ``expect`` (a version, or None for ``if_version: "absent"``): on ``ok`` the
  register held ``expect`` and now holds the returned version;
* ``delete`` with ``expect`` (a version): on ``ok`` it held ``expect`` and is now absent;
* either with outcome ``conflict``: the register did **not** hold ``expect`` — and, when the
  answer named the current version (``current``), held that;
* either with outcome ``unknown`` (a timeout, a dropped connection, ``outcome_unknown``): it
  may have taken effect at any moment after its invocation, or never. An unknown ``put`` that
  took effect leaves a version nobody was told; a later operation that expects a version no
  completed operation produced may bind it (one version per unknown put, and back);
* outcome ``failed`` (refused before it could change anything, e.g. ``no_quorum``): it never
  took effect, so it is left out.

:func:`check` searches for an order of the operations that respects real time (an operation
that returned before another was invoked comes first) and the semantics above; it returns the
order found, or None when there is none: the history is not linearizable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Op", "check"]

Outcome = Literal["ok", "conflict", "unknown", "failed"]


@dataclass(frozen=True, slots=True)
class Op:
    """One client operation on the register.

    Attributes:
        kind: ``put`` or ``delete``.
        expect: the version the client asked for (None: absent).
        outcome: what the client was told.
        invoked: when the call started (any monotonic clock shared by all clients).
        returned: when it returned; ignored for ``unknown``.
        version: on ``ok`` of a put, the new version.
        current: on ``conflict``, the version the answer named, if it named one (``has_current``).
        has_current: whether the conflict answer named the current version (None included).
        client: who made it (for messages only).
    """

    kind: Literal["put", "delete"]
    expect: str | None
    outcome: Outcome
    invoked: float
    returned: float
    version: str | None = None
    current: str | None = None
    has_current: bool = False
    client: str = ""


# A register state: a version, None (absent), or the index of an unknown put that took effect.
_State = str | None | int
_Bindings = frozenset[tuple[int, str]]


@dataclass(slots=True)
class _Frame:
    """A search node: ``lo`` the first position in the invocation order not done, ``hi`` the
    first in the return order (its return is the horizon: an operation invoked after a pending
    completed one returned cannot come before it), ``at`` where the next candidate is."""

    done: int
    state: _State
    bindings: _Bindings
    lo: int
    hi: int
    at: int


def check(history: Sequence[Op]) -> list[int] | None:
    """An order of ``history``'s effective operations (indices) that linearizes it, or None."""
    ops = [op for op in history if op.outcome != "failed"]
    index = [i for i, op in enumerate(history) if op.outcome != "failed"]
    n = len(ops)
    order = sorted(range(n), key=lambda i: ops[i].invoked)
    must = 0  # the completed operations: all of them must be linearized
    for i, op in enumerate(ops):
        if op.outcome != "unknown":
            must |= 1 << i
    produced = {op.version for op in ops if op.outcome == "ok" and op.version is not None}
    inf = float("inf")
    ends = [inf if op.outcome == "unknown" else op.returned for op in ops]
    seen: set[tuple[int, _State, _Bindings]] = set()
    path: list[int] = []

    def holds(state: _State, expect: str | None, bindings: _Bindings) -> _Bindings | None:
        """The bindings under which ``state`` is ``expect``, or None when it cannot be."""
        if not isinstance(state, int):
            return bindings if state == expect else None
        if expect is None:
            return None
        for unknown, version in bindings:
            if unknown == state:
                return bindings if version == expect else None
        if expect in produced or any(version == expect for _, version in bindings):
            return None
        return bindings | {(state, expect)}

    def step(i: int, state: _State, bindings: _Bindings) -> tuple[_State, _Bindings] | None:
        op = ops[i]
        if op.outcome == "conflict":
            if op.has_current:  # it held ``current`` (so not ``expect``)
                if op.current == op.expect:
                    return None
                bound = holds(state, op.current, bindings)
                return None if bound is None else (state, bound)
            if isinstance(state, int):  # an unknown version: not ``expect``, if already bound
                return (state, bindings) if (state, op.expect) not in bindings else None
            return (state, bindings) if state != op.expect else None
        bound = holds(state, op.expect, bindings)
        if bound is None:
            return None
        if op.kind == "delete":
            return None, bound
        if op.outcome == "unknown":
            return i, bound
        return op.version, bound

    # Depth-first search, iterative (histories run to thousands of operations).
    by_end = sorted((i for i in range(n) if must >> i & 1), key=lambda i: ends[i])

    def frame(done: int, state: _State, bindings: _Bindings, lo: int, hi: int) -> _Frame:
        while lo < n and done >> order[lo] & 1:
            lo += 1
        while hi < len(by_end) and done >> by_end[hi] & 1:
            hi += 1
        return _Frame(done, state, bindings, lo, hi, lo)

    stack = [frame(0, None, frozenset(), 0, 0)]
    while stack:
        top = stack[-1]
        if top.hi == len(by_end):  # every completed operation is linearized
            return [index[i] for i in path]
        horizon = ends[by_end[top.hi]]
        child = None
        while top.at < n and ops[order[top.at]].invoked <= horizon:
            i = order[top.at]
            top.at += 1
            if top.done >> i & 1:
                continue
            after = step(i, top.state, top.bindings)
            if after is None or (top.done | 1 << i, *after) in seen:
                continue
            seen.add((top.done | 1 << i, *after))
            path.append(i)
            child = frame(top.done | 1 << i, *after, top.lo, top.hi)
            break
        if child is not None:
            stack.append(child)
        else:
            stack.pop()
            if stack:
                path.pop()
    return None
