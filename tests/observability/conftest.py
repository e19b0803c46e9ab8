"""Fixtures for the observability tests: the recorded canary run (shared by the canary
and audit tests, made once per session)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.observability.canaries import seed
from tests.observability.canary_run import CanaryRun, config, drive
from tests.observability.webhook_process import WebhookProcess, aws_env
from tests.servers import ROOT_TOKEN, BaoServer, DelayingProxy, MotoServer


@pytest.fixture(scope="session")
def canary_run(
    openbao: BaoServer, moto: MotoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CanaryRun]:
    """Canaries in OpenBao and moto, `serve` in a subprocess reaching OpenBao through a
    proxy (stopped mid-run: the outage), a few hundred reviews; the record of it all."""
    workdir = tmp_path_factory.mktemp("canary-run")
    canaries = seed(openbao, moto)
    # The root token: the webhook *could* read every value; the test shows it does not.
    token_file = workdir / "vault-token"
    token_file.write_text(ROOT_TOKEN)
    token_file.chmod(0o600)
    proxy = DelayingProxy("127.0.0.1", openbao.port)
    proxy.start()
    server = WebhookProcess(
        workdir / "webhook",
        config(proxy.address, token_file),
        aws_env(secrets_manager=moto.endpoint, ssm=moto.endpoint),
    )
    try:
        server.start()
        exchanges, metrics = asyncio.run(drive(server, canaries, proxy))
    finally:
        exit_code = server.stop()
        if proxy._server is not None and proxy._server.is_serving():
            proxy.stop()
    yield CanaryRun(canaries, exchanges, metrics, server.stdout(), server.stderr(), exit_code)
