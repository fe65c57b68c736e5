"""Key derivation from the cluster master secret (``protocol/PROTOCOL.md`` §9).

Two separate HKDF-SHA256 spaces hang off the same 32-byte master secret:

* **app keys** (§9.1) — salt ``"nova-kms:app:" + decimal(app_id)``, info ``path`` or
  ``path + ":" + context``. Byte-compatible with existing Nova KMS deployments, so an app that
  migrates keeps its keys.
* **internal keys** (§9.2) — salt ``"nova-kms:internal:v1"``, info made of length-prefixed,
  labelled fields. Every app salt starts with ``"nova-kms:app:"``, which the internal salt does
  not, so no app request can reach an internal key.

This module is pure: no I/O, no clocks, no randomness. Nothing here logs or formats a secret.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from novakms.crypto.eth import keccak256

__all__ = [
    "APP_SALT_PREFIX",
    "INTERNAL_SALT",
    "MASTER_SECRET_SIZE",
    "MAX_DERIVE_LENGTH",
    "AppKeys",
    "derive_app_key",
    "derive_internal_key",
    "secret_fingerprint",
]

MASTER_SECRET_SIZE = 32
"""Size in bytes of the cluster master secret (the HKDF input keying material)."""

APP_SALT_PREFIX = "nova-kms:app:"
"""Prefix of every app-space salt; the decimal app id follows."""

INTERNAL_SALT = "nova-kms:internal:v1"
"""Salt of the internal key space (never equal to, nor a prefix-match of, an app salt)."""

MAX_DERIVE_LENGTH = 1024
"""Largest output length accepted by the derive functions, in bytes."""

_U32_MAX = 0xFFFF_FFFF


def _check_master_secret(master_secret: bytes) -> None:
    """Reject a master secret of the wrong type or size (message never shows the value).

    Args:
        master_secret: the candidate secret.

    Raises:
        ValueError: not ``MASTER_SECRET_SIZE`` bytes.
    """
    if not isinstance(master_secret, bytes | bytearray) or len(master_secret) != MASTER_SECRET_SIZE:
        raise ValueError(f"master secret must be exactly {MASTER_SECRET_SIZE} bytes")


def _check_length(length: int) -> None:
    """Reject an output length outside ``1 .. MAX_DERIVE_LENGTH``.

    Args:
        length: requested output length in bytes.

    Raises:
        TypeError: the length is not an int.
        ValueError: the length is out of range.
    """
    if isinstance(length, bool) or not isinstance(length, int):
        raise TypeError("length must be an int")
    if not 1 <= length <= MAX_DERIVE_LENGTH:
        raise ValueError(f"length must be in 1..{MAX_DERIVE_LENGTH}, got {length}")


def _check_app_args(app_id: int, path: str, context: str | None, length: int) -> None:
    """The argument checks of :func:`derive_app_key` (see there)."""
    if isinstance(app_id, bool) or not isinstance(app_id, int):
        raise TypeError("app_id must be an int")
    if app_id < 0:
        raise ValueError("app_id must be non-negative")
    if not isinstance(path, str) or not path:
        raise ValueError("path must be a non-empty str")
    if context is not None and not isinstance(context, str):
        raise TypeError("context must be a str or None")
    _check_length(length)


def _hkdf_sha256(*, ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869) extract-and-expand.

    Args:
        ikm: input keying material.
        salt: HKDF salt.
        info: HKDF info.
        length: output length in bytes.

    Returns:
        ``length`` bytes of output keying material.
    """
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(bytes(ikm))


def derive_app_key(
    *,
    master_secret: bytes,
    app_id: int,
    path: str,
    context: str | None = None,
    length: int = 32,
) -> bytes:
    """Derive an app key (PROTOCOL §9.1, compatible with existing Nova KMS deployments).

    ``info`` is ``path`` when ``context`` is ``None`` or ``""``, else ``path + ":" + context``.
    Because of that join, ``("a:b", "c")`` and ``("a", "b:c")`` give the same key (documented
    compatibility property).

    Args:
        master_secret: the 32-byte cluster master secret.
        app_id: the caller's app id (from the chain), ``>= 0``.
        path: non-empty key path.
        context: optional context; ``None`` and ``""`` are the same.
        length: output length, ``1 .. MAX_DERIVE_LENGTH``.

    Returns:
        The derived key, ``length`` bytes.

    Raises:
        ValueError: bad master secret size, negative app id, empty path or length out of
            range (programmer errors; wire-level validation happens before this).
        TypeError: an argument of the wrong type (e.g. a bool app id or length).
    """
    _check_master_secret(master_secret)
    _check_app_args(app_id, path, context, length)
    salt = f"{APP_SALT_PREFIX}{app_id}".encode()
    info_text = f"{path}:{context}" if context else path
    return _hkdf_sha256(ikm=master_secret, salt=salt, info=info_text.encode("utf-8"), length=length)


class _Hmac:
    """HMAC-SHA256 under one fixed key, its padded inner and outer hash states computed once.

    RFC 2104 over :mod:`hashlib`: ``H((K ^ opad) || H((K ^ ipad) || m))`` with the two key
    blocks hashed ahead, so a MAC of a short message costs two hash copies and two blocks.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = key.ljust(64, b"\0")  # keys are 32-byte PRKs: never longer than a block
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def __repr__(self) -> str:  # never the key
        return "_Hmac()"

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class AppKeys:
    """:func:`derive_app_key` for one master secret, each app's HKDF-Extract done once.

    The extract step (``PRK = HMAC(salt(app_id), master_secret)``) depends on the app alone,
    so it is kept for up to ``capacity`` apps (the oldest dropped first), with the HMAC key
    blocks of the PRK already hashed; a derive is then HKDF-Expand only, one HMAC per 32
    output bytes. Same keys as :func:`derive_app_key`, same argument checks, half its cost.

    The memo holds key material of the same standing as the master secret; like it, it stays
    in this object and is never rendered.

    Args:
        master_secret: the 32-byte cluster master secret.
        capacity: apps whose PRK is kept, ``>= 1``.

    Raises:
        ValueError: bad master secret size or capacity.
    """

    __slots__ = ("_capacity", "_prks", "_secret")

    def __init__(self, master_secret: bytes, *, capacity: int = 1024) -> None:
        _check_master_secret(master_secret)
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._prks: dict[int, _Hmac] = {}
        self._secret = bytes(master_secret)

    def __repr__(self) -> str:  # never the secret
        return f"AppKeys(apps={len(self._prks)})"

    def derive(
        self, *, app_id: int, path: str, context: str | None = None, length: int = 32
    ) -> bytes:
        """The key :func:`derive_app_key` gives for this secret and these arguments.

        Raises:
            ValueError / TypeError: as :func:`derive_app_key`.
        """
        _check_app_args(app_id, path, context, length)
        prk = self._prks.get(app_id)
        if prk is None:
            salt = f"{APP_SALT_PREFIX}{app_id}".encode()
            prk = _Hmac(_Hmac(salt).digest(self._secret))  # HKDF-Extract: the salt is the key
            if len(self._prks) >= self._capacity:  # bounded: the oldest entry goes
                del self._prks[next(iter(self._prks))]
            self._prks[app_id] = prk
        info = (f"{path}:{context}" if context else path).encode("utf-8")
        # HKDF-Expand (RFC 5869 §2.3): T(i) = HMAC(PRK, T(i-1) || info || i).
        block = prk.digest(info + b"\x01")
        if length <= len(block):
            return block[:length]
        out = [block]
        for counter in range(2, -(-length // len(block)) + 1):
            block = prk.digest(block + info + bytes((counter,)))
            out.append(block)
        return b"".join(out)[:length]


def _internal_info(label: str, fields: Sequence[str | int]) -> bytes:
    """Build the length-prefixed info of an internal key (PROTOCOL §9.2).

    Args:
        label: the key's label (non-empty text).
        fields: further fields; integers are rendered in decimal.

    Returns:
        ``u32be(len(label)) || label || u32be(len(f1)) || f1 || ...`` (UTF-8).

    Raises:
        ValueError: empty label, or a part longer than 2**32 - 1 bytes.
        TypeError: a field that is neither str nor int (bool is refused), or ``fields`` given
            as a single string.
    """
    if not isinstance(label, str) or not label:
        raise ValueError("label must be a non-empty str")
    if isinstance(fields, str | bytes):
        raise TypeError("fields must be a sequence of str | int, not a single string")
    parts: list[bytes] = [label.encode("utf-8")]
    for field in fields:
        if isinstance(field, bool):
            raise TypeError("internal key fields must be str or int, not bool")
        if isinstance(field, int):
            parts.append(str(field).encode("ascii"))
        elif isinstance(field, str):
            parts.append(field.encode("utf-8"))
        else:
            raise TypeError("internal key fields must be str or int")
    out = bytearray()
    for part in parts:
        if len(part) > _U32_MAX:
            raise ValueError("internal key field too long")
        out += len(part).to_bytes(4, "big")
        out += part
    return bytes(out)


def derive_internal_key(
    *,
    master_secret: bytes,
    label: str,
    fields: Sequence[str | int] = (),
    length: int = 32,
) -> bytes:
    """Derive a key the KMS uses for itself (PROTOCOL §9.2); unreachable from the app space.

    Args:
        master_secret: the 32-byte cluster master secret.
        label: what the key is for (e.g. ``"app-data-key"``); non-empty.
        fields: further binding fields (e.g. the app id); ints are encoded in decimal.
        length: output length, ``1 .. MAX_DERIVE_LENGTH``.

    Returns:
        The derived key, ``length`` bytes.

    Raises:
        ValueError: bad master secret size, empty label, or length out of range.
        TypeError: a field or the length of the wrong type.
    """
    _check_master_secret(master_secret)
    _check_length(length)
    info = _internal_info(label, fields)
    return _hkdf_sha256(
        ikm=master_secret, salt=INTERNAL_SALT.encode("ascii"), info=info, length=length
    )


def secret_fingerprint(master_secret: bytes) -> str:
    """Public fingerprint of a master secret: ``"0x" + hex(keccak256(master_secret))``.

    Used to compare secrets between nodes and against the on-chain ``masterSecretHash`` pin
    without revealing them (the secret is 256 bits of entropy, so the hash does not leak it).

    Args:
        master_secret: the 32-byte cluster master secret.

    Returns:
        Lowercase ``"0x"`` + 64 hex digits.

    Raises:
        ValueError: the secret is not ``MASTER_SECRET_SIZE`` bytes.
    """
    _check_master_secret(master_secret)
    return "0x" + keccak256(bytes(master_secret)).hex()
