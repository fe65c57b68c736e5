"""protocol/vectors/guardians.json (independent generator) through novakms.crypto."""

from __future__ import annotations

import hmac
from typing import Any

import pytest

from novakms.crypto import guardian_shares as gs
from novakms.crypto import shamir
from novakms.crypto.eth import wallet_from_private_key
from novakms.crypto.kdf import secret_fingerprint
from novakms.errors import GuardianShareError
from tests.harness.registry import load_vectors

V: dict[str, Any] = load_vectors("guardians.json")
MASTER = bytes.fromhex(V["master_secret"])
MEMBERS = V["set"]["guardians"]
SET = gs.GuardianSet(
    tuple(m["wallet"] for m in MEMBERS),
    tuple(bytes.fromhex(m["enc_public"]) for m in MEMBERS),
    V["set"]["threshold"],
    V["set"]["version"],
)


def same(a: bytes | None, b: bytes | None) -> bool:
    """Compare secrets without pytest printing them on failure."""
    if a is None or b is None:
        return a is b
    return hmac.compare_digest(a, b)


def test_guardian_keys() -> None:
    assert secret_fingerprint(MASTER) == V["fingerprint"]
    for member in MEMBERS:
        assert wallet_from_private_key(bytes.fromhex(member["wallet_key"])) == member["wallet"]
        private, public = gs.derive_enc_keypair(bytes.fromhex(member["enc_ikm"]))
        assert private.hex() == member["enc_private"] and public.hex() == member["enc_public"]
        assert gs.enc_public_key_of(private) == public


def test_seed_and_shares() -> None:
    seed = gs.share_seed(MASTER, SET.version, SET.wallets, SET.threshold)
    assert same(seed, bytes.fromhex(V["seed"]))
    shares = gs.make_shares(MASTER, SET)
    assert len(shares) == len(V["shares"])
    raw = shamir.split(MASTER, threshold=SET.threshold, count=len(MEMBERS), seed=seed)
    for share, bare, expected in zip(shares, raw, V["shares"], strict=True):
        assert share.x == bare.x == expected["x"]
        assert same(share.y, bytes.fromhex(expected["y"])) and same(bare.y, share.y)
        assert share.wallet == expected["wallet"]
        assert same(gs.encode_share(share), bytes.fromhex(expected["plaintext"]))
        assert gs.parse_share(bytes.fromhex(expected["plaintext"])) == share
        assert gs.hpke_info(share.wallet, SET.version).hex() == expected["hpke_info"]


def test_first_coefficient() -> None:
    # threshold 2: y(x) = secret + c_1 * x, so c_1 = y(1) - secret.
    shares = gs.make_shares(MASTER, SET)
    c1 = bytes(a ^ b for a, b in zip(shares[0].y, MASTER, strict=True))
    assert [same(c1, bytes.fromhex(c)) for c in V["coefficients"]] == [True]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_sealed_shares(index: int) -> None:
    expected = V["shares"][index]
    member = MEMBERS[index]
    share = gs.make_shares(MASTER, SET)[index]
    sealed = gs.seal_share(
        share, bytes.fromhex(member["enc_public"]), ikm=bytes.fromhex(expected["ephemeral_ikm"])
    )
    assert same(sealed, bytes.fromhex(expected["sealed"]))
    assert sealed[:32].hex() == expected["enc"]
    opened = gs.open_share(
        bytes.fromhex(expected["sealed"]),
        bytes.fromhex(member["enc_private"]),
        wallet=member["wallet"],
        set_version=SET.version,
    )
    assert opened == share


def test_forged_share() -> None:
    forged = V["forged"]
    share = gs.parse_share(bytes.fromhex(forged["plaintext"]))
    assert share.x == forged["x"] and same(share.y, bytes.fromhex(forged["y"]))
    opened = gs.open_share(
        bytes.fromhex(forged["sealed"]),
        bytes.fromhex(MEMBERS[1]["enc_private"]),
        wallet=MEMBERS[1]["wallet"],
        set_version=SET.version,
    )
    assert opened == share  # well formed and well sealed: only recovery can tell
    good = gs.make_shares(MASTER, SET)[0]
    wrong = shamir.combine([good.share, share.share])
    assert same(wrong, bytes.fromhex(forged["wrong_secret"]))
    assert secret_fingerprint(wrong) == forged["wrong_fingerprint"] != V["fingerprint"]


@pytest.mark.parametrize("case", V["recover"], ids=lambda c: c["name"])
def test_recover(case: dict[str, Any]) -> None:
    shares = [gs.parse_share(bytes.fromhex(p)) for p in case["plaintexts"]]
    result = gs.recover(
        shares, threshold=case["threshold"], pin_fingerprint=case["pin_fingerprint"]
    )
    expected = None if case["secret"] is None else bytes.fromhex(case["secret"])
    assert same(result, expected)


@pytest.mark.parametrize("case", V["bad_plaintexts"], ids=lambda c: c["name"])
def test_bad_plaintexts(case: dict[str, Any]) -> None:
    with pytest.raises(GuardianShareError) as info:
        gs.parse_share(bytes.fromhex(case["plaintext"]))
    assert info.value.reason == case["reason"], case["why"]


@pytest.mark.parametrize("case", V["bad_sealed"], ids=lambda c: c["name"])
def test_bad_sealed(case: dict[str, Any]) -> None:
    with pytest.raises(GuardianShareError) as info:
        gs.open_share(
            bytes.fromhex(case["sealed"]),
            bytes.fromhex(MEMBERS[case["guardian"]]["enc_private"]),
            wallet=case["wallet"],
            set_version=case["set_version"],
        )
    assert info.value.reason == case["reason"], case["why"]


def test_rfc9180_a21_through_pyhpke() -> None:
    h = {k: bytes.fromhex(v) for k, v in V["hpke_rfc9180_a21"].items()}
    assert gs.derive_enc_keypair(h["ikm_r"]) == (h["sk_r"], h["pk_r"])
    sealed = gs._hpke_seal(
        h["pk_r"], info=h["info"], aad=h["aad"], plaintext=h["plaintext"], ikm=h["ikm_e"]
    )
    assert sealed == h["enc"] + h["ciphertext"]
