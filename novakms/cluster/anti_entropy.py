"""Anti-entropy: pulling whatever differs from each peer, a joiner's catch-up, tombstone GC.

* every ``anti_entropy_interval`` each peer's app digests are compared with ours, differing apps
  are narrowed down by bucket and key hashes, and the records that differ are pulled
  (``sync.pull``) and merged — so missed pushes, partitions and late joiners converge; equal
  digests and hashes tell the holders the peer holds those records (``safe_to_stop``);
* a peer that came back or caught up gets a round ahead of the schedule (:meth:`prioritize`);
* a joiner (a node that fetched its secret from the cluster) first streams a snapshot
  (``sync.snapshot``, resuming after the last key received when a connection drops), then runs
  one pass against every peer, retried for ``catch_up_timeout``, and reports the verdict to the
  store gate (``serving`` or ``degraded``, ``cluster.readiness``);
* a tombstone every current peer acknowledged is forgotten early (after
  ``tombstone_gc_delay``): all peers first (``sync.forget``, a dry run, then for real), this
  node last.

Pull-only anti-entropy is enough: every node runs it against every peer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from novakms.client.aio import Client
from novakms.cluster import readiness, replication
from novakms.cluster import sync_messages as msg
from novakms.cluster.links import PeerLink, PeerLinks
from novakms.config import Limits
from novakms.errors import NovaKMSError, ProtocolError, Unavailable
from novakms.log import BoundLogger
from novakms.server.store_gate import StoreGate

__all__ = ["AntiEntropy"]

_PULL_KEYS = 256
_POLL = 0.05  # seconds between checks while waiting for the membership or a retry
_PROGRESS_EVERY = 5.0  # seconds between a snapshot's progress lines


@dataclass(eq=False)
class _Snapshot:
    """The joiner's first snapshot (``status.cluster.snapshot``)."""

    state: str = "none"  # none (not a joiner) | syncing | done
    after: tuple[int, str] | None = None
    chunks: int = 0
    records: int = 0
    total: int | None = None  # what the serving peer said it holds when the snapshot began
    resumed: int = 0
    peer: str | None = None
    logged_at: float = -math.inf  # trio time of the last progress line


class AntiEntropy:
    """Anti-entropy rounds, the joiner's catch-up and tombstone GC.

    Args:
        limits: the intervals and timeouts.
        links: the peers.
        gate: the store; the catch-up's verdict is reported to it.
        holders: who holds each key's current record (updated from equal digests).
        tombstone_acks: which peers acknowledged each tombstone.
        has_pending: whether a local change of a key is still on its way to some peer.
        state: this node's catch-up state, as peers are told.
        membership_known: whether the membership was read once (the catch-up waits for it).
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
        has_pending: Callable[[int, str], bool],
        state: Callable[[], readiness.State],
        membership_known: Callable[[], bool],
        log: BoundLogger,
    ) -> None:
        self._limits = limits
        self._links = links
        self._gate = gate
        self._holders = holders
        self._tombstone_acks = tombstone_acks
        self._has_pending = has_pending
        self._state = state
        self._membership_known = membership_known
        self._log = log
        self._snapshot = _Snapshot()
        self._priority: set[str] = set()  # peers to run anti-entropy with ahead of schedule
        self._priority_now = trio.Event()
        self.unreachable: list[str] = []  # peers the catch-up could not reach
        self.tombstones_collected = 0

    def prioritize(self, wallet: str) -> None:
        """Run anti-entropy with the peer next, ahead of the schedule."""
        self._priority.add(wallet)
        self._priority_now.set()

    def snapshot_status(self) -> dict[str, Any]:
        """The joiner's snapshot progress for ``status`` (keys are not shown)."""
        snap = self._snapshot
        return {
            "state": snap.state,
            "chunks": snap.chunks,
            "records": snap.records,
            "total": snap.total,
            "resumed": snap.resumed,
            "peer": snap.peer,
        }

    # -- rounds -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Catch up (a joiner), then anti-entropy rounds and tombstone GC until cancelled."""
        await self.catch_up()
        while True:
            succeeded: set[str] = set()
            async with trio.open_nursery() as nursery:
                for link in list(self._links.by_wallet.values()):
                    nursery.start_soon(self._anti_entropy_into, link, succeeded)
            degraded = self._gate.degraded
            peers = self._links.by_wallet.keys()
            if degraded is not None and readiness.confirmed(succeeded, peers):
                self._log.info("caught_up", was=degraded)
                self._gate.confirm_caught_up()
                self.unreachable = []
            try:
                await self.collect_tombstones()
            except (NovaKMSError, trio.TooSlowError) as exc:
                self._log.info("tombstone_gc_deferred", error=str(exc))
            await trio.sleep(self._limits.anti_entropy_interval)

    async def _anti_entropy_into(self, link: PeerLink, succeeded: set[str]) -> None:
        if await self.anti_entropy(link):
            succeeded.add(link.wallet)

    async def run_priority(self) -> None:
        """Anti-entropy with a peer that just came back, ahead of the schedule."""
        while True:
            await self._priority_now.wait()
            self._priority_now = trio.Event()
            wallets, self._priority = self._priority, set()
            async with trio.open_nursery() as nursery:
                for wallet in wallets:
                    link = self._links.by_wallet.get(wallet)
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
        if not self._gate.syncing:
            return
        snap.state = "syncing"
        while not self._membership_known():  # noqa: ASYNC110 (the membership loop fills it)
            await trio.sleep(_POLL)
        outcomes = await self._catch_up_outcomes()
        state, reason = readiness.catch_up_verdict(outcomes)
        self.unreachable = sorted(w for w, o in outcomes.items() if o == "unreachable")
        self._gate.finish_catch_up(reason if state == "degraded" else None)
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
        deadline = trio.current_time() + self._limits.catch_up_timeout
        outcomes: dict[str, readiness.CatchUpOutcome] = {}
        snapshot_done = False
        while True:
            links = list(self._links.by_wallet.values())
            if not snapshot_done:
                snapshot_done = await self._snapshot_round(links)
            for link in links:
                if link.wallet in outcomes or trio.current_time() < link.next_try:
                    continue
                if await self.anti_entropy(link, catching_up=True):
                    outcomes[link.wallet] = "caught_up" if link.state == "serving" else "partial"
            outcomes = {w: o for w, o in outcomes.items() if w in self._links.by_wallet}
            missing = [w for w in self._links.by_wallet if w not in outcomes]
            if not missing:
                return outcomes
            if trio.current_time() >= deadline:
                return {**outcomes, **dict.fromkeys(missing, "unreachable")}
            await trio.sleep(_POLL)

    async def _snapshot_round(self, links: list[PeerLink]) -> bool:
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

    async def _snapshot_failed(self, link: PeerLink, exc: NovaKMSError | trio.TooSlowError) -> None:
        self._log.info("snapshot_interrupted", peer=link.wallet, error=str(exc) or "timeout")
        await self._links.failed(link, exc)

    async def _snapshot_from(self, link: PeerLink) -> None:
        snap = self._snapshot
        client = await self._links.channel(link)
        if snap.after is not None:
            snap.resumed += 1  # continuing after the last key received, not from the start
        snap.peer = link.wallet
        if snap.total is None:
            try:
                snap.total = msg.parse_store_total(await client.call("status", {}))
            except (NovaKMSError, trio.TooSlowError) as exc:  # progress only: go on without
                self._log.debug("snapshot_total_unknown", peer=link.wallet, error=str(exc))
        while True:
            after = None if snap.after is None else list(snap.after)
            answer = msg.parse_snapshot_answer(
                await client.call("sync.snapshot", {"after": after}), after=snap.after
            )
            accepted, _, _ = self._gate.apply_replicated(
                list(answer.records), now_ms=self._links.now_ms(), source=link.wallet
            )
            snap.chunks += 1
            snap.records += accepted
            if trio.current_time() - snap.logged_at >= _PROGRESS_EVERY or answer.next is None:
                snap.logged_at = trio.current_time()
                self._log.info(
                    "snapshot_progress",
                    peer=link.wallet,
                    records=snap.records,
                    total=snap.total,
                    chunks=snap.chunks,
                )
            if answer.next is None:
                self._links.succeeded(link)
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
        if not len(self._tombstone_acks):  # nothing acknowledged: skip the pass over the store
            return 0
        store = self._gate.require_store()
        tombstones = store.tombstones()
        self._tombstone_acks.retain(tombstones)
        cutoff = self._links.now_ms() - int(self._limits.tombstone_gc_delay * 1000)
        ripe = [
            t
            for t in tombstones
            if t.deleted_at_ms() <= cutoff and not self._has_pending(t.app_id, t.key)
        ]
        ids = sorted(self._tombstone_acks.collectable(ripe, self._links.by_wallet.keys()))
        if not ids:
            return 0
        links = list(self._links.by_wallet.values())
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
        self._tombstone_acks.forget(ids)
        self.tombstones_collected += forgotten
        self._log.debug("tombstones_collected", count=forgotten)
        return forgotten

    async def _forget_on(
        self, link: PeerLink, ids: list[replication.TombstoneId], *, dry_run: bool
    ) -> set[replication.TombstoneId]:
        """``sync.forget`` on one peer; returns the tombstones it keeps."""
        client = await self._links.channel(link)
        kept: set[replication.TombstoneId] = set()
        for batch in _forget_batches(ids, self._limits.max_frame):
            with trio.fail_after(self._limits.peer_timeout):
                raw = await client.call(
                    "sync.forget", {"tombstones": [list(t) for t in batch], "dry_run": dry_run}
                )
            try:
                answer = msg.parse_forget_answer(raw, sent=batch)
            except ProtocolError as exc:
                await self._links.failed(link, exc)  # this link is reset; the GC round is deferred
                raise
            kept.update(answer.kept)
        return kept

    # -- pulling what differs ---------------------------------------------------------------

    async def anti_entropy(self, link: PeerLink, *, catching_up: bool = False) -> bool:
        """Pull from one peer whatever differs (one round); True when it succeeded."""
        # No deadline on the whole round (a large catch-up takes as long as it takes); every
        # call is bounded by the client's per-call timeout (peer_timeout).
        if self._gate.syncing and not catching_up:
            return False
        try:
            await self._pull_differences(link)
        except (NovaKMSError, trio.TooSlowError) as exc:
            await self._links.failed(link, exc)
            return False
        self._links.succeeded(link)
        return True

    async def _pull_differences(self, link: PeerLink) -> None:
        client = await self._links.channel(link)
        store = self._gate.require_store()
        args = {"state": self._state()} if link.boot is not None else {}  # older nodes: none
        digests = msg.parse_digests_answer(await client.call("sync.digests", args))
        if digests.state is not None:
            link.state = digests.state
        remote_apps = dict(digests.apps)
        local_apps = replication.app_digests(store.records())
        # Equal digests: the peer holds every record we hold in that app (no await between our
        # digests and this, so "we hold" is exactly what was compared).
        equal_apps = {a for a, d in local_apps.items() if remote_apps.get(a) == d}
        self._tombstone_acks.ack_apps(link.wallet, equal_apps)
        self._holders.add(
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
            self._holders.add(
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
        self, link: PeerLink, app_id: int, remote: dict[str, bytes], local: dict[str, bytes]
    ) -> None:
        """Keys whose record hash the peer reported equal to ours: it holds them."""
        store = self._gate.require_store()
        held = []
        for key, digest in remote.items():
            if local.get(key) != digest:
                continue
            current = store.record(app_id, key)  # ours may have changed during the await
            if current is not None and replication.record_hash(current) == digest:
                held.append((app_id, key))
        self._holders.add(link.wallet, held)

    async def _pull(self, client: Client, link: PeerLink, app_id: int, todo: list[str]) -> None:
        while todo:
            request, todo = todo[:_PULL_KEYS], todo[_PULL_KEYS:]
            pulled = msg.parse_pull_answer(
                await client.call("sync.pull", {"app_id": app_id, "keys": request}),
                requested=request,
            )
            accepted, _, _ = self._gate.apply_replicated(
                list(pulled.records), now_ms=self._links.now_ms(), source=link.wallet
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
