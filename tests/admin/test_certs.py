"""The self-signed certificate the default host makes on first start."""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.admin.certs import ensureCertificate, fingerprintOf
from tests.admin.helpers import tempDir

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


class CertificateTests(SynchronousTestCase):
    def test_madeOnceAndReused(self):
        """First start makes an EC P-256 key (0600) and certificate; later starts reuse them."""
        directory = os.path.join(tempDir(self), "admin")
        key, cert, fingerprint, created = ensureCertificate(directory, "web1.example.org", NOW)
        self.assertTrue(created)
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(directory).st_mode & 0o777, 0o700)
        again = ensureCertificate(directory, "web1.example.org", NOW)
        self.assertEqual(again, (key, cert, fingerprint, False))
        with open(cert, "rb") as f:
            pem = f.read()
        self.assertEqual(fingerprintOf(pem), fingerprint)
        certificate = x509.load_pem_x509_certificate(pem)
        self.assertIsInstance(certificate.public_key().curve, ec.SECP256R1)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(names.get_values_for_type(x509.DNSName), ["web1.example.org", "localhost"])
        self.assertIn(ipaddress.ip_address("127.0.0.1"), names.get_values_for_type(x509.IPAddress))
        self.assertEqual(certificate.not_valid_after_utc.year, 2035)

    def test_endEntityForServers(self):
        """The certificate cannot act as a CA (CA:FALSE) and is for TLS servers only (serverAuth)."""
        directory = os.path.join(tempDir(self), "admin")
        _key, cert, _fingerprint, _created = ensureCertificate(directory, "web1.example.org", NOW)
        with open(cert, "rb") as f:
            certificate = x509.load_pem_x509_certificate(f.read())
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        self.assertFalse(constraints.value.ca)
        self.assertTrue(constraints.critical)
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertEqual(list(usage), [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH])
