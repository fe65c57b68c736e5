"""The per-app KV store of one node (novakms.store.kv), with an injected clock and RNG."""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from novakms.config import Limits
from novakms.crypto.aead import NONCE_SIZE, SEAL_OVERHEAD, data_key, open_value, seal_value
from novakms.errors import BadRequest, Conflict, InternalError, NotFound, QuotaExceeded, TooLarge
from novakms.store.kv import CLOCK_ENTRY_BYTES, KVStore, ListPage
from novakms.store.records import ABSENT, HLC_LOGICAL_BITS, Record

SECRET = bytes(range(32))
NODE_A = "0x" + "aa" * 20
NODE_B = "0x" + "bb" * 20
T0 = 1_700_000_000_000
OVERHEAD = Limits().record_overhead_bytes


@functools.cache
def app_key(app_id: int) -> bytes:
    return data_key(master_secret=SECRET, app_id=app_id)


def counter_rng() -> Callable[[int], bytes]:
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


def make(node: str = NODE_A, **limits: Any) -> tuple[KVStore, list[Record]]:
    log: list[Record] = []
    store = KVStore(
        node=node,
        limits=Limits(**limits),
        data_key=app_key,
        random_bytes=counter_rng(),
        listener=log.append,
    )
    return store, log


def cost(key: str, value: bytes | None, overhead: int = OVERHEAD, clock_entries: int = 1) -> int:
    clock = CLOCK_ENTRY_BYTES * (clock_entries - 1)  # the overhead covers the first entry
    return overhead + len(key.encode()) + (0 if value is None else len(value)) + clock


def snapshot(store: KVStore) -> tuple[object, ...]:
    """Everything observable about a store, to check a failed operation changed nothing."""
    records = sorted(store.records(), key=lambda r: (r.app_id, r.key))
    usages = {r.app_id: store.usage(r.app_id) for r in records}
    return (records, usages, store.stats(), store.hlc.last)


def opened(record: Record) -> bytes | None:
    if record.sealed is None:
        return None
    return open_value(
        key=app_key(record.app_id), app_id=record.app_id, name=record.key, sealed=record.sealed
    )


def all_keys(store: KVStore, app_id: int, now: int, prefix: str = "", limit: int = 3) -> list[str]:
    keys: list[str] = []
    after = None
    for _ in range(10_000):
        page = store.list_keys(app_id, now, prefix=prefix, limit=limit, after=after)
        assert len(page.keys) <= limit
        keys += page.keys
        if page.next_after is None:
            return keys
        assert page.keys
        assert page.next_after == page.keys[-1]
        after = page.next_after
    raise AssertionError("paging did not end")


# --- put / get / delete -------------------------------------------------------------------------


def test_put_get_round_trip() -> None:
    store, log = make()
    written = store.put(1, "greeting", b"hello", T0)
    assert written.app_id == 1
    assert written.key == "greeting"
    assert written.node == NODE_A
    assert written.clock == ((NODE_A, 1),)
    assert written.expires_at_ms is None
    assert written.updated_at_ms == T0
    assert written.sealed is not None
    assert b"hello" not in written.sealed
    assert len(written.sealed) == len(b"hello") + SEAL_OVERHEAD
    record, value = store.get(1, "greeting", T0 + 1)
    assert value == b"hello"
    assert record == written
    assert record.version == written.version
    assert store.record(1, "greeting") == written
    assert log == [written]


def test_empty_and_binary_values() -> None:
    store, _ = make()
    store.put(1, "empty", b"", T0)
    store.put(1, "bin", bytes(range(256)), T0)
    assert store.get(1, "empty", T0)[1] == b""
    assert store.get(1, "bin", T0)[1] == bytes(range(256))


def test_get_returns_write_time_not_read_time() -> None:
    store, _ = make()
    store.put(1, "k", b"v1", T0)
    record, _ = store.get(1, "k", T0 + 5_000)
    assert record.updated_at_ms == T0
    store.put(1, "k", b"v2", T0 + 10_000)
    record, value = store.get(1, "k", T0 + 20_000)
    assert (record.updated_at_ms, value) == (T0 + 10_000, b"v2")


def test_absent_is_not_found() -> None:
    store, _ = make()
    with pytest.raises(NotFound):
        store.get(1, "nope", T0)
    store.put(1, "yes", b"v", T0)
    with pytest.raises(NotFound):
        store.get(1, "nope", T0)
    with pytest.raises(NotFound):
        store.get(1, "yes ", T0)


def test_overwrite_advances_clock_hlc_and_version() -> None:
    store, _ = make()
    first = store.put(1, "k", b"v1", T0)
    second = store.put(1, "k", b"v2", T0)  # same millisecond
    third = store.put(1, "k", b"v3", T0 + 1)
    assert [r.clock for r in (first, second, third)] == [
        ((NODE_A, 1),),
        ((NODE_A, 2),),
        ((NODE_A, 3),),
    ]
    assert first.hlc < second.hlc < third.hlc
    assert len({first.version, second.version, third.version}) == 3
    assert store.get(1, "k", T0 + 1)[1] == b"v3"


def test_nonces_come_from_the_injected_rng() -> None:
    drawn: list[bytes] = []
    rng = counter_rng()

    def spy(n: int) -> bytes:
        drawn.append(rng(n))
        return drawn[-1]

    store = KVStore(node=NODE_A, limits=Limits(), data_key=app_key, random_bytes=spy)
    a = store.put(1, "k", b"same", T0)
    b = store.put(1, "k", b"same", T0)
    assert len(drawn) == 2
    assert all(len(n) == NONCE_SIZE for n in drawn)
    assert a.sealed is not None and b.sealed is not None
    assert (a.sealed[:NONCE_SIZE], b.sealed[:NONCE_SIZE]) == (drawn[0], drawn[1])
    assert a.sealed != b.sealed


def test_works_with_os_urandom_and_no_listener() -> None:
    store = KVStore(node=NODE_A, limits=Limits(), data_key=app_key, random_bytes=os.urandom)
    store.put(3, "k", b"v", T0)
    assert store.get(3, "k", T0)[1] == b"v"
    store.delete(3, "k", T0)
    with pytest.raises(NotFound):
        store.get(3, "k", T0)


def test_stored_value_is_sealed_for_app_and_key() -> None:
    store, _ = make()
    record = store.put(7, "name", b"secret", T0)
    assert opened(record) == b"secret"


def test_delete_leaves_a_tombstone() -> None:
    store, log = make()
    written = store.put(1, "k", b"v", T0)
    dead = store.delete(1, "k", T0 + 5)
    assert dead.tombstone
    assert dead.node == NODE_A
    assert dead.clock == ((NODE_A, 2),)
    assert dead.hlc > written.hlc
    assert dead.updated_at_ms == T0 + 5
    assert dead.expires_at_ms is None
    assert store.record(1, "k") == dead
    assert store.record(1, "k").tombstone  # type: ignore[union-attr]
    assert log == [written, dead]
    with pytest.raises(NotFound):
        store.get(1, "k", T0 + 6)
    with pytest.raises(NotFound):
        store.delete(1, "k", T0 + 6)
    assert store.usage(1) == cost("k", None)
    assert store.stats().tombstones == 1
    assert store.stats().live == 0


def test_delete_of_absent_key_is_not_found_and_changes_nothing() -> None:
    store, log = make()
    with pytest.raises(NotFound):
        store.delete(1, "nope", T0)
    assert store.record(1, "nope") is None
    assert log == []
    store.put(1, "other", b"v", T0)
    before = snapshot(store)
    with pytest.raises(NotFound):
        store.delete(1, "nope", T0)
    assert snapshot(store) == before


def test_write_after_delete_continues_the_clock() -> None:
    store, _ = make()
    store.put(1, "k", b"v1", T0)
    dead = store.delete(1, "k", T0 + 1)
    again = store.put(1, "k", b"v2", T0 + 2)
    assert again.clock == ((NODE_A, 3),)
    assert again.hlc > dead.hlc
    assert store.get(1, "k", T0 + 2)[1] == b"v2"
    assert store.usage(1) == cost("k", b"v2")


# --- compare-and-set ----------------------------------------------------------------------------


def test_cas_put_with_current_version() -> None:
    store, _ = make()
    first = store.put(1, "k", b"v1", T0)
    second = store.put(1, "k", b"v2", T0 + 1, if_version=first.version)
    assert store.get(1, "k", T0 + 1)[1] == b"v2"
    third = store.put(1, "k", b"v3", T0 + 2, if_version=second.version)
    assert store.get(1, "k", T0 + 2)[0] == third


def test_cas_put_with_stale_version_changes_nothing() -> None:
    store, log = make()
    first = store.put(1, "k", b"v1", T0)
    second = store.put(1, "k", b"v2", T0 + 1)
    store.put(2, "k", b"other app", T0 + 1)
    before, logged = snapshot(store), list(log)
    with pytest.raises(Conflict):
        store.put(1, "k", b"v3", T0 + 2, if_version=first.version)
    with pytest.raises(Conflict):
        store.put(1, "k", b"v3", T0 + 2, if_version="not-a-version")
    # a version token of the same key in another app is not this key's version
    with pytest.raises(Conflict):
        store.put(2, "k", b"v3", T0 + 2, if_version=second.version)
    assert snapshot(store) == before
    assert log == logged
    record, value = store.get(1, "k", T0 + 2)
    assert (record.version, value) == (second.version, b"v2")
    assert store.usage(1) == cost("k", b"v2")


def test_cas_absent_on_existing_key_conflicts() -> None:
    store, log = make()
    current = store.put(1, "k", b"v1", T0)
    before = snapshot(store)
    with pytest.raises(Conflict) as info:
        store.put(1, "k", b"v2", T0 + 1, if_version=ABSENT)
    assert info.value.details.get("version") == current.version
    assert snapshot(store) == before
    assert log == [current]
    assert store.get(1, "k", T0 + 1)[1] == b"v1"


def test_cas_absent_on_absent_deleted_or_expired_key() -> None:
    store, _ = make()
    store.put(1, "new", b"v", T0, if_version=ABSENT)
    assert store.get(1, "new", T0)[1] == b"v"
    store.put(1, "del", b"v", T0)
    store.delete(1, "del", T0)
    store.put(1, "del", b"again", T0 + 1, if_version=ABSENT)
    assert store.get(1, "del", T0 + 1)[1] == b"again"
    store.put(1, "ttl", b"v", T0, ttl_ms=10)
    store.put(1, "ttl", b"later", T0 + 10, if_version=ABSENT)
    assert store.get(1, "ttl", T0 + 10)[1] == b"later"


def test_cas_version_on_absent_or_deleted_key_conflicts() -> None:
    store, _ = make()
    written = store.put(1, "k", b"v", T0)
    dead = store.delete(1, "k", T0 + 1)
    for token in (written.version, dead.version):
        with pytest.raises(Conflict):
            store.put(1, "k", b"v2", T0 + 2, if_version=token)
        with pytest.raises(Conflict):
            store.put(1, "never", b"v2", T0 + 2, if_version=token)
    assert store.record(1, "never") is None


def test_cas_version_of_expired_value_conflicts() -> None:
    store, _ = make()
    written = store.put(1, "k", b"v", T0, ttl_ms=100)
    with pytest.raises(Conflict):
        store.put(1, "k", b"v2", T0 + 100, if_version=written.version)
    with pytest.raises(NotFound):
        store.get(1, "k", T0 + 100)


def test_cas_delete() -> None:
    store, log = make()
    first = store.put(1, "k", b"v1", T0)
    second = store.put(1, "k", b"v2", T0 + 1)
    before, logged = snapshot(store), list(log)
    with pytest.raises(Conflict):
        store.delete(1, "k", T0 + 2, if_version=first.version)
    assert snapshot(store) == before
    assert log == logged
    with pytest.raises(BadRequest):
        store.delete(1, "k", T0 + 2, if_version=ABSENT)
    assert snapshot(store) == before
    dead = store.delete(1, "k", T0 + 2, if_version=second.version)
    assert dead.tombstone
    with pytest.raises(NotFound):
        store.get(1, "k", T0 + 2)


# --- TTL and sweep ------------------------------------------------------------------------------


def test_ttl_live_before_and_gone_at_expiry() -> None:
    store, _ = make()
    written = store.put(1, "k", b"value", T0, ttl_ms=1_000)
    assert written.expires_at_ms == T0 + 1_000
    record, value = store.get(1, "k", T0 + 999)
    assert (record.expires_at_ms, value) == (T0 + 1_000, b"value")
    assert store.list_keys(1, T0 + 999, limit=10).keys == ["k"]
    for now in (T0 + 1_000, T0 + 1_001, T0 + 10**9):
        with pytest.raises(NotFound):
            store.get(1, "k", now)
        assert store.list_keys(1, now, limit=10).keys == []
        with pytest.raises(NotFound):
            store.delete(1, "k", now)


def test_sweep_purges_expired_values() -> None:
    store, log = make()
    store.put(1, "k", b"value", T0, ttl_ms=1_000)
    store.put(1, "keep", b"forever", T0)
    assert store.sweep(T0 + 999) == (0, 0)
    assert store.usage(1) == cost("k", b"value") + cost("keep", b"forever")
    logged = list(log)
    assert store.sweep(T0 + 1_000) == (1, 0)
    record = store.record(1, "k")
    assert record is not None
    assert record.tombstone
    assert record.sealed is None
    assert record.deleted_at_ms() == T0 + 1_000
    assert store.usage(1) == cost("k", None) + cost("keep", b"forever")
    assert store.sweep(T0 + 2_000) == (0, 0)
    assert log == logged  # expiry is derived on every replica, not replicated
    assert store.get(1, "keep", T0 + 2_000)[1] == b"forever"


def test_overwrite_without_ttl_cancels_the_expiry() -> None:
    store, _ = make()
    store.put(1, "k", b"v1", T0, ttl_ms=100)
    store.put(1, "k", b"v2", T0 + 50)
    assert store.sweep(T0 + 1_000) == (0, 0)
    assert store.get(1, "k", T0 + 1_000)[1] == b"v2"
    store.put(1, "k", b"v3", T0 + 1_000, ttl_ms=10)
    store.put(1, "k", b"v4", T0 + 1_001, ttl_ms=1_000)
    assert store.sweep(T0 + 1_500) == (0, 0)
    assert store.get(1, "k", T0 + 1_500)[1] == b"v4"
    assert store.sweep(T0 + 2_001) == (1, 0)


def test_ttl_must_be_positive() -> None:
    store, _ = make()
    for ttl in (0, -1):
        with pytest.raises(BadRequest):
            store.put(1, "k", b"v", T0, ttl_ms=ttl)
    assert store.record(1, "k") is None


def test_tombstones_forgotten_after_retention() -> None:
    store, _ = make(tombstone_retention=10.0)
    store.put(1, "k", b"v", T0)
    store.delete(1, "k", T0 + 100)
    assert store.sweep(T0 + 100 + 9_999) == (0, 0)
    assert store.record(1, "k") is not None
    assert store.usage(1) == cost("k", None)
    assert store.sweep(T0 + 100 + 10_000) == (0, 1)
    assert store.record(1, "k") is None
    assert store.usage(1) == 0
    assert store.stats().apps == 0
    assert store.stats().used_bytes == 0


def test_expired_tombstones_forgotten_retention_after_expiry() -> None:
    store, _ = make(tombstone_retention=10.0)
    store.put(1, "k", b"v", T0, ttl_ms=500)
    assert store.sweep(T0 + 500) == (1, 0)
    assert store.sweep(T0 + 500 + 9_999) == (0, 0)
    assert store.sweep(T0 + 500 + 10_000) == (0, 1)
    assert store.record(1, "k") is None
    # expiry and forgetting in one late sweep
    store.put(1, "j", b"v", T0 + 20_000, ttl_ms=1)
    assert store.sweep(T0 + 10**6) == (1, 1)
    assert store.records() == []


def test_rewritten_tombstone_is_not_forgotten() -> None:
    store, _ = make(tombstone_retention=1.0)
    store.put(1, "k", b"v1", T0)
    store.delete(1, "k", T0)
    store.put(1, "k", b"v2", T0 + 500)
    assert store.sweep(T0 + 5_000) == (0, 0)
    assert store.get(1, "k", T0 + 5_000)[1] == b"v2"
    # deleted again later: forgotten only a full retention after the second delete
    store.delete(1, "k", T0 + 5_000)
    assert store.sweep(T0 + 5_999) == (0, 0)
    assert store.sweep(T0 + 6_000) == (0, 1)


# --- clocks across replicas ---------------------------------------------------------------------


def foreign(
    app_id: int,
    key: str,
    value: bytes | None,
    *,
    clock: tuple[tuple[str, int], ...],
    wall_ms: int,
    node: str = NODE_B,
    logical: int = 0,
) -> Record:
    sealed = (
        None
        if value is None
        else seal_value(
            key=app_key(app_id), app_id=app_id, name=key, value=value, nonce=os.urandom(12)
        )
    )
    return Record(
        app_id=app_id,
        key=key,
        sealed=sealed,
        clock=clock,
        hlc=(wall_ms << HLC_LOGICAL_BITS) + logical,
        node=node,
    )


def test_local_write_starts_from_the_stored_merged_clock() -> None:
    # The regression: a port restarted local writes at {self: 1}, so after a merge the next
    # local write lost against the stored record (or reused a version).
    store, _ = make()
    first = store.put(1, "k", b"a1", T0)
    from_b = foreign(1, "k", b"b1", clock=((NODE_A, 1), (NODE_B, 1)), wall_ms=T0 + 5)
    assert store.merge(from_b)
    assert store.get(1, "k", T0 + 6)[1] == b"b1"
    second = store.put(1, "k", b"a2", T0 + 10)
    assert second.clock == ((NODE_A, 2), (NODE_B, 1))
    assert second.hlc > from_b.hlc
    assert len({first.version, from_b.version, second.version}) == 3
    assert store.get(1, "k", T0 + 10)[1] == b"a2"
    third = store.put(1, "k", b"a3", T0 + 10)
    assert third.clock == ((NODE_A, 3), (NODE_B, 1))
    dead = store.delete(1, "k", T0 + 11)
    assert dead.clock == ((NODE_A, 4), (NODE_B, 1))


def test_local_write_after_a_record_from_the_future_still_wins() -> None:
    store, _ = make()
    store.put(1, "k", b"a1", T0)
    ahead = foreign(1, "k", b"b1", clock=((NODE_A, 1), (NODE_B, 1)), wall_ms=T0 + 60_000)
    assert store.merge(ahead)
    mine = store.put(1, "k", b"a2", T0 + 1)
    assert mine.hlc > ahead.hlc
    assert store.get(1, "k", T0 + 2)[1] == b"a2"
    # and also for a key this node never wrote: the HLC observed the foreign stamp
    other = store.put(1, "fresh", b"x", T0 + 2)
    assert other.hlc > ahead.hlc


def test_two_replicas_alternating_writes_never_lose_one() -> None:
    a, log_a = make(NODE_A)
    b, log_b = make(NODE_B)
    now = T0
    for i in range(20):
        writer, reader, log = (a, b, log_a) if i % 2 == 0 else (b, a, log_b)
        now += 1 if i % 3 else 0
        value = f"value {i}".encode()
        if i % 7 == 6:
            writer.delete(1, "k", now)
        else:
            writer.put(1, "k", value, now)
        for record in log:
            reader.merge(record)
        log.clear()
        for store in (a, b):
            if i % 7 == 6:
                with pytest.raises(NotFound):
                    store.get(1, "k", now)
            else:
                assert store.get(1, "k", now)[1] == value
        assert a.record(1, "k") == b.record(1, "k")
    final = a.record(1, "k")
    assert final is not None
    assert dict(final.clock) == {NODE_A: 10, NODE_B: 10}


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("", BadRequest),
        ("\x00", BadRequest),
        ("a\x00b", BadRequest),
        ("a" * 513, TooLarge),
        ("é" * 256 + "a", TooLarge),  # 513 UTF-8 bytes, 257 characters
        ("\U0001f511" * 129, TooLarge),  # 516 bytes
    ],
)
def test_bad_keys_refused_everywhere(key: str, error: type[Exception]) -> None:
    store, log = make()
    store.put(1, "ok", b"v", T0)
    before = snapshot(store)
    with pytest.raises(error):
        store.put(1, key, b"v", T0)
    with pytest.raises(error):
        store.get(1, key, T0)
    with pytest.raises(error):
        store.delete(1, key, T0)
    assert snapshot(store) == before
    assert len(log) == 1


@pytest.mark.parametrize("key", ["a" * 512, "é" * 256, "\U0001f511" * 128, "x", " ", "a/b:c"])
def test_keys_at_the_limit_accepted(key: str) -> None:
    store, _ = make()
    store.put(1, key, b"v", T0)
    assert store.get(1, key, T0)[1] == b"v"
    assert store.usage(1) == cost(key, b"v")


def test_value_too_large_stores_nothing() -> None:
    store, log = make(max_value_bytes=1024)
    store.put(1, "k", b"x" * 1024, T0)
    before = snapshot(store)
    with pytest.raises(TooLarge):
        store.put(1, "k", b"x" * 1025, T0 + 1)
    with pytest.raises(TooLarge):
        store.put(1, "j", b"x" * 1025, T0 + 1)
    assert snapshot(store) == before
    assert store.record(1, "j") is None
    assert len(log) == 1


def test_default_value_limit_is_one_mebibyte() -> None:
    store, _ = make()
    store.put(1, "big", b"\x01" * 1_048_576, T0)
    with pytest.raises(TooLarge):
        store.put(1, "bigger", b"\x01" * 1_048_577, T0)
    assert store.record(1, "bigger") is None


# --- list ---------------------------------------------------------------------------------------


def test_list_order_prefix_and_limit() -> None:
    store, _ = make()
    keys = ["b", "a", "é", "Z", "aa", "a/b", "a/c", "ab", "\U0001f511", "~"]
    for key in keys:
        store.put(1, key, b"v", T0)
    # code point order, which is also UTF-8 byte order
    expected = sorted(keys, key=lambda k: k.encode())
    assert expected == sorted(keys)
    assert store.list_keys(1, T0, limit=100) == ListPage(expected, None)
    assert store.list_keys(1, T0, limit=3) == ListPage(expected[:3], expected[2])
    assert store.list_keys(1, T0, prefix="a", limit=100).keys == ["a", "a/b", "a/c", "aa", "ab"]
    assert store.list_keys(1, T0, prefix="a/", limit=100).keys == ["a/b", "a/c"]
    assert store.list_keys(1, T0, prefix="zz", limit=100) == ListPage([], None)
    assert store.list_keys(1, T0, prefix="a/b", limit=100).keys == ["a/b"]
    assert store.list_keys(2, T0, limit=100) == ListPage([], None)


def test_list_cursor_only_when_more_remain() -> None:
    store, _ = make()
    for key in ("a", "b", "c"):
        store.put(1, key, b"v", T0)
    assert store.list_keys(1, T0, limit=3) == ListPage(["a", "b", "c"], None)
    assert store.list_keys(1, T0, limit=2) == ListPage(["a", "b"], "b")
    assert store.list_keys(1, T0, limit=2, after="b") == ListPage(["c"], None)
    # deleted keys after the page do not produce a dangling cursor
    store.put(1, "d", b"v", T0)
    store.delete(1, "d", T0)
    assert store.list_keys(1, T0, limit=3) == ListPage(["a", "b", "c"], None)


def test_list_cursor_survives_deletion_of_the_cursor_key() -> None:
    store, _ = make()
    for key in ("a", "b", "c", "d"):
        store.put(1, key, b"v", T0)
    page = store.list_keys(1, T0, limit=2)
    assert page == ListPage(["a", "b"], "b")
    store.delete(1, "b", T0)
    store.delete(1, "c", T0)
    assert store.list_keys(1, T0, limit=2, after=page.next_after) == ListPage(["d"], None)


def test_list_cursor_and_prefix_combined() -> None:
    store, _ = make()
    for key in ("a", "p/1", "p/2", "p/3", "q"):
        store.put(1, key, b"v", T0)
    # a cursor before the prefix range starts at the prefix
    assert store.list_keys(1, T0, prefix="p/", limit=10, after="a").keys == ["p/1", "p/2", "p/3"]
    assert store.list_keys(1, T0, prefix="p/", limit=10, after="p/1").keys == ["p/2", "p/3"]
    # a cursor past the prefix range gives nothing
    assert store.list_keys(1, T0, prefix="p/", limit=10, after="q") == ListPage([], None)


key_names = st.text(alphabet="abé/", min_size=1, max_size=4)


@given(
    entries=st.dictionaries(key_names, st.sampled_from(["live", "deleted", "expired", "ttl"])),
    prefix=st.text(alphabet="abé/", max_size=2),
    limit=st.integers(1, 5),
)
def test_list_paging_visits_every_live_key_once(
    entries: dict[str, str], prefix: str, limit: int
) -> None:
    store, _ = make()
    for key, state in entries.items():
        ttl = {"expired": 10, "ttl": 10_000}.get(state)
        store.put(1, key, b"v", T0, ttl_ms=ttl)
        if state == "deleted":
            store.delete(1, key, T0)
        store.put(2, key, b"other app", T0)
    now = T0 + 10
    live = sorted(k for k, s in entries.items() if s in ("live", "ttl") and k.startswith(prefix))
    assert all_keys(store, 1, now, prefix=prefix, limit=limit) == live
    assert all_keys(store, 2, now, prefix=prefix, limit=limit) == sorted(
        k for k in entries if k.startswith(prefix)
    )
    # unchanged after a sweep
    store.sweep(now)
    assert all_keys(store, 1, now, prefix=prefix, limit=limit) == live


# --- namespaces ---------------------------------------------------------------------------------


def test_apps_are_isolated() -> None:
    store, _ = make()
    store.put(1, "shared", b"app one", T0)
    store.put(1, "only-1", b"x", T0)
    store.put(2, "shared", b"app two", T0)
    assert store.get(1, "shared", T0)[1] == b"app one"
    assert store.get(2, "shared", T0)[1] == b"app two"
    with pytest.raises(NotFound):
        store.get(2, "only-1", T0)
    with pytest.raises(NotFound):
        store.delete(2, "only-1", T0)
    assert store.get(1, "only-1", T0)[1] == b"x"
    assert store.list_keys(2, T0, limit=10).keys == ["shared"]
    assert store.list_keys(1, T0, limit=10).keys == ["only-1", "shared"]
    store.delete(2, "shared", T0)
    assert store.get(1, "shared", T0)[1] == b"app one"
    assert store.usage(1) == cost("shared", b"app one") + cost("only-1", b"x")
    assert store.usage(2) == cost("shared", None)
    assert store.usage(3) == 0
    assert store.stats().used_bytes == store.usage(1) + store.usage(2)


def test_value_moved_into_another_namespace_does_not_open() -> None:
    store, _ = make()
    record = store.put(1, "k", b"app one secret", T0)
    # a malicious or buggy replica re-files app 1's ciphertext under app 2 / another key
    moved = Record(
        app_id=2,
        key="k",
        sealed=record.sealed,
        clock=record.clock,
        hlc=record.hlc,
        node=NODE_B,
    )
    renamed = Record(
        app_id=1,
        key="k2",
        sealed=record.sealed,
        clock=record.clock,
        hlc=record.hlc,
        node=NODE_B,
    )
    assert store.merge(moved)
    assert store.merge(renamed)
    with pytest.raises(InternalError):
        store.get(2, "k", T0)
    with pytest.raises(InternalError):
        store.get(1, "k2", T0)
    assert store.get(1, "k", T0)[1] == b"app one secret"


# --- quotas: reject -----------------------------------------------------------------------------


def test_reject_mode_app_quota() -> None:
    store, log = make(app_quota_bytes=1_000, record_overhead_bytes=100)
    store.put(1, "a", b"x" * 400, T0)  # 501
    assert store.usage(1) == 501
    before, logged = snapshot(store), list(log)
    with pytest.raises(QuotaExceeded) as info:
        store.put(1, "b", b"x" * 400, T0 + 1)  # would be 1002
    assert info.value.details.get("scope") == "app"
    assert snapshot(store) == before
    assert log == logged
    assert store.record(1, "b") is None
    # exactly at the quota is fine; an overwrite is charged net of the old record
    store.put(1, "b", b"x" * 398, T0 + 2)  # 501 + 499 = 1000
    assert store.usage(1) == 1_000
    with pytest.raises(QuotaExceeded):
        store.put(1, "c", b"", T0 + 3)
    store.put(1, "a", b"y" * 400, T0 + 3)  # same size overwrite
    with pytest.raises(QuotaExceeded):
        store.put(1, "a", b"y" * 401, T0 + 4)
    assert store.get(1, "a", T0 + 4)[1] == b"y" * 400
    # deleting frees the value but the tombstone keeps overhead + key
    store.delete(1, "a", T0 + 5)
    assert store.usage(1) == 101 + 499
    store.put(1, "c", b"z" * 299, T0 + 6)
    assert store.usage(1) == 1_000
    # other apps have their own quota
    store.put(2, "a", b"x" * 899, T0 + 7)
    assert store.usage(2) == 1_000


def test_reject_mode_global_quota_across_apps() -> None:
    store, log = make(app_quota_bytes=1_000, global_quota_bytes=1_500, record_overhead_bytes=100)
    store.put(2, "z", b"", T0)  # 101
    store.put(1, "a", b"x" * 699, T0)  # 800
    before, logged = snapshot(store), list(log)
    with pytest.raises(QuotaExceeded) as info:
        store.put(2, "a", b"x" * 499, T0)  # app 2 would be 701 ≤ 1000, node 1501 > 1500
    assert info.value.details.get("scope") == "node"
    assert snapshot(store) == before
    assert log == logged
    store.put(2, "a", b"x" * 498, T0)
    assert store.stats().used_bytes == 1_500
    with pytest.raises(QuotaExceeded):
        store.put(1, "b", b"", T0)
    store.delete(2, "a", T0)  # app 2 frees 498 of the node's room...
    store.put(1, "b", b"x" * 98, T0)  # ...which app 1 can use
    assert store.usage(1) == 999
    assert store.stats().used_bytes == store.usage(1) + store.usage(2) == 999 + 202


def test_rejected_first_put_of_an_app_leaves_no_namespace_behind() -> None:
    # Regression: put() once registered the app's namespace before _plan_room() could raise
    # QuotaExceeded, so stats().apps counted an app that stores nothing.
    store, _ = make(app_quota_bytes=1_000, record_overhead_bytes=100)
    store.put(1, "a", b"x", T0)
    before = store.stats()
    with pytest.raises(QuotaExceeded):
        store.put(2, "a", b"x" * 1_000, T0)
    assert store.usage(2) == 0
    assert store.stats() == before


# --- quotas: evict ------------------------------------------------------------------------------


def evicting(**limits: Any) -> tuple[KVStore, list[Record]]:
    return make(quota_mode="evict", app_quota_bytes=1_000, record_overhead_bytes=100, **limits)


def test_evict_mode_evicts_least_recently_used() -> None:
    store, log = evicting()
    store.put(1, "k1", b"1" * 248, T0)  # 350 each
    store.put(1, "k2", b"2" * 248, T0 + 1)
    store.put(2, "k2", b"other app", T0 + 1)
    store.get(1, "k1", T0 + 2)  # k1 is now more recently used than k2
    log.clear()
    written = store.put(1, "k3", b"3" * 248, T0 + 3)  # needs 50 more bytes: evict k2
    assert [(r.key, r.tombstone) for r in log] == [("k2", True), ("k3", False)]
    assert log[1] == written
    evicted = store.record(1, "k2")
    assert evicted is not None
    assert evicted.tombstone
    assert evicted.node == NODE_A
    assert evicted.clock == ((NODE_A, 2),)
    assert evicted.updated_at_ms == T0 + 3
    assert log[0] == evicted
    with pytest.raises(NotFound):
        store.get(1, "k2", T0 + 3)
    assert store.get(1, "k1", T0 + 3)[1] == b"1" * 248
    assert store.get(1, "k3", T0 + 3)[1] == b"3" * 248
    assert store.get(2, "k2", T0 + 3)[1] == b"other app"
    assert store.usage(1) == 350 + 102 + 350
    assert store.list_keys(1, T0 + 3, limit=10).keys == ["k1", "k3"]


def test_evict_mode_put_refreshes_recency_and_evicts_several() -> None:
    store, log = evicting()
    for i in range(4):
        store.put(1, f"k{i}", b"v" * 148, T0 + i)  # 250 each, 1000 total
    store.put(1, "k0", b"w" * 148, T0 + 10)  # overwrite refreshes k0: order k1 k2 k3 k0
    log.clear()
    store.put(1, "big", b"b" * 340, T0 + 11)  # 443 more: k1, k2, k3 (148 each) make room
    assert [r.key for r in log] == ["k1", "k2", "k3", "big"]
    assert store.get(1, "k0", T0 + 11)[1] == b"w" * 148
    assert store.usage(1) == 250 + 3 * 102 + 443
    assert store.usage(1) <= 1_000


def test_evict_mode_overwrite_never_evicts_itself() -> None:
    store, log = evicting()
    store.put(1, "a", b"a" * 400, T0)  # 501
    store.put(1, "b", b"b" * 300, T0 + 1)  # 401
    log.clear()
    store.put(1, "a", b"A" * 499, T0 + 2)  # growth 99 → 1001: evict b (a is skipped)
    assert [(r.key, r.tombstone) for r in log] == [("b", True), ("a", False)]
    assert store.get(1, "a", T0 + 2)[1] == b"A" * 499


def test_evict_mode_value_larger_than_quota_changes_nothing() -> None:
    store, log = evicting()
    store.put(1, "k1", b"1" * 300, T0)
    store.put(1, "k2", b"2" * 300, T0)
    before, logged = snapshot(store), list(log)
    with pytest.raises(QuotaExceeded):
        store.put(1, "huge", b"h" * 1_000, T0 + 1)
    with pytest.raises(QuotaExceeded):
        store.put(1, "k1", b"h" * 900, T0 + 1)  # even evicting k2 leaves too little
    assert snapshot(store) == before
    assert log == logged
    assert store.get(1, "k2", T0 + 1)[1] == b"2" * 300


def test_evict_mode_tombstones_are_never_evicted() -> None:
    store, _ = evicting()
    for i in range(7):
        store.put(1, f"t{i}", b"", T0)
        store.delete(1, f"t{i}", T0)  # 7 tombstones of 102 = 714
    store.put(1, "L", b"x" * 150, T0)  # 251: 965
    before = snapshot(store)
    with pytest.raises(QuotaExceeded):
        store.put(1, "k", b"x" * 200, T0)  # needs 266: evicting L frees only 150
    assert snapshot(store) == before
    assert store.get(1, "L", T0)[1] == b"x" * 150
    store.put(1, "k", b"x" * 40, T0)  # needs 106: L goes
    with pytest.raises(NotFound):
        store.get(1, "L", T0)
    assert store.usage(1) == 714 + 101 + 141


def test_evict_mode_global_quota_evicts_only_the_writing_app() -> None:
    store, log = evicting(global_quota_bytes=1_500)
    store.put(2, "old", b"o" * 600, T0)  # app 2, least recently used of all: 704
    store.put(1, "a", b"a" * 500, T0 + 1)  # 601
    log.clear()
    store.put(1, "b", b"b" * 200, T0 + 2)  # node 1606 > 1500: app 1 must make room
    assert [(r.app_id, r.key, r.tombstone) for r in log] == [(1, "a", True), (1, "b", False)]
    assert store.get(2, "old", T0 + 2)[1] == b"o" * 600
    assert store.stats().used_bytes <= 1_500


# --- accounting ---------------------------------------------------------------------------------


ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "put_ttl", "delete", "get", "sweep", "wait"]),
        st.integers(1, 2),
        st.sampled_from(["a", "b", "é", "long/key"]),
        st.integers(0, 300),
    ),
    max_size=40,
)


@given(ops=ops, mode=st.sampled_from(["reject", "evict"]))
def test_usage_matches_the_documented_formula(
    ops: list[tuple[str, int, str, int]], mode: str
) -> None:
    store, _ = make(
        quota_mode=mode,
        app_quota_bytes=1_500,
        global_quota_bytes=2_500,
        record_overhead_bytes=100,
        tombstone_retention=0.5,
    )
    now = T0
    for op, app, key, size in ops:
        try:
            if op == "put":
                store.put(app, key, bytes(size), now)
            elif op == "put_ttl":
                store.put(app, key, bytes(size), now, ttl_ms=size + 1)
            elif op == "delete":
                store.delete(app, key, now)
            elif op == "get":
                store.get(app, key, now)
            elif op == "sweep":
                store.sweep(now)
            else:
                now += size
        except (NotFound, QuotaExceeded):
            pass
        for app_id in (1, 2):
            expected = sum(
                cost(r.key, opened(r), 100, len(r.clock))
                for r in store.records()
                if r.app_id == app_id
            )
            assert store.usage(app_id) == expected
            assert store.usage(app_id) <= 1_500
        stats = store.stats()
        assert stats.used_bytes == store.usage(1) + store.usage(2) <= 2_500
        assert stats.live + stats.tombstones == len(store.records())
        assert stats.apps == len({r.app_id for r in store.records()})


# --- listener -----------------------------------------------------------------------------------


def test_listener_sees_every_local_change_and_nothing_else() -> None:
    store, log = evicting()
    expected: list[Record] = []
    expected.append(store.put(1, "a", b"a" * 300, T0))
    expected.append(store.put(1, "b", b"b" * 300, T0 + 1))
    expected.append(store.delete(1, "a", T0 + 2))
    store.get(1, "b", T0 + 3)
    with pytest.raises(NotFound):
        store.delete(1, "a", T0 + 3)
    with pytest.raises(Conflict):
        store.put(1, "b", b"", T0 + 3, if_version=ABSENT)
    store.merge(foreign(1, "m", b"from b", clock=((NODE_B, 1),), wall_ms=T0 + 3))
    assert log == expected
    written = store.put(1, "c", b"c" * 400, T0 + 4)  # evicts the LRU live key
    evicted = log[len(expected)]
    assert evicted.tombstone
    assert log[len(expected) + 1 :] == [written]
    store.sweep(T0 + 10**9)
    assert log[-1] == written


def test_replica_fed_by_the_listener_converges() -> None:
    replica, _ = make(NODE_B)

    def replicate(record: Record) -> None:
        replica.merge(record)

    store = KVStore(
        node=NODE_A,
        limits=Limits(quota_mode="evict", app_quota_bytes=2_000, record_overhead_bytes=100),
        data_key=app_key,
        random_bytes=counter_rng(),
        listener=replicate,
    )
    now = T0
    for i in range(30):
        now += 7
        key = f"k{i % 5}"
        if i % 4 == 3:
            with contextlib.suppress(NotFound):
                store.delete(1 + i % 2, key, now)
        else:
            store.put(1 + i % 2, key, bytes(100 * (i % 6)), now)
    ours = sorted(store.records(), key=lambda r: (r.app_id, r.key))
    theirs = sorted(replica.records(), key=lambda r: (r.app_id, r.key))
    assert ours == theirs


# --- merge --------------------------------------------------------------------------------------


def test_merge_newer_wins_older_ignored() -> None:
    store, log = make()
    older = foreign(1, "k", b"older", clock=((NODE_B, 1),), wall_ms=T0 - 10)
    assert store.merge(older) is True
    mine = store.put(1, "k", b"mine", T0)
    assert mine.clock == ((NODE_A, 1), (NODE_B, 1))
    before = snapshot(store)
    assert store.merge(older) is False
    # an even older write of B's, dominated by what is stored
    assert store.merge(foreign(1, "k", b"oldest", clock=((NODE_B, 1),), wall_ms=T0 - 20)) is False
    assert snapshot(store)[:3] == before[:3]
    assert store.get(1, "k", T0)[1] == b"mine"
    newer = foreign(1, "k", b"newer", clock=((NODE_A, 1), (NODE_B, 2)), wall_ms=T0 + 10)
    assert store.merge(newer) is True
    record, value = store.get(1, "k", T0 + 10)
    assert value == b"newer"
    assert record == newer
    assert record.updated_at_ms == T0 + 10
    assert store.merge(newer) is False  # idempotent
    assert store.usage(1) == cost("k", b"newer", clock_entries=2)
    assert log == [mine]  # merges are not re-announced


def test_merge_joins_clocks_of_concurrent_writes() -> None:
    store, _ = make()
    store.put(1, "k", b"mine", T0)
    concurrent = foreign(1, "k", b"theirs", clock=((NODE_B, 1),), wall_ms=T0 - 10)
    assert store.merge(concurrent) is True  # content loses, but the clock grew
    stored = store.record(1, "k")
    assert stored is not None
    assert stored.clock == ((NODE_A, 1), (NODE_B, 1))
    assert store.get(1, "k", T0)[1] == b"mine"
    assert store.merge(concurrent) is False


def test_merge_tie_on_hlc_broken_by_node() -> None:
    store, _ = make()
    mine = store.put(1, "k", b"mine", T0)
    same_stamp = Record(
        app_id=1,
        key="k",
        sealed=foreign(1, "k", b"theirs", clock=(), wall_ms=0).sealed,
        clock=((NODE_B, 1),),
        hlc=mine.hlc,
        node=NODE_B,
    )
    assert store.merge(same_stamp)
    assert store.get(1, "k", T0)[1] == b"theirs"  # NODE_B > NODE_A


def test_merge_tombstone_deletes_and_new_key_is_created() -> None:
    store, _ = make()
    store.put(1, "k", b"v", T0)
    dead = foreign(1, "k", None, clock=((NODE_A, 1), (NODE_B, 1)), wall_ms=T0 + 1)
    assert store.merge(dead)
    with pytest.raises(NotFound):
        store.get(1, "k", T0 + 1)
    assert store.usage(1) == cost("k", None, clock_entries=2)
    assert store.merge(foreign(5, "new", b"v", clock=((NODE_B, 1),), wall_ms=T0))
    assert store.get(5, "new", T0)[1] == b"v"
    assert store.list_keys(5, T0, limit=10).keys == ["new"]
    # a stale live copy cannot resurrect the deleted key
    assert not store.merge(foreign(1, "k", b"stale", clock=((NODE_B, 1),), wall_ms=T0))
    with pytest.raises(NotFound):
        store.get(1, "k", T0 + 2)


def test_merges_are_charged_and_refused_over_the_app_quota() -> None:
    store, _ = make(app_quota_bytes=1_000, record_overhead_bytes=100)
    with pytest.raises(QuotaExceeded) as refused:
        store.merge(foreign(1, "k", b"x" * 2_000, clock=((NODE_B, 1),), wall_ms=T0))
    assert refused.value.details["scope"] == "app"
    assert store.usage(1) == 0 and store.records() == []
    assert store.merge(foreign(1, "k", b"x" * 800, clock=((NODE_B, 1),), wall_ms=T0))
    assert store.usage(1) == 901
    with pytest.raises(QuotaExceeded):  # a second key would not fit
        store.merge(foreign(1, "j", b"y" * 100, clock=((NODE_B, 1),), wall_ms=T0))
    # a tombstone of the key shrinks the usage: always applied
    dead = foreign(1, "k", None, clock=((NODE_B, 2),), wall_ms=T0 + 1)
    assert store.merge(dead)
    assert store.usage(1) == cost("k", None, 100)
    # clock entries are charged
    wide = foreign(1, "w", None, clock=((NODE_A, 1), (NODE_B, 1)), wall_ms=T0)
    assert store.merge(wide)
    assert store.usage(1) == cost("k", None, 100) + cost("w", None, 100, clock_entries=2)


def test_merges_are_refused_over_the_global_cap() -> None:
    store, _ = make(app_quota_bytes=10_000, global_quota_bytes=1_000, record_overhead_bytes=100)
    assert store.merge(foreign(1, "k", b"x" * 700, clock=((NODE_B, 1),), wall_ms=T0))
    with pytest.raises(QuotaExceeded) as refused:
        store.merge(foreign(2, "k", b"x" * 700, clock=((NODE_B, 1),), wall_ms=T0))
    assert refused.value.details["scope"] == "node"
    assert store.usage(2) == 0 and store.stats().apps == 1


def test_merged_expired_record_is_not_served_and_is_swept() -> None:
    store, _ = make()
    record = foreign(1, "k", b"v", clock=((NODE_B, 1),), wall_ms=T0)
    expiring = Record(
        app_id=1,
        key="k",
        sealed=record.sealed,
        clock=record.clock,
        hlc=record.hlc,
        node=NODE_B,
        expires_at_ms=T0 + 5,
    )
    assert store.merge(expiring)
    assert store.get(1, "k", T0 + 4)[1] == b"v"
    with pytest.raises(NotFound):
        store.get(1, "k", T0 + 5)
    store.sweep(T0 + 5)
    assert store.record(1, "k") == expiring.as_expired()
    # the replica-derived tombstone equals the one any other replica derives
    assert not store.merge(expiring.as_expired())
    assert not store.merge(expiring)


def test_ttl_overwrites_keep_the_expiry_heaps_bounded() -> None:
    # Regression: every put with a TTL pushes (expires_at, app, key) onto the expiry heap and
    # stale entries used to be dropped only when their time came, so overwriting ONE key with a
    # long TTL kept one entry per write (uncharged memory). The heaps are now compacted once
    # they exceed 2 x records + 1024 entries. Same for the tombstone heap (put/delete cycles).
    store, _ = make()
    for i in range(5_000):
        store.put(1, "k", b"v", T0 + i, ttl_ms=30 * 86_400_000)
    assert len(store.records()) == 1
    assert len(store._expiries) <= 2 * len(store.records()) + 1024
    for i in range(5_000):
        store.put(1, "g", b"v", T0 + 10_000 + 2 * i)
        store.delete(1, "g", T0 + 10_001 + 2 * i)
    assert len(store._graves) <= 2 * len(store.records()) + 1024
    assert store.get(1, "k", T0 + 20_000)[1] == b"v"


def test_records_from_walks_apps_and_keys_in_order_after_a_point() -> None:
    store, _ = make()
    for app_id in (3, 1, 2):
        for key in ("b", "a", "é", "c"):
            store.put(app_id, key, b"v", T0)
    order = [(r.app_id, r.key) for r in store.records_from(None)]
    assert order == [(a, k) for a in (1, 2, 3) for k in ("a", "b", "c", "é")]
    assert [(r.app_id, r.key) for r in store.records_from((2, "b"))] == order[6:]
    assert [(r.app_id, r.key) for r in store.records_from((2, "é"))] == order[8:]
    assert [(r.app_id, r.key) for r in store.records_from((0, "\U0010ffff"))] == order
    assert list(store.records_from((3, "é"))) == []


def test_forget_tombstone_forgets_exactly_that_tombstone() -> None:
    store, _ = make()
    store.put(1, "k", b"v", T0)
    grave = store.delete(1, "k", T0 + 1)
    store.put(1, "live", b"v", T0)
    assert store.tombstones() == [grave]
    before = store.usage(1)
    # another writer or timestamp: not this tombstone
    assert not store.forget_tombstone(1, "k", grave.hlc + 1, grave.node)
    assert not store.forget_tombstone(1, "k", grave.hlc, NODE_B)
    assert not store.forget_tombstone(1, "live", store.record(1, "live").hlc, NODE_A)  # type: ignore[union-attr]
    assert not store.forget_tombstone(2, "k", grave.hlc, grave.node)
    assert store.forget_tombstone(1, "k", grave.hlc, grave.node)
    assert store.record(1, "k") is None and store.tombstones() == []
    assert store.usage(1) == before - cost("k", None)
    # the retention sweep later finds nothing left to forget, and a new write works
    assert store.sweep(T0 + 10**12) == (0, 0)
    store.put(1, "k", b"again", T0 + 2)
    assert store.get(1, "k", T0 + 3)[1] == b"again"
