"""Replicating the KV store to every peer: prompt pushes, and anti-entropy that repairs the rest.

The trio glue around :mod:`novakms.cluster.replication`:

* every local change (write, delete, eviction tombstone) lands in one outbox per peer; every
  ``push_interval`` each outbox is drained in frame-sized batches to ``sync.push``; a batch that
  fails goes back into its outbox and the peer is retried with jittered exponential backoff;
* every ``anti_entropy_interval`` each peer's app digests are compared with ours, differing apps
  are narrowed down by bucket and key hashes, and the records that differ are pulled
  (``sync.pull``) and merged — so missed pushes, partitions and late joiners converge;
* every channel first runs ``sync.hello``: both sides prove the cluster secret, bound to the
  channel's transcript hash.

Pull-only anti-entropy is enough: every node runs it against every peer.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from novakms.client import Client
from novakms.cluster import replication
from novakms.cluster.peering import peer_address
from novakms.cluster.proof import cluster_proof, verify_cluster_proof
from novakms.errors import NovaKMSError, Unavailable
from novakms.log import get_logger
from novakms.node import Node
from novakms.store.records import Record

__all__ = ["Replicator"]

_PULL_KEYS = 256
_SYNC_BUCKETS = 64  # must equal handlers.SYNC_BUCKETS (the peer's side)


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
    error: str | None = None


class Replicator:
    """Keeps this node's store in step with every active peer.

    Args:
        node: the node (must eventually have its master secret; the replicator waits for it).
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.limits = node.limits
        self.links: dict[str, _Link] = {}
        self._log = get_logger("novakms.replication", node=node.wallet)
        self._jitter = random.Random(os.urandom(8))  # backoff jitter only; not security relevant  # noqa: S311

    def _on_local_change(self, record: Record) -> None:
        for link in self.links.values():
            link.outbox.add(record)

    def describe(self) -> list[dict[str, Any]]:
        """Per-peer state for ``status`` (no secrets)."""
        return [
            {
                "wallet": link.wallet,
                "address": link.address,
                "connected": link.client is not None,
                "pending": link.outbox.pending(),
                "pushed": link.pushed,
                "pulled": link.pulled,
                "last_ok_ms": None if link.last_ok is None else int(link.last_ok * 1000),
                "error": link.error,
            }
            for link in self.links.values()
        ]

    async def run(self) -> None:
        """Replicate until cancelled."""
        while self.node.store is None:  # the bootstrap installs it  # noqa: ASYNC110
            await trio.sleep(self.limits.push_interval)
        assert self.node.store is not None
        self.node.store.listener = self._on_local_change
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._membership_loop)
                nursery.start_soon(self._push_loop)
                nursery.start_soon(self._anti_entropy_loop)
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
            if (
                entry["wallet"] == self.node.wallet
                or entry["status"] != "ACTIVE"
                or not entry["zk_verified"]
            ):
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
                self.links[wallet] = _Link(wallet=wallet, address=address)

    async def _membership_loop(self) -> None:
        while True:
            await self.refresh_peers()
            await trio.sleep(self.limits.bootstrap_interval)

    # -- channels ---------------------------------------------------------------------------

    async def _channel(self, link: _Link) -> Client:
        # The push and anti-entropy loops share the channel: without the lock both could dial
        # at once and one client would be overwritten without being closed.
        async with link.connecting:
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
        )
        try:
            proof = cluster_proof(
                master_secret=secret, transcript_hash=client.transcript_hash, direction="c2s"
            )
            answer = await client.call("sync.hello", {"proof": proof})
        except BaseException:
            await client.aclose()
            raise
        if not verify_cluster_proof(
            master_secret=secret,
            transcript_hash=client.transcript_hash,
            direction="s2c",
            proof=answer.get("proof"),
        ):
            await client.aclose()
            raise Unavailable(
                "the peer does not hold this cluster's secret", reason="bad_cluster_proof"
            )
        return client

    async def _drop(self, link: _Link) -> None:
        if link.client is not None:
            await link.client.aclose()
            link.client = None

    async def _failed(self, link: _Link, exc: NovaKMSError) -> None:
        await self._drop(link)
        link.failures += 1
        link.error = exc.message
        delay = min(30.0, 0.1 * 2 ** min(link.failures, 10)) * (0.5 + self._jitter.random())
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
            await trio.sleep(self.limits.push_interval)
            async with trio.open_nursery() as nursery:
                for link in list(self.links.values()):
                    if link.outbox.pending():
                        nursery.start_soon(self.push, link)

    async def push(self, link: _Link) -> None:
        """Drain one peer's outbox (a failed batch goes back into it)."""
        budget = self.limits.max_frame
        while link.outbox.pending():
            batch = link.outbox.drain(budget)
            try:
                client = await self._channel(link)
                with trio.fail_after(self.limits.peer_timeout):
                    await client.call(
                        "sync.push", {"records": [replication.record_to_wire(r) for r in batch]}
                    )
            except (NovaKMSError, trio.TooSlowError) as exc:
                for record in batch:
                    link.outbox.add(record)
                if isinstance(exc, NovaKMSError):
                    await self._failed(link, exc)
                else:
                    await self._failed(link, Unavailable("push timed out", reason="peer_timeout"))
                return
            link.pushed += len(batch)
            self._succeeded(link)

    # -- anti-entropy -----------------------------------------------------------------------

    async def _anti_entropy_loop(self) -> None:
        while True:
            async with trio.open_nursery() as nursery:
                for link in list(self.links.values()):
                    nursery.start_soon(self.anti_entropy, link)
            await trio.sleep(self.limits.anti_entropy_interval)

    async def anti_entropy(self, link: _Link) -> None:
        """Pull from one peer whatever differs (one round)."""
        # No deadline on the whole round (a large catch-up takes as long as it takes); every
        # call is bounded by the client's per-call timeout (peer_timeout).
        try:
            await self._pull_differences(link)
        except NovaKMSError as exc:
            await self._failed(link, exc)
            return
        self._succeeded(link)

    async def _pull_differences(self, link: _Link) -> None:
        client = await self._channel(link)
        store = self.node.require_store()
        remote_apps = {int(a): bytes(d) for a, d in (await client.call("sync.digests"))["apps"]}
        local_apps = replication.app_digests(store.records())
        for app_id in replication.differing_apps(local_apps, remote_apps):
            if app_id not in remote_apps:
                continue  # only we have it: the peer pulls it from us in its own round
            remote_buckets = [
                bytes(b) for b in (await client.call("sync.buckets", {"app_id": app_id}))["buckets"]
            ]
            local_buckets = replication.bucket_digests(store.records(), app_id, _SYNC_BUCKETS)
            differing = replication.differing_buckets(local_buckets, remote_buckets)
            local_all = replication.keys_in_buckets(
                store.records(), app_id, differing, _SYNC_BUCKETS
            )
            for bucket in differing:
                # One bucket per request keeps each answer small (and sync.keys caps it anyway).
                answer = await client.call("sync.keys", {"app_id": app_id, "buckets": [bucket]})
                remote_keys = {str(k): bytes(h) for k, h in answer["keys"]}
                local_keys = {
                    k: h
                    for k, h in local_all.items()
                    if replication.bucket_of(k, _SYNC_BUCKETS) == bucket
                }
                if answer.get("truncated"):
                    local_keys = {k: h for k, h in local_keys.items() if k in remote_keys}
                await self._pull(
                    client, link, app_id, replication.plan_pull(local_keys, remote_keys)
                )

    async def _pull(self, client: Client, link: _Link, app_id: int, todo: list[str]) -> None:
        while todo:
            request, todo = todo[:_PULL_KEYS], todo[_PULL_KEYS:]
            pulled = await client.call("sync.pull", {"app_id": app_id, "keys": request})
            accepted, _ = self.node.apply_replicated(
                list(pulled["records"]), now_ms=int(time.time() * 1000), source=link.wallet
            )
            link.pulled += accepted
            todo = [str(k) for k in pulled["remaining"]] + todo
