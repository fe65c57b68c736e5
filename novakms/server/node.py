"""The state one KMS node serves from: identity, secret, store, authorization source, limits.

No network I/O here; the server and the handlers share one :class:`Node`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from novakms import __version__
from novakms.auth.ratelimit import KeyedRateLimiter
from novakms.auth.source import AuthorizationSource
from novakms.cluster import replication
from novakms.cluster.readiness import State
from novakms.cluster.recovery import RecoveryPool
from novakms.config import Limits, Mode
from novakms.crypto import aead
from novakms.crypto.certs import ca_certificate_pem
from novakms.crypto.guardian_shares import GuardianShare
from novakms.crypto.kdf import MASTER_SECRET_SIZE, secret_fingerprint
from novakms.crypto.signer import Signer
from novakms.errors import QuotaExceeded, Unavailable
from novakms.log import get_logger
from novakms.net.dial import Dialer
from novakms.store.kv import KVStore
from novakms.store.records import Record

__all__ = ["Node"]

_CA_CACHE_SIZE = 1024


@dataclass(eq=False, kw_only=True)
class Node:
    """One node's serving state.

    Attributes:
        signer: the node's wallet signer (local key in development, Odyn in an enclave).
        auth: where app and peer authorization comes from.
        limits: all limits.
        mode: development or enclave.
        master_secret: the cluster master secret, None until the node has one.
        random_bytes: the RNG for value nonces and certificate serials.
        peer_proxy: an HTTP CONNECT proxy (address) through which peers reachable over TCP are
            dialed — an enclave's egress proxy; None dials them directly.
        syncing: the node fetched the secret from the cluster and is still catching up with
            its peers (a snapshot, then anti-entropy against every peer); the KV operations
            answer ``unavailable: syncing`` until it has.
        degraded: why the node serves without having confirmed it holds everything its peers
            hold (``no_caught_up_peer``, ``peer_unreachable``; ``cluster.readiness``), or None.
            KV answers carry it.
        replica_listener: called with (record, the record it merged into or None, the peer)
            for every replicated record stored (the replicator's bookkeeping of who holds what).
        require_pin: serve app operations only under a secret the owner pinned
            (``KMSRegistry.masterSecretHash``); always on in enclave mode (None: by the mode).
    """

    signer: Signer
    auth: AuthorizationSource
    limits: Limits
    mode: Mode
    master_secret: bytes | None = field(default=None, repr=False)
    random_bytes: Callable[[int], bytes] = field(default=os.urandom, repr=False)
    peer_proxy: str | None = None
    dial: Dialer | None = field(default=None, repr=False)  # peers: None dials the network
    require_pin: bool | None = None
    syncing: bool = False
    degraded: str | None = None
    connections: int = 0
    replication_rejected: int = 0
    replication_deferred: int = 0  # valid replicated records refused by the quota (retried)
    replicator: Any = field(default=None, repr=False)  # the cluster's Replicator, when running
    replica_listener: Callable[[Record, Record | None, str], None] | None = field(
        default=None, repr=False
    )
    version: str = __version__
    store: KVStore | None = field(init=False, default=None, repr=False)
    pin_mismatch: bool = field(default=False, init=False)
    pin: str | None = field(default=None, init=False)  # the owner's pin, as last read
    recovery: RecoveryPool[GuardianShare] = field(init=False, repr=False)
    not_ready: Unavailable = field(
        init=False,
        default_factory=lambda: Unavailable(
            "this node has no master secret yet", reason="not_ready"
        ),
        repr=False,
    )
    wallet_limiter: KeyedRateLimiter = field(init=False, repr=False)
    handshake_limiter: KeyedRateLimiter = field(init=False, repr=False)
    anonymous_limiter: KeyedRateLimiter = field(init=False, repr=False)
    _data_keys: dict[int, bytes] = field(init=False, default_factory=dict, repr=False)
    _ca_pems: dict[int, str] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.recovery = RecoveryPool(ttl=self.limits.share_ttl)
        if self.mode is Mode.ENCLAVE:
            self.require_pin = True  # production never serves an unpinned secret
        elif self.require_pin is None:
            self.require_pin = False
        self.wallet_limiter = KeyedRateLimiter(
            rate=self.limits.wallet_rate, burst=self.limits.wallet_burst
        )
        self.handshake_limiter = KeyedRateLimiter(
            rate=self.limits.handshake_rate, burst=self.limits.handshake_burst
        )
        self.anonymous_limiter = KeyedRateLimiter(
            rate=self.limits.anonymous_rate, burst=self.limits.anonymous_burst
        )
        if self.master_secret is not None:
            secret, self.master_secret = self.master_secret, None
            self.install_secret(secret)

    def install_secret(self, secret: bytes, *, syncing: bool = False) -> None:
        """Take the cluster master secret and open the store keyed by it.

        Args:
            secret: the 32-byte master secret.
            syncing: the secret came from the cluster, whose data this node must receive (a
                snapshot) before it serves the KV store.

        Raises:
            ValueError: not 32 bytes, or the node already has a (different) secret.
        """
        if len(secret) != MASTER_SECRET_SIZE:
            raise ValueError("the master secret must be 32 bytes")
        if self.master_secret is not None:
            raise ValueError("this node already has a master secret")
        self.master_secret = secret
        self.syncing = syncing
        self.store = KVStore(
            node=self.wallet,
            limits=self.limits,
            data_key=self.data_key,
            random_bytes=self.random_bytes,
        )

    @property
    def catch_up_state(self) -> State:
        """``syncing`` (catching up: KV refused), ``degraded`` (serving, unconfirmed) or
        ``serving`` (``cluster.readiness``)."""
        if self.syncing:
            return "syncing"
        return "degraded" if self.degraded is not None else "serving"

    @property
    def wallet(self) -> str:
        """This node's wallet."""
        return self.signer.wallet

    def require_secret(self) -> bytes:
        """The master secret, for serving apps and peers.

        Raises:
            Unavailable: ``not_ready`` while the node has no secret (or the bootstrap's reason:
                ``split_brain``, ``secret_lost``); ``secret_mismatch`` while the secret it holds
                does not match the owner's pin (see :meth:`check_pin`).
        """
        if self.master_secret is None:
            raise self.not_ready.fresh()
        if self.pin_mismatch:
            raise Unavailable(
                "this node's master secret does not match the owner's pin (masterSecretHash); "
                "it serves nothing with it",
                reason="secret_mismatch",
            )
        return self.master_secret

    def check_pin(self, pin: str | None) -> bool:
        """Compare the held secret with the owner's pin; return whether the verdict changed.

        Called on every poll of the chain (pin events included). While the fingerprint of the
        held secret differs from a set pin, the node serves no app operation and never gives
        the secret (or a proof of it) to a peer; once the pin matches again, or is reset, it
        serves again: the secret itself never changes (DESIGN §6).

        Args:
            pin: ``"0x"`` + 64 hex of ``KMSRegistry.masterSecretHash``, or None when unset.
        """
        mismatch = (
            pin is not None
            and self.master_secret is not None
            and secret_fingerprint(self.master_secret) != pin.lower()
        )
        changed = mismatch != self.pin_mismatch
        self.pin_mismatch = mismatch
        self.pin = None if pin is None else pin.lower()
        return changed

    def require_pinned(self) -> None:
        """For app operations: the secret must be held and, when required, pinned by the owner.

        Raises:
            Unavailable: as :meth:`require_secret`; ``unpinned`` while the owner has not pinned
                the held secret's fingerprint (``status`` shows it; ``novakms admin
                pin-secret``), when ``require_pin``.
        """
        self.require_secret()
        if self.require_pin and self.pin is None:
            raise Unavailable(
                "the owner has not pinned this cluster's master secret yet "
                "(KMSRegistry.masterSecretHash); app operations wait for the pin",
                reason="unpinned",
                fingerprint=self.fingerprint(),
            )

    @property
    def serving_apps(self) -> bool:
        """Whether app operations would be served now (secret held, matching, pinned if so)."""
        if self.master_secret is None or self.pin_mismatch:
            return False
        return not (self.require_pin and self.pin is None)

    def apply_replicated(
        self, items: list[Any], *, now_ms: int, source: str
    ) -> tuple[int, list[int], list[int]]:
        """Validate and merge records a peer sent.

        Each record must be well-formed, within the size limits (``max_clock_entries``
        included), not from the future beyond ``max_clock_skew_ms``, and decryptable under this
        node's data key for its app and key; anything else is rejected, counted and logged
        (reason only), never stored. A valid record whose merge would exceed the app quota or
        the global cap is deferred: not stored now, for the sender to keep and retry.

        Returns:
            (accepted, indexes of the rejected, indexes of the deferred).
        """
        store = self.require_store()
        accepted = 0
        rejected: list[int] = []
        deferred: list[int] = []
        for index, item in enumerate(items):
            try:
                record = replication.record_from_wire(
                    item,
                    limits=self.limits,
                    now_ms=now_ms,
                    max_skew_ms=self.limits.max_clock_skew_ms,
                )
                replication.check_decryptable(record, self.data_key)
            except replication.InvalidRecord as exc:
                rejected.append(index)
                self.replication_rejected += 1
                get_logger("novakms.server.node", node=self.wallet).warning(
                    "replicated_record_rejected", peer=source, reason=exc.reason
                )
                continue
            previous = store.record(record.app_id, record.key)
            try:
                store.merge(record)
            except QuotaExceeded:
                deferred.append(index)
                self.replication_deferred += 1
                continue
            accepted += 1
            if self.replica_listener is not None:
                self.replica_listener(record, previous, source)
        return accepted, rejected, deferred

    def log_secret_served(self, wallet: str) -> None:
        """Record that the secret went to a peer (the wallet only, never the secret)."""
        get_logger("novakms.server.node", node=self.wallet).info("secret_served", peer=wallet)

    def require_store(self) -> KVStore:
        """The KV store (exists once the node has its secret).

        Raises:
            Unavailable: reason ``not_ready``.
        """
        if self.store is None:
            raise self.not_ready.fresh()
        return self.store

    def serving_store(self) -> KVStore:
        """The KV store for app operations: only once the node has caught up with the cluster.

        Raises:
            Unavailable: ``not_ready`` without a secret; ``syncing`` while the first snapshot
                is still arriving.
        """
        store = self.require_store()
        self.require_secret()  # the pin may have turned against the held secret
        if self.syncing:
            raise Unavailable(
                "this node is still receiving the cluster's data; try another node or retry",
                reason="syncing",
            )
        return store

    def data_key(self, app_id: int) -> bytes:
        """The app's internal data key (cached)."""
        key = self._data_keys.get(app_id)
        if key is None:
            key = self._data_keys[app_id] = aead.data_key(
                master_secret=self.require_secret(), app_id=app_id
            )
        return key

    def ca_pem(self, app_id: int) -> str:
        """The app's CA certificate in PEM (deterministic; cached)."""
        secret = self.require_secret()  # also when cached: the pin may have turned against it
        pem = self._ca_pems.get(app_id)
        if pem is None:
            pem = ca_certificate_pem(master_secret=secret, app_id=app_id)
            if len(self._ca_pems) >= _CA_CACHE_SIZE:  # anyone may ask for any app id: stay bounded
                del self._ca_pems[next(iter(self._ca_pems))]
            self._ca_pems[app_id] = pem
        return pem

    def fingerprint(self) -> str | None:
        """Keccak-256 fingerprint of the master secret (safe to publish), or None."""
        return None if self.master_secret is None else secret_fingerprint(self.master_secret)
