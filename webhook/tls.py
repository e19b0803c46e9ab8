"""The serving SSLContext from mounted cert/key files, reloaded when they change on disk.

How reload works: the context handed to the server never changes; its `sni_callback`
(called by OpenSSL on every ClientHello, with or without SNI, on asyncio and uvloop
alike) points each new connection at the newest good context with
`SSLObject.context = ...` (SSL_set_SSL_CTX). A new pair is loaded into a fresh context
first, so a half-written or mismatched pair never touches what is being served:
loading a new chain into the live context would leave it without a usable key if the
key did not match (OpenSSL drops the old key when the new certificate does not fit it).

Mounted Secrets change by an atomic symlink swap that inotify on the file does not see,
so the files' contents are hashed every `tls.reloadIntervalSeconds`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from webhook.errors import ConfigError
from webhook.metrics import Metrics
from webhook.settings import Tls

log = logging.getLogger("secret_injector.tls")

# TLS 1.2: forward secrecy (ECDHE) and AEAD ciphers only; TLS 1.3 suites are all AEAD.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class TlsError(ConfigError):
    """The serving certificate or key cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """One certificate/key pair loaded into its own context."""

    context: ssl.SSLContext
    fingerprint: str  # sha256 of the two files' bytes, to notice a change
    not_after: float  # Unix time the certificate expires
    subject: str


def new_context() -> ssl.SSLContext:
    """A server context with our protocol floor and cipher list, and no certificate yet."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_NO_RENEGOTIATION
    return context


def check_key_permissions(key_file: str | Path) -> None:
    """Refuse a key that every user on the node can read or write.

    Group access is allowed: a Secret mounted with `defaultMode: 0440` (or with an
    fsGroup) is group-readable, and that is the usual way to give a non-root user a key.
    """
    try:
        mode = os.stat(key_file).st_mode  # follows the ..data symlink of a mounted Secret
    except OSError as exc:
        raise TlsError(f"{key_file}: cannot read the TLS key: {exc.strerror}") from None
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise TlsError(
            f"{key_file}: the TLS key is world-{'readable' if mode & stat.S_IROTH else 'writable'}"
            f" (mode {stat.S_IMODE(mode):04o}); make it 0600, or 0440 for a Kubernetes Secret"
            " volume (defaultMode: 0440)"
        )


def load(settings: Tls) -> Loaded:
    """Read and check the pair named in `settings` into a fresh context; raises TlsError."""
    check_key_permissions(settings.key_file)
    try:
        cert_bytes = Path(settings.cert_file).read_bytes()
        key_bytes = Path(settings.key_file).read_bytes()
    except OSError as exc:
        raise TlsError(f"{exc.filename}: cannot read: {exc.strerror}") from None
    try:
        cert = x509.load_pem_x509_certificate(cert_bytes)
    except ValueError:
        raise TlsError(f"{settings.cert_file}: not a PEM certificate") from None
    context = new_context()
    try:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    except ssl.SSLError as exc:
        raise TlsError(
            f"{settings.cert_file}, {settings.key_file}: not a usable certificate and key "
            f"({exc.reason or exc})"
        ) from None
    except OSError as exc:
        raise TlsError(f"{exc.filename}: cannot read: {exc.strerror}") from None
    # The files may have changed between reading and loading: the next poll sees it.
    fingerprint = hashlib.sha256(cert_bytes + b"\0" + key_bytes).hexdigest()
    return Loaded(
        context=context,
        fingerprint=fingerprint,
        not_after=cert.not_valid_after_utc.timestamp(),
        subject=cert.subject.rfc4514_string(),
    )


class ReloadingContext:
    """The context to serve with, following the files on disk."""

    def __init__(self, settings: Tls, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._current = load(settings)  # raises TlsError: refuse to start
        # The content and key mode of the last pair refused: not tried again until one changes.
        self._failed: tuple[str, int | None] | None = None
        # The first pair's context is the one the server holds; later pairs are switched to.
        self.server_context = self._current.context
        self.server_context.sni_callback = self._select
        self._metrics.certificate_expiry.set(self._current.not_after)
        log.info(
            "serving certificate loaded",
            extra={"subject": self._current.subject, "not_after": self._current.not_after},
        )

    @property
    def current(self) -> Loaded:
        return self._current

    def _select(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        # Runs inside every handshake: one attribute assignment, no I/O.
        del server_name
        if connection.context is not self._current.context:
            connection.context = self._current.context

    def _key_mode(self) -> int | None:
        try:
            return os.stat(self._settings.key_file).st_mode
        except OSError:
            return None

    def _fingerprint_on_disk(self) -> str | None:
        try:
            cert_bytes = Path(self._settings.cert_file).read_bytes()
            key_bytes = Path(self._settings.key_file).read_bytes()
        except OSError:
            return None
        return hashlib.sha256(cert_bytes + b"\0" + key_bytes).hexdigest()

    def reload_if_changed(self) -> bool:
        """Load the files if their content changed; True when a new pair is now served.

        A broken new pair (unreadable, mismatched, world-readable key) keeps the old one
        and logs why, once per distinct content (and key mode: fixing the permissions of a
        refused key gets it loaded).
        """
        fingerprint = self._fingerprint_on_disk()
        if fingerprint is None or fingerprint == self._current.fingerprint:
            return False
        # A pair refused for its key's permissions is tried again once they are fixed.
        attempt = (fingerprint, self._key_mode())
        if attempt == self._failed:
            return False
        try:
            loaded = load(self._settings)
        except TlsError as exc:
            self._failed = attempt
            log.error(
                "new TLS certificate or key not loaded; still serving the previous one",
                extra={"reason": str(exc), "subject": self._current.subject},
            )
            return False
        if loaded.fingerprint == self._current.fingerprint:
            return False
        self._current = loaded
        self._failed = None
        self._metrics.certificate_expiry.set(loaded.not_after)
        log.info(
            "serving certificate reloaded",
            extra={"subject": loaded.subject, "not_after": loaded.not_after},
        )
        return True

    async def watch(self) -> None:
        """Poll the files forever (cancel to stop); a reload never fails a handshake."""
        interval = self._settings.reload_interval_seconds
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            try:
                self.reload_if_changed()
            except Exception:  # a bug here must not stop future reloads
                log.exception("TLS reload check failed")
