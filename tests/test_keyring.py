"""The keyring and the store gate alone: who changes what, through which method."""

from __future__ import annotations

import pytest

from novakms.config import Limits
from novakms.crypto.kdf import secret_fingerprint
from novakms.errors import Unavailable
from novakms.server.keyring import Keyring
from novakms.server.store_gate import StoreGate

SECRET = bytes(range(32))
WALLET = "0x" + "11" * 20


def state_of(gate: StoreGate) -> str:
    """A fresh read of the gate's state (mypy would keep a narrowing across calls)."""
    return gate.catch_up_state


def test_a_secret_is_installed_once_and_opens_the_store() -> None:
    keyring = Keyring(require_pin=False, share_ttl=60)
    gate = StoreGate(wallet=WALLET, limits=Limits(), keyring=keyring)
    with pytest.raises(Unavailable) as info:
        gate.require_store()
    assert info.value.details["reason"] == "not_ready"
    keyring.install_secret(SECRET, syncing=True)
    assert gate.store is not None and gate.syncing and state_of(gate) == "syncing"
    with pytest.raises(Unavailable) as info:
        gate.serving_store()
    assert info.value.details["reason"] == "syncing"
    gate.finish_catch_up("no_caught_up_peer")
    assert gate.serving_store() is gate.store and state_of(gate) == "degraded"
    gate.confirm_caught_up()
    assert state_of(gate) == "serving"
    with pytest.raises(ValueError):
        keyring.install_secret(SECRET)
    with pytest.raises(ValueError):
        Keyring(require_pin=False, share_ttl=60).install_secret(b"short")


def test_the_pin_gates_serving_and_the_bootstrap_reason_is_reported() -> None:
    keyring = Keyring(require_pin=True, share_ttl=60)
    keyring.set_not_ready(Unavailable("two secrets", reason="split_brain"))
    with pytest.raises(Unavailable) as info:
        keyring.require_secret()
    assert info.value.details["reason"] == "split_brain"
    keyring.install_secret(SECRET)
    with pytest.raises(Unavailable) as info:
        keyring.require_pinned()
    assert info.value.details["reason"] == "unpinned" and not keyring.serving_apps
    assert keyring.check_pin(secret_fingerprint(SECRET).upper().replace("0X", "0x")) is False
    assert keyring.serving_apps and keyring.pin == secret_fingerprint(SECRET)
    assert keyring.check_pin("0x" + "00" * 32) is True  # the verdict changed
    assert keyring.pin_mismatch and not keyring.serving_apps
    with pytest.raises(Unavailable) as info:
        keyring.data_key(1)
    assert info.value.details["reason"] == "secret_mismatch"
    assert keyring.check_pin(None) is True and keyring.serving_apps is False  # unpinned again
    assert "initialized=True" in repr(keyring) and SECRET.hex() not in repr(keyring)
