"""The single-register linearizability checker (tests/harness/linearizability.py) itself.

It must accept every history a real atomic register produces (a model run, with random
overlaps and random linearization points), and refuse the histories the CAS bugs produce: two
create-if-absent winners, a success on a stale version, a conflict naming a version the
register did not hold.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.harness.linearizability import Op, check


def put(expect: str | None, outcome: str, t0: float, t1: float, **kw: object) -> Op:
    return Op("put", expect, outcome, t0, t1, **kw)  # type: ignore[arg-type]


def delete(expect: str, outcome: str, t0: float, t1: float, **kw: object) -> Op:
    return Op("delete", expect, outcome, t0, t1, **kw)  # type: ignore[arg-type]


def test_a_sequential_history_is_linearizable() -> None:
    history = [
        put(None, "ok", 0, 1, version="v1"),
        put("v1", "ok", 2, 3, version="v2"),
        put("v1", "conflict", 4, 5, has_current=True, current="v2"),
        delete("v2", "ok", 6, 7),
        put(None, "ok", 8, 9, version="v3"),
    ]
    assert check(history) == [0, 1, 2, 3, 4]


def test_two_create_if_absent_winners_are_not_linearizable() -> None:
    history = [put(None, "ok", 0, 5, version="v1"), put(None, "ok", 1, 4, version="v2")]
    assert check(history) is None


def test_a_success_on_a_version_already_replaced_is_not_linearizable() -> None:
    history = [
        put(None, "ok", 0, 1, version="v1"),
        put("v1", "ok", 2, 3, version="v2"),
        put("v1", "ok", 4, 5, version="v3"),
    ]
    assert check(history) is None


def test_overlapping_operations_may_take_effect_in_either_order() -> None:
    # B expects A's version and returns before A does: A took effect first, inside its call.
    history = [put(None, "ok", 0, 10, version="v1"), put("v1", "ok", 1, 5, version="v2")]
    assert check(history) == [0, 1]


def test_a_conflict_must_name_the_version_held_then() -> None:
    good = [
        put(None, "ok", 0, 1, version="v1"),
        put(None, "conflict", 2, 3, has_current=True, current="v1"),
    ]
    assert check(good) is not None
    wrong = [good[0], put(None, "conflict", 2, 3, has_current=True, current="v9")]
    assert check(wrong) is None
    stale = [
        put(None, "ok", 0, 1, version="v1"),
        put("v1", "ok", 2, 3, version="v2"),
        put("v2", "conflict", 4, 5, has_current=True, current="v1"),
    ]
    assert check(stale) is None


def test_a_conflict_on_the_version_held_is_not_linearizable() -> None:
    history = [put(None, "ok", 0, 1, version="v1"), delete("v1", "conflict", 2, 3)]
    assert check(history) is None


def test_an_unknown_put_may_have_taken_effect_under_a_version_nobody_was_told() -> None:
    history = [
        put(None, "unknown", 0, 0),
        put("vx", "ok", 5, 6, version="v2"),  # vx: what the unknown put wrote
    ]
    assert check(history) == [0, 1]
    # ... but it left one version, not two
    twice = [*history, put("vy", "ok", 7, 8, version="v3")]
    assert check(twice) is None


def test_an_unknown_put_may_never_have_taken_effect() -> None:
    history = [put(None, "unknown", 0, 0), put(None, "ok", 5, 6, version="v1")]
    assert check(history) == [1]


def test_failed_operations_took_no_effect() -> None:
    history = [put(None, "failed", 0, 1), put(None, "ok", 2, 3, version="v1")]
    assert check(history) == [1]
    # a refused write that did take effect shows as a later conflict nobody can explain
    shown = [
        put(None, "failed", 0, 1),
        put(None, "conflict", 2, 3, has_current=True, current="vx"),
    ]
    assert check(shown) is None


@st.composite
def atomic_histories(draw: st.DrawFn) -> list[Op]:
    """What an atomic register answers to clients whose calls overlap at random."""
    count = draw(st.integers(1, 40))
    calls = []
    for n in range(count):
        start = draw(st.integers(0, 200))
        length = draw(st.integers(0, 30))
        point = draw(st.integers(start, start + length))
        calls.append((point, n, start, start + length))
    calls.sort()
    state: str | None = None
    versions: list[str] = []
    history: list[Op] = []
    for point, n, start, end in calls:
        expect = draw(st.sampled_from([None, *versions[-3:]]))
        kind = "delete" if expect is not None and draw(st.booleans()) else "put"
        unknown = draw(st.integers(0, 9)) == 0
        if state != expect:
            outcome, version = "conflict", None
        elif kind == "put":
            outcome, version = "ok", f"v{n}"
            versions.append(version)
            state = version
        else:
            outcome, version = "ok", None
            state = None
        if unknown:
            history.append(Op(kind, expect, "unknown", start, end))  # type: ignore[arg-type]
        elif outcome == "conflict":
            history.append(
                Op(kind, expect, "conflict", start, end, has_current=True, current=state)  # type: ignore[arg-type]
            )
        else:
            history.append(Op(kind, expect, "ok", start, end, version=version))  # type: ignore[arg-type]
        del point
    return history


@given(atomic_histories())
def test_every_history_of_an_atomic_register_is_linearizable(history: list[Op]) -> None:
    assert check(history) is not None
