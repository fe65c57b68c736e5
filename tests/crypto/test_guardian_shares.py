"""Guardian shares: the split of a set, the plaintext format, HPKE sealing and recovery."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from novakms.crypto import guardian_shares as gs
from novakms.crypto import shamir
from novakms.crypto.eth import wallet_from_private_key
from novakms.crypto.guardian_shares import (
    GuardianSet,
    GuardianShare,
    encode_share,
    make_shares,
    open_share,
    parse_share,
    recover,
    seal_share,
)
from novakms.crypto.kdf import derive_internal_key, secret_fingerprint
from novakms.errors import GuardianShareError
from novakms.wire import cbor

SECRET = hashlib.sha256(b"guardian test secret").digest()
FP = secret_fingerprint(SECRET)


def _key(label: str) -> bytes:
    return hashlib.sha256(f"guardian test key: {label}".encode()).digest()


WALLETS = tuple(wallet_from_private_key(_key(f"wallet {i}")) for i in range(5))
ENC = [gs.derive_enc_keypair(_key(f"enc {i}")) for i in range(5)]


def guardian_set(n: int = 3, k: int = 2, version: int = 1) -> GuardianSet:
    return GuardianSet(WALLETS[:n], tuple(pub for _, pub in ENC[:n]), k, version)


SET = guardian_set()
SHARES = make_shares(SECRET, SET)


def is_secret(value: bytes | None) -> bool:
    """Compare without letting pytest print the value (test output never shows a secret)."""
    return value is not None and hmac.compare_digest(value, SECRET)


# --- RFC 9180 through the wrapper ------------------------------------------------------------

# RFC 9180 Appendix A.2.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305, base
# mode, and its first encryption (sequence number 0).
A21 = {
    "ikmE": "909a9b35d3dc4713a5e72a4da274b55d3d3821a37e5d099e74a647db583a904b",
    "pkEm": "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a",
    "skEm": "f4ec9b33b792c372c1d2c2063507b684ef925b8c75a42dbcbf57d63ccd381600",
    "ikmR": "1ac01f181fdf9f352797655161c58b75c656a6cc2716dcb66372da835542e1df",
    "pkRm": "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a",
    "skRm": "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb",
    "info": "4f6465206f6e2061204772656369616e2055726e",
    "aad": "436f756e742d30",
    "pt": "4265617574792069732074727574682c20747275746820626561757479",
    "ct": "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db"
    "21993c62ce81883d2dd1b51a28",
}


def test_rfc9180_a21_derive_key_pair() -> None:
    assert gs.derive_enc_keypair(bytes.fromhex(A21["ikmE"])) == (
        bytes.fromhex(A21["skEm"]),
        bytes.fromhex(A21["pkEm"]),
    )
    assert gs.derive_enc_keypair(bytes.fromhex(A21["ikmR"])) == (
        bytes.fromhex(A21["skRm"]),
        bytes.fromhex(A21["pkRm"]),
    )
    assert gs.enc_public_key_of(bytes.fromhex(A21["skRm"])) == bytes.fromhex(A21["pkRm"])


def test_rfc9180_a21_seal_and_open() -> None:
    h = {k: bytes.fromhex(v) for k, v in A21.items()}
    sealed = gs._hpke_seal(
        h["pkRm"], info=h["info"], aad=h["aad"], plaintext=h["pt"], ikm=h["ikmE"]
    )
    assert sealed == h["pkEm"] + h["ct"]  # enc is the ephemeral public key
    assert gs._hpke_open(h["skRm"], info=h["info"], aad=h["aad"], sealed=sealed) == h["pt"]


# --- the split -------------------------------------------------------------------------------


def test_share_seed_is_the_documented_internal_key() -> None:
    expected = derive_internal_key(
        master_secret=SECRET, label="guardian-shares", fields=[1, 2, *WALLETS[:3]]
    )
    assert gs.share_seed(SECRET, 1, WALLETS[:3], 2) == expected


def test_share_seed_binds_version_threshold_and_wallet_order() -> None:
    base = gs.share_seed(SECRET, 1, WALLETS[:3], 2)
    assert gs.share_seed(SECRET, 2, WALLETS[:3], 2) != base
    assert gs.share_seed(SECRET, 1, WALLETS[:3], 3) != base
    assert gs.share_seed(SECRET, 1, (WALLETS[1], WALLETS[0], WALLETS[2]), 2) != base
    assert gs.share_seed(SECRET, 1, WALLETS[:4], 2) != base
    with pytest.raises(TypeError):
        gs.share_seed(SECRET, 1, WALLETS[0], 2)
    with pytest.raises(ValueError, match="lowercase"):
        gs.share_seed(SECRET, 1, [WALLETS[0].upper().replace("0X", "0x")], 1)


def test_make_shares_fields() -> None:
    assert [s.x for s in SHARES] == [1, 2, 3]
    assert [s.wallet for s in SHARES] == list(WALLETS[:3])
    for share in SHARES:
        assert (share.threshold, share.count, share.set_version) == (2, 3, 1)
        assert share.fingerprint == FP
    seed = gs.share_seed(SECRET, 1, WALLETS[:3], 2)
    assert [s.share for s in SHARES] == shamir.split(SECRET, threshold=2, count=3, seed=seed)


def test_make_shares_is_deterministic_and_ignores_enc_keys() -> None:
    assert make_shares(SECRET, SET) == SHARES
    rotated = GuardianSet(SET.wallets, (ENC[4][1], *SET.enc_public_keys[1:]), 2, 1)
    assert make_shares(SECRET, rotated) == SHARES


def test_every_threshold_subset_recombines() -> None:
    shares = make_shares(SECRET, guardian_set(5, 3))
    for subset in itertools.combinations(shares, 3):
        assert is_secret(shamir.combine([s.share for s in subset]))
    for pair in itertools.combinations(shares, 2):
        assert not is_secret(shamir.combine([s.share for s in pair]))


def test_another_set_version_is_another_split() -> None:
    other = make_shares(SECRET, guardian_set(version=2))
    assert all(a.y != b.y for a, b in zip(SHARES, other, strict=True))
    assert not is_secret(shamir.combine([SHARES[0].share, other[1].share]))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((WALLETS[:3], (b"\x09" * 32,) * 2, 2, 1), "one encryption key per wallet"),
        ((WALLETS[:2] + WALLETS[:1], (b"\x09" * 32,) * 3, 2, 1), "twice"),
        ((WALLETS[:3], (b"\x09" * 32,) * 3, 0, 1), "threshold"),
        ((WALLETS[:3], (b"\x09" * 32,) * 3, 4, 1), "threshold"),
        ((WALLETS[:3], (b"\x09" * 32,) * 3, 2, -1), "version"),
        ((WALLETS[:3], (b"\x09" * 32,) * 3, 2, 2**64), "version"),
        ((WALLETS[:3], (b"\x09" * 31,) * 3, 2, 1), "32 bytes"),
        ((("0xAB" + "00" * 19,), (b"\x09" * 32,), 1, 1), "lowercase"),
        (((), (), 1, 1), "1..255"),
    ],
)
def test_guardian_set_refuses(args: tuple[object, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GuardianSet(*args)  # type: ignore[arg-type]


def test_guardian_set_takes_lists() -> None:
    assert GuardianSet(list(SET.wallets), list(SET.enc_public_keys), 2, 1) == SET  # type: ignore[arg-type]


# --- the plaintext ---------------------------------------------------------------------------


def test_plaintext_is_the_documented_map() -> None:
    share = SHARES[1]
    data = encode_share(share)
    assert cbor.decode(data) == {
        "v": 1,
        "x": 2,
        "y": share.y,
        "k": 2,
        "n": 3,
        "set": 1,
        "fp": FP,
        "wallet": WALLETS[1],
    }
    assert parse_share(data) == share


def _plain(**changes: object) -> bytes:
    item: dict[str, object] = cbor.decode(encode_share(SHARES[0]))
    for key, value in changes.items():
        if value is _DROP:
            del item[key]
        else:
            item[key] = value
    return cbor.encode(item)


_DROP = object()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff", "not_cbor"),
        (b"", "not_cbor"),
        (encode_share(SHARES[0]) + b"\x00", "not_cbor"),
        (cbor.encode([1, 2]), "not_a_map"),
        (_plain(extra=1), "keys"),
        (_plain(fp=_DROP), "keys"),
        (_plain(v=2), "version"),
        (_plain(v=True), "version"),
        (_plain(x=0), "x"),
        (_plain(x=4), "x"),
        (_plain(x=True), "x"),
        (_plain(y=bytes(31)), "y"),
        (_plain(y="00" * 32), "y"),
        (_plain(k=0), "threshold"),
        (_plain(k=4), "threshold"),
        (_plain(n=0), "count"),
        (_plain(n=256), "count"),
        (_plain(set=-1), "set_version"),
        (_plain(set=None), "set_version"),
        (_plain(fp=FP.upper().replace("0X", "0x")), "fingerprint"),
        (_plain(fp=FP[:-1]), "fingerprint"),
        (_plain(wallet=WALLETS[0][:-1]), "wallet"),
        (_plain(wallet=b"\x00" * 20), "wallet"),
        (bytes(gs.MAX_SHARE_SIZE + 1), "too_large"),
        # x = 1 written with a one-byte argument (0x18 0x01): valid CBOR, not deterministic.
        (encode_share(SHARES[0]).replace(b"\x61x\x01", b"\x61x\x18\x01"), "not_canonical"),
        (b"\xa1\x61v\xc1\x01", "not_cbor"),  # {"v": tag 1 (1)}: tags are outside the subset
    ],
)
def test_parse_refuses(data: bytes, reason: str) -> None:
    with pytest.raises(GuardianShareError) as info:
        parse_share(data)
    assert info.value.reason == reason
    assert SHARES[0].y.hex() not in str(info.value)


def test_parse_refuses_keys_out_of_order() -> None:
    item = cbor.decode(encode_share(SHARES[0]))
    body = b"".join(cbor.encode(k) + cbor.encode(item[k]) for k in sorted(item, reverse=True))
    with pytest.raises(GuardianShareError) as info:
        parse_share(bytes([0xA8]) + body)
    assert info.value.reason == "not_canonical"


def test_share_hides_y() -> None:
    text = repr(SHARES[0]) + str(SHARES[0])
    assert SHARES[0].y.hex() not in text and "y=" not in text and WALLETS[0] in text
    with pytest.raises(TypeError):
        pickle.dumps(SHARES[0])


# --- sealing ---------------------------------------------------------------------------------


def test_seal_and_open_round_trip() -> None:
    for i, share in enumerate(SHARES):
        sealed = seal_share(share, ENC[i][1])
        assert len(sealed) == 32 + len(encode_share(share)) + 16
        assert open_share(sealed, ENC[i][0], wallet=WALLETS[i], set_version=1) == share


def test_seal_with_ikm_is_deterministic() -> None:
    ikm = _key("ephemeral")
    one = seal_share(SHARES[0], ENC[0][1], ikm=ikm)
    assert one == seal_share(SHARES[0], ENC[0][1], ikm=ikm)
    assert one[:32] == gs.derive_enc_keypair(ikm)[1]
    assert one != seal_share(SHARES[0], ENC[0][1], ikm=_key("other ephemeral"))
    with pytest.raises(ValueError, match="ikm"):
        seal_share(SHARES[0], ENC[0][1], ikm=bytes(31))


def test_seal_without_ikm_is_randomised() -> None:
    one, two = seal_share(SHARES[0], ENC[0][1]), seal_share(SHARES[0], ENC[0][1])
    assert one != two and one[:32] != two[:32]
    for sealed in (one, two):
        assert open_share(sealed, ENC[0][0], wallet=WALLETS[0], set_version=1) == SHARES[0]


def test_hpke_info_layout() -> None:
    info = gs.hpke_info(WALLETS[0], 258)
    assert info == b"novakms/1 guardian share" + bytes.fromhex(WALLETS[0][2:]) + bytes(
        [0, 0, 0, 0, 0, 0, 1, 2]
    )
    assert len(info) == 52


def _reason(call: object) -> str:
    with pytest.raises(GuardianShareError) as info:
        call()  # type: ignore[operator]
    return info.value.reason


def test_open_refuses_other_key_wallet_set_or_tampering() -> None:
    sealed = seal_share(SHARES[0], ENC[0][1])
    assert _reason(lambda: open_share(sealed, ENC[1][0], wallet=WALLETS[0], set_version=1)) == (
        "decrypt"
    )
    assert _reason(lambda: open_share(sealed, ENC[0][0], wallet=WALLETS[1], set_version=1)) == (
        "decrypt"
    )
    assert _reason(lambda: open_share(sealed, ENC[0][0], wallet=WALLETS[0], set_version=2)) == (
        "decrypt"
    )
    for offset in (0, 31, 32, len(sealed) - 1):
        flipped = bytearray(sealed)
        flipped[offset] ^= 0x01
        reason = _reason(
            lambda f=bytes(flipped): open_share(f, ENC[0][0], wallet=WALLETS[0], set_version=1)
        )
        assert reason in {"decrypt", "bad_key"}
    assert _reason(
        lambda: open_share(sealed[:47], ENC[0][0], wallet=WALLETS[0], set_version=1)
    ) == ("truncated")
    big = sealed + bytes(gs.MAX_SEALED_SIZE)
    assert _reason(lambda: open_share(big, ENC[0][0], wallet=WALLETS[0], set_version=1)) == (
        "too_large"
    )


def test_open_refuses_a_low_order_enc() -> None:
    sealed = bytes(32) + seal_share(SHARES[0], ENC[0][1])[32:]
    assert _reason(lambda: open_share(sealed, ENC[0][0], wallet=WALLETS[0], set_version=1)) == (
        "bad_key"
    )


def test_seal_refuses_unusable_public_keys() -> None:
    assert _reason(lambda: seal_share(SHARES[0], bytes(32))) == "bad_key"
    assert _reason(lambda: seal_share(SHARES[0], bytes(31))) == "bad_key"


def test_open_checks_the_plaintext_names_the_guardian_and_set() -> None:
    """A sealer that binds the info of one guardian but names another in the plaintext."""
    mismatched = gs._hpke_seal(
        ENC[0][1],
        info=gs.hpke_info(WALLETS[0], 1),
        aad=b"",
        plaintext=encode_share(SHARES[1]),
        ikm=None,
    )
    assert _reason(lambda: open_share(mismatched, ENC[0][0], wallet=WALLETS[0], set_version=1)) == (
        "wrong_wallet"
    )
    other_set = make_shares(SECRET, guardian_set(version=7))[0]
    mismatched = gs._hpke_seal(
        ENC[0][1], info=gs.hpke_info(WALLETS[0], 1), aad=b"", plaintext=encode_share(other_set),
        ikm=None,
    )  # fmt: skip
    assert _reason(lambda: open_share(mismatched, ENC[0][0], wallet=WALLETS[0], set_version=1)) == (
        "wrong_set"
    )


def test_generated_keypairs() -> None:
    private, public = gs.generate_enc_keypair()
    assert len(private) == len(public) == 32
    assert gs.enc_public_key_of(private) == public
    assert gs.generate_enc_keypair()[0] != private
    sealed = seal_share(SHARES[0], public)
    assert open_share(sealed, private, wallet=WALLETS[0], set_version=1) == SHARES[0]


# --- recovery --------------------------------------------------------------------------------


def forge(share: GuardianShare, flip: int = 1, *, y: bytes | None = None) -> GuardianShare:
    """The share with byte 0 of y flipped, or with another y altogether."""
    if y is None:
        changed = bytearray(share.y)
        changed[0] ^= flip
        y = bytes(changed)
    return GuardianShare(
        x=share.x,
        y=y,
        threshold=share.threshold,
        count=share.count,
        set_version=share.set_version,
        fingerprint=share.fingerprint,
        wallet=share.wallet,
    )


def test_recover_from_any_k() -> None:
    for subset in itertools.combinations(SHARES, 2):
        assert is_secret(recover(subset, threshold=2, pin_fingerprint=FP))
    assert is_secret(recover(SHARES, threshold=2, pin_fingerprint=FP.upper().replace("0X", "0x")))


def test_recover_needs_k_shares() -> None:
    assert recover(SHARES[:1], threshold=2, pin_fingerprint=FP) is None
    assert recover([], threshold=2, pin_fingerprint=FP) is None
    assert recover([SHARES[0], SHARES[0]], threshold=2, pin_fingerprint=FP) is None


def test_one_forged_share_plus_two_good_still_recovers() -> None:
    forged = forge(SHARES[1])
    for order in itertools.permutations([forged, SHARES[0], SHARES[2]]):
        assert is_secret(recover(order, threshold=2, pin_fingerprint=FP))
    assert recover([forged, SHARES[0]], threshold=2, pin_fingerprint=FP) is None


def test_a_forged_share_with_an_honest_x_does_not_block() -> None:
    """The forger claims the x of an honest guardian and arrives first."""
    forged = forge(SHARES[0])
    assert is_secret(recover([forged, SHARES[0], SHARES[1]], threshold=2, pin_fingerprint=FP))


def test_recover_ignores_shares_of_another_threshold_pin_or_split() -> None:
    other_pin = make_shares(hashlib.sha256(b"another").digest(), SET)
    k3 = make_shares(SECRET, guardian_set(3, 3))
    v2 = make_shares(SECRET, guardian_set(version=2))
    mixed = [other_pin[0], k3[1], v2[1], SHARES[0]]
    assert recover(mixed, threshold=2, pin_fingerprint=FP) is None  # v2[1] and SHARES[0] differ
    assert is_secret(recover([*mixed, v2[2]], threshold=2, pin_fingerprint=FP))
    assert is_secret(recover(k3, threshold=3, pin_fingerprint=FP))
    assert recover(k3, threshold=2, pin_fingerprint=FP) is None


def test_recover_never_returns_a_wrong_secret_even_for_a_forged_fingerprint() -> None:
    """Shares of another secret relabelled with the pinned fingerprint combine, but fail it."""
    other = make_shares(hashlib.sha256(b"another").digest(), SET)
    relabelled = [
        GuardianShare(
            x=s.x, y=s.y, threshold=2, count=3, set_version=1, fingerprint=FP, wallet=s.wallet
        )
        for s in other
    ]
    assert recover(relabelled, threshold=2, pin_fingerprint=FP) is None
    assert is_secret(recover([*relabelled, *SHARES], threshold=2, pin_fingerprint=FP))


@given(data=st.data())
def test_forgeries_never_block_up_to_sixteen_shares(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 5), label="n")
    k = data.draw(st.integers(1, n), label="k")
    shares = make_shares(SECRET, guardian_set(n, k))
    good = data.draw(st.lists(st.sampled_from(shares), min_size=k, unique=True), label="good")
    room = 16 - len(good)
    forged = [
        forge(data.draw(st.sampled_from(shares)), y=data.draw(st.binary(min_size=32, max_size=32)))
        for _ in range(data.draw(st.integers(0, room), label="forged"))
    ]
    forged = [f for f in forged if f not in shares]  # a drawn y may be the genuine one
    arrival = data.draw(st.permutations(good + forged), label="arrival")
    assert is_secret(recover(arrival, threshold=k, pin_fingerprint=FP))
    # Never a wrong secret. (Forgeries that happen to lie on a polynomial through the secret
    # would give the right one; with random y that has probability about 2^-256.)
    assert recover(forged + good[: k - 1], threshold=k, pin_fingerprint=FP) is None


def test_the_search_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """k = 8 with 8 genuine shares arriving after 30 forgeries: the first 16 candidates only."""
    big = GuardianSet(
        tuple(wallet_from_private_key(_key(f"big {i}")) for i in range(16)),
        (ENC[0][1],) * 16,
        8,
        1,
    )
    shares = make_shares(SECRET, big)
    # Independent random-looking y: no combination of forgeries can hit the secret.
    forged = [
        forge(s, y=hashlib.sha256(f"forged {f} {s.x}".encode()).digest())
        for f in (1, 2)
        for s in shares[:15]
    ]
    calls = 0
    real = shamir.combine

    def counting(chosen: list[shamir.Share]) -> bytes:
        nonlocal calls
        calls += 1
        return real(chosen)

    monkeypatch.setattr(shamir, "combine", counting)
    assert recover(forged + shares[:8], threshold=8, pin_fingerprint=FP) is None
    assert 0 < calls <= gs.MAX_COMBINATIONS
    # Fewer forgeries: the genuine ones are among the first 16 candidates and win.
    calls = 0
    assert is_secret(recover(forged[:8] + shares[:8], threshold=8, pin_fingerprint=FP))
    assert 0 < calls <= gs.MAX_COMBINATIONS


def test_first_arrived_combination_is_tried_first(monkeypatch: pytest.MonkeyPatch) -> None:
    tried: list[list[int]] = []
    real = shamir.combine

    def recording(chosen: list[shamir.Share]) -> bytes:
        tried.append([s.x for s in chosen])
        return real(chosen)

    monkeypatch.setattr(shamir, "combine", recording)
    shares = make_shares(SECRET, guardian_set(5, 2))
    assert is_secret(recover([shares[3], shares[1], shares[4]], threshold=2, pin_fingerprint=FP))
    assert tried == [[4, 2]]
    tried.clear()
    forged = forge(shares[3])
    assert is_secret(recover([forged, shares[1], shares[4]], threshold=2, pin_fingerprint=FP))
    assert tried == [[4, 2], [4, 5], [2, 5]]  # colex: each new share with the earlier ones


def test_recover_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="pin"):
        recover(SHARES, threshold=2, pin_fingerprint="0x1234")
    with pytest.raises(ValueError, match="threshold"):
        recover(SHARES, threshold=0, pin_fingerprint=FP)
    with pytest.raises(TypeError):
        recover([SHARES[0].share], threshold=2, pin_fingerprint=FP)  # type: ignore[list-item]


def test_the_chain_guardian_set_splits_like_the_share_set() -> None:
    from novakms.auth.guardians import GuardianSet as ChainGuardianSet

    chain_set = ChainGuardianSet(
        wallets=SET.wallets, enc_keys=SET.enc_public_keys, threshold=SET.threshold, version=1
    )
    assert SET.version == 1
    assert make_shares(bytes(range(32)), chain_set) == make_shares(bytes(range(32)), SET)
