"""Peer links: one per current peer, its proven channel, and its health (failures, backoff).

A :class:`PeerLink` is everything this node keeps about one peer: the channel it dialed (a
:class:`~novakms.client.aio.Client` on which ``sync.hello`` proved the cluster secret both
ways), the outbox of local changes not yet pushed to it, what it last said about itself (boot,
catch-up state) and the counters ``status`` reports. :class:`PeerLinks` owns the dialing: one
dial at a time per peer, a channel dialed to a peer process that is gone is dropped, and every
failure backs the peer off with jittered exponential delays (``peer_backoff_max``).

Who uses them: :mod:`.pushing` (outboxes, acknowledgements), :mod:`.anti_entropy` (pulls,
snapshot, tombstone GC) and :mod:`.replicator` (membership, presence, status).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from novakms.client.aio import Client
from novakms.cluster import replication
from novakms.cluster import sync_messages as msg
from novakms.cluster.bootstrap import REASON_NOT_READY
from novakms.cluster.peering import PeerConnector
from novakms.cluster.proof import cluster_proof, verify_cluster_proof
from novakms.config import Limits
from novakms.errors import BadRequest, NovaKMSError, ProtocolError, Unavailable
from novakms.log import BoundLogger
from novakms.server.keyring import Keyring

__all__ = ["PeerLink", "PeerLinks"]


@dataclass(eq=False)
class PeerLink:
    """One peer, as this node keeps it."""

    wallet: str
    address: str
    outbox: replication.Outbox = field(default_factory=replication.Outbox)
    client: Client | None = None
    connecting: trio.Lock = field(default_factory=trio.Lock)  # one dial at a time per peer
    failures: int = 0
    next_try: float = 0.0
    last_ok: float | None = None  # unix seconds
    pushed: int = 0
    pulled: int = 0
    acked: int = 0  # records the peer acknowledged (sync.push answers)
    last_ack: float | None = None  # unix seconds
    inflight: set[tuple[int, str]] = field(default_factory=set)  # keys of the batch being pushed
    inflight_since: int | None = None  # queue time (unix ms) of the oldest change in flight
    error: str | None = None
    protocol_errors: int = 0  # answers out of protocol (each one reset the link)
    deferred: int = 0  # records the peer refused for its quota (kept queued, resent later)
    hold_until: float = 0.0  # trio time: no pushes before (the peer's quota was full)
    boot: bytes | None = None  # the peer's process lifetime, as it last said (sync.hello)
    state: str | None = None  # its catch-up state, as it last said (hello, digests)
    client_boot: bytes | None = None  # the boot the peer had when `client` was dialed
    pushing: trio.Lock = field(default_factory=trio.Lock)  # one push at a time per peer
    returned_round: int | None = None  # push round at which the peer came back (logging)
    returned_backlog: int = 0  # records queued for it when it came back

    def probe(self) -> dict[str, Any]:
        """Reachability as ``nodes`` and ``status`` report it."""
        return {
            "connected": self.client is not None,
            "last_ok_ms": None if self.last_ok is None else int(self.last_ok * 1000),
            "error": self.error,
        }

    def lag_ms(self, now_ms: int) -> int:
        """Age of the oldest local change this peer has not acknowledged (0: none)."""
        times = [t for t in (self.outbox.oldest_ms(), self.inflight_since) if t is not None]
        return max(0, now_ms - min(times)) if times else 0


class PeerLinks:
    """The current peers' links and their channels.

    Args:
        limits: ``peer_timeout``, ``max_frame``, ``peer_backoff_max``.
        keyring: the cluster secret the channels are proven with.
        connector: dials the peers.
        hello_info: what this node says about itself in ``sync.hello`` (boot, state).
        on_hello: called with what a peer said about itself in its ``sync.hello`` answer.
        log: the replication logger.
    """

    def __init__(
        self,
        *,
        limits: Limits,
        keyring: Keyring,
        connector: PeerConnector,
        hello_info: Callable[[], dict[str, Any]],
        on_hello: Callable[[PeerLink, msg.PeerInfo], None],
        log: BoundLogger,
    ) -> None:
        self.by_wallet: dict[str, PeerLink] = {}
        self._limits = limits
        self._keyring = keyring
        self._connector = connector
        self._hello_info = hello_info
        self._on_hello = on_hello
        self._log = log
        self._jitter = random.Random(os.urandom(8))  # backoff jitter only; not security relevant  # noqa: S311

    def now_ms(self) -> int:
        """Unix milliseconds by the node's clock (queue times, acknowledgements, validation)."""
        return self._connector.now_ms()

    def now(self) -> float:
        """Unix seconds by the node's clock."""
        return self._connector.clock()

    async def channel(self, link: PeerLink) -> Client:
        """The link's proven channel, dialed now if there is none.

        Raises:
            Unavailable: ``peer_backoff`` while the peer is backing off; ``bad_cluster_proof``.
            NovaKMSError: the dial or the hello failed.
        """
        # The push and anti-entropy loops share the channel: without the lock both could dial
        # at once and one client would be overwritten without being closed.
        async with link.connecting:
            if link.client is not None and link.client_boot != link.boot:
                await self.drop(link)  # dialed to a process of the peer that is gone
            if link.client is None:
                link.client = await self._dial(link)
            return link.client

    async def _dial(self, link: PeerLink) -> Client:
        if trio.current_time() < link.next_try:
            raise Unavailable("backing off after a failure", reason="peer_backoff")
        secret = self._keyring.require_secret()
        client = await self._connector.connect(
            link.address,
            expect_wallet=link.wallet,
            timeout=self._limits.peer_timeout,
            max_frame=self._limits.max_frame,  # peers' answers are sized by the same limit
        )
        try:
            proof = cluster_proof(
                master_secret=secret, transcript_hash=client.transcript_hash, direction="c2s"
            )
            try:
                raw = await client.call("sync.hello", {"proof": proof, **self._hello_info()})
            except BadRequest:
                # A node that predates boot and state (a rolling upgrade): the proof alone.
                raw = await client.call("sync.hello", {"proof": proof})
            answer = msg.parse_hello_answer(raw)
        except BaseException:
            await client.aclose()
            raise
        if not verify_cluster_proof(
            master_secret=secret,
            transcript_hash=client.transcript_hash,
            direction="s2c",
            proof=answer.proof,
        ):
            await client.aclose()
            raise Unavailable(
                "the peer does not hold this cluster's secret", reason="bad_cluster_proof"
            )
        self._on_hello(link, answer.info)
        link.client_boot = link.boot
        return client

    async def drop(self, link: PeerLink) -> None:
        """Close the link's channel (the next use dials again)."""
        if link.client is not None:
            await link.client.aclose()
            link.client = None

    async def failed(self, link: PeerLink, failure: NovaKMSError | trio.TooSlowError) -> None:
        """A call on the link failed: drop the channel, count it, back the peer off."""
        exc = (
            failure
            if isinstance(failure, NovaKMSError)
            else Unavailable("the peer did not answer in time", reason="peer_timeout")
        )
        if isinstance(exc, Unavailable) and exc.reason == "peer_backoff":
            return  # not an attempt: must not lengthen the backoff
        await self.drop(link)
        if isinstance(exc, ProtocolError):
            link.protocol_errors += 1
            self._log.warning("peer_protocol_error", peer=link.wallet, error=exc.message)
        link.failures += 1
        link.error = exc.message
        # Bounded to a few seconds: a peer that comes back is also noticed at once (its hello).
        base = min(self._limits.peer_backoff_max, 0.1 * 2 ** min(link.failures, 10))
        delay = base * (0.5 + self._jitter.random())
        link.next_try = trio.current_time() + delay
        if link.failures == 1:
            if isinstance(exc, Unavailable) and exc.reason == REASON_NOT_READY:
                # It answered: it is still bootstrapping its secret, the normal state of a
                # starting cluster. Not a warning; it is dialed again after the backoff.
                self._log.info("peer_not_ready", peer=link.wallet, error=exc.message)
            else:
                self._log.warning("peer_unreachable", peer=link.wallet, error=exc.message)

    def succeeded(self, link: PeerLink) -> None:
        """A call on the link succeeded: the peer is reachable, its backoff is over."""
        if link.failures:
            self._log.info("peer_reachable", peer=link.wallet)
        link.failures, link.error, link.next_try = 0, None, 0.0
        link.last_ok = self._connector.clock()
