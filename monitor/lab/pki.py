"""A throwaway PKI for the tests and the demo: root, intermediate, responders, leaves, staples.

Everything is made with cryptography's builders (OCSPResponseBuilder for the
responses), so the bytes are what a real CA and responder would produce.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

DAY = timedelta(days=1)
Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key."""

    cert: x509.Certificate
    key: Key

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "staple-monitor lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _key(kind: str = "ec") -> Key:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def _hash(key: Key) -> hashes.SHA256 | None:
    # Ed25519 signs the message itself: cryptography wants no hash for it.
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _builder(
    subject: x509.Name, issuer: x509.Name, key: Key, now: datetime, days: int
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY)
        .not_valid_after(now + days * DAY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def make_root(cn: str, now: datetime, *, key_type: str = "ec") -> Issued:
    """A self-signed root CA (``key_type`` ec, rsa or ed25519)."""
    key = _key(key_type)
    cert = (
        _builder(_name(cn), _name(cn), key, now, 3650)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .sign(key, _hash(key))
    )
    return Issued(cert, key)


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _aki(issuer: Issued) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())


def make_intermediate(cn: str, root: Issued, now: datetime, *, key_type: str = "ec") -> Issued:
    """A CA certificate issued by ``root``."""
    key = _key(key_type)
    cert = (
        _builder(_name(cn), root.cert.subject, key, now, 1825)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(_aki(root), critical=False)
        .sign(root.key, _hash(root.key))
    )
    return Issued(cert, key)


def make_responder(
    cn: str, ca: Issued, now: datetime, *, ocsp_signing: bool = True, key_type: str = "ec"
) -> Issued:
    """A delegated OCSP responder certificate issued by ``ca`` (RFC 6960 4.2.2.2)."""
    key = _key(key_type)
    builder = (
        _builder(_name(cn), ca.cert.subject, key, now, 365)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_aki(ca), critical=False)
    )
    if ocsp_signing:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
        ).add_extension(x509.OCSPNoCheck(), critical=False)
    return Issued(builder.sign(ca.key, _hash(ca.key)), key)


def make_leaf(
    names: list[str],
    ca: Issued,
    now: datetime,
    *,
    ocsp_url: str | None,
    must_staple: bool = False,
    days: int = 90,
    client: bool = False,
) -> Issued:
    """A TLS server (or, with ``client``, client) certificate for ``names``."""
    key = _key()
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    builder = (
        _builder(_name(names[0]), ca.cert.subject, key, now, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(_aki(ca), critical=False)
    )
    if ocsp_url:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(ocsp_url),
                    )
                ]
            ),
            critical=False,
        )
    if must_staple:
        builder = builder.add_extension(
            x509.TLSFeature([x509.TLSFeatureType.status_request]), critical=False
        )
    return Issued(builder.sign(ca.key, _hash(ca.key)), key)


def make_response(
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    signer: Issued,
    *,
    this_update: datetime,
    next_update: datetime | None,
    status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
    revocation_time: datetime | None = None,
    revocation_reason: x509.ReasonFlags | None = None,
    include_signer: bool = False,
    by_key: bool = False,
    hash_algorithm: hashes.HashAlgorithm | None = None,
) -> bytes:
    """A DER OCSPResponse about ``leaf``, signed by ``signer``.

    cryptography's builder makes one SingleResponse per response; the tests make
    multi-certificate responses with ``openssl ocsp`` instead.
    """
    algorithm = hash_algorithm or hashes.SHA1()  # noqa: S303 - RFC 6960's common CertID hash
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=leaf,
        issuer=issuer,
        algorithm=algorithm,
        cert_status=status,
        this_update=this_update,
        next_update=next_update,
        revocation_time=revocation_time,
        revocation_reason=revocation_reason,
    )
    encoding = ocsp.OCSPResponderEncoding.HASH if by_key else ocsp.OCSPResponderEncoding.NAME
    builder = builder.responder_id(encoding, signer.cert)
    if include_signer:
        builder = builder.certificates([signer.cert])
    response = builder.sign(signer.key, _hash(signer.key))
    return response.public_bytes(serialization.Encoding.DER)


def unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    """A DER OCSPResponse with a non-successful status (tryLater, internalError ...)."""
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )


def utcnow() -> datetime:
    """The lab's clock (the verdict itself never reads one)."""
    return datetime.now(UTC).replace(microsecond=0)


def write(path: Path, *parts: bytes) -> Path:
    """Write concatenated PEM/DER parts to ``path`` (mode 0600 for keys is the caller's choice)."""
    path.write_bytes(b"".join(parts))
    return path
