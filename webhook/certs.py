"""Certificates: a CA and ECDSA P-256 serving certificates (pure building, shared with the
self-managed CA in selfsigned.py), and the development CA files of `secret-injector certs`.

For `make run`, tests and kind clusters only: production certificates come from
cert-manager, an existing Secret or the self-managed CA (certs/README.md).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVING_DAYS = 365
# A serving certificate closer than this to its end is issued again by `certs`.
RENEW_BEFORE = datetime.timedelta(days=30)
# notBefore this far in the past: nodes' clocks are not exactly in step.
BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class CertFiles:
    """Where `write_dev_certs` put the PEM files (Kubernetes TLS Secret names)."""

    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path

    @classmethod
    def under(cls, directory: str | Path) -> CertFiles:
        out = Path(directory)
        return cls(out / "ca.crt", out / "ca.key", out / "tls.crt", out / "tls.key")


@dataclass(frozen=True, slots=True)
class Authority:
    """A CA certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def cluster_names(service: str, namespace: str) -> list[str]:
    """The DNS names the API server may use to reach a Service."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def service_names(service: str, namespace: str) -> list[str]:
    """The Service's cluster names plus localhost: what a development certificate names."""
    return [*cluster_names(service, namespace), "localhost"]


def make_authority(
    common_name: str = "secret-injector development CA",
    *,
    now: datetime.datetime | None = None,
    lifetime: datetime.timedelta = datetime.timedelta(days=CA_DAYS),
) -> Authority:
    """A new self-signed CA (ECDSA P-256) that may only sign end-entity certificates."""
    now = now or _now()
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


def issue_serving_cert(
    ca: Authority,
    dns_names: Sequence[str],
    ips: Sequence[str] = ("127.0.0.1",),
    *,
    now: datetime.datetime | None = None,
    lifetime: datetime.timedelta = datetime.timedelta(days=SERVING_DAYS),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """An ECDSA P-256 server certificate for `dns_names` and `ips`, signed by `ca` and
    never outliving it."""
    now = now or _now()
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(dns_names[0]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + lifetime, ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return cert, key


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def write_dev_certs(
    out: str | Path,
    service: str = "secret-injector",
    namespace: str = "secret-injector",
    *,
    force: bool = False,
) -> tuple[CertFiles, bool]:
    """Write ca.crt/ca.key/tls.crt/tls.key under `out`; returns the files and whether
    anything was (re)written.

    An existing CA is kept (so a CA already trusted stays trusted); the serving
    certificate is issued again when it is missing, near its end, for other names,
    or not signed by that CA. `force` starts over with a new CA.
    """
    files = CertFiles.under(out)
    Path(out).mkdir(parents=True, exist_ok=True)
    names = service_names(service, namespace)
    ca = None if force else read_authority(files)
    if ca is not None and not force and _is_current(files, ca, names):
        return files, False
    if ca is None:
        ca = make_authority()
        write_pem(files.ca_key, key_pem(ca.key), private=True)
        write_pem(files.ca_cert, cert_pem(ca.cert))
    cert, key = issue_serving_cert(ca, names)
    write_pem(files.key, key_pem(key), private=True)
    write_pem(files.cert, cert_pem(cert))
    return files, True


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_pem(path: Path, data: bytes, *, private: bool = False) -> None:
    """Replace `path` atomically; private keys are created 0600 (never briefly wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o600 if private else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_authority(files: CertFiles) -> Authority | None:
    try:
        cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or cert.public_key() != key.public_key():
        return None
    if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return None
    return Authority(cert, key)


def _is_current(files: CertFiles, ca: Authority, names: list[str]) -> bool:
    """The serving pair exists, matches, is signed by `ca`, names `names`, is not near its end."""
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        cert.verify_directly_issued_by(ca.cert)
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    if not isinstance(key, ec.EllipticCurvePrivateKey) or cert.public_key() != key.public_key():
        return False
    if set(sans.get_values_for_type(x509.DNSName)) != set(names):
        return False
    return cert.not_valid_after_utc - _now() >= RENEW_BEFORE


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
