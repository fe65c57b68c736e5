"""Tests for novakms.crypto.kdf (PROTOCOL §9)."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from Crypto.Hash import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from novakms.crypto.eth import keccak256
from novakms.crypto.kdf import (
    APP_SALT_PREFIX,
    INTERNAL_SALT,
    MASTER_SECRET_SIZE,
    MAX_DERIVE_LENGTH,
    AppKeys,
    derive_app_key,
    derive_internal_key,
    secret_fingerprint,
)

SECRET = bytes(range(32))
VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors" / "derive.json"


# --- an independent RFC 5869 HKDF-SHA256 and info encodings ------------------------------


def ref_hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm = b""
    block = b""
    counter = 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def ref_app(secret: bytes, app_id: int, path: str, context: str | None, length: int) -> bytes:
    info = path if not context else path + ":" + context
    return ref_hkdf(secret, b"nova-kms:app:" + str(app_id).encode(), info.encode(), length)


def ref_internal(secret: bytes, label: str, fields: list[str | int], length: int) -> bytes:
    info = b""
    for part in [label, *fields]:
        raw = str(part).encode("utf-8")
        info += len(raw).to_bytes(4, "big") + raw
    return ref_hkdf(secret, b"nova-kms:internal:v1", info, length)


def test_rfc5869_reference_is_sound() -> None:
    # RFC 5869 test case 1 checks the reference implementation used below.
    okm = ref_hkdf(
        bytes.fromhex("0b" * 22),
        bytes.fromhex("000102030405060708090a0b0c"),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_constants() -> None:
    assert MASTER_SECRET_SIZE == 32
    assert APP_SALT_PREFIX == "nova-kms:app:"
    assert INTERNAL_SALT == "nova-kms:internal:v1"
    assert MAX_DERIVE_LENGTH == 1024
    assert not INTERNAL_SALT.startswith(APP_SALT_PREFIX)


utf8_text = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=80)


@settings(max_examples=300, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    app_id=st.integers(min_value=0, max_value=2**64),
    path=utf8_text,
    context=st.none() | st.just("") | utf8_text,
    length=st.integers(min_value=1, max_value=MAX_DERIVE_LENGTH),
)
def test_app_key_matches_reference(
    secret: bytes, app_id: int, path: str, context: str | None, length: int
) -> None:
    got = derive_app_key(
        master_secret=secret, app_id=app_id, path=path, context=context, length=length
    )
    assert got == ref_app(secret, app_id, path, context, length)
    assert len(got) == length


@settings(max_examples=100, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    calls=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=5) | st.integers(min_value=0, max_value=2**64),
            utf8_text,
            st.none() | st.just("") | utf8_text,
            st.integers(min_value=1, max_value=MAX_DERIVE_LENGTH),
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_app_keys_memo_gives_the_reference_keys(
    secret: bytes, calls: list[tuple[int, str, str | None, int]]
) -> None:
    # A capacity of 2 makes apps fall out of the memo and come back within one sequence.
    keys = AppKeys(secret, capacity=2)
    for app_id, path, context, length in calls:
        got = keys.derive(app_id=app_id, path=path, context=context, length=length)
        assert got == ref_app(secret, app_id, path, context, length)
    assert len(repr(keys)) < 40 and secret.hex() not in repr(keys)


@settings(max_examples=300, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    label=utf8_text,
    fields=st.lists(
        st.integers(min_value=-(2**70), max_value=2**70)
        | st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
        max_size=5,
    ),
    length=st.integers(min_value=1, max_value=MAX_DERIVE_LENGTH),
)
def test_internal_key_matches_reference(
    secret: bytes, label: str, fields: list[str | int], length: int
) -> None:
    got = derive_internal_key(master_secret=secret, label=label, fields=fields, length=length)
    assert got == ref_internal(secret, label, fields, length)
    assert got == derive_internal_key(
        master_secret=secret, label=label, fields=tuple(fields), length=length
    )


def test_internal_fields_are_length_prefixed() -> None:
    # Moving a byte between adjacent fields changes the key (no ambiguity like §9.1's ':').
    a = derive_internal_key(master_secret=SECRET, label="x", fields=["ab", "c"])
    b = derive_internal_key(master_secret=SECRET, label="x", fields=["a", "bc"])
    c = derive_internal_key(master_secret=SECRET, label="xab", fields=["c"])
    assert len({a, b, c}) == 3
    # An int field is its decimal text.
    assert derive_internal_key(master_secret=SECRET, label="x", fields=[42]) == (
        derive_internal_key(master_secret=SECRET, label="x", fields=["42"])
    )


@pytest.mark.parametrize(
    ("app_id", "path", "context", "label", "fields"),
    [
        (0, "data_key", None, "data_key", []),
        (7, "ca", None, "app-ca", [7]),
        (1, "sync", "", "cluster-mac", []),
        (42, "x", "y", "x", ["y"]),
        (3, "a:b", None, "a", ["b"]),
    ],
)
def test_app_and_internal_spaces_do_not_collide(
    app_id: int, path: str, context: str | None, label: str, fields: list[str | int]
) -> None:
    app = derive_app_key(master_secret=SECRET, app_id=app_id, path=path, context=context)
    internal = derive_internal_key(master_secret=SECRET, label=label, fields=fields)
    assert app != internal
    # Even an app path spelling out the internal info bytes stays in the app space.
    info = b"".join(len(p).to_bytes(4, "big") + p for p in [label.encode()])
    spelled = derive_app_key(master_secret=SECRET, app_id=app_id, path=info.decode("latin-1"))
    assert spelled != derive_internal_key(master_secret=SECRET, label=label)


def test_context_none_equals_empty() -> None:
    a = derive_app_key(master_secret=SECRET, app_id=5, path="p")
    b = derive_app_key(master_secret=SECRET, app_id=5, path="p", context=None)
    c = derive_app_key(master_secret=SECRET, app_id=5, path="p", context="")
    d = derive_app_key(master_secret=SECRET, app_id=5, path="p", context="c")
    assert a == b == c
    assert d != a


def test_colon_collision_is_the_documented_compat_property() -> None:
    a = derive_app_key(master_secret=SECRET, app_id=9, path="a:b", context="c")
    b = derive_app_key(master_secret=SECRET, app_id=9, path="a", context="b:c")
    c = derive_app_key(master_secret=SECRET, app_id=9, path="a:b:c")
    assert a == b == c


def test_app_ids_and_secrets_separate_keys() -> None:
    keys = {derive_app_key(master_secret=SECRET, app_id=i, path="p") for i in (0, 1, 10, 11, 110)}
    assert len(keys) == 5
    other = bytes(32)
    assert derive_app_key(master_secret=other, app_id=1, path="p") != derive_app_key(
        master_secret=SECRET, app_id=1, path="p"
    )


def test_length_prefix_property() -> None:
    # HKDF output of a shorter length is a prefix of a longer one (same inputs).
    short = derive_app_key(master_secret=SECRET, app_id=1, path="p", length=16)
    long = derive_app_key(master_secret=SECRET, app_id=1, path="p", length=1024)
    assert long.startswith(short)
    assert derive_app_key(master_secret=SECRET, app_id=1, path="p") == long[:32]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"master_secret": bytes(31)}, ValueError, "master secret"),
        ({"master_secret": bytes(33)}, ValueError, "master secret"),
        ({"master_secret": b""}, ValueError, "master secret"),
        ({"master_secret": "0" * 32}, ValueError, "master secret"),
        ({"app_id": -1}, ValueError, "app_id"),
        ({"app_id": True}, TypeError, "app_id"),
        ({"app_id": "1"}, TypeError, "app_id"),
        ({"path": ""}, ValueError, "path"),
        ({"context": 5}, TypeError, "context"),
        ({"length": 0}, ValueError, "length"),
        ({"length": MAX_DERIVE_LENGTH + 1}, ValueError, "length"),
        ({"length": -5}, ValueError, "length"),
        ({"length": True}, TypeError, "length"),
    ],
)
def test_app_key_argument_errors(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    args: dict[str, Any] = {"master_secret": SECRET, "app_id": 1, "path": "p", "length": 32}
    args.update(kwargs)
    with pytest.raises(error, match=match) as info:
        derive_app_key(**args)
    assert SECRET.hex() not in str(info.value)
    if "master_secret" in kwargs:
        with pytest.raises(error, match=match):
            AppKeys(args.pop("master_secret"))
    else:
        with pytest.raises(error, match=match):
            AppKeys(args.pop("master_secret")).derive(**args)


def test_app_keys_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        AppKeys(SECRET, capacity=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"master_secret": bytes(16)}, ValueError, "master secret"),
        ({"label": ""}, ValueError, "label"),
        ({"fields": [True]}, TypeError, "fields"),
        ({"fields": [1.5]}, TypeError, "fields"),
        ({"fields": [b"x"]}, TypeError, "fields"),
        ({"fields": "abc"}, TypeError, "fields"),
        ({"length": 0}, ValueError, "length"),
        ({"length": MAX_DERIVE_LENGTH + 1}, ValueError, "length"),
    ],
)
def test_internal_key_argument_errors(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    args: dict[str, Any] = {"master_secret": SECRET, "label": "l", "fields": (), "length": 32}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        derive_internal_key(**args)


def test_error_messages_never_show_the_secret() -> None:
    bad = b"\xaa" * 31
    with pytest.raises(ValueError, match="master secret") as info:
        secret_fingerprint(bad)
    assert bad.hex() not in str(info.value)
    assert repr(bad) not in str(info.value)


def test_fingerprint() -> None:
    expected = "0x" + keccak.new(digest_bits=256, data=SECRET).hexdigest()
    assert secret_fingerprint(SECRET) == expected
    assert len(expected) == 66
    # Keccak-256 of the empty string is the well-known Ethereum constant (Keccak, not SHA3).
    assert keccak256(b"").hex() == (
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )
    with pytest.raises(ValueError, match="master secret"):
        secret_fingerprint(bytes(31))


def _load_vectors() -> dict[str, Any]:
    data = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_official_vectors() -> None:
    data = _load_vectors()
    assert data["app"]
    assert data["internal"]
    assert data["fingerprint"]
    for case in data["app"]:
        secret = bytes.fromhex(case["master_secret"])
        got = derive_app_key(
            master_secret=secret,
            app_id=case["app_id"],
            path=case["path"],
            context=case["context"],
            length=case["length"],
        )
        assert got.hex() == case["key"], case["name"]
        memo = AppKeys(secret).derive(
            app_id=case["app_id"], path=case["path"], context=case["context"], length=case["length"]
        )
        assert memo == got, case["name"]
        assert got == ref_app(secret, case["app_id"], case["path"], case["context"], case["length"])
    for case in data["internal"]:
        secret = bytes.fromhex(case["master_secret"])
        got = derive_internal_key(
            master_secret=secret, label=case["label"], fields=case["fields"], length=case["length"]
        )
        assert got.hex() == case["key"], case["name"]
    for case in data["fingerprint"]:
        assert secret_fingerprint(bytes.fromhex(case["master_secret"])) == case["fingerprint"]
