"""The admin's self-signed certificate: made once under C{var/}, identified by its fingerprint.

A default host has no certificate from a CA; it makes an EC P-256 key and a self-signed
certificate on first start and prints the SHA-256 fingerprint, which clients pin
(C{salvusctl --fingerprint}) or trust by file (C{--cacert var/admin/admin.crt}).
"""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["ensureCertificate", "fingerprintOf", "formatFingerprint", "makeSelfSigned"]


def formatFingerprint(digest: bytes) -> str:
    """C{AB:CD:…} (upper-case hex pairs), as C{openssl x509 -fingerprint -sha256} prints it."""
    return ":".join(f"{b:02X}" for b in digest)


def fingerprintOf(cert_pem: bytes) -> str:
    """The SHA-256 fingerprint of a PEM certificate."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return formatFingerprint(cert.fingerprint(hashes.SHA256()))


def makeSelfSigned(hostname: str, now: datetime.datetime, days: int = 3650) -> tuple[bytes, bytes]:
    """A new EC P-256 key and a self-signed certificate for C{hostname}, localhost and loopback.

    It is an end-entity certificate (C{CA:FALSE}, extended key usage C{serverAuth}): clients
    trust it by pinning it, and it can sign nothing else should its key leak.

    @return: (key PEM, certificate PEM)
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64] or "salvus")])
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    if hostname and hostname != "localhost":
        names.insert(0, x509.DNSName(hostname))
    names += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def ensureCertificate(directory: str, hostname: str, now: datetime.datetime) -> tuple[str, str, str, bool]:
    """Make the key and certificate under C{directory} unless they exist.

    @return: (key path, certificate path, fingerprint, whether they were just created)
    """
    key_path = os.path.join(directory, "admin.key")
    cert_path = os.path.join(directory, "admin.crt")
    created = False
    if not (os.path.exists(key_path) and os.path.exists(cert_path)):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        key_pem, cert_pem = makeSelfSigned(hostname, now)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        with open(cert_path, "wb") as f:
            f.write(cert_pem)
        created = True
    with open(cert_path, "rb") as f:
        fingerprint = fingerprintOf(f.read())
    return key_path, cert_path, fingerprint, created
