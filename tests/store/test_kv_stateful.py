"""KVStore against a simple model, driven by Hypothesis state machines (reject and evict modes).

The model is a dict key → record per app, where a record is either a value (with optional
expiry) or a tombstone with the time it was deleted. It mirrors the store's documented
accounting: overhead + key + value for every stored value (an expired value is charged until
it is purged, either by ``sweep`` or by an operation on that key), overhead + key for a
tombstone until ``tombstone_retention`` after its deletion.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from novakms.config import Limits
from novakms.crypto.aead import data_key
from novakms.errors import Conflict, NotFound, QuotaExceeded
from novakms.store.kv import KVStore
from novakms.store.records import ABSENT, Record

SECRET = bytes(range(32))
NODE = "0x" + "aa" * 20
T0 = 1_700_000_000_000
APP_QUOTA = 2_048
GLOBAL_QUOTA = 3_072
OVERHEAD = 64
RETENTION_MS = 3_000

apps = st.sampled_from([1, 2])
keys = st.text(alphabet="abé", min_size=1, max_size=2)
values = st.builds(
    lambda size, fill: bytes([fill]) * size,
    st.sampled_from([0, 1, 30, 250, 400, 550, 700, APP_QUOTA]),
    st.integers(0, 255),
)
ttls = st.one_of(st.none(), st.none(), st.integers(1, 5_000))
prefixes = st.sampled_from(["", "a", "b", "é", "ab"])


@functools.cache
def app_key(app_id: int) -> bytes:
    return data_key(master_secret=SECRET, app_id=app_id)


@dataclass
class Entry:
    value: bytes | None  # None: tombstone
    expires_at: int | None = None
    deleted_at: int = 0
    version: str = ""

    def cost(self, key: str) -> int:
        return OVERHEAD + len(key.encode()) + (0 if self.value is None else len(self.value))


class KVMachine(RuleBasedStateMachine):
    MODE = "reject"

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.log: list[Record] = []
        counter = itertools.count(1)
        self.store = KVStore(
            node=NODE,
            limits=Limits(
                app_quota_bytes=APP_QUOTA,
                global_quota_bytes=GLOBAL_QUOTA,
                record_overhead_bytes=OVERHEAD,
                tombstone_retention=RETENTION_MS / 1000,
                quota_mode=self.MODE,
            ),
            data_key=app_key,
            random_bytes=lambda n: next(counter).to_bytes(n, "big"),
            listener=self.log.append,
        )
        self.model: dict[int, dict[str, Entry]] = {1: {}, 2: {}}
        # keys holding a value (live or expired but not purged), least recently used first
        self.lru: dict[int, dict[str, None]] = {1: {}, 2: {}}
        self.tokens: list[str] = []

    # -- the model ---------------------------------------------------------------------------

    def purge(self, app: int, key: str) -> None:
        """The value of ``key`` expired: it becomes the tombstone every replica derives."""
        entry = self.model[app].get(key)
        expires = None if entry is None or entry.value is None else entry.expires_at
        if expires is not None and self.now >= expires:
            self.model[app][key] = Entry(None, expires, expires)
            del self.lru[app][key]

    def live(self, app: int, key: str) -> Entry | None:
        entry = self.model[app].get(key)
        if entry is None or entry.value is None:
            return None
        if entry.expires_at is not None and self.now >= entry.expires_at:
            return None
        return entry

    def usage(self, app: int) -> int:
        return sum(entry.cost(key) for key, entry in self.model[app].items())

    def touch(self, app: int, key: str) -> None:
        self.lru[app].pop(key, None)
        self.lru[app][key] = None

    def conflicts(self, live: Entry | None, if_version: str | None) -> bool:
        if if_version is None:
            return False
        if if_version == ABSENT:
            return live is not None
        return live is None or live.version != if_version

    def plan(self, app: int, key: str, value: bytes) -> list[str] | None:
        """Keys to evict for this write (None: quota exceeded)."""
        current = self.model[app].get(key)
        growth = OVERHEAD + len(key.encode()) + len(value)
        growth -= 0 if current is None else current.cost(key)
        app_over = self.usage(app) + growth - APP_QUOTA
        node_over = self.usage(1) + self.usage(2) + growth - GLOBAL_QUOTA
        if app_over <= 0 and node_over <= 0:
            return []
        if self.MODE == "reject":
            return None
        need = max(app_over, node_over)
        victims = []
        for candidate in self.lru[app]:
            if need <= 0:
                break
            if candidate != key:
                value_of = self.model[app][candidate].value
                assert value_of is not None
                need -= len(value_of)
                victims.append(candidate)
        return None if need > 0 else victims

    def token(self, app: int, key: str, which: str, pick: int) -> str | None:
        live = self.live(app, key)
        if which == "current":
            return None if live is None else live.version
        if which == "absent":
            return ABSENT
        stale = [t for t in self.tokens if live is None or t != live.version]
        return stale[pick % len(stale)] if stale else "never-issued"

    # -- operations --------------------------------------------------------------------------

    def do_put(
        self, app: int, key: str, value: bytes, ttl: int | None, if_version: str | None
    ) -> None:
        self.purge(app, key)
        live = self.live(app, key)
        victims = None if self.conflicts(live, if_version) else self.plan(app, key, value)
        before = len(self.log)
        try:
            record = self.store.put(app, key, value, self.now, ttl_ms=ttl, if_version=if_version)
        except Conflict:
            event("put: conflict")
            assert self.conflicts(live, if_version)
            assert len(self.log) == before
            return
        except QuotaExceeded:
            event("put: quota exceeded")
            assert not self.conflicts(live, if_version)
            assert victims is None
            assert len(self.log) == before
            return
        assert victims is not None, "the store accepted a write the model refuses"
        event(f"put: ok, {'CAS, ' if if_version else ''}{'evicting' if victims else 'no eviction'}")
        assert not self.conflicts(live, if_version)
        for victim in victims:
            self.model[app][victim] = Entry(None, deleted_at=self.now)
            del self.lru[app][victim]
        expires = None if ttl is None else self.now + ttl
        self.model[app][key] = Entry(value, expires, version=record.version)
        self.touch(app, key)
        self.tokens.append(record.version)
        sent = self.log[before:]
        assert [(r.key, r.tombstone) for r in sent] == [(v, True) for v in victims] + [(key, False)]
        assert sent[-1] == record
        assert record.updated_at_ms == self.now
        assert record.expires_at_ms == expires
        assert all(r.app_id == app and r.updated_at_ms == self.now for r in sent)

    @rule(app=apps, key=keys, value=values, ttl=ttls)
    def put(self, app: int, key: str, value: bytes, ttl: int | None) -> None:
        self.do_put(app, key, value, ttl, None)

    @rule(
        app=apps,
        key=keys,
        value=values,
        ttl=ttls,
        which=st.sampled_from(["current", "absent", "stale"]),
        pick=st.integers(0, 1_000),
    )
    def put_cas(
        self, app: int, key: str, value: bytes, ttl: int | None, which: str, pick: int
    ) -> None:
        self.do_put(app, key, value, ttl, self.token(app, key, which, pick) or "never-issued")

    @rule(app=apps, key=keys)
    def get(self, app: int, key: str) -> None:
        self.purge(app, key)
        live = self.live(app, key)
        if live is None:
            with pytest.raises(NotFound):
                self.store.get(app, key, self.now)
            return
        record, value = self.store.get(app, key, self.now)
        assert value == live.value
        assert record.version == live.version
        assert record.expires_at_ms == live.expires_at
        self.touch(app, key)

    @rule(
        app=apps,
        key=keys,
        which=st.sampled_from(["none", "current", "stale"]),
        pick=st.integers(0, 1_000),
    )
    def delete(self, app: int, key: str, which: str, pick: int) -> None:
        if_version = None if which == "none" else self.token(app, key, which, pick)
        self.purge(app, key)
        live = self.live(app, key)
        before = len(self.log)
        if self.conflicts(live, if_version):
            with pytest.raises(Conflict):
                self.store.delete(app, key, self.now, if_version=if_version)
        elif live is None:
            with pytest.raises(NotFound):
                self.store.delete(app, key, self.now, if_version=if_version)
        else:
            dead = self.store.delete(app, key, self.now, if_version=if_version)
            assert dead.tombstone
            assert dead.deleted_at_ms() == self.now
            assert self.log[before:] == [dead]
            self.model[app][key] = Entry(None, deleted_at=self.now)
            del self.lru[app][key]
            return
        assert len(self.log) == before

    @rule(app=apps, prefix=prefixes, limit=st.integers(1, 5))
    def list_all(self, app: int, prefix: str, limit: int) -> None:
        expected = sorted(
            key for key in self.model[app] if key.startswith(prefix) and self.live(app, key)
        )
        found: list[str] = []
        after = None
        while True:
            page = self.store.list_keys(app, self.now, prefix=prefix, limit=limit, after=after)
            assert len(page.keys) <= limit
            found += page.keys
            if page.next_after is None:
                break
            after = page.next_after
            assert len(found) <= len(expected)
        assert found == expected

    @rule(ms=st.integers(0, 3_000))
    def advance_time(self, ms: int) -> None:
        self.now += ms

    @rule()
    def sweep(self) -> None:
        purged = forgotten = 0
        for app, entries in self.model.items():
            for key in list(entries):
                if self.live(app, key) is None and entries[key].value is not None:
                    self.purge(app, key)
                    purged += 1
        for entries in self.model.values():
            for key in list(entries):
                entry = entries[key]
                if entry.value is None and entry.deleted_at + RETENTION_MS <= self.now:
                    del entries[key]
                    forgotten += 1
        before = len(self.log)
        assert self.store.sweep(self.now) == (purged, forgotten)
        event(f"sweep: purged {min(purged, 1)}+, forgot {min(forgotten, 1)}+")
        assert len(self.log) == before

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def usage_matches_model(self) -> None:
        for app in (1, 2):
            assert self.store.usage(app) == self.usage(app)
            assert self.store.usage(app) <= APP_QUOTA
        stats = self.store.stats()
        assert stats.used_bytes == self.usage(1) + self.usage(2) <= GLOBAL_QUOTA
        assert stats.live == sum(len(lru) for lru in self.lru.values())
        assert stats.tombstones == sum(
            1 for entries in self.model.values() for e in entries.values() if e.value is None
        )

    @invariant()
    def stored_records_match_model(self) -> None:
        stored = {(r.app_id, r.key): r for r in self.store.records()}
        expected = {(app, key) for app, entries in self.model.items() for key in entries}
        assert set(stored) == expected
        for (app, key), record in stored.items():
            entry = self.model[app][key]
            assert record.tombstone == (entry.value is None)
            if entry.value is not None:
                assert record.version == entry.version

    @invariant()
    def reads_agree(self) -> None:
        # list without paging: exactly the live keys (expired = absent)
        for app in (1, 2):
            live = sorted(key for key in self.model[app] if self.live(app, key))
            assert self.store.list_keys(app, self.now, limit=1_000).keys == live


class KVEvictMachine(KVMachine):
    MODE = "evict"


TestKVReject = KVMachine.TestCase
TestKVReject.settings = settings(stateful_step_count=60)
TestKVEvict = KVEvictMachine.TestCase
TestKVEvict.settings = settings(stateful_step_count=60)
