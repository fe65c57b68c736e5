"""Per-app certificate authorities and CSR signing (DESIGN §4, PROTOCOL §9.2).

Every app has its own CA whose P-256 key is derived from the cluster master secret and the app
id (:func:`derive_ca_key`), and whose self-signed certificate is fully deterministic
(:func:`ca_certificate`): fixed name, serial, validity and extensions, signed with RFC 6979
deterministic ECDSA. Every node therefore serves byte-identical CA certificates without any
coordination.

:func:`sign_csr` issues short-lived leaf certificates chaining to the caller's app CA only. The
leaf always carries the URI SAN ``nova://app/<app_id>`` and never a ``nova://`` URI taken from
the CSR, so no app can obtain a certificate naming another app's identity, and a certificate
signed by one app's CA is never trusted by another app's clients (which trust only their own
app's CA).

This module is pure: no I/O, no clock, no randomness of its own. The current time and the
serial-number RNG are parameters. Nothing here logs or formats a secret.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from novakms.crypto.kdf import derive_internal_key
from novakms.errors import BadRequest, TooLarge

__all__ = [
    "APP_URI_PREFIX",
    "CA_CERT_NOT_AFTER",
    "CA_CERT_NOT_BEFORE",
    "CA_CERT_SERIAL",
    "CA_KEY_LABEL",
    "CLOCK_SKEW",
    "DEFAULT_LEAF_DAYS",
    "MAX_APP_ID",
    "MAX_CSR_BYTES",
    "MAX_LEAF_DAYS",
    "MAX_SAN_COUNT",
    "MAX_SAN_LENGTH",
    "MAX_SUBJECT_BYTES",
    "IssuedCertificate",
    "ca_certificate",
    "ca_certificate_pem",
    "derive_ca_key",
    "sign_csr",
]

DEFAULT_LEAF_DAYS = 7
"""Validity of a leaf certificate, in days, when the request names none."""

MAX_LEAF_DAYS = 90
"""Longest leaf validity, in days; longer requests are capped to this."""

MAX_CSR_BYTES = 16384
"""Largest accepted CSR (PEM or DER), in bytes; larger ones are ``TooLarge``."""

APP_URI_PREFIX = "nova://app/"
"""Prefix of the URI SAN binding a leaf to its app: ``nova://app/<app_id in decimal>``."""

MAX_SAN_COUNT = 32
"""Most subject alternative names a CSR may request."""

MAX_SAN_LENGTH = 255
"""Longest requested SAN value, in characters."""

MAX_SUBJECT_BYTES = 1024
"""Largest requested subject name, in bytes of DER."""

MAX_APP_ID = 2**64 - 1
"""Largest app id (the protocol carries app ids as CBOR unsigned integers, PROTOCOL §8)."""

CLOCK_SKEW = timedelta(minutes=5)
"""A leaf is valid from this long before ``now``, to tolerate clocks running behind."""

CA_KEY_LABEL = "ca-key/p256"
"""Internal-key label (PROTOCOL §9.2) of the app CA key; the only field is the app id."""

CA_CERT_SERIAL = 1
"""Serial number of every app CA certificate (each CA has exactly one certificate)."""

CA_CERT_NOT_BEFORE = datetime(2025, 1, 1, tzinfo=UTC)
"""Fixed start of every app CA certificate's validity (2025-01-01T00:00:00Z)."""

CA_CERT_NOT_AFTER = datetime(2125, 1, 1, tzinfo=UTC)
"""Fixed end of every app CA certificate's validity (2125-01-01T00:00:00Z)."""

_CA_ORGANIZATION = "Nova KMS"
_CA_KEY_OKM_LENGTH = 48  # 384 bits reduced mod a 256-bit order: bias below 2**-128
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_SERIAL_BYTES = 16
_RSA_MIN_BITS = 2048
_RSA_MAX_BITS = 4096
_ALLOWED_EC_CURVES: tuple[type[ec.EllipticCurve], ...] = (ec.SECP256R1, ec.SECP384R1)
_IGNORED_REQUEST_EXTENSIONS = frozenset(
    {ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE}
)
# What cryptography raises while decoding a malformed CSR (several are not ValueErrors).
_CSR_DECODE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)

_LeafPublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedCertificate:
    """A freshly issued leaf certificate and the CA certificate it chains to.

    Attributes:
        certificate_pem: the leaf certificate, PEM.
        ca_pem: the app's CA certificate (as :func:`ca_certificate_pem`), PEM.
        serial: the leaf's serial number.
        not_before: start of the leaf's validity (UTC, whole seconds).
        not_after: end of the leaf's validity (UTC, whole seconds).
    """

    certificate_pem: str
    ca_pem: str
    serial: int
    not_before: datetime
    not_after: datetime


# --- the app CA ---------------------------------------------------------------------------


def _check_app_id(app_id: int) -> None:
    """Reject an app id of the wrong type or outside ``0 .. MAX_APP_ID``.

    Args:
        app_id: the candidate app id.

    Raises:
        TypeError: not an int (bool is refused).
        ValueError: negative or larger than ``MAX_APP_ID``.
    """
    if isinstance(app_id, bool) or not isinstance(app_id, int):
        raise TypeError("app_id must be an int")
    if not 0 <= app_id <= MAX_APP_ID:
        raise ValueError(f"app_id must be in 0..{MAX_APP_ID}")


def _ca_name(app_id: int) -> x509.Name:
    """The subject (and issuer) name of an app's CA certificate.

    Args:
        app_id: the app id (already checked).

    Returns:
        ``O=Nova KMS, CN=Nova KMS app <app_id> CA`` (RFC 4514 prints it in reverse order).
    """
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _CA_ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Nova KMS app {app_id} CA"),
        ]
    )


def derive_ca_key(*, master_secret: bytes, app_id: int) -> ec.EllipticCurvePrivateKey:
    """Derive an app's CA private key (P-256) from the master secret.

    ``okm = derive_internal_key(label="ca-key/p256", fields=[app_id], length=48)`` and the
    scalar is ``int(okm) mod (n - 1) + 1``, which is always in ``1 .. n - 1``; the 48-byte
    output keeps the modulo bias negligible.

    Args:
        master_secret: the 32-byte cluster master secret.
        app_id: the app id, ``0 .. MAX_APP_ID``.

    Returns:
        The CA's private key; the same for the same inputs on every node.

    Raises:
        ValueError: bad master secret size or app id out of range.
        TypeError: an argument of the wrong type.
    """
    _check_app_id(app_id)
    okm = derive_internal_key(
        master_secret=master_secret,
        label=CA_KEY_LABEL,
        fields=[app_id],
        length=_CA_KEY_OKM_LENGTH,
    )
    scalar = int.from_bytes(okm, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _build_ca_certificate(key: ec.EllipticCurvePrivateKey, app_id: int) -> x509.Certificate:
    """Build and self-sign the deterministic CA certificate for ``key``.

    Args:
        key: the app's CA key (from :func:`derive_ca_key`).
        app_id: the app id (already checked).

    Returns:
        The self-signed CA certificate.
    """
    name = _ca_name(app_id)
    public_key = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(CA_CERT_SERIAL)
        .not_valid_before(CA_CERT_NOT_BEFORE)
        .not_valid_after(CA_CERT_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    return builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True)


def ca_certificate(*, master_secret: bytes, app_id: int) -> x509.Certificate:
    """The app's self-signed CA certificate; byte-identical for the same inputs everywhere.

    Fixed contents: subject = issuer = ``O=Nova KMS, CN=Nova KMS app <app_id> CA``; serial
    ``CA_CERT_SERIAL`` (1); validity ``CA_CERT_NOT_BEFORE`` (2025-01-01T00:00:00Z) to
    ``CA_CERT_NOT_AFTER`` (2125-01-01T00:00:00Z); BasicConstraints(ca, path_length=0) and
    KeyUsage(keyCertSign, cRLSign), both critical; SubjectKeyIdentifier and
    AuthorityKeyIdentifier (its own key id). Signed ECDSA-SHA256 with RFC 6979 nonces, so the
    signature is deterministic too. Changing any of this changes every app's CA certificate.

    Args:
        master_secret: the 32-byte cluster master secret.
        app_id: the app id, ``0 .. MAX_APP_ID``.

    Returns:
        The CA certificate.

    Raises:
        ValueError: bad master secret size or app id out of range.
        TypeError: an argument of the wrong type.
    """
    key = derive_ca_key(master_secret=master_secret, app_id=app_id)
    return _build_ca_certificate(key, app_id)


def ca_certificate_pem(*, master_secret: bytes, app_id: int) -> str:
    """The app's CA certificate (:func:`ca_certificate`) as PEM text.

    Args:
        master_secret: the 32-byte cluster master secret.
        app_id: the app id, ``0 .. MAX_APP_ID``.

    Returns:
        ``-----BEGIN CERTIFICATE-----`` … PEM, ASCII, ending with a newline.

    Raises:
        ValueError: bad master secret size or app id out of range.
        TypeError: an argument of the wrong type.
    """
    cert = ca_certificate(master_secret=master_secret, app_id=app_id)
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


# --- CSR checks ---------------------------------------------------------------------------


def _load_csr(csr: bytes | str) -> x509.CertificateSigningRequest:
    """Decode a PEM or DER CSR, enforcing the size limit.

    Args:
        csr: PEM text, PEM bytes (starting with ``-----BEGIN`` after optional whitespace) or
            DER bytes.

    Returns:
        The parsed (not yet checked) CSR.

    Raises:
        TooLarge: more than ``MAX_CSR_BYTES`` bytes.
        BadRequest: wrong type, not ASCII PEM, or not a CSR.
    """
    if isinstance(csr, str):
        if len(csr) > MAX_CSR_BYTES:
            raise TooLarge(f"CSR larger than {MAX_CSR_BYTES} bytes")
        try:
            data = csr.encode("ascii")
        except UnicodeEncodeError:
            raise BadRequest("CSR text is not ASCII PEM") from None
    elif isinstance(csr, bytes | bytearray | memoryview):
        data = bytes(csr)
    else:
        raise BadRequest("CSR must be PEM text or DER/PEM bytes")
    if len(data) > MAX_CSR_BYTES:
        raise TooLarge(f"CSR larger than {MAX_CSR_BYTES} bytes")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except _CSR_DECODE_ERRORS:
        raise BadRequest("CSR cannot be parsed") from None


def _check_public_key(public_key: object) -> _LeafPublicKey:
    """Accept only the leaf key types the KMS issues for.

    Args:
        public_key: the CSR's public key.

    Returns:
        The same key, narrowed to an allowed type.

    Raises:
        BadRequest: not EC P-256/P-384, Ed25519 or RSA 2048..4096 bits.
    """
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if isinstance(public_key.curve, _ALLOWED_EC_CURVES):
            return public_key
        raise BadRequest("unsupported EC curve (P-256 or P-384 only)")
    if isinstance(public_key, rsa.RSAPublicKey):
        if _RSA_MIN_BITS <= public_key.key_size <= _RSA_MAX_BITS:
            return public_key
        raise BadRequest(f"RSA key size must be {_RSA_MIN_BITS}..{_RSA_MAX_BITS} bits")
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return public_key
    raise BadRequest("unsupported public key type (EC P-256/P-384, Ed25519 or RSA only)")


def _requested_sans(extensions: x509.Extensions) -> list[x509.GeneralName]:
    """Check the CSR's extension requests and return the SANs to copy into the leaf.

    Args:
        extensions: the CSR's requested extensions.

    Returns:
        The requested DNS, IP, URI and e-mail names, in order and without duplicates, minus
        every URI with the ``nova:`` scheme (case-insensitive).

    Raises:
        BadRequest: an extension other than SAN, BasicConstraints(ca=False), KeyUsage or
            ExtendedKeyUsage; a CA request; more than ``MAX_SAN_COUNT`` names; an empty or
            over-long name; an IP network; or another kind of general name.
    """
    names: list[x509.GeneralName] = []
    for extension in extensions:
        oid = extension.oid
        if oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME:
            value = extension.value
            assert isinstance(value, x509.SubjectAlternativeName)
            names.extend(value)
        elif oid == ExtensionOID.BASIC_CONSTRAINTS:
            value = extension.value
            assert isinstance(value, x509.BasicConstraints)
            if value.ca:
                raise BadRequest("CSR requests a CA certificate")
        elif oid not in _IGNORED_REQUEST_EXTENSIONS:
            raise BadRequest(f"CSR requests an unsupported extension ({oid.dotted_string})")
    if len(names) > MAX_SAN_COUNT:
        raise BadRequest(f"CSR requests more than {MAX_SAN_COUNT} subject alternative names")
    kept: list[x509.GeneralName] = []
    for name in names:
        if isinstance(name, x509.IPAddress):
            if not isinstance(name.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
                raise BadRequest("IP address SAN must be a single address")
        elif isinstance(name, x509.DNSName | x509.UniformResourceIdentifier | x509.RFC822Name):
            if not name.value:
                raise BadRequest("empty subject alternative name")
            if len(name.value) > MAX_SAN_LENGTH:
                raise BadRequest(f"subject alternative name longer than {MAX_SAN_LENGTH}")
            if isinstance(name, x509.UniformResourceIdentifier) and _is_nova_uri(name.value):
                continue  # only the KMS binds identities in the nova: scheme
        else:
            raise BadRequest("unsupported subject alternative name type")
        if name not in kept:
            kept.append(name)
    return kept


def _is_nova_uri(uri: str) -> bool:
    """Whether ``uri`` uses the reserved ``nova:`` scheme (schemes are case-insensitive).

    Args:
        uri: a requested URI SAN.

    Returns:
        True for ``nova:…`` in any letter case, ignoring surrounding whitespace.
    """
    return uri.strip().lower().startswith("nova:")


def _leaf_subject(subject: x509.Name, app_id: int) -> x509.Name:
    """The leaf's subject: the CSR's, or ``CN=nova-app-<app_id>`` when that is empty.

    Args:
        subject: the CSR's subject.
        app_id: the app id (already checked).

    Returns:
        The subject name to put in the leaf.

    Raises:
        BadRequest: longer than ``MAX_SUBJECT_BYTES`` of DER, or equal to the CA's own name
            (a self-issued-looking leaf).
    """
    if len(subject) == 0:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"nova-app-{app_id}")])
    if len(subject.public_bytes()) > MAX_SUBJECT_BYTES:
        raise BadRequest(f"CSR subject longer than {MAX_SUBJECT_BYTES} bytes")
    if subject == _ca_name(app_id):
        raise BadRequest("CSR subject must differ from the CA's name")
    for attribute in subject:
        named = _issued_name_app(attribute.value)
        if named is None:
            continue
        app, is_ca = named
        if is_ca or app != app_id:
            raise BadRequest(
                f"CSR subject holds a name the KMS issues ({attribute.rfc4514_string()}): a "
                "leaf may carry its own app's default name only, never a CA's",
                reason="foreign_name",
            )
    return subject


# The names the KMS itself gives an app: its leaves' default CN and its CA's CN.
_ISSUED_NAMES = (
    re.compile(r"nova-app-0*([0-9]{1,20})", re.IGNORECASE),
    re.compile(r"nova\s+kms\s+app\s+0*([0-9]{1,20})\s+ca", re.IGNORECASE),
)


def _issued_name_app(value: object) -> tuple[int, bool] | None:
    """(app id, is the CA's name) when ``value`` is a KMS-issued name (any case and padding)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    for is_ca, pattern in enumerate(_ISSUED_NAMES):
        match = pattern.fullmatch(text)
        if match is not None:
            return int(match.group(1)), bool(is_ca)
    return None


def _leaf_days(days: int | None, *, max_days: int, default_days: int) -> int:
    """Resolve the requested validity in days.

    Args:
        days: the request's value, or None for the default.
        max_days: the cap (``>= 1``).
        default_days: used when ``days`` is None (``>= 1``; capped to ``max_days`` too).

    Returns:
        The number of days the leaf is valid, ``1 .. max_days``.

    Raises:
        BadRequest: ``days`` is not an int, or below 1.
        ValueError: ``max_days`` or ``default_days`` below 1 (configuration error).
    """
    if max_days < 1 or default_days < 1:
        raise ValueError("max_days and default_days must be >= 1")
    if days is None:
        return min(default_days, max_days)
    if isinstance(days, bool) or not isinstance(days, int):
        raise BadRequest("days must be an integer")
    if days < 1:
        raise BadRequest("days must be >= 1")
    return min(days, max_days)


def _serial(serial_bytes: Callable[[int], bytes]) -> int:
    """A positive, non-zero 127-bit serial number from the caller's RNG.

    Args:
        serial_bytes: returns that many bytes from a CSPRNG (the caller supplies it).

    Returns:
        The serial: the 128 random bits with the top bit cleared (so it is positive and its
        DER encoding fits 16 octets), and 1 if that is zero.

    Raises:
        ValueError: the RNG returned the wrong number of bytes.
    """
    raw = serial_bytes(_SERIAL_BYTES)
    if not isinstance(raw, bytes | bytearray) or len(raw) != _SERIAL_BYTES:
        raise ValueError(f"serial_bytes must return exactly {_SERIAL_BYTES} bytes")
    serial = int.from_bytes(raw, "big") & ((1 << (8 * _SERIAL_BYTES - 1)) - 1)
    return serial or 1


def _utc_seconds(now: datetime) -> datetime:
    """``now`` in UTC, truncated to whole seconds (X.509 time precision).

    Args:
        now: an aware datetime.

    Returns:
        The same instant in UTC, without microseconds.

    Raises:
        ValueError: ``now`` is naive.
        TypeError: ``now`` is not a datetime.
    """
    if not isinstance(now, datetime):
        raise TypeError("now must be a datetime")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC).replace(microsecond=0)


def _key_usage(public_key: _LeafPublicKey) -> x509.KeyUsage:
    """The leaf's KeyUsage for its key type.

    Args:
        public_key: the leaf's (checked) public key.

    Returns:
        digitalSignature, plus keyEncipherment for RSA or keyAgreement for EC.
    """
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
        data_encipherment=False,
        key_agreement=isinstance(public_key, ec.EllipticCurvePublicKey),
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


# --- issuing ------------------------------------------------------------------------------


def sign_csr(
    *,
    master_secret: bytes,
    app_id: int,
    csr: bytes | str,
    days: int | None,
    now: datetime,
    serial_bytes: Callable[[int], bytes],
    max_days: int = MAX_LEAF_DAYS,
    default_days: int = DEFAULT_LEAF_DAYS,
) -> IssuedCertificate:
    """Issue a leaf certificate for ``csr``, signed by the app's CA.

    The CSR must be validly self-signed with an EC P-256/P-384, Ed25519 or RSA 2048..4096-bit
    key. It may request only SubjectAlternativeName, BasicConstraints(ca=False), KeyUsage and
    ExtendedKeyUsage; the last three are ignored (the KMS sets its own). The leaf gets:

    * the CSR's subject (``CN=nova-app-<app_id>`` when empty);
    * the CSR's DNS, IP, URI and e-mail SANs, except URIs in the ``nova:`` scheme, plus
      ``nova://app/<app_id>`` (so the SAN extension is never empty; it is not critical, as
      the subject is never empty either);
    * validity ``now - CLOCK_SKEW`` to ``now + days`` (``days`` defaults to ``default_days``
      and is capped to ``max_days``);
    * a random positive 127-bit serial from ``serial_bytes(16)``;
    * BasicConstraints(ca=False) and KeyUsage (digitalSignature, plus keyEncipherment for RSA
      or keyAgreement for EC), both critical; ExtendedKeyUsage serverAuth + clientAuth;
      SubjectKeyIdentifier; AuthorityKeyIdentifier of the app CA.

    Args:
        master_secret: the 32-byte cluster master secret.
        app_id: the authenticated caller's app id (from the chain), ``0 .. MAX_APP_ID``.
        csr: the request: PEM text, PEM bytes or DER bytes, at most ``MAX_CSR_BYTES``.
        days: requested validity in days, or None for ``default_days``.
        now: the current time, timezone-aware.
        serial_bytes: RNG returning the requested number of random bytes.
        max_days: longest validity; longer requests are capped to it.
        default_days: validity when ``days`` is None.

    Returns:
        The leaf and CA certificates (PEM), the serial and the validity period.

    Raises:
        TooLarge: the CSR is larger than ``MAX_CSR_BYTES``.
        BadRequest: the CSR cannot be parsed, its signature is invalid, its key type or size
            is not allowed, it requests a CA or an unsupported extension, its SANs or subject
            break the limits, or ``days`` is below 1.
        ValueError: bad master secret, app id, naive ``now``, ``serial_bytes`` returning the
            wrong length, or ``max_days``/``default_days`` below 1 (programmer errors).
        TypeError: an argument of the wrong type.
    """
    _check_app_id(app_id)
    start = _utc_seconds(now)
    valid_days = _leaf_days(days, max_days=max_days, default_days=default_days)

    request = _load_csr(csr)
    try:
        # Everything here decodes attacker-controlled DER lazily; any failure is the CSR's.
        if not request.is_signature_valid:
            raise BadRequest("CSR signature is invalid")
        public_key = _check_public_key(request.public_key())
        sans = _requested_sans(request.extensions)
        subject = _leaf_subject(request.subject, app_id)
    except _CSR_DECODE_ERRORS:
        raise BadRequest("CSR cannot be parsed") from None
    sans.append(x509.UniformResourceIdentifier(f"{APP_URI_PREFIX}{app_id}"))

    ca_key = derive_ca_key(master_secret=master_secret, app_id=app_id)
    ca_cert = _build_ca_certificate(ca_key, app_id)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value

    serial = _serial(serial_bytes)
    not_before = start - CLOCK_SKEW
    not_after = min(start + timedelta(days=valid_days), CA_CERT_NOT_AFTER)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(public_key), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )
    try:
        leaf = builder.sign(ca_key, hashes.SHA256(), ecdsa_deterministic=True)
    except ValueError:
        # The only inputs that can fail to encode here come from the CSR (subject, SANs).
        raise BadRequest("CSR contents cannot be encoded in a certificate") from None
    return IssuedCertificate(
        certificate_pem=leaf.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        serial=serial,
        not_before=not_before,
        not_after=not_after,
    )
