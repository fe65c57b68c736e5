"""One KMS node, composed: who owns what, and the one place that builds it.

A :class:`Node` is the composition root of a node's collaborators; it holds no serving state of
its own. Each piece of state has one owner, and only the owner changes it:

=================  ============================================================================
collaborator       owns
=================  ============================================================================
``keyring``        the master secret, ``not_ready``, the pin and ``pin_mismatch``,
                   ``require_pin``, the guardian recovery pool, data keys, CA cache
                   (:mod:`novakms.server.keyring`)
``gate``           the KV store, ``syncing`` / ``degraded``, the replicated-record intake and
                   its counters (:mod:`novakms.server.store_gate`)
``registry``       the request path's authorization (``authorize_app`` / ``authorize_peer`` /
                   ``describe``; :class:`novakms.auth.source.Registry`)
``membership``     operators, the owner's pin, guardians, the poller
                   (:class:`novakms.auth.source.Membership`), or None: a node without one runs
                   no replicator, no pin watch, no poller and no bootstrap
``replicator``     peer links, outboxes, catch-up (:mod:`novakms.cluster.replicator`); present
                   exactly when ``membership`` is and the node is no stateless worker; ops and
                   ``status`` read it through
                   :class:`~novakms.cluster.replicator.ReplicationView` where they only read
``consensus``      conditional writes: this node's CASPaxos coordinator and acceptor, its
                   recovery after a start (:mod:`novakms.cluster.consensus`); absent on a
                   stateless worker
``connector``      how peers are dialed (signer, egress proxy, injected dialer)
limiters           the token buckets (per wallet, per source for handshakes and anonymous calls)
=================  ============================================================================

A **stateless worker** (``stateless_worker=True``; ``novakms serve --reuse-port``) is one of
several processes serving one node's port (docs/scaling.md): it holds the configured master
secret and serves everything that needs only the secret and the registry, but no store op
(``dispatch.STORE_OPS``: ``unavailable``, reason ``stateless_worker``), runs no replicator and
no bootstrap (workers bootstrapping alone could each generate a different secret).

The server (:mod:`novakms.server.server`) owns the connections and runs the node's tasks; the
ops (:mod:`novakms.server.ops`) see a node only through an
:class:`~novakms.server.ops.context.OpContext`.

:func:`build_node` is the one way to make a node from configuration.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from novakms import __version__
from novakms.auth.ratelimit import KeyedRateLimiter
from novakms.auth.source import Membership, Registry
from novakms.cluster.consensus import Consensus
from novakms.cluster.peering import Bootstrap, PeerConnector
from novakms.cluster.replicator import Replicator
from novakms.config import Limits, Mode, ServerConfig
from novakms.crypto.signer import Signer
from novakms.errors import Unavailable
from novakms.net.dial import Dialer
from novakms.server.keyring import Keyring
from novakms.server.store_gate import StoreGate
from novakms.store.kv import KVStore

__all__ = ["Node", "build_node"]


class Node:
    """A node's collaborators (see the module docstring for who owns what).

    Args:
        signer: the node's wallet signer (local key in development, Odyn in an enclave).
        registry: where app and peer authorization comes from.
        limits: all limits.
        mode: development or enclave.
        membership: the cluster's view of the registry, or None (a lone node).
        master_secret: the cluster master secret when configured; None gets it from the
            cluster (the bootstrap) or from the guardians.
        random_bytes: the RNG for value nonces, certificate serials, handshakes.
        clock: wall clock in unix seconds, for auth timestamps, rate limits and ``now``.
        peer_proxy: an HTTP CONNECT proxy through which TCP peers are dialed (enclave egress).
        dial: opens peer streams instead of the network (tests' in-memory network).
        require_pin: serve app operations only under a secret the owner pinned; always on in
            enclave mode (None: by the mode).
        version: the version ``status`` reports.
        stateless_worker: one of several worker processes of this node (module docstring):
            no replicator, store ops refused.

    Raises:
        ValueError: ``master_secret`` is not 32 bytes, or a stateless worker without one.
    """

    def __init__(
        self,
        *,
        signer: Signer,
        registry: Registry,
        limits: Limits,
        mode: Mode,
        membership: Membership | None = None,
        master_secret: bytes | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        clock: Callable[[], float] = time.time,
        peer_proxy: str | None = None,
        dial: Dialer | None = None,
        require_pin: bool | None = None,
        version: str = __version__,
        stateless_worker: bool = False,
    ) -> None:
        if stateless_worker and master_secret is None:
            raise ValueError("a stateless worker needs the master secret configured")
        self.stateless_worker = stateless_worker
        self.signer = signer
        self.limits = limits
        self.mode = mode
        self.version = version
        self.random_bytes = random_bytes
        self.clock = clock
        self._registry = registry
        self.membership = membership
        self.connector = PeerConnector(signer=signer, proxy=peer_proxy, dial=dial, clock=clock)
        # Production never serves an unpinned secret.
        pinned_only = True if mode is Mode.ENCLAVE else bool(require_pin)
        self.keyring = Keyring(require_pin=pinned_only, share_ttl=limits.share_ttl)
        self.gate = StoreGate(
            wallet=signer.wallet, limits=limits, keyring=self.keyring, random_bytes=random_bytes
        )
        self.replicator: Replicator | None = None
        if membership is not None and not stateless_worker:
            self.replicator = Replicator(
                wallet=signer.wallet,
                limits=limits,
                keyring=self.keyring,
                gate=self.gate,
                membership=membership,
                connector=self.connector,
            )
        elif master_secret is None:
            self.keyring.set_not_ready(
                Unavailable(
                    "bootstrapping the master secret: the authorization source lists no peers",
                    reason="not_ready",
                )
            )
        self.consensus: Consensus | None = None
        if not stateless_worker:
            self.consensus = Consensus(
                wallet=signer.wallet,
                limits=limits,
                keyring=self.keyring,
                gate=self.gate,
                replicator=self.replicator,
                clock=clock,
            )
        self.wallet_limiter = KeyedRateLimiter(rate=limits.wallet_rate, burst=limits.wallet_burst)
        self.handshake_limiter = KeyedRateLimiter(
            rate=limits.handshake_rate, burst=limits.handshake_burst
        )
        self.anonymous_limiter = KeyedRateLimiter(
            rate=limits.anonymous_rate, burst=limits.anonymous_burst
        )
        self._connection_count: Callable[[], int] = lambda: 0
        if master_secret is not None:
            self.keyring.install_secret(master_secret)

    def __repr__(self) -> str:
        return f"Node(wallet={self.wallet!r}, mode={self.mode.value!r})"

    # -- the registry (swappable: tests wrap it to slow or count authorizations) ---------------

    @property
    def registry(self) -> Registry:
        """The authorization source of the request path."""
        return self._registry

    @registry.setter
    def registry(self, registry: Registry) -> None:
        # Requests read the registry when they start: a swap applies to the next request.
        self._registry = registry

    @property
    def bootstrap(self) -> Bootstrap | None:
        """The bootstrap's collaborators (None without a membership: nobody to ask)."""
        if self.membership is None:
            return None
        return Bootstrap(
            wallet=self.wallet,
            membership=self.membership,
            keyring=self.keyring,
            connector=self.connector,
        )

    # -- the server's count of open connections ------------------------------------------------

    def count_connections_with(self, count: Callable[[], int]) -> None:
        """Where ``status`` reads the number of open connections (the server binds it)."""
        self._connection_count = count

    @property
    def connections(self) -> int:
        """Open connections (as the serving server counts them)."""
        return self._connection_count()

    # -- read-only views of the collaborators' state (status, tests) ---------------------------

    @property
    def wallet(self) -> str:
        """This node's wallet."""
        return self.signer.wallet

    @property
    def master_secret(self) -> bytes | None:
        """The keyring's secret, or None."""
        return self.keyring.master_secret

    @property
    def not_ready(self) -> Unavailable:
        """Why the node has no secret (the keyring's bootstrap verdict)."""
        return self.keyring.not_ready

    @property
    def pin_mismatch(self) -> bool:
        """Whether the held secret differs from the owner's pin."""
        return self.keyring.pin_mismatch

    @property
    def serving_apps(self) -> bool:
        """Whether app operations would be served now (the keyring's verdict)."""
        return self.keyring.serving_apps

    @property
    def store(self) -> KVStore | None:
        """The store gate's KV store, or None."""
        return self.gate.store

    @property
    def syncing(self) -> bool:
        """Whether the node is still catching up with the cluster."""
        return self.gate.syncing

    @property
    def degraded(self) -> str | None:
        """Why the node serves unconfirmed, or None."""
        return self.gate.degraded

    @property
    def replication_rejected(self) -> int:
        """Replicated records refused as invalid (the gate's count)."""
        return self.gate.rejected

    @property
    def replication_deferred(self) -> int:
        """Valid replicated records refused by the quota (the gate's count)."""
        return self.gate.deferred

    def fingerprint(self) -> str | None:
        """The master secret's fingerprint, or None."""
        return self.keyring.fingerprint()


def build_node(
    *,
    config: ServerConfig,
    signer: Signer,
    registry: Registry,
    membership: Membership | None,
    secret: bytes | None = None,
    peer_proxy: str | None = None,
    dial: Dialer | None = None,
    require_pin: bool | None = None,
    random_bytes: Callable[[int], bytes] = os.urandom,
    clock: Callable[[], float] = time.time,
    stateless_worker: bool = False,
) -> Node:
    """Compose a node from its configuration (the one composition root).

    Args:
        config: the mode and limits (the listen addresses are :func:`serve`'s).
        signer: the node's wallet signer.
        registry: the authorization source.
        membership: the cluster's view of the registry (usually the same source), or None.
        secret: the master secret, when configured (development, bring your own secret).
        peer_proxy: an HTTP CONNECT proxy for dialing TCP peers (enclave egress).
        dial: opens peer streams instead of the network (tests).
        require_pin: serve app operations only under a pinned secret (on in enclave mode).
        random_bytes: the RNG.
        clock: the wall clock (unix seconds).
        stateless_worker: one of several worker processes sharing the node's port (no
            replicator, store ops refused; needs ``secret``).

    Returns:
        The node, ready for :func:`novakms.server.server.serve`.

    Raises:
        ValueError: ``secret`` is not 32 bytes, or a stateless worker without a secret.
    """
    return Node(
        signer=signer,
        registry=registry,
        membership=membership,
        limits=config.limits,
        mode=config.mode,
        master_secret=secret,
        random_bytes=random_bytes,
        clock=clock,
        peer_proxy=peer_proxy,
        dial=dial,
        require_pin=require_pin,
        stateless_worker=stateless_worker,
    )
