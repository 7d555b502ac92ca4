"""Helpers for the city-CA tests: the CA made as `ca init` makes it, `civicmail` as an operator
runs it, and a citizen's .p12 opened into the PEM files TLS clients and openssl take."""
from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from mailserver.config import REPO_ROOT
from mailserver.identity.ca import CityCA, crl_url

CLI = [sys.executable, str(REPO_ROOT / "bin" / "civicmail")]


def make_ca(config) -> CityCA:
    return CityCA.create(config.data_path(config.ca.dir), config.data_path(config.ca.root_dir), config.city.name,
                         config.city.domain, crl_url(config))


def civicmail(config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + ["-c", str(config.source), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def open_p12(p12: bytes, password: str, folder: Path) -> tuple[Path, x509.Certificate]:
    """``folder``/key.pem, cert.pem, chain.pem and all.pem (key + certificate + chain) of a .p12;
    returns all.pem and the certificate."""
    key, cert, extra = pkcs12.load_key_and_certificates(p12, password.encode())
    folder.mkdir(parents=True, exist_ok=True)
    parts = {"key.pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()),
             "cert.pem": cert.public_bytes(serialization.Encoding.PEM),
             "chain.pem": b"".join(c.public_bytes(serialization.Encoding.PEM) for c in extra)}
    for name, data in parts.items():
        (folder / name).write_bytes(data)
    (folder / "all.pem").write_bytes(parts["key.pem"] + parts["cert.pem"] + parts["chain.pem"])
    return folder / "all.pem", cert


def client_tls(pem: Path | None = None) -> ssl.SSLContext:
    """A client's TLS context, presenting the certificate in ``pem`` if given (the test server's
    own certificate is self-signed: not checked)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if pem is not None:
        ctx.load_cert_chain(pem)
    return ctx
