"""Replicating the KV store to every peer: prompt pushes, and anti-entropy that repairs the rest.

The trio glue around :mod:`novakms.cluster.replication`:

* every local change (write, delete, eviction tombstone) lands in one outbox per peer; every
  ``push_interval`` each outbox is drained in frame-sized batches to ``sync.push``; a batch that
  fails goes back into its outbox and the peer is retried with jittered exponential backoff;
* every ``anti_entropy_interval`` each peer's app digests are compared with ours, differing apps
  are narrowed down by bucket and key hashes, and the records that differ are pulled
  (``sync.pull``) and merged — so missed pushes, partitions and late joiners converge;
* every channel first runs ``sync.hello``: both sides prove the cluster secret, bound to the
  channel's transcript hash;
* a node that fetched its secret from the cluster (a joiner: every restarted node is one) first
  streams a snapshot (``sync.snapshot``, one frame-sized chunk per call, resuming after the last
  key received — from the same or another peer — when a connection drops), then runs one
  anti-entropy pass against every peer, and serves ``unavailable: syncing`` until then; when no
  peer it merged from was caught up, or a peer stayed unreachable for ``catch_up_timeout``, it
  serves ``degraded`` until a later pass succeeds against every peer (``cluster.readiness``);
* ``sync.hello`` and ``sync.digests`` carry each side's ``boot`` (random per process start) and
  catch-up state: a peer with a new boot restarted and holds nothing it held before, and a peer
  that comes back (a new boot, or after failures) gets its backlog pushed at once, its backoff
  reset, and an anti-entropy round ahead of the schedule;
* :class:`~novakms.cluster.readiness.Holders` tracks which peer holds each key's current record
  (the sender, an acknowledgement, equal digests), which with the peers connected now gives
  ``status.safe_to_stop``;
* on a graceful shutdown :meth:`Replicator.drain` pushes every outbox once more, after the
  server's connections have drained and before the node's tasks are cancelled;
* the ``sync.push`` answer is the peer's acknowledgement: ``kv.put`` with ``acks`` waits on it
  (and its write is pushed at once rather than after the batching window),
  ``status`` reports per-peer lag from it, and a tombstone every current peer acknowledged is
  forgotten early (after ``tombstone_gc_delay``; all peers first, ``sync.forget``).

Pull-only anti-entropy is enough: every node runs it against every peer.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import trio

from novakms.auth.model import peer_address
from novakms.client.aio import Client
from novakms.cluster import readiness, replication
from novakms.cluster import sync_messages as msg
from novakms.cluster.proof import cluster_proof, verify_cluster_proof
from novakms.errors import BadRequest, NovaKMSError, ProtocolError, Unavailable
from novakms.log import get_logger
from novakms.server.node import Node
from novakms.store.records import Record

__all__ = ["Replicator"]


def _now_ms() -> int:
    return int(time.time() * 1000)


_PULL_KEYS = 256
_POLL = 0.05  # seconds between checks while waiting for the store, the membership, a retry
_BOOT_BYTES = msg.BOOT_BYTES


@dataclass(eq=False)
class _Link:
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


@dataclass(eq=False)
class _Waiter:
    """A ``kv.put`` waiting for acknowledgements of its record (or of a newer one of its key)."""

    order: tuple[Any, ...]
    needed: int
    peers: set[str] = field(default_factory=set)
    done: trio.Event = field(default_factory=trio.Event)


@dataclass(eq=False)
class _Snapshot:
    """The joiner's first snapshot (``status.cluster.snapshot``)."""

    state: str = "none"  # none (not a joiner) | syncing | done
    after: tuple[int, str] | None = None
    chunks: int = 0
    records: int = 0
    resumed: int = 0
    peer: str | None = None


class Replicator:
    """Keeps this node's store in step with every active peer.

    Args:
        node: the node (must eventually have its master secret; the replicator waits for it).
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.limits = node.limits
        self.links: dict[str, _Link] = {}
        self.tombstone_acks = replication.TombstoneAcks()
        self.tombstones_collected = 0
        self._waiters: dict[tuple[int, str], list[_Waiter]] = {}
        self._push_now = trio.Event()
        self._snapshot = _Snapshot()
        self._membership_known = False
        self.boot = os.urandom(_BOOT_BYTES)  # this process lifetime (not secret)
        self.holders = readiness.Holders()
        self.unreachable: list[str] = []  # peers the catch-up could not reach
        self._rounds = 0  # push rounds so far
        self._priority: set[str] = set()  # peers to run anti-entropy with ahead of schedule
        self._priority_now = trio.Event()
        # Proven channels each peer holds open to this node now (kept apart from the links: a
        # peer may dial before this node's first membership refresh), and what it said.
        self._inbound: Counter[str] = Counter()
        self._heard: dict[str, msg.PeerInfo] = {}
        self._log = get_logger("novakms.replication", node=node.wallet)
        self._jitter = random.Random(os.urandom(8))  # backoff jitter only; not security relevant  # noqa: S311

    def present(self, wallet: str) -> bool:
        """Whether the peer is connected to this node now (holds a proven channel open)."""
        return self._inbound[wallet] > 0

    def _on_local_change(self, record: Record) -> None:
        now = _now_ms()
        self.holders.changed_here((record.app_id, record.key))
        for link in self.links.values():
            link.outbox.add(record, now)

    def _on_replicated(self, record: Record, previous: Record | None, source: str) -> None:
        """A record from ``source`` was merged: ``source`` holds our current record if it won."""
        store = self.node.require_store()
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
        return self.node.catch_up_state

    def _self_info(self) -> dict[str, Any]:
        return {"boot": self.boot, "state": self.state}

    def peer_info(self, wallet: str, info: msg.PeerInfo) -> None:
        """What a peer said about itself (its ``sync.hello`` to us, or its answer to ours)."""
        link = self.links.get(wallet)
        if link is not None:
            self._learned(link, info)

    def _learned(self, link: _Link, info: msg.PeerInfo) -> None:
        if info.state is not None:
            if link.state == "syncing" and info.state != "syncing":
                # It caught up: compare digests with it now, not at the next scheduled round
                # (that is what tells this node the peer holds its data: safe_to_stop).
                self._priority.add(link.wallet)
                self._priority_now.set()
            link.state = info.state
        if info.boot is None or info.boot == link.boot:
            return
        if link.boot is not None:
            # A new process: nothing it held before is held any more.
            self.holders.forget_peer(link.wallet)
            self._log.info("peer_restarted", peer=link.wallet)
            self._returned(link)
        link.boot = info.boot

    def _returned(self, link: _Link) -> None:
        """The peer is back: push its backlog now and run anti-entropy with it next."""
        link.failures, link.next_try, link.hold_until = 0, 0.0, 0.0
        # The backlog may already be on its way: a retry's dial is what noticed the return.
        backlog = link.outbox.pending() + len(link.inflight)
        if link.returned_round is None and backlog:
            link.returned_round = self._rounds
            link.returned_backlog = backlog
        self._push_now.set()
        self._priority.add(link.wallet)
        self._priority_now.set()

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

    def safe_to_stop(self) -> tuple[str | None, int]:
        """(why this node is not safe to stop, or None; keys no connected peer holds)."""
        store = self.node.store
        if store is None or self.node.master_secret is None:
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
        snap = self._snapshot
        return {
            "state": snap.state,
            "chunks": snap.chunks,
            "records": snap.records,
            "resumed": snap.resumed,
            "peer": snap.peer,
        }

    def peer_count(self) -> int:
        """Current peers (active KMS operators other than this node)."""
        return len(self.links)

    def has_pending(self, app_id: int, key: str) -> bool:
        """Whether a local change of the key has not yet reached some peer."""
        slot = (app_id, key)
        return any(
            link.outbox.has(app_id, key) or slot in link.inflight for link in self.links.values()
        )

    async def wait_acks(self, record: Record, needed: int, *, timeout: float) -> int:
        """Wait until ``needed`` peers acknowledged ``record`` (or a newer record of its key).

        Returns:
            How many peers acknowledged it (fewer than ``needed`` when ``timeout`` ran out).
        """
        slot = (record.app_id, record.key)
        waiter = _Waiter(order=record.order_key(), needed=needed)
        self._waiters.setdefault(slot, []).append(waiter)
        self._push_now.set()  # someone is waiting: do not hold the write for the batch window
        try:
            with trio.move_on_after(timeout):
                await waiter.done.wait()
        finally:
            waiting = self._waiters[slot]
            waiting.remove(waiter)
            if not waiting:
                del self._waiters[slot]
        return len(waiter.peers)

    def _acknowledged(self, link: _Link, records: list[Record]) -> None:
        link.acked += len(records)
        link.last_ack = time.time()
        store = self.node.require_store()
        held = []
        for record in records:
            current = store.record(record.app_id, record.key)
            if current is not None and record.order_key() >= current.order_key():
                held.append((record.app_id, record.key))
        self.holders.add(link.wallet, held)
        self.tombstone_acks.ack(
            link.wallet, [replication.tombstone_id(r) for r in records if r.sealed is None]
        )
        for record in records:
            for waiter in self._waiters.get((record.app_id, record.key), ()):
                if record.order_key() >= waiter.order:
                    waiter.peers.add(link.wallet)
                    if len(waiter.peers) >= waiter.needed:
                        waiter.done.set()

    async def run(self) -> None:
        """Replicate until cancelled."""
        while self.node.store is None:  # the bootstrap installs it  # noqa: ASYNC110
            await trio.sleep(_POLL)
        assert self.node.store is not None
        self.node.store.listener = self._on_local_change
        self.node.replica_listener = self._on_replicated
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._membership_loop)
                nursery.start_soon(self._push_loop)
                nursery.start_soon(self._anti_entropy_loop)
                nursery.start_soon(self._priority_loop)
        finally:
            with trio.CancelScope(shield=True):
                for link in self.links.values():
                    await self._drop(link)

    # -- membership -------------------------------------------------------------------------

    async def refresh_peers(self) -> None:
        """Follow the active operator set (new peers start empty: anti-entropy fills them)."""
        peers = getattr(self.node.auth, "peers", None)
        if peers is None:
            return
        try:
            entries = await peers()
        except NovaKMSError:
            return
        active = {}
        for entry in entries:
            # The peer policy's verdict (revoked versions, inactive apps, … are out).
            if entry["wallet"] == self.node.wallet or entry.get("authorized") is not True:
                continue
            try:
                active[entry["wallet"]] = peer_address(str(entry["instance_url"]))
            except ValueError:
                continue
        for wallet in list(self.links):
            if wallet not in active:
                await self._drop(self.links.pop(wallet))
        for wallet, address in active.items():
            if wallet not in self.links:
                link = self.links[wallet] = _Link(wallet=wallet, address=address)
                heard = self._heard.pop(wallet, None)
                if heard is not None:
                    self._learned(link, heard)
        self._membership_known = True

    async def _membership_loop(self) -> None:
        while True:
            await self.refresh_peers()
            await trio.sleep(self.limits.bootstrap_interval)

    # -- channels ---------------------------------------------------------------------------

    async def _channel(self, link: _Link) -> Client:
        # The push and anti-entropy loops share the channel: without the lock both could dial
        # at once and one client would be overwritten without being closed.
        async with link.connecting:
            if link.client is not None and link.client_boot != link.boot:
                await self._drop(link)  # dialed to a process of the peer that is gone
            if link.client is None:
                link.client = await self._dial(link)
            return link.client

    async def _dial(self, link: _Link) -> Client:
        if trio.current_time() < link.next_try:
            raise Unavailable("backing off after a failure", reason="peer_backoff")
        secret = self.node.require_secret()
        client = await Client.connect(
            link.address,
            signer=self.node.signer,
            role="peer",
            expect_wallet=link.wallet,
            timeout=self.limits.peer_timeout,
            max_frame=self.limits.max_frame,  # peers' answers are sized by the same limit
            proxy=self.node.peer_proxy,
            dial=self.node.dial,
        )
        try:
            proof = cluster_proof(
                master_secret=secret, transcript_hash=client.transcript_hash, direction="c2s"
            )
            try:
                raw = await client.call("sync.hello", {"proof": proof, **self._self_info()})
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
        self._learned(link, answer.info)
        link.client_boot = link.boot
        return client

    async def _drop(self, link: _Link) -> None:
        if link.client is not None:
            await link.client.aclose()
            link.client = None

    async def _failed(self, link: _Link, failure: NovaKMSError | trio.TooSlowError) -> None:
        exc = (
            failure
            if isinstance(failure, NovaKMSError)
            else Unavailable("the peer did not answer in time", reason="peer_timeout")
        )
        if isinstance(exc, Unavailable) and exc.reason == "peer_backoff":
            return  # not an attempt: must not lengthen the backoff
        await self._drop(link)
        if isinstance(exc, ProtocolError):
            link.protocol_errors += 1
            self._log.warning("peer_protocol_error", peer=link.wallet, error=exc.message)
        link.failures += 1
        link.error = exc.message
        # Bounded to a few seconds: a peer that comes back is also noticed at once (its hello).
        base = min(self.limits.peer_backoff_max, 0.1 * 2 ** min(link.failures, 10))
        delay = base * (0.5 + self._jitter.random())
        link.next_try = trio.current_time() + delay
        if link.failures == 1:
            self._log.warning("peer_unreachable", peer=link.wallet, error=exc.message)

    def _succeeded(self, link: _Link) -> None:
        if link.failures:
            self._log.info("peer_reachable", peer=link.wallet)
        link.failures, link.error, link.next_try = 0, None, 0.0
        link.last_ok = time.time()

    # -- pushing ----------------------------------------------------------------------------

    async def _push_loop(self) -> None:
        while True:
            # Batch for push_interval, unless a kv.put is waiting for acknowledgements.
            with trio.move_on_after(self.limits.push_interval):
                await self._push_now.wait()
            self._push_now = trio.Event()
            self._rounds += 1
            async with trio.open_nursery() as nursery:
                now = trio.current_time()
                for link in list(self.links.values()):
                    if link.outbox.pending() and now >= max(link.next_try, link.hold_until):
                        nursery.start_soon(self.push, link)

    async def push(self, link: _Link) -> bool:
        """Drain one peer's outbox (a failed batch goes back into it); False when a push failed."""
        async with link.pushing:
            done = await self._push_batches(link)
        if done and link.returned_round is not None and not link.outbox.pending():
            self._log.info(
                "backlog_pushed",
                peer=link.wallet,
                records=link.returned_backlog,
                rounds=self._rounds - link.returned_round,
            )
            link.returned_round = None
        return done

    async def _push_batches(self, link: _Link) -> bool:
        budget = self.limits.max_frame
        while link.outbox.pending():
            since = link.outbox.oldest_ms()
            batch = link.outbox.drain(budget)
            link.inflight = {(r.app_id, r.key) for r in batch}
            link.inflight_since = since
            try:
                client = await self._channel(link)
                with trio.fail_after(self.limits.peer_timeout):
                    raw = await client.call(
                        "sync.push", {"records": [replication.record_to_wire(r) for r in batch]}
                    )
                answer = msg.parse_push_answer(raw, batch=len(batch))
            except (NovaKMSError, trio.TooSlowError) as exc:
                for record in batch:
                    link.outbox.add(record, since or 0)
                await self._failed(link, exc)
                return False
            finally:
                link.inflight, link.inflight_since = set(), None
            unacked = set(answer.rejected) | set(answer.deferred)
            self._acknowledged(link, [r for i, r in enumerate(batch) if i not in unacked])
            link.pushed += len(batch)
            self._succeeded(link)
            if answer.deferred:
                # The peer's quota is full: keep them queued (has_pending stays true, which
                # also keeps their tombstones from early GC) and resend after an anti-entropy
                # interval rather than at every push round.
                for i in answer.deferred:
                    link.outbox.add(batch[i], since or 0)
                link.deferred += len(answer.deferred)
                link.hold_until = trio.current_time() + self.limits.anti_entropy_interval
                return True
        return True

    async def drain(self, timeout: float) -> int:
        """Push every outbox once more (shutdown); returns the records left unpushed.

        Each peer gets one attempt whatever its backoff, all at once, within ``timeout``; a
        peer that does not answer keeps its records (they are also on the peers that did).
        """
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                for link in list(self.links.values()):
                    if link.outbox.pending():
                        link.next_try = link.hold_until = 0.0
                        nursery.start_soon(self.push, link)
        left = sum(link.outbox.pending() for link in self.links.values())
        self._log.info("replication_drained", left=left)
        return left

    # -- anti-entropy -----------------------------------------------------------------------

    async def _anti_entropy_loop(self) -> None:
        await self.catch_up()
        while True:
            succeeded: set[str] = set()
            async with trio.open_nursery() as nursery:
                for link in list(self.links.values()):
                    nursery.start_soon(self._anti_entropy_into, link, succeeded)
            if self.node.degraded is not None and readiness.confirmed(succeeded, self.links.keys()):
                self._log.info("caught_up", was=self.node.degraded)
                self.node.degraded = None
                self.unreachable = []
            try:
                await self.collect_tombstones()
            except (NovaKMSError, trio.TooSlowError) as exc:
                self._log.info("tombstone_gc_deferred", error=str(exc))
            await trio.sleep(self.limits.anti_entropy_interval)

    async def _anti_entropy_into(self, link: _Link, succeeded: set[str]) -> None:
        if await self.anti_entropy(link):
            succeeded.add(link.wallet)

    async def _priority_loop(self) -> None:
        """Anti-entropy with a peer that just came back, ahead of the schedule."""
        while True:
            await self._priority_now.wait()
            self._priority_now = trio.Event()
            wallets, self._priority = self._priority, set()
            async with trio.open_nursery() as nursery:
                for wallet in wallets:
                    link = self.links.get(wallet)
                    if link is not None:
                        nursery.start_soon(self.anti_entropy, link)

    # -- joining: snapshot, then anti-entropy against every peer --------------------------------

    async def catch_up(self) -> None:
        """Catch up with the cluster before serving (only if this node is a joiner).

        A snapshot from the first peer that gives one, then one anti-entropy pass against every
        current peer, retried for ``catch_up_timeout``; then the node serves, as ``degraded``
        when :func:`~novakms.cluster.readiness.catch_up_verdict` says so.
        """
        snap = self._snapshot
        if not self.node.syncing:
            return
        snap.state = "syncing"
        while not self._membership_known:  # noqa: ASYNC110 (the membership loop fills it)
            await trio.sleep(_POLL)
        outcomes = await self._catch_up_outcomes()
        state, reason = readiness.catch_up_verdict(outcomes)
        self.unreachable = sorted(w for w, o in outcomes.items() if o == "unreachable")
        self.node.degraded = reason if state == "degraded" else None
        self.node.syncing = False
        snap.state = "done"
        if state == "degraded":
            self._log.warning(
                "catch_up_degraded",
                reason=reason,
                unreachable=",".join(self.unreachable) or "none",
                peers=len(outcomes),
            )
        else:
            self._log.info(
                "caught_up", chunks=snap.chunks, records=snap.records, resumed=snap.resumed
            )

    async def _catch_up_outcomes(self) -> dict[str, readiness.CatchUpOutcome]:
        deadline = trio.current_time() + self.limits.catch_up_timeout
        outcomes: dict[str, readiness.CatchUpOutcome] = {}
        snapshot_done = False
        while True:
            links = list(self.links.values())
            if not snapshot_done:
                snapshot_done = await self._snapshot_round(links)
            for link in links:
                if link.wallet in outcomes or trio.current_time() < link.next_try:
                    continue
                if await self.anti_entropy(link, catching_up=True):
                    outcomes[link.wallet] = "caught_up" if link.state == "serving" else "partial"
            outcomes = {w: o for w, o in outcomes.items() if w in self.links}
            missing = [w for w in self.links if w not in outcomes]
            if not missing:
                return outcomes
            if trio.current_time() >= deadline:
                return {**outcomes, **dict.fromkeys(missing, "unreachable")}
            await trio.sleep(_POLL)

    async def _snapshot_round(self, links: list[_Link]) -> bool:
        """Try each peer not backing off in turn; True once a snapshot is complete, or when
        no peer can give one (each is still catching up itself): anti-entropy then pulls what
        they hold."""
        if not links:
            return True
        refused = 0
        for link in links:
            if trio.current_time() < link.next_try:
                continue
            try:
                await self._snapshot_from(link)
            except (NovaKMSError, trio.TooSlowError) as exc:
                if isinstance(exc, Unavailable) and exc.reason == "syncing":
                    refused += 1  # a fellow joiner: not a failure of the link
                    continue
                await self._snapshot_failed(link, exc)
            else:
                return True
        if refused == len(links):
            self._log.info("snapshot_skipped", reason="every peer is still catching up")
            return True
        return False

    async def _snapshot_failed(self, link: _Link, exc: NovaKMSError | trio.TooSlowError) -> None:
        self._log.info("snapshot_interrupted", peer=link.wallet, error=str(exc) or "timeout")
        await self._failed(link, exc)

    async def _snapshot_from(self, link: _Link) -> None:
        snap = self._snapshot
        client = await self._channel(link)
        if snap.after is not None:
            snap.resumed += 1  # continuing after the last key received, not from the start
        snap.peer = link.wallet
        while True:
            after = None if snap.after is None else list(snap.after)
            answer = msg.parse_snapshot_answer(
                await client.call("sync.snapshot", {"after": after}), after=snap.after
            )
            accepted, _, _ = self.node.apply_replicated(
                list(answer.records), now_ms=_now_ms(), source=link.wallet
            )
            snap.chunks += 1
            snap.records += accepted
            if answer.next is None:
                self._succeeded(link)
                return
            snap.after = answer.next

    # -- tombstone GC -----------------------------------------------------------------------

    async def collect_tombstones(self) -> int:
        """Forget this node's tombstones that every current peer has acknowledged.

        Only tombstones older than ``tombstone_gc_delay`` whose key has no local change still
        on its way to a peer — here or on any peer (asked first, ``dry_run``). Then every peer
        forgets them (``sync.forget``), and this node last, once all of them answered. Returns
        how many were forgotten here.
        """
        if not len(self.tombstone_acks):  # nothing acknowledged: skip the pass over the store
            return 0
        store = self.node.require_store()
        tombstones = store.tombstones()
        self.tombstone_acks.retain(tombstones)
        cutoff = _now_ms() - int(self.limits.tombstone_gc_delay * 1000)
        ripe = [
            t
            for t in tombstones
            if t.deleted_at_ms() <= cutoff and not self.has_pending(t.app_id, t.key)
        ]
        ids = sorted(self.tombstone_acks.collectable(ripe, self.links.keys()))
        if not ids:
            return 0
        links = list(self.links.values())
        # Phase 1: a peer with an older change of the key still queued keeps the tombstone
        # (forgetting it anywhere would let that change resurrect the value there).
        for link in links:
            kept = await self._forget_on(link, ids, dry_run=True)
            ids = [tid for tid in ids if tid not in kept]
        if not ids:
            return 0
        # Phase 2: every peer forgets, then this node (which can still hand the tombstone to a
        # peer whose call failed, until the next round succeeds everywhere).
        for link in links:
            await self._forget_on(link, ids, dry_run=False)
        forgotten = sum(store.forget_tombstone(*tid) for tid in ids)
        self.tombstone_acks.forget(ids)
        self.tombstones_collected += forgotten
        self._log.debug("tombstones_collected", count=forgotten)
        return forgotten

    async def _forget_on(
        self, link: _Link, ids: list[replication.TombstoneId], *, dry_run: bool
    ) -> set[replication.TombstoneId]:
        """``sync.forget`` on one peer; returns the tombstones it keeps."""
        client = await self._channel(link)
        kept: set[replication.TombstoneId] = set()
        for batch in _forget_batches(ids, self.limits.max_frame):
            with trio.fail_after(self.limits.peer_timeout):
                raw = await client.call(
                    "sync.forget", {"tombstones": [list(t) for t in batch], "dry_run": dry_run}
                )
            try:
                answer = msg.parse_forget_answer(raw, sent=batch)
            except ProtocolError as exc:
                await self._failed(link, exc)  # this link is reset; the GC round is deferred
                raise
            kept.update(answer.kept)
        return kept

    async def anti_entropy(self, link: _Link, *, catching_up: bool = False) -> bool:
        """Pull from one peer whatever differs (one round); True when it succeeded."""
        # No deadline on the whole round (a large catch-up takes as long as it takes); every
        # call is bounded by the client's per-call timeout (peer_timeout).
        if self.node.syncing and not catching_up:
            return False
        try:
            await self._pull_differences(link)
        except (NovaKMSError, trio.TooSlowError) as exc:
            await self._failed(link, exc)
            return False
        self._succeeded(link)
        return True

    async def _pull_differences(self, link: _Link) -> None:
        client = await self._channel(link)
        store = self.node.require_store()
        args = {"state": self.state} if link.boot is not None else {}  # older nodes: none
        digests = msg.parse_digests_answer(await client.call("sync.digests", args))
        if digests.state is not None:
            link.state = digests.state
        remote_apps = dict(digests.apps)
        local_apps = replication.app_digests(store.records())
        # Equal digests: the peer holds every record we hold in that app (no await between our
        # digests and this, so "we hold" is exactly what was compared).
        equal_apps = {a for a, d in local_apps.items() if remote_apps.get(a) == d}
        self.tombstone_acks.ack_apps(link.wallet, equal_apps)
        self.holders.add(
            link.wallet, ((r.app_id, r.key) for r in store.records() if r.app_id in equal_apps)
        )
        for app_id in replication.differing_apps(local_apps, remote_apps):
            if app_id not in remote_apps:
                continue  # only we have it: the peer pulls it from us in its own round
            remote_buckets = msg.parse_buckets_answer(
                await client.call("sync.buckets", {"app_id": app_id})
            ).buckets
            local_buckets = replication.bucket_digests(store.records(), app_id, msg.SYNC_BUCKETS)
            differing = replication.differing_buckets(local_buckets, remote_buckets)
            # Equal buckets: the peer holds those keys' records (no await since the digests).
            same = set(range(msg.SYNC_BUCKETS)) - set(differing)
            self.holders.add(
                link.wallet,
                (
                    (app_id, key)
                    for key in replication.keys_in_buckets(
                        store.records(), app_id, same, msg.SYNC_BUCKETS
                    )
                ),
            )
            local_all = replication.keys_in_buckets(
                store.records(), app_id, differing, msg.SYNC_BUCKETS
            )
            for bucket in differing:
                # One bucket per request keeps each answer small (and sync.keys caps it anyway).
                answer = msg.parse_keys_answer(
                    await client.call("sync.keys", {"app_id": app_id, "buckets": [bucket]})
                )
                remote_keys = dict(answer.keys)
                local_keys = {
                    k: h
                    for k, h in local_all.items()
                    if replication.bucket_of(k, msg.SYNC_BUCKETS) == bucket
                }
                if answer.truncated:
                    local_keys = {k: h for k, h in local_keys.items() if k in remote_keys}
                self._held_as_hashed(link, app_id, remote_keys, local_keys)
                await self._pull(
                    client, link, app_id, replication.plan_pull(local_keys, remote_keys)
                )

    def _held_as_hashed(
        self, link: _Link, app_id: int, remote: dict[str, bytes], local: dict[str, bytes]
    ) -> None:
        """Keys whose record hash the peer reported equal to ours: it holds them."""
        store = self.node.require_store()
        held = []
        for key, digest in remote.items():
            if local.get(key) != digest:
                continue
            current = store.record(app_id, key)  # ours may have changed during the await
            if current is not None and replication.record_hash(current) == digest:
                held.append((app_id, key))
        self.holders.add(link.wallet, held)

    async def _pull(self, client: Client, link: _Link, app_id: int, todo: list[str]) -> None:
        while todo:
            request, todo = todo[:_PULL_KEYS], todo[_PULL_KEYS:]
            pulled = msg.parse_pull_answer(
                await client.call("sync.pull", {"app_id": app_id, "keys": request}),
                requested=request,
            )
            accepted, _, _ = self.node.apply_replicated(
                list(pulled.records), now_ms=_now_ms(), source=link.wallet
            )
            link.pulled += accepted
            todo = list(pulled.remaining) + todo


def _forget_batches(
    ids: list[replication.TombstoneId], max_frame: int
) -> list[list[replication.TombstoneId]]:
    """Split tombstone ids into ``sync.forget`` requests that fit a frame."""
    budget = msg.frame_budget(max_frame)
    batches: list[list[replication.TombstoneId]] = [[]]
    used = 0
    for tid in ids:
        size = len(tid[1].encode("utf-8")) + 80  # key + ids, wallet and CBOR heads, generously
        if batches[-1] and used + size > budget:
            batches.append([])
            used = 0
        batches[-1].append(tid)
        used += size
    return batches
