"""Open operations about the node: ``health``, ``status``, ``nodes``.

They read the collaborators and never change them; the replicator only through its read-only
:class:`~novakms.cluster.replicator.ReplicationView`. No secret, share or key is in any answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from novakms.cluster.replicator import ReplicationView
from novakms.errors import Unavailable
from novakms.server.ops.args import Args, now_ms
from novakms.server.ops.context import OpContext, guardian_set
from novakms.server.store_gate import StoreGate

__all__ = ["op_health", "op_nodes", "op_status"]


async def op_health(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """Liveness: the node answers."""
    Args(args, set())
    return {"status": "ok"}


async def op_status(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """Everything an operator looks at (PROTOCOL.md ``status``)."""
    Args(args, set())
    keyring, gate = ctx.keyring, ctx.gate
    replicator: ReplicationView | None = ctx.replicator
    initialized = keyring.initialized
    ready = keyring.serving_apps
    if ready:
        reason = None
    elif not initialized:
        reason = keyring.not_ready.reason
    else:
        reason = "secret_mismatch" if keyring.pin_mismatch else "unpinned"
    stop_reason, unconfirmed = _stop_verdict(gate, replicator)
    return {
        "node": {"wallet": ctx.wallet, "version": ctx.version, "mode": ctx.mode.value},
        "ready": ready,
        "reason": reason,
        "syncing": gate.syncing,
        "degraded": gate.degraded,
        "catch_up": {
            "state": gate.catch_up_state,
            "reason": gate.degraded,
            "unreachable": [] if replicator is None else list(replicator.unreachable),
        },
        "safe_to_stop": stop_reason is None,
        "safe_to_stop_reason": stop_reason,
        "unconfirmed": unconfirmed,
        "secret": {
            "initialized": initialized,
            "fingerprint": keyring.fingerprint(),
            "matches_pin": not keyring.pin_mismatch,
            "pinned": keyring.pin is not None,
            "pin_required": keyring.require_pin,
        },
        "auth": {"source": ctx.registry.name, **ctx.registry.describe()},
        "store": _store_status(gate),
        "cluster": _cluster_status(gate, replicator, now_ms(ctx.now)),
        "cas": None if ctx.consensus is None else ctx.consensus.describe(),
        "guardians": await _guardians_status(ctx),
        "connections": ctx.connections,
    }


async def _guardians_status(ctx: OpContext) -> dict[str, Any]:
    """The guardian set and recovery progress; never a share."""
    try:
        guardians = await guardian_set(ctx.membership)
    except Unavailable:
        return {"set_version": None, "wallets": [], "threshold": None, "recovery": None}
    keyring = ctx.keyring
    recovery = None
    if not keyring.initialized and keyring.not_ready.reason == "secret_lost":
        senders = keyring.recovery.senders(ctx.now)
        recovery = {"received": len(senders), "from": senders, "threshold": guardians.threshold}
    return {
        "set_version": guardians.version,
        "wallets": list(guardians.wallets),
        "threshold": guardians.threshold,
        "recovery": recovery,
    }


def _stop_verdict(gate: StoreGate, replicator: ReplicationView | None) -> tuple[str | None, int]:
    if replicator is not None:
        return replicator.safe_to_stop()
    # No cluster: whatever this node holds, it holds alone.
    held = 0 if gate.store is None else len(gate.store.records())
    return ("unconfirmed" if held else None), held


def _cluster_status(
    gate: StoreGate, replicator: ReplicationView | None, now: int
) -> dict[str, Any]:
    if replicator is None:
        return {
            "peers": [],
            "rejected_records": gate.rejected,
            "snapshot": None,
            "tombstones_collected": 0,
        }
    return {
        "peers": replicator.describe(now),
        "rejected_records": gate.rejected,
        "snapshot": replicator.snapshot_status(),
        "tombstones_collected": replicator.tombstones_collected,
    }


def _store_status(gate: StoreGate) -> dict[str, Any]:
    if gate.store is None:
        return {"apps": 0, "live": 0, "tombstones": 0, "used_bytes": 0}
    stats = gate.store.stats()
    return {
        "apps": stats.apps,
        "live": stats.live,
        "tombstones": stats.tombstones,
        "used_bytes": stats.used_bytes,
    }


async def op_nodes(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """The KMS operators and this node's view of their reachability."""
    Args(args, set())
    operators = [] if ctx.membership is None else await ctx.membership.peers()
    replicator: ReplicationView | None = ctx.replicator
    return {
        "self": ctx.wallet,
        "nodes": [
            {**entry, "probe": None if replicator is None else replicator.probe(entry["wallet"])}
            for entry in operators
        ],
    }
