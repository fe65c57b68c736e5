"""Ethereum primitives: Keccak-256, wallets, EIP-191 ``personal_sign`` (PROTOCOL §4.5).

Signing and recovery use coincurve (libsecp256k1) directly: deterministic RFC 6979 signatures,
and recovery in tens of microseconds. Verification failures of any kind surface as
:class:`novakms.errors.InvalidSignature` and nothing else.

This module is pure: no I/O, no clocks; randomness is injected. Private keys never appear in
exception messages, reprs or logs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeGuard

from coincurve import PrivateKey, PublicKey
from Crypto.Hash import keccak as _keccak

from novakms.errors import InvalidSignature

__all__ = [
    "SECP256K1_N",
    "eip191_digest",
    "eip191_message_digest",
    "eip712_digest",
    "format_private_key",
    "generate_private_key",
    "is_canonical_wallet",
    "keccak256",
    "normalize_wallet",
    "parse_private_key",
    "recover_wallet",
    "sign_digest",
    "sign_text",
    "wallet_from_private_key",
    "wallet_from_public_key",
    "wallet_to_bytes",
]

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
"""Order of the secp256k1 group; scalars (private keys, r, s) live in ``1 .. N-1``."""

_WALLET_RE = re.compile(r"0[xX][0-9a-fA-F]{40}")
_CANONICAL_WALLET_RE = re.compile(r"0x[0-9a-f]{40}")
_PRIVATE_KEY_RE = re.compile(r"0[xX][0-9a-fA-F]{64}")
_EIP191_PREFIX = b"\x19Ethereum Signed Message:\n"
_SIGNATURE_SIZE = 65
_PRIVATE_KEY_SIZE = 32
_GENERATE_MAX_ATTEMPTS = 64


def _keccak256_hash_object(data: bytes) -> bytes:
    return _keccak.new(digest_bits=256, data=data).digest()


def _direct_keccak256() -> Callable[[bytes], bytes] | None:
    """Keccak-256 straight from pycryptodome's C library, without its hash object.

    A node hashes three times per handshake (two EIP-191 digests and a wallet) and the hash
    object's Python layers cost more than the hash. This calls the same C functions the
    object calls, through pycryptodome's own cffi declarations; it is used only when they
    exist and give the object's digests (checked here once), else None (the object is used).
    """
    try:
        from Crypto.Util import _raw_api

        lib = vars(_keccak)["_raw_keccak_lib"]
    except (ImportError, KeyError):  # pragma: no cover - another pycryptodome layout
        return None
    if getattr(_raw_api, "backend", None) != "cffi":  # pragma: no cover - the ctypes backend
        return None
    new, buffer = _raw_api.ffi.new, _raw_api.ffi.buffer

    def keccak(data: bytes) -> bytes:
        state_ref = new("void *[1]")
        # capacity 64 bytes (2 x the digest), 24 rounds; padding 0x01 is Keccak's (SHA3: 0x06)
        if lib.keccak_init(state_ref, 64, 24):
            raise ValueError("keccak_init failed")
        state = state_ref[0]
        try:
            digest = new("uint8_t[32]")
            if lib.keccak_absorb(state, data, len(data)) or lib.keccak_digest(state, digest, 32, 1):
                raise ValueError("keccak failed")
            return bytes(buffer(digest))
        finally:
            lib.keccak_destroy(state)

    samples = [b"", b"abc", bytes(range(256)) * 3]  # also more than one 136-byte block
    try:
        same = all(keccak(sample) == _keccak256_hash_object(sample) for sample in samples)
    except Exception:  # pragma: no cover - declarations of another version: not used
        return None
    return keccak if same else None


_keccak256 = _direct_keccak256() or _keccak256_hash_object


def keccak256(data: bytes) -> bytes:
    """Keccak-256 (the original Keccak padding used by Ethereum, not SHA3-256).

    Args:
        data: bytes to hash.

    Returns:
        The 32-byte digest.
    """
    return _keccak256(bytes(data))


def normalize_wallet(text: str) -> str:
    """Validate a wallet address and return it in canonical form.

    Accepts ``0x`` or ``0X`` followed by exactly 40 hex digits of any case (the EIP-55
    checksum is not enforced). Surrounding whitespace is not accepted.

    Args:
        text: the address text.

    Returns:
        Lowercase ``"0x"`` + 40 hex digits.

    Raises:
        ValueError: the text is not an address.
    """
    if not isinstance(text, str) or _WALLET_RE.fullmatch(text) is None:
        raise ValueError("wallet must be '0x' followed by 40 hex digits")
    return "0x" + text[2:].lower()


def is_canonical_wallet(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a wallet already in canonical form (what :func:`normalize_wallet`
    returns): lowercase ``"0x"`` + 40 hex digits.

    For values that must arrive canonical (from a peer, in a share, in a guardian set), where
    normalizing would hide a sender that does not follow the format.

    Args:
        value: anything.

    Returns:
        True for a canonical wallet string.
    """
    return isinstance(value, str) and _CANONICAL_WALLET_RE.fullmatch(value) is not None


def wallet_to_bytes(wallet: str) -> bytes:
    """Decode a wallet address to its 20 bytes.

    Args:
        wallet: address text (any accepted by :func:`normalize_wallet`).

    Returns:
        The 20-byte address.

    Raises:
        ValueError: the text is not an address.
    """
    return bytes.fromhex(normalize_wallet(wallet)[2:])


def wallet_from_public_key(uncompressed64: bytes) -> str:
    """The wallet of a public key: last 20 bytes of Keccak-256 of the 64-byte ``X || Y``.

    Args:
        uncompressed64: the uncompressed public key without the ``0x04`` prefix.

    Returns:
        Lowercase ``"0x"`` + 40 hex digits.

    Raises:
        ValueError: the key is not 64 bytes.
    """
    if not isinstance(uncompressed64, bytes | bytearray) or len(uncompressed64) != 64:
        raise ValueError("public key must be the 64-byte uncompressed X || Y")
    return "0x" + keccak256(bytes(uncompressed64))[12:].hex()


def _public_key_wallet(public_key: PublicKey) -> str:
    """The wallet of a coincurve public key.

    Args:
        public_key: the key.

    Returns:
        Lowercase ``"0x"`` + 40 hex digits.
    """
    return wallet_from_public_key(public_key.format(compressed=False)[1:])


def _check_private_key(private_key: bytes) -> None:
    """Reject anything that is not a valid secp256k1 private key (message never shows it).

    Args:
        private_key: candidate key.

    Raises:
        ValueError: not 32 bytes, or not in ``1 .. N-1``.
    """
    if not isinstance(private_key, bytes | bytearray) or len(private_key) != _PRIVATE_KEY_SIZE:
        raise ValueError("private key must be 32 bytes")
    if not 1 <= int.from_bytes(private_key, "big") < SECP256K1_N:
        raise ValueError("private key is not a valid secp256k1 scalar (must be in 1..n-1)")


def _private_key(private_key: bytes) -> PrivateKey:
    """Build a coincurve private key after validating it.

    Args:
        private_key: 32-byte secp256k1 scalar.

    Returns:
        The coincurve key object.

    Raises:
        ValueError: the key is invalid.
    """
    _check_private_key(private_key)
    return PrivateKey(bytes(private_key))


def wallet_from_private_key(private_key: bytes) -> str:
    """The wallet controlled by a private key.

    Args:
        private_key: 32-byte secp256k1 scalar in ``1 .. N-1``.

    Returns:
        Lowercase ``"0x"`` + 40 hex digits.

    Raises:
        ValueError: the key is invalid (the message does not contain it).
    """
    return _public_key_wallet(_private_key(private_key).public_key)


def eip191_digest(text: str) -> bytes:
    """The EIP-191 ``personal_sign`` digest of a text (PROTOCOL §4.5).

    ``keccak256("\\x19Ethereum Signed Message:\\n" || decimal(len(utf8(text))) || utf8(text))``

    Args:
        text: the message.

    Returns:
        The 32-byte digest.

    Raises:
        UnicodeEncodeError: the text holds lone surrogates (not encodable as UTF-8).
    """
    return eip191_message_digest(text.encode("utf-8"))


def eip191_message_digest(message: bytes) -> bytes:
    """The EIP-191 ``personal_sign`` digest of a message of any bytes.

    ``keccak256("\x19Ethereum Signed Message:\n" || decimal(len(message)) || message)``
    """
    return keccak256(_EIP191_PREFIX + str(len(message)).encode("ascii") + message)


def eip712_digest(domain_separator: bytes, struct_hash: bytes) -> bytes:
    """The EIP-712 digest ``keccak256(0x19 0x01 || domainSeparator || hashStruct(message))``.

    Raises:
        ValueError: either part is not 32 bytes.
    """
    if len(domain_separator) != 32 or len(struct_hash) != 32:
        raise ValueError("EIP-712 domain separator and struct hash are 32 bytes each")
    return keccak256(b"\x19\x01" + domain_separator + struct_hash)


def sign_digest(*, private_key: bytes | PrivateKey, digest: bytes) -> bytes:
    """Sign a 32-byte digest: ``r || s || v`` with ``v`` in {27, 28}, RFC 6979, low-s.

    Args:
        private_key: a 32-byte scalar in ``1 .. N-1``, or a coincurve key already built
            (which saves building it: most of a signature's cost).
        digest: the 32 bytes to sign.

    Raises:
        ValueError: the key is invalid, or the digest is not 32 bytes.
    """
    if len(digest) != 32:
        raise ValueError("a digest is 32 bytes")
    key = private_key if isinstance(private_key, PrivateKey) else _private_key(private_key)
    return _sign_digest(key, digest)


def _sign_digest(key: PrivateKey, digest: bytes) -> bytes:
    """Sign a 32-byte digest; return ``r || s || v`` with ``v`` in {27, 28}.

    Args:
        key: the coincurve private key.
        digest: the 32-byte message digest.

    Returns:
        The 65-byte signature (low-s, RFC 6979 deterministic).
    """
    raw = key.sign_recoverable(digest, hasher=None)
    return raw[:64] + bytes((raw[64] + 27,))


def sign_text(*, private_key: bytes, text: str) -> bytes:
    """EIP-191 ``personal_sign`` a text.

    Args:
        private_key: 32-byte secp256k1 scalar in ``1 .. N-1``.
        text: the message.

    Returns:
        65 bytes ``r || s || v`` with ``v`` in {27, 28}; deterministic (RFC 6979), low-s.

    Raises:
        ValueError: the key is invalid (the message does not contain it).
        UnicodeEncodeError: the text is not encodable as UTF-8.
    """
    key = _private_key(private_key)
    return _sign_digest(key, eip191_digest(text))


def recover_wallet(*, text: str, signature: bytes) -> str:
    """Recover the wallet that EIP-191-signed ``text``.

    Accepts ``v`` in {27, 28} and {0, 1}. Rejects a signature that is not 65 bytes, has ``r``
    or ``s`` outside ``1 .. N-1``, another ``v``, or that does not recover to a point. High-s
    signatures are accepted (``personal_sign`` does not require low-s).

    Args:
        text: the message that was signed.
        signature: 65 bytes ``r || s || v``.

    Returns:
        Lowercase ``"0x"`` + 40 hex digits. The caller compares it with the expected wallet.

    Raises:
        InvalidSignature: for every kind of failure (and no other exception type).
    """
    if not isinstance(signature, bytes | bytearray | memoryview):
        raise InvalidSignature("signature must be bytes")
    sig = bytes(signature)
    if len(sig) != _SIGNATURE_SIZE:
        raise InvalidSignature(f"signature must be {_SIGNATURE_SIZE} bytes")
    v = sig[64]
    if v in (27, 28):
        recovery_id = v - 27
    elif v in (0, 1):
        recovery_id = v
    else:
        raise InvalidSignature("signature v must be 27, 28, 0 or 1")
    r = int.from_bytes(sig[0:32], "big")
    s = int.from_bytes(sig[32:64], "big")
    if not (1 <= r < SECP256K1_N and 1 <= s < SECP256K1_N):
        raise InvalidSignature("signature r or s out of range")
    try:
        digest = eip191_digest(text)
    except (UnicodeEncodeError, AttributeError):
        raise InvalidSignature("signed text is not valid UTF-8 text") from None
    try:
        public_key = PublicKey.from_signature_and_message(
            sig[:64] + bytes((recovery_id,)), digest, hasher=None
        )
    except Exception:
        raise InvalidSignature("signature does not recover to a public key") from None
    return _public_key_wallet(public_key)


def parse_private_key(text: str) -> bytes:
    """Parse the content of a private key file.

    The content is ``0x`` + 64 hex digits (``0X`` is accepted), optionally surrounded by
    whitespace, and must be a valid secp256k1 scalar.

    Args:
        text: the file content.

    Returns:
        The 32-byte private key.

    Raises:
        ValueError: malformed or out of range; the message never contains the input.
        TypeError: ``text`` is not a str.
    """
    if not isinstance(text, str):
        raise TypeError("private key text must be a str")
    stripped = text.strip()
    if _PRIVATE_KEY_RE.fullmatch(stripped) is None:
        raise ValueError("private key must be '0x' followed by 64 hex digits")
    key = bytes.fromhex(stripped[2:])
    _check_private_key(key)
    return key


def generate_private_key(random_bytes: Callable[[int], bytes]) -> bytes:
    """Generate a private key from an injected random source (e.g. ``secrets.token_bytes``).

    Draws 32 bytes and retries (rejection sampling) while the value is not in ``1 .. N-1``.

    Args:
        random_bytes: returns ``n`` uniformly random bytes when called with ``n``.

    Returns:
        A 32-byte secp256k1 private key.

    Raises:
        ValueError: the source returned the wrong number of bytes.
        RuntimeError: the source kept returning invalid scalars (a broken RNG).
    """
    for _ in range(_GENERATE_MAX_ATTEMPTS):
        candidate = random_bytes(_PRIVATE_KEY_SIZE)
        if not isinstance(candidate, bytes | bytearray) or len(candidate) != _PRIVATE_KEY_SIZE:
            raise ValueError("random source must return exactly the requested number of bytes")
        if 1 <= int.from_bytes(candidate, "big") < SECP256K1_N:
            return bytes(candidate)
    raise RuntimeError("random source keeps returning invalid secp256k1 scalars")


def format_private_key(key: bytes) -> str:
    """Render a private key as key file content (``"0x"`` + 64 lowercase hex digits).

    Args:
        key: 32-byte secp256k1 private key.

    Returns:
        The text to write to a key file (no trailing newline).

    Raises:
        ValueError: the key is invalid.
    """
    _check_private_key(key)
    return "0x" + bytes(key).hex()
