"""Fixtures for the real app over real TLS: dev certificates in a tmp dir, a server on
127.0.0.1 port 0 in this process, and an aiohttp client trusting the dev CA."""

from __future__ import annotations

import io
import json
import os
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import webhook
from tests.integration.webhook_client import Client
from webhook import certs, logs
from webhook.app import Server
from webhook.metrics import Metrics
from webhook.settings import Kubernetes, Listen, Settings, Tls, Verify
from webhook.tls import ReloadingContext

REPO = Path(webhook.__file__).resolve().parents[1]


@pytest.fixture
def dev_certs(tmp_path: Path) -> certs.CertFiles:
    files, _ = certs.write_dev_certs(tmp_path / "certs")
    return files


@pytest.fixture
def settings(dev_certs: certs.CertFiles) -> Settings:
    """Settings for a server on free ports of 127.0.0.1, polling its certs quickly; no
    backend verification and no Kubernetes API (tests/backends and tests/kube cover those)."""
    return Settings(
        listen=Listen(address="127.0.0.1", port=0, metrics_address="127.0.0.1", metrics_port=0),
        tls=Tls(
            cert_file=str(dev_certs.cert),
            key_file=str(dev_certs.key),
            reload_interval_seconds=0.05,
        ),
        max_body_bytes=64 * 1024,
        # Tests of verification through the server opt in (test_verification_http.py).
        verify=Verify(mode="off"),
        kubernetes=Kubernetes(manage_secret_provider_classes=False),
    )


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[Server]:
    metrics = Metrics()
    running = Server(settings, metrics, ReloadingContext(settings.tls, metrics))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@asynccontextmanager
async def serving(settings: Settings, client_ssl: ssl.SSLContext) -> AsyncIterator[Client]:
    """A Server started with `settings` and a client for it; the server stopped after."""
    metrics = Metrics()
    server = Server(settings, metrics, ReloadingContext(settings.tls, metrics))
    await server.start()
    try:
        async with aiohttp.ClientSession(
            base_url=f"https://localhost:{server.port}",
            connector=aiohttp.TCPConnector(ssl=client_ssl),
        ) as session:
            yield Client(session, server)
    finally:
        await server.stop()


@pytest.fixture
def client_ssl(dev_certs: certs.CertFiles) -> ssl.SSLContext:
    """A client context trusting only the dev CA (verifies the name too)."""
    return ssl.create_default_context(cafile=str(dev_certs.ca_cert))


@pytest.fixture
async def client(server: Server, client_ssl: ssl.SSLContext) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession(
        base_url=f"https://localhost:{server.port}",
        connector=aiohttp.TCPConnector(ssl=client_ssl),
    ) as session:
        yield Client(session, server)


@pytest.fixture
def python_env() -> dict[str, str]:
    """Environment for `python -m webhook` subprocesses: the repo importable, no cloud creds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VAULT_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["KUBECONFIG"] = os.devnull  # never reach a real cluster from a test
    return env


@pytest.fixture
def python() -> str:
    return sys.executable


AuditLines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def audit_lines(log_stream: io.StringIO) -> AuditLines:
    """Logs configured as `serve` does, into a buffer: a call returns the audit lines so
    far, parsed (logging is restored afterwards by `log_stream`)."""
    logs.configure("info", log_stream)

    def parsed() -> list[dict[str, Any]]:
        entries = [json.loads(line) for line in log_stream.getvalue().splitlines()]
        return [e for e in entries if e["logger"] == logs.AUDIT]

    return parsed


def with_tls(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, tls=replace(settings.tls, **changes))
