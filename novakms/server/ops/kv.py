"""The KV operations: ``kv.get``, ``kv.put`` (optionally waiting for peer acknowledgements),
``kv.delete``, ``kv.list``.

A put or delete with ``if_version`` is a conditional write: it is decided by a majority of the
KMS nodes (:mod:`novakms.cluster.consensus`), never by this node's store alone.

Every one serves the caller's own app (the app id comes from the registry, never the client)
through :meth:`StoreGate.serving_store`, which refuses while the node is catching up.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from novakms.errors import BadRequest, Unavailable
from novakms.server.ops.args import Args, now_ms
from novakms.server.ops.context import OpContext

__all__ = ["MAX_ACKS", "op_kv_delete", "op_kv_get", "op_kv_list", "op_kv_put"]

MAX_ACKS = 255  # most peer acknowledgements one kv.put may wait for
_MAX_TTL_MS = 2**63 - 1


async def op_kv_get(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's value of a key."""
    identity = ctx.identity
    key = Args(args, {"key"}).key()
    store = ctx.gate.serving_store()
    held = store.record(identity.app_id, key)
    if held is not None and held.sealed is not None:
        await ctx.session.reserve(len(held.sealed))  # before opening: bounds unread answers
    record, value = store.get(identity.app_id, key, now_ms(ctx.now))
    return {
        "key": key,
        "value": value,
        "version": record.version,
        "updated_at_ms": record.updated_at_ms,
        "expires_at_ms": record.expires_at_ms,
    }


async def op_kv_put(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """Store a value; with ``acks``, wait until that many peers acknowledged it."""
    identity = ctx.identity
    a = Args(args, {"key", "value", "ttl_ms", "if_version", "acks"})
    key = a.key()
    value = a.blob("value", required=True)
    assert value is not None  # required=True
    ttl_ms = a.optional_uint("ttl_ms", minimum=1, maximum=_MAX_TTL_MS)
    if_version = a.text("if_version", max_bytes=64, min_bytes=1)
    acks = a.uint("acks", default=0, minimum=0, maximum=MAX_ACKS)
    store = ctx.gate.serving_store()
    replicator = ctx.replicator
    if acks:
        # Refused before anything is written: waiting could never succeed.
        peers = 0 if replicator is None else replicator.peer_count()
        if acks > peers:
            raise Unavailable(
                f"{acks} acknowledgements asked for, but this node has {peers} peers",
                reason="not_enough_peers",
                peers=peers,
            )
    if if_version is not None:
        record = await ctx.cas.put(
            identity.app_id, key, value, ttl_ms=ttl_ms, if_version=if_version
        )
    else:
        record = store.put(identity.app_id, key, value, now_ms(ctx.now), ttl_ms=ttl_ms)
    acked = 0
    if acks:
        assert replicator is not None
        timeout = ctx.limits.ack_timeout
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


async def op_kv_delete(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """Delete a key (a tombstone that replicates)."""
    identity = ctx.identity
    a = Args(args, {"key", "if_version"})
    key = a.key()
    if_version = a.text("if_version", max_bytes=64, min_bytes=1)
    if if_version is not None:
        ctx.gate.serving_store()
        record = await ctx.cas.delete(identity.app_id, key, if_version=if_version)
    else:
        record = ctx.gate.serving_store().delete(identity.app_id, key, now_ms(ctx.now))
    return {"key": key, "deleted": True, "updated_at_ms": record.updated_at_ms}


def _encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii")


def _decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor.encode("ascii")).decode("utf-8")
    except (ValueError, UnicodeError):
        raise BadRequest("cursor is not one this server issued") from None


async def op_kv_list(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """One page of the caller's keys under a prefix."""
    identity = ctx.identity
    a = Args(args, {"prefix", "limit", "cursor"})
    limits = ctx.limits
    prefix = a.text("prefix", max_bytes=limits.max_key_bytes) or ""
    limit = a.uint(
        "limit", default=min(100, limits.max_list_limit), minimum=1, maximum=limits.max_list_limit
    )
    cursor = a.text("cursor", max_bytes=4 * limits.max_key_bytes, min_bytes=1)
    after = None if cursor is None else _decode_cursor(cursor)
    page = ctx.gate.serving_store().list_keys(
        identity.app_id, now_ms(ctx.now), prefix=prefix, limit=limit, after=after
    )
    return {
        "keys": page.keys,
        "cursor": None if page.next_after is None else _encode_cursor(page.next_after),
    }
