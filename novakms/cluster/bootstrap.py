"""Master-secret bootstrap without transactions: the anti-split-brain decision (DESIGN §6).

Theory of operation
-------------------

A node that starts (or restarts) must end up holding the *one* cluster master secret, or
refuse to serve. Nothing on chain records the secret; at most the owner pins its fingerprint
(``KMSRegistry.masterSecretHash``, here ``pin``). The network glue asks every active peer for
its status (reachable? initialized? fingerprint = ``"0x" + keccak256(secret)``) and hands the
answers to :func:`decide`, which is pure and applies these rules **in order**:

1. **This node already has a secret.** With a pin set and ``own_fingerprint != pin`` the
   answer is ``secret_lost``: a secret that does not match the owner's pin is never served.
   Otherwise ``have``.
2. **Pin set, no secret here.** Only peers reporting exactly the pin count. At least one →
   ``fetch`` from those. None, but some active peer did not answer → ``wait`` (it may be the
   one holding the pinned secret). None and everyone answered → ``secret_lost``: the pinned
   secret is gone, and generating a new one would silently change every app's keys.
3. **No pin, no secret here, some peer has one.** More than one distinct fingerprint among the
   peers that answered → ``split_brain`` (never pick one silently). Exactly one → ``fetch``,
   only from the peers reporting it.
4. **Nobody that answered has a secret** (and there is no pin). Any active peer unreachable →
   ``wait``: unreachable active peers mean wait, never generate (it might hold the secret, or
   be a lower instance generating one right now). Everyone answered → ``generate`` only when
   this node has the lowest ``instanceId`` of itself and all peers (or is alone); otherwise
   ``wait`` and retry: the lowest one generates, and the others then fetch from it.

``fetch`` lists *every* peer that reported the chosen fingerprint, ordered by instance id (then
wallet), so the glue can move on when one peer fails or sends a secret that does not verify
instead of stopping at the first (a DESIGN §10 trap). Whatever arrives must pass
:func:`accept_fetched` — exact size, fingerprint equal to the one the decision was made on
(constant-time compare), and equal to the pin when one is set — before it is installed.

:func:`unavailable_for` maps each state to the error a node reports meanwhile:
``split_brain`` and ``secret_lost`` are reported under those reasons, the transient states
(``wait``, ``fetch``, ``generate``) as ``not_ready``; ``have`` serves.

Why at most one node generates: every fresh node sees the same active set. A node generates
only when it heard from every peer, none holds a secret and no instance id is lower than its
own; instance ids are unique, so at most one node of the set can pass that test.

Inputs are validated (:class:`ValueError`; :class:`TypeError` for a value of the wrong type):
wallets are addresses (compared and reported in canonical lowercase form), instance ids are
ints ``>= 1``, fingerprints and the pin are ``"0x"`` + 64 hex digits (normalized to lowercase;
the all-zero pin is the chain's "unset" value and is refused: pass ``None``), wallets and
instance ids are unique. An entry for this node (``self_wallet``) in ``peers`` is ignored. The
result does not depend on the order of ``peers``.

This module is pure: no I/O, no clock; the RNG is injected into :func:`generate_secret`. It
sees secrets only in :func:`accept_fetched` and :func:`generate_secret` and never puts them in
an exception message, a reason or a repr. Fingerprints are public (the secret has 256 bits of
entropy) and may appear in reasons.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

from novakms.crypto.eth import normalize_wallet
from novakms.crypto.kdf import MASTER_SECRET_SIZE, secret_fingerprint
from novakms.errors import Unavailable

__all__ = [
    "REASON_NOT_READY",
    "REASON_SECRET_LOST",
    "REASON_SECRET_MISMATCH",
    "REASON_SPLIT_BRAIN",
    "Action",
    "Decision",
    "PeerReport",
    "accept_fetched",
    "decide",
    "generate_secret",
    "unavailable_for",
]

Action = Literal["have", "fetch", "generate", "wait", "split_brain", "secret_lost"]
"""What a node does next about its master secret (see the module docstring)."""

_ACTIONS: Final = frozenset(get_args(Action))

REASON_SPLIT_BRAIN: Final = "split_brain"
"""``Unavailable.reason`` while peers hold different secrets and no pin decides."""

REASON_SECRET_LOST: Final = "secret_lost"  # noqa: S105 (an error reason, not a secret)
"""``Unavailable.reason`` when the pinned secret is nowhere to be found (or ours mismatches)."""

REASON_NOT_READY: Final = "not_ready"
"""``Unavailable.reason`` while bootstrapping (waiting, fetching or generating)."""

REASON_SECRET_MISMATCH: Final = "secret_mismatch"  # noqa: S105 (an error reason)
"""``Unavailable.reason`` raised by :func:`accept_fetched` for a secret that does not verify."""

_FINGERPRINT_RE: Final = re.compile(r"0x[0-9a-fA-F]{64}")
_ZERO_FINGERPRINT: Final = "0x" + "00" * 32


def _normalize_fingerprint(value: object, what: str) -> str:
    """Validate a fingerprint and return it lowercase.

    Args:
        value: the candidate (``"0x"`` + 64 hex digits, any case).
        what: name used in the error message.

    Returns:
        ``"0x"`` + 64 lowercase hex digits.

    Raises:
        ValueError: not a fingerprint.
    """
    if not isinstance(value, str) or _FINGERPRINT_RE.fullmatch(value) is None:
        raise ValueError(f"{what} must be '0x' followed by 64 hex digits")
    return value.lower()


def _normalize_pin(pin: str | None) -> str | None:
    """Validate the owner's pin (``None`` when unset).

    Raises:
        ValueError: malformed, or the all-zero hash (the chain's unset value; pass ``None``).
    """
    if pin is None:
        return None
    value = _normalize_fingerprint(pin, "pin")
    if value == _ZERO_FINGERPRINT:
        raise ValueError("pin must not be the zero hash (pass None when no pin is set)")
    return value


def _check_instance_id(value: object, what: str) -> int:
    """Validate an instance id: an int ``>= 1`` (bool refused).

    Raises:
        TypeError: not an int.
        ValueError: below 1.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int")
    if value < 1:
        raise ValueError(f"{what} must be >= 1, got {value}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerReport:
    """What one active peer said about its master secret (or that it could not be asked).

    Validated on construction; ``wallet`` and ``fingerprint`` are stored in lowercase form.

    Attributes:
        wallet: the peer's wallet address.
        instance_id: the peer's on-chain instance id (``>= 1``).
        reachable: whether the peer answered the status request.
        initialized: whether it holds a secret; ``None`` exactly when unreachable.
        fingerprint: ``"0x"`` + 64 hex of keccak256(secret) exactly when initialized.

    Raises:
        ValueError: a malformed wallet or fingerprint, an instance id below 1, or fields
            inconsistent with each other.
        TypeError: ``instance_id``, ``reachable`` or ``initialized`` of the wrong type.
    """

    wallet: str
    instance_id: int
    reachable: bool
    initialized: bool | None
    fingerprint: str | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "wallet", normalize_wallet(self.wallet))
        _check_instance_id(self.instance_id, "peer instance_id")
        if not isinstance(self.reachable, bool):
            raise TypeError("reachable must be a bool")
        if not self.reachable:
            if self.initialized is not None or self.fingerprint is not None:
                raise ValueError("an unreachable peer has initialized=None and fingerprint=None")
            return
        if not isinstance(self.initialized, bool):
            raise TypeError("a reachable peer reports initialized as a bool")
        if self.initialized:
            fingerprint = _normalize_fingerprint(self.fingerprint, "peer fingerprint")
            object.__setattr__(self, "fingerprint", fingerprint)
        elif self.fingerprint is not None:
            raise ValueError("an uninitialized peer has no fingerprint")


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The outcome of :func:`decide`.

    Attributes:
        action: what to do next (see the module docstring).
        fetch_from: for ``fetch``, the wallets of every peer that reported ``fingerprint``,
            in the order to try them (instance id, then wallet); empty otherwise.
        fingerprint: for ``fetch``, the fingerprint the fetched secret must have; for
            ``have`` and ``secret_lost`` with a local secret, this node's own fingerprint;
            ``None`` otherwise.
        reason: human-readable explanation (fingerprints at most, never a secret).

    Raises:
        ValueError: an unknown action, or ``fetch_from`` / ``fingerprint`` inconsistent with it.
        TypeError: ``fetch_from`` is not a tuple.
    """

    action: Action
    fetch_from: tuple[str, ...] = field(default=())
    fingerprint: str | None = None
    reason: str

    def __post_init__(self) -> None:
        if self.action not in _ACTIONS:
            raise ValueError(f"unknown bootstrap action {self.action!r}")
        if not isinstance(self.fetch_from, tuple):
            raise TypeError("fetch_from must be a tuple")
        if self.fingerprint is not None:
            _normalize_fingerprint(self.fingerprint, "decision fingerprint")
        if self.action == "fetch":
            if not self.fetch_from or self.fingerprint is None:
                raise ValueError("a fetch decision needs peers to fetch from and a fingerprint")
        elif self.fetch_from:
            raise ValueError(f"a {self.action} decision has no peers to fetch from")
        if self.action == "have" and self.fingerprint is None:
            raise ValueError("a have decision carries the node's own fingerprint")


def _short(fingerprint: str) -> str:
    """A fingerprint abbreviated for reasons (public data; shortened for readability)."""
    return fingerprint[:10] + "..."


def decide(
    *,
    self_wallet: str,
    self_instance_id: int,
    own_fingerprint: str | None,
    pin: str | None,
    peers: Sequence[PeerReport],
) -> Decision:
    """Decide what this node does about its master secret (rules in the module docstring).

    Args:
        self_wallet: this node's wallet; a ``peers`` entry with this wallet is ignored.
        self_instance_id: this node's instance id (``>= 1``).
        own_fingerprint: fingerprint of the secret this node holds, ``None`` when it has none.
        pin: the owner's on-chain pin (``masterSecretHash``), ``None`` when unset.
        peers: one report per *other* active KMS node, in any order.

    Returns:
        The decision. Deterministic, and independent of the order of ``peers``.

    Raises:
        ValueError: a malformed wallet, fingerprint or pin, an instance id below 1, two peers
            with the same wallet, or two nodes with the same instance id.
        TypeError: an entry of ``peers`` is not a :class:`PeerReport`, or the instance id is
            not an int.
    """
    me = normalize_wallet(self_wallet)
    my_id = _check_instance_id(self_instance_id, "self_instance_id")
    own = None if own_fingerprint is None else _normalize_fingerprint(own_fingerprint, "own fp")
    pinned = _normalize_pin(pin)

    others: list[PeerReport] = []
    seen_wallets: set[str] = set()
    seen_ids: set[int] = {my_id}
    for peer in peers:
        if not isinstance(peer, PeerReport):
            raise TypeError("peers must be PeerReport instances")
        if peer.wallet == me:
            continue
        if peer.wallet in seen_wallets:
            raise ValueError(f"duplicate peer wallet {peer.wallet}")
        if peer.instance_id in seen_ids:
            raise ValueError(f"duplicate instance id {peer.instance_id}")
        seen_wallets.add(peer.wallet)
        seen_ids.add(peer.instance_id)
        others.append(peer)
    # One canonical order makes every result independent of how the glue listed the peers.
    others.sort(key=lambda p: (p.instance_id, p.wallet))

    # (1) This node holds a secret: serve it, unless it contradicts the owner's pin.
    if own is not None:
        if pinned is not None and not hmac.compare_digest(own, pinned):
            return Decision(
                action="secret_lost",
                fingerprint=own,
                reason=(
                    f"local secret {_short(own)} does not match the on-chain pin "
                    f"{_short(pinned)}; refusing to serve it"
                ),
            )
        return Decision(action="have", fingerprint=own, reason="this node holds the secret")

    holders = [p for p in others if p.reachable and p.initialized]
    unreachable = [p for p in others if not p.reachable]

    # (2) Pinned: only the pinned secret may ever be installed; never generate.
    if pinned is not None:
        matching = [p for p in holders if p.fingerprint == pinned]
        if matching:
            return Decision(
                action="fetch",
                fetch_from=tuple(p.wallet for p in matching),
                fingerprint=pinned,
                reason=f"{len(matching)} peer(s) hold the pinned secret {_short(pinned)}",
            )
        if unreachable:
            return Decision(
                action="wait",
                reason=(
                    f"no reachable peer holds the pinned secret {_short(pinned)}; "
                    f"{len(unreachable)} active peer(s) unreachable"
                ),
            )
        return Decision(
            action="secret_lost",
            reason=(
                f"every active peer answered and none holds the pinned secret {_short(pinned)}; "
                "refusing to generate a different one"
            ),
        )

    # (3) No pin: a peer's secret is adopted only if the peers that answered agree on one.
    fingerprints = sorted({p.fingerprint for p in holders if p.fingerprint is not None})
    if len(fingerprints) > 1:
        return Decision(
            action="split_brain",
            reason=(
                f"peers report {len(fingerprints)} different secrets "
                f"({', '.join(fingerprints)}) and no pin is set; refusing to pick one"
            ),
        )
    if fingerprints:
        (chosen,) = fingerprints
        return Decision(
            action="fetch",
            fetch_from=tuple(p.wallet for p in holders),
            fingerprint=chosen,
            reason=f"{len(holders)} peer(s) hold the secret {_short(chosen)}",
        )

    # (4) Nobody that answered has a secret: only the lowest instance, hearing from all, generates.
    if unreachable:
        return Decision(
            action="wait",
            reason=(
                f"no peer that answered holds a secret and {len(unreachable)} active peer(s) "
                "are unreachable; never generate while any is"
            ),
        )
    lowest = min((p.instance_id for p in others), default=my_id)
    if my_id <= lowest:  # ids are unique, so "<=" means this node is the lowest (or alone)
        return Decision(
            action="generate",
            reason=(
                "alone in the cluster"
                if not others
                else f"no peer holds a secret and instance {my_id} is the lowest of all"
            ),
        )
    return Decision(
        action="wait",
        reason=f"no peer holds a secret; instance {lowest} (the lowest) generates it",
    )


def accept_fetched(*, secret: bytes, expected_fingerprint: str, pin: str | None) -> None:
    """Check a secret received from a peer before installing it.

    Args:
        secret: the bytes the peer sent.
        expected_fingerprint: the :attr:`Decision.fingerprint` of the ``fetch`` decision.
        pin: the owner's on-chain pin, ``None`` when unset (re-read: it may have changed).

    Raises:
        Unavailable: reason ``"secret_mismatch"`` (:data:`REASON_SECRET_MISMATCH`) when the
            secret is not ``MASTER_SECRET_SIZE`` bytes, its fingerprint differs from
            ``expected_fingerprint``, or a pin is set and the fingerprint differs from it. The
            message never contains the secret; try the next peer in ``fetch_from``.
        ValueError: ``expected_fingerprint`` or ``pin`` is malformed (a programming error).
    """
    expected = _normalize_fingerprint(expected_fingerprint, "expected_fingerprint")
    pinned = _normalize_pin(pin)
    if not isinstance(secret, bytes | bytearray) or len(secret) != MASTER_SECRET_SIZE:
        raise Unavailable(
            f"fetched secret is not {MASTER_SECRET_SIZE} bytes", reason=REASON_SECRET_MISMATCH
        )
    actual = secret_fingerprint(bytes(secret))
    # Compare every condition before branching, each in constant time.
    fingerprint_ok = hmac.compare_digest(actual.encode("ascii"), expected.encode("ascii"))
    pin_ok = pinned is None or hmac.compare_digest(actual.encode("ascii"), pinned.encode("ascii"))
    if not fingerprint_ok:
        raise Unavailable(
            "fetched secret does not match the expected fingerprint", reason=REASON_SECRET_MISMATCH
        )
    if not pin_ok:
        raise Unavailable(
            "fetched secret does not match the on-chain pin", reason=REASON_SECRET_MISMATCH
        )


def generate_secret(random_bytes: Callable[[int], bytes]) -> bytes:
    """Generate a fresh master secret (only after :func:`decide` returned ``generate``).

    Args:
        random_bytes: a CSPRNG, called once as ``random_bytes(MASTER_SECRET_SIZE)``
            (production passes ``secrets.token_bytes``).

    Returns:
        ``MASTER_SECRET_SIZE`` bytes.

    Raises:
        ValueError: the RNG returned something other than ``MASTER_SECRET_SIZE`` bytes, or all
            zeros (a broken RNG; the output is never echoed).
    """
    out = random_bytes(MASTER_SECRET_SIZE)
    if not isinstance(out, bytes | bytearray) or len(out) != MASTER_SECRET_SIZE:
        raise ValueError(f"random_bytes must return exactly {MASTER_SECRET_SIZE} bytes")
    secret = bytes(out)
    if secret == bytes(MASTER_SECRET_SIZE):
        raise ValueError("random_bytes returned all zeros; refusing it as a master secret")
    return secret


def unavailable_for(decision: Decision) -> Unavailable | None:
    """The error this node reports to clients and peers while in ``decision``'s state.

    Args:
        decision: the current bootstrap decision.

    Returns:
        ``None`` for ``have`` (serving); otherwise an :class:`Unavailable` with reason
        ``"split_brain"``, ``"secret_lost"``, or ``"not_ready"`` for the transient states
        ``wait``, ``fetch`` and ``generate``. Its message is ``decision.reason``.
    """
    if decision.action == "have":
        return None
    if decision.action == "split_brain":
        return Unavailable(decision.reason, reason=REASON_SPLIT_BRAIN)
    if decision.action == "secret_lost":
        return Unavailable(decision.reason, reason=REASON_SECRET_LOST)
    message = f"bootstrapping the master secret: {decision.reason}"
    return Unavailable(message, reason=REASON_NOT_READY)
