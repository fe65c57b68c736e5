#!/usr/bin/env python3
"""Generate the novakms wire-protocol test vectors (PROTOCOL.md §11).

This is an implementation of the derived values of PROTOCOL.md that is independent of the
`novakms` package: it must never import it. It uses only the standard library (HKDF is written
out with `hmac`, RFC 5869), `cryptography` (X25519, ChaCha20-Poly1305, Ed25519, P-256 ECDSA,
AES-GCM), `coincurve` (secp256k1 recoverable signatures with RFC 6979 nonces), pycryptodome's
Keccak-256 and `cbor2` (for *encoding* only; the small strict decoder below exists only to check
the framing vectors).
The guardian vectors' GF(2^8) Shamir arithmetic and HPKE (RFC 9180) key schedule are written
out here too (novakms uses tables and pyhpke); the HPKE code checks itself against RFC 9180
A.2.1 before it is used.

Every key, nonce and secret is a fixed constant, so the output is byte-stable:

    python protocol/vectors/generate.py            # (re)write the JSON files next to this file
    python protocol/vectors/generate.py --check    # exit 1 if the files on disk differ
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import coincurve
from Crypto.Hash import keccak
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

HERE = Path(__file__).resolve().parent

DEFAULT_MAX_FRAME = 2_097_152
MAX_DEPTH = 16
TS = 1_767_225_600  # 2026-01-01T00:00:00Z


# --------------------------------------------------------------------------------------------
# primitives


def const(name: str) -> bytes:
    """A visibly arbitrary fixed 32-byte constant."""
    return hashlib.sha256(b"novakms vector: " + name.encode()).digest()


def u32be(n: int) -> bytes:
    return struct.pack(">I", n)


def u16be(n: int) -> bytes:
    return n.to_bytes(2, "big")


def u64be(n: int) -> bytes:
    return struct.pack(">Q", n)


def keccak256(data: bytes) -> bytes:
    h = keccak.new(digest_bits=256)
    h.update(data)
    return h.digest()


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF with SHA-256 (extract then expand)."""
    if not 1 <= length <= 255 * 32:
        raise ValueError("bad HKDF length")
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm = b""
    block = b""
    counter = 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def cbor(item: Any) -> bytes:
    return bytes(cbor2.dumps(item, canonical=True))


def frame(body: bytes) -> bytes:
    return u32be(len(body)) + body


# --------------------------------------------------------------------------------------------
# wallets and EIP-191 signatures (§4.5)


def wallet_bytes(private_key: bytes) -> bytes:
    public = coincurve.PrivateKey(private_key).public_key.format(compressed=False)
    return keccak256(public[1:])[-20:]


def wallet_of(private_key: bytes) -> str:
    return "0x" + wallet_bytes(private_key).hex()


def eip191_digest(text: str) -> bytes:
    m = text.encode()
    return keccak256(b"\x19Ethereum Signed Message:\n" + str(len(m)).encode() + m)


def eip191_sign(private_key: bytes, text: str) -> bytes:
    sig = coincurve.PrivateKey(private_key).sign_recoverable(eip191_digest(text), hasher=None)
    return bytes(sig[:64]) + bytes([sig[64] + 27])


def eip191_recover(sig: bytes, text: str) -> str:
    recid = sig[64] - 27 if sig[64] >= 27 else sig[64]
    public = coincurve.PublicKey.from_signature_and_message(
        sig[:64] + bytes([recid]), eip191_digest(text), hasher=None
    )
    return "0x" + keccak256(public.format(compressed=False)[1:])[-20:].hex()


# --------------------------------------------------------------------------------------------
# X25519 and the sealed channel (§4.3, §5)


def x25519_public(private_key: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes_raw()


def x25519_shared(private_key: bytes, public_key: bytes) -> bytes:
    priv = X25519PrivateKey.from_private_bytes(private_key)
    return priv.exchange(X25519PublicKey.from_public_bytes(public_key))


def seal_nonce(counter: int) -> bytes:
    return u32be(0) + u64be(counter)


def seal(key: bytes, counter: int, plaintext: bytes) -> bytes:
    """The whole sealed frame: u32be(len(body)) || body, body = CBOR bstr(ct || tag)."""
    ciphertext = ChaCha20Poly1305(key).encrypt(seal_nonce(counter), plaintext, b"")
    return frame(cbor(ciphertext))


def transcript_hash(hello_body: bytes, server_eph: bytes, nonce: bytes, wallet: str) -> bytes:
    return hashlib.sha256(
        b"novakms/1 transcript"
        + u32be(len(hello_body))
        + hello_body
        + server_eph
        + nonce
        + bytes.fromhex(wallet.removeprefix("0x"))
    ).digest()


def session_keys(shared: bytes, th: bytes) -> tuple[bytes, bytes]:
    k_c2s = hkdf_sha256(shared, th, b"novakms/1 key c2s", 32)
    k_s2c = hkdf_sha256(shared, th, b"novakms/1 key s2c", 32)
    return k_c2s, k_s2c


# --------------------------------------------------------------------------------------------
# key derivation (§9)


def derive_app(master: bytes, app_id: int, path: str, context: str | None, length: int) -> bytes:
    info = path if not context else path + ":" + context
    return hkdf_sha256(master, f"nova-kms:app:{app_id}".encode(), info.encode(), length)


def derive_internal(master: bytes, label: str, fields: list[str | int], length: int) -> bytes:
    info = b""
    for part in [label, *fields]:
        data = str(part).encode()
        info += u32be(len(data)) + data
    return hkdf_sha256(master, b"nova-kms:internal:v1", info, length)


# --------------------------------------------------------------------------------------------
# a strict decoder of the §3 subset, used only to check the framing vectors


class Rejected(Exception):
    def __init__(self, error: str, why: str) -> None:
        super().__init__(f"{error}: {why}")
        self.error = error


def _item(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if pos >= len(buf):
        raise Rejected("bad_request", "truncated item")
    major, ai = buf[pos] >> 5, buf[pos] & 0x1F
    pos += 1
    if major == 7:
        simple: dict[int, Any] = {20: False, 21: True, 22: None}
        if ai not in simple:
            raise Rejected("bad_request", "simple value or float outside the subset")
        return simple[ai], pos
    if ai < 24:
        arg = ai
    elif ai <= 27:
        size = 1 << (ai - 24)
        if pos + size > len(buf):
            raise Rejected("bad_request", "truncated argument")
        arg = int.from_bytes(buf[pos : pos + size], "big")
        pos += size
    else:
        raise Rejected("bad_request", "reserved or indefinite additional information")
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major in (2, 3):
        if pos + arg > len(buf):
            raise Rejected("bad_request", "string longer than the body")
        raw = buf[pos : pos + arg]
        if major == 2:
            return raw, pos + arg
        try:
            return raw.decode("utf-8"), pos + arg
        except UnicodeDecodeError:
            raise Rejected("bad_request", "invalid UTF-8") from None
    if major == 6:
        raise Rejected("bad_request", "tag")
    if depth > MAX_DEPTH:
        raise Rejected("bad_request", "nesting too deep")
    if major == 4:
        items = []
        for _ in range(arg):
            value, pos = _item(buf, pos, depth + 1)
            items.append(value)
        return items, pos
    result: dict[str, Any] = {}
    for _ in range(arg):
        key, pos = _item(buf, pos, depth + 1)
        if not isinstance(key, str):
            raise Rejected("bad_request", "map key is not a text string")
        if key in result:
            raise Rejected("bad_request", "duplicate map key")
        result[key], pos = _item(buf, pos, depth + 1)
    return result, pos


def read_frame(data: bytes, max_frame: int) -> Any:
    if len(data) < 4:
        raise Rejected("bad_request", "end of stream inside the length")
    (length,) = struct.unpack(">I", data[:4])
    if length == 0:
        raise Rejected("bad_request", "zero length")
    if length > max_frame:
        raise Rejected("too_large", "length above max_frame")
    body = data[4:]
    if len(body) < length:
        raise Rejected("bad_request", "end of stream inside the body")
    if len(body) > length:
        raise ValueError("vector holds more than one frame")
    item, end = _item(body, 0, 1)
    if end != len(body):
        raise Rejected("bad_request", "bytes after the item")
    return item


def render(item: Any) -> Any:
    """The JSON rendering of a decoded item (byte strings as {"$bytes": hex})."""
    if isinstance(item, bytes):
        return {"$bytes": item.hex()}
    if isinstance(item, list):
        return [render(x) for x in item]
    if isinstance(item, dict):
        return {k: render(v) for k, v in item.items()}
    return item


# --------------------------------------------------------------------------------------------
# framing.json


def _nested_arrays(depth: int) -> bytes:
    return bytes([0x81]) * (depth - 1) + bytes([0x80])


def _mixed_nesting(depth: int) -> tuple[bytes, Any]:
    """Maps and arrays alternating, `depth` containers deep, innermost an empty map."""
    item: Any = {}
    for level in range(depth - 1):
        item = [item] if level % 2 == 0 else {"k": item}
    return cbor(item), item


def framing() -> dict[str, Any]:
    nested: Any = {"a": [1, -1, {"b": [True, False, None]}], "c": {"d": b"\x01\x02"}}
    integers = [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, -1, -24, -25, -256, -257]
    text = "é€😀 ключ"
    mixed_body, mixed_item = _mixed_nesting(MAX_DEPTH)
    deep: Any = []
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    valid: list[tuple[str, int, bytes, Any]] = [
        ("uint_zero_smallest_frame", DEFAULT_MAX_FRAME, b"\x00", 0),
        (
            "request_map",
            DEFAULT_MAX_FRAME,
            cbor({"id": 1, "op": "health", "args": {}}),
            {"id": 1, "op": "health", "args": {}},
        ),
        ("nested_maps_and_arrays", DEFAULT_MAX_FRAME, cbor(nested), nested),
        ("integer_boundaries", DEFAULT_MAX_FRAME, cbor(integers), integers),
        ("empty_bstr", DEFAULT_MAX_FRAME, b"\x40", b""),
        ("empty_tstr", DEFAULT_MAX_FRAME, b"\x60", ""),
        ("empty_array", DEFAULT_MAX_FRAME, b"\x80", []),
        ("empty_map", DEFAULT_MAX_FRAME, b"\xa0", {}),
        ("max_uint64", DEFAULT_MAX_FRAME, b"\x1b" + b"\xff" * 8, 2**64 - 1),
        ("min_negint", DEFAULT_MAX_FRAME, b"\x3b" + b"\xff" * 8, -(2**64)),
        ("non_minimal_uint_accepted", DEFAULT_MAX_FRAME, b"\x1b" + u64be(1), 1),
        ("non_minimal_negint_accepted", DEFAULT_MAX_FRAME, b"\x38\x00", -1),
        ("non_minimal_text_length_accepted", DEFAULT_MAX_FRAME, b"\x7a" + u32be(1) + b"a", "a"),
        ("utf8_multibyte_text", DEFAULT_MAX_FRAME, cbor(text), text),
        ("depth_16_arrays", DEFAULT_MAX_FRAME, _nested_arrays(MAX_DEPTH), deep),
        ("depth_16_maps_and_arrays", DEFAULT_MAX_FRAME, mixed_body, mixed_item),
        ("body_exactly_max_frame", 64, b"\x58\x3e" + bytes(range(62)), bytes(range(62))),
    ]
    invalid: list[tuple[str, int, bytes, str, str]] = [
        ("length_zero", DEFAULT_MAX_FRAME, u32be(0), "bad_request", "L = 0"),
        (
            "length_above_max_frame_header_only",
            64,
            u32be(65),
            "too_large",
            "header declares max_frame + 1 and no body follows: reject on the header alone",
        ),
        (
            "length_above_default_max_frame_header_only",
            DEFAULT_MAX_FRAME,
            u32be(DEFAULT_MAX_FRAME + 1),
            "too_large",
            "header declares 2 MiB + 1 and no body follows: reject on the header alone",
        ),
        (
            "length_above_max_frame_with_body",
            63,
            frame(b"\x58\x3e" + bytes(range(62))),
            "too_large",
            "a well-formed 64-byte body, but max_frame is 63",
        ),
        (
            "truncated_header_3_bytes",
            DEFAULT_MAX_FRAME,
            b"\x00\x00\x00",
            "bad_request",
            "end of stream after 3 of the 4 length bytes",
        ),
        (
            "truncated_header_1_byte",
            DEFAULT_MAX_FRAME,
            b"\x00",
            "bad_request",
            "end of stream after 1 of the 4 length bytes",
        ),
        (
            "truncated_body",
            DEFAULT_MAX_FRAME,
            u32be(5) + b"\x64abc",
            "bad_request",
            "header declares 5 body bytes, end of stream after 4",
        ),
        (
            "trailing_bytes_after_item",
            DEFAULT_MAX_FRAME,
            frame(b"\xa0\x18"),
            "bad_request",
            "an empty map followed by a stray byte inside the body",
        ),
        (
            "two_items_in_body",
            DEFAULT_MAX_FRAME,
            frame(b"\xa0\xa0"),
            "bad_request",
            "two complete items in one body",
        ),
        (
            "duplicate_map_key",
            DEFAULT_MAX_FRAME,
            frame(b"\xa2\x61a\x01\x61a\x02"),
            "bad_request",
            'key "a" twice',
        ),
        (
            "duplicate_map_key_non_minimal",
            DEFAULT_MAX_FRAME,
            frame(b"\xa2\x61a\x01\x78\x01a\x02"),
            "bad_request",
            'key "a" twice, the second with a 1-byte length argument: keys compare as text',
        ),
        (
            "int_map_key",
            DEFAULT_MAX_FRAME,
            frame(b"\xa1\x01\x01"),
            "bad_request",
            "map key is an integer",
        ),
        (
            "bstr_map_key",
            DEFAULT_MAX_FRAME,
            frame(b"\xa1\x41a\x01"),
            "bad_request",
            "map key is a byte string",
        ),
        ("tag", DEFAULT_MAX_FRAME, frame(b"\xc1\x00"), "bad_request", "tag 1 (epoch time)"),
        ("tag_bignum", DEFAULT_MAX_FRAME, frame(b"\xc2\x41\x01"), "bad_request", "tag 2 (bignum)"),
        ("float16", DEFAULT_MAX_FRAME, frame(b"\xf9\x3c\x00"), "bad_request", "float16 1.0"),
        (
            "float32",
            DEFAULT_MAX_FRAME,
            frame(b"\xfa\x3f\x80\x00\x00"),
            "bad_request",
            "float32 1.0",
        ),
        (
            "float64",
            DEFAULT_MAX_FRAME,
            frame(b"\xfb\x3f\xf0" + bytes(6)),
            "bad_request",
            "float64 1.0",
        ),
        ("undefined", DEFAULT_MAX_FRAME, frame(b"\xf7"), "bad_request", "undefined"),
        (
            "simple_value_16",
            DEFAULT_MAX_FRAME,
            frame(b"\xf0"),
            "bad_request",
            "unassigned simple value 16",
        ),
        (
            "simple_value_one_byte_form",
            DEFAULT_MAX_FRAME,
            frame(b"\xf8\x20"),
            "bad_request",
            "simple value 32 (0xf8 form)",
        ),
        (
            "false_in_two_byte_form",
            DEFAULT_MAX_FRAME,
            frame(b"\xf8\x14"),
            "bad_request",
            "false written as 0xf8 0x14: only 0xf4 is allowed (and RFC 8949 calls it malformed)",
        ),
        (
            "indefinite_bstr",
            DEFAULT_MAX_FRAME,
            frame(b"\x5f\x41a\xff"),
            "bad_request",
            "indefinite-length byte string",
        ),
        (
            "indefinite_tstr",
            DEFAULT_MAX_FRAME,
            frame(b"\x7f\x61a\xff"),
            "bad_request",
            "indefinite-length text string",
        ),
        (
            "indefinite_array",
            DEFAULT_MAX_FRAME,
            frame(b"\x9f\x01\xff"),
            "bad_request",
            "indefinite-length array",
        ),
        (
            "indefinite_map",
            DEFAULT_MAX_FRAME,
            frame(b"\xbf\x61a\x01\xff"),
            "bad_request",
            "indefinite-length map",
        ),
        (
            "lone_break",
            DEFAULT_MAX_FRAME,
            frame(b"\xff"),
            "bad_request",
            "break outside an indefinite item",
        ),
        (
            "reserved_additional_info_28",
            DEFAULT_MAX_FRAME,
            frame(b"\x1c"),
            "bad_request",
            "major type 0 with additional information 28",
        ),
        (
            "reserved_additional_info_30_bstr",
            DEFAULT_MAX_FRAME,
            frame(b"\x5e"),
            "bad_request",
            "major type 2 with additional information 30",
        ),
        (
            "uint_additional_info_31",
            DEFAULT_MAX_FRAME,
            frame(b"\x1f"),
            "bad_request",
            "major type 0 with additional information 31 (no indefinite integers)",
        ),
        (
            "invalid_utf8",
            DEFAULT_MAX_FRAME,
            frame(b"\x62\xc3\x28"),
            "bad_request",
            "text string with an invalid continuation byte",
        ),
        (
            "invalid_utf8_overlong",
            DEFAULT_MAX_FRAME,
            frame(b"\x62\xc0\xaf"),
            "bad_request",
            "text string with an overlong encoding of '/'",
        ),
        (
            "invalid_utf8_surrogate",
            DEFAULT_MAX_FRAME,
            frame(b"\x63\xed\xa0\x80"),
            "bad_request",
            "text string encoding the surrogate U+D800",
        ),
        (
            "depth_17_arrays",
            DEFAULT_MAX_FRAME,
            frame(_nested_arrays(MAX_DEPTH + 1)),
            "bad_request",
            "17 nested arrays, the innermost empty",
        ),
        (
            "bstr_longer_than_body",
            DEFAULT_MAX_FRAME,
            frame(b"\x45ab"),
            "bad_request",
            "byte string declares 5 bytes, the body holds 2 after the header",
        ),
        (
            "array_longer_than_body",
            DEFAULT_MAX_FRAME,
            frame(b"\x82\x01"),
            "bad_request",
            "array declares 2 items, the body holds 1",
        ),
        (
            "truncated_uint_argument",
            DEFAULT_MAX_FRAME,
            frame(b"\x1b\x00\x00"),
            "bad_request",
            "8-byte integer argument cut after 2 bytes",
        ),
        (
            "huge_bstr_length",
            DEFAULT_MAX_FRAME,
            frame(b"\x5b" + b"\xff" * 8),
            "bad_request",
            "byte string declares 2^64-1 bytes",
        ),
    ]

    out_valid = []
    for name, max_frame, body, item in valid:
        data = frame(body)
        got = read_frame(data, max_frame)
        if json.dumps(render(got)) != json.dumps(render(item)):
            raise AssertionError(f"framing vector {name}: decodes to {got!r}")
        out_valid.append(
            {"name": name, "max_frame": max_frame, "frame": data.hex(), "item": render(item)}
        )
    out_invalid = []
    for name, max_frame, data, error, why in invalid:
        try:
            read_frame(data, max_frame)
        except Rejected as exc:
            if exc.error != error:
                raise AssertionError(f"framing vector {name}: {exc}") from None
        else:
            raise AssertionError(f"framing vector {name}: accepted")
        out_invalid.append(
            {"name": name, "max_frame": max_frame, "frame": data.hex(), "error": error, "why": why}
        )
    return {
        "description": (
            "PROTOCOL.md §2 and §3. Each `frame` is the complete byte sequence a receiver reads "
            "before end of stream (u32be length || body). `valid`: it must decode to `item` "
            '(JSON rendering: byte strings as {"$bytes": hex}, integers as JSON numbers, maps '
            "as objects). `invalid`: it must be rejected as a protocol error with `error` "
            "(too_large: on the length header alone, before any body byte is read; "
            "bad_request: everything else). Use the case's `max_frame`."
        ),
        "valid": out_valid,
        "invalid": out_invalid,
    }


# --------------------------------------------------------------------------------------------
# derive.json


M0 = bytes(range(32))
M1 = const("master secret 1")

APP_CASES: list[tuple[str, bytes, int, str, str | None, int]] = [
    ("app_1_default", M0, 1, "app/key", None, 32),
    ("app_0", M0, 0, "app/key", None, 32),
    ("app_1_other_master", M1, 1, "app/key", None, 32),
    ("large_app_id_2_pow_64", M0, 2**64, "app/key", None, 32),
    ("unicode_path", M0, 7, "schlüssel/ключ/🔑", None, 32),
    ("context_null", M0, 1, "db", None, 32),
    ("context_empty_same_as_null", M0, 1, "db", "", 32),
    ("context_nonempty", M0, 1, "db", "tenant-42", 32),
    ("colon_collision_a", M0, 1, "a:b", "c", 32),
    ("colon_collision_b_same_key", M0, 1, "a", "b:c", 32),
    ("length_1", M0, 1, "app/key", None, 1),
    ("length_16", M0, 1, "app/key", None, 16),
    ("length_64", M0, 1, "app/key", None, 64),
    ("length_1024", M0, 1, "app/key", None, 1024),
]

INTERNAL_CASES: list[tuple[str, bytes, str, list[str | int], int]] = [
    ("kv_data_key_app_1", M0, "kv-data-key", [1], 32),
    ("ca_key_7", M0, "ca-key", [7], 32),
    ("cluster_mac_no_fields", M0, "cluster-mac", [], 32),
    ("text_fields_length_64", M1, "kv-data-key", [2**64 - 1, "v2", "ünï"], 64),
    ("length_prefix_separates_ab_c", M0, "ab", ["c"], 32),
    ("length_prefix_separates_a_bc", M0, "a", ["bc"], 32),
]


def derive() -> dict[str, Any]:
    app = [
        {
            "name": name,
            "master_secret": master.hex(),
            "app_id": app_id,
            "path": path,
            "context": context,
            "length": length,
            "key": derive_app(master, app_id, path, context, length).hex(),
        }
        for name, master, app_id, path, context, length in APP_CASES
    ]
    internal = [
        {
            "name": name,
            "master_secret": master.hex(),
            "label": label,
            "fields": fields,
            "length": length,
            "key": derive_internal(master, label, fields, length).hex(),
        }
        for name, master, label, fields, length in INTERNAL_CASES
    ]
    fingerprint = [
        {"master_secret": m.hex(), "fingerprint": "0x" + keccak256(m).hex()} for m in (M0, M1)
    ]
    return {
        "description": (
            "PROTOCOL.md §9 and the `status` fingerprint of §8. `app`: §9.1 (context null and "
            '"" both mean no context; the colon_collision pair documents that ("a:b", "c") '
            'and ("a", "b:c") give the same key). `internal`: §9.2 (integer fields in '
            'decimal; the length_prefix pair shows the labelled info keeps ("ab", ["c"]) '
            'and ("a", ["bc"]) apart). `fingerprint`: 0x + hex Keccak-256(master secret).'
        ),
        "app": app,
        "internal": internal,
        "fingerprint": fingerprint,
    }


# --------------------------------------------------------------------------------------------
# handshake.json


def handshake() -> dict[str, Any]:
    server_key = const("server wallet key")
    client_key = const("client wallet key")
    impostor_key = const("impostor wallet key")
    client_eph = const("client ephemeral key")
    server_eph = const("server ephemeral key")
    nonce = const("server nonce")
    server_wallet = wallet_of(server_key)
    client_wallet = wallet_of(client_key)
    client_eph_pub = x25519_public(client_eph)
    server_eph_pub = x25519_public(server_eph)
    shared = x25519_shared(client_eph, server_eph_pub)
    if shared != x25519_shared(server_eph, client_eph_pub):
        raise AssertionError("X25519 sides disagree")

    def side(role: str) -> dict[str, Any]:
        hello = cbor({"v": 1, "role": role, "eph": client_eph_pub})
        th = transcript_hash(hello, server_eph_pub, nonce, server_wallet)
        server_text = f"NovaKMS:Response:{th.hex()}:{server_wallet}"
        server_sig = eip191_sign(server_key, server_text)
        prefix = {"app": "AppAuth", "peer": "Auth", "guardian": "GuardianAuth"}[role]
        client_text = f"NovaKMS:{prefix}:{th.hex()}:{server_wallet}:{TS}"
        k_c2s, k_s2c = session_keys(shared, th)
        return {
            "hello": hello,
            "th": th,
            "server_text": server_text,
            "server_sig": server_sig,
            "client_text": client_text,
            "client_sig": eip191_sign(client_key, client_text),
            "k_c2s": k_c2s,
            "k_s2c": k_s2c,
        }

    app = side("app")
    peer = side("peer")
    guardian = side("guardian")
    k_c2s: bytes = app["k_c2s"]
    k_s2c: bytes = app["k_s2c"]

    def challenge(sig: bytes) -> bytes:
        return cbor(
            {"v": 1, "eph": server_eph_pub, "nonce": nonce, "wallet": server_wallet, "sig": sig}
        )

    challenge_body = challenge(app["server_sig"])
    client_auth = cbor({"wallet": client_wallet, "ts": TS, "sig": app["client_sig"]})
    client_auth_frame = seal(k_c2s, 0, client_auth)
    ready = cbor(
        {"wallet": client_wallet, "limits": {"max_frame": DEFAULT_MAX_FRAME, "max_inflight": 32}}
    )
    request = cbor({"id": 1, "op": "derive", "args": {"path": "app/key"}})
    request_frame = seal(k_c2s, 1, request)
    derived = derive_app(M0, 1, "app/key", None, 32)
    response = cbor({"id": 1, "ok": {"app_id": 1, "path": "app/key", "key": derived, "length": 32}})
    anonymous = cbor({})
    # An error response (s2c counter 2) and the sealed close notice that ends the session
    # (s2c counter 3); a plaintext close notice refusing a ClientHello at its length prefix;
    # the Ready of an anonymous session, which announces the anonymous frame limit.
    error_response = cbor(
        {
            "id": 2,
            "err": {"code": "rate_limited", "message": "too many requests", "retry_after_ms": 250},
        }
    )
    close = cbor(
        {
            "close": {
                "code": "unavailable",
                "message": "closing an idle connection",
                "reason": "idle_timeout",
            }
        }
    )
    plain_close = cbor(
        {
            "close": {
                "code": "too_large",
                "message": "frame: body length 2097152 exceeds max_frame 1024",
            }
        }
    )
    anonymous_ready = cbor({"wallet": None, "limits": {"max_frame": 4096, "max_inflight": 32}})
    # PROXY protocol v2 headers (§2.1), written out field by field.
    proxy_signature = bytes.fromhex("0d0a0d0a000d0a515549540a")
    proxy_v4 = (
        proxy_signature
        + b"\x21\x11"
        + u16be(12)
        + bytes([203, 0, 113, 7])
        + bytes([10, 0, 0, 1])
        + u16be(40000)
        + u16be(7400)
    )
    proxy_v6 = (
        proxy_signature
        + b"\x21\x21"
        + u16be(36)
        + bytes.fromhex("20010db8000000000000000000000001")
        + bytes(16)
        + u16be(40001)
        + u16be(7400)
    )
    proxy_local = proxy_signature + b"\x20\x00" + u16be(0)
    # The first request on a peer channel: sync.hello with the cluster proof (§8 sync.*),
    # the dialer's boot and catch-up state, and the answer with the other direction's proof.
    mac_key = derive_internal(M0, "cluster-mac", [], 32)

    def peer_proof(direction: str) -> bytes:
        label = b"novakms/1 peer-proof " + direction.encode()
        return hmac.new(mac_key, label + peer["th"], hashlib.sha256).digest()

    dialer_boot = hashlib.sha256(b"novakms vector: dialer boot").digest()[:16]
    server_boot = hashlib.sha256(b"novakms vector: server boot").digest()[:16]
    sync_hello = cbor(
        {
            "id": 1,
            "op": "sync.hello",
            "args": {"proof": peer_proof("c2s"), "boot": dialer_boot, "state": "syncing"},
        }
    )
    sync_hello_answer = cbor(
        {"id": 1, "ok": {"proof": peer_proof("s2c"), "boot": server_boot, "state": "serving"}}
    )
    sync_digests = cbor({"id": 2, "op": "sync.digests", "args": {"state": "syncing"}})
    sync_digests_answer = cbor({"id": 2, "ok": {"apps": [], "state": "serving"}})

    # negative cases
    impostor_sig = eip191_sign(impostor_key, app["server_text"])
    impostor_challenge = challenge(impostor_sig)
    signed_ts = TS + 1
    sent_text = app["client_text"]
    wrong_ts_text = f"NovaKMS:AppAuth:{app['th'].hex()}:{server_wallet}:{signed_ts}"
    wrong_ts_sig = eip191_sign(client_key, wrong_ts_text)
    wrong_ts_plain = cbor({"wallet": client_wallet, "ts": TS, "sig": wrong_ts_sig})
    # flip the lowest bit of the first ciphertext byte (after the 4-byte length and the
    # byte-string header of the body)
    bstr_header = len(cbor(b"\x00" * (len(client_auth) + 16))) - (len(client_auth) + 16)
    flip_at = 4 + bstr_header
    flipped = bytearray(client_auth_frame)
    flipped[flip_at] ^= 0x01
    low_order_hello = cbor({"v": 1, "role": "app", "eph": bytes(32)})

    negative: list[dict[str, Any]] = [
        {
            "name": "server_sig_wrong_signer",
            "description": (
                "A ServerChallenge claiming `server_wallet` whose `sig` over the correct "
                "`server_text` was made by another key (`signer_wallet`). The client recovers "
                "`signer_wallet` != `wallet` and must abort the handshake (close)."
            ),
            "server_wallet": server_wallet,
            "signer_wallet": wallet_of(impostor_key),
            "server_text": app["server_text"],
            "server_sig": impostor_sig.hex(),
            "challenge_body": impostor_challenge.hex(),
            "challenge_frame": frame(impostor_challenge).hex(),
        },
        {
            "name": "client_sig_wrong_ts",
            "description": (
                "A ClientAuth that sends `ts` but whose `sig` covers `signed_text` (with "
                "`signed_ts`). The server rebuilds the text from the sent `ts` "
                "(`expected_text`), recovers `recovered_wallet` != `client_wallet` and answers "
                "a sealed close notice `unauthenticated`, even at now = `ts` (inside the "
                "window). `client_auth_frame` is sealed with k_c2s at counter 0."
            ),
            "client_wallet": client_wallet,
            "ts": TS,
            "signed_ts": signed_ts,
            "expected_text": sent_text,
            "signed_text": wrong_ts_text,
            "client_sig": wrong_ts_sig.hex(),
            "recovered_wallet": eip191_recover(wrong_ts_sig, sent_text),
            "client_auth_plaintext": wrong_ts_plain.hex(),
            "client_auth_frame": seal(k_c2s, 0, wrong_ts_plain).hex(),
        },
        {
            "name": "client_auth_bit_flipped",
            "description": (
                "`client_auth_frame` with bit 0 of the first ciphertext byte (frame offset "
                "`flipped_offset`) flipped. Opening it with `key` at `expected_counter` fails; "
                "the server closes without answering."
            ),
            "direction": "c2s",
            "key": k_c2s.hex(),
            "expected_counter": 0,
            "sealed_counter": 0,
            "flipped_offset": flip_at,
            "frame": bytes(flipped).hex(),
        },
        {
            "name": "request_counter_gap",
            "description": (
                "After ClientAuth (counter 0) the server expects counter 1; this is "
                "`request_plaintext` sealed at counter 2 (a frame was skipped). Opening it with "
                "`key` at `expected_counter` fails; the server closes without answering."
            ),
            "direction": "c2s",
            "key": k_c2s.hex(),
            "expected_counter": 1,
            "sealed_counter": 2,
            "frame": seal(k_c2s, 2, request).hex(),
        },
        {
            "name": "request_replay",
            "description": (
                "The server accepted `client_auth_frame` (counter 0) and `request_frame` "
                "(counter 1); the same `request_frame` arrives again, so it is opened at "
                "`expected_counter` 2 and fails; the server closes without answering."
            ),
            "direction": "c2s",
            "key": k_c2s.hex(),
            "expected_counter": 2,
            "sealed_counter": 1,
            "preceding_frames": [client_auth_frame.hex(), request_frame.hex()],
            "frame": request_frame.hex(),
        },
        {
            "name": "low_order_client_eph",
            "description": (
                "A ClientHello whose `eph` is the all-zero X25519 public key (a low-order "
                "point): the shared secret is all zero and the server must abort the "
                "handshake (§4.3)."
            ),
            "client_eph_public": bytes(32).hex(),
            "client_hello_body": low_order_hello.hex(),
            "client_hello_frame": frame(low_order_hello).hex(),
        },
    ]

    return {
        "description": (
            'PROTOCOL.md §4 and §5, role app, with fixed keys (each is sha256("novakms '
            'vector: <name>")). X25519 private keys are the raw 32 bytes before clamping. '
            "Sealed frames are u32be(len(body)) || body, body = CBOR bstr of "
            "ChaCha20-Poly1305(key, u32be(0) || u64be(counter), plaintext, aad = empty). "
            "c2s: client_auth_frame (0), request_frame (1); s2c: ready_frame (0), "
            "response_frame (1), error_response_frame (2), close_notice_frame (3). "
            "anonymous_auth_frame / anonymous_ready_frame are the alternative counter-0 "
            "frames of an anonymous session. plain_close_notice_frame is the plaintext close "
            "notice refusing a ClientHello over max_handshake_frame. proxy_v2 holds PROXY "
            "protocol v2 headers (§2.1) with the client address they carry. "
            "`peer` repeats the derived values for role peer with the same keys and nonce, "
            "then the peer channel's first requests (§8 sync.*): sync.hello (c2s counter 1) "
            "with the cluster proofs under `master_secret` (HMAC-SHA256 keyed with the "
            "internal key `cluster-mac`, over 'novakms/1 peer-proof c2s|s2c' || TH), the "
            "dialer's boot and state, its answer (s2c counter 1), and sync.digests with the "
            "caller's state and its answer (plaintexts). `guardian` repeats the derived "
            "values for role guardian. "
            "`negative` lists inputs a receiver must reject."
        ),
        "server_wallet_key": server_key.hex(),
        "server_wallet": server_wallet,
        "client_wallet_key": client_key.hex(),
        "client_wallet": client_wallet,
        "client_eph_private": client_eph.hex(),
        "client_eph_public": client_eph_pub.hex(),
        "server_eph_private": server_eph.hex(),
        "server_eph_public": server_eph_pub.hex(),
        "server_nonce": nonce.hex(),
        "role": "app",
        "client_hello_body": app["hello"].hex(),
        "client_hello_frame": frame(app["hello"]).hex(),
        "transcript_hash": app["th"].hex(),
        "server_text": app["server_text"],
        "server_sig": app["server_sig"].hex(),
        "challenge_body": challenge_body.hex(),
        "challenge_frame": frame(challenge_body).hex(),
        "shared_secret": shared.hex(),
        "k_c2s": k_c2s.hex(),
        "k_s2c": k_s2c.hex(),
        "ts": TS,
        "client_text": app["client_text"],
        "client_sig": app["client_sig"].hex(),
        "client_auth_plaintext": client_auth.hex(),
        "client_auth_frame": client_auth_frame.hex(),
        "ready_plaintext": ready.hex(),
        "ready_frame": seal(k_s2c, 0, ready).hex(),
        "request_plaintext": request.hex(),
        "request_frame": request_frame.hex(),
        "response_plaintext": response.hex(),
        "response_frame": seal(k_s2c, 1, response).hex(),
        "anonymous_auth_plaintext": anonymous.hex(),
        "anonymous_auth_frame": seal(k_c2s, 0, anonymous).hex(),
        "anonymous_ready_plaintext": anonymous_ready.hex(),
        "anonymous_ready_frame": seal(k_s2c, 0, anonymous_ready).hex(),
        "error_response_plaintext": error_response.hex(),
        "error_response_frame": seal(k_s2c, 2, error_response).hex(),
        "close_notice_plaintext": close.hex(),
        "close_notice_frame": seal(k_s2c, 3, close).hex(),
        "plain_close_notice_frame": frame(plain_close).hex(),
        "proxy_v2": {
            "ipv4": {"header": proxy_v4.hex(), "source": "203.0.113.7", "source_port": 40000},
            "ipv6": {"header": proxy_v6.hex(), "source": "2001:db8::1", "source_port": 40001},
            "local": {"header": proxy_local.hex(), "source": None, "source_port": 0},
        },
        "peer": {
            "role": "peer",
            "client_hello_body": peer["hello"].hex(),
            "client_hello_frame": frame(peer["hello"]).hex(),
            "transcript_hash": peer["th"].hex(),
            "server_text": peer["server_text"],
            "server_sig": peer["server_sig"].hex(),
            "ts": TS,
            "client_text": peer["client_text"],
            "client_sig": peer["client_sig"].hex(),
            "k_c2s": peer["k_c2s"].hex(),
            "k_s2c": peer["k_s2c"].hex(),
            "master_secret": M0.hex(),
            "cluster_proof_c2s": peer_proof("c2s").hex(),
            "cluster_proof_s2c": peer_proof("s2c").hex(),
            "sync_hello_plaintext": sync_hello.hex(),
            "sync_hello_frame": seal(peer["k_c2s"], 1, sync_hello).hex(),
            "sync_hello_answer_plaintext": sync_hello_answer.hex(),
            "sync_hello_answer_frame": seal(peer["k_s2c"], 1, sync_hello_answer).hex(),
            "sync_digests_plaintext": sync_digests.hex(),
            "sync_digests_answer_plaintext": sync_digests_answer.hex(),
        },
        "guardian": {
            "role": "guardian",
            "client_hello_body": guardian["hello"].hex(),
            "transcript_hash": guardian["th"].hex(),
            "client_text": guardian["client_text"],
            "client_sig": guardian["client_sig"].hex(),
            "k_c2s": guardian["k_c2s"].hex(),
            "k_s2c": guardian["k_s2c"].hex(),
        },
        "negative": negative,
    }


# --------------------------------------------------------------------------------------------
# guardians.json (§9.3): GF(2^8) Shamir, the share plaintext and HPKE, each written out here


def gf_mul(a: int, b: int) -> int:
    """Carry-less multiplication reduced by x^8 + x^4 + x^3 + x + 1 (FIPS-197 §4.2)."""
    product = 0
    while b:
        if b & 1:
            product ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11B
        b >>= 1
    return product


def gf_inv(a: int) -> int:
    """a^254 = a^-1 (the multiplicative group has order 255)."""
    result, power, exponent = 1, a, 254
    while exponent:
        if exponent & 1:
            result = gf_mul(result, power)
        power = gf_mul(power, power)
        exponent >>= 1
    return result


def shamir_coefficients(seed: bytes, threshold: int, size: int) -> list[bytes]:
    return [
        hkdf_sha256(seed, b"novakms/1 shamir", bytes([threshold, i]), size)
        for i in range(1, threshold)
    ]


def shamir_eval(secret: bytes, coefficients: list[bytes], x: int) -> bytes:
    """f_b(x) = secret[b] + sum_i c_i[b] x^i for every byte position b (no Horner here)."""
    out = bytearray(secret)
    for i, coefficient in enumerate(coefficients, start=1):
        x_pow = 1
        for _ in range(i):
            x_pow = gf_mul(x_pow, x)
        for b, c in enumerate(coefficient):
            out[b] ^= gf_mul(c, x_pow)
    return bytes(out)


def shamir_combine(points: list[tuple[int, bytes]]) -> bytes:
    out = bytearray(len(points[0][1]))
    for j, (xj, yj) in enumerate(points):
        basis = 1
        for m, (xm, _) in enumerate(points):
            if m != j:
                basis = gf_mul(basis, gf_mul(xm, gf_inv(xm ^ xj)))
        for b, value in enumerate(yj):
            out[b] ^= gf_mul(basis, value)
    return bytes(out)


# HPKE (RFC 9180), base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / ChaCha20Poly1305.
KEM_SUITE = b"KEM" + u16be(0x0020)
HPKE_SUITE = b"HPKE" + u16be(0x0020) + u16be(0x0001) + u16be(0x0003)


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm, counter = okm + block, counter + 1
    return okm[:length]


def labeled_extract(suite: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return hkdf_extract(salt, b"HPKE-v1" + suite + label + ikm)


def labeled_expand(suite: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return hkdf_expand(prk, u16be(length) + b"HPKE-v1" + suite + label + info, length)


def hpke_derive_key_pair(ikm: bytes) -> tuple[bytes, bytes]:
    dkp_prk = labeled_extract(KEM_SUITE, b"", b"dkp_prk", ikm)
    sk = labeled_expand(KEM_SUITE, dkp_prk, b"sk", b"", 32)
    return sk, x25519_public(sk)


def hpke_seal(pk_r: bytes, info: bytes, aad: bytes, plaintext: bytes, ikm_e: bytes) -> bytes:
    """enc || ciphertext of the first message (sequence number 0) of a base-mode context."""
    sk_e, enc = hpke_derive_key_pair(ikm_e)
    dh = x25519_shared(sk_e, pk_r)
    eae_prk = labeled_extract(KEM_SUITE, b"", b"eae_prk", dh)
    shared = labeled_expand(KEM_SUITE, eae_prk, b"shared_secret", enc + pk_r, 32)
    psk_id_hash = labeled_extract(HPKE_SUITE, b"", b"psk_id_hash", b"")
    info_hash = labeled_extract(HPKE_SUITE, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash
    secret = labeled_extract(HPKE_SUITE, shared, b"secret", b"")
    key = labeled_expand(HPKE_SUITE, secret, b"key", context, 32)
    base_nonce = labeled_expand(HPKE_SUITE, secret, b"base_nonce", context, 12)
    return enc + ChaCha20Poly1305(key).encrypt(base_nonce, plaintext, aad)


# RFC 9180 Appendix A.2.1 (this suite, base mode), first encryption: checked before use.
RFC9180_A21 = {
    "ikm_e": "909a9b35d3dc4713a5e72a4da274b55d3d3821a37e5d099e74a647db583a904b",
    "sk_e": "f4ec9b33b792c372c1d2c2063507b684ef925b8c75a42dbcbf57d63ccd381600",
    "ikm_r": "1ac01f181fdf9f352797655161c58b75c656a6cc2716dcb66372da835542e1df",
    "sk_r": "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb",
    "pk_r": "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a",
    "enc": "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a",
    "info": "4f6465206f6e2061204772656369616e2055726e",
    "aad": "436f756e742d30",
    "plaintext": "4265617574792069732074727574682c20747275746820626561757479",
    "ciphertext": "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db"
    "21993c62ce81883d2dd1b51a28",
}


def _self_check() -> None:
    """FIPS-197 §4.2 products and the classic inverse, then RFC 9180 A.2.1."""
    if (gf_mul(0x57, 0x83), gf_mul(0x57, 0x13), gf_inv(0x53)) != (0xC1, 0xFE, 0xCA):
        raise AssertionError("GF(2^8) arithmetic disagrees with FIPS-197")
    h = {k: bytes.fromhex(v) for k, v in RFC9180_A21.items()}
    if hpke_derive_key_pair(h["ikm_r"]) != (h["sk_r"], h["pk_r"]):
        raise AssertionError("DeriveKeyPair disagrees with RFC 9180 A.2.1")
    if hpke_derive_key_pair(h["ikm_e"])[0] != h["sk_e"]:
        raise AssertionError("DeriveKeyPair disagrees with RFC 9180 A.2.1")
    if hpke_seal(h["pk_r"], h["info"], h["aad"], h["plaintext"], h["ikm_e"]) != (
        h["enc"] + h["ciphertext"]
    ):
        raise AssertionError("HPKE seal disagrees with RFC 9180 A.2.1")


def share_plaintext(fields: dict[str, Any]) -> bytes:
    return cbor(fields)


def guardian_info(wallet: str, set_version: int) -> bytes:
    return b"novakms/1 guardian share" + bytes.fromhex(wallet[2:]) + u64be(set_version)


def guardians() -> dict[str, Any]:
    _self_check()
    master = const("guardian master secret")
    fingerprint = "0x" + keccak256(master).hex()
    version, threshold = 1, 2
    members = []
    for i in range(3):
        wallet_key = const(f"guardian {i} wallet")
        enc_ikm = const(f"guardian {i} enc")
        enc_private, enc_public = hpke_derive_key_pair(enc_ikm)
        members.append(
            {
                "wallet_key": wallet_key.hex(),
                "wallet": wallet_of(wallet_key),
                "enc_ikm": enc_ikm.hex(),
                "enc_private": enc_private.hex(),
                "enc_public": enc_public.hex(),
            }
        )
    wallets = [m["wallet"] for m in members]
    seed_fields: list[str | int] = [version, threshold, *wallets]
    seed_info = b"".join(
        u32be(len(str(p).encode())) + str(p).encode() for p in ["guardian-shares", *seed_fields]
    )
    seed = derive_internal(master, "guardian-shares", seed_fields, 32)
    coefficients = shamir_coefficients(seed, threshold, 32)

    def fields(x: int, y: bytes, wallet: str, **changes: Any) -> dict[str, Any]:
        base = {
            "v": 1,
            "x": x,
            "y": y,
            "k": threshold,
            "n": 3,
            "set": version,
            "fp": fingerprint,
            "wallet": wallet,
        }
        base.update(changes)
        return base

    shares = []
    for i, member in enumerate(members):
        x = i + 1
        y = shamir_eval(master, coefficients, x)
        plaintext = share_plaintext(fields(x, y, member["wallet"]))
        ikm_e = const(f"guardian {i} ephemeral")
        info = guardian_info(member["wallet"], version)
        sealed = hpke_seal(bytes.fromhex(member["enc_public"]), info, b"", plaintext, ikm_e)
        shares.append(
            {
                "x": x,
                "y": y.hex(),
                "wallet": member["wallet"],
                "plaintext": plaintext.hex(),
                "hpke_info": info.hex(),
                "ephemeral_ikm": ikm_e.hex(),
                "enc": sealed[:32].hex(),
                "sealed": sealed.hex(),
            }
        )
    ys = [bytes.fromhex(s["y"]) for s in shares]
    for a, b in ((0, 1), (0, 2), (1, 2)):
        if shamir_combine([(a + 1, ys[a]), (b + 1, ys[b])]) != master:
            raise AssertionError("a pair of shares does not recombine")

    # A forged share: guardian 2's x with one bit of y flipped, well formed and well sealed
    # (guardian 2 itself could send it). With share 1 it combines to a wrong secret.
    forged_y = bytes([ys[1][0] ^ 0x01]) + ys[1][1:]
    forged_plain = share_plaintext(fields(2, forged_y, wallets[1]))
    forged_sealed = hpke_seal(
        bytes.fromhex(members[1]["enc_public"]),
        guardian_info(wallets[1], version),
        b"",
        forged_plain,
        const("guardian forged ephemeral"),
    )
    wrong = shamir_combine([(1, ys[0]), (2, forged_y)])
    plain = [bytes.fromhex(s["plaintext"]) for s in shares]
    recover_cases = [
        {"name": "shares_1_2", "plaintexts": [plain[0].hex(), plain[1].hex()], "secret": master},
        {"name": "shares_3_1", "plaintexts": [plain[2].hex(), plain[0].hex()], "secret": master},
        {"name": "one_share", "plaintexts": [plain[0].hex()], "secret": None},
        {
            "name": "forged_and_one_good",
            "plaintexts": [forged_plain.hex(), plain[0].hex()],
            "secret": None,
        },
        {
            "name": "forged_first_then_two_good",
            "plaintexts": [forged_plain.hex(), plain[0].hex(), plain[2].hex()],
            "secret": master,
        },
        {
            "name": "forged_between_two_good",
            "plaintexts": [plain[0].hex(), forged_plain.hex(), plain[2].hex()],
            "secret": master,
        },
    ]
    for case in recover_cases:
        if case["secret"] is not None:
            case["secret"] = case["secret"].hex()
        case["threshold"] = threshold
        case["pin_fingerprint"] = fingerprint

    def bad(name: str, plaintext: bytes, reason: str, why: str) -> dict[str, Any]:
        return {"name": name, "plaintext": plaintext.hex(), "reason": reason, "why": why}

    good = fields(1, ys[0], wallets[0])
    one_byte_x = cbor({**good, "x": 0}).replace(b"\x61x\x00", b"\x61x\x18\x01")
    bad_plaintexts = [
        bad("extra_key", cbor({**good, "note": "hi"}), "keys", "a ninth key"),
        bad("missing_fp", cbor({k: v for k, v in good.items() if k != "fp"}), "keys", "no fp"),
        bad("version_2", cbor({**good, "v": 2}), "version", "v must be 1"),
        bad("x_zero", cbor({**good, "x": 0}), "x", "x = 0 would be the secret itself"),
        bad("x_above_n", cbor({**good, "x": 4}), "x", "x = 4 in a set of n = 3"),
        bad("y_31_bytes", cbor({**good, "y": ys[0][:31]}), "y", "y must be 32 bytes"),
        bad("y_as_text", cbor({**good, "y": ys[0].hex()}), "y", "y must be a byte string"),
        bad("k_above_n", cbor({**good, "k": 4}), "threshold", "k = 4 in a set of n = 3"),
        bad("n_256", cbor({**good, "n": 256}), "count", "at most 255 guardians"),
        bad("set_negative", cbor({**good, "set": -1}), "set_version", "set must be unsigned"),
        bad(
            "fp_uppercase",
            cbor({**good, "fp": "0x" + fingerprint[2:].upper()}),
            "fingerprint",
            "fp must be lowercase hex",
        ),
        bad(
            "wallet_bytes",
            cbor({**good, "wallet": bytes.fromhex(wallets[0][2:])}),
            "wallet",
            "wallet must be the text form",
        ),
        bad("not_a_map", cbor([1, ys[0]]), "not_a_map", "an array"),
        bad("trailing_byte", cbor(good) + b"\x00", "not_cbor", "a byte after the map"),
        bad(
            "non_minimal_x",
            one_byte_x,
            "not_canonical",
            "x = 1 written with a one-byte argument (0x18 0x01): valid CBOR, not deterministic",
        ),
    ]

    tampered = bytearray(bytes.fromhex(shares[0]["sealed"]))
    tampered[40] ^= 0x01
    other_guardian_plain = hpke_seal(
        bytes.fromhex(members[0]["enc_public"]),
        guardian_info(wallets[0], version),
        b"",
        plain[1],
        const("guardian mislabelled ephemeral"),
    )

    def bad_sealed(
        name: str,
        sealed: bytes,
        wallet: str,
        set_version: int,
        reason: str,
        why: str,
        guardian: int = 0,
    ) -> dict[str, Any]:
        return {
            "name": name,
            "sealed": sealed.hex(),
            "guardian": guardian,
            "wallet": wallet,
            "set_version": set_version,
            "reason": reason,
            "why": why,
        }

    sealed0 = bytes.fromhex(shares[0]["sealed"])
    bad_sealed_cases = [
        bad_sealed(
            "other_wallet",
            sealed0,
            wallets[1],
            version,
            "decrypt",
            "guardian 1's share opened as guardian 2's: the HPKE info differs",
        ),
        bad_sealed(
            "other_set_version",
            sealed0,
            wallets[0],
            2,
            "decrypt",
            "opened for set version 2: the HPKE info differs",
        ),
        bad_sealed(
            "other_key",
            sealed0,
            wallets[0],
            version,
            "decrypt",
            "opened with guardian 2's private key",
            guardian=1,
        ),
        bad_sealed(
            "bit_flipped",
            bytes(tampered),
            wallets[0],
            version,
            "decrypt",
            "bit 0 of byte 40 (in the ciphertext) flipped",
        ),
        bad_sealed(
            "low_order_enc",
            bytes(32) + sealed0[32:],
            wallets[0],
            version,
            "bad_key",
            "enc is the all-zero X25519 point: the shared secret would be zero",
        ),
        bad_sealed(
            "truncated",
            sealed0[:47],
            wallets[0],
            version,
            "truncated",
            "shorter than enc (32) and the tag (16)",
        ),
        bad_sealed(
            "plaintext_names_another_guardian",
            other_guardian_plain,
            wallets[0],
            version,
            "wrong_wallet",
            "sealed correctly to guardian 1 with its info, but the plaintext is guardian 2's share",
        ),
    ]

    return {
        "description": (
            "PROTOCOL.md §9.3, guardian shares. A 2-of-3 guardian set, version 1: wallets "
            "from fixed keys, X25519 encryption keys from HPKE DeriveKeyPair(enc_ikm) "
            "(enc_private is DeriveKeyPair's raw output, before clamping; each fixed value is "
            'sha256("novakms vector: <name>")). seed = internal key guardian-shares (§9.2, '
            "info seed_info); coefficients[i-1] = c_i; share x = i+1 has y = f(x) byte-wise "
            "in GF(2^8) mod 0x11B; plaintext = the deterministic CBOR share map; sealed = "
            "enc || ciphertext of HPKE base mode (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, "
            "ChaCha20Poly1305) to the guardian's enc_public with info = hpke_info, aad empty "
            "and the ephemeral key DeriveKeyPair(ephemeral_ikm). `forged` is guardian 2's "
            "share with bit 0 of y flipped: with share 1 it combines to `wrong_secret`. "
            "`recover` lists share sets (plaintexts, in arrival order) and what recovery with "
            "the pinned fingerprint returns (null: nothing). `bad_plaintexts` and "
            "`bad_sealed` must be refused with the given reason (open with guardian "
            "`guardian`'s enc_private, for `wallet` and `set_version`). `hpke_rfc9180_a21` "
            "is the RFC 9180 A.2.1 test vector of the same suite (sequence number 0)."
        ),
        "master_secret": master.hex(),
        "fingerprint": fingerprint,
        "set": {"version": version, "threshold": threshold, "guardians": members},
        "seed_info": seed_info.hex(),
        "seed": seed.hex(),
        "coefficients": [c.hex() for c in coefficients],
        "shares": shares,
        "forged": {
            "x": 2,
            "y": forged_y.hex(),
            "plaintext": forged_plain.hex(),
            "sealed": forged_sealed.hex(),
            "ephemeral_ikm": const("guardian forged ephemeral").hex(),
            "wrong_secret": wrong.hex(),
            "wrong_fingerprint": "0x" + keccak256(wrong).hex(),
        },
        "recover": recover_cases,
        "bad_plaintexts": bad_plaintexts,
        "bad_sealed": bad_sealed_cases,
        "hpke_rfc9180_a21": RFC9180_A21,
    }


# --------------------------------------------------------------------------------------------
# named app keys (§9.4, §8 keys.*)

SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def keys() -> dict[str, Any]:
    master = const("keys master secret")
    app_id, name = 7, "main"
    raw_point = serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint

    def okm(alg: str, length: int) -> bytes:
        return derive_internal(master, f"app-key/{alg}", [app_id, name], length)

    k1_okm = okm("secp256k1", 48)
    k1_secret = (int.from_bytes(k1_okm, "big") % (SECP256K1_ORDER - 1) + 1).to_bytes(32, "big")
    k1 = coincurve.PrivateKey(k1_secret)
    k1_public = k1.public_key.format(compressed=False)
    address = "0x" + keccak256(k1_public[1:])[-20:].hex()

    def k1_sign(digest: bytes) -> bytes:
        sig = k1.sign_recoverable(digest, hasher=None)
        return bytes(sig[:64]) + bytes([sig[64] + 27])

    digest = const("keys digest")
    eip191_message = "pay 1 ETH to bob"
    eip191 = eip191_digest(eip191_message)
    domain, struct_hash = const("keys eip712 domain"), const("keys eip712 message")
    eip712 = keccak256(b"\x19\x01" + domain + struct_hash)

    p256_okm = okm("p256", 48)
    p256_scalar = int.from_bytes(p256_okm, "big") % (P256_ORDER - 1) + 1
    p256 = ec.derive_private_key(p256_scalar, ec.SECP256R1())
    message = b"a message to sign"
    p256_der = p256.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s_ = decode_dss_signature(p256_der)

    ed_seed = okm("ed25519", 32)
    ed = Ed25519PrivateKey.from_private_bytes(ed_seed)
    ed_public = ed.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )

    aes_key = okm("aes-256-gcm", 32)
    nonce, aad, plaintext = const("keys nonce")[:12], b"record 7", b"the secret"
    encoded_name = name.encode()
    header = bytes([1, 1]) + u16be(len(encoded_name)) + encoded_name + nonce
    full_aad = b"".join(
        u32be(len(part)) + part
        for part in (b"novakms/1 encrypt", str(app_id).encode(), header, aad)
    )
    ciphertext = header + AESGCM(aes_key).encrypt(nonce, plaintext, full_aad)

    node_key = const("keys node wallet")
    node = wallet_of(node_key)
    issued_at = TS
    statement = "\n".join(
        [
            "novakms key attestation v1",
            f"app_id: {app_id}",
            f'name: "{name}"',
            "alg: secp256k1",
            f"public_key: 0x{k1_public.hex()}",
            f"address: {address}",
            f"node: {node}",
            f"issued_at: {issued_at}",
        ]
    )

    return {
        "description": (
            'PROTOCOL.md §9.4 and §8 keys.*: the named keys of app 7, name "main", under a '
            "fixed master secret. okm is the internal key (§9.2, label app-key/<alg>, fields "
            "app id and name); secp256k1 and p256 scalars are int(okm) mod (n - 1) + 1. "
            "Signatures: secp256k1 r || s || v (v = 27 + recovery id, RFC 6979, low-s) over "
            "the digest given, the EIP-191 digest of `eip191.message` and the EIP-712 digest "
            "of (domain, message); ed25519 over `message`; p256 ECDSA-SHA-256 (RFC 6979) raw "
            "r || s and DER. The ciphertext seals `plaintext` with `aad` under a fixed nonce "
            "(a server draws it at random). The attestation statement is signed (EIP-191) by "
            "the node wallet of `node_private_key`."
        ),
        "master_secret": master.hex(),
        "app_id": app_id,
        "name": name,
        "secp256k1": {
            "okm": k1_okm.hex(),
            "private_key": k1_secret.hex(),
            "public_key": k1_public.hex(),
            "address": address,
            "digest": {"digest": digest.hex(), "signature": k1_sign(digest).hex()},
            "eip191": {
                "message": eip191_message,
                "digest": eip191.hex(),
                "signature": k1_sign(eip191).hex(),
            },
            "eip712": {
                "domain": domain.hex(),
                "message": struct_hash.hex(),
                "digest": eip712.hex(),
                "signature": k1_sign(eip712).hex(),
            },
        },
        "p256": {
            "okm": p256_okm.hex(),
            "private_scalar": p256_scalar.to_bytes(32, "big").hex(),
            "public_key": p256.public_key().public_bytes(*raw_point).hex(),
            "message": message.hex(),
            "signature_raw": (r.to_bytes(32, "big") + s_.to_bytes(32, "big")).hex(),
            "signature_der": p256_der.hex(),
        },
        "ed25519": {
            "seed": ed_seed.hex(),
            "public_key": ed_public.hex(),
            "message": message.hex(),
            "signature": ed.sign(message).hex(),
        },
        "aes-256-gcm": {
            "key": aes_key.hex(),
            "nonce": nonce.hex(),
            "aad": aad.hex(),
            "plaintext": plaintext.hex(),
            "header": header.hex(),
            "ciphertext": ciphertext.hex(),
        },
        "attestation": {
            "node_private_key": node_key.hex(),
            "node": node,
            "issued_at": issued_at,
            "statement": statement,
            "signature": eip191_sign(node_key, statement).hex(),
        },
    }


# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# conditional writes by consensus (§8 `cas.*`) and records with a generation (§8 `sync.*`)


def boot_of(start_ns: int, nonce: bytes) -> bytes:
    return u64be(start_ns) + nonce


def ballot_sort_key(ballot: list[Any]) -> tuple[int, str, bytes]:
    return (ballot[0], ballot[1], ballot[2])


def seal_kv(master: bytes, app_id: int, key: str, value: bytes, nonce: bytes) -> bytes:
    data_key = derive_internal(master, "kv-data-key", [app_id], 32)
    aad = b"".join(
        u32be(len(p)) + p for p in (b"novakms/1 kv-value", str(app_id).encode(), key.encode())
    )
    return nonce + AESGCM(data_key).encrypt(nonce, value, aad)


def cas() -> dict[str, Any]:
    master = const("cas master secret")
    a, b = wallet_of(const("cas node a")), wallet_of(const("cas node b"))
    boot_a = boot_of(1_767_225_600_000_000_000, const("cas boot a")[:8])
    boot_a2 = boot_of(1_767_225_660_000_000_000, const("cas boot a2")[:8])
    boot_b = boot_of(1_767_225_601_000_000_000, const("cas boot b")[:8])
    app_id, key = 7, "leader"
    hlc = (TS * 1000) << 16
    sealed = seal_kv(master, app_id, key, b"instance 3", const("cas nonce")[:12])
    base = {"a": app_id, "k": key, "v": sealed, "c": [[a, 5]], "h": hlc, "n": a, "x": None}
    decided = dict(
        base, c=sorted([[a, 5], [b, 1_767_225_700_000]]), h=hlc + (1 << 16) + 1, n=b, g=2
    )
    ballot = [3, b, boot_b]
    higher = [4, a, boot_a2]
    quorum = [[a, boot_a2], [b, boot_b]]

    def request(op: str, args: dict[str, Any]) -> str:
        return cbor({"id": 9, "op": op, "args": args}).hex()

    def answer(result: dict[str, Any]) -> str:
        return cbor({"id": 9, "ok": result}).hex()

    ballots = sorted(
        [[3, b, boot_b], [3, a, boot_a], [3, a, boot_a2], [2, b, boot_b], [10, a, boot_a]],
        key=ballot_sort_key,
    )
    bad_gen = [
        ("zero", dict(base, g=0)),
        ("boolean", dict(base, g=True)),
        ("negative", dict(base, g=-1)),
        ("text", dict(base, g="1")),
    ]
    return {
        "description": (
            "Consensus on conditional writes (PROTOCOL.md section 8 cas.*). boots: 8-byte "
            "big-endian start time in ns, then 8 random bytes; one node's boots sort in start "
            "order. ballots: [counter, wallet, boot] in ascending order. quorums: members -> "
            "majority and recovery sources. records: a replication record of generation 0 "
            "(no 'g') and the conditional write decided on top of it (g = 2), whose value "
            "opens under the app's data key (kv-data-key of master_secret, app id) with the "
            "key's associated data; bad_gen: records that must be rejected with reason "
            "bad_gen. messages: request and answer plaintexts (CBOR, deterministic) of "
            "cas.prepare, cas.accept and cas.recover."
        ),
        "master_secret": master.hex(),
        "wallets": {"a": a, "b": b},
        "boots": [
            {
                "start_ns": 1_767_225_600_000_000_000,
                "nonce": boot_a[8:].hex(),
                "boot": boot_a.hex(),
            },
            {
                "start_ns": 1_767_225_660_000_000_000,
                "nonce": boot_a2[8:].hex(),
                "boot": boot_a2.hex(),
            },
        ],
        "ballots": [cbor(x).hex() for x in ballots],
        "quorums": [
            {"members": n, "quorum": n // 2 + 1, "recovery_sources": min(n - n // 2, n - 1)}
            for n in range(1, 8)
        ],
        "records": {
            "base": {"wire": cbor(base).hex(), "value": b"instance 3".hex(), "gen": 0},
            "decided": {"wire": cbor(decided).hex(), "value": b"instance 3".hex(), "gen": 2},
        },
        "bad_gen": [{"name": name, "wire": cbor(item).hex()} for name, item in bad_gen],
        "messages": {
            "prepare_request": request(
                "cas.prepare", {"app_id": app_id, "key": key, "ballot": ballot}
            ),
            "prepare_promise": answer(
                {
                    "ok": True,
                    "promised": ballot,
                    "accepted": None,
                    "value": None,
                    "stored": base,
                    "boot": boot_a2,
                }
            ),
            "prepare_refusal": answer(
                {
                    "ok": False,
                    "promised": higher,
                    "accepted": None,
                    "value": None,
                    "stored": None,
                    "boot": boot_a2,
                }
            ),
            "accept_request": request(
                "cas.accept",
                {
                    "app_id": app_id,
                    "key": key,
                    "ballot": ballot,
                    "value": decided,
                    "quorum": quorum,
                },
            ),
            "accept_answer": answer({"ok": True, "promised": None, "boot": boot_a2}),
            "recover_request": request("cas.recover", {"boot": boot_a2, "after": None}),
            "recover_answer": answer(
                {
                    "entries": [[app_id, key, ballot, ballot, decided]],
                    "next": None,
                    "floor": [1, a, boot_a],
                    "voting": True,
                }
            ),
        },
    }


FILES: dict[str, Callable[[], dict[str, Any]]] = {
    "framing.json": framing,
    "handshake.json": handshake,
    "derive.json": derive,
    "guardians.json": guardians,
    "keys.json": keys,
    "cas.json": cas,
}


def render_files() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in FILES.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the files on disk differ from the output"
    )
    args = parser.parse_args(argv)
    outputs = render_files()
    if args.check:
        stale = []
        for name, text in outputs.items():
            path = HERE / name
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
                print(f"differs: {path}", file=sys.stderr)
        return 1 if stale else 0
    for name, text in outputs.items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
