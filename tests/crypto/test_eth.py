"""Tests for novakms.crypto.eth (PROTOCOL §4.5), cross-checked against eth_account."""

from __future__ import annotations

import contextlib
import secrets

import pytest
from Crypto.Hash import keccak
from eth_account import Account
from eth_account.messages import encode_defunct
from hypothesis import given, settings
from hypothesis import strategies as st

from novakms.crypto.eth import (
    SECP256K1_N,
    eip191_digest,
    format_private_key,
    generate_private_key,
    keccak256,
    normalize_wallet,
    parse_private_key,
    recover_wallet,
    sign_text,
    wallet_from_private_key,
    wallet_from_public_key,
    wallet_to_bytes,
)
from novakms.errors import InvalidSignature

N = SECP256K1_N
KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
# The well-known example key of the web3.py docs.
KEY_WALLET = "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23"

utf8_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)
private_keys = st.integers(min_value=1, max_value=N - 1).map(lambda i: i.to_bytes(32, "big"))


def test_keccak256_known_values() -> None:
    assert keccak256(b"").hex() == (
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )
    assert keccak256(b"abc").hex() == (
        "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"
    )


def test_keccak256_is_pycryptodome_keccak_for_every_length() -> None:
    # keccak256 calls pycryptodome's C functions directly when it can (eth._direct_keccak256);
    # whichever path it takes, the digests are those of the hash object, across block edges.
    for size in [*range(300), 1000, 4096]:
        data = bytes((i * 7 + size) & 0xFF for i in range(size))
        expected = keccak.new(digest_bits=256, data=data).digest()
        assert keccak256(data) == expected


def test_wallet_of_known_key() -> None:
    assert wallet_from_private_key(KEY) == KEY_WALLET
    assert Account.from_key(KEY).address.lower() == KEY_WALLET


@settings(max_examples=200, deadline=None)
@given(key=private_keys, text=utf8_text)
def test_sign_agrees_with_eth_account(key: bytes, text: str) -> None:
    ours = sign_text(private_key=key, text=text)
    theirs = Account.sign_message(encode_defunct(text=text), private_key=key)
    assert ours == bytes(theirs.signature)
    assert len(ours) == 65
    assert ours[64] in (27, 28)
    assert eip191_digest(text) == bytes(theirs.message_hash)
    wallet = wallet_from_private_key(key)
    assert wallet == Account.from_key(key).address.lower()
    assert recover_wallet(text=text, signature=ours) == wallet
    assert Account.recover_message(encode_defunct(text=text), signature=ours).lower() == wallet
    # Low-s (libsecp256k1 always normalises).
    assert int.from_bytes(ours[32:64], "big") <= N // 2


def test_sign_is_deterministic() -> None:
    a = sign_text(private_key=KEY, text="hello")
    b = sign_text(private_key=KEY, text="hello")
    assert a == b
    assert a != sign_text(private_key=KEY, text="hello!")


def test_unicode_length_is_utf8_bytes() -> None:
    text = "héllo ☃ 🔑"
    expected = keccak256(
        b"\x19Ethereum Signed Message:\n" + str(len(text.encode())).encode() + text.encode()
    )
    assert eip191_digest(text) == expected
    assert len(text.encode()) != len(text)


@settings(max_examples=100, deadline=None)
@given(key=private_keys, text=utf8_text, other=utf8_text)
def test_tampered_text_recovers_another_wallet(key: bytes, text: str, other: str) -> None:
    sig = sign_text(private_key=key, text=text)
    wallet = wallet_from_private_key(key)
    if other == text:
        return
    with contextlib.suppress(InvalidSignature):
        assert recover_wallet(text=other, signature=sig) != wallet


@settings(max_examples=100, deadline=None)
@given(key=private_keys, text=utf8_text, index=st.integers(0, 63), flip=st.integers(1, 255))
def test_tampered_signature_fails(key: bytes, text: str, index: int, flip: int) -> None:
    sig = bytearray(sign_text(private_key=key, text=text))
    sig[index] ^= flip
    with contextlib.suppress(InvalidSignature):
        assert recover_wallet(text=text, signature=bytes(sig)) != wallet_from_private_key(key)


def test_v_normalisation() -> None:
    sig = sign_text(private_key=KEY, text="v test")
    recid = sig[64] - 27
    assert recover_wallet(text="v test", signature=sig[:64] + bytes([recid])) == KEY_WALLET
    flipped = sig[:64] + bytes([(1 - recid) + 27])
    with contextlib.suppress(InvalidSignature):
        assert recover_wallet(text="v test", signature=flipped) != KEY_WALLET
    for v in (2, 3, 26, 29, 35, 36, 37, 255):
        with pytest.raises(InvalidSignature):
            recover_wallet(text="v test", signature=sig[:64] + bytes([v]))


def test_high_s_accepted() -> None:
    # personal_sign does not require low-s: (r, n - s) with the other recovery id is valid.
    sig = sign_text(private_key=KEY, text="malleable")
    s = int.from_bytes(sig[32:64], "big")
    high = sig[:32] + (N - s).to_bytes(32, "big") + bytes([55 - sig[64]])
    assert recover_wallet(text="malleable", signature=high) == KEY_WALLET


@pytest.mark.parametrize(
    "signature",
    [
        b"",
        b"\x00" * 64,
        b"\x00" * 66,
        b"\x00" * 65,
        b"\x00" * 32 + b"\x01" * 32 + b"\x1b",  # r = 0
        b"\x01" * 32 + b"\x00" * 32 + b"\x1b",  # s = 0
        N.to_bytes(32, "big") + b"\x01" * 32 + b"\x1b",  # r = n
        b"\x01" * 32 + N.to_bytes(32, "big") + b"\x1b",  # s = n
        b"\xff" * 65,
        b"\xff" * 64 + b"\x1c",
    ],
)
def test_malformed_signatures(signature: bytes) -> None:
    with pytest.raises(InvalidSignature):
        recover_wallet(text="x", signature=signature)


def test_non_bytes_signature_and_bad_text() -> None:
    sig = sign_text(private_key=KEY, text="x")
    with pytest.raises(InvalidSignature):
        recover_wallet(text="x", signature=sig.hex())  # type: ignore[arg-type]
    with pytest.raises(InvalidSignature):
        recover_wallet(text="\ud800", signature=sig)
    assert recover_wallet(text="x", signature=bytearray(sig)) == KEY_WALLET  # type: ignore[arg-type]
    assert recover_wallet(text="x", signature=memoryview(sig)) == KEY_WALLET  # type: ignore[arg-type]


@settings(max_examples=1000, deadline=None)
@given(
    garbage=st.binary(min_size=65, max_size=65)
    | st.binary(max_size=130)
    | st.tuples(
        st.integers(0, 2**256 - 1), st.integers(0, 2**256 - 1), st.sampled_from([0, 1, 27, 28])
    ).map(lambda t: t[0].to_bytes(32, "big") + t[1].to_bytes(32, "big") + bytes([t[2]])),
    text=st.text(max_size=50),
)
def test_garbage_only_raises_invalid_signature(garbage: bytes, text: str) -> None:
    try:
        wallet = recover_wallet(text=text, signature=garbage)
    except InvalidSignature:
        return
    assert normalize_wallet(wallet) == wallet


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0x" + "ab" * 20, "0x" + "ab" * 20),
        ("0X" + "AB" * 20, "0x" + "ab" * 20),
        (
            "0x52908400098527886E0F7030069857D2E4169EE7",
            "0x52908400098527886e0f7030069857d2e4169ee7",
        ),
        ("0x" + "0" * 40, "0x" + "0" * 40),
    ],
)
def test_normalize_wallet_ok(text: str, expected: str) -> None:
    assert normalize_wallet(text) == expected
    assert wallet_to_bytes(text) == bytes.fromhex(expected[2:])
    assert len(wallet_to_bytes(text)) == 20


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0x",
        "ab" * 20,
        "0x" + "ab" * 19,
        "0x" + "ab" * 21,
        "0x" + "ab" * 19 + "a",
        "0x" + "gg" * 20,
        " 0x" + "ab" * 20,
        "0x" + "ab" * 20 + "\n",
        "0x" + "ab" * 20 + " ",
        "0x" + "\u0660" * 40,  # Arabic-Indic digit zero is not hex
        "0x" + "\uff41" * 40,  # fullwidth "a"
        "1x" + "ab" * 20,
        "0x+" + "a" * 39,
    ],
)
def test_normalize_wallet_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="wallet"):
        normalize_wallet(text)
    with pytest.raises(ValueError, match="wallet"):
        wallet_to_bytes(text)


def test_normalize_wallet_rejects_non_str() -> None:
    with pytest.raises(ValueError, match="wallet"):
        normalize_wallet(b"0x" + b"ab" * 20)  # type: ignore[arg-type]


def test_wallet_from_public_key() -> None:
    from coincurve import PrivateKey

    pub = PrivateKey(KEY).public_key.format(compressed=False)
    assert wallet_from_public_key(pub[1:]) == KEY_WALLET
    for bad in (pub, pub[:33], b""):
        with pytest.raises(ValueError, match="64-byte"):
            wallet_from_public_key(bad)


def test_parse_private_key_ok() -> None:
    text = "0x" + KEY.hex()
    assert parse_private_key(text) == KEY
    assert parse_private_key(f"  \n{text}\n\n") == KEY
    assert parse_private_key("0X" + KEY.hex().upper()) == KEY
    assert parse_private_key("0x" + (1).to_bytes(32, "big").hex()) == (1).to_bytes(32, "big")
    assert parse_private_key("0x" + (N - 1).to_bytes(32, "big").hex()) == (N - 1).to_bytes(
        32, "big"
    )


@pytest.mark.parametrize(
    "text",
    [
        "0x" + "00" * 32,
        "0x" + N.to_bytes(32, "big").hex(),
        "0x" + (N + 1).to_bytes(32, "big").hex(),
        "0x" + "ff" * 32,
        "0x" + KEY.hex()[:-1] + "z",
        "0x" + KEY.hex()[:-2],
        "0x" + KEY.hex() + "00",
        KEY.hex(),
        "0x" + KEY.hex()[:32] + " " + KEY.hex()[32:],
        "0x0x" + KEY.hex()[4:],
        "",
        "   ",
    ],
)
def test_parse_private_key_rejects_without_echo(text: str) -> None:
    with pytest.raises(ValueError, match="private key") as info:
        parse_private_key(text)
    message = str(info.value)
    core = text.strip().removeprefix("0x")
    if core:
        assert core not in message
        assert core.lower() not in message.lower()
    assert KEY.hex() not in message
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


def test_invalid_private_key_errors_never_show_key() -> None:
    for bad in (bytes(32), N.to_bytes(32, "big"), KEY[:31], KEY + b"\x00"):
        for call in (
            lambda k: sign_text(private_key=k, text="x"),
            wallet_from_private_key,
            format_private_key,
        ):
            with pytest.raises(ValueError, match="private key") as info:
                call(bad)
            assert bad.hex() not in str(info.value)
            assert str(int.from_bytes(bad, "big")) not in str(info.value)


def test_generate_and_format_private_key() -> None:
    key = generate_private_key(secrets.token_bytes)
    assert len(key) == 32
    assert 1 <= int.from_bytes(key, "big") < N
    text = format_private_key(key)
    assert text == "0x" + key.hex()
    assert parse_private_key(text) == key


def test_generate_rejection_sampling() -> None:
    draws = [bytes(32), b"\xff" * 32, N.to_bytes(32, "big"), KEY]
    calls: list[int] = []

    def rng(n: int) -> bytes:
        calls.append(n)
        return draws.pop(0)

    assert generate_private_key(rng) == KEY
    assert calls == [32, 32, 32, 32]


def test_generate_broken_rng() -> None:
    with pytest.raises(RuntimeError, match="invalid"):
        generate_private_key(lambda n: bytes(n))
    with pytest.raises(ValueError, match="number of bytes"):
        generate_private_key(lambda n: bytes(n - 1))
    with pytest.raises(TypeError, match="str"):
        parse_private_key(KEY)  # type: ignore[arg-type]


def test_canonical_wallets_are_what_normalize_wallet_returns() -> None:
    from novakms.crypto.eth import is_canonical_wallet, normalize_wallet

    mixed = "0xAbCdEf0123456789aBcDeF0123456789AbCdEf01"
    assert not is_canonical_wallet(mixed) and is_canonical_wallet(normalize_wallet(mixed))
    assert not is_canonical_wallet("0X" + "ab" * 20)
    assert not is_canonical_wallet(b"0x" + b"ab" * 20)
    assert not is_canonical_wallet("0x" + "ab" * 19)
