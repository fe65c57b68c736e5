"""Connection admission (PROTOCOL.md §6.3, §10): caps, the unproven pool and eviction order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from novakms.auth.admission import Admission, ConnectionTable


def table(**kw: int) -> ConnectionTable:
    limits = {
        "max_connections": 10,
        "max_per_source": 10,
        "max_unproven": 10,
        "max_unproven_per_source": 10,
    } | kw
    return ConnectionTable(**limits)


def test_per_source_cap_refuses_only_that_source() -> None:
    t = table(max_per_source=2)
    assert t.admit(1, "a").admitted and t.admit(2, "a").admitted
    assert t.admit(3, "a") == Admission(False, "too_many_connections_from_source")
    assert t.admit(4, "b").admitted
    t.release(1)
    assert t.admit(5, "a").admitted


def test_the_least_recently_active_idle_anonymous_session_is_evicted() -> None:
    t = table(max_unproven=2)
    t.admit(1, "a")
    t.established(1, proven=False)
    t.admit(2, "b")
    t.established(2, proven=False)
    t.touch(1)  # 1 is now the more recent
    decision = t.admit(3, "c")
    assert decision == Admission(True, evict=2)
    assert len(t) == 2 and t.count("b") == 0


def test_busy_proven_and_handshaking_connections_are_never_evicted() -> None:
    t = table(max_unproven=3, max_connections=4)
    t.admit(1, "a")  # handshaking
    t.admit(2, "a")
    t.established(2, proven=False)
    t.busy(2, +1)  # anonymous but busy
    t.admit(3, "a")
    t.established(3, proven=True)
    t.admit(4, "a")  # handshaking
    assert t.unproven == 3
    assert t.admit(5, "b") == Admission(False, "too_many_connections")
    t.busy(2, -1)
    assert t.admit(5, "b") == Admission(True, evict=2)


def test_proven_connections_leave_the_unproven_pool() -> None:
    t = table(max_unproven=1)
    t.admit(1, "a")
    assert t.admit(2, "a") == Admission(False, "too_many_unproven")
    t.established(1, proven=True)
    assert t.unproven == 0
    assert t.admit(2, "a").admitted


def test_release_is_idempotent_and_duplicate_ids_are_bugs() -> None:
    t = table()
    t.admit(1, "a")
    with pytest.raises(ValueError):
        t.admit(1, "a")
    t.release(1)
    t.release(1)
    assert len(t) == 0 and t.unproven == 0 and t.count("a") == 0


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["admit", "anon", "proven", "busy", "idle", "touch", "release"]),
            st.integers(0, 11),
            st.sampled_from(["a", "b", "c"]),
        ),
        max_size=80,
    )
)
def test_limits_hold_under_any_sequence(ops: list[tuple[str, int, str]]) -> None:
    t = table(max_connections=6, max_per_source=3, max_unproven=4, max_unproven_per_source=2)
    live: set[int] = set()
    for op, conn, source in ops:
        if op == "admit" and conn not in live:
            decision = t.admit(conn, source)
            if decision.evict is not None:
                live.discard(decision.evict)
            if decision.admitted:
                live.add(conn)
        elif op == "anon":
            t.established(conn, proven=False)
        elif op == "proven":
            t.established(conn, proven=True)
        elif op == "busy":
            t.busy(conn, +1)
        elif op == "idle":
            t.busy(conn, -1)
        elif op == "touch":
            t.touch(conn)
        elif op == "release":
            t.release(conn)
            live.discard(conn)
        assert len(t) == len(live) <= 6
        assert t.unproven <= 4
        assert all(t.count(s) <= 3 for s in "abc")
        assert sum(t.count(s) for s in "abc") == len(t)


def test_one_source_cannot_fill_the_unproven_pool() -> None:
    t = table(max_unproven=4, max_unproven_per_source=2)
    assert t.admit(1, "a").admitted and t.admit(2, "a").admitted
    assert t.admit(3, "a") == Admission(False, "too_many_connections_from_source")
    t.established(1, proven=True)  # proven connections are not counted against it
    assert t.admit(3, "a").admitted
    assert t.admit(4, "b").admitted and t.admit(5, "b").admitted
