"""What the trio client (:mod:`novakms.client.aio`) and the blocking client
(:mod:`novakms.client.blocking`) share: a typed result for every operation and its strict
parsing, the argument maps, the default timeout.

Every answer is checked here before a caller sees it: a field of the wrong type (or missing)
is a :class:`~novakms.errors.ProtocolError`, never a ``KeyError`` or a wrong value later.
Results that carry secrets (keys, values, shares) never show them in their ``repr``.

No trio, no sockets: a program that only needs the blocking client (or only these types) never
loads an event loop. The errors either client raises are those of :mod:`novakms.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from novakms.errors import ProtocolError

__all__ = [
    "DEFAULT_TIMEOUT",
    "CatchUp",
    "CertIssued",
    "Ciphertext",
    "DeleteResult",
    "DeriveResult",
    "GuardianShare",
    "Health",
    "KVItem",
    "KVPage",
    "KeyAttestation",
    "NodeEntry",
    "NodeInfo",
    "Nodes",
    "PeerProbe",
    "Plaintext",
    "PublicKey",
    "PutResult",
    "RestoreResult",
    "SecretState",
    "Signature",
    "Status",
    "StoreStats",
    "optional_args",
    "parse_cert_ca",
    "parse_cert_issued",
    "parse_ciphertext",
    "parse_delete_result",
    "parse_derive_result",
    "parse_guardian_share",
    "parse_health",
    "parse_key_attestation",
    "parse_kv_item",
    "parse_kv_page",
    "parse_nodes",
    "parse_plaintext",
    "parse_public_key",
    "parse_put_result",
    "parse_restore_result",
    "parse_signature",
    "parse_status",
    "sign_args",
]

DEFAULT_TIMEOUT = 10.0  # seconds for connecting + handshake, and the default per-call timeout

_T = TypeVar("_T")


def optional_args(**items: Any) -> dict[str, Any]:
    """An args map without the None entries (shared by the trio and blocking clients)."""
    return {k: v for k, v in items.items() if v is not None}


def sign_args(
    name: str,
    alg: str,
    *,
    digest: bytes | None = None,
    eip191: bytes | str | None = None,
    eip712: tuple[bytes, bytes] | None = None,
    message: bytes | None = None,
    der: bool = False,
) -> dict[str, Any]:
    """The args of ``sign`` (shared by the trio and blocking clients); ``eip712`` is
    (domain separator, struct hash)."""
    typed = None if eip712 is None else {"domain": eip712[0], "message": eip712[1]}
    return optional_args(
        name=name,
        alg=alg,
        digest=digest,
        eip191=eip191,
        eip712=typed,
        message=message,
        format="der" if der else None,
    )


# --- strict field access ------------------------------------------------------------------


def _map(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ProtocolError(f"{where}: expected a map")
    return value


def _get(result: Mapping[str, Any], name: str, kind: type[_T], where: str) -> _T:
    value = result.get(name)
    # bool is an int in Python: an integer field never accepts true/false.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"{where}: field {name!r} is not {kind.__name__}")
    return value


def _opt(result: Mapping[str, Any], name: str, kind: type[_T], where: str) -> _T | None:
    if result.get(name) is None:
        return None
    return _get(result, name, kind, where)


def _texts(result: Mapping[str, Any], name: str, where: str) -> tuple[str, ...]:
    items = _get(result, name, list, where)
    if not all(isinstance(item, str) for item in items):
        raise ProtocolError(f"{where}: field {name!r} holds a non-text item")
    return tuple(items)


# --- health / status / nodes ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Health:
    """Result of ``health``: the node answers (``status`` is ``"ok"``)."""

    status: str


def parse_health(result: Mapping[str, Any]) -> Health:
    """Check and wrap a ``health`` result."""
    return Health(status=_get(result, "status", str, "health"))


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """``status.node``: the answering node's wallet, software version and mode."""

    wallet: str
    version: str
    mode: str


@dataclass(frozen=True, slots=True)
class CatchUp:
    """``status.catch_up``: ``syncing``, ``degraded`` (with its reason) or ``serving``."""

    state: str
    reason: str | None
    unreachable: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SecretState:
    """``status.secret``: whether the node holds the master secret, never the secret itself."""

    initialized: bool
    fingerprint: str | None
    matches_pin: bool
    pinned: bool
    pin_required: bool


@dataclass(frozen=True, slots=True)
class StoreStats:
    """``status.store``: the node's KV store in numbers."""

    apps: int
    live: int
    tombstones: int
    used_bytes: int


@dataclass(frozen=True, slots=True)
class Status:
    """Result of ``status`` (PROTOCOL.md ``status``).

    The fields an app or an operator script decides on are typed; ``document`` is the whole
    answer as sent (``auth``, ``cluster``, ``guardians``, ``connections`` and anything a later
    server adds), for display.

    Attributes:
        ready: the node serves apps now (it holds the secret, and its pin if one is required).
        reason: why not, when not ready (``not_ready``, ``secret_lost``, ``unpinned``, …).
        syncing: a joiner still taking its snapshot (KV answers ``unavailable``).
        degraded: the reason the node serves degraded, or None.
    """

    node: NodeInfo
    ready: bool
    reason: str | None
    syncing: bool
    degraded: str | None
    catch_up: CatchUp
    safe_to_stop: bool
    safe_to_stop_reason: str | None
    unconfirmed: int
    secret: SecretState
    store: StoreStats
    document: Mapping[str, Any] = field(repr=False, compare=False, hash=False)


def parse_status(result: Mapping[str, Any]) -> Status:
    """Check and wrap a ``status`` result."""
    node = _map(result.get("node"), "status.node")
    catch_up = _map(result.get("catch_up"), "status.catch_up")
    secret = _map(result.get("secret"), "status.secret")
    store = _map(result.get("store"), "status.store")
    return Status(
        node=NodeInfo(
            wallet=_get(node, "wallet", str, "status.node"),
            version=_get(node, "version", str, "status.node"),
            mode=_get(node, "mode", str, "status.node"),
        ),
        ready=_get(result, "ready", bool, "status"),
        reason=_opt(result, "reason", str, "status"),
        syncing=_get(result, "syncing", bool, "status"),
        degraded=_opt(result, "degraded", str, "status"),
        catch_up=CatchUp(
            state=_get(catch_up, "state", str, "status.catch_up"),
            reason=_opt(catch_up, "reason", str, "status.catch_up"),
            unreachable=_texts(catch_up, "unreachable", "status.catch_up"),
        ),
        safe_to_stop=_get(result, "safe_to_stop", bool, "status"),
        safe_to_stop_reason=_opt(result, "safe_to_stop_reason", str, "status"),
        unconfirmed=_get(result, "unconfirmed", int, "status"),
        secret=SecretState(
            initialized=_get(secret, "initialized", bool, "status.secret"),
            fingerprint=_opt(secret, "fingerprint", str, "status.secret"),
            matches_pin=_get(secret, "matches_pin", bool, "status.secret"),
            pinned=_get(secret, "pinned", bool, "status.secret"),
            pin_required=_get(secret, "pin_required", bool, "status.secret"),
        ),
        store=StoreStats(
            apps=_get(store, "apps", int, "status.store"),
            live=_get(store, "live", int, "status.store"),
            tombstones=_get(store, "tombstones", int, "status.store"),
            used_bytes=_get(store, "used_bytes", int, "status.store"),
        ),
        document=result,
    )


@dataclass(frozen=True, slots=True)
class PeerProbe:
    """What the answering node's replication knows about reaching one peer."""

    connected: bool
    last_ok_ms: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One KMS operator of ``nodes``.

    Attributes:
        address: where to dial the node's KMS protocol (``HOST:PORT`` or ``vsock://CID:PORT``,
            from its registered ``instance_url``), or None when the URL has no host and port.
        authorized: the peer policy admits it (only authorized operators form the cluster).
        probe: the answering node's view of reaching it; None for itself and non-peers.
    """

    wallet: str
    authorized: bool
    reason: str | None
    instance_id: int | None
    instance_url: str | None
    address: str | None
    status: str | None
    zk_verified: bool | None
    version_id: int | None
    probe: PeerProbe | None


@dataclass(frozen=True, slots=True)
class Nodes:
    """Result of ``nodes``: the answering node's wallet and the KMS operators it knows."""

    self_wallet: str
    nodes: tuple[NodeEntry, ...]


def parse_nodes(result: Mapping[str, Any]) -> Nodes:
    """Check and wrap a ``nodes`` result."""
    entries = []
    for raw in _get(result, "nodes", list, "nodes"):
        entry = _map(raw, "nodes entry")
        probe = entry.get("probe")
        if probe is not None:
            probe_map = _map(probe, "nodes.probe")
            probe = PeerProbe(
                connected=_get(probe_map, "connected", bool, "nodes.probe"),
                last_ok_ms=_opt(probe_map, "last_ok_ms", int, "nodes.probe"),
                error=_opt(probe_map, "error", str, "nodes.probe"),
            )
        entries.append(
            NodeEntry(
                wallet=_get(entry, "wallet", str, "nodes entry"),
                authorized=_get(entry, "authorized", bool, "nodes entry"),
                reason=_opt(entry, "reason", str, "nodes entry"),
                instance_id=_opt(entry, "instance_id", int, "nodes entry"),
                instance_url=_opt(entry, "instance_url", str, "nodes entry"),
                address=_opt(entry, "address", str, "nodes entry"),
                status=_opt(entry, "status", str, "nodes entry"),
                zk_verified=_opt(entry, "zk_verified", bool, "nodes entry"),
                version_id=_opt(entry, "version_id", int, "nodes entry"),
                probe=probe,
            )
        )
    return Nodes(self_wallet=_get(result, "self", str, "nodes"), nodes=tuple(entries))


# --- derive ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeriveResult:
    """Result of ``derive``."""

    app_id: int
    path: str
    key: bytes
    length: int

    def __repr__(self) -> str:  # never show key material
        return f"DeriveResult(app_id={self.app_id}, path={self.path!r}, length={self.length})"


def parse_derive_result(result: Mapping[str, Any]) -> DeriveResult:
    """Check and wrap a ``derive`` result.

    Args:
        result: the ``ok`` map of the server's response.

    Returns:
        The typed result.

    Raises:
        ProtocolError: a field is missing or of the wrong type (e.g. no key bytes).
    """
    return DeriveResult(
        app_id=_get(result, "app_id", int, "derive"),
        path=_get(result, "path", str, "derive"),
        key=_get(result, "key", bytes, "derive"),
        length=_get(result, "length", int, "derive"),
    )


# --- kv -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KVItem:
    """Result of ``kv.get``."""

    key: str
    value: bytes
    version: str
    updated_at_ms: int
    expires_at_ms: int | None

    def __repr__(self) -> str:  # values are secrets: never show them
        return f"KVItem(key={self.key!r}, version={self.version!r}, size={len(self.value)})"


def parse_kv_item(result: Mapping[str, Any]) -> KVItem:
    """Check and wrap a ``kv.get`` result.

    Raises:
        ProtocolError: a field is missing or of the wrong type (e.g. no value bytes).
    """
    return KVItem(
        key=_get(result, "key", str, "kv.get"),
        value=_get(result, "value", bytes, "kv.get"),
        version=_get(result, "version", str, "kv.get"),
        updated_at_ms=_get(result, "updated_at_ms", int, "kv.get"),
        expires_at_ms=_opt(result, "expires_at_ms", int, "kv.get"),
    )


@dataclass(frozen=True, slots=True)
class PutResult:
    """Result of ``kv.put``: the new version, and how many peers acknowledged it (``acks``)."""

    key: str
    version: str
    updated_at_ms: int
    expires_at_ms: int | None
    acked: int


def parse_put_result(result: Mapping[str, Any]) -> PutResult:
    """Check and wrap a ``kv.put`` result."""
    return PutResult(
        key=_get(result, "key", str, "kv.put"),
        version=_get(result, "version", str, "kv.put"),
        updated_at_ms=_get(result, "updated_at_ms", int, "kv.put"),
        expires_at_ms=_opt(result, "expires_at_ms", int, "kv.put"),
        acked=_get(result, "acked", int, "kv.put"),
    )


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """Result of ``kv.delete``."""

    key: str
    deleted: bool
    updated_at_ms: int


def parse_delete_result(result: Mapping[str, Any]) -> DeleteResult:
    """Check and wrap a ``kv.delete`` result."""
    return DeleteResult(
        key=_get(result, "key", str, "kv.delete"),
        deleted=_get(result, "deleted", bool, "kv.delete"),
        updated_at_ms=_get(result, "updated_at_ms", int, "kv.delete"),
    )


@dataclass(frozen=True, slots=True)
class KVPage:
    """Result of ``kv.list``: one page of keys; ``cursor`` asks for the next (None: the last)."""

    keys: tuple[str, ...]
    cursor: str | None


def parse_kv_page(result: Mapping[str, Any]) -> KVPage:
    """Check and wrap a ``kv.list`` result."""
    return KVPage(
        keys=_texts(result, "keys", "kv.list"), cursor=_opt(result, "cursor", str, "kv.list")
    )


# --- certificates ---------------------------------------------------------------------------


def parse_cert_ca(result: Mapping[str, Any]) -> str:
    """The PEM text of a ``cert.ca`` result."""
    return _get(result, "certificate", str, "cert.ca")


@dataclass(frozen=True, slots=True)
class CertIssued:
    """Result of ``cert.sign``: the leaf (PEM), its issuing app CA (PEM) and its validity."""

    app_id: int
    certificate: str
    ca: str
    serial: str
    not_before_ms: int
    not_after_ms: int


def parse_cert_issued(result: Mapping[str, Any]) -> CertIssued:
    """Check and wrap a ``cert.sign`` result."""
    return CertIssued(
        app_id=_get(result, "app_id", int, "cert.sign"),
        certificate=_get(result, "certificate", str, "cert.sign"),
        ca=_get(result, "ca", str, "cert.sign"),
        serial=_get(result, "serial", str, "cert.sign"),
        not_before_ms=_get(result, "not_before_ms", int, "cert.sign"),
        not_after_ms=_get(result, "not_after_ms", int, "cert.sign"),
    )


# --- guardians ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GuardianShare:
    """Result of ``guardian.share``: the caller's share, sealed (HPKE) to its encryption key."""

    share: bytes
    set_version: int
    x: int
    threshold: int
    count: int
    fingerprint: str

    def __repr__(self) -> str:  # sealed, but still nothing to print
        return (
            f"GuardianShare(set_version={self.set_version}, x={self.x}, "
            f"threshold={self.threshold}, count={self.count})"
        )


def parse_guardian_share(result: Mapping[str, Any]) -> GuardianShare:
    """Check and wrap a ``guardian.share`` result."""
    return GuardianShare(
        share=_get(result, "share", bytes, "guardian.share"),
        set_version=_get(result, "set_version", int, "guardian.share"),
        x=_get(result, "x", int, "guardian.share"),
        threshold=_get(result, "threshold", int, "guardian.share"),
        count=_get(result, "count", int, "guardian.share"),
        fingerprint=_get(result, "fingerprint", str, "guardian.share"),
    )


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """Result of ``guardian.restore``: whether the node holds the secret now, and progress."""

    recovered: bool
    received: int
    threshold: int


def parse_restore_result(result: Mapping[str, Any]) -> RestoreResult:
    """Check and wrap a ``guardian.restore`` result."""
    return RestoreResult(
        recovered=_get(result, "recovered", bool, "guardian.restore"),
        received=_get(result, "received", int, "guardian.restore"),
        threshold=_get(result, "threshold", int, "guardian.restore"),
    )


# --- named keys ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublicKey:
    """Result of ``keys.public``: ``public_key`` is SEC1 uncompressed (secp256k1, p256) or raw
    (ed25519); ``address`` the Ethereum address of a secp256k1 key."""

    app_id: int
    name: str
    alg: str
    public_key: bytes
    address: str | None


def parse_public_key(result: Mapping[str, Any], where: str = "keys.public") -> PublicKey:
    """Check and wrap a ``keys.public`` result (also the key part of the others)."""
    return PublicKey(
        app_id=_get(result, "app_id", int, where),
        name=_get(result, "name", str, where),
        alg=_get(result, "alg", str, where),
        public_key=_get(result, "public_key", bytes, where),
        address=_opt(result, "address", str, where),
    )


@dataclass(frozen=True, slots=True)
class Signature:
    """Result of ``sign``: ``digest`` is what a secp256k1 key signed (None for the others)."""

    key: PublicKey
    signature: bytes
    digest: bytes | None


def parse_signature(result: Mapping[str, Any]) -> Signature:
    """Check and wrap a ``sign`` result."""
    return Signature(
        key=parse_public_key(result, "sign"),
        signature=_get(result, "signature", bytes, "sign"),
        digest=_opt(result, "digest", bytes, "sign"),
    )


@dataclass(frozen=True, slots=True)
class Ciphertext:
    """Result of ``encrypt``."""

    app_id: int
    name: str
    alg: str
    ciphertext: bytes


def parse_ciphertext(result: Mapping[str, Any]) -> Ciphertext:
    """Check and wrap an ``encrypt`` result."""
    return Ciphertext(
        app_id=_get(result, "app_id", int, "encrypt"),
        name=_get(result, "name", str, "encrypt"),
        alg=_get(result, "alg", str, "encrypt"),
        ciphertext=_get(result, "ciphertext", bytes, "encrypt"),
    )


@dataclass(frozen=True, slots=True)
class Plaintext:
    """Result of ``decrypt``."""

    app_id: int
    name: str
    alg: str
    plaintext: bytes

    def __repr__(self) -> str:  # never show the secret
        return f"Plaintext(app_id={self.app_id}, name={self.name!r}, alg={self.alg!r})"


def parse_plaintext(result: Mapping[str, Any]) -> Plaintext:
    """Check and wrap a ``decrypt`` result."""
    return Plaintext(
        app_id=_get(result, "app_id", int, "decrypt"),
        name=_get(result, "name", str, "decrypt"),
        alg=_get(result, "alg", str, "decrypt"),
        plaintext=_get(result, "plaintext", bytes, "decrypt"),
    )


@dataclass(frozen=True, slots=True)
class KeyAttestation:
    """Result of ``keys.attest``: ``statement`` EIP-191-signed by the node wallet ``signer``."""

    key: PublicKey
    statement: str
    signature: bytes
    signer: str
    issued_at: int


def parse_key_attestation(result: Mapping[str, Any]) -> KeyAttestation:
    """Check and wrap a ``keys.attest`` result."""
    return KeyAttestation(
        key=parse_public_key(result, "keys.attest"),
        statement=_get(result, "statement", str, "keys.attest"),
        signature=_get(result, "signature", bytes, "keys.attest"),
        signer=_get(result, "signer", str, "keys.attest"),
        issued_at=_get(result, "issued_at", int, "keys.attest"),
    )
