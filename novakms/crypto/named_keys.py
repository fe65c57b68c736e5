"""Named app keys: per-app private keys that never leave the KMS (PROTOCOL §8 ``keys.*``, §9.4).

An app names a key and an algorithm; the key is derived from the master secret in the internal
key space (§9.2), so every node holding the secret has the same key without replication, and
``derive`` (the app key space, §9.1) can never produce it:

* ``secp256k1`` and ``p256``: ``okm = internal key (label "app-key/<alg>", fields app id and
  name, 48 bytes)``, scalar ``int(okm) mod (n - 1) + 1`` (the bias is below 2**-128);
* ``ed25519``: the 32-byte seed is the internal key (label ``app-key/ed25519``);
* ``aes-256-gcm``: the 32-byte key is the internal key (label ``app-key/aes-256-gcm``).

Also here: signing (secp256k1 over a 32-byte digest, recoverable and low-s; ed25519 over a
message; P-256 ECDSA with SHA-256, deterministic, raw ``r || s`` or DER), the self-describing
ciphertext of ``encrypt``, and the text of a key attestation.

Pure: no I/O, no clock; nonces are passed in. A :class:`NamedKey` never shows its private part
in a repr, and no function puts key material in an exception message.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any, Final

from coincurve import PrivateKey as Secp256k1PrivateKey
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from novakms.crypto.eth import SECP256K1_N, sign_digest, wallet_from_public_key
from novakms.crypto.kdf import derive_internal_key

__all__ = [
    "ALGORITHMS",
    "CIPHERTEXT_VERSION",
    "ENCRYPTION_ALGORITHMS",
    "MAX_NAME_BYTES",
    "NONCE_SIZE",
    "SIGNING_ALGORITHMS",
    "Ciphertext",
    "NamedKey",
    "attestation_text",
    "check_name",
    "decrypt",
    "derive_named_key",
    "encrypt",
    "parse_ciphertext",
    "sign_digest_secp256k1",
    "sign_message",
]

SIGNING_ALGORITHMS: Final = ("secp256k1", "ed25519", "p256")
ENCRYPTION_ALGORITHMS: Final = ("aes-256-gcm",)
ALGORITHMS: Final = SIGNING_ALGORITHMS + ENCRYPTION_ALGORITHMS

CIPHERTEXT_VERSION: Final = 1
NONCE_SIZE: Final = 12
_TAG_SIZE = 16
_ALG_IDS: Final = {"aes-256-gcm": 1}
_ALG_NAMES: Final = {v: k for k, v in _ALG_IDS.items()}
_AAD_LABEL = b"novakms/1 encrypt"
MAX_NAME_BYTES: Final = 512  # the KV key rule (PROTOCOL §8 kv.*)
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_SCALAR_OKM = 48  # 384 bits reduced mod a 256-bit order


def check_name(name: str) -> str:
    """A key name: text of 1..512 bytes of UTF-8 without NUL (the KV key rule).

    Raises:
        ValueError: anything else.
    """
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: not text any peer could read
        size = 0
    if not 1 <= size <= MAX_NAME_BYTES or "\x00" in name:
        raise ValueError("name must be 1..512 bytes of UTF-8 without NUL")
    return name


@dataclass(frozen=True, slots=True, kw_only=True)
class NamedKey:
    """One app's named key, ready to use.

    ``public_key``: SEC1 uncompressed (65 bytes) for secp256k1 and P-256, raw 32 bytes for
    ed25519, empty for a symmetric key; ``address``: the Ethereum address of a secp256k1 key.
    """

    app_id: int
    name: str
    alg: str
    public_key: bytes
    address: str | None
    _private: Any = field(repr=False, compare=False)

    def __repr__(self) -> str:  # never the private part
        return f"NamedKey(app_id={self.app_id}, name={self.name!r}, alg={self.alg!r})"


def _scalar(okm: bytes, order: int) -> int:
    return int.from_bytes(okm, "big") % (order - 1) + 1


def derive_named_key(*, master_secret: bytes, app_id: int, name: str, alg: str) -> NamedKey:
    """The key ``(app_id, name, alg)`` of a master secret (module docstring).

    Raises:
        ValueError: an unknown algorithm, a bad name, app id or master secret.
    """
    check_name(name)
    if alg not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {alg!r}")
    length = _SCALAR_OKM if alg in ("secp256k1", "p256") else 32
    okm = derive_internal_key(
        master_secret=master_secret, label=f"app-key/{alg}", fields=[app_id, name], length=length
    )
    if alg == "secp256k1":
        k1 = Secp256k1PrivateKey.from_int(_scalar(okm, SECP256K1_N))
        public = k1.public_key.format(compressed=False)
        return NamedKey(
            app_id=app_id,
            name=name,
            alg=alg,
            public_key=public,
            address=wallet_from_public_key(public[1:]),
            _private=k1,
        )
    if alg == "p256":
        p256 = ec.derive_private_key(_scalar(okm, _P256_ORDER), ec.SECP256R1())
        point = p256.public_key().public_numbers()  # serialization would load random (ssh)
        public = b"\x04" + point.x.to_bytes(32, "big") + point.y.to_bytes(32, "big")
        return NamedKey(
            app_id=app_id, name=name, alg=alg, public_key=public, address=None, _private=p256
        )
    if alg == "ed25519":
        ed = Ed25519PrivateKey.from_private_bytes(okm)
        public = ed.public_key().public_bytes_raw()
        return NamedKey(
            app_id=app_id, name=name, alg=alg, public_key=public, address=None, _private=ed
        )
    return NamedKey(
        app_id=app_id, name=name, alg=alg, public_key=b"", address=None, _private=AESGCM(okm)
    )


def sign_digest_secp256k1(key: NamedKey, digest: bytes) -> bytes:
    """A secp256k1 key's signature of a 32-byte digest: ``r || s || v``, ``v`` in {27, 28}.

    Deterministic (RFC 6979) and low-s, as Ethereum requires.

    Raises:
        ValueError: not a secp256k1 key, or the digest is not 32 bytes.
    """
    if key.alg != "secp256k1":
        raise ValueError("digest signatures are for secp256k1 keys")
    return sign_digest(private_key=key._private, digest=digest)


def sign_message(key: NamedKey, message: bytes, *, der: bool = False) -> bytes:
    """An ed25519 signature (64 bytes) or a P-256 ECDSA-SHA-256 signature of ``message``.

    P-256 signatures are deterministic (RFC 6979), raw ``r || s`` (64 bytes) or, with ``der``,
    DER. ``der`` is refused for ed25519.

    Raises:
        ValueError: not an ed25519 or P-256 key, or ``der`` for ed25519.
    """
    if key.alg == "ed25519":
        if der:
            raise ValueError("ed25519 signatures have one format")
        signature: bytes = key._private.sign(message)
        return signature
    if key.alg != "p256":
        raise ValueError("message signatures are for ed25519 and p256 keys")
    encoded: bytes = key._private.sign(
        message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
    )
    if der:
        return encoded
    r, s = decode_dss_signature(encoded)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


# --- the ciphertext of encrypt ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ciphertext:
    """A parsed ciphertext: ``header`` is every byte before the sealed part."""

    version: int
    alg: str
    name: str
    nonce: bytes
    sealed: bytes
    header: bytes


def _header(alg: str, name: str, nonce: bytes) -> bytes:
    encoded = name.encode("utf-8")
    return struct.pack(">BBH", CIPHERTEXT_VERSION, _ALG_IDS[alg], len(encoded)) + encoded + nonce


def _aad(app_id: int, header: bytes, aad: bytes) -> bytes:
    parts = (_AAD_LABEL, str(app_id).encode("ascii"), header, aad)
    return b"".join(struct.pack(">I", len(part)) + part for part in parts)


def encrypt(key: NamedKey, plaintext: bytes, *, aad: bytes, nonce: bytes) -> bytes:
    """Seal ``plaintext`` under a symmetric named key (PROTOCOL §9.4).

    ``u8 version (1) || u8 algorithm (1: AES-256-GCM) || u16be len(name) || name || nonce (12)
    || AES-256-GCM(plaintext) || tag (16)``, the associated data binding the app id, that
    header and the caller's ``aad``.

    Raises:
        ValueError: not a symmetric key, or the nonce is not 12 bytes.
    """
    if key.alg not in ENCRYPTION_ALGORITHMS:
        raise ValueError("encryption is for aes-256-gcm keys")
    if len(nonce) != NONCE_SIZE:
        raise ValueError("the nonce is 12 bytes")
    header = _header(key.alg, key.name, nonce)
    sealed: bytes = key._private.encrypt(nonce, plaintext, _aad(key.app_id, header, aad))
    return header + sealed


def parse_ciphertext(blob: bytes) -> Ciphertext:
    """Read the header of a ciphertext (nothing is decrypted).

    Raises:
        ValueError: not a ciphertext of a version and algorithm this code knows.
    """
    if len(blob) < 4:
        raise ValueError("ciphertext too short")
    version, alg_id, name_size = struct.unpack_from(">BBH", blob)
    if version != CIPHERTEXT_VERSION:
        raise ValueError(f"unknown ciphertext version {version}")
    alg = _ALG_NAMES.get(alg_id)
    if alg is None:
        raise ValueError(f"unknown ciphertext algorithm {alg_id}")
    end = 4 + name_size + NONCE_SIZE
    if len(blob) < end + _TAG_SIZE:
        raise ValueError("ciphertext too short")
    try:
        name = check_name(blob[4 : 4 + name_size].decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("ciphertext key name is not UTF-8") from None
    return Ciphertext(
        version=version,
        alg=alg,
        name=name,
        nonce=blob[end - NONCE_SIZE : end],
        sealed=blob[end:],
        header=blob[:end],
    )


def decrypt(key: NamedKey, ciphertext: Ciphertext, *, aad: bytes) -> bytes | None:
    """Open a parsed ciphertext with the key it names; None if it does not open (a wrong key,
    app or ``aad``, or altered bytes)."""
    if key.alg != ciphertext.alg or key.name != ciphertext.name:
        raise ValueError("the ciphertext names another key")
    try:
        plaintext: bytes = key._private.decrypt(
            ciphertext.nonce, ciphertext.sealed, _aad(key.app_id, ciphertext.header, aad)
        )
    except InvalidTag:
        return None
    return plaintext


# --- attestation --------------------------------------------------------------------------------


def attestation_text(*, key: NamedKey, node_wallet: str, issued_at: int) -> str:
    """The statement a KMS node signs (EIP-191) to vouch that a public key is an app's.

    One field per line; the name is a JSON string (escapes make it one line)::

        novakms key attestation v1
        app_id: 7
        name: "main"
        alg: secp256k1
        public_key: 0x04…
        address: 0x…            (secp256k1 only)
        node: 0x…               (the signing node's wallet)
        issued_at: 1767225600   (unix seconds)

    Raises:
        ValueError: a symmetric key (it has no public part).
    """
    if key.alg not in SIGNING_ALGORITHMS:
        raise ValueError("only signing keys have a public key to attest")
    name = _json_string(key.name)
    lines = [
        "novakms key attestation v1",
        f"app_id: {key.app_id}",
        f"name: {name}",
        f"alg: {key.alg}",
        f"public_key: 0x{key.public_key.hex()}",
    ]
    if key.address is not None:
        lines.append(f"address: {key.address}")
    lines += [f"node: {node_wallet}", f"issued_at: {issued_at}"]
    return "\n".join(lines)


def _json_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)
