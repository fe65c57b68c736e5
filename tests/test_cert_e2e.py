"""Per-app certificates end to end: deterministic CAs, leaves that chain to the caller's CA only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from novakms.client.aio import Client
from novakms.errors import BadRequest, Forbidden, Unauthenticated
from tests.harness.registry import Wallets


def make_csr(
    *, ca: bool = False, sans: list[x509.GeneralName] | None = None
) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc.example")])
    )
    builder = builder.add_extension(
        x509.SubjectAlternativeName(sans or [x509.DNSName("svc.example")]), critical=False
    )
    if ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), key


async def test_ca_is_identical_across_nodes_with_one_secret(
    start_server: Any, wallets: Wallets
) -> None:
    first, second = await start_server(), await start_server()
    async with await Client.connect(first.tcp) as a, await Client.connect(second.unix) as b:
        assert await a.cert_ca(1) == await b.cert_ca(1)
        assert await a.cert_ca(1) != await a.cert_ca(2)
    other = await start_server(master_secret=bytes(32))
    async with await Client.connect(other.tcp) as c, await Client.connect(first.tcp) as a:
        assert await c.cert_ca(1) != await a.cert_ca(1)


async def test_leaf_chains_to_the_callers_app_ca_only(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server()
    csr, key = make_csr(
        sans=[x509.DNSName("svc.example"), x509.UniformResourceIdentifier("nova://app/2")]
    )
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        issued = await kms.cert_sign(csr)
        ca_b = x509.load_pem_x509_certificate((await kms.cert_ca(2)).encode())
    leaf = x509.load_pem_x509_certificate(issued.certificate.encode())
    ca_a = x509.load_pem_x509_certificate(issued.ca.encode())
    assert issued.app_id == 1
    leaf.verify_directly_issued_by(ca_a)
    with pytest.raises((ValueError, InvalidSignature)):
        leaf.verify_directly_issued_by(ca_b)
    leaf_key = leaf.public_key()
    assert isinstance(leaf_key, ec.EllipticCurvePublicKey)
    assert leaf_key.public_numbers() == key.public_key().public_numbers()
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == ["nova://app/1"]  # the CSR's claim to app 2 was dropped
    assert sans.get_values_for_type(x509.DNSName) == ["svc.example"]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    # Full path validation as a TLS client would do it, against app 1's CA and not app 2's.
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

    now = datetime.now(UTC)
    verifier = (
        PolicyBuilder()
        .store(Store([ca_a]))
        .time(now)
        .build_server_verifier(x509.DNSName("svc.example"))
    )
    verifier.verify(leaf, [])
    other = (
        PolicyBuilder()
        .store(Store([ca_b]))
        .time(now)
        .build_server_verifier(x509.DNSName("svc.example"))
    )
    with pytest.raises(VerificationError):
        other.verify(leaf, [])


async def test_validity_default_and_cap(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp, signer=wallets.app2) as kms:
        for days, expected in ((None, 7), (30, 30), (3650, 90)):
            issued = await kms.cert_sign(make_csr()[0], days=days)
            leaf = x509.load_pem_x509_certificate(issued.certificate.encode())
            lifetime = leaf.not_valid_after_utc - datetime.now(UTC)
            assert (
                timedelta(days=expected) - timedelta(minutes=2)
                < lifetime
                <= timedelta(days=expected)
            )
        with pytest.raises(BadRequest):
            await kms.cert_sign(make_csr()[0], days=0)


async def test_bad_csrs(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        ca_csr, _ = make_csr(ca=True)
        with pytest.raises(BadRequest):
            await kms.cert_sign(ca_csr)
        der = x509.load_pem_x509_csr(make_csr()[0]).public_bytes(serialization.Encoding.DER)
        tampered = der[:-3] + bytes([der[-3] ^ 1]) + der[-2:]
        with pytest.raises(BadRequest):
            await kms.cert_sign(tampered)
        with pytest.raises(BadRequest):
            await kms.cert_sign(b"not a csr")
        with pytest.raises(BadRequest):
            await kms.call("cert.sign", {"csr": 5})
        issued = await kms.cert_sign(der)  # DER is accepted too
        assert issued.certificate.startswith("-----BEGIN CERTIFICATE-----")


async def test_cert_sign_needs_an_app_and_cert_ca_does_not(start_server: Any) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp) as kms:
        assert (await kms.cert_ca(7)).startswith("-----BEGIN CERTIFICATE-----")
        with pytest.raises(Unauthenticated):
            await kms.cert_sign(make_csr()[0])
        with pytest.raises(BadRequest):
            await kms.call("cert.ca", {})
        with pytest.raises(BadRequest):
            await kms.call("cert.ca", {"app_id": "1"})


def csr_with_subject(*attributes: x509.NameAttribute[str]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(list(attributes)))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    "attribute",
    [
        x509.NameAttribute(NameOID.COMMON_NAME, "nova-app-2"),
        x509.NameAttribute(NameOID.COMMON_NAME, "NOVA-APP-002"),
        x509.NameAttribute(NameOID.COMMON_NAME, "Nova KMS app 2 CA"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "nova-app-7"),
        x509.NameAttribute(NameOID.COMMON_NAME, "Nova KMS app 1 CA"),  # its own CA's name
    ],
    ids=["default-cn", "case-and-padding", "ca-name", "other-attribute", "own-ca-cn"],
)
async def test_a_leaf_cannot_carry_another_apps_kms_issued_name(
    start_server: Any, wallets: Wallets, attribute: x509.NameAttribute[str]
) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        with pytest.raises(BadRequest) as info:
            await kms.cert_sign(csr_with_subject(attribute))
        assert info.value.details["reason"] == "foreign_name"
        # Its own KMS-issued name is fine.
        own = await kms.cert_sign(
            csr_with_subject(x509.NameAttribute(NameOID.COMMON_NAME, "nova-app-1"))
        )
    leaf = x509.load_pem_x509_certificate(own.certificate.encode())
    assert leaf.subject.rfc4514_string() == "CN=nova-app-1"


async def test_the_kms_apps_own_instances_cannot_use_app_operations(
    start_server: Any, wallets: Wallets
) -> None:
    # App 1 is the KMS app here: its instances are peers, and app operations refuse them.
    srv = await start_server(registry_changes={"kms_app_id": 1})
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        for call in (kms.derive("k"), kms.cert_sign(make_csr()[0]), kms.kv_get("x")):
            with pytest.raises(Forbidden) as info:
                await call
            assert info.value.details["reason"] == "kms_app"
    async with await Client.connect(srv.tcp, signer=wallets.app2) as other:
        assert (await other.derive("k")).app_id == 2
