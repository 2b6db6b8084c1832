"""A throwaway self-signed certificate for localhost / 127.0.0.1, made as the admin makes its own."""

from __future__ import annotations

import datetime
import os

from salvusctl.admin.certs import makeSelfSigned


def makeCertificate(directory: str) -> tuple[str, str]:
    """Write key.pem and cert.pem into C{directory}; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    key_pem, cert_pem = makeSelfSigned("localhost", datetime.datetime.now(datetime.UTC), days=2)
    key_path = os.path.join(directory, "key.pem")
    cert_path = os.path.join(directory, "cert.pem")
    with open(key_path, "wb") as f:
        f.write(key_pem)
    with open(cert_path, "wb") as f:
        f.write(cert_pem)
    return key_path, cert_path
