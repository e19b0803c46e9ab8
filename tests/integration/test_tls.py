"""TLS over real sockets: protocol floor, ciphers, key permissions, reload without restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from webhook import certs
from webhook.app import Server
from webhook.errors import ConfigError
from webhook.metrics import Metrics
from webhook.settings import Settings
from webhook.tls import ReloadingContext, TlsError, check_key_permissions


@contextlib.contextmanager
def legacy_protocols() -> Iterator[None]:
    """Setting TLS 1.0/1.1 on a context warns (deprecated): that is what we test here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


async def handshake(port: int, context: ssl.SSLContext) -> ssl.SSLObject:
    """Connect with `context` and return the TLS session (raises on a refused handshake)."""
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    session: ssl.SSLObject = writer.get_extra_info("ssl_object")
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await writer.wait_closed()
    return session


async def served_serial(port: int, context: ssl.SSLContext) -> int:
    der = (await handshake(port, context)).getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@contextlib.asynccontextmanager
async def permissive_server(files: certs.CertFiles) -> AsyncIterator[int]:
    """A stdlib TLS server accepting anything OpenSSL can speak: proves a client config
    would work, so its failure against our server is our server's refusal."""
    with legacy_protocols():
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.set_ciphers("ALL:@SECLEVEL=0")
    context.load_cert_chain(files.cert, files.key)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def client_context(
    files: certs.CertFiles,
    *,
    maximum: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(files.ca_cert))
    with legacy_protocols():
        if maximum is not None:
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = maximum
        if ciphers is not None:
            context.set_ciphers(ciphers)
    return context


async def test_plain_http_on_the_tls_port_is_refused(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(1024), timeout=5)
    writer.close()
    assert not answer.startswith(b"HTTP/")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            await session.get(f"http://127.0.0.1:{server.port}/healthz")


@pytest.mark.parametrize(
    ("maximum", "ciphers"),
    [
        pytest.param(ssl.TLSVersion.TLSv1_1, "ALL:@SECLEVEL=0", id="tls1.1"),
        pytest.param(ssl.TLSVersion.TLSv1, "ALL:@SECLEVEL=0", id="tls1.0"),
        pytest.param(ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA256", id="tls1.2-cbc"),
        pytest.param(ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES256-SHA", id="tls1.2-sha1-cbc"),
    ],
)
async def test_old_protocols_and_weak_ciphers_are_refused(
    server: Server, dev_certs: certs.CertFiles, maximum: ssl.TLSVersion, ciphers: str
) -> None:
    weak = client_context(dev_certs, maximum=maximum, ciphers=ciphers)
    async with permissive_server(dev_certs) as control_port:
        await handshake(control_port, weak)  # this client config works elsewhere
    # asyncio's server side may reset the connection before its alert is read.
    with pytest.raises((ssl.SSLError, ConnectionResetError)) as refused:
        await handshake(server.port, weak)
    if isinstance(refused.value, ssl.SSLError):
        assert refused.value.reason in {
            "TLSV1_ALERT_PROTOCOL_VERSION",
            "SSLV3_ALERT_HANDSHAKE_FAILURE",
            "NO_SHARED_CIPHER",
        }


@pytest.mark.parametrize(
    ("maximum", "ciphers", "version"),
    [
        pytest.param(ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256", "TLSv1.2", id="gcm"),
        pytest.param(
            ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-CHACHA20-POLY1305", "TLSv1.2", id="chacha"
        ),
        pytest.param(None, None, "TLSv1.3", id="tls1.3"),
    ],
)
async def test_modern_protocols_are_served(
    server: Server,
    dev_certs: certs.CertFiles,
    maximum: ssl.TLSVersion | None,
    ciphers: str | None,
    version: str,
) -> None:
    context = ssl.create_default_context(cafile=str(dev_certs.ca_cert))
    if maximum is not None:
        context.maximum_version = maximum
    if ciphers is not None:
        context.set_ciphers(ciphers)
    session = await handshake(server.port, context)
    assert session.version() == version


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_dev_certificate_verifies_for_localhost_and_loopback(
    server: Server, client_ssl: ssl.SSLContext, host: str
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"https://{host}:{server.port}/healthz", ssl=client_ssl) as response,
    ):
        assert response.status == 200


@pytest.mark.parametrize(
    ("mode", "accepted"),
    [
        pytest.param(0o600, True, id="0600"),
        pytest.param(0o400, True, id="0400"),
        pytest.param(0o440, True, id="0440-secret-defaultMode"),
        pytest.param(0o640, True, id="0640-fsGroup"),
        pytest.param(0o644, False, id="0644-world-readable"),
        pytest.param(0o604, False, id="0604-world-readable"),
        pytest.param(0o602, False, id="0602-world-writable"),
    ],
)
def test_key_file_permissions(dev_certs: certs.CertFiles, mode: int, accepted: bool) -> None:
    os.chmod(dev_certs.key, mode)
    if accepted:
        check_key_permissions(dev_certs.key)
    else:
        with pytest.raises(TlsError, match=r"world-(readable|writable) \(mode 0"):
            check_key_permissions(dev_certs.key)


def test_server_refuses_to_start_with_a_world_readable_key(settings: Settings) -> None:
    os.chmod(settings.tls.key_file, 0o644)
    with pytest.raises(ConfigError, match="world-readable"):
        ReloadingContext(settings.tls, Metrics())


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param("missing-cert", "cannot read", id="missing-cert"),
        pytest.param("garbage-cert", "not a PEM certificate", id="garbage-cert"),
        pytest.param("other-key", "not a usable certificate and key", id="mismatched-key"),
    ],
)
def test_server_refuses_to_start_with_an_unusable_pair(
    settings: Settings, dev_certs: certs.CertFiles, damage: str, message: str
) -> None:
    if damage == "missing-cert":
        dev_certs.cert.unlink()
    elif damage == "garbage-cert":
        dev_certs.cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nnope\n")
    else:
        other = certs.make_authority()
        certs.write_pem(dev_certs.key, certs.key_pem(other.key), private=True)
    with pytest.raises(TlsError, match=message):
        ReloadingContext(settings.tls, Metrics())


def test_certificate_expiry_gauge_is_set(settings: Settings, dev_certs: certs.CertFiles) -> None:
    metrics = Metrics()
    ReloadingContext(settings.tls, metrics)
    cert = x509.load_pem_x509_certificate(dev_certs.cert.read_bytes())
    expected = cert.not_valid_after_utc.timestamp()
    assert metrics.registry.get_sample_value(
        "secret_injector_certificate_expiry_timestamp_seconds"
    ) == pytest.approx(expected)


class SecretVolume:
    """A directory laid out like a mounted Kubernetes Secret: `tls.crt -> ..data/tls.crt`,
    `..data -> ..<timestamp>`, updated by an atomic rename of `..data` (as kubelet does)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self.cert = root / "tls.crt"
        self.key = root / "tls.key"

    def publish(self, cert: bytes, key: bytes) -> None:
        version = self.root / f"..{uuid.uuid4().hex}"
        version.mkdir()
        (version / "tls.crt").write_bytes(cert)
        (version / "tls.key").write_bytes(key)
        os.chmod(version / "tls.key", 0o440)
        link = self.root / "..data_tmp"
        os.symlink(version.name, link)
        os.replace(link, self.root / "..data")
        for name in ("tls.crt", "tls.key"):
            if not (self.root / name).is_symlink():
                os.symlink(f"..data/{name}", self.root / name)


def new_pair(ca: certs.Authority) -> tuple[bytes, bytes, int]:
    cert, key = certs.issue_serving_cert(ca, certs.service_names("secret-injector", "ns"))
    return certs.cert_pem(cert), certs.key_pem(key), cert.serial_number


async def wait_for_serial(port: int, context: ssl.SSLContext, serial: int) -> None:
    async with asyncio.timeout(10):
        while await served_serial(port, context) != serial:  # noqa: ASYNC110 - polls a server
            await asyncio.sleep(0.02)


async def test_certificate_replaced_on_disk_is_served_without_restart_or_failed_request(
    tmp_path: Path,
    settings: Settings,
    dev_certs: certs.CertFiles,
    client_ssl: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ca = certs.read_authority(dev_certs)
    assert ca is not None
    volume = SecretVolume(tmp_path / "mounted")
    first_cert, first_key, first_serial = new_pair(ca)
    volume.publish(first_cert, first_key)
    settings = replace(
        settings, tls=replace(settings.tls, cert_file=str(volume.cert), key_file=str(volume.key))
    )
    metrics = Metrics()
    server = Server(settings, metrics, ReloadingContext(settings.tls, metrics))
    await server.start()
    caplog.set_level(logging.INFO, logger="secret_injector.tls")
    results: list[int | str] = []
    stop = asyncio.Event()
    url = f"https://localhost:{server.port}/readyz"
    asker: asyncio.Task[None] | None = None

    async def keep_asking() -> None:
        # A new connection (and handshake) per request: every one sees the current pair.
        connector = aiohttp.TCPConnector(ssl=client_ssl, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            while not stop.is_set():
                try:
                    async with session.get(url) as r:
                        results.append(r.status)
                except aiohttp.ClientError as exc:
                    results.append(repr(exc))

    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ssl)
        ) as kept_alive:
            async with kept_alive.get(f"https://localhost:{server.port}/healthz") as response:
                assert response.status == 200
            asker = asyncio.create_task(keep_asking())
            assert await served_serial(server.port, client_ssl) == first_serial

            # 1. kubelet-style atomic swap of the whole pair.
            second_cert, second_key, second_serial = new_pair(ca)
            volume.publish(second_cert, second_key)
            await wait_for_serial(server.port, client_ssl, second_serial)

            # 2. A half-done update (new certificate, old key): keep serving the last good
            #    pair and say why; then the key arrives and the new pair is served.
            third_cert, third_key, third_serial = new_pair(ca)
            volume.publish(third_cert, second_key)
            async with asyncio.timeout(10):
                while "still serving the previous one" not in caplog.text:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            assert await served_serial(server.port, client_ssl) == second_serial
            volume.publish(third_cert, third_key)
            await wait_for_serial(server.port, client_ssl, third_serial)

            # A connection opened before the reloads keeps working.
            async with kept_alive.get(f"https://localhost:{server.port}/healthz") as response:
                assert response.status == 200
    finally:
        stop.set()
        if asker is not None:
            await asker
        await server.stop()
    assert len(results) > 5
    assert [r for r in results if r != 200] == []
    third = x509.load_pem_x509_certificate(third_cert)
    assert metrics.registry.get_sample_value(
        "secret_injector_certificate_expiry_timestamp_seconds"
    ) == pytest.approx(third.not_valid_after_utc.timestamp())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1  # the broken pair is reported once, not at every poll
    assert "not a usable certificate and key" in errors[0].__dict__["reason"]
