"""Operations: ``op -> handler(node, session, args, now)``. Handlers never see a stream.

Each handler validates its own arguments strictly (unknown keys are errors), authorizes the
caller *per request* through the node's authorization source, and returns the result map or
raises a :class:`~novakms.errors.RequestError`.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from novakms.auth.guardians import GuardianSet, no_guardians
from novakms.auth.model import Identity
from novakms.cluster import replication, sync_messages
from novakms.cluster.proof import cluster_proof, verify_cluster_proof
from novakms.cluster.recovery import ShareRefused, check_share
from novakms.cluster.sync_messages import SYNC_BUCKETS
from novakms.crypto import guardian_shares
from novakms.crypto.certs import sign_csr
from novakms.crypto.kdf import derive_app_key
from novakms.errors import (
    BadRequest,
    Forbidden,
    RateLimited,
    Unauthenticated,
    Unavailable,
    UnknownOp,
)
from novakms.log import get_logger
from novakms.server.node import Node
from novakms.wire.handshake import Role

__all__ = ["MAX_ACKS", "OPS", "REGISTERED", "SYNC_BUCKETS", "Args", "Session", "handle"]

MAX_ACKS = 255  # most peer acknowledgements one kv.put may wait for
#: ``Session.state`` key: whether the session's wallet passed its role's authorization once.
REGISTERED = "registered"


async def _no_reserve(size: int) -> None:
    """The default ``Session.reserve``: nothing to account for (tests, in-process calls)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """Who is on the other end of a connection, as proven by the handshake."""

    role: Role
    wallet: str | None
    source: str
    transcript_hash: bytes = b""
    # Per-connection state that ops may set (e.g. a peer's proof of the cluster secret).
    state: dict[str, Any] = field(default_factory=dict)
    # Reserve response bytes for the current request before building a large answer (the
    # connection's max_queued_response_bytes budget); may wait until the client reads.
    reserve: Callable[[int], Awaitable[None]] = _no_reserve
    # Called once when the connection ends (the server runs them; e.g. a peer's presence).
    on_close: list[Callable[[], None]] = field(default_factory=list)


class Args:
    """Strict reader of an ``args`` map: every key must be read by a declared accessor.

    Args:
        args: the received map.
        allowed: the keys the operation accepts.

    Raises:
        BadRequest: an unknown key.
    """

    def __init__(self, args: Mapping[str, Any], allowed: set[str]) -> None:
        unknown = set(args) - allowed
        if unknown:
            raise BadRequest(f"unknown arguments: {sorted(unknown)}")
        self._args = args

    def text(
        self, name: str, *, max_bytes: int, min_bytes: int = 0, required: bool = False
    ) -> str | None:
        """A text argument whose UTF-8 size is within bounds (None when absent and optional)."""
        value = self._args.get(name)
        if value is None:
            if required or name in self._args:
                raise BadRequest(f"{name} is required and must be text")
            return None
        if not isinstance(value, str):
            raise BadRequest(f"{name} must be text")
        size = len(value.encode("utf-8"))
        if not min_bytes <= size <= max_bytes:
            raise BadRequest(f"{name} must be {min_bytes}..{max_bytes} bytes of UTF-8, got {size}")
        return value

    def uint(self, name: str, *, default: int, minimum: int, maximum: int) -> int:
        """An unsigned integer argument within bounds, or ``default`` when absent."""
        value = self.optional_uint(name, minimum=minimum, maximum=maximum)
        return default if value is None else value

    def optional_uint(self, name: str, *, minimum: int, maximum: int) -> int | None:
        """An unsigned integer argument within bounds, or None when absent."""
        if name not in self._args:
            return None
        value = self._args[name]
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
            raise BadRequest(f"{name} must be an integer in {minimum}..{maximum}")
        return value

    def blob(self, name: str, *, required: bool = False) -> bytes | None:
        """A byte-string argument (sizes are checked by the operation)."""
        value = self._args.get(name)
        if value is None and not required and name not in self._args:
            return None
        if not isinstance(value, bytes):
            raise BadRequest(f"{name} must be bytes")
        return value

    def key(self) -> str:
        """The ``key`` argument of the KV operations (size rules are the store's)."""
        value = self._args.get("key")
        if not isinstance(value, str):
            raise BadRequest("key is required and must be text")
        return value


Handler = Callable[[Node, Session, Mapping[str, Any], float], Awaitable[dict[str, Any]]]
Auth = Literal["none", "app", "peer", "guardian"]


async def authorize_app(node: Node, session: Session) -> Identity:
    """The caller's app identity, checked against the authorization source now.

    Raises:
        Unauthenticated: anonymous connection.
        Forbidden: a peer connection, or the wallet is not an authorized app instance.
        Unavailable: the authorization source cannot decide.
    """
    if session.wallet is None:
        raise Unauthenticated("this operation needs an authenticated app wallet")
    if session.role != "app":
        raise Forbidden("this operation is for apps, not peers", reason="wrong_role")
    return await node.auth.authorize_app(session.wallet)


async def authorize_peer(node: Node, session: Session) -> Identity:
    """The caller's KMS-peer identity, checked against the authorization source now.

    Raises:
        Unauthenticated: anonymous connection.
        Forbidden: an app connection, or not an active, zk-verified KMS operator.
        Unavailable: the authorization source cannot decide.
    """
    if session.wallet is None:
        raise Unauthenticated("this operation needs an authenticated peer wallet")
    if session.role != "peer":
        raise Forbidden("this operation is for KMS peers", reason="wrong_role")
    return await node.auth.authorize_peer(session.wallet)


async def op_secret_status(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    await authorize_peer(node, session)
    Args(args, set())
    return {"initialized": node.master_secret is not None, "fingerprint": node.fingerprint()}


async def op_secret_get(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    identity = await authorize_peer(node, session)
    Args(args, set())
    secret = node.require_secret()
    node.log_secret_served(identity.wallet)
    # The channel is end-to-end sealed with forward secrecy, to a chain-authorized KMS operator.
    return {"secret": secret, "fingerprint": node.fingerprint()}


async def require_proven_peer(node: Node, session: Session) -> Identity:
    """A peer that has proven the cluster secret on this channel (``sync.hello``).

    Raises:
        Forbidden: not an authorized peer, or no proof yet (reason ``no_cluster_proof``).
        Unavailable: ``secret_mismatch``: the secret stopped matching the owner's pin after
            the channel was proven (nothing is exchanged under it any more).
    """
    identity = await authorize_peer(node, session)
    if not session.state.get("proven"):
        raise Forbidden("prove the cluster secret first (sync.hello)", reason="no_cluster_proof")
    node.require_secret()
    return identity


async def op_sync_hello(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    identity = await authorize_peer(node, session)
    proof, info = sync_messages.parse_hello_request(args)
    secret = node.require_secret()
    th = session.transcript_hash
    if not verify_cluster_proof(
        master_secret=secret, transcript_hash=th, direction="c2s", proof=proof
    ):
        raise Forbidden("the peer does not hold this cluster's secret", reason="bad_cluster_proof")
    answer = {"proof": cluster_proof(master_secret=secret, transcript_hash=th, direction="s2c")}
    replicator = node.replicator
    if not session.state.get("proven") and replicator is not None:
        replicator.inbound_opened(identity.wallet, info)
        session.on_close.append(lambda: replicator.inbound_closed(identity.wallet))
    session.state["proven"] = True
    if replicator is not None and info.boot is not None:
        answer.update(boot=replicator.boot, state=replicator.state)
    return answer


async def op_sync_push(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    identity = await require_proven_peer(node, session)
    items = sync_messages.parse_push_request(args)
    accepted, rejected, deferred = node.apply_replicated(
        items, now_ms=_now_ms(now), source=identity.wallet
    )
    # The answer is the acknowledgement: every record listed neither in ``rejected`` (invalid,
    # never to be resent) nor in ``deferred`` (over quota: resend later) is now stored here (or
    # something newer of its key is).
    return {"accepted": accepted, "rejected": rejected, "deferred": deferred}


async def op_sync_snapshot(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    await require_proven_peer(node, session)
    after = sync_messages.parse_snapshot_request(args)
    # A node that is itself still catching up would hand out an incomplete snapshot.
    store = node.serving_store()
    records, resume = replication.snapshot_chunk(
        store.records_from(after), max_bytes=node.limits.max_frame
    )
    return {"records": records, "next": None if resume is None else list(resume)}


async def op_sync_forget(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    await require_proven_peer(node, session)
    request = sync_messages.parse_forget_request(args)
    store = node.require_store()
    replicator = node.replicator
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


async def op_sync_digests(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    identity = await require_proven_peer(node, session)
    state = sync_messages.parse_digests_request(args)
    digests = replication.app_digests(node.require_store().records())
    answer: dict[str, Any] = {
        "apps": [[app_id, digest] for app_id, digest in sorted(digests.items())]
    }
    replicator = node.replicator
    if state is not None and replicator is not None:  # a peer that knows the field
        replicator.peer_info(identity.wallet, sync_messages.PeerInfo(None, state))
        answer["state"] = replicator.state
    return answer


async def op_sync_buckets(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    await require_proven_peer(node, session)
    app_id = sync_messages.parse_app_request("sync.buckets", args)
    buckets = replication.bucket_digests(node.require_store().records(), app_id, SYNC_BUCKETS)
    return {"buckets": buckets}


async def op_sync_keys(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    await require_proven_peer(node, session)
    request = sync_messages.parse_keys_request(args)
    keys = replication.keys_in_buckets(
        node.require_store().records(), request.app_id, request.buckets, SYNC_BUCKETS
    )
    # Bounded by the frame: a huge bucket is answered in part (the rest in later rounds).
    budget = sync_messages.frame_budget(node.limits.max_frame)
    entries: list[list[Any]] = []
    used = 0
    for key, digest in sorted(keys.items()):
        used += len(key.encode("utf-8")) + len(digest) + 16  # CBOR headers, generously
        if used > budget:
            return {"keys": entries, "truncated": True}
        entries.append([key, digest])
    return {"keys": entries, "truncated": False}


async def op_sync_pull(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    await require_proven_peer(node, session)
    request = sync_messages.parse_pull_request(args)
    keys = list(request.keys)
    store = node.require_store()
    budget = sync_messages.frame_budget(node.limits.max_frame)
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


async def authorize_guardian(node: Node, session: Session) -> tuple[str, GuardianSet]:
    """The caller's guardian wallet and the current guardian set.

    Raises:
        Unauthenticated: anonymous connection.
        Forbidden: not a ``guardian`` connection (``wrong_role``), or not in the owner's
            current guardian set (``not_guardian``).
        Unavailable: the authorization source cannot say.
    """
    if session.wallet is None:
        raise Unauthenticated("this operation needs an authenticated guardian wallet")
    if session.role != "guardian":
        raise Forbidden("this operation is for guardians", reason="wrong_role")
    guardians = await _guardian_set(node)
    if not guardians.is_guardian(session.wallet):
        raise Forbidden("not a guardian of this cluster", reason="not_guardian")
    return session.wallet, guardians


async def _guardian_set(node: Node) -> GuardianSet:
    read = getattr(node.auth, "guardian_set", None)
    return no_guardians() if read is None else await read()


def _share_set(guardians: GuardianSet) -> guardian_shares.GuardianSet:
    return guardian_shares.GuardianSet(
        wallets=guardians.wallets,
        enc_public_keys=guardians.enc_keys,
        threshold=guardians.threshold,
        version=guardians.version,
    )


async def op_guardian_share(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    wallet, guardians = await authorize_guardian(node, session)
    Args(args, set())
    secret = node.require_secret()
    if node.pin is None:
        # Backing up a secret the owner has not pinned would let it come back unapproved.
        raise Unavailable(
            "the owner has not pinned this cluster's master secret; no share is handed out",
            reason="unpinned",
            fingerprint=node.fingerprint(),
        )
    index = guardians.wallets.index(wallet)
    share = guardian_shares.make_shares(secret, _share_set(guardians))[index]
    sealed = guardian_shares.seal_share(share, guardians.enc_keys[index])
    get_logger("novakms.guardians", node=node.wallet).info(
        "share_handed_out", guardian=wallet, set_version=guardians.version
    )
    return {
        "share": sealed,
        "set_version": guardians.version,
        "x": share.x,
        "threshold": share.threshold,
        "count": share.count,
        "fingerprint": share.fingerprint,
    }


async def op_guardian_restore(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    wallet, guardians = await authorize_guardian(node, session)
    raw = Args(args, {"share"}).blob("share", required=True)
    assert raw is not None  # required=True
    try:
        share = guardian_shares.parse_share(raw)
    except guardian_shares.GuardianShareError as exc:
        raise BadRequest(f"not a guardian share: {exc}", reason=exc.reason) from None
    if node.master_secret is not None and not node.pin_mismatch:
        return {"recovered": True, "received": 0, "threshold": guardians.threshold}
    pin = node.pin
    if pin is None or node.master_secret is not None or node.not_ready.reason != "secret_lost":
        raise Unavailable(
            "this node is not waiting for a recovery (it accepts shares in secret_lost only)",
            reason="not_secret_lost",
        )
    try:
        check_share(
            share,
            sender=wallet,
            wallets=guardians.wallets,
            threshold=guardians.threshold,
            set_version=guardians.version,
            pin=pin,
        )
    except ShareRefused as exc:
        raise BadRequest(str(exc), reason=exc.reason) from None
    log = get_logger("novakms.guardians", node=node.wallet)
    node.recovery.add(wallet, share, now)
    log.info("share_received", guardian=wallet, held=len(node.recovery))
    received = len(node.recovery.senders(now))  # before a recovery forgets them
    secret = node.recovery.try_recover(
        now,
        lambda shares: guardian_shares.recover(
            shares, threshold=guardians.threshold, pin_fingerprint=pin
        ),
    )
    if secret is not None and node.master_secret is None:
        node.install_secret(secret)
        log.warning(
            "secret_recovered", fingerprint=node.fingerprint(), guardians=guardians.threshold
        )
    return {
        "recovered": node.master_secret is not None,
        "received": received,
        "threshold": guardians.threshold,
    }


async def op_health(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    Args(args, set())
    return {"status": "ok"}


async def op_status(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    Args(args, set())
    initialized = node.master_secret is not None
    ready = node.serving_apps
    if ready:
        reason = None
    elif not initialized:
        reason = node.not_ready.reason
    else:
        reason = "secret_mismatch" if node.pin_mismatch else "unpinned"
    stop_reason, unconfirmed = _stop_verdict(node)
    return {
        "node": {"wallet": node.wallet, "version": node.version, "mode": node.mode.value},
        "ready": ready,
        "reason": reason,
        "syncing": node.syncing,
        "degraded": node.degraded,
        "catch_up": _catch_up_status(node),
        "safe_to_stop": stop_reason is None,
        "safe_to_stop_reason": stop_reason,
        "unconfirmed": unconfirmed,
        "secret": {
            "initialized": initialized,
            "fingerprint": node.fingerprint(),
            "matches_pin": not node.pin_mismatch,
            "pinned": node.pin is not None,
            "pin_required": bool(node.require_pin),
        },
        "auth": {"source": node.auth.name, **node.auth.describe()},
        "store": _store_status(node),
        "cluster": _cluster_status(node, now),
        "guardians": await _guardians_status(node, now),
        "connections": node.connections,
    }


async def _guardians_status(node: Node, now: float) -> dict[str, Any]:
    """The guardian set and recovery progress; never a share."""
    try:
        guardians = await _guardian_set(node)
    except Unavailable:
        return {"set_version": None, "wallets": [], "threshold": None, "recovery": None}
    recovery = None
    if node.master_secret is None and node.not_ready.reason == "secret_lost":
        senders = node.recovery.senders(now)
        recovery = {"received": len(senders), "from": senders, "threshold": guardians.threshold}
    return {
        "set_version": guardians.version,
        "wallets": list(guardians.wallets),
        "threshold": guardians.threshold,
        "recovery": recovery,
    }


def _stop_verdict(node: Node) -> tuple[str | None, int]:
    if node.replicator is not None:
        verdict: tuple[str | None, int] = node.replicator.safe_to_stop()
        return verdict
    # No cluster: whatever this node holds, it holds alone.
    held = 0 if node.store is None else len(node.store.records())
    return ("unconfirmed" if held else None), held


def _catch_up_status(node: Node) -> dict[str, Any]:
    replicator = node.replicator
    return {
        "state": node.catch_up_state,
        "reason": node.degraded,
        "unreachable": [] if replicator is None else list(replicator.unreachable),
    }


def _cluster_status(node: Node, now: float) -> dict[str, Any]:
    replicator = node.replicator
    if replicator is None:
        return {
            "peers": [],
            "rejected_records": node.replication_rejected,
            "snapshot": None,
            "tombstones_collected": 0,
        }
    return {
        "peers": replicator.describe(_now_ms(now)),
        "rejected_records": node.replication_rejected,
        "snapshot": replicator.snapshot_status(),
        "tombstones_collected": replicator.tombstones_collected,
    }


def _store_status(node: Node) -> dict[str, Any]:
    if node.store is None:
        return {"apps": 0, "live": 0, "tombstones": 0, "used_bytes": 0}
    stats = node.store.stats()
    return {
        "apps": stats.apps,
        "live": stats.live,
        "tombstones": stats.tombstones,
        "used_bytes": stats.used_bytes,
    }


async def op_nodes(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    Args(args, set())
    peers = getattr(node.auth, "peers", None)
    operators = [] if peers is None else await peers()
    replicator = node.replicator
    return {
        "self": node.wallet,
        "nodes": [
            {**entry, "probe": None if replicator is None else replicator.probe(entry["wallet"])}
            for entry in operators
        ],
    }


async def op_derive(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    identity = await authorize_app(node, session)
    a = Args(args, {"path", "context", "length"})
    limits = node.limits
    path = a.text("path", required=True, min_bytes=1, max_bytes=limits.max_path_bytes)
    assert path is not None  # required=True
    context = a.text("context", max_bytes=limits.max_context_bytes)
    length = a.uint("length", default=32, minimum=1, maximum=limits.max_derive_length)
    key = derive_app_key(
        master_secret=node.require_secret(),
        app_id=identity.app_id,
        path=path,
        context=context,
        length=length,
    )
    return {"app_id": identity.app_id, "path": path, "key": key, "length": length}


def _now_ms(now: float) -> int:
    return int(now * 1000)


_MAX_TTL_MS = 2**63 - 1


async def op_kv_get(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    identity = await authorize_app(node, session)
    a = Args(args, {"key"})
    key = a.key()
    store = node.serving_store()
    held = store.record(identity.app_id, key)
    if held is not None and held.sealed is not None:
        await session.reserve(len(held.sealed))  # before opening: bounds unread answers
    record, value = store.get(identity.app_id, key, _now_ms(now))
    return {
        "key": key,
        "value": value,
        "version": record.version,
        "updated_at_ms": record.updated_at_ms,
        "expires_at_ms": record.expires_at_ms,
    }


async def op_kv_put(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    identity = await authorize_app(node, session)
    a = Args(args, {"key", "value", "ttl_ms", "if_version", "acks"})
    key = a.key()
    value = a.blob("value", required=True)
    assert value is not None  # required=True
    ttl_ms = a.optional_uint("ttl_ms", minimum=1, maximum=_MAX_TTL_MS)
    if_version = a.text("if_version", max_bytes=64, min_bytes=1)
    acks = a.uint("acks", default=0, minimum=0, maximum=MAX_ACKS)
    store = node.serving_store()
    replicator = node.replicator
    if acks:
        # Refused before anything is written: waiting could never succeed.
        peers = 0 if replicator is None else replicator.peer_count()
        if acks > peers:
            raise Unavailable(
                f"{acks} acknowledgements asked for, but this node has {peers} peers",
                reason="not_enough_peers",
                peers=peers,
            )
    record = store.put(
        identity.app_id, key, value, _now_ms(now), ttl_ms=ttl_ms, if_version=if_version
    )
    acked = 0
    if acks:
        assert replicator is not None
        timeout = node.limits.ack_timeout
        acked = await replicator.wait_acks(record, acks, timeout=timeout)
        if acked < acks:
            raise Unavailable(
                f"the write is stored on this node and will still replicate, but only {acked} "
                f"of {acks} peers acknowledged it within {timeout:g} s",
                reason="acks_timeout",
                acked=acked,
                version=record.version,
            )
    return {
        "key": key,
        "version": record.version,
        "updated_at_ms": record.updated_at_ms,
        "expires_at_ms": record.expires_at_ms,
        "acked": acked,
    }


async def op_kv_delete(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    identity = await authorize_app(node, session)
    a = Args(args, {"key", "if_version"})
    key = a.key()
    if_version = a.text("if_version", max_bytes=64, min_bytes=1)
    record = node.serving_store().delete(identity.app_id, key, _now_ms(now), if_version=if_version)
    return {"key": key, "deleted": True, "updated_at_ms": record.updated_at_ms}


def _encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii")


def _decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor.encode("ascii")).decode("utf-8")
    except (ValueError, UnicodeError):
        raise BadRequest("cursor is not one this server issued") from None


async def op_kv_list(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    identity = await authorize_app(node, session)
    a = Args(args, {"prefix", "limit", "cursor"})
    limits = node.limits
    prefix = a.text("prefix", max_bytes=limits.max_key_bytes) or ""
    limit = a.uint(
        "limit", default=min(100, limits.max_list_limit), minimum=1, maximum=limits.max_list_limit
    )
    cursor = a.text("cursor", max_bytes=4 * limits.max_key_bytes, min_bytes=1)
    after = None if cursor is None else _decode_cursor(cursor)
    page = node.serving_store().list_keys(
        identity.app_id, _now_ms(now), prefix=prefix, limit=limit, after=after
    )
    return {
        "keys": page.keys,
        "cursor": None if page.next_after is None else _encode_cursor(page.next_after),
    }


async def op_cert_ca(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    a = Args(args, {"app_id"})
    app_id = a.optional_uint("app_id", minimum=0, maximum=2**64 - 1)
    if app_id is None:
        raise BadRequest("app_id is required")
    return {"app_id": app_id, "certificate": node.ca_pem(app_id)}


async def op_cert_sign(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    identity = await authorize_app(node, session)
    a = Args(args, {"csr", "days"})
    csr = args.get("csr")
    if not isinstance(csr, str | bytes):
        raise BadRequest("csr is required: PEM text or DER bytes")
    days = a.optional_uint("days", minimum=1, maximum=36500)
    issued = sign_csr(
        master_secret=node.require_secret(),
        app_id=identity.app_id,
        csr=csr,
        days=days,
        now=datetime.fromtimestamp(now, tz=UTC),
        serial_bytes=node.random_bytes,
        max_days=node.limits.cert_max_days,
        default_days=node.limits.cert_default_days,
    )
    return {
        "app_id": identity.app_id,
        "certificate": issued.certificate_pem,
        "ca": issued.ca_pem,
        "serial": format(issued.serial, "x"),
        "not_before_ms": int(issued.not_before.timestamp() * 1000),
        "not_after_ms": int(issued.not_after.timestamp() * 1000),
    }


OPS: dict[str, tuple[Auth, Handler]] = {
    "health": ("none", op_health),
    "status": ("none", op_status),
    "nodes": ("none", op_nodes),
    "derive": ("app", op_derive),
    "kv.get": ("app", op_kv_get),
    "kv.put": ("app", op_kv_put),
    "kv.delete": ("app", op_kv_delete),
    "kv.list": ("app", op_kv_list),
    "cert.ca": ("none", op_cert_ca),
    "cert.sign": ("app", op_cert_sign),
    "secret.status": ("peer", op_secret_status),
    "secret.get": ("peer", op_secret_get),
    "sync.hello": ("peer", op_sync_hello),
    "sync.push": ("peer", op_sync_push),
    "sync.digests": ("peer", op_sync_digests),
    "sync.buckets": ("peer", op_sync_buckets),
    "sync.keys": ("peer", op_sync_keys),
    "sync.pull": ("peer", op_sync_pull),
    "sync.snapshot": ("peer", op_sync_snapshot),
    "sync.forget": ("peer", op_sync_forget),
    "guardian.share": ("guardian", op_guardian_share),
    "guardian.restore": ("guardian", op_guardian_restore),
}


async def _take_token(node: Node, session: Session, auth: Auth, now: float) -> float:
    """Charge one request; the seconds until the bucket has a token again (0: go ahead).

    The bucket is the session's wallet once the wallet is authorized for its role, else the
    anonymous bucket of its source (``anonymous_rate``), so that fresh key pairs buy nothing.

    The authorization is looked up once per session, by the first op that needs it anyway
    (the source caches it); ops without authorization never wait for it. A source that cannot
    decide now leaves the question open for the next request.
    """
    if auth != "none" and session.wallet is not None and REGISTERED not in session.state:
        checks = {"app": authorize_app, "peer": authorize_peer, "guardian": authorize_guardian}
        try:
            await checks[session.role](node, session)
            session.state[REGISTERED] = True
        except (Forbidden, Unauthenticated):
            session.state[REGISTERED] = False
        except Unavailable:
            pass
    if session.state.get(REGISTERED) is True:
        assert session.wallet is not None
        return node.wallet_limiter.take(session.wallet, now)
    return node.anonymous_limiter.take(session.source, now)


async def handle(
    node: Node, session: Session, op: str, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    """Run one operation.

    Raises:
        UnknownOp: no such operation.
        RateLimited: the caller's token bucket is empty (``retry_after_ms`` says when to retry).
        RequestError: whatever the operation raises.
    """
    entry = OPS.get(op)
    if entry is None:
        raise UnknownOp(f"unknown operation {op!r}")
    auth, handler = entry
    wait = await _take_token(node, session, auth, now)
    if wait > 0:
        raise RateLimited("too many requests", retry_after_ms=max(1, math.ceil(wait * 1000)))
    if op in _APP_OPS:
        node.require_pinned()  # before any argument is looked at (PROTOCOL.md §8)
    result = await handler(node, session, args, now)
    if op in _KV_OPS and node.degraded is not None:
        # Served, but this node has not confirmed it holds everything its peers hold.
        result["degraded"] = node.degraded
    return result


_KV_OPS = frozenset({"kv.get", "kv.put", "kv.delete", "kv.list"})
#: Ops that serve apps from the master secret: only under a pinned one (``Node.require_pin``).
_APP_OPS = frozenset({"derive", "cert.ca", "cert.sign", *_KV_OPS})
