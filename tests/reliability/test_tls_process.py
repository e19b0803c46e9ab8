"""TLS of the process as deployed (`python -m webhook serve`: uvloop's TLS, not asyncio's).

tests/integration/test_tls.py covers the in-process server: plain HTTP, TLS 1.0/1.1, CBC
and SHA-1 suites refused, key permissions, reload on an atomic swap. Here the same
refusals (and anonymous and NULL suites) are checked against the real process, and the
certificate is replaced on disk while reviews keep coming: not one fails, new connections
get the new certificate, and a pair whose key is world-readable is never loaded.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_pod, make_review
from tests.integration.test_tls import (
    client_context,
    handshake,
    legacy_protocols,
    new_pair,
    permissive_server,
    served_serial,
)
from tests.reliability.load import ReviewLoad
from tests.reliability.served import ServeProcess, python_env, write_config
from webhook import certs

PREFIX = "secret-injector.io/"


@pytest.fixture(scope="module")
def module_certs(tmp_path_factory: pytest.TempPathFactory) -> certs.CertFiles:
    files, _ = certs.write_dev_certs(tmp_path_factory.mktemp("certs"))
    return files


@pytest.fixture(scope="module")
def served(
    module_certs: certs.CertFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """One serve process for the module's refusal tests."""
    config = write_config(
        tmp_path_factory.mktemp("config") / "config.yaml", module_certs.cert, module_certs.key
    )
    process = ServeProcess(config).start()
    try:
        yield process
    finally:
        process.stop()


async def test_process_refuses_plain_http_on_the_tls_port(served: ServeProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(1024), timeout=5)
    writer.close()
    assert not answer.startswith(b"HTTP/"), answer


def anonymous_context(ciphers: str) -> ssl.SSLContext:
    """A client that offers only suites without server authentication (or encryption)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with legacy_protocols():
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(f"{ciphers}:@SECLEVEL=0")
    return context


@pytest.mark.parametrize(
    ("maximum", "ciphers"),
    [
        pytest.param(ssl.TLSVersion.TLSv1_1, "ALL:@SECLEVEL=0", id="tls1.1"),
        pytest.param(ssl.TLSVersion.TLSv1, "ALL:@SECLEVEL=0", id="tls1.0"),
        pytest.param(ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA256", id="tls1.2-cbc"),
        pytest.param(ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES256-SHA", id="tls1.2-sha1-cbc"),
        pytest.param(None, "AECDH-AES128-SHA", id="anonymous"),
    ],
)
async def test_process_refuses_old_protocols_and_weak_ciphers(
    served: ServeProcess,
    module_certs: certs.CertFiles,
    maximum: ssl.TLSVersion | None,
    ciphers: str,
) -> None:
    if maximum is None:
        weak = anonymous_context(ciphers)
    else:
        weak = client_context(module_certs, maximum=maximum, ciphers=ciphers)
    async with permissive_server(module_certs) as control_port:
        await handshake(control_port, weak)  # this client config works elsewhere
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await handshake(served.port, weak)


async def test_process_serves_tls13_and_tls12_aead(
    served: ServeProcess, module_certs: certs.CertFiles
) -> None:
    modern = ssl.create_default_context(cafile=str(module_certs.ca_cert))
    assert (await handshake(served.port, modern)).version() == "TLSv1.3"
    modern.maximum_version = ssl.TLSVersion.TLSv1_2
    session = await handshake(served.port, modern)
    assert session.version() == "TLSv1.2"
    cipher = session.cipher()
    assert cipher is not None and ("GCM" in cipher[0] or "CHACHA20" in cipher[0])


def publish(root: Path, cert: bytes, key: bytes, key_mode: int = 0o440) -> None:
    """Lay out the pair as kubelet updates a mounted Secret: write a new version directory,
    then swap the `..data` symlink atomically (tls.crt -> ..data/tls.crt stays)."""
    version = root / f"..{uuid.uuid4().hex}"
    version.mkdir()
    (version / "tls.crt").write_bytes(cert)
    (version / "tls.key").write_bytes(key)
    os.chmod(version / "tls.key", key_mode)
    link = root / "..data_tmp"
    os.symlink(version.name, link)
    os.replace(link, root / "..data")
    for name in ("tls.crt", "tls.key"):
        if not (root / name).is_symlink():
            os.symlink(f"..data/{name}", root / name)


async def wait_for_serial(port: int, context: ssl.SSLContext, serial: int) -> None:
    async with asyncio.timeout(10):
        while await served_serial(port, context) != serial:  # noqa: ASYNC110 - polls a server
            await asyncio.sleep(0.05)


async def test_certificate_replaced_under_load_is_served_without_a_failed_review(
    tmp_path: Path, module_certs: certs.CertFiles
) -> None:
    ca = certs.read_authority(module_certs)
    assert ca is not None
    volume = tmp_path / "tls"
    volume.mkdir()
    first_cert, first_key, first_serial = new_pair(ca)
    publish(volume, first_cert, first_key)
    config = write_config(tmp_path / "config.yaml", volume / "tls.crt", volume / "tls.key")
    context = ssl.create_default_context(cafile=str(module_certs.ca_cert))
    pod = make_pod(
        {PREFIX + "inject": "true", PREFIX + "file.db": "vault:secret/data/default/db#pw"}
    )

    def review(number: int) -> dict[str, object]:
        return make_review(pod, uid=f"rotation-{number}")

    process = ServeProcess(config).start()
    try:
        url = f"https://localhost:{process.port}/mutate"
        kept = ReviewLoad(url, context, review, concurrency=3)  # keep-alive connections
        fresh = ReviewLoad(url, context, review, concurrency=3, fresh_connections=True)
        async with kept, fresh:
            await kept.until(lambda o: o.injected)
            assert await served_serial(process.port, context) == first_serial

            second_cert, second_key, second_serial = new_pair(ca)
            publish(volume, second_cert, second_key)
            await wait_for_serial(process.port, context, second_serial)

            # A new pair whose key every user could read: refused, the old one kept.
            third_cert, third_key, third_serial = new_pair(ca)
            seen = len(process.lines)
            publish(volume, third_cert, third_key, key_mode=0o644)
            refused = await asyncio.to_thread(
                process.wait_for,
                "new TLS certificate or key not loaded; still serving the previous one",
                10.0,
                seen,
            )
            assert "world-readable" in refused["reason"]
            assert await served_serial(process.port, context) == second_serial

            publish(volume, third_cert, third_key)
            await wait_for_serial(process.port, context, third_serial)
            await asyncio.sleep(0.5)  # reviews on the third pair too
    finally:
        await asyncio.to_thread(process.stop)
    for load in (kept, fresh):
        assert len(load.outcomes) > 10
        failed = [str(o) for o in load.outcomes if not o.injected]
        assert failed == [], failed[:3]
    errors = [line for line in process.lines if line.get("level") == "error"]
    assert len(errors) == 1, errors  # the refused pair, reported once


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        pytest.param(0o602, "the TLS key is world-writable (mode 0602)", id="world-writable"),
        pytest.param(0o644, "the TLS key is world-readable (mode 0644)", id="mounted-0644"),
    ],
)
def test_serve_refuses_to_start_with_a_key_others_can_use(
    tmp_path: Path, module_certs: certs.CertFiles, mode: int, message: str
) -> None:
    # tests/integration/test_cli.py checks a plain 0644 file; here the key is laid out as
    # a mounted Secret (a symlink into ..data), whose target's mode is what counts.
    volume = tmp_path / "tls"
    volume.mkdir()
    publish(volume, module_certs.cert.read_bytes(), module_certs.key.read_bytes(), mode)
    config = write_config(tmp_path / "config.yaml", volume / "tls.crt", volume / "tls.key")
    done = subprocess.run(
        [sys.executable, "-m", "webhook", "serve", "--config", str(config)],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"secret-injector: {volume / 'tls.key'}: {message}"), done.stderr
    assert "make it 0600, or 0440 for a Kubernetes Secret" in done.stderr
    assert done.stdout == ""  # refused before listening: no log line, no port
