"""Peer operations: the secret (``secret.status``, ``secret.get``), replication (``sync.*``) and
consensus on conditional writes (``cas.*``).

The dispatcher has already checked the caller: column ``peer`` (an authorized KMS operator) for
``secret.*`` and ``sync.hello``, ``proven_peer`` (one that also proved the cluster secret on
this channel with ``sync.hello``, under a secret that still matches the pin) for the rest.
Requests and answers are parsed by :mod:`novakms.cluster.sync_messages`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from novakms.cluster import cas_messages, replication, sync_messages
from novakms.cluster.proof import cluster_proof, verify_cluster_proof
from novakms.cluster.sync_messages import SYNC_BUCKETS
from novakms.errors import Forbidden
from novakms.log import get_logger
from novakms.server.ops.args import Args, now_ms
from novakms.server.ops.context import PROVEN, OpContext

__all__ = [
    "op_cas_accept",
    "op_cas_prepare",
    "op_cas_recover",
    "op_secret_get",
    "op_secret_status",
    "op_sync_buckets",
    "op_sync_digests",
    "op_sync_forget",
    "op_sync_hello",
    "op_sync_keys",
    "op_sync_pull",
    "op_sync_push",
    "op_sync_snapshot",
]


async def op_secret_status(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """Whether this node holds a secret, and its fingerprint (the bootstrap asks)."""
    Args(args, set())
    return {"initialized": ctx.keyring.initialized, "fingerprint": ctx.keyring.fingerprint()}


async def op_secret_get(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """The master secret, to an authorized KMS operator (a joiner's bootstrap)."""
    Args(args, set())
    secret = ctx.keyring.require_secret()
    get_logger("novakms.server.node", node=ctx.wallet).info(
        "secret_served",
        peer=ctx.identity.wallet,  # the wallet only, never the secret
    )
    # The channel is end-to-end sealed with forward secrecy, to a chain-authorized KMS operator.
    return {"secret": secret, "fingerprint": ctx.keyring.fingerprint()}


async def op_sync_hello(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """Both sides prove the cluster secret, bound to this channel; exchange boot and state."""
    identity = ctx.identity
    session = ctx.session
    proof, info = sync_messages.parse_hello_request(args)
    secret = ctx.keyring.require_secret()
    th = session.transcript_hash
    if not verify_cluster_proof(
        master_secret=secret, transcript_hash=th, direction="c2s", proof=proof
    ):
        raise Forbidden("the peer does not hold this cluster's secret", reason="bad_cluster_proof")
    answer: dict[str, Any] = {
        "proof": cluster_proof(master_secret=secret, transcript_hash=th, direction="s2c")
    }
    replicator = ctx.replicator
    if not session.state.get(PROVEN) and replicator is not None:
        replicator.inbound_opened(identity.wallet, info)
        session.on_close.append(lambda: replicator.inbound_closed(identity.wallet))
    session.state[PROVEN] = True
    if replicator is not None and info.boot is not None:
        answer.update(boot=replicator.boot, state=replicator.state)
    return answer


async def op_sync_push(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """Merge records a peer pushed; the answer is its acknowledgement."""
    items = sync_messages.parse_push_request(args)
    accepted, rejected, deferred = ctx.gate.apply_replicated(
        items, now_ms=now_ms(ctx.now), source=ctx.identity.wallet
    )
    # The answer is the acknowledgement: every record listed neither in ``rejected`` (invalid,
    # never to be resent) nor in ``deferred`` (over quota: resend later) is now stored here (or
    # something newer of its key is).
    return {"accepted": accepted, "rejected": rejected, "deferred": deferred}


async def op_sync_snapshot(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """One frame-sized chunk of the store, after a key (a joiner's first snapshot)."""
    after = sync_messages.parse_snapshot_request(args)
    # A node that is itself still catching up would hand out an incomplete snapshot.
    store = ctx.gate.serving_store()
    records, resume = replication.snapshot_chunk(
        store.records_from(after), max_bytes=ctx.limits.max_frame
    )
    return {"records": records, "next": None if resume is None else list(resume)}


async def op_sync_forget(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """Forget tombstones every peer acknowledged (or, ``dry_run``, say which are kept)."""
    request = sync_messages.parse_forget_request(args)
    store = ctx.gate.require_store()
    replicator = ctx.replicator
    forgotten = 0
    kept: list[list[Any]] = []
    for app_id, key, hlc, writer in request.tombstones:
        # A local change of the key still waiting to be pushed may be an older value the
        # tombstone superseded: once the tombstone is gone everywhere it would come back.
        if replicator is not None and replicator.has_pending(app_id, key):
            kept.append([app_id, key, hlc, writer])
        elif not request.dry_run and store.forget_tombstone(app_id, key, hlc, writer):
            forgotten += 1
    return {"forgotten": forgotten, "kept": kept}


async def op_sync_digests(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """Per-app digests of the store (anti-entropy's first step), and this node's state."""
    state = sync_messages.parse_digests_request(args)
    digests = replication.app_digests(ctx.gate.require_store().records())
    answer: dict[str, Any] = {
        "apps": [[app_id, digest] for app_id, digest in sorted(digests.items())]
    }
    replicator = ctx.replicator
    if state is not None and replicator is not None:  # a peer that knows the field
        replicator.peer_info(ctx.identity.wallet, sync_messages.PeerInfo(None, state))
        answer["state"] = replicator.state
    return answer


async def op_sync_buckets(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """One app's bucket digests."""
    app_id = sync_messages.parse_app_request("sync.buckets", args)
    buckets = replication.bucket_digests(ctx.gate.require_store().records(), app_id, SYNC_BUCKETS)
    return {"buckets": buckets}


async def op_sync_keys(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """The key hashes in some buckets of one app (truncated to a frame)."""
    request = sync_messages.parse_keys_request(args)
    keys = replication.keys_in_buckets(
        ctx.gate.require_store().records(), request.app_id, request.buckets, SYNC_BUCKETS
    )
    # Bounded by the frame: a huge bucket is answered in part (the rest in later rounds).
    budget = sync_messages.frame_budget(ctx.limits.max_frame)
    entries: list[list[Any]] = []
    used = 0
    for key, digest in sorted(keys.items()):
        used += len(key.encode("utf-8")) + len(digest) + 16  # CBOR headers, generously
        if used > budget:
            return {"keys": entries, "truncated": True}
        entries.append([key, digest])
    return {"keys": entries, "truncated": False}


async def op_sync_pull(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """Records of some keys (as many as fit a frame; the rest listed as ``remaining``)."""
    request = sync_messages.parse_pull_request(args)
    keys = list(request.keys)
    store = ctx.gate.require_store()
    budget = sync_messages.frame_budget(ctx.limits.max_frame)
    records: list[dict[str, Any]] = []
    used = 0
    for index, key in enumerate(keys):
        record = store.record(request.app_id, key)
        if record is None:
            continue
        wire = replication.record_to_wire(record)
        size = replication.wire_size(record)
        if records and used + size > budget:  # the rest in a later pull
            return {"records": records, "remaining": keys[index:]}
        records.append(wire)
        used += size
    return {"records": records, "remaining": []}


# -- consensus on conditional writes (cas.*) ----------------------------------------------------


async def op_cas_prepare(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """Phase 1 of a conditional write: promise a ballot, report what was accepted."""
    request = cas_messages.parse_prepare_request(args, max_key_bytes=ctx.limits.max_key_bytes)
    return ctx.cas.on_prepare(ctx.identity.wallet, request)


async def op_cas_accept(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """Phase 2: accept a value under a promised ballot."""
    consensus = ctx.cas
    request = cas_messages.parse_accept_request(
        args, max_key_bytes=ctx.limits.max_key_bytes, record=consensus.record_from_wire
    )
    return consensus.on_accept(ctx.identity.wallet, request)


async def op_cas_recover(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """A restarted peer fences its old incarnation and copies a page of the acceptor table."""
    boot, after = cas_messages.parse_recover_request(args, max_key_bytes=ctx.limits.max_key_bytes)
    return ctx.cas.on_recover(ctx.identity.wallet, boot, after)
