"""X.509 for the broker's TLS: the agency CA (ECDSA P-256), the certificates it issues to
devices, room panels, store workers and the broker, and its CRL. Pure: keys and
certificates in, objects or PEM/DER bytes out.

Example::

    ca_key, ca = make_ca("Example Agency", now)
    key = new_key()
    csr = parse_csr(make_csr(key, "bwc-1a2b3c4d"))          # checks its self-signature
    cert = issue(ca_key, ca, csr.public_key(), "bwc-1a2b3c4d", "client", now, days=365)
    check_issued(cert, ca, now, "client certificate")       # raises ProvisionError
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from evidence.names import SKEW_SECONDS, ProvisionError, iso

Usage = Literal["client", "server"]
PrivateKey = ec.EllipticCurvePrivateKey


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def new_key() -> PrivateKey:
    """P-256: what Mosquitto, paho and MicroPython's mbedTLS all speak."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def key_der(key: PrivateKey) -> bytes:
    """SEC1 ("EC PRIVATE KEY") DER, the form mbedTLS on MicroPython loads directly."""
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def load_key(data: bytes, what: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ProvisionError(f"{what} is not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ProvisionError(f"{what} is not an ECDSA P-256 key")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def panel_pem(panel_dir: Path) -> tuple[Path, Path]:
    """PEM copies (certificate, key) of a room panel's DER files, for CPython clients
    (paho loads PEM; MicroPython wants DER). Written next to them; returns their paths."""
    cert = x509.load_der_x509_certificate((panel_dir / "panel.crt.der").read_bytes())
    key = serialization.load_der_private_key((panel_dir / "panel.key.der").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cert_path, key_path = panel_dir / "panel.pem", panel_dir / "panel.key.pem"
    cert_path.write_bytes(cert_pem(cert))
    key_path.touch(mode=0o600)
    key_path.write_bytes(key_pem(key))
    return cert_path, key_path


def load_cert(data: bytes | str, what: str) -> x509.Certificate:
    raw = data.encode() if isinstance(data, str) else data
    try:
        return x509.load_pem_x509_certificate(raw)
    except ValueError:
        raise ProvisionError(f"{what} is not a PEM certificate") from None


def common_name(name: x509.Name) -> str:
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if len(cns) == 1 else ""


def same_key(a: ec.EllipticCurvePublicKey, b: object) -> bool:
    if not isinstance(b, ec.EllipticCurvePublicKey):
        return False
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return a.public_bytes(*fmt) == b.public_bytes(*fmt)


def make_ca(name: str, now: float, days: int = 3650) -> tuple[PrivateKey, x509.Certificate]:
    """A self-signed CA that signs certificates and CRLs, and nothing under another CA."""
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} broker CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_dt(now - SKEW_SECONDS))
        .not_valid_after(_dt(now + days * 86400))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_csr(key: PrivateKey, cn: str) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def parse_csr(pem: str | bytes) -> x509.CertificateSigningRequest:
    """A CSR whose self-signature verifies and whose key is P-256."""
    raw = pem.encode() if isinstance(pem, str) else pem
    try:
        csr = x509.load_pem_x509_csr(raw)
        valid = csr.is_signature_valid
    except ValueError:
        raise ProvisionError("CSR is not a PEM certificate signing request") from None
    if not valid:
        raise ProvisionError("CSR signature does not verify")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ProvisionError("CSR key is not ECDSA P-256")
    return csr


def issue(
    ca_key: PrivateKey,
    ca: x509.Certificate,
    public_key: object,
    cn: str,
    usage: Usage,
    now: float,
    days: int,
    sans: Sequence[str] = (),
) -> x509.Certificate:
    """A leaf certificate for ``cn``; it never outlives the CA."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ProvisionError("only ECDSA P-256 keys get certificates")
    check_valid(ca, now, "agency CA certificate")
    not_after = min(_dt(now + days * 86400), ca.not_valid_after_utc)
    eku = ExtendedKeyUsageOID.CLIENT_AUTH if usage == "client" else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_dt(now - SKEW_SECONDS))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_san(s) for s in sans]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256())


def _san(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def check_valid(cert: x509.Certificate, now: float, what: str) -> None:
    if now > cert.not_valid_after_utc.timestamp():
        raise ProvisionError(f"{what} expired on {iso(cert.not_valid_after_utc.timestamp())}")
    if now + SKEW_SECONDS < cert.not_valid_before_utc.timestamp():
        raise ProvisionError(
            f"{what} is not valid before {iso(cert.not_valid_before_utc.timestamp())}"
        )


def check_issued(cert: x509.Certificate, ca: x509.Certificate, now: float, what: str) -> None:
    """``cert`` was signed by ``ca`` and both are valid now."""
    check_valid(ca, now, "CA certificate")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise ProvisionError(f"{what} is not issued by the agency CA") from None
    check_valid(cert, now, what)


def make_crl(
    ca_key: PrivateKey,
    ca: x509.Certificate,
    revoked: Iterable[tuple[int, float]],
    now: float,
    number: int,
    days: int,
) -> bytes:
    """The CRL of ``(serial, revoked at)`` pairs, valid for ``days``: after that, OpenSSL
    refuses every client until a fresh one is installed (fail closed)."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(_dt(now - SKEW_SECONDS))
        .next_update(_dt(now + days * 86400))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    for serial, at in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(_dt(at)).build()
        )
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
