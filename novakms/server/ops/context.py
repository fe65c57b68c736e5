"""What an operation sees: the session, the caller its auth column admitted, and the few
collaborators it may use (:class:`OpContext`); and the checks behind the auth column.

An op never sees the :class:`~novakms.server.node.Node`, a stream or a clock: ``now`` is in the
context. The dispatcher (:func:`novakms.server.ops.handle`) runs the op's column check and
builds the context with its result, so no handler can forget to authorize.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from novakms.auth.guardians import GuardianSet, no_guardians
from novakms.auth.model import Identity
from novakms.auth.source import Membership, Registry
from novakms.cluster.consensus import Consensus
from novakms.cluster.replicator import Replicator
from novakms.config import Limits, Mode
from novakms.crypto.signer import Signer
from novakms.errors import Forbidden, Unauthenticated
from novakms.server.keyring import Keyring
from novakms.server.store_gate import StoreGate
from novakms.wire.handshake import Role

__all__ = [
    "APP_ID",
    "PROVEN",
    "REGISTERED",
    "Auth",
    "Caller",
    "OpContext",
    "Session",
    "authorize_app",
    "authorize_guardian",
    "authorize_peer",
    "guardian_set",
]

#: ``Session.state`` key: whether the session's wallet passed its role's authorization once.
REGISTERED = "registered"
#: ``Session.state`` key: the app id the registry gave an app session's wallet (access log).
APP_ID = "app_id"
#: ``Session.state`` key: the peer proved the cluster secret on this channel (``sync.hello``).
PROVEN = "proven"

#: An op's auth column: who may call it. ``proven_peer``: a peer that also proved the cluster
#: secret on this channel (``sync.hello``).
Auth = Literal["none", "app", "peer", "proven_peer", "guardian"]


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


@dataclass(frozen=True, slots=True)
class Caller:
    """The caller as its op's auth column admitted it.

    Attributes:
        identity: the app's or peer's identity (columns ``app``, ``peer``, ``proven_peer``).
        guardians: the current guardian set the caller belongs to (column ``guardian``).
    """

    identity: Identity | None = None
    guardians: GuardianSet | None = None


@dataclass(slots=True, kw_only=True)
class OpContext:
    """One request's view of the node; ops only read it.

    Not frozen: one is built per request, and a frozen dataclass's ``__init__`` costs three
    times as much (one ``object.__setattr__`` per field).

    Attributes:
        wallet: this node's wallet.
        version / mode / limits: as configured.
        keyring: the master secret and its state.
        gate: the KV store behind its readiness checks.
        registry: the authorization source (``status`` describes it).
        membership: operators, pin, guardians; None on a node without one.
        replicator: the cluster's replicator; None on a node without a membership.
        session: the connection's session.
        caller: what the auth column admitted.
        now: unix seconds at the start of the request.
        random_bytes: the RNG (certificate serials, nonces).
        connections: open connections (``status``).
        signer: this node's wallet signer (``keys.attest``); None where none is given.
        consensus: conditional writes' coordinator and acceptor; None on a stateless worker.
    """

    wallet: str
    version: str
    mode: Mode
    limits: Limits
    keyring: Keyring
    gate: StoreGate
    registry: Registry
    membership: Membership | None
    replicator: Replicator | None
    session: Session
    caller: Caller
    now: float
    random_bytes: Callable[[int], bytes]
    connections: int = 0
    signer: Signer | None = None
    consensus: Consensus | None = None

    @property
    def identity(self) -> Identity:
        """The admitted app or peer identity (only for ops whose column authorizes one)."""
        identity = self.caller.identity
        assert identity is not None, "the op's auth column admits no identity"
        return identity

    @property
    def cas(self) -> Consensus:
        """The consensus on conditional writes (store ops only: stateless workers refuse them)."""
        consensus = self.consensus
        assert consensus is not None, "a stateless worker serves no store op"
        return consensus

    @property
    def guardians(self) -> GuardianSet:
        """The guardian set of an admitted guardian (column ``guardian`` only)."""
        guardians = self.caller.guardians
        assert guardians is not None, "the op's auth column is not guardian"
        return guardians


async def authorize_app(registry: Registry, session: Session) -> Identity:
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
    return await registry.authorize_app(session.wallet)


async def authorize_peer(registry: Registry, session: Session) -> Identity:
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
    return await registry.authorize_peer(session.wallet)


async def guardian_set(membership: Membership | None) -> GuardianSet:
    """The owner's guardian set; empty on a node without a membership.

    Raises:
        Unavailable: the source cannot say.
    """
    return no_guardians() if membership is None else await membership.guardian_set()


async def authorize_guardian(
    membership: Membership | None, session: Session
) -> tuple[str, GuardianSet]:
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
    guardians = await guardian_set(membership)
    if not guardians.is_guardian(session.wallet):
        raise Forbidden("not a guardian of this cluster", reason="not_guardian")
    return session.wallet, guardians
