"""The store gate: the node's KV store and whether it may be served.

Owner of: the store (opened when the keyring installs a secret, keyed by it), the catch-up
state (``syncing``: a joiner still receiving the cluster's data; ``degraded``: serving without
having confirmed it holds everything its peers hold, ``cluster.readiness``), the intake of
replicated records (validate, merge, count the rejected and the deferred) and the listeners
the replicator attaches to it (local changes, merged replicas).

Nobody else writes any of it: the replicator reports through :meth:`StoreGate.finish_catch_up`
and :meth:`StoreGate.confirm_caught_up`, and subscribes through :meth:`StoreGate.attach`.

No I/O, no clock: ``now_ms`` is passed in.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from novakms.cluster import replication
from novakms.cluster.readiness import State
from novakms.config import Limits
from novakms.errors import InvalidRecord, QuotaExceeded, Unavailable
from novakms.log import get_logger
from novakms.server.keyring import Keyring
from novakms.store.kv import KVStore
from novakms.store.records import Record

__all__ = ["ReplicaListener", "StoreGate"]

#: Called with (record, the record it merged into or None, the sending peer).
ReplicaListener = Callable[[Record, Record | None, str], None]


class StoreGate:
    """The KV store behind the readiness checks every operation passes.

    Args:
        wallet: this node's wallet (records' writer id; logs).
        limits: store and replication limits.
        keyring: the secret the store is keyed by (the gate subscribes to its installation).
        random_bytes: the RNG for value nonces.
    """

    def __init__(
        self,
        *,
        wallet: str,
        limits: Limits,
        keyring: Keyring,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._wallet = wallet
        self._limits = limits
        self._keyring = keyring
        self._random = random_bytes
        self._store: KVStore | None = None
        self._syncing = False
        self._degraded: str | None = None
        self._replica_listener: ReplicaListener | None = None
        self.rejected = 0  # replicated records refused as invalid (never stored)
        self.deferred = 0  # valid replicated records refused by the quota (the sender retries)
        self._log = get_logger("novakms.server.node", node=wallet)
        keyring.on_install(self._open)

    def _open(self, secret: bytes, syncing: bool) -> None:
        self._syncing = syncing
        self._store = KVStore(
            node=self._wallet,
            limits=self._limits,
            data_key=self._keyring.data_key,
            random_bytes=self._random,
        )

    # -- read-only state ------------------------------------------------------------------------

    @property
    def store(self) -> KVStore | None:
        """The store, None until the node has its secret."""
        return self._store

    @property
    def syncing(self) -> bool:
        """Whether the node is still catching up (KV answers ``unavailable: syncing``)."""
        return self._syncing

    @property
    def degraded(self) -> str | None:
        """Why the node serves unconfirmed (``no_caught_up_peer``, ``peer_unreachable``)."""
        return self._degraded

    @property
    def catch_up_state(self) -> State:
        """``syncing`` (catching up: KV refused), ``degraded`` (serving, unconfirmed) or
        ``serving`` (``cluster.readiness``)."""
        if self._syncing:
            return "syncing"
        return "degraded" if self._degraded is not None else "serving"

    # -- the replicator's reports ----------------------------------------------------------------

    def attach(self, *, local: Callable[[Record], None], replicated: ReplicaListener) -> KVStore:
        """Subscribe to the store's local changes and to merged replicas (once it is open).

        Returns:
            The store.

        Raises:
            Unavailable: ``not_ready``, the store is not open yet.
        """
        store = self.require_store()
        store.listener = local
        self._replica_listener = replicated
        return store

    def finish_catch_up(self, degraded: str | None) -> None:
        """The joiner's catch-up ended: serve the KV store, ``degraded`` when unconfirmed."""
        self._degraded = degraded
        self._syncing = False

    def confirm_caught_up(self) -> None:
        """A later pass confirmed this node holds what every peer holds: no longer degraded."""
        self._degraded = None

    # -- serving --------------------------------------------------------------------------------

    def require_store(self) -> KVStore:
        """The KV store (exists once the node has its secret).

        Raises:
            Unavailable: the keyring's ``not_ready`` reason.
        """
        if self._store is None:
            raise self._keyring.not_ready.fresh()
        return self._store

    def serving_store(self) -> KVStore:
        """The KV store for app operations: only once the node has caught up with the cluster.

        Raises:
            Unavailable: ``not_ready`` without a secret; ``secret_mismatch``; ``syncing`` while
                the first snapshot is still arriving.
        """
        store = self.require_store()
        self._keyring.require_secret()  # the pin may have turned against the held secret
        if self._syncing:
            raise Unavailable(
                "this node is still receiving the cluster's data; try another node or retry",
                reason="syncing",
            )
        return store

    def apply_replicated(
        self, items: list[Any], *, now_ms: int, source: str
    ) -> tuple[int, list[int], list[int]]:
        """Validate and merge records a peer sent.

        Each record must be well-formed, within the size limits (``max_clock_entries``
        included), not from the future beyond ``max_clock_skew_ms``, and decryptable under this
        node's data key for its app and key; anything else is rejected, counted and logged
        (reason only), never stored. A valid record whose merge would exceed the app quota or
        the global cap is deferred: not stored now, for the sender to keep and retry.

        Args:
            items: the records as they came off the wire.
            now_ms: unix milliseconds now.
            source: the sending peer's wallet.

        Returns:
            (accepted, indexes of the rejected, indexes of the deferred).

        Raises:
            Unavailable: ``not_ready``, the store is not open.
        """
        store = self.require_store()
        accepted = 0
        rejected: list[int] = []
        deferred: list[int] = []
        for index, item in enumerate(items):
            try:
                record = replication.record_from_wire(
                    item,
                    limits=self._limits,
                    now_ms=now_ms,
                    max_skew_ms=self._limits.max_clock_skew_ms,
                )
                replication.check_decryptable(record, self._keyring.data_key)
            except InvalidRecord as exc:
                rejected.append(index)
                self.rejected += 1
                self._log.warning("replicated_record_rejected", peer=source, reason=exc.reason)
                continue
            previous = store.record(record.app_id, record.key)
            try:
                store.merge(record)
            except QuotaExceeded:
                deferred.append(index)
                self.deferred += 1
                continue
            accepted += 1
            if self._replica_listener is not None:
                self._replica_listener(record, previous, source)
        return accepted, rejected, deferred

    def sweep(self, now_ms: int) -> tuple[int, int]:
        """Purge expired values and forget old tombstones; (purged, forgotten)."""
        if self._store is None:
            return 0, 0
        return self._store.sweep(now_ms)
