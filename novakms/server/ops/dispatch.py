"""The table of operations: ``op -> (auth column, handler(ctx, args))``, and the one dispatcher.

:data:`OPS` is the table of every operation and who may call it. :func:`handle` runs, for each
request and in this order (PROTOCOL.md §8, §10):

1. the rate limit (the session's wallet bucket once it is registered, else its source's
   anonymous bucket: :func:`_take_token`);
2. on a stateless worker (``Node.stateless_worker``, ``novakms serve --reuse-port``), the
   refusal of the store ops (:data:`STORE_OPS`: ``unavailable``, reason ``stateless_worker``):
   every worker has a store of its own, so serving them would let the workers diverge;
3. for the app ops (:data:`APP_OPS`), the pinned-secret gate (``Keyring.require_pinned``),
   before any argument is looked at;
4. the op's **auth column** — ``none``, ``app``, ``peer``, ``proven_peer`` (a peer that proved
   the cluster secret on this channel, under a secret still matching the pin) or
   ``guardian`` — whose result (:class:`~novakms.server.ops.context.Caller`) goes into the
   handler's :class:`~novakms.server.ops.context.OpContext`;
5. the handler, which validates its own arguments strictly and never sees a stream, a clock
   or the :class:`~novakms.server.node.Node`;
6. for the KV ops, ``degraded`` added to the answer while the node serves unconfirmed.

Families: :mod:`.app` (derive, cert), :mod:`.kv`, :mod:`.cluster` (secret, sync),
:mod:`.guardian`, :mod:`.info` (health, status, nodes).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple

from novakms.errors import Forbidden, RateLimited, Unauthenticated, Unavailable, UnknownOp
from novakms.server.node import Node
from novakms.server.ops.app import op_cert_ca, op_cert_sign, op_derive
from novakms.server.ops.args import Args
from novakms.server.ops.cluster import (
    op_cas_accept,
    op_cas_prepare,
    op_cas_recover,
    op_secret_get,
    op_secret_status,
    op_sync_buckets,
    op_sync_digests,
    op_sync_forget,
    op_sync_hello,
    op_sync_keys,
    op_sync_pull,
    op_sync_push,
    op_sync_snapshot,
)
from novakms.server.ops.context import (
    APP_ID,
    PROVEN,
    REGISTERED,
    Auth,
    Caller,
    OpContext,
    Session,
    authorize_app,
    authorize_guardian,
    authorize_peer,
)
from novakms.server.ops.guardian import op_guardian_restore, op_guardian_share
from novakms.server.ops.info import op_health, op_nodes, op_status
from novakms.server.ops.keys import (
    op_decrypt,
    op_encrypt,
    op_keys_attest,
    op_keys_public,
    op_sign,
)
from novakms.server.ops.kv import MAX_ACKS, op_kv_delete, op_kv_get, op_kv_list, op_kv_put

__all__ = [
    "APP_ID",
    "APP_OPS",
    "INLINE_OPS",
    "KEY_OPS",
    "KV_OPS",
    "MAX_ACKS",
    "OPS",
    "REGISTERED",
    "STORE_OPS",
    "Args",
    "Auth",
    "Handler",
    "Op",
    "OpContext",
    "Session",
    "authorize",
    "handle",
]

Handler = Callable[[OpContext, Mapping[str, Any]], Awaitable[dict[str, Any]]]


class Op(NamedTuple):
    """One row of :data:`OPS`: who may call the op, and what serves it."""

    auth: Auth
    handler: Handler


OPS: dict[str, Op] = {
    "health": Op("none", op_health),
    "status": Op("none", op_status),
    "nodes": Op("none", op_nodes),
    "derive": Op("app", op_derive),
    "kv.get": Op("app", op_kv_get),
    "kv.put": Op("app", op_kv_put),
    "kv.delete": Op("app", op_kv_delete),
    "kv.list": Op("app", op_kv_list),
    "cert.ca": Op("none", op_cert_ca),
    "cert.sign": Op("app", op_cert_sign),
    "keys.public": Op("app", op_keys_public),
    "keys.attest": Op("app", op_keys_attest),
    "sign": Op("app", op_sign),
    "encrypt": Op("app", op_encrypt),
    "decrypt": Op("app", op_decrypt),
    "secret.status": Op("peer", op_secret_status),
    "secret.get": Op("peer", op_secret_get),
    "sync.hello": Op("peer", op_sync_hello),
    "sync.push": Op("proven_peer", op_sync_push),
    "sync.digests": Op("proven_peer", op_sync_digests),
    "sync.buckets": Op("proven_peer", op_sync_buckets),
    "sync.keys": Op("proven_peer", op_sync_keys),
    "sync.pull": Op("proven_peer", op_sync_pull),
    "sync.snapshot": Op("proven_peer", op_sync_snapshot),
    "sync.forget": Op("proven_peer", op_sync_forget),
    "cas.prepare": Op("proven_peer", op_cas_prepare),
    "cas.accept": Op("proven_peer", op_cas_accept),
    "cas.recover": Op("proven_peer", op_cas_recover),
    "guardian.share": Op("guardian", op_guardian_share),
    "guardian.restore": Op("guardian", op_guardian_restore),
}

KV_OPS = frozenset({"kv.get", "kv.put", "kv.delete", "kv.list"})
#: The named-key ops (keys that never leave the KMS).
KEY_OPS = frozenset({"keys.public", "keys.attest", "sign", "encrypt", "decrypt"})
#: Ops that only compute once the caller's authorization is cached: the server answers them
#: in the connection's reader, without a task of their own. Every other op may wait for a
#: peer, the chain or acknowledgements, and runs in its own task.
INLINE_OPS = frozenset(
    {"health", "derive", "kv.get", "cert.ca", "keys.public", "sign", "encrypt", "decrypt"}
)
#: Ops that read or change the replicated store: a stateless worker refuses them.
STORE_OPS = KV_OPS | frozenset(op for op in OPS if op.startswith(("sync.", "cas.")))
#: Ops that serve apps from the master secret: only under a pinned one (``Keyring.require_pin``).
APP_OPS = frozenset({"derive", "cert.ca", "cert.sign", *KV_OPS, *KEY_OPS})


async def authorize(node: Node, session: Session, auth: Auth) -> Caller:
    """Run an auth column's check for the session, now.

    Args:
        node: the node (its registry, membership and keyring).
        session: the connection's session.
        auth: the op's column.

    Returns:
        The admitted caller (empty for ``none``).

    Raises:
        Unauthenticated: an anonymous session for a column that needs a wallet.
        Forbidden: the wrong role (``wrong_role``), refused by the registry, not a guardian
            (``not_guardian``), or a peer without the cluster proof (``no_cluster_proof``).
        Unavailable: the source cannot decide; ``secret_mismatch`` for a proven peer whose
            channel was proven under a secret that no longer matches the pin.
    """
    if auth == "none":
        return Caller()
    if auth == "app":
        return Caller(identity=await authorize_app(node.registry, session))
    if auth == "guardian":
        _, guardians = await authorize_guardian(node.membership, session)
        return Caller(guardians=guardians)
    identity = await authorize_peer(node.registry, session)
    if auth == "proven_peer":
        if not session.state.get(PROVEN):
            raise Forbidden(
                "prove the cluster secret first (sync.hello)", reason="no_cluster_proof"
            )
        node.keyring.require_secret()  # the pin may have turned against the proven secret
    return Caller(identity=identity)


async def _register(node: Node, session: Session) -> None:
    """Look the session's wallet up for its role, once per session (``REGISTERED``).

    Done by the first op that needs an authorization anyway (the source caches it); ops
    without authorization never wait for it. A source that cannot decide now leaves the
    question open for the next request.
    """
    try:
        if session.role == "app":
            session.state[APP_ID] = (await authorize_app(node.registry, session)).app_id
        elif session.role == "peer":
            await authorize_peer(node.registry, session)
        else:
            await authorize_guardian(node.membership, session)
        session.state[REGISTERED] = True
    except (Forbidden, Unauthenticated):
        session.state[REGISTERED] = False
    except Unavailable:
        pass


def _take_token(node: Node, session: Session, now: float) -> float:
    """Charge one request; the seconds until the bucket has a token again (0: go ahead).

    The bucket is the session's wallet once the wallet is authorized for its role
    (:func:`_register`), else the anonymous bucket of its source (``anonymous_rate``), so
    that fresh key pairs buy nothing.
    """
    if session.state.get(REGISTERED) is True:
        assert session.wallet is not None
        return node.wallet_limiter.take(session.wallet, now)
    return node.anonymous_limiter.take(session.source, now)


async def handle(
    node: Node,
    session: Session,
    op: str,
    args: Mapping[str, Any],
    now: float,
    *,
    connections: int = 0,
) -> dict[str, Any]:
    """Run one operation (the steps in the module docstring).

    Args:
        node: the node serving it.
        session: the connection's session.
        op: the operation's name.
        args: its arguments, as received.
        now: unix seconds.
        connections: open connections now (``status``).

    Returns:
        The result map.

    Raises:
        UnknownOp: no such operation.
        RateLimited: the caller's token bucket is empty (``retry_after_ms`` says when to retry).
        Unavailable: ``stateless_worker`` for a store op on a stateless worker.
        RequestError: the auth column's refusal, or whatever the operation raises.
    """
    entry = OPS.get(op)
    if entry is None:
        raise UnknownOp(f"unknown operation {op!r}")
    auth, handler = entry
    if auth != "none" and session.wallet is not None and REGISTERED not in session.state:
        await _register(node, session)
    wait = _take_token(node, session, now)
    if wait > 0:
        raise RateLimited("too many requests", retry_after_ms=max(1, math.ceil(wait * 1000)))
    if node.stateless_worker and op in STORE_OPS:
        raise Unavailable(
            "this process is a stateless worker: it serves no store operation "
            "(kv.*, sync.*, cas.*)",
            reason="stateless_worker",
        )
    if op in APP_OPS:
        node.keyring.require_pinned()  # before any argument is looked at (PROTOCOL.md §8)
    caller = await authorize(node, session, auth)
    ctx = OpContext(
        wallet=node.wallet,
        version=node.version,
        mode=node.mode,
        limits=node.limits,
        keyring=node.keyring,
        gate=node.gate,
        registry=node.registry,
        membership=node.membership,
        replicator=node.replicator,
        session=session,
        caller=caller,
        now=now,
        random_bytes=node.random_bytes,
        connections=connections,
        signer=node.signer,
        consensus=node.consensus,
    )
    result = await handler(ctx, args)
    degraded = node.gate.degraded
    if op in KV_OPS and degraded is not None:
        # Served, but this node has not confirmed it holds everything its peers hold.
        result["degraded"] = degraded
    return result
