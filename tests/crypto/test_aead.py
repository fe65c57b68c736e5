"""Values sealed at rest (novakms.crypto.aead): AES-256-GCM bound to app id and key name."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from novakms.crypto.aead import (
    DATA_KEY_LABEL,
    NONCE_SIZE,
    SEAL_OVERHEAD,
    TAG_SIZE,
    data_key,
    open_value,
    seal_value,
)
from novakms.crypto.kdf import derive_app_key, derive_internal_key
from novakms.errors import SealError

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
NONCE = bytes(range(100, 112))
KEY_1 = data_key(master_secret=SECRET, app_id=1)


def seal(value: bytes, *, app_id: int = 1, name: str = "k", key: bytes = KEY_1) -> bytes:
    return seal_value(key=key, app_id=app_id, name=name, value=value, nonce=NONCE)


def test_constants() -> None:
    assert NONCE_SIZE == 12
    assert TAG_SIZE == 16
    assert SEAL_OVERHEAD == NONCE_SIZE + TAG_SIZE
    assert DATA_KEY_LABEL == "kv-data-key"


@given(
    value=st.binary(max_size=300),
    app_id=st.integers(min_value=0, max_value=2**64 - 1),
    name=st.text(min_size=1, max_size=20),
    nonce=st.binary(min_size=12, max_size=12),
)
def test_round_trip(value: bytes, app_id: int, name: str, nonce: bytes) -> None:
    key = data_key(master_secret=SECRET, app_id=app_id)
    sealed = seal_value(key=key, app_id=app_id, name=name, value=value, nonce=nonce)
    assert len(sealed) == len(value) + SEAL_OVERHEAD
    assert sealed[:NONCE_SIZE] == nonce
    assert open_value(key=key, app_id=app_id, name=name, sealed=sealed) == value


def test_layout_is_nonce_then_aesgcm_output() -> None:
    sealed = seal(b"hello")
    # The ciphertext part is plain AES-GCM output; opening with the wrong AAD fails.
    with pytest.raises(InvalidTag):
        AESGCM(KEY_1).decrypt(NONCE, sealed[NONCE_SIZE:], b"")
    assert b"hello" not in sealed


def test_empty_value() -> None:
    sealed = seal(b"")
    assert len(sealed) == SEAL_OVERHEAD
    assert open_value(key=KEY_1, app_id=1, name="k", sealed=sealed) == b""


@pytest.mark.parametrize("name", ["k2", "K", "k ", "", "k\x00", "ké"])
def test_moved_to_another_key_name_fails(name: str) -> None:
    sealed = seal(b"secret", name="k")
    with pytest.raises(SealError):
        open_value(key=KEY_1, app_id=1, name=name, sealed=sealed)


def test_moved_to_another_app_fails_even_with_the_same_data_key() -> None:
    sealed = seal(b"secret", app_id=1)
    # The AAD binds the app id on its own, independently of the data key.
    with pytest.raises(SealError):
        open_value(key=KEY_1, app_id=2, name="k", sealed=sealed)
    # And with the other app's own key, too.
    key_2 = data_key(master_secret=SECRET, app_id=2)
    with pytest.raises(SealError):
        open_value(key=key_2, app_id=2, name="k", sealed=sealed)


def test_name_and_app_id_are_not_ambiguous() -> None:
    # Length-prefixed AAD: (app 1, name "1k") and (app 11, name "k") must not collide.
    sealed = seal(b"v", app_id=1, name="1k")
    with pytest.raises(SealError):
        open_value(key=KEY_1, app_id=11, name="k", sealed=sealed)
    sealed = seal(b"v", app_id=11, name="k")
    with pytest.raises(SealError):
        open_value(key=KEY_1, app_id=1, name="1k", sealed=sealed)


def test_wrong_data_key_fails() -> None:
    sealed = seal(b"secret")
    for wrong in (
        data_key(master_secret=OTHER_SECRET, app_id=1),
        data_key(master_secret=SECRET, app_id=2),
        bytes(32),
    ):
        with pytest.raises(SealError):
            open_value(key=wrong, app_id=1, name="k", sealed=sealed)


@pytest.mark.parametrize("length", [0, 1, NONCE_SIZE, SEAL_OVERHEAD - 1])
def test_truncated_below_overhead_fails(length: int) -> None:
    sealed = seal(b"secret")
    with pytest.raises(SealError):
        open_value(key=KEY_1, app_id=1, name="k", sealed=sealed[:length])


def test_truncated_tail_fails() -> None:
    sealed = seal(b"a longer secret value")
    for cut in range(1, len(sealed) - SEAL_OVERHEAD + 1):
        with pytest.raises(SealError):
            open_value(key=KEY_1, app_id=1, name="k", sealed=sealed[:-cut])


def test_every_flipped_bit_fails() -> None:
    sealed = seal(b"secret!")
    for index in range(len(sealed)):
        for bit in (0x01, 0x80):
            tampered = bytearray(sealed)
            tampered[index] ^= bit
            with pytest.raises(SealError):
                open_value(key=KEY_1, app_id=1, name="k", sealed=bytes(tampered))


def test_appended_bytes_fail() -> None:
    sealed = seal(b"secret")
    with pytest.raises(SealError):
        open_value(key=KEY_1, app_id=1, name="k", sealed=sealed + b"\x00")


@pytest.mark.parametrize("length", [0, 8, 11, 13, 16, 24])
def test_nonce_length_checked(length: int) -> None:
    with pytest.raises(ValueError, match="nonce"):
        seal_value(key=KEY_1, app_id=1, name="k", value=b"v", nonce=bytes(length))


@pytest.mark.parametrize("length", [0, 31, 33])
def test_data_key_length_checked(length: int) -> None:
    with pytest.raises(ValueError):
        seal_value(key=bytes(length), app_id=1, name="k", value=b"v", nonce=NONCE)


def test_nonce_is_what_makes_two_seals_differ() -> None:
    a = seal_value(key=KEY_1, app_id=1, name="k", value=b"v", nonce=NONCE)
    b = seal_value(key=KEY_1, app_id=1, name="k", value=b"v", nonce=NONCE)
    c = seal_value(key=KEY_1, app_id=1, name="k", value=b"v", nonce=bytes(12))
    assert a == b  # deterministic given the nonce (the store injects a random one)
    assert a != c
    assert open_value(key=KEY_1, app_id=1, name="k", sealed=c) == b"v"


# --- the data key ---------------------------------------------------------------------------


def test_data_key_is_the_internal_kv_data_key() -> None:
    for app_id in (0, 1, 2, 2**64 - 1):
        key = data_key(master_secret=SECRET, app_id=app_id)
        assert len(key) == 32
        assert key == derive_internal_key(
            master_secret=SECRET, label="kv-data-key", fields=[app_id]
        )


def test_data_keys_differ_per_app_and_secret() -> None:
    keys = {data_key(master_secret=SECRET, app_id=app) for app in range(20)}
    keys |= {data_key(master_secret=OTHER_SECRET, app_id=app) for app in range(20)}
    assert len(keys) == 40


@pytest.mark.parametrize("app_id", [0, 1, 2, 42, 2**64 - 1])
def test_data_key_not_reachable_through_app_derive(app_id: int) -> None:
    key = data_key(master_secret=SECRET, app_id=app_id)
    paths = [
        "kv-data-key",
        DATA_KEY_LABEL,
        f"kv-data-key:{app_id}",
        "kv-data-key" + str(app_id),
        "nova-kms:internal:v1",
        "disk",
        "x",
    ]
    for path in paths:
        for context in (None, str(app_id), "kv-data-key"):
            for length in (32, 64):
                derived = derive_app_key(
                    master_secret=SECRET, app_id=app_id, path=path, context=context, length=length
                )
                assert key not in (derived[:32], derived[32:])


@given(
    app_id=st.integers(min_value=0, max_value=2**32),
    path=st.text(min_size=1, max_size=40),
    context=st.none() | st.text(max_size=20),
)
def test_data_key_never_equals_an_app_key(app_id: int, path: str, context: str | None) -> None:
    key = data_key(master_secret=SECRET, app_id=app_id)
    assert key != derive_app_key(master_secret=SECRET, app_id=app_id, path=path, context=context)
