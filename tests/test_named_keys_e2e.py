"""Named app keys against a real server: keys.public, sign, encrypt / decrypt, keys.attest.

Every signature is checked by an implementation other than the server's (eth-account and
eth-keys for secp256k1, cryptography for ed25519 and P-256).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_keys.backends.native.main import NativeECCBackend
from eth_keys.datatypes import Signature
from prometheus_client.parser import text_string_to_metric_families

from novakms.client.aio import Client
from novakms.config import Limits
from novakms.crypto.named_keys import derive_named_key
from novakms.errors import BadRequest, NovaKMSError, RateLimited, TooLarge, Unauthenticated
from tests.harness.registry import MASTER_SECRET, Wallets

TYPED_DATA: dict[str, Any] = {
    "types": {
        "EIP712Domain": [
            {"name": "name", "type": "string"},
            {"name": "chainId", "type": "uint256"},
        ],
        "Mail": [{"name": "to", "type": "address"}, {"name": "contents", "type": "string"}],
    },
    "primaryType": "Mail",
    "domain": {"name": "novakms test", "chainId": 31337},
    "message": {"to": "0x" + "11" * 20, "contents": "hello"},
}


def recover_digest(digest: bytes, signature: bytes) -> str:
    """The address that signed ``digest``, by eth-keys' pure-Python backend (not libsecp256k1)."""
    vrs = (signature[64] - 27, int.from_bytes(signature[:32]), int.from_bytes(signature[32:64]))
    sig = Signature(vrs=vrs, backend=NativeECCBackend())
    return sig.recover_public_key_from_msg_hash(digest).to_checksum_address().lower()


async def test_secp256k1_signatures_recover_to_the_address_keys_public_gives(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        public = await kms.keys_public("main", "secp256k1")
        assert public.app_id == 1 and public.address is not None
        assert len(public.public_key) == 65 and public.public_key[0] == 4

        text = "pay 1 ETH to bob"
        signed = await kms.sign("main", "secp256k1", eip191=text)
        recovered = Account.recover_message(encode_defunct(text=text), signature=signed.signature)
        assert recovered.lower() == public.address
        assert signed.key == public

        digest = bytes(range(32))
        raw = await kms.sign("main", "secp256k1", digest=digest)
        assert raw.digest == digest and recover_digest(digest, raw.signature) == public.address
        s = int.from_bytes(raw.signature[32:64])
        assert s <= 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0  # low-s
        assert (await kms.sign("main", "secp256k1", digest=digest)).signature == raw.signature

        typed = encode_typed_data(full_message=TYPED_DATA)
        eip712 = await kms.sign("main", "secp256k1", eip712=(typed.header, typed.body))
        assert Account.recover_message(typed, signature=eip712.signature).lower() == public.address


async def test_ed25519_and_p256_signatures_verify_with_cryptography(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server()
    message = b"a message of any bytes \x00\xff"
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        ed = await kms.sign("main", "ed25519", message=message)
        Ed25519PublicKey.from_public_bytes(ed.key.public_key).verify(ed.signature, message)
        assert len(ed.signature) == 64 and ed.key.address is None

        p256 = await kms.sign("main", "p256", message=message)
        der = await kms.sign("main", "p256", message=message, der=True)
        point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256.key.public_key)
        ecdsa = ec.ECDSA(hashes.SHA256())
        point.verify(der.signature, message, ecdsa)
        r, s = int.from_bytes(p256.signature[:32]), int.from_bytes(p256.signature[32:])
        point.verify(encode_dss_signature(r, s), message, ecdsa)
        assert (await kms.sign("main", "p256", message=message)).signature == p256.signature


async def test_keys_are_per_app_and_per_name_and_never_reachable_through_derive(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server()
    async with (
        await Client.connect(srv.tcp, signer=wallets.app1) as one,
        await Client.connect(srv.tcp, signer=wallets.app2) as two,
    ):
        for alg in ("secp256k1", "ed25519", "p256"):
            mine = await one.keys_public("main", alg)
            assert mine.public_key == (await one.keys_public("main", alg)).public_key
            assert mine.public_key != (await two.keys_public("main", alg)).public_key
            assert mine.public_key != (await one.keys_public("other", alg)).public_key
        # derive answers app-space keys only: none of its outputs is a named key's secret
        k1 = derive_named_key(master_secret=MASTER_SECRET, app_id=1, name="main", alg="secp256k1")
        secret = k1._private.secret
        for path in ("main", "app-key/secp256k1", "app-key/secp256k1:main", "1:main"):
            for length in (32, 48):
                derived = (await one.derive(path, length=length)).key
                assert secret not in derived


async def test_encrypt_and_decrypt_bind_the_app_the_aad_and_every_byte(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        sealed = await kms.encrypt("vault", b"the secret", aad=b"record 7")
        assert sealed.alg == "aes-256-gcm" and b"the secret" not in sealed.ciphertext
        assert sealed.ciphertext[:2] == b"\x01\x01"  # version 1, AES-256-GCM
        opened = await kms.decrypt(sealed.ciphertext, aad=b"record 7")
        assert (opened.plaintext, opened.name) == (b"the secret", "vault")
        assert "the secret" not in repr(opened)
        again = await kms.encrypt("vault", b"the secret", aad=b"record 7")
        assert again.ciphertext != sealed.ciphertext  # a fresh nonce each time

        with pytest.raises(BadRequest) as info:
            await kms.decrypt(sealed.ciphertext, aad=b"record 8")
        assert info.value.details["reason"] == "decrypt_failed"
        altered = bytearray(sealed.ciphertext)
        altered[-1] ^= 1
        with pytest.raises(BadRequest) as info:
            await kms.decrypt(bytes(altered), aad=b"record 7")
        assert info.value.details["reason"] == "decrypt_failed"
        for bad in (b"", b"\x02\x01\x00\x01a" + bytes(28), b"\x01\x09\x00\x01a" + bytes(28)):
            with pytest.raises(BadRequest) as info:
                await kms.decrypt(bad)
            assert info.value.details["reason"] == "bad_ciphertext"
        with pytest.raises(BadRequest, match="alg must be"):
            await kms.call("encrypt", {"name": "vault", "plaintext": b"x", "alg": ""})
        with pytest.raises(TooLarge):
            await kms.encrypt("vault", bytes(1_048_577))
        with pytest.raises(TooLarge):
            await kms.encrypt("vault", b"x", aad=bytes(65_537))
    async with await Client.connect(srv.tcp, signer=wallets.app2) as other:
        with pytest.raises(BadRequest) as info:
            await other.decrypt(sealed.ciphertext, aad=b"record 7")
        assert info.value.details["reason"] == "decrypt_failed"


async def test_keys_attest_is_signed_by_the_node_wallet(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        attested = await kms.keys_attest("main", "ed25519")
        public = await kms.keys_public("main", "ed25519")
    assert attested.key == public and attested.signer == wallets.node.wallet
    statement = attested.statement
    assert statement.splitlines()[:5] == [
        "novakms key attestation v1",
        "app_id: 1",
        'name: "main"',
        "alg: ed25519",
        f"public_key: 0x{public.public_key.hex()}",
    ]
    recovered = Account.recover_message(
        encode_defunct(text=statement), signature=attested.signature
    )
    assert recovered.lower() == wallets.node.wallet


@pytest.mark.parametrize(
    ("args", "error", "reason_or_text"),
    [
        ({"name": "k", "alg": "rsa"}, BadRequest, "alg must be one of"),
        ({"name": "", "alg": "ed25519", "message": b"m"}, BadRequest, "name must be"),
        ({"name": "a\x00b", "alg": "ed25519", "message": b"m"}, BadRequest, "name must be"),
        ({"name": "k" * 513, "alg": "ed25519", "message": b"m"}, TooLarge, "name is longer"),
        ({"name": "k", "alg": "secp256k1"}, BadRequest, "exactly one of"),
        (
            {"name": "k", "alg": "secp256k1", "digest": bytes(32), "eip191": "x"},
            BadRequest,
            "exactly one of",
        ),
        ({"name": "k", "alg": "secp256k1", "digest": bytes(31)}, BadRequest, "32 bytes"),
        ({"name": "k", "alg": "secp256k1", "eip712": {"domain": bytes(32)}}, BadRequest, "eip712"),
        ({"name": "k", "alg": "secp256k1", "message": b"m"}, BadRequest, "no message"),
        ({"name": "k", "alg": "ed25519", "digest": bytes(32)}, BadRequest, "signs a message"),
        ({"name": "k", "alg": "ed25519", "message": b"m", "format": "der"}, BadRequest, "format"),
        ({"name": "k", "alg": "p256"}, BadRequest, "message must be bytes"),
        ({"name": "k", "alg": "p256", "message": bytes(65_537)}, TooLarge, "message is"),
        ({"name": "k", "alg": "aes-256-gcm", "message": b"m"}, BadRequest, "alg must be"),
        ({"name": "k", "alg": "ed25519", "message": b"m", "extra": 1}, BadRequest, "unknown"),
    ],
)
async def test_sign_refuses_what_it_does_not_define(
    start_server: Any,
    wallets: Wallets,
    args: dict[str, Any],
    error: type[NovaKMSError],
    reason_or_text: str,
) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        with pytest.raises(error) as info:
            await kms.call("sign", args)
        assert reason_or_text in info.value.message
        assert (await kms.health()).status == "ok"  # the session lives on


async def test_named_key_ops_need_an_app_and_are_rate_limited_and_counted(
    start_server: Any, wallets: Wallets, caplog: pytest.LogCaptureFixture
) -> None:
    srv = await start_server(limits=Limits(wallet_rate=0.001, wallet_burst=3), metrics=True)
    async with await Client.connect(srv.tcp) as anonymous:
        with pytest.raises(Unauthenticated):
            await anonymous.keys_public("main", "secp256k1")
    caplog.set_level(logging.DEBUG)
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        await kms.sign("main", "secp256k1", digest=bytes(32))
        await kms.sign("main", "ed25519", message=b"m")
        await kms.encrypt("vault", b"v")
        with pytest.raises(RateLimited):
            await kms.sign("main", "ed25519", message=b"m")
    counts = {
        (sample.labels["op"], sample.labels["code"]): sample.value
        for family in text_string_to_metric_families(srv.server.metrics.exposition().decode())
        for sample in family.samples
        if sample.name == "novakms_requests_total"
    }
    assert counts[("sign", "ok")] == 2 and counts[("encrypt", "ok")] == 1
    assert counts[("sign", "rate_limited")] == 1
    k1 = derive_named_key(master_secret=MASTER_SECRET, app_id=1, name="main", alg="secp256k1")
    assert "request_failed" in caplog.text  # the debug log was on
    assert k1._private.secret.hex() not in caplog.text
