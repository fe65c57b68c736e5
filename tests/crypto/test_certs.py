"""Tests for novakms.crypto.certs (DESIGN §4): per-app CAs and CSR signing, real crypto."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import ipaddress
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509 import DNSName
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from hypothesis import given
from hypothesis import strategies as st

from novakms.crypto.certs import (
    APP_URI_PREFIX,
    CA_CERT_NOT_AFTER,
    CA_CERT_NOT_BEFORE,
    CA_CERT_SERIAL,
    DEFAULT_LEAF_DAYS,
    MAX_CSR_BYTES,
    MAX_LEAF_DAYS,
    IssuedCertificate,
    ca_certificate,
    ca_certificate_pem,
    derive_ca_key,
    sign_csr,
)
from novakms.errors import BadRequest, TooLarge

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
APP_A = 7
APP_B = 8
NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
NOW_S = NOW.replace(microsecond=0)
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

# sha256 of the DER of ca_certificate(master_secret=bytes(range(32)), app_id=1). If this changes,
# nodes running different versions serve different CA certificates: do not change it lightly.
GOLDEN_CA_SHA256 = "15957bc652aa9a307c03e2239f8bc18ca91eccf083823633040c141193874922"


# --- helpers ------------------------------------------------------------------------------


class CountingRng:
    """A deterministic stand-in for os.urandom (distinct outputs per call)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, n: int) -> bytes:
        self.calls += 1
        return hashlib.sha256(f"serial {self.calls}".encode()).digest()[:n]


def make_csr(
    key: Any,
    *,
    subject: x509.Name | None = None,
    sans: list[x509.GeneralName] | None = None,
    extensions: list[tuple[x509.ExtensionType, bool]] = (),  # type: ignore[assignment]
) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        subject if subject is not None else x509.Name([])
    )
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    algorithm = (
        None
        if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else hashes.SHA256()
    )
    return builder.sign(key, algorithm)


def der(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.DER)


def pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def issue(csr: bytes | str, *, app_id: int = APP_A, **kwargs: Any) -> IssuedCertificate:
    args: dict[str, Any] = {
        "master_secret": SECRET,
        "app_id": app_id,
        "csr": csr,
        "days": None,
        "now": NOW,
        "serial_bytes": CountingRng(),
    }
    args.update(kwargs)
    return sign_csr(**args)


def leaf_of(issued: IssuedCertificate) -> x509.Certificate:
    return x509.load_pem_x509_certificate(issued.certificate_pem.encode())


def sans_of(cert: x509.Certificate) -> list[x509.GeneralName]:
    return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def ref_hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


@pytest.fixture(scope="module")
def p256_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def good_csr(p256_key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    return make_csr(
        p256_key,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc")]),
        sans=[x509.DNSName("svc.example")],
    )


@pytest.fixture(scope="module")
def ca_a() -> x509.Certificate:
    return ca_certificate(master_secret=SECRET, app_id=APP_A)


@pytest.fixture(scope="module")
def ca_b() -> x509.Certificate:
    return ca_certificate(master_secret=SECRET, app_id=APP_B)


# --- the CA key ---------------------------------------------------------------------------


def test_ca_key_matches_the_documented_derivation() -> None:
    info = b"".join(len(p).to_bytes(4, "big") + p for p in (b"ca-key/p256", str(APP_A).encode()))
    okm = ref_hkdf(SECRET, b"nova-kms:internal:v1", info, 48)
    expected = int.from_bytes(okm, "big") % (P256_ORDER - 1) + 1
    key = derive_ca_key(master_secret=SECRET, app_id=APP_A)
    assert isinstance(key.curve, ec.SECP256R1)
    assert key.private_numbers().private_value == expected
    assert 1 <= expected < P256_ORDER


def test_ca_key_is_deterministic_and_separated() -> None:
    def scalar(secret: bytes, app_id: int) -> int:
        return derive_ca_key(master_secret=secret, app_id=app_id).private_numbers().private_value

    assert scalar(SECRET, APP_A) == scalar(SECRET, APP_A)
    assert scalar(SECRET, APP_A) != scalar(SECRET, APP_B)
    assert scalar(SECRET, APP_A) != scalar(OTHER_SECRET, APP_A)
    assert scalar(SECRET, 0) != scalar(SECRET, 2**64 - 1)


@pytest.mark.parametrize(
    ("secret", "app_id", "exc"),
    [
        (SECRET, -1, ValueError),
        (SECRET, 2**64, ValueError),
        (SECRET, True, TypeError),
        (SECRET, "7", TypeError),
        (b"short", APP_A, ValueError),
    ],
)
def test_ca_rejects_bad_arguments(secret: bytes, app_id: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        derive_ca_key(master_secret=secret, app_id=app_id)
    with pytest.raises(exc):
        ca_certificate(master_secret=secret, app_id=app_id)


# --- the CA certificate -------------------------------------------------------------------


def test_ca_certificate_is_byte_identical_across_calls_and_nodes() -> None:
    first = ca_certificate(master_secret=SECRET, app_id=APP_A)
    second = ca_certificate(master_secret=SECRET, app_id=APP_A)
    assert first.public_bytes(serialization.Encoding.DER) == second.public_bytes(
        serialization.Encoding.DER
    )
    # Another "node": a fresh process derives everything again from the same secret.
    code = (
        "import sys; from novakms.crypto.certs import ca_certificate_pem;"
        f"sys.stdout.write(ca_certificate_pem(master_secret=bytes(range(32)), app_id={APP_A}))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout == ca_certificate_pem(master_secret=SECRET, app_id=APP_A)
    assert other.stdout == first.public_bytes(serialization.Encoding.PEM).decode()


def test_ca_certificate_golden_fingerprint() -> None:
    cert = ca_certificate(master_secret=SECRET, app_id=1)
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert digest == GOLDEN_CA_SHA256


def test_ca_certificate_differs_across_apps_and_secrets() -> None:
    pems = {
        ca_certificate_pem(master_secret=SECRET, app_id=APP_A),
        ca_certificate_pem(master_secret=SECRET, app_id=APP_B),
        ca_certificate_pem(master_secret=OTHER_SECRET, app_id=APP_A),
    }
    assert len(pems) == 3


def test_ca_certificate_pem_matches_certificate(ca_a: x509.Certificate) -> None:
    text = ca_certificate_pem(master_secret=SECRET, app_id=APP_A)
    assert text.startswith("-----BEGIN CERTIFICATE-----\n")
    assert text.endswith("-----END CERTIFICATE-----\n")
    assert x509.load_pem_x509_certificate(text.encode()) == ca_a


def test_ca_certificate_is_a_valid_self_signed_ca(ca_a: x509.Certificate) -> None:
    key = derive_ca_key(master_secret=SECRET, app_id=APP_A)
    public_key = ca_a.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert public_key.public_numbers() == key.public_key().public_numbers()
    public_key.verify(ca_a.signature, ca_a.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    ca_a.verify_directly_issued_by(ca_a)

    assert ca_a.version is x509.Version.v3
    assert ca_a.serial_number == CA_CERT_SERIAL == 1
    assert ca_a.not_valid_before_utc == CA_CERT_NOT_BEFORE == datetime(2025, 1, 1, tzinfo=UTC)
    assert ca_a.not_valid_after_utc == CA_CERT_NOT_AFTER == datetime(2125, 1, 1, tzinfo=UTC)
    assert ca_a.subject == ca_a.issuer
    cn = ca_a.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    org = ca_a.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [a.value for a in cn] == [f"Nova KMS app {APP_A} CA"]
    assert [a.value for a in org] == ["Nova KMS"]
    assert isinstance(ca_a.signature_hash_algorithm, hashes.SHA256)

    exts = ca_a.extensions
    bc = exts.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca
    assert bc.value.path_length == 0
    ku = exts.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign
    assert ku.value.crl_sign
    assert not ku.value.digital_signature
    ski = exts.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(public_key)
    oids = {e.oid for e in exts}
    assert ExtensionOID.NAME_CONSTRAINTS not in oids


# --- leaf issuance: chaining --------------------------------------------------------------


def test_leaf_chains_to_its_app_ca_only(
    good_csr: x509.CertificateSigningRequest, ca_a: x509.Certificate, ca_b: x509.Certificate
) -> None:
    issued = issue(der(good_csr))
    leaf = leaf_of(issued)
    assert x509.load_pem_x509_certificate(issued.ca_pem.encode()) == ca_a
    assert issued.ca_pem == ca_certificate_pem(master_secret=SECRET, app_id=APP_A)

    leaf.verify_directly_issued_by(ca_a)
    with pytest.raises((ValueError, InvalidSignature)):
        leaf.verify_directly_issued_by(ca_b)
    other_secret_ca = ca_certificate(master_secret=OTHER_SECRET, app_id=APP_A)
    with pytest.raises(InvalidSignature):  # same name, different key
        leaf.verify_directly_issued_by(other_secret_ca)


def test_leaf_passes_full_path_validation(
    good_csr: x509.CertificateSigningRequest, ca_a: x509.Certificate
) -> None:
    leaf = leaf_of(issue(pem(good_csr)))
    policy = PolicyBuilder().store(Store([ca_a])).time(NOW)

    client = policy.build_client_verifier().verify(leaf, [])
    assert client.chain == [leaf, ca_a]
    assert client.subjects is not None
    assert x509.UniformResourceIdentifier(f"nova://app/{APP_A}") in client.subjects

    chain = policy.build_server_verifier(DNSName("svc.example")).verify(leaf, [])
    assert chain == [leaf, ca_a]
    with pytest.raises(VerificationError):
        policy.build_server_verifier(DNSName("other.example")).verify(leaf, [])


def test_leaf_fails_path_validation_against_other_apps_ca(
    good_csr: x509.CertificateSigningRequest, ca_b: x509.Certificate
) -> None:
    leaf = leaf_of(issue(der(good_csr)))
    policy = PolicyBuilder().store(Store([ca_b])).time(NOW)
    with pytest.raises(VerificationError):
        policy.build_client_verifier().verify(leaf, [])
    with pytest.raises(VerificationError):
        policy.build_server_verifier(DNSName("svc.example")).verify(leaf, [])
    # Even a leaf for app B presented with app A's CA as an "intermediate" does not help.
    leaf_b = leaf_of(issue(der(good_csr), app_id=APP_B))
    ca_a = ca_certificate(master_secret=SECRET, app_id=APP_A)
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([ca_a])).time(NOW).build_client_verifier().verify(
            leaf_b, [ca_b]
        )


def test_leaf_path_validation_respects_validity(
    good_csr: x509.CertificateSigningRequest, ca_a: x509.Certificate
) -> None:
    leaf = leaf_of(issue(der(good_csr), days=3))
    for when in (NOW_S + timedelta(days=3, seconds=1), NOW_S - timedelta(minutes=6)):
        with pytest.raises(VerificationError):
            PolicyBuilder().store(Store([ca_a])).time(when).build_client_verifier().verify(leaf, [])
    # Inside the clock-skew allowance it is already valid.
    PolicyBuilder().store(Store([ca_a])).time(
        NOW_S - timedelta(minutes=4)
    ).build_client_verifier().verify(leaf, [])


def test_leaf_without_requested_sans_still_verifies_as_client(
    p256_key: ec.EllipticCurvePrivateKey, ca_a: x509.Certificate
) -> None:
    leaf = leaf_of(issue(der(make_csr(p256_key))))
    assert sans_of(leaf) == [x509.UniformResourceIdentifier(f"nova://app/{APP_A}")]
    verified = (
        PolicyBuilder().store(Store([ca_a])).time(NOW).build_client_verifier().verify(leaf, [])
    )
    assert verified.subjects == [x509.UniformResourceIdentifier(f"nova://app/{APP_A}")]


# --- leaf issuance: contents --------------------------------------------------------------


def test_leaf_extensions(
    good_csr: x509.CertificateSigningRequest, p256_key: ec.EllipticCurvePrivateKey
) -> None:
    leaf = leaf_of(issue(der(good_csr)))
    ca_key = derive_ca_key(master_secret=SECRET, app_id=APP_A)
    ca_key.public_key().verify(
        leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256())
    )
    exts = leaf.extensions
    assert {e.oid for e in exts} == {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
    bc = exts.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert not bc.value.ca
    ku = exts.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    assert ku.value.key_agreement
    assert not ku.value.key_encipherment
    assert not ku.value.key_cert_sign
    eku = exts.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not exts.get_extension_for_class(x509.SubjectAlternativeName).critical
    ski = exts.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(p256_key.public_key())
    aki = exts.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    assert aki.key_identifier == ca_ski.digest
    assert leaf.issuer == ca_certificate(master_secret=SECRET, app_id=APP_A).subject


def test_leaf_binds_app_uri_and_drops_claimed_nova_uris(
    p256_key: ec.EllipticCurvePrivateKey,
) -> None:
    requested: list[x509.GeneralName] = [
        x509.DNSName("a.example"),
        x509.UniformResourceIdentifier(f"nova://app/{APP_B}"),
        x509.UniformResourceIdentifier("NOVA://APP/9"),
        x509.UniformResourceIdentifier("nova:app/10"),
        x509.UniformResourceIdentifier(f"nova://app/{APP_A}"),
        x509.UniformResourceIdentifier("spiffe://example/svc"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
        x509.RFC822Name("ops@example.com"),
        x509.DNSName("a.example"),
    ]
    leaf = leaf_of(issue(der(make_csr(p256_key, sans=requested))))
    assert sans_of(leaf) == [
        x509.DNSName("a.example"),
        x509.UniformResourceIdentifier("spiffe://example/svc"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
        x509.RFC822Name("ops@example.com"),
        x509.UniformResourceIdentifier(f"{APP_URI_PREFIX}{APP_A}"),
    ]
    nova = [
        n.value
        for n in sans_of(leaf)
        if isinstance(n, x509.UniformResourceIdentifier) and n.value.lower().startswith("nova:")
    ]
    assert nova == [f"nova://app/{APP_A}"]


def test_csr_key_usage_eku_and_non_ca_requests_are_overridden(
    p256_key: ec.EllipticCurvePrivateKey,
) -> None:
    csr = make_csr(
        p256_key,
        extensions=[
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=True,
                    key_encipherment=False,
                    data_encipherment=True,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                True,
            ),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False),
        ],
    )
    leaf = leaf_of(issue(der(csr)))
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature
    assert not ku.key_cert_sign
    assert not ku.crl_sign
    assert not ku.data_encipherment
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_subject_is_copied(p256_key: ec.EllipticCurvePrivateKey) -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
            x509.NameAttribute(NameOID.COMMON_NAME, "worker-1"),
        ]
    )
    leaf = leaf_of(issue(der(make_csr(p256_key, subject=subject))))
    assert leaf.subject == subject


def test_empty_subject_gets_app_common_name(p256_key: ec.EllipticCurvePrivateKey) -> None:
    leaf = leaf_of(issue(der(make_csr(p256_key)), app_id=APP_B))
    assert leaf.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"nova-app-{APP_B}")])


def test_oversized_subject_rejected(p256_key: ec.EllipticCurvePrivateKey) -> None:
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "u" * 60) for _ in range(20)]
    )
    assert len(subject.public_bytes()) > 1024
    with pytest.raises(BadRequest):
        issue(der(make_csr(p256_key, subject=subject)))


def test_subject_equal_to_ca_name_rejected(
    p256_key: ec.EllipticCurvePrivateKey, ca_a: x509.Certificate
) -> None:
    with pytest.raises(BadRequest):
        issue(der(make_csr(p256_key, subject=ca_a.subject)))


# --- validity, serial ---------------------------------------------------------------------


def test_default_validity_is_seven_days(good_csr: x509.CertificateSigningRequest) -> None:
    issued = issue(der(good_csr))
    leaf = leaf_of(issued)
    assert DEFAULT_LEAF_DAYS == 7
    assert issued.not_before == NOW_S - timedelta(minutes=5) == leaf.not_valid_before_utc
    assert issued.not_after == NOW_S + timedelta(days=7) == leaf.not_valid_after_utc


@pytest.mark.parametrize(("days", "expected"), [(1, 1), (30, 30), (90, 90), (91, 90), (3650, 90)])
def test_validity_is_capped(
    good_csr: x509.CertificateSigningRequest, days: int, expected: int
) -> None:
    issued = issue(der(good_csr), days=days)
    assert MAX_LEAF_DAYS == 90
    assert issued.not_after == NOW_S + timedelta(days=expected)
    assert leaf_of(issued).not_valid_after_utc == issued.not_after


def test_custom_limits(good_csr: x509.CertificateSigningRequest) -> None:
    assert issue(der(good_csr), max_days=10, days=20).not_after == NOW_S + timedelta(days=10)
    assert issue(der(good_csr), default_days=3).not_after == NOW_S + timedelta(days=3)
    assert issue(der(good_csr), default_days=30, max_days=10).not_after == NOW_S + timedelta(
        days=10
    )
    with pytest.raises(ValueError):
        issue(der(good_csr), max_days=0)


@pytest.mark.parametrize("days", [0, -1, True, 1.5, "7"])
def test_bad_days_rejected(good_csr: x509.CertificateSigningRequest, days: Any) -> None:
    with pytest.raises(BadRequest):
        issue(der(good_csr), days=days)


def test_now_in_other_timezone_and_naive(good_csr: x509.CertificateSigningRequest) -> None:
    east = timezone(timedelta(hours=9))
    issued = issue(der(good_csr), now=NOW.astimezone(east))
    assert issued.not_after == NOW_S + timedelta(days=7)
    assert issued.not_after.tzinfo == UTC
    with pytest.raises(ValueError):
        issue(der(good_csr), now=NOW.replace(tzinfo=None))


def test_serial_is_random_positive_and_small(good_csr: x509.CertificateSigningRequest) -> None:
    rng = CountingRng()
    serials = set()
    for _ in range(5):
        issued = issue(der(good_csr), serial_bytes=rng)
        assert 0 < issued.serial < 2**159
        assert issued.serial < 2**127
        assert leaf_of(issued).serial_number == issued.serial
        serials.add(issued.serial)
    assert len(serials) == 5
    requested: list[int] = []

    def spy(n: int) -> bytes:
        requested.append(n)
        return b"\x01" * n

    issue(der(good_csr), serial_bytes=spy)
    assert requested == [16]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(b"\x00" * 16, 1), (b"\xff" * 16, 2**127 - 1), (b"\x80" + b"\x00" * 15, 1)],
)
def test_serial_edge_cases(
    good_csr: x509.CertificateSigningRequest, raw: bytes, expected: int
) -> None:
    issued = issue(der(good_csr), serial_bytes=lambda n: raw)
    assert issued.serial == expected
    assert leaf_of(issued).serial_number == expected


def test_serial_rng_wrong_length(good_csr: x509.CertificateSigningRequest) -> None:
    with pytest.raises(ValueError):
        issue(der(good_csr), serial_bytes=lambda n: b"\x01" * (n - 1))


def test_issued_certificate_is_frozen(good_csr: x509.CertificateSigningRequest) -> None:
    issued = issue(der(good_csr))
    with pytest.raises(dataclasses.FrozenInstanceError):
        issued.serial = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        IssuedCertificate("a", "b", 1, NOW, NOW)  # type: ignore[call-arg]


# --- CSR encodings and parsing failures ---------------------------------------------------


def test_pem_str_pem_bytes_and_der_accepted(good_csr: x509.CertificateSigningRequest) -> None:
    for form in (pem(good_csr).decode(), pem(good_csr), der(good_csr), b"\n  " + pem(good_csr)):
        leaf = leaf_of(issue(form))
        assert x509.DNSName("svc.example") in sans_of(leaf)


def test_tampered_signature_rejected(good_csr: x509.CertificateSigningRequest) -> None:
    data = bytearray(der(good_csr))
    at = bytes(data).rindex(good_csr.signature) + len(good_csr.signature) - 1
    data[at] ^= 0x01
    tampered = x509.load_der_x509_csr(bytes(data))  # still parses...
    assert not tampered.is_signature_valid  # ...but no longer verifies
    with pytest.raises(BadRequest):
        issue(bytes(data))


def test_tampered_body_rejected(good_csr: x509.CertificateSigningRequest) -> None:
    data = der(good_csr)
    tampered = data.replace(b"svc.example", b"evl.example")
    assert tampered != data
    with pytest.raises(BadRequest):
        issue(tampered)


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x00",
        b"not a csr at all",
        b"\x30\x03\x02\x01\x01",
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        "-----BEGIN CERTIFICATE REQUEST-----\nzz\n-----END CERTIFICATE REQUEST-----\n",
        "caf\u00e9",
        "",
    ],
)
def test_garbage_rejected(garbage: bytes | str) -> None:
    with pytest.raises(BadRequest):
        issue(garbage)


def test_certificate_instead_of_csr_rejected(ca_a: x509.Certificate) -> None:
    with pytest.raises(BadRequest):
        issue(ca_a.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(BadRequest):
        issue(ca_a.public_bytes(serialization.Encoding.DER))


def test_wrong_csr_type_rejected() -> None:
    with pytest.raises(BadRequest):
        issue(12345)  # type: ignore[arg-type]


def test_oversized_csr_too_large(good_csr: x509.CertificateSigningRequest) -> None:
    assert MAX_CSR_BYTES == 16384
    with pytest.raises(TooLarge):
        issue(b"\x30" * (MAX_CSR_BYTES + 1))
    with pytest.raises(TooLarge):
        issue("A" * (MAX_CSR_BYTES + 1))
    with pytest.raises(TooLarge):
        issue(pem(good_csr) + b"\n" * MAX_CSR_BYTES)
    # Exactly at the limit is parsed (and here fails as garbage, not as too large).
    with pytest.raises(BadRequest):
        issue(b"\x30" * MAX_CSR_BYTES)


# --- CSR content policy -------------------------------------------------------------------


def test_ca_request_rejected(p256_key: ec.EllipticCurvePrivateKey) -> None:
    for path_length in (None, 0):
        csr = make_csr(
            p256_key, extensions=[(x509.BasicConstraints(ca=True, path_length=path_length), True)]
        )
        with pytest.raises(BadRequest):
            issue(der(csr))


@pytest.mark.parametrize(
    "extension",
    [
        x509.OCSPNoCheck(),
        x509.NameConstraints(permitted_subtrees=[x509.DNSName("example")], excluded_subtrees=None),
        x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00"),
        x509.SubjectKeyIdentifier(b"\x01" * 20),
    ],
)
def test_unsupported_extension_requests_rejected(
    p256_key: ec.EllipticCurvePrivateKey, extension: x509.ExtensionType
) -> None:
    with pytest.raises(BadRequest):
        issue(der(make_csr(p256_key, extensions=[(extension, False)])))


def test_san_count_limit(p256_key: ec.EllipticCurvePrivateKey) -> None:
    names: list[x509.GeneralName] = [x509.DNSName(f"h{i}.example") for i in range(32)]
    leaf = leaf_of(issue(der(make_csr(p256_key, sans=names))))
    assert len(sans_of(leaf)) == 33
    with pytest.raises(BadRequest):
        issue(der(make_csr(p256_key, sans=[*names, x509.DNSName("one-more.example")])))


def test_san_length_limit(p256_key: ec.EllipticCurvePrivateKey) -> None:
    label = "a" * 63
    name_255 = ".".join([label, label, label, "b" * 63])  # 255 characters
    assert len(name_255) == 255
    leaf = leaf_of(issue(der(make_csr(p256_key, sans=[x509.DNSName(name_255)]))))
    assert x509.DNSName(name_255) in sans_of(leaf)
    for too_long in (
        x509.DNSName(name_255 + "c"),
        x509.UniformResourceIdentifier("https://example/" + "p" * 250),
        x509.RFC822Name("a" * 250 + "@example.com"),
    ):
        with pytest.raises(BadRequest):
            issue(der(make_csr(p256_key, sans=[too_long])))


@pytest.mark.parametrize(
    "name",
    [
        x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])),
        x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4")),
        x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x01a"),
        x509.IPAddress(ipaddress.ip_network("10.0.0.0/8")),
        x509.DNSName(""),
    ],
)
def test_unsupported_or_empty_sans_rejected(
    p256_key: ec.EllipticCurvePrivateKey, name: x509.GeneralName
) -> None:
    with pytest.raises(BadRequest):
        issue(der(make_csr(p256_key, sans=[name])))


# --- key types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024),
        lambda: dsa.generate_private_key(key_size=1024),
        lambda: ec.generate_private_key(ec.SECP521R1()),
        lambda: ec.generate_private_key(ec.SECP256K1()),
        lambda: ed448.Ed448PrivateKey.generate(),
    ],
    ids=["rsa1024", "dsa", "p521", "secp256k1", "ed448"],
)
def test_disallowed_keys_rejected(make_key: Callable[[], Any]) -> None:
    csr = make_csr(make_key(), sans=[x509.DNSName("svc.example")])
    assert csr.is_signature_valid
    with pytest.raises(BadRequest):
        issue(der(csr))


@pytest.mark.parametrize(
    ("make_key", "key_encipherment", "key_agreement"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), True, False),
        (lambda: ec.generate_private_key(ec.SECP384R1()), False, True),
        (lambda: ec.generate_private_key(ec.SECP256R1()), False, True),
        (lambda: ed25519.Ed25519PrivateKey.generate(), False, False),
    ],
    ids=["rsa2048", "p384", "p256", "ed25519"],
)
def test_allowed_keys_issue_with_matching_key_usage(
    make_key: Callable[[], Any],
    key_encipherment: bool,
    key_agreement: bool,
    ca_a: x509.Certificate,
) -> None:
    key = make_key()
    leaf = leaf_of(issue(der(make_csr(key, sans=[x509.DNSName("svc.example")]))))
    assert leaf.public_key() == key.public_key()
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature
    assert ku.key_encipherment is key_encipherment
    assert ku.key_agreement is key_agreement
    leaf.verify_directly_issued_by(ca_a)
    PolicyBuilder().store(Store([ca_a])).time(NOW).build_server_verifier(
        DNSName("svc.example")
    ).verify(leaf, [])


# --- robustness ---------------------------------------------------------------------------


def _only_request_errors(data: bytes | str) -> None:
    with contextlib.suppress(BadRequest, TooLarge):
        issue(data)


@given(st.binary(max_size=2048))
def test_random_bytes_only_raise_request_errors(data: bytes) -> None:
    _only_request_errors(data)


@given(st.binary(max_size=1024))
def test_random_pem_bodies_only_raise_request_errors(body: bytes) -> None:
    import base64

    text = (
        "-----BEGIN CERTIFICATE REQUEST-----\n"
        + base64.encodebytes(body).decode()
        + "-----END CERTIFICATE REQUEST-----\n"
    )
    _only_request_errors(text)


_FUZZ_KEY = ec.generate_private_key(ec.SECP256R1())
_FUZZ_DER = der(
    make_csr(
        _FUZZ_KEY,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz")]),
        sans=[x509.DNSName("fuzz.example"), x509.UniformResourceIdentifier("https://x/")],
        extensions=[(x509.BasicConstraints(ca=False, path_length=None), True)],
    )
)


@given(
    st.lists(
        st.tuples(st.integers(0, len(_FUZZ_DER) - 1), st.integers(1, 255)),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_csrs_only_raise_request_errors(flips: list[tuple[int, int]]) -> None:
    data = bytearray(_FUZZ_DER)
    for at, mask in flips:
        data[at] ^= mask
    _only_request_errors(bytes(data))


@given(st.integers(0, len(_FUZZ_DER) - 1))
def test_truncated_csrs_rejected(cut: int) -> None:
    with pytest.raises(BadRequest):
        issue(_FUZZ_DER[:cut])


@given(
    st.sampled_from(
        [
            ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
            ExtensionOID.BASIC_CONSTRAINTS,
            ExtensionOID.KEY_USAGE,
            ExtensionOID.EXTENDED_KEY_USAGE,
        ]
    ),
    st.one_of(
        st.binary(max_size=64),
        # A SEQUENCE of one random [tag] primitive: reaches the general-name decoders.
        st.tuples(st.integers(0x80, 0x88), st.binary(max_size=20)).map(
            lambda t: bytes([0x30, len(t[1]) + 2, t[0], len(t[1])]) + t[1]
        ),
    ),
)
def test_validly_signed_garbage_extensions_only_raise_bad_request(
    oid: x509.ObjectIdentifier, value: bytes
) -> None:
    csr = make_csr(_FUZZ_KEY, extensions=[(x509.UnrecognizedExtension(oid, value), False)])
    assert csr.is_signature_valid
    with contextlib.suppress(BadRequest):
        leaf = leaf_of(issue(der(csr)))
        assert x509.UniformResourceIdentifier(f"nova://app/{APP_A}") in sans_of(leaf)


_SAN_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@given(
    st.lists(
        st.one_of(
            _SAN_TEXT.map(x509.DNSName),
            _SAN_TEXT.map(x509.UniformResourceIdentifier),
            st.tuples(
                st.sampled_from(["nova://app/", "NOVA://APP/", " Nova:", "nova:", "novax://"]),
                _SAN_TEXT,
            ).map(lambda t: x509.UniformResourceIdentifier(t[0] + t[1])),
            st.from_regex(r"\A[a-z0-9.]{1,20}@[a-z]{1,10}\.example\Z").map(x509.RFC822Name),
            st.ip_addresses().map(x509.IPAddress),
        ),
        max_size=36,
    )
)
def test_random_sans_never_smuggle_a_nova_identity(names: list[x509.GeneralName]) -> None:
    csr = make_csr(_FUZZ_KEY, sans=names)
    try:
        leaf = leaf_of(issue(der(csr)))
    except BadRequest:
        return
    uris = [n.value for n in sans_of(leaf) if isinstance(n, x509.UniformResourceIdentifier)]
    nova = [u for u in uris if u.strip().lower().startswith("nova:")]
    assert nova == [f"nova://app/{APP_A}"]
    assert uris[-1] == f"nova://app/{APP_A}"


def test_module_source_is_pure() -> None:
    # cryptography.x509 itself loads socket and random (via email.utils), so sys.modules cannot
    # be checked here; instead the module's own imports and calls are.
    import ast
    import inspect

    import novakms.crypto.certs as certs

    source = inspect.getsource(certs)
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"trio", "socket", "random", "asyncio", "time", "os", "secrets"}
    for needle in ("urandom", "datetime.now", "utcnow", "time.time("):
        assert needle not in source
