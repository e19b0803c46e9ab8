"""Serving certificates for the benchmark: ECDSA P-256, as recommended in production.

Uses the project's `secret-injector certs` when it is there (the same certificates as
`make run`), else makes a CA and a serving certificate with cryptography directly.
"""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True, slots=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def make(directory: Path, repo: Path) -> Certs:
    """Certificates for 127.0.0.1/localhost under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    if (repo / "webhook" / "certs.py").exists():
        found = _project_certs(directory, repo)
        if found is not None:
            return found
    return _own_certs(directory)


def _project_certs(directory: Path, repo: Path) -> Certs | None:
    proc = subprocess.run(
        [sys.executable, "-m", "webhook", "certs", "--out", str(directory)],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    certs = Certs(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
    if proc.returncode != 0 or not all(p.exists() for p in (certs.ca, certs.cert, certs.key)):
        print(f"bench: secret-injector certs failed, using our own: {proc.stderr.strip()}")
        return None
    key = serialization.load_pem_private_key(certs.key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        print("bench: secret-injector certs made a non-ECDSA key, using our own")
        return None
    return certs


def _own_certs(directory: Path) -> Certs:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secret-injector bench CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    certs = Certs(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
    certs.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    certs.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certs.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    certs.key.chmod(0o600)
    return certs
