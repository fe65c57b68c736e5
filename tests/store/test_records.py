"""Records, vector clocks, the hybrid logical clock and merge (novakms.store.records)."""

from __future__ import annotations

import functools
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from novakms.store.records import (
    ABSENT,
    HLC_LOGICAL_BITS,
    Clock,
    HybridClock,
    Record,
    clock_compare,
    clock_increment,
    clock_join,
    merge,
)

A = "0x" + "aa" * 20
B = "0x" + "bb" * 20
C = "0x" + "cc" * 20
NODES = (A, B, C)


def rec(
    *,
    hlc: int = 1 << HLC_LOGICAL_BITS,
    node: str = A,
    sealed: bytes | None = b"x" * 30,
    clock: Clock = ((A, 1),),
    expires_at_ms: int | None = None,
    app_id: int = 1,
    key: str = "k",
) -> Record:
    return Record(
        app_id=app_id,
        key=key,
        sealed=sealed,
        clock=clock,
        hlc=hlc,
        node=node,
        expires_at_ms=expires_at_ms,
    )


# --- vector clocks ----------------------------------------------------------------------------


def test_clock_increment() -> None:
    assert clock_increment((), A) == ((A, 1),)
    assert clock_increment(((A, 1),), A) == ((A, 2),)
    # sorted by wallet whatever the insertion order
    assert clock_increment(((B, 3),), A) == ((A, 1), (B, 3))
    assert clock_increment(((A, 1), (C, 2)), B) == ((A, 1), (B, 1), (C, 2))


def test_clock_join() -> None:
    assert clock_join((), ()) == ()
    assert clock_join(((A, 1),), ()) == ((A, 1),)
    assert clock_join((), ((A, 1),)) == ((A, 1),)
    assert clock_join(((A, 3), (B, 1)), ((A, 1), (B, 4), (C, 2))) == ((A, 3), (B, 4), (C, 2))
    same = ((A, 2), (B, 2))
    assert clock_join(same, same) == same


def test_clock_compare() -> None:
    assert clock_compare((), ()) == "equal"
    assert clock_compare(((A, 1),), ((A, 1),)) == "equal"
    assert clock_compare(((A, 2),), ((A, 1),)) == "after"
    assert clock_compare(((A, 1),), ((A, 2),)) == "before"
    assert clock_compare(((A, 1),), ()) == "after"
    assert clock_compare((), ((B, 1),)) == "before"
    assert clock_compare(((A, 1),), ((B, 1),)) == "concurrent"
    assert clock_compare(((A, 2), (B, 1)), ((A, 1), (B, 2))) == "concurrent"
    assert clock_compare(((A, 2), (B, 2)), ((A, 1), (B, 2))) == "after"


clocks = st.dictionaries(st.sampled_from(NODES), st.integers(1, 5)).map(
    lambda d: tuple(sorted(d.items()))
)


@given(a=clocks, b=clocks, c=clocks)
def test_clock_join_is_a_semilattice(a: Clock, b: Clock, c: Clock) -> None:
    assert clock_join(a, b) == clock_join(b, a)
    assert clock_join(clock_join(a, b), c) == clock_join(a, clock_join(b, c))
    assert clock_join(a, a) == a
    joined = clock_join(a, b)
    assert clock_compare(joined, a) in ("after", "equal")
    assert clock_compare(joined, b) in ("after", "equal")


@given(a=clocks, node=st.sampled_from(NODES))
def test_increment_is_after(a: Clock, node: str) -> None:
    assert clock_compare(clock_increment(a, node), a) == "after"
    assert clock_compare(a, clock_increment(a, node)) == "before"


@given(a=clocks, b=clocks)
def test_clock_compare_is_antisymmetric(a: Clock, b: Clock) -> None:
    mirror = {"equal": "equal", "before": "after", "after": "before", "concurrent": "concurrent"}
    assert clock_compare(b, a) == mirror[clock_compare(a, b)]
    assert (clock_compare(a, b) == "equal") == (a == b)


# --- hybrid logical clock ---------------------------------------------------------------------


def test_hlc_tick_follows_the_wall() -> None:
    hlc = HybridClock()
    first = hlc.tick(1000)
    assert first == 1000 << HLC_LOGICAL_BITS
    assert HybridClock.physical_ms(first) == 1000
    second = hlc.tick(1000)  # same millisecond: logical counter
    assert second == first + 1
    third = hlc.tick(999)  # wall went backwards: never behind what was issued
    assert third == second + 1
    fourth = hlc.tick(2000)
    assert fourth == 2000 << HLC_LOGICAL_BITS
    assert hlc.last == fourth


def test_hlc_tick_respects_after_and_observe() -> None:
    hlc = HybridClock()
    ahead = (5000 << HLC_LOGICAL_BITS) + 7
    assert hlc.tick(1000, after=ahead) == ahead + 1
    assert hlc.tick(1000) == ahead + 2
    hlc.observe(ahead + 100)
    assert hlc.tick(1000) == ahead + 101
    hlc.observe(0)  # observing the past changes nothing
    assert hlc.tick(1000) == ahead + 102
    assert HybridClock(last=ahead).tick(0) == ahead + 1


@given(
    st.lists(
        st.tuples(
            st.integers(0, 10**13),
            st.none() | st.integers(0, 10**13 << HLC_LOGICAL_BITS),
            st.booleans(),
        ),
        max_size=40,
    )
)
def test_hlc_tick_strictly_increasing_never_behind(
    steps: list[tuple[int, int | None, bool]],
) -> None:
    hlc = HybridClock()
    last = -1
    for wall, other, observe in steps:
        if other is not None and observe:
            hlc.observe(other)
            last = max(last, other)
            continue
        stamp = hlc.tick(wall, after=other or 0)
        assert stamp > last
        assert stamp >= wall << HLC_LOGICAL_BITS
        assert HybridClock.physical_ms(stamp) >= wall
        if other is not None:
            assert stamp > other
        last = stamp


# --- records ----------------------------------------------------------------------------------


@given(hlc=st.integers(0, 2**63), node=st.sampled_from(NODES))
def test_version_token_shape(hlc: int, node: str) -> None:
    token = rec(hlc=hlc, node=node).version
    assert token != ABSENT
    assert isinstance(token, str)
    assert token.isascii()
    # kv.put/kv.delete accept if_version of at most 64 bytes; CLI-safe
    assert 16 <= len(token) <= 64
    assert not token.startswith("-")
    assert token.strip() == token


def test_record_properties() -> None:
    live = rec(hlc=(1234 << HLC_LOGICAL_BITS) + 5, expires_at_ms=2000)
    assert not live.tombstone
    assert live.updated_at_ms == 1234
    assert live.live(1999)
    assert not live.live(2000)
    assert live.expired(2000)
    assert not live.expired(1999)
    assert live.deleted_at_ms() == 2000
    dead = rec(hlc=1234 << HLC_LOGICAL_BITS, sealed=None)
    assert dead.tombstone
    assert not dead.live(0)
    assert not dead.expired(10**15)
    assert dead.deleted_at_ms() == 1234
    assert rec(expires_at_ms=None).live(10**15)


def test_version_depends_on_hlc_and_node_only() -> None:
    base = rec(hlc=99 << HLC_LOGICAL_BITS, node=A)
    same_write = rec(
        hlc=99 << HLC_LOGICAL_BITS,
        node=A,
        sealed=b"y" * 40,
        clock=((A, 3), (B, 1)),
        expires_at_ms=5,
        app_id=7,
        key="other",
    )
    assert base.version == same_write.version
    assert base.version == rec(hlc=99 << HLC_LOGICAL_BITS, node=A).version  # stable
    assert base.version != rec(hlc=(99 << HLC_LOGICAL_BITS) + 1, node=A).version
    assert base.version != rec(hlc=99 << HLC_LOGICAL_BITS, node=B).version


@given(
    a=st.tuples(st.integers(0, 2**40), st.sampled_from(NODES)),
    b=st.tuples(st.integers(0, 2**40), st.sampled_from(NODES)),
)
def test_version_equal_iff_same_write(a: tuple[int, str], b: tuple[int, str]) -> None:
    ra, rb = rec(hlc=a[0], node=a[1]), rec(hlc=b[0], node=b[1])
    assert (ra.version == rb.version) == (a == b)


def test_as_expired_beats_the_live_record() -> None:
    live = rec(hlc=50 << HLC_LOGICAL_BITS, expires_at_ms=60, clock=((A, 2),))
    dead = live.as_expired()
    assert dead.tombstone
    assert (dead.hlc, dead.node, dead.clock, dead.expires_at_ms) == (
        live.hlc,
        live.node,
        live.clock,
        live.expires_at_ms,
    )
    assert dead.order_key() > live.order_key()
    assert merge(live, dead) == dead
    assert merge(dead, live) == dead
    assert dead.deleted_at_ms() == 60
    # ...but a later write (greater hlc) beats the derived tombstone.
    later = rec(hlc=(50 << HLC_LOGICAL_BITS) + 1, node=A, clock=((A, 3),))
    assert merge(dead, later) == later


def test_merge_later_hlc_wins_and_clocks_join() -> None:
    old = rec(hlc=10, node=B, sealed=b"old", clock=((A, 1), (B, 5)))
    new = rec(hlc=11, node=A, sealed=b"new", clock=((A, 2),))
    merged = merge(old, new)
    assert merged.sealed == b"new"
    assert merged.hlc == 11
    assert merged.node == A
    assert merged.clock == ((A, 2), (B, 5))
    assert merge(new, old) == merged


def test_merge_ties_on_hlc_broken_by_node_not_ciphertext() -> None:
    a = rec(hlc=10, node=A, sealed=b"\xff" * 30)
    b = rec(hlc=10, node=B, sealed=b"\x00" * 30, clock=((B, 1),))
    assert merge(a, b).node == B
    assert merge(b, a).node == B
    assert merge(a, b).sealed == b"\x00" * 30


def test_merge_tombstone_with_later_hlc_wins() -> None:
    live = rec(hlc=10, node=B)
    dead = rec(hlc=11, node=A, sealed=None)
    assert merge(live, dead).tombstone
    assert merge(dead, live).tombstone


def test_merge_keeps_the_winner_object_when_clock_unchanged() -> None:
    a = rec(hlc=10, clock=((A, 2),))
    b = rec(hlc=9, clock=((A, 1),))
    assert merge(a, b) is a


def test_merge_of_different_keys_refused() -> None:
    with pytest.raises(ValueError):
        merge(rec(key="a"), rec(key="b"))
    with pytest.raises(ValueError):
        merge(rec(app_id=1), rec(app_id=2))


# --- merge properties over arbitrary records of one key ---------------------------------------

records = st.builds(
    rec,
    hlc=st.integers(0, 3) | st.integers(0, 2**48),
    node=st.sampled_from(NODES),
    sealed=st.none() | st.sampled_from([b"", b"a", b"b", b"ab"]) | st.binary(max_size=40),
    clock=clocks,
    expires_at_ms=st.none() | st.integers(-2, 3) | st.integers(0, 2**45),
)


@given(a=records, b=records)
def test_merge_commutative(a: Record, b: Record) -> None:
    assert merge(a, b) == merge(b, a)


@given(a=records, b=records, c=records)
def test_merge_associative(a: Record, b: Record, c: Record) -> None:
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


@given(a=records, b=records)
def test_merge_idempotent(a: Record, b: Record) -> None:
    assert merge(a, a) == a
    ab = merge(a, b)
    assert merge(ab, a) == ab
    assert merge(ab, b) == ab
    assert merge(ab, ab) == ab


@given(a=records, b=records)
def test_merge_result_is_one_of_the_inputs_with_joined_clock(a: Record, b: Record) -> None:
    merged = merge(a, b)
    assert merged.clock == clock_join(a.clock, b.clock)
    content = (merged.sealed, merged.hlc, merged.node, merged.expires_at_ms)
    assert content in {(r.sealed, r.hlc, r.node, r.expires_at_ms) for r in (a, b)}
    assert merged.order_key() == max(a.order_key(), b.order_key())


@given(data=st.data(), items=st.lists(records, min_size=1, max_size=6))
def test_merge_fold_independent_of_order_and_duplicates(
    data: st.DataObject, items: list[Record]
) -> None:
    expected = functools.reduce(merge, items)
    with_dups = items + data.draw(st.lists(st.sampled_from(items), max_size=6))
    shuffled = data.draw(st.permutations(with_dups))
    assert functools.reduce(merge, shuffled) == expected
    # and any tree shape: merge pairwise results
    half = len(shuffled) // 2
    if half:
        left = functools.reduce(merge, shuffled[:half])
        right = functools.reduce(merge, shuffled[half:])
        assert merge(right, left) == expected


def test_merge_fold_every_permutation_small() -> None:
    items = [
        rec(hlc=5, node=A, sealed=b"a", clock=((A, 1),)),
        rec(hlc=5, node=B, sealed=b"b", clock=((B, 1),)),
        rec(hlc=5, node=B, sealed=None, clock=((B, 1), (C, 1))),
        rec(hlc=4, node=C, sealed=b"c", clock=((A, 2), (C, 3))),
    ]
    everything = functools.reduce(merge, items)
    assert everything.clock == ((A, 2), (B, 1), (C, 3))
    assert everything.sealed is None
    for p in itertools.permutations(items * 2, 6):
        if set(p) == set(items):
            assert functools.reduce(merge, p) == everything


def test_merge_commutative_when_expires_at_is_minus_one() -> None:
    # Regression: order_key() once mapped expires_at_ms=None to -1, so None and -1 tied on
    # the whole order key and merge() returned whichever record came first.
    no_ttl = rec(hlc=10, node=A, sealed=b"v", expires_at_ms=None)
    minus_one = rec(hlc=10, node=A, sealed=b"v", expires_at_ms=-1)
    assert merge(no_ttl, minus_one) == merge(minus_one, no_ttl)


def test_merge_commutative_with_a_malformed_zero_clock_counter() -> None:
    # clock_join keeps a (node, 0) entry from its first argument but drops it from the second
    # (``counter > counters.get(node, 0)``), so a replicated record whose clock carries a zero
    # (or negative) counter makes merge(a, b) != merge(b, a): replicas end with different
    # stored clocks (equal under clock_compare, unequal as records, so KVStore.merge keeps
    # reporting a change and digests differ). Either clock_join drops counters <= 0, or the
    # replication decoder must refuse them (Clock's contract says counters > 0).
    malformed = rec(hlc=10, node=A, clock=((A, 1), (B, 0)))
    other = rec(hlc=5, node=A, clock=((A, 1),))
    assert merge(malformed, other) == merge(other, malformed)
