"""Pushing local changes to every peer, and what their acknowledgements tell.

Every local change (write, delete, eviction tombstone) lands in one outbox per peer; every
``push_interval`` (or at once, when a ``kv.put`` waits for acknowledgements or a peer came
back) each outbox is drained in frame-sized batches to ``sync.push``. A batch that fails goes
back into its outbox and the link backs off. The ``sync.push`` answer is the peer's
acknowledgement: ``kv.put`` with ``acks`` waits on it, the holders learn the peer holds those
records (``status.safe_to_stop``) and a tombstone acknowledged by every peer becomes
collectable. Records the peer's quota refused are kept queued and resent later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio

from novakms.cluster import readiness, replication
from novakms.cluster import sync_messages as msg
from novakms.cluster.links import PeerLink, PeerLinks
from novakms.config import Limits
from novakms.errors import NovaKMSError
from novakms.log import BoundLogger
from novakms.server.store_gate import StoreGate
from novakms.store.records import Record

__all__ = ["Pusher"]


@dataclass(eq=False)
class _Waiter:
    """A ``kv.put`` waiting for acknowledgements of its record (or of a newer one of its key)."""

    order: tuple[Any, ...]
    needed: int
    peers: set[str] = field(default_factory=set)
    done: trio.Event = field(default_factory=trio.Event)


class Pusher:
    """The outboxes' push loop and the acknowledgements.

    Args:
        limits: ``push_interval``, ``peer_timeout``, ``max_frame``, ``anti_entropy_interval``.
        links: the peers.
        gate: the store (to compare an acknowledged record with the current one).
        holders: who holds each key's current record (updated from acknowledgements).
        tombstone_acks: which peers acknowledged each tombstone.
        log: the replication logger.
    """

    def __init__(
        self,
        *,
        limits: Limits,
        links: PeerLinks,
        gate: StoreGate,
        holders: readiness.Holders,
        tombstone_acks: replication.TombstoneAcks,
        log: BoundLogger,
    ) -> None:
        self._limits = limits
        self._links = links
        self._gate = gate
        self._holders = holders
        self._tombstone_acks = tombstone_acks
        self._log = log
        self._waiters: dict[tuple[int, str], list[_Waiter]] = {}
        self._push_now = trio.Event()
        self.rounds = 0  # push rounds so far

    def on_local_change(self, record: Record) -> None:
        """A record created here: queue it for every peer."""
        now = self._links.now_ms()
        self._holders.changed_here((record.app_id, record.key))
        for link in self._links.by_wallet.values():
            link.outbox.add(record, now)

    def push_soon(self) -> None:
        """Push at once rather than after the batching window."""
        self._push_now.set()

    def has_pending(self, app_id: int, key: str) -> bool:
        """Whether a local change of the key has not yet reached some peer."""
        slot = (app_id, key)
        return any(
            link.outbox.has(app_id, key) or slot in link.inflight
            for link in self._links.by_wallet.values()
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

    def _acknowledged(self, link: PeerLink, records: list[Record]) -> None:
        link.acked += len(records)
        link.last_ack = self._links.now()
        store = self._gate.require_store()
        held = []
        for record in records:
            current = store.record(record.app_id, record.key)
            if current is not None and record.order_key() >= current.order_key():
                held.append((record.app_id, record.key))
        self._holders.add(link.wallet, held)
        self._tombstone_acks.ack(
            link.wallet, [replication.tombstone_id(r) for r in records if r.sealed is None]
        )
        for record in records:
            for waiter in self._waiters.get((record.app_id, record.key), ()):
                if record.order_key() >= waiter.order:
                    waiter.peers.add(link.wallet)
                    if len(waiter.peers) >= waiter.needed:
                        waiter.done.set()

    async def run(self) -> None:
        """Push rounds until cancelled."""
        while True:
            # Batch for push_interval, unless a kv.put is waiting for acknowledgements.
            with trio.move_on_after(self._limits.push_interval):
                await self._push_now.wait()
            self._push_now = trio.Event()
            self.rounds += 1
            now = trio.current_time()
            due = [
                link
                for link in self._links.by_wallet.values()
                if link.outbox.pending() and now >= max(link.next_try, link.hold_until)
            ]
            if due:  # most rounds have nothing to push: no nursery for them
                async with trio.open_nursery() as nursery:
                    for link in due:
                        nursery.start_soon(self.push, link)

    async def push(self, link: PeerLink) -> bool:
        """Drain one peer's outbox (a failed batch goes back into it); False when a push failed."""
        async with link.pushing:
            done = await self._push_batches(link)
        if done and link.returned_round is not None and not link.outbox.pending():
            self._log.info(
                "backlog_pushed",
                peer=link.wallet,
                records=link.returned_backlog,
                rounds=self.rounds - link.returned_round,
            )
            link.returned_round = None
        return done

    async def _push_batches(self, link: PeerLink) -> bool:
        budget = self._limits.max_frame
        while link.outbox.pending():
            since = link.outbox.oldest_ms()
            batch = link.outbox.drain(budget)
            link.inflight = {(r.app_id, r.key) for r in batch}
            link.inflight_since = since
            try:
                client = await self._links.channel(link)
                with trio.fail_after(self._limits.peer_timeout):
                    raw = await client.call(
                        "sync.push", {"records": [replication.record_to_wire(r) for r in batch]}
                    )
                answer = msg.parse_push_answer(raw, batch=len(batch))
            except (NovaKMSError, trio.TooSlowError) as exc:
                for record in batch:
                    link.outbox.add(record, since or 0)
                await self._links.failed(link, exc)
                return False
            finally:
                link.inflight, link.inflight_since = set(), None
            unacked = set(answer.rejected) | set(answer.deferred)
            self._acknowledged(link, [r for i, r in enumerate(batch) if i not in unacked])
            link.pushed += len(batch)
            self._links.succeeded(link)
            if answer.deferred:
                # The peer's quota is full: keep them queued (has_pending stays true, which
                # also keeps their tombstones from early GC) and resend after an anti-entropy
                # interval rather than at every push round.
                for i in answer.deferred:
                    link.outbox.add(batch[i], since or 0)
                link.deferred += len(answer.deferred)
                link.hold_until = trio.current_time() + self._limits.anti_entropy_interval
                return True
        return True

    async def drain(self, timeout: float) -> int:
        """Push every outbox once more (shutdown); returns the records left unpushed.

        Each peer gets one attempt whatever its backoff, all at once, within ``timeout``; a
        peer that does not answer keeps its records (they are also on the peers that did).
        """
        links = self._links.by_wallet
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                for link in list(links.values()):
                    if link.outbox.pending():
                        link.next_try = link.hold_until = 0.0
                        nursery.start_soon(self.push, link)
        left = sum(link.outbox.pending() for link in links.values())
        self._log.info("replication_drained", left=left)
        return left
