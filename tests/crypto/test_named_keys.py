"""novakms.crypto.named_keys against protocol/vectors/keys.json, and its ciphertext format."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from novakms.crypto.eth import eip191_message_digest, eip712_digest
from novakms.crypto.kdf import derive_internal_key
from novakms.crypto.named_keys import (
    NamedKey,
    attestation_text,
    decrypt,
    derive_named_key,
    encrypt,
    parse_ciphertext,
    sign_digest_secp256k1,
    sign_message,
)
from novakms.crypto.signer import LocalSigner
from tests.harness.registry import load_vectors

V: dict[str, Any] = load_vectors("keys.json")
MASTER = bytes.fromhex(V["master_secret"])


def key(alg: str, *, app_id: int = V["app_id"], name: str = V["name"]) -> NamedKey:
    return derive_named_key(master_secret=MASTER, app_id=app_id, name=name, alg=alg)


def test_secp256k1_vectors() -> None:
    v = V["secp256k1"]
    k1 = key("secp256k1")
    assert (k1.public_key.hex(), k1.address) == (v["public_key"], v["address"])
    okm = derive_internal_key(
        master_secret=MASTER, label="app-key/secp256k1", fields=[V["app_id"], V["name"]], length=48
    )
    assert okm.hex() == v["okm"]
    digest = bytes.fromhex(v["digest"]["digest"])
    assert sign_digest_secp256k1(k1, digest).hex() == v["digest"]["signature"]
    eip191 = eip191_message_digest(v["eip191"]["message"].encode())
    assert eip191.hex() == v["eip191"]["digest"]
    assert sign_digest_secp256k1(k1, eip191).hex() == v["eip191"]["signature"]
    typed = v["eip712"]
    eip712 = eip712_digest(bytes.fromhex(typed["domain"]), bytes.fromhex(typed["message"]))
    assert eip712.hex() == typed["digest"]
    assert sign_digest_secp256k1(k1, eip712).hex() == typed["signature"]


def test_p256_and_ed25519_vectors() -> None:
    v = V["p256"]
    p256 = key("p256")
    assert p256.public_key.hex() == v["public_key"]
    message = bytes.fromhex(v["message"])
    assert sign_message(p256, message).hex() == v["signature_raw"]
    assert sign_message(p256, message, der=True).hex() == v["signature_der"]
    v = V["ed25519"]
    ed = key("ed25519")
    assert ed.public_key.hex() == v["public_key"]
    assert sign_message(ed, bytes.fromhex(v["message"])).hex() == v["signature"]
    with pytest.raises(ValueError, match="one format"):
        sign_message(ed, message, der=True)


def test_ciphertext_vector() -> None:
    v = V["aes-256-gcm"]
    aes = key("aes-256-gcm")
    aad, plaintext = bytes.fromhex(v["aad"]), bytes.fromhex(v["plaintext"])
    sealed = encrypt(aes, plaintext, aad=aad, nonce=bytes.fromhex(v["nonce"]))
    assert sealed.hex() == v["ciphertext"]
    parsed = parse_ciphertext(sealed)
    assert (parsed.header.hex(), parsed.name, parsed.alg) == (v["header"], V["name"], "aes-256-gcm")
    assert decrypt(aes, parsed, aad=aad) == plaintext
    assert decrypt(key("aes-256-gcm", app_id=8), parsed, aad=aad) is None  # another app


def test_attestation_vector() -> None:
    v = V["attestation"]
    node = LocalSigner(bytes.fromhex(v["node_private_key"]))
    assert node.wallet == v["node"]
    text = attestation_text(key=key("secp256k1"), node_wallet=node.wallet, issued_at=v["issued_at"])
    assert text == v["statement"]
    assert node.sign_text_sync(text).hex() == v["signature"]
    with pytest.raises(ValueError, match="public key"):
        attestation_text(key=key("aes-256-gcm"), node_wallet=node.wallet, issued_at=0)


def test_a_named_key_never_shows_its_private_part() -> None:
    k1 = key("secp256k1")
    secret = k1._private.secret.hex()
    assert secret not in repr(k1) and secret not in str(k1)
    assert repr(k1) == "NamedKey(app_id=7, name='main', alg='secp256k1')"


NAMES = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=40
)


@given(name=NAMES, plaintext=st.binary(max_size=200), aad=st.binary(max_size=50))
def test_ciphertexts_open_only_as_sealed(name: str, plaintext: bytes, aad: bytes) -> None:
    aes = key("aes-256-gcm", name=name)
    sealed = encrypt(aes, plaintext, aad=aad, nonce=bytes(12))
    parsed = parse_ciphertext(sealed)
    assert parsed.name == name and decrypt(aes, parsed, aad=aad) == plaintext
    assert decrypt(aes, parsed, aad=aad + b"x") is None
    for cut in range(len(sealed)):  # every truncation is refused, by the header or the tag
        try:
            shorter = parse_ciphertext(sealed[:cut])
        except ValueError:
            continue
        if shorter.name != name:
            continue
        assert decrypt(aes, shorter, aad=aad) is None
    flipped = bytearray(sealed)
    flipped[-1] ^= 0x80
    assert decrypt(aes, parse_ciphertext(bytes(flipped)), aad=aad) is None


@pytest.mark.parametrize(
    ("blob", "why"),
    [
        (b"\x01\x01\x00", "too short"),
        (b"\x02\x01\x00\x01a" + bytes(28), "version 2"),
        (b"\x01\x02\x00\x01a" + bytes(28), "algorithm 2"),
        (b"\x01\x01\x00\x00" + bytes(28), "name must be"),
        (b"\x01\x01\x00\x01\x00" + bytes(28), "name must be"),
        (b"\x01\x01\x00\x01\xff" + bytes(28), "not UTF-8"),
        (b"\x01\x01\x00\x01a" + bytes(27), "too short"),
    ],
)
def test_parse_ciphertext_refuses(blob: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_ciphertext(blob)


@pytest.mark.parametrize("name", ["", "a\x00b", "\ud800", "x" * 513])
def test_a_name_that_is_not_1_to_512_bytes_of_text_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="name must be"):
        key("aes-256-gcm", name=name)
