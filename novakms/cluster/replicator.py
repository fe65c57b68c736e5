"""Replicating the KV store to every peer: the replicator and what ``status`` reads of it.

The trio glue around :mod:`novakms.cluster.replication`, in four modules of one concept each:

* :mod:`.links` — one :class:`~novakms.cluster.links.PeerLink` per current peer: its proven
  channel (every channel first runs ``sync.hello``: both sides prove the cluster secret, bound
  to the channel's transcript hash), its outbox and counters, jittered exponential backoff;
* :mod:`.pushing` — every local change lands in one outbox per peer, pushed in frame-sized
  batches every ``push_interval`` (at once when a ``kv.put`` waits for ``acks``); the
  ``sync.push`` answer is the acknowledgement (acks, lag, holders, tombstone GC); on a graceful
  shutdown :meth:`Replicator.drain` pushes every outbox once more, after the server's
  connections have drained and before the node's tasks are cancelled;
* :mod:`.anti_entropy` — digests, buckets, key hashes and pulls against every peer each
  ``anti_entropy_interval``; a joiner's snapshot and first pass (``syncing``, then ``serving``
  or ``degraded``: ``cluster.readiness``); early tombstone GC;
* this module — :class:`Replicator` composes them and owns the membership (the active
  operators, from :class:`~novakms.auth.source.Membership`) and presence: ``sync.hello`` and
  ``sync.digests`` carry each side's ``boot`` (random per process start) and catch-up state; a
  peer with a new boot restarted and holds nothing it held before, and a peer that comes back
  (a new boot, or after failures) gets its backlog pushed at once, its backoff reset, and an
  anti-entropy round ahead of the schedule. :class:`~novakms.cluster.readiness.Holders` tracks
  which peer holds each key's current record (the sender, an acknowledgement, equal digests),
  which with the peers connected now gives ``status.safe_to_stop``.

Ops and ``status`` that only read use :class:`ReplicationView`. The replicator changes the
store gate's catch-up state only through its methods (``finish_catch_up``,
``confirm_caught_up``) and subscribes to the store through ``StoreGate.attach``.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any, Protocol

import trio

from novakms.auth.model import peer_address
from novakms.auth.source import Membership
from novakms.client.aio import Client
from novakms.cluster import readiness, replication
from novakms.cluster import sync_messages as msg
from novakms.cluster.anti_entropy import AntiEntropy
from novakms.cluster.links import PeerLink, PeerLinks
from novakms.cluster.peering import PeerConnector
from novakms.cluster.pushing import Pusher
from novakms.config import Limits
from novakms.errors import NovaKMSError
from novakms.log import get_logger
from novakms.server.keyring import Keyring
from novakms.server.store_gate import StoreGate
from novakms.store.records import Record

__all__ = ["ReplicationView", "Replicator"]

_POLL = 0.05  # seconds between checks while waiting for the store


class ReplicationView(Protocol):
    """What ``status``, ``nodes`` and the ops read of the replicator (nothing they may change)."""

    @property
    def boot(self) -> bytes:
        """This process lifetime's random id (told to peers; not secret)."""
        ...

    @property
    def state(self) -> readiness.State:
        """This node's catch-up state, as peers are told."""
        ...

    @property
    def unreachable(self) -> list[str]:
        """Peers the catch-up could not reach."""
        ...

    @property
    def tombstones_collected(self) -> int:
        """Tombstones forgotten early because every peer acknowledged them."""
        ...

    def safe_to_stop(self) -> tuple[str | None, int]:
        """(why this node is not safe to stop, or None; keys no connected peer holds)."""
        ...

    def describe(self, now_ms: int) -> list[dict[str, Any]]:
        """Per-peer state for ``status``."""
        ...

    def probe(self, wallet: str) -> dict[str, Any] | None:
        """Reachability of a current peer (None for this node and non-peers)."""
        ...

    def snapshot_status(self) -> dict[str, Any]:
        """The joiner's snapshot progress."""
        ...

    def peer_count(self) -> int:
        """Current peers."""
        ...

    def has_pending(self, app_id: int, key: str) -> bool:
        """Whether a local change of the key has not yet reached some peer."""
        ...


class Replicator:
    """Keeps this node's store in step with every active peer.

    Args:
        wallet: this node's wallet.
        limits: all limits.
        keyring: the master secret (the replicator waits for it: the bootstrap installs it).
        gate: the store; the replicator reports the catch-up through it.
        membership: the active operators.
        connector: dials the peers.
    """

    def __init__(
        self,
        *,
        wallet: str,
        limits: Limits,
        keyring: Keyring,
        gate: StoreGate,
        membership: Membership,
        connector: PeerConnector,
    ) -> None:
        self.wallet = wallet
        self.limits = limits
        self._keyring = keyring
        self._gate = gate
        self._membership = membership
        self._membership_known = False
        # This process lifetime (not secret); sorts after the node's earlier boots.
        self.boot = msg.new_boot(time.time_ns(), os.urandom(msg.BOOT_BYTES - 8))
        self.holders = readiness.Holders()
        self.tombstone_acks = replication.TombstoneAcks()
        # Proven channels each peer holds open to this node now (kept apart from the links: a
        # peer may dial before this node's first membership refresh), and what it said.
        self._inbound: Counter[str] = Counter()
        self._heard: dict[str, msg.PeerInfo] = {}
        self._log = get_logger("novakms.replication", node=wallet)
        self._links = PeerLinks(
            limits=limits,
            keyring=keyring,
            connector=connector,
            hello_info=self._self_info,
            on_hello=self._learned,
            log=self._log,
        )
        self.pusher = Pusher(
            limits=limits,
            links=self._links,
            gate=gate,
            holders=self.holders,
            tombstone_acks=self.tombstone_acks,
            log=self._log,
        )
        self.anti_entropy = AntiEntropy(
            limits=limits,
            links=self._links,
            gate=gate,
            holders=self.holders,
            tombstone_acks=self.tombstone_acks,
            has_pending=self.pusher.has_pending,
            state=lambda: gate.catch_up_state,
            membership_known=lambda: self._membership_known,
            log=self._log,
        )

    @property
    def membership_known(self) -> bool:
        """Whether the peer set has been read from the membership at least once."""
        return self._membership_known

    @property
    def links(self) -> dict[str, PeerLink]:
        """The current peers' links, by wallet."""
        return self._links.by_wallet

    async def channel(self, link: PeerLink) -> Client:
        """The proven channel to ``link``'s peer, dialed if needed (``links.PeerLinks``)."""
        return await self._links.channel(link)

    # -- what peers and the store tell ------------------------------------------------------

    def present(self, wallet: str) -> bool:
        """Whether the peer is connected to this node now (holds a proven channel open)."""
        return self._inbound[wallet] > 0

    def _on_replicated(self, record: Record, previous: Record | None, source: str) -> None:
        """A record from ``source`` was merged: ``source`` holds our current record if it won."""
        store = self._gate.require_store()
        slot = (record.app_id, record.key)
        current = store.record(*slot)
        if current is None or current.order_key() != record.order_key():
            return  # ours is newer: the peer does not hold it (it pulls it in its own round)
        if previous is not None and previous.order_key() == record.order_key():
            self.holders.add(source, [slot])
        else:
            self.holders.changed_from(slot, source)

    @property
    def state(self) -> readiness.State:
        """This node's catch-up state, as peers are told."""
        return self._gate.catch_up_state

    def _self_info(self) -> dict[str, Any]:
        return {"boot": self.boot, "state": self.state}

    def peer_info(self, wallet: str, info: msg.PeerInfo) -> None:
        """What a peer said about itself (its ``sync.hello`` to us, or its answer to ours)."""
        link = self.links.get(wallet)
        if link is not None:
            self._learned(link, info)

    def _learned(self, link: PeerLink, info: msg.PeerInfo) -> None:
        if info.state is not None:
            if link.state == "syncing" and info.state != "syncing":
                # It caught up: compare digests with it now, not at the next scheduled round
                # (that is what tells this node the peer holds its data: safe_to_stop).
                self.anti_entropy.prioritize(link.wallet)
            link.state = info.state
        if info.boot is None or info.boot == link.boot:
            return
        if link.boot is not None:
            # A new process: nothing it held before is held any more.
            self.holders.forget_peer(link.wallet)
            self._log.info("peer_restarted", peer=link.wallet)
            self._returned(link)
        link.boot = info.boot

    def _returned(self, link: PeerLink) -> None:
        """The peer is back: push its backlog now and run anti-entropy with it next."""
        link.failures, link.next_try, link.hold_until = 0, 0.0, 0.0
        # The backlog may already be on its way: a retry's dial is what noticed the return.
        backlog = link.outbox.pending() + len(link.inflight)
        if link.returned_round is None and backlog:
            link.returned_round = self.pusher.rounds
            link.returned_backlog = backlog
        self.pusher.push_soon()
        self.anti_entropy.prioritize(link.wallet)

    def inbound_opened(self, wallet: str, info: msg.PeerInfo) -> None:
        """A peer proved the cluster secret on a channel it dialed (``sync.hello``)."""
        self._inbound[wallet] += 1
        link = self.links.get(wallet)
        if link is None:
            self._heard[wallet] = info  # applied when the membership brings the link
            return
        self._learned(link, info)
        if link.failures or trio.current_time() < link.next_try:
            self._log.info("peer_reachable", peer=link.wallet, via="inbound")
            self._returned(link)

    def inbound_closed(self, wallet: str) -> None:
        """A channel the peer dialed is gone."""
        self._inbound[wallet] -= 1
        if self._inbound[wallet] <= 0:
            del self._inbound[wallet]

    # -- status (ReplicationView) -----------------------------------------------------------

    @property
    def unreachable(self) -> list[str]:
        """Peers the catch-up could not reach."""
        return self.anti_entropy.unreachable

    @property
    def tombstones_collected(self) -> int:
        """Tombstones forgotten early because every peer acknowledged them."""
        return self.anti_entropy.tombstones_collected

    def safe_to_stop(self) -> tuple[str | None, int]:
        """(why this node is not safe to stop, or None; keys no connected peer holds)."""
        store = self._gate.store
        if store is None or not self._keyring.initialized:
            return None, 0
        present = [wallet for wallet in self.links if self.present(wallet)]
        slots = [(r.app_id, r.key) for r in store.records()]
        unconfirmed = self.holders.unconfirmed(slots, present)
        if len(self.holders) > 2 * len(slots) + 1024:
            self.holders.retain(slots)  # swept and forgotten keys
        reason = readiness.stop_verdict(
            started=True,
            state=self.state,
            peer_states=[self.links[wallet].state for wallet in present],
            unconfirmed=unconfirmed,
        )
        return reason, unconfirmed

    def describe(self, now_ms: int) -> list[dict[str, Any]]:
        """Per-peer state for ``status`` (no secrets)."""
        return [
            {
                "wallet": link.wallet,
                "address": link.address,
                **link.probe(),
                "pending": link.outbox.pending(),
                "lag_ms": link.lag_ms(now_ms),
                "pushed": link.pushed,
                "acked": link.acked,
                "pulled": link.pulled,
                "last_ack_ms": None if link.last_ack is None else int(link.last_ack * 1000),
                "protocol_errors": link.protocol_errors,
                "deferred": link.deferred,
                "state": link.state,
                "present": self.present(link.wallet),
            }
            for link in self.links.values()
        ]

    def probe(self, wallet: str) -> dict[str, Any] | None:
        """Reachability of a current peer (None for this node and non-peers)."""
        link = self.links.get(wallet)
        return None if link is None else link.probe()

    def snapshot_status(self) -> dict[str, Any]:
        """The joiner's snapshot progress for ``status`` (keys are not shown)."""
        return self.anti_entropy.snapshot_status()

    def peer_count(self) -> int:
        """Current peers (active KMS operators other than this node)."""
        return len(self.links)

    def has_pending(self, app_id: int, key: str) -> bool:
        """Whether a local change of the key has not yet reached some peer."""
        return self.pusher.has_pending(app_id, key)

    async def wait_acks(self, record: Record, needed: int, *, timeout: float) -> int:
        """Wait until ``needed`` peers acknowledged ``record`` (or a newer record of its key).

        Returns:
            How many peers acknowledged it (fewer than ``needed`` when ``timeout`` ran out).
        """
        return await self.pusher.wait_acks(record, needed, timeout=timeout)

    async def drain(self, timeout: float) -> int:
        """Push every outbox once more (shutdown); returns the records left unpushed."""
        return await self.pusher.drain(timeout)

    # -- running ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Replicate until cancelled."""
        while self._gate.store is None:  # the bootstrap installs it  # noqa: ASYNC110
            await trio.sleep(_POLL)
        self._gate.attach(local=self.pusher.on_local_change, replicated=self._on_replicated)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._membership_loop)
                nursery.start_soon(self.pusher.run)
                nursery.start_soon(self.anti_entropy.run)
                nursery.start_soon(self.anti_entropy.run_priority)
        finally:
            with trio.CancelScope(shield=True):
                for link in self.links.values():
                    await self._links.drop(link)

    async def refresh_peers(self) -> None:
        """Follow the active operator set (new peers start empty: anti-entropy fills them)."""
        try:
            entries = await self._membership.peers()
        except NovaKMSError:
            return
        active = {}
        for entry in entries:
            # The peer policy's verdict (revoked versions, inactive apps, … are out).
            if entry["wallet"] == self.wallet or entry.get("authorized") is not True:
                continue
            try:
                active[entry["wallet"]] = peer_address(str(entry["instance_url"]))
            except ValueError:
                continue
        for wallet in list(self.links):
            if wallet not in active:
                await self._links.drop(self.links.pop(wallet))
        for wallet, address in active.items():
            if wallet not in self.links:
                link = self.links[wallet] = PeerLink(wallet=wallet, address=address)
                heard = self._heard.pop(wallet, None)
                if heard is not None:
                    self._learned(link, heard)
        self._membership_known = True

    async def _membership_loop(self) -> None:
        while True:
            await self.refresh_peers()
            await trio.sleep(self.limits.bootstrap_interval)
