"""Tests for novakms.crypto.signer."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from novakms.crypto.eth import SECP256K1_N, recover_wallet, sign_text
from novakms.crypto.signer import LocalSigner, Signer, SyncSigner

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
KEY_WALLET = "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23"


def test_protocols() -> None:
    signer = LocalSigner(KEY)
    assert isinstance(signer, Signer)
    assert isinstance(signer, SyncSigner)
    assert signer.wallet == KEY_WALLET


async def test_sign_text_async() -> None:
    signer: Signer = LocalSigner(KEY)
    sig = await signer.sign_text("NovaKMS:Response:abc:" + KEY_WALLET)
    assert recover_wallet(text="NovaKMS:Response:abc:" + KEY_WALLET, signature=sig) == KEY_WALLET
    assert sig == sign_text(private_key=KEY, text="NovaKMS:Response:abc:" + KEY_WALLET)


def test_sign_text_sync_matches_eth_account() -> None:
    signer: SyncSigner = LocalSigner(KEY)
    for text in ("", "hello", "ünïcødé 🔑", "a" * 5000):
        sig = signer.sign_text_sync(text)
        expected = Account.sign_message(encode_defunct(text=text), private_key=KEY).signature
        assert sig == bytes(expected)


def test_repr_shows_only_wallet() -> None:
    signer = LocalSigner(KEY)
    for rendered in (repr(signer), str(signer), f"{signer}"):
        assert KEY_WALLET in rendered
        assert KEY.hex() not in rendered
        assert KEY.hex().upper() not in rendered
    assert repr(signer) == f"LocalSigner(wallet={KEY_WALLET!r})"


def test_cannot_pickle_or_copy() -> None:
    signer = LocalSigner(KEY)
    with pytest.raises(TypeError):
        pickle.dumps(signer)
    with pytest.raises(TypeError):
        copy.copy(signer)
    assert not hasattr(signer, "__dict__")


@pytest.mark.parametrize("key", [bytes(32), SECP256K1_N.to_bytes(32, "big"), KEY[:31], b""])
def test_invalid_key(key: bytes) -> None:
    with pytest.raises(ValueError, match="private key") as info:
        LocalSigner(key)
    if key:
        assert key.hex() not in str(info.value)


def test_from_file(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_text("0x" + KEY.hex() + "\n")
    signer = LocalSigner.from_file(path)
    assert signer.wallet == KEY_WALLET
    assert LocalSigner.from_file(str(path)).wallet == KEY_WALLET


@pytest.mark.parametrize(
    "content",
    [
        b"0x" + KEY.hex().encode()[:-2],
        b"0x" + bytes(32).hex().encode(),
        KEY.hex().encode(),
        b"0x" + KEY.hex().encode()[:-1] + b"\xff",
        b"\xff\xfe" + KEY.hex().encode(),
        b"0x" + KEY.hex().encode() + b" " * 5000,
        b"",
    ],
)
def test_from_file_rejects_without_echo(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="private key file") as info:
        LocalSigner.from_file(path)
    message = str(info.value)
    assert str(path) in message
    assert KEY.hex()[:16] not in message
    assert "\\xff" not in message
    assert "0xff" not in message
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_from_file_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.key"):
        LocalSigner.from_file(tmp_path / "missing.key")
