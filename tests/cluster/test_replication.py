"""The replication core (novakms.cluster.replication): wire form, batching, digests, snapshots."""

from __future__ import annotations

import functools
import importlib
import inspect
import itertools
import os
import subprocess
import sys
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from novakms.cluster.replication import (
    ENVELOPE_BYTES,
    Outbox,
    TombstoneAcks,
    app_digests,
    bucket_digests,
    bucket_of,
    check_decryptable,
    differing_apps,
    differing_buckets,
    keys_in_buckets,
    plan_pull,
    record_from_wire,
    record_hash,
    record_to_wire,
    snapshot_after,
    snapshot_chunk,
    snapshot_chunks,
    tombstone_id,
    wire_size,
)
from novakms.config import Limits
from novakms.crypto.aead import data_key, seal_value
from novakms.errors import InvalidRecord
from novakms.store.kv import KVStore
from novakms.store.records import HLC_LOGICAL_BITS, Clock, Record, clock_join
from novakms.wire import cbor

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
A = "0x" + "aa" * 20
B = "0x" + "bb" * 20
C = "0x" + "cc" * 20
NOW = 1_700_000_000_000
SKEW = 5_000
LIMITS = Limits()


@functools.cache
def app_key(app_id: int) -> bytes:
    return data_key(master_secret=SECRET, app_id=app_id)


@functools.cache
def other_app_key(app_id: int) -> bytes:
    return data_key(master_secret=OTHER_SECRET, app_id=app_id)


_nonces = itertools.count(1)


def seal(app_id: int, key: str, value: bytes = b"v", *, secret_key: bytes | None = None) -> bytes:
    return seal_value(
        key=secret_key or app_key(app_id),
        app_id=app_id,
        name=key,
        value=value,
        nonce=next(_nonces).to_bytes(12, "big"),
    )


def rec(
    *,
    app_id: int = 1,
    key: str = "k",
    sealed: bytes | None = None,
    tombstone: bool = False,
    clock: Clock = ((A, 1),),
    hlc: int = NOW << HLC_LOGICAL_BITS,
    node: str = A,
    expires_at_ms: int | None = None,
) -> Record:
    if sealed is None and not tombstone:
        sealed = seal(app_id, key)
    return Record(
        app_id=app_id,
        key=key,
        sealed=sealed,
        clock=clock,
        hlc=hlc,
        node=node,
        expires_at_ms=expires_at_ms,
    )


def from_wire(item: object, *, limits: Limits = LIMITS, now_ms: int = NOW) -> Record:
    return record_from_wire(item, limits=limits, now_ms=now_ms, max_skew_ms=SKEW)


def through_cbor(record: Record) -> object:
    return cbor.decode(cbor.encode(record_to_wire(record)))


# --- strategies --------------------------------------------------------------------------------

wallets = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
key_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    min_size=1,
    max_size=24,
)
uint64 = st.integers(0, (1 << 64) - 1)


@st.composite
def records(draw: st.DrawFn, *, app_id: int | None = None, key: str | None = None) -> Record:
    clock_map = draw(st.dictionaries(wallets, st.integers(1, (1 << 64) - 1), min_size=1))
    clock = tuple(sorted(clock_map.items()))
    node = draw(st.sampled_from(sorted(clock_map)))
    physical = draw(st.integers(0, NOW + SKEW))
    hlc = physical << HLC_LOGICAL_BITS | draw(st.integers(0, (1 << HLC_LOGICAL_BITS) - 1))
    sealed = draw(st.one_of(st.none(), st.binary(min_size=28, max_size=120)))
    return Record(
        app_id=draw(st.integers(1, (1 << 64) - 1)) if app_id is None else app_id,
        key=draw(key_text) if key is None else key,
        sealed=sealed,
        clock=clock,
        hlc=hlc,
        node=node,
        expires_at_ms=draw(st.one_of(st.none(), uint64)),
    )


def record_sets(*, apps: tuple[int, ...] = (1, 2, 3), max_size: int = 20) -> Any:
    """Lists of records with unique (app, key), as one store holds them."""
    return st.lists(
        st.tuples(st.sampled_from(apps), key_text).flatmap(
            lambda ak: records(app_id=ak[0], key=ak[1])
        ),
        max_size=max_size,
        unique_by=lambda r: (r.app_id, r.key),
    )


# --- purity ------------------------------------------------------------------------------------


def test_module_is_pure() -> None:
    code = (
        "import sys, importlib; importlib.import_module('novakms.cluster.replication');"
        "print(','.join(m for m in ('trio', 'socket', 'random', 'asyncio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    source = inspect.getsource(importlib.import_module("novakms.cluster.replication"))
    for needle in ("import time", "from time", "import random", "os.urandom", "import trio"):
        assert needle not in source


# --- wire form ---------------------------------------------------------------------------------


@given(records())
def test_wire_round_trip(record: Record) -> None:
    wire = record_to_wire(record)
    assert set(wire) == {"a", "k", "v", "c", "h", "n", "x"}
    encoded = cbor.encode(wire)
    assert wire_size(record) == len(encoded)
    assert from_wire(cbor.decode(encoded)) == record
    assert from_wire(wire) == record


def test_wire_form_is_short_keyed() -> None:
    r = rec(sealed=b"s" * 28, clock=((A, 2), (B, 1)), node=B, hlc=7, expires_at_ms=9)
    assert record_to_wire(r) == {
        "a": 1,
        "k": "k",
        "v": b"s" * 28,
        "c": [[A, 2], [B, 1]],
        "h": 7,
        "n": B,
        "x": 9,
    }
    assert record_to_wire(replace(r, sealed=None, expires_at_ms=None))["v"] is None


def good_wire(**changes: object) -> dict[str, object]:
    wire = record_to_wire(rec(sealed=b"s" * 40, clock=((A, 1), (B, 2)), node=B))
    wire.update(changes)
    return wire


def without(field: str) -> dict[str, object]:
    wire = good_wire()
    del wire[field]
    return wire


FUTURE = (NOW + SKEW + 1) << HLC_LOGICAL_BITS
SMALL = Limits(max_value_bytes=100, max_key_bytes=8)

INVALID: list[tuple[str, object, Limits]] = [
    ("not_a_map", [1, 2], LIMITS),
    ("not_a_map", None, LIMITS),
    ("not_a_map", b"\xa0", LIMITS),
    ("bad_fields", good_wire(z=1), LIMITS),
    ("bad_fields", without("x"), LIMITS),
    ("bad_fields", without("v"), LIMITS),
    ("bad_fields", {**good_wire(), "1": 2}, LIMITS),
    ("bad_app", good_wire(a=0), LIMITS),
    ("bad_app", good_wire(a=-1), LIMITS),
    ("bad_app", good_wire(a=True), LIMITS),
    ("bad_app", good_wire(a="1"), LIMITS),
    ("bad_app", good_wire(a=1 << 64), LIMITS),
    ("bad_key", good_wire(k=""), LIMITS),
    ("bad_key", good_wire(k="a\x00b"), LIMITS),
    ("bad_key", good_wire(k=b"k"), LIMITS),
    ("bad_key", good_wire(k=5), LIMITS),
    ("bad_key", good_wire(k="\ud800"), LIMITS),
    ("key_too_large", good_wire(k="a" * 9), SMALL),
    ("key_too_large", good_wire(k="é" * 5), SMALL),  # 5 characters, 10 bytes
    ("key_too_large", good_wire(k="a" * 513), LIMITS),
    ("bad_value", good_wire(v="text"), LIMITS),
    ("bad_value", good_wire(v=bytearray(40)), LIMITS),
    ("bad_value", good_wire(v=b"x" * 27), LIMITS),
    ("bad_value", good_wire(v=False), LIMITS),
    ("value_too_large", good_wire(v=b"x" * 129), SMALL),
    ("bad_clock", good_wire(c=[]), LIMITS),
    # 65 entries, refused before any entry is looked at (even a garbage one)
    ("clock_too_large", good_wire(c=[[f"0x{i:040x}", 1] for i in range(65)]), LIMITS),
    ("clock_too_large", good_wire(c=[None] * 20_000), LIMITS),
    ("clock_too_large", good_wire(c=[[A, 1], [B, 2]]), replace(LIMITS, max_clock_entries=1)),
    ("bad_clock", good_wire(c="x"), LIMITS),
    ("bad_clock", good_wire(c=None), LIMITS),
    ("bad_clock", good_wire(c=[(B, 1)]), LIMITS),  # tuples never come from CBOR
    ("bad_clock", good_wire(c=[[B, 1, 2]]), LIMITS),
    ("bad_clock", good_wire(c=[[B]]), LIMITS),
    ("bad_clock", good_wire(c=[[B, 0]]), LIMITS),
    ("bad_clock", good_wire(c=[[B, -1]]), LIMITS),
    ("bad_clock", good_wire(c=[[B, True]]), LIMITS),
    ("bad_clock", good_wire(c=[[B, 1 << 64]]), LIMITS),
    ("bad_clock", good_wire(c=[[B, 1], [A, 1]]), LIMITS),  # unsorted
    ("bad_clock", good_wire(c=[[B, 1], [B, 2]]), LIMITS),  # duplicate
    ("bad_clock", good_wire(c=[[B.upper().replace("0X", "0x"), 1]]), LIMITS),
    ("bad_clock", good_wire(c=[["0x" + "bb" * 19, 1]]), LIMITS),
    ("bad_clock", good_wire(c=[["bb" * 21, 1]]), LIMITS),
    ("bad_clock", good_wire(c=[[7, 1]]), LIMITS),
    ("bad_node", good_wire(n=B.upper().replace("0X", "0x")), LIMITS),
    ("bad_node", good_wire(n="0x" + "bb" * 21), LIMITS),
    ("bad_node", good_wire(n=None), LIMITS),
    ("bad_node", good_wire(n=" " + B), LIMITS),
    ("writer_not_in_clock", good_wire(n=C), LIMITS),
    ("writer_not_in_clock", good_wire(c=[[A, 3]]), LIMITS),
    ("bad_hlc", good_wire(h=-1), LIMITS),
    ("bad_hlc", good_wire(h="1"), LIMITS),
    ("bad_hlc", good_wire(h=True), LIMITS),
    ("bad_hlc", good_wire(h=None), LIMITS),
    ("bad_hlc", good_wire(h=1 << 64), LIMITS),
    ("future_hlc", good_wire(h=FUTURE), LIMITS),
    ("future_hlc", good_wire(h=(1 << 64) - 1), LIMITS),
    ("bad_expiry", good_wire(x=-1), LIMITS),
    ("bad_expiry", good_wire(x="1"), LIMITS),
    ("bad_expiry", good_wire(x=True), LIMITS),
    ("bad_expiry", good_wire(x=1 << 64), LIMITS),
]


@pytest.mark.parametrize(
    ("reason", "item", "limits"), INVALID, ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(INVALID)]
)
def test_invalid_records(reason: str, item: object, limits: Limits) -> None:
    with pytest.raises(InvalidRecord) as info:
        from_wire(item, limits=limits)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"{reason}: ")


def test_boundaries_are_accepted() -> None:
    # exactly at the limits
    assert from_wire(good_wire(k="a" * 8), limits=SMALL).key == "a" * 8
    assert from_wire(good_wire(k="é" * 4), limits=SMALL).key == "é" * 4
    assert from_wire(good_wire(v=b"x" * 128), limits=SMALL).sealed == b"x" * 128
    assert from_wire(good_wire(v=b"x" * 28)).sealed == b"x" * 28
    assert from_wire(good_wire(k="a" * 512)).key == "a" * 512
    assert from_wire(good_wire(v=b"x" * (1_048_576 + 28))).sealed is not None
    # a tombstone, the largest app id, counter, expiry
    assert from_wire(good_wire(v=None)).tombstone
    assert from_wire(good_wire(a=(1 << 64) - 1)).app_id == (1 << 64) - 1
    assert from_wire(good_wire(c=[[B, (1 << 64) - 1]])).clock == ((B, (1 << 64) - 1),)
    assert from_wire(good_wire(x=0)).expires_at_ms == 0
    assert from_wire(good_wire(h=0)).hlc == 0


def test_skew_bound_is_inclusive() -> None:
    at_bound = ((NOW + SKEW) << HLC_LOGICAL_BITS) | ((1 << HLC_LOGICAL_BITS) - 1)
    assert from_wire(good_wire(h=at_bound)).hlc == at_bound
    with pytest.raises(InvalidRecord) as info:
        from_wire(good_wire(h=at_bound + 1))
    assert info.value.reason == "future_hlc"
    # the bound moves with the local clock, and records from the past are always fine
    assert from_wire(good_wire(h=at_bound + 1), now_ms=NOW + 1).hlc == at_bound + 1
    assert from_wire(good_wire(h=1 << HLC_LOGICAL_BITS)).hlc == 1 << HLC_LOGICAL_BITS
    with pytest.raises(InvalidRecord):
        record_from_wire(good_wire(), limits=LIMITS, now_ms=NOW - SKEW - 1, max_skew_ms=SKEW)
    assert record_from_wire(good_wire(), limits=LIMITS, now_ms=NOW, max_skew_ms=0)


# --- check_decryptable -------------------------------------------------------------------------


def test_check_decryptable_accepts_genuine_values_and_tombstones() -> None:
    check_decryptable(rec(app_id=2, key="name"), app_key)
    check_decryptable(rec(tombstone=True), app_key)
    check_decryptable(rec(tombstone=True), other_app_key)


@pytest.mark.parametrize(
    "sealed",
    [
        pytest.param(seal(1, "other"), id="another-key"),
        pytest.param(seal(2, "k"), id="another-app"),
        pytest.param(seal(1, "k", secret_key=other_app_key(1)), id="another-secret"),
        pytest.param(seal(1, "k")[:-1] + b"\x00", id="tampered"),
        pytest.param(b"\x00" * 10, id="truncated"),
    ],
)
def test_check_decryptable_rejects(sealed: bytes) -> None:
    with pytest.raises(InvalidRecord) as info:
        check_decryptable(rec(app_id=1, key="k", sealed=sealed), app_key)
    assert info.value.reason == "undecryptable"


# --- Outbox ------------------------------------------------------------------------------------


def test_outbox_coalesces_per_key() -> None:
    box = Outbox()
    first = rec(key="k", clock=((A, 1),), hlc=10)
    other = rec(key="other", clock=((A, 1),), hlc=11)
    second = rec(key="k", clock=((A, 2),), hlc=12)
    remote = rec(key="k", clock=((B, 5),), hlc=5, node=B)
    box.add(first)
    box.add(other)
    box.add(second)
    box.add(first)  # a late re-queue of an older version changes nothing
    box.add(remote)  # an older concurrent version: content stays, clocks join
    assert box.pending() == 2
    batch = box.drain(1 << 20)
    assert box.pending() == 0
    # the key keeps the place of its first change
    assert [r.key for r in batch] == ["k", "other"]
    assert batch[0] == replace(second, clock=clock_join(second.clock, remote.clock))
    assert batch[1] == other
    assert box.drain(1 << 20) == []


def test_outbox_is_a_store_listener() -> None:
    box = Outbox()
    counter = itertools.count(1)
    store = KVStore(
        node=A,
        limits=LIMITS,
        data_key=app_key,
        random_bytes=lambda n: next(counter).to_bytes(n, "big"),
        listener=box.add,
    )
    for i in range(5):
        store.put(1, "k", bytes([i]), NOW + i)
    store.put(1, "j", b"j", NOW + 5)
    store.delete(1, "j", NOW + 6)
    assert box.pending() == 2
    batch = box.drain(1 << 20)
    assert batch == [store.record(1, "k"), store.record(1, "j")]
    assert batch[1] is not None and batch[1].tombstone


@given(
    sizes=st.lists(st.integers(28, 700), max_size=40),
    budget=st.integers(ENVELOPE_BYTES + 1, ENVELOPE_BYTES + 3000),
)
def test_outbox_respects_the_byte_budget(sizes: list[int], budget: int) -> None:
    box = Outbox()
    added = [rec(key=f"k{i}", sealed=b"s" * size) for i, size in enumerate(sizes)]
    for r in added:
        box.add(r)
    drained: list[Record] = []
    while box.pending():
        before = box.pending()
        batch = box.drain(budget)
        assert batch, "drain makes progress"
        assert box.pending() == before - len(batch)
        encoded = len(cbor.encode([record_to_wire(r) for r in batch]))
        if len(batch) > 1:
            assert encoded <= budget - ENVELOPE_BYTES
        drained.extend(batch)
    assert drained == added


def test_outbox_sends_an_oversized_record_alone() -> None:
    box = Outbox()
    small, big, tail = rec(key="a"), rec(key="b", sealed=b"x" * 5000), rec(key="c")
    for r in (small, big, tail):
        box.add(r)
    assert box.drain(ENVELOPE_BYTES + 1000) == [small]
    assert box.drain(ENVELOPE_BYTES + 1000) == [big]
    assert box.drain(ENVELOPE_BYTES + 1000) == [tail]


def test_outbox_budget_must_exceed_the_envelope() -> None:
    with pytest.raises(ValueError):
        Outbox().drain(ENVELOPE_BYTES)


# --- digests -----------------------------------------------------------------------------------


@given(record_sets(), st.randoms(use_true_random=False))
def test_digests_are_order_independent(rs: list[Record], rnd: Any) -> None:
    shuffled = list(rs)
    rnd.shuffle(shuffled)
    assert app_digests(rs) == app_digests(shuffled)
    assert app_digests(iter(rs)) == app_digests(rs)
    for app in (1, 2, 3):
        assert bucket_digests(rs, app, 8) == bucket_digests(shuffled, app, 8)
        assert keys_in_buckets(rs, app, range(8), 8) == keys_in_buckets(shuffled, app, range(8), 8)
    assert set(app_digests(rs)) == {r.app_id for r in rs}


def _mutations(r: Record, other_sealed: bytes) -> dict[str, Record]:
    other_node = A if r.node != A else B
    return {
        "key": replace(r, key=r.key + "x"),
        "clock": replace(r, clock=clock_join(r.clock, ((C, 1 << 40),))),
        "clock-counter": replace(r, clock=tuple((n, c ^ 1 or 2) for n, c in r.clock)),
        "hlc": replace(r, hlc=r.hlc ^ 1),
        "node": replace(r, node=other_node),
        "tombstone": replace(r, sealed=None)
        if r.sealed is not None
        else replace(r, sealed=b"s" * 60),
        "expires": replace(r, expires_at_ms=None if r.expires_at_ms is not None else 1),
        "expires-value": replace(r, expires_at_ms=(r.expires_at_ms or 0) ^ 1),
        "value": replace(r, sealed=other_sealed),
    }


@given(record_sets(), st.data())
def test_digests_change_when_any_field_changes(rs: list[Record], data: st.DataObject) -> None:
    assume(rs)
    index = data.draw(st.integers(0, len(rs) - 1))
    target = rs[index]
    other_sealed = seal(target.app_id, target.key, b"different")
    field = data.draw(st.sampled_from(sorted(_mutations(target, other_sealed))))
    changed = _mutations(target, other_sealed)[field]
    assume(changed != target)
    assume(all((r.app_id, r.key) != (changed.app_id, changed.key) for r in rs if r is not target))
    mutated = [changed if r is target else r for r in rs]
    before, after = app_digests(rs), app_digests(mutated)
    app = target.app_id
    assert before[app] != after[app]
    assert {a: d for a, d in before.items() if a != app} == {
        a: d for a, d in after.items() if a != app
    }
    assert record_hash(changed) != record_hash(target)
    assert bucket_digests(rs, app, 4) != bucket_digests(mutated, app, 4)
    assert app_digests([]) == {}


def test_record_hash_covers_the_app() -> None:
    assert record_hash(rec(app_id=1, sealed=b"s" * 40)) != record_hash(
        rec(app_id=2, sealed=b"s" * 40)
    )


def test_removing_a_record_changes_the_digest() -> None:
    rs = [rec(key="a"), rec(key="b")]
    assert app_digests(rs)[1] != app_digests(rs[:1])[1]
    # with a single bucket, the bucket digest is the app digest
    assert bucket_digests(rs, 1, 1) == [app_digests(rs)[1]]
    # empty buckets all share the digest of the empty set
    assert len(set(bucket_digests([], 1, 4))) == 1


def test_bucket_of_is_stable_and_in_range() -> None:
    assert bucket_of("k", 64) == bucket_of("k", 64)
    assert all(0 <= bucket_of(f"k{i}", 7) < 7 for i in range(100))
    assert len({bucket_of(f"k{i}", 8) for i in range(200)}) == 8
    # pinned, so a change (which would break mixed-version clusters) is noticed
    code = "from novakms.cluster.replication import bucket_of; print(bucket_of('hello', 64))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == bucket_of("hello", 64)
    with pytest.raises(ValueError):
        bucket_digests([], 1, 0)


def test_differing_helpers() -> None:
    assert differing_apps({1: b"x", 2: b"y"}, {2: b"z", 3: b"w"}) == [1, 2, 3]
    assert differing_apps({1: b"x"}, {1: b"x"}) == []
    assert differing_buckets([b"a", b"b", b"c"], [b"a", b"x", b"c"]) == [1]
    with pytest.raises(ValueError):
        differing_buckets([b"a"], [b"a", b"b"])
    assert plan_pull({"a": b"1", "b": b"2"}, {"b": b"3", "c": b"4", "a": b"1"}) == ["b", "c"]
    assert plan_pull({"a": b"1"}, {}) == []


def _diff_keys(local: list[Record], remote: list[Record]) -> set[tuple[int, str]]:
    mine = {(r.app_id, r.key): r for r in local}
    return {(r.app_id, r.key) for r in remote if mine.get((r.app_id, r.key)) != r}


@given(
    base=record_sets(max_size=30),
    local_extra=record_sets(max_size=8),
    remote_extra=record_sets(max_size=8),
    buckets=st.sampled_from([1, 2, 8, 64]),
)
def test_two_level_planning_finds_exactly_the_differing_keys(
    base: list[Record], local_extra: list[Record], remote_extra: list[Record], buckets: int
) -> None:
    def overlay(rs: list[Record], extra: list[Record]) -> list[Record]:
        merged = {(r.app_id, r.key): r for r in rs}
        merged.update({(r.app_id, r.key): r for r in extra})
        return list(merged.values())

    local, remote = overlay(base, local_extra), overlay(base, remote_extra)
    pulls: set[tuple[int, str]] = set()
    for app in differing_apps(app_digests(local), app_digests(remote)):
        ids = differing_buckets(
            bucket_digests(local, app, buckets), bucket_digests(remote, app, buckets)
        )
        assert ids, "different app digests mean some bucket differs"
        keys = plan_pull(
            keys_in_buckets(local, app, ids, buckets), keys_in_buckets(remote, app, ids, buckets)
        )
        pulls.update((app, k) for k in keys)
    assert pulls == _diff_keys(local, remote)
    if not pulls and not _diff_keys(remote, local):
        assert app_digests(local) == app_digests(remote)


# --- snapshots ---------------------------------------------------------------------------------


def _sorted(rs: list[Record]) -> list[Record]:
    return sorted(rs, key=lambda r: (r.app_id, r.key))


@given(rs=record_sets(max_size=30), extra=st.integers(1, 2500))
def test_snapshot_chunks_fit_and_resume_exactly_once(rs: list[Record], extra: int) -> None:
    max_bytes = ENVELOPE_BYTES + extra
    chunks = list(snapshot_chunks(rs, max_bytes=max_bytes))
    assert all(chunks)
    for chunk in chunks:
        if len(chunk) > 1:
            assert len(cbor.encode(chunk)) <= max_bytes - ENVELOPE_BYTES
    flat = [from_wire(item) for chunk in chunks for item in chunk]
    assert flat == _sorted(rs)

    if not rs:
        assert chunks == []
        assert snapshot_after(rs, None, max_bytes=max_bytes) == ([], None)
        return
    # resuming after any chunk boundary yields every remaining record exactly once
    boundaries: list[tuple[int, str] | None] = [None]
    for chunk in chunks[:-1]:
        boundaries.append((chunk[-1]["a"], chunk[-1]["k"]))
    for n, start in enumerate(boundaries):
        after = start
        got: list[dict[str, Any]] = []
        steps = 0
        while True:
            chunk, after = snapshot_after(rs, after, max_bytes=max_bytes)
            assert chunk == chunks[n + steps]
            got.extend(chunk)
            steps += 1
            if after is None:
                break
            assert after == (chunk[-1]["a"], chunk[-1]["k"])
        assert got == [item for c in chunks[n:] for item in c]


@given(rs=record_sets(max_size=20), pick=st.integers(0, 19), extra=st.integers(1, 2000))
def test_snapshot_resumes_after_any_key(rs: list[Record], pick: int, extra: int) -> None:
    assume(rs)
    ordered = _sorted(rs)
    start = ordered[pick % len(ordered)]
    after: tuple[int, str] | None = (start.app_id, start.key)
    got: list[Record] = []
    while after is not None:
        chunk, after = snapshot_after(rs, after, max_bytes=ENVELOPE_BYTES + extra)
        got.extend(from_wire(item) for item in chunk)
    assert got == ordered[ordered.index(start) + 1 :]


def test_snapshot_oversized_record_is_a_chunk_of_its_own() -> None:
    rs = [rec(key="a"), rec(key="b", sealed=b"x" * 3000), rec(key="c")]
    chunks = list(snapshot_chunks(rs, max_bytes=ENVELOPE_BYTES + 500))
    assert [[item["k"] for item in c] for c in chunks] == [["a"], ["b"], ["c"]]
    chunk, after = snapshot_after(rs, (1, "a"), max_bytes=ENVELOPE_BYTES + 500)
    assert [item["k"] for item in chunk] == ["b"]
    assert after == (1, "b")
    with pytest.raises(ValueError):
        list(snapshot_chunks(rs, max_bytes=ENVELOPE_BYTES))
    with pytest.raises(ValueError):
        snapshot_after(rs, None, max_bytes=100)


def test_snapshot_of_a_store_includes_tombstones() -> None:
    counter = itertools.count(1)
    store = KVStore(
        node=A,
        limits=LIMITS,
        data_key=app_key,
        random_bytes=lambda n: next(counter).to_bytes(n, "big"),
    )
    for i in range(30):
        store.put(1 + i % 2, f"key-{i:02}", bytes(100), NOW)
    store.delete(1, "key-04", NOW + 1)
    chunks = list(snapshot_chunks(store.records(), max_bytes=ENVELOPE_BYTES + 600))
    assert len(chunks) > 3
    received = [from_wire(item) for c in chunks for item in c]
    assert set(received) == set(store.records())
    assert any(r.tombstone for r in received)


# --- tombstone GC bookkeeping ------------------------------------------------------------------


def test_tombstone_acks() -> None:
    acks = TombstoneAcks()
    grave = rec(key="gone", tombstone=True)
    newer = replace(grave, hlc=grave.hlc + 1, clock=((A, 2),))
    live = rec(key="here")
    tid = tombstone_id(grave)
    assert tid == (1, "gone", grave.hlc, A)

    assert acks.collectable([grave], [B, C]) == set()
    acks.ack(B, [tid])
    assert acks.acked_by(tid) == {B}
    assert acks.collectable([grave], [B, C]) == set()
    acks.ack(C, [tid, tid])
    assert acks.collectable([grave, live], [B, C]) == {tid}
    assert acks.collectable([grave], [B]) == {tid}  # C left the cluster: still fine
    # a new peer has not acknowledged it, so it is kept again
    assert acks.collectable([grave], [B, C, A]) == set()
    # nobody to ask is not "everybody has it"
    assert acks.collectable([grave], []) == set()
    # a newer tombstone of the same key needs its own acknowledgements
    assert acks.collectable([newer], [B, C]) == set()
    # live records are never collectable, even if acknowledged
    acks.ack(B, [tombstone_id(live)])
    assert acks.collectable([live], [B]) == set()

    assert len(acks) == 2
    acks.retain([newer, grave])
    assert len(acks) == 1
    acks.forget([tid])
    assert len(acks) == 0
    assert acks.acked_by(tid) == frozenset()


def test_tombstone_acks_by_app_cover_only_tracked_tombstones_of_those_apps() -> None:
    acks = TombstoneAcks()
    one = rec(app_id=1, key="gone", tombstone=True)
    two = rec(app_id=2, key="gone", tombstone=True)
    acks.ack(B, [tombstone_id(one), tombstone_id(two)])
    acks.ack_apps(C, [1, 3])
    assert acks.acked_by(tombstone_id(one)) == {B, C}
    assert acks.acked_by(tombstone_id(two)) == {B}
    assert acks.collectable([one, two], [B, C]) == {tombstone_id(one)}
    untracked = rec(app_id=1, key="other", tombstone=True)
    assert acks.acked_by(tombstone_id(untracked)) == frozenset()  # not tracked: not acked


def test_outbox_remembers_the_oldest_queue_time_per_key() -> None:
    box = Outbox()
    assert box.oldest_ms() is None
    box.add(rec(key="k", hlc=10), 1000)
    box.add(rec(key="other", hlc=11), 1500)
    box.add(rec(key="k", hlc=12, clock=((A, 2),)), 2000)  # rewritten: still waiting since 1000
    assert box.oldest_ms() == 1000
    assert box.has(1, "k") and box.has(1, "other") and not box.has(2, "k")
    first = box.drain(ENVELOPE_BYTES + 1)  # one record per batch
    assert [r.key for r in first] == ["k"]
    assert box.oldest_ms() == 1500 and not box.has(1, "k")
    box.add(first[0], 900)  # a failed push re-queues with its original age
    assert box.oldest_ms() == 900
    box.drain(1 << 20)
    assert box.oldest_ms() is None and box.pending() == 0


@given(rs=record_sets(max_size=30), extra=st.integers(1, 2500), pick=st.integers(0, 29))
def test_store_ordered_snapshot_chunks_match_snapshot_after(
    rs: list[Record], extra: int, pick: int
) -> None:
    store = KVStore(node=A, limits=LIMITS, data_key=app_key, random_bytes=os.urandom)
    for record in rs:
        store.merge(record)
    stored = store.records()
    ordered = _sorted(stored)
    after = (
        None
        if not ordered
        else (ordered[pick % len(ordered)].app_id, ordered[pick % len(ordered)].key)
    )
    for start in (None, after):
        assert list(store.records_from(start)) == [
            r for r in ordered if start is None or (r.app_id, r.key) > start
        ]
        assert snapshot_chunk(
            store.records_from(start), max_bytes=ENVELOPE_BYTES + extra
        ) == snapshot_after(stored, start, max_bytes=ENVELOPE_BYTES + extra)


def test_a_clock_of_exactly_max_clock_entries_is_accepted() -> None:
    wallets = sorted(f"0x{i:040x}" for i in range(LIMITS.max_clock_entries))
    item = good_wire(c=[[w, 1] for w in wallets], n=wallets[0])
    record = record_from_wire(item, limits=LIMITS, now_ms=NOW, max_skew_ms=SKEW)
    assert len(record.clock) == LIMITS.max_clock_entries
