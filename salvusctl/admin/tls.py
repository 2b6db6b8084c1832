"""The admin's TLS listener: TLS 1.2 or later, AEAD cipher suites only.

Twisted's C{ssl:} endpoint string takes OpenSSL's defaults, which still offer CBC suites with
TLS 1.2 (SHA-1 and SHA-256 MACs, the kind that Lucky13-style padding oracles attack).  The admin
carries passwords in every request, so its listener is built here from
L{twisted.internet.ssl.CertificateOptions} instead: C{raiseMinimumTo=TLSv1_2} refuses SSL 3,
TLS 1.0 and 1.1, and the TLS 1.2 suites are ECDHE with AES-GCM or ChaCha20-Poly1305 (forward
secret and authenticated encryption).  TLS 1.3's suites are all AEAD and stay as OpenSSL offers
them.  The endpoint string keeps its usual keys (C{port}, C{interface}, C{backlog},
C{privateKey}, C{certKey}, C{extraCertChain}, C{dhParameters}).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["AEAD_CIPHERS", "tlsOptions", "tlsEndpoint"]

#: OpenSSL cipher string of the TLS 1.2 suites offered: ECDHE key exchange, AEAD encryption.
AEAD_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def tlsOptions(private_key: str, cert_key: str | None = None, extra_cert_chain: str | None = None,
               dh_parameters: str | None = None) -> Any:
    """The L{CertificateOptions} of the admin's TLS listener for these PEM files.

    @param private_key: the key's PEM file (it may hold the certificate too, as with C{ssl:}).
    @param cert_key: the certificate's PEM file (default: C{private_key}).
    @param extra_cert_chain: PEM certificates from the CA to the certificate's issuer.
    @param dh_parameters: a DH parameters file (unused by the ECDHE-only suites; accepted so an
        endpoint string written for C{ssl:} still loads).
    @raise ValueError: a file is missing or holds no key or certificate.
    """
    from twisted.internet import ssl

    try:
        key_pem = _read(private_key)
        cert_pem = _read(cert_key or private_key)
        certificate = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
        chain = None
        if extra_cert_chain is not None:
            chain = [ssl.Certificate.loadPEM(pem).original for pem in _CERT.findall(_read(extra_cert_chain))]
            if not chain:
                raise ValueError(f"{extra_cert_chain} holds no PEM certificate")
        dh = ssl.DiffieHellmanParameters.fromFile(_filePath(dh_parameters)) if dh_parameters else None
    except ValueError:
        raise
    except Exception as e:  # OSError, OpenSSL's errors: one line naming the cause
        raise ValueError(f"cannot load the TLS key or certificate: {type(e).__name__}: {e}") from e
    return ssl.CertificateOptions(
        privateKey=certificate.privateKey.original,
        certificate=certificate.original,
        extraCertChain=chain,
        dhParameters=dh,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        acceptableCiphers=ssl.AcceptableCiphers.fromOpenSSLCipherString(AEAD_CIPHERS),
    )


def _filePath(path: str) -> Any:
    from twisted.python.filepath import FilePath

    return FilePath(path)


def tlsEndpoint(reactor: Any, description: str, private_key: str | None = None,
                cert_key: str | None = None) -> Any:
    """A server endpoint for an C{ssl:} endpoint string, with L{tlsOptions}.

    @param private_key: the key file when the string names none (the admin's own certificate).
    @param cert_key: the certificate file that goes with C{private_key}.
    @raise ValueError: the string is not C{ssl:}, asks for C{sslmethod=} (the versions are fixed
        here), or its files do not load.
    """
    from twisted.internet.endpoints import SSL4ServerEndpoint

    from salvusctl.endpoints import parseEndpoint

    parsed = parseEndpoint(description)
    if parsed.kind != "ssl":
        raise ValueError(f"{description!r} is not an ssl: endpoint")
    args, kwargs = parsed.args, parsed.options
    if len(args) > 1:
        raise ValueError(f"{description!r}: give the options after the port as name=value")
    if "sslmethod" in kwargs:
        raise ValueError(f"{description!r}: sslmethod= is not supported; the admin accepts TLS 1.2 and 1.3")
    unknown = set(kwargs) - {"port", "interface", "backlog", "privateKey", "certKey", "extraCertChain",
                             "dhParameters"}
    if unknown:
        raise ValueError(f"{description!r}: unknown option {sorted(unknown)[0]}=")
    port = kwargs.get("port", args[0] if args else None)
    if port is None:
        raise ValueError(f"{description!r} names no port")
    key = kwargs.get("privateKey", private_key)
    cert = kwargs.get("certKey", cert_key if "privateKey" not in kwargs else None)
    if key is None:
        raise ValueError(f"{description!r} names no privateKey=")
    options = tlsOptions(key, cert, kwargs.get("extraCertChain"), kwargs.get("dhParameters"))
    return SSL4ServerEndpoint(reactor, int(port), options, backlog=int(kwargs.get("backlog", 50)),
                              interface=kwargs.get("interface", ""))
