"""The named-key operations (PROTOCOL §8 ``keys.*``, ``sign``, ``encrypt``, ``decrypt``).

Keys that never leave the KMS: each op names a key of the caller's app (the app id comes from
authorization, never from the client) and an algorithm; the key itself is derived in the
keyring (:mod:`novakms.crypto.named_keys`) and only public keys, signatures and ciphertexts
are answered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from novakms.crypto.eth import eip191_message_digest, eip712_digest, recover_wallet
from novakms.crypto.named_keys import (
    ENCRYPTION_ALGORITHMS,
    MAX_NAME_BYTES,
    NONCE_SIZE,
    SIGNING_ALGORITHMS,
    NamedKey,
    attestation_text,
    check_name,
    decrypt,
    encrypt,
    parse_ciphertext,
    sign_digest_secp256k1,
    sign_message,
)
from novakms.errors import BadRequest, InternalError, TooLarge
from novakms.server.ops.args import Args
from novakms.server.ops.context import OpContext

__all__ = [
    "MAX_AAD_BYTES",
    "MAX_PLAINTEXT_BYTES",
    "MAX_SIGN_MESSAGE_BYTES",
    "op_decrypt",
    "op_encrypt",
    "op_keys_attest",
    "op_keys_public",
    "op_sign",
]

MAX_SIGN_MESSAGE_BYTES = 65_536
MAX_PLAINTEXT_BYTES = 1_048_576
MAX_AAD_BYTES = 65_536
_MAX_NAME_ARG_BYTES = 1 << 20  # bigger names are too_large; this bounds the UTF-8 encoding
_CIPHERTEXT_OVERHEAD = 4 + MAX_NAME_BYTES + NONCE_SIZE + 16  # the longest header, and the tag
_SECP256K1_PAYLOADS = ("digest", "eip191", "eip712")


def _named(ctx: OpContext, a: Args, algorithms: tuple[str, ...], default: str | None) -> NamedKey:
    name = a.text("name", required=True, max_bytes=_MAX_NAME_ARG_BYTES)
    assert name is not None  # required=True
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:  # the KV key rules: too long is too_large
        raise TooLarge(f"name is longer than {MAX_NAME_BYTES} bytes")
    try:
        check_name(name)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    alg = a.text("alg", required=default is None, max_bytes=32)
    if alg is None:
        alg = default
    if alg not in algorithms:
        raise BadRequest(f"alg must be one of {', '.join(algorithms)}")
    return ctx.keyring.named_key(app_id=ctx.identity.app_id, name=name, alg=alg)


def _described(key: NamedKey) -> dict[str, Any]:
    result: dict[str, Any] = {"app_id": key.app_id, "name": key.name, "alg": key.alg}
    if key.public_key:
        result["public_key"] = key.public_key
    if key.address is not None:
        result["address"] = key.address
    return result


def _bounded(a: Args, name: str, limit: int, *, required: bool = False) -> bytes | None:
    value = a.blob(name, required=required)
    if value is not None and len(value) > limit:
        raise TooLarge(f"{name} is {len(value)} bytes; the limit is {limit}")
    return value


async def op_keys_public(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """The public key of one of the caller's signing keys."""
    a = Args(args, {"name", "alg"})
    return _described(_named(ctx, a, SIGNING_ALGORITHMS, None))


def _secp256k1_digest(args: Mapping[str, Any], a: Args) -> bytes:
    given = [payload for payload in _SECP256K1_PAYLOADS if payload in args]
    if len(given) != 1:
        raise BadRequest("a secp256k1 signature takes exactly one of digest, eip191, eip712")
    if given[0] == "digest":
        digest = a.blob("digest", required=True)
        assert digest is not None
        if len(digest) != 32:
            raise BadRequest("digest must be 32 bytes")
        return digest
    if given[0] == "eip191":
        message = args["eip191"]
        if isinstance(message, str):
            message = message.encode("utf-8")
        if not isinstance(message, bytes):
            raise BadRequest("eip191 must be bytes or text")
        if len(message) > MAX_SIGN_MESSAGE_BYTES:
            raise TooLarge(f"eip191 is {len(message)} bytes; the limit is {MAX_SIGN_MESSAGE_BYTES}")
        return eip191_message_digest(message)
    typed = args["eip712"]
    if not isinstance(typed, dict) or set(typed) != {"domain", "message"}:
        raise BadRequest("eip712 must be a map of domain and message (32-byte hashes)")
    domain, message_hash = typed["domain"], typed["message"]
    if not all(isinstance(part, bytes) and len(part) == 32 for part in (domain, message_hash)):
        raise BadRequest("eip712 domain and message must be 32-byte hashes")
    return eip712_digest(domain, message_hash)


async def op_sign(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """A signature by one of the caller's signing keys."""
    a = Args(args, {"name", "alg", "message", "format", *_SECP256K1_PAYLOADS})
    key = _named(ctx, a, SIGNING_ALGORITHMS, None)
    result = _described(key)
    if key.alg == "secp256k1":
        if "message" in args or "format" in args:
            raise BadRequest("secp256k1 signs a digest, eip191 or eip712: no message or format")
        digest = _secp256k1_digest(args, a)
        result["digest"] = digest
        result["signature"] = sign_digest_secp256k1(key, digest)
        return result
    if any(payload in args for payload in _SECP256K1_PAYLOADS):
        raise BadRequest(f"{key.alg} signs a message: no digest, eip191 or eip712")
    message = _bounded(a, "message", MAX_SIGN_MESSAGE_BYTES, required=True)
    assert message is not None
    form = a.text("format", max_bytes=8) or "raw"
    if form not in ("raw", "der") or (form == "der" and key.alg != "p256"):
        raise BadRequest("format is raw or, for p256, der")
    result["signature"] = sign_message(key, message, der=form == "der")
    return result


async def op_encrypt(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """Seal a plaintext under one of the caller's symmetric keys."""
    a = Args(args, {"name", "alg", "plaintext", "aad"})
    key = _named(ctx, a, ENCRYPTION_ALGORITHMS, "aes-256-gcm")
    plaintext = _bounded(a, "plaintext", MAX_PLAINTEXT_BYTES, required=True)
    aad = _bounded(a, "aad", MAX_AAD_BYTES) or b""
    assert plaintext is not None
    ciphertext = encrypt(key, plaintext, aad=aad, nonce=ctx.random_bytes(NONCE_SIZE))
    return {**_described(key), "ciphertext": ciphertext}


async def op_decrypt(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """Open a ciphertext of :func:`op_encrypt` under the caller's key it names."""
    a = Args(args, {"ciphertext", "aad"})
    blob = _bounded(a, "ciphertext", MAX_PLAINTEXT_BYTES + _CIPHERTEXT_OVERHEAD, required=True)
    aad = _bounded(a, "aad", MAX_AAD_BYTES) or b""
    assert blob is not None
    try:
        parsed = parse_ciphertext(blob)
    except ValueError as exc:
        raise BadRequest(f"not a ciphertext: {exc}", reason="bad_ciphertext") from None
    key = ctx.keyring.named_key(app_id=ctx.identity.app_id, name=parsed.name, alg=parsed.alg)
    plaintext = decrypt(key, parsed, aad=aad)
    if plaintext is None:
        raise BadRequest(
            "the ciphertext does not open: another app's, other aad, or altered",
            reason="decrypt_failed",
        )
    return {**_described(key), "plaintext": plaintext}


async def op_keys_attest(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """A statement signed by this node's wallet that a public key is the caller's app's."""
    a = Args(args, {"name", "alg"})
    key = _named(ctx, a, SIGNING_ALGORITHMS, None)
    if ctx.signer is None:
        raise InternalError("this node has no signer")
    issued_at = int(ctx.now)
    statement = attestation_text(key=key, node_wallet=ctx.wallet, issued_at=issued_at)
    signature = await ctx.signer.sign_text(statement)
    if recover_wallet(text=statement, signature=signature) != ctx.wallet:
        raise InternalError("the node's signer signed with another wallet")
    return {
        **_described(key),
        "statement": statement,
        "signature": signature,
        "signer": ctx.wallet,
        "issued_at": issued_at,
    }
