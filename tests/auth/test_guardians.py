"""The guardian set value: KMSRegistry's rules, parsing, and how the cache follows its events."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from novakms.auth.cache import AuthCache, ChainEvent, guardians_from_event
from novakms.auth.guardians import (
    ENC_KEY_SIZE,
    MAX_GUARDIANS,
    GuardianSet,
    guardian_set,
    no_guardians,
    parse_enc_key,
)
from novakms.errors import GuardianSetError

W1, W2, W3 = ("0x" + c * 40 for c in "abc")
K1, K2, K3 = (bytes([i]) * 32 for i in (1, 2, 3))
ZERO = "0x" + "00" * 20


def make(**overrides: Any) -> GuardianSet:
    values: dict[str, Any] = {
        "wallets": (W1, W2, W3),
        "enc_keys": (K1, K2, K3),
        "threshold": 2,
        "version": 1,
    }
    values.update(overrides)
    return GuardianSet(**values)


def test_a_valid_set_and_its_views() -> None:
    s = make()
    assert not s.empty
    assert s.is_guardian(W2) and s.is_guardian(W2.upper().replace("0X", "0x"))
    assert not s.is_guardian(ZERO) and not s.is_guardian("garbage")
    assert s.enc_key(W3) == K3 and s.enc_key(ZERO) is None
    assert s.to_json() == {
        "version": 1,
        "threshold": 2,
        "wallets": [W1, W2, W3],
        "enc_keys": ["0x" + k.hex() for k in (K1, K2, K3)],
    }
    assert make(threshold=1).threshold == 1 and make(threshold=3).threshold == 3


def test_the_empty_set() -> None:
    assert no_guardians() == GuardianSet(wallets=(), enc_keys=(), threshold=0, version=0)
    cleared = no_guardians(7)
    assert cleared.empty and cleared.version == 7 and not cleared.is_guardian(W1)
    assert cleared.to_json() == {"version": 7, "threshold": 0, "wallets": [], "enc_keys": []}


def test_size_bounds() -> None:
    wallets = tuple("0x" + f"{i + 1:040x}" for i in range(MAX_GUARDIANS + 1))
    keys = tuple(bytes([i + 1]) * ENC_KEY_SIZE for i in range(MAX_GUARDIANS + 1))
    most = make(wallets=wallets[:-1], enc_keys=keys[:-1], threshold=MAX_GUARDIANS)
    assert len(most.wallets) == 16
    with pytest.raises(GuardianSetError, match="at most 16"):
        make(wallets=wallets, enc_keys=keys, threshold=1)
    assert make(wallets=(W1,), enc_keys=(K1,), threshold=1).wallets == (W1,)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"enc_keys": (K1, K2)}, "3 wallets but 2 enc keys"),
        ({"wallets": (W1, W2)}, "2 wallets but 3 enc keys"),
        ({"threshold": 0}, "outside 1..3"),
        ({"threshold": 4}, "outside 1..3"),
        ({"threshold": -1}, "outside 1..3"),
        ({"threshold": True}, "not an integer"),
        ({"threshold": 2.0}, "not an integer"),
        ({"wallets": (W1, ZERO, W3)}, "wallet 1 is the zero address"),
        ({"wallets": (W1, W2, W1)}, "wallet 2: duplicate guardian"),
        ({"wallets": (W1, W2, W3.upper())}, "not a lowercase 0x address"),
        ({"wallets": (W1, W2, "0x1234")}, "not a lowercase 0x address"),
        ({"enc_keys": (K1, bytes(32), K3)}, "enc key 1 is all zero"),
        ({"enc_keys": (K1, K2, K1)}, "enc key 2: the same key as another"),
        ({"enc_keys": (K1, K2, K3[:31])}, "enc key 2: expected 32 bytes"),
        ({"enc_keys": (K1, K2, K3 + b"\x00")}, "enc key 2: expected 32 bytes"),
        ({"enc_keys": (K1, K2, bytearray(K3))}, "enc key 2: expected 32 bytes"),
        ({"version": 0}, "version 1 or more"),
        ({"version": -1}, "not a uint256"),
        ({"version": 2**256}, "not a uint256"),
        ({"version": False}, "not a uint256"),
        ({"wallets": [W1, W2, W3]}, "must be tuples"),
        ({"wallets": (), "enc_keys": (), "threshold": 1}, "empty guardian set has threshold 0"),
        ({"wallets": (), "enc_keys": (K1,), "threshold": 0}, "0 wallets but 1 enc keys"),
    ],
)
def test_rules_broken(overrides: dict[str, Any], needle: str) -> None:
    with pytest.raises(GuardianSetError, match=needle):
        make(**overrides)


def test_guardian_set_normalizes_decoded_values() -> None:
    checksummed = "0x" + "AbCd" * 10
    s = guardian_set(
        wallets=[checksummed, W2], enc_keys=[bytearray(K1), K2], threshold=2, version=5
    )
    assert s.wallets == ("0x" + "abcd" * 10, W2) and s.enc_keys == (K1, K2)
    assert all(type(k) is bytes for k in s.enc_keys)
    empty: dict[str, Any] = {"wallets": [], "enc_keys": [], "threshold": 0, "version": 3}
    assert guardian_set(**empty) == no_guardians(3)  # what guardians() returns when cleared
    with pytest.raises(GuardianSetError, match="0 guardians: at least 1"):
        guardian_set(**empty, allow_empty=False)  # what setGuardians refuses
    cases: list[tuple[dict[str, Any], str]] = [
        ({"wallets": [b"\x01" * 20]}, "wallet 0: .* is not an address"),
        ({"wallets": ["0x12"]}, "wallet 0"),
        ({"enc_keys": ["0x" + "01" * 32]}, "enc key 0: expected bytes, got str"),
        ({"threshold": "2"}, "must be integers"),
        ({"version": None}, "must be integers"),
    ]
    for bad, needle in cases:
        args: dict[str, Any] = {"wallets": [W1], "enc_keys": [K1], "threshold": 1, "version": 1}
        args.update(bad)
        with pytest.raises(GuardianSetError, match=needle):
            guardian_set(**args)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("0x" + "ab" * 32, True),
        ("0X" + "AB" * 32, True),
        ("ab" * 32, False),
        ("0x" + "ab" * 31, False),
        ("0x" + "ab" * 33, False),
        ("0x" + "zz" * 32, False),
        (" 0x" + "ab" * 32, False),
        (b"\xab" * 32, False),
        (None, False),
    ],
)
def test_parse_enc_key(text: object, ok: bool) -> None:
    if ok:
        assert parse_enc_key(text) == b"\xab" * 32
    else:
        with pytest.raises(GuardianSetError, match="not an enc key"):
            parse_enc_key(text)


# A reference for the rules, written independently of the implementation (as the forge fuzz
# test does for the contract): valid exactly when the contract would accept the call.
def reference_valid(wallets: list[str], keys: list[bytes], threshold: int) -> bool:
    n = len(wallets)
    return (
        len(keys) == n
        and 1 <= n <= MAX_GUARDIANS
        and 1 <= threshold <= n
        and ZERO not in wallets
        and len(set(wallets)) == n
        and bytes(32) not in keys
        and len(set(keys)) == n  # KMSRegistry: DuplicateGuardianEncKey
    )


_POOL = [ZERO, W1, W2, W3] + ["0x" + f"{i:040x}" for i in range(0x100, 0x114)]


@given(
    wallets=st.lists(st.sampled_from(_POOL), max_size=MAX_GUARDIANS + 2),
    keys=st.lists(st.sampled_from([bytes(32), K1, K2, K3]), max_size=MAX_GUARDIANS + 2),
    threshold=st.integers(-1, MAX_GUARDIANS + 2),
)
@example(wallets=[W1, W2], keys=[K1, K1], threshold=1)  # one key for two guardians: refused
def test_rules_match_the_reference(wallets: list[str], keys: list[bytes], threshold: int) -> None:
    try:
        s = guardian_set(wallets=wallets, enc_keys=keys, threshold=threshold, version=3)
    except GuardianSetError:
        assert not reference_valid(wallets, keys, threshold)
        return
    if s.empty:  # a valid *value* (no guardians), never a valid setGuardians call
        assert threshold == 0 and not wallets and not keys
    else:
        assert reference_valid(wallets, keys, threshold)
        assert list(s.wallets) == wallets and list(s.enc_keys) == keys


# --- events and the cache ------------------------------------------------------------------


def set_event(version: int, block: int = 1, **overrides: Any) -> ChainEvent:
    args: dict[str, Any] = {
        "version": version,
        "wallets": [W1.upper().replace("0X", "0x"), W2],
        "encKeys": [K1, K2],
        "threshold": 2,
    }
    args.update(overrides)
    return ChainEvent(name="GuardiansSet", args=args, block=block)


def cleared_event(version: int, block: int = 1) -> ChainEvent:
    return ChainEvent(name="GuardiansCleared", args={"version": version}, block=block)


def test_events_carry_the_whole_set() -> None:
    assert guardians_from_event(set_event(4)) == GuardianSet(
        wallets=(W1, W2), enc_keys=(K1, K2), threshold=2, version=4
    )
    assert guardians_from_event(cleared_event(5)) == no_guardians(5)


@pytest.mark.parametrize(
    "event",
    [
        set_event(4, threshold=3),
        set_event(4, encKeys=[K1]),
        set_event(4, wallets=[W1, W1]),
        set_event(4, wallets=[], encKeys=[], threshold=0),
        set_event(0),
        set_event(4, wallets="0x"),
        ChainEvent(name="GuardiansSet", args={"version": 1}, block=1),
        cleared_event(0),
        ChainEvent(name="GuardiansCleared", args={}, block=1),
        ChainEvent(name="GuardiansCleared", args={"version": True}, block=1),
    ],
)
def test_malformed_events_are_refused(event: ChainEvent) -> None:
    with pytest.raises(GuardianSetError):
        guardians_from_event(event)


def test_cache_follows_guardian_events_and_never_goes_back() -> None:
    cache = AuthCache(ttl=10, negative_ttl=1)
    assert cache.guardians is None
    assert cache.apply(set_event(2))  # not read yet: the event's set is the whole truth
    assert cache.guardians is not None and cache.guardians.version == 2
    assert not cache.apply(set_event(1))  # older than what is cached
    assert not cache.apply(set_event(2, threshold=1))  # same version: already known
    assert cache.guardians.threshold == 2
    assert cache.apply(cleared_event(3)) and cache.guardians == no_guardians(3)
    assert cache.apply(set_event(4, threshold=1)) and cache.guardians.threshold == 1
    # a read at a later block than the events still to be applied
    assert cache.put_guardians(no_guardians(9))
    assert not cache.apply(set_event(5)) and cache.guardians == no_guardians(9)
    with pytest.raises(GuardianSetError):
        cache.apply(set_event(10, threshold=0))
    assert cache.guardians == no_guardians(9)
