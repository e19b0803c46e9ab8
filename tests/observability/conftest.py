"""Fixtures for the observability tests: the recorded canary run (shared by the canary
and audit tests) and a server for exact metric deltas, each made once per session."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

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
    stopped: list[bool] = []

    def stop_vault() -> None:
        proxy.stop()
        stopped.append(True)

    try:
        server.start()
        exchanges, metrics = asyncio.run(drive(server, canaries, stop_vault))
    finally:
        exit_code = server.stop()
        if not stopped:
            proxy.stop()
    yield CanaryRun(canaries, exchanges, metrics, server.stdout(), server.stderr(), exit_code)


@dataclass(frozen=True)
class MetricsWorld:
    """A `serve` process for exact metric deltas, and what its reviews may reference."""

    server: WebhookProcess
    vault_proxy: DelayingProxy  # its delay keeps a review in flight
    namespace: str  # vault secret/data/<ns>/found-<n> (n = 1..5), aws-sm <ns>/key-1 exist


@pytest.fixture(scope="session")
def metrics_world(
    openbao: BaoServer, moto: MotoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MetricsWorld]:
    workdir = tmp_path_factory.mktemp("metrics-run")
    namespace = f"met-{secrets.token_hex(4)}"
    kv = openbao.client().secrets.kv.v2
    for n in range(1, 6):
        kv.create_or_update_secret(path=f"{namespace}/found-{n}", secret={"password": "x"})
    moto.client("secretsmanager").create_secret(Name=f"{namespace}/key-1", SecretString="x")
    token_file = workdir / "vault-token"
    token_file.write_text(ROOT_TOKEN)
    token_file.chmod(0o600)
    proxy = DelayingProxy("127.0.0.1", openbao.port)
    proxy.start()
    server = WebhookProcess(
        workdir / "webhook",
        {
            "providers": {
                "vault": {
                    "address": proxy.address,
                    "auth": {"method": "token", "tokenFile": str(token_file)},
                },
                "aws": {"region": "us-east-1"},
            },
            "verify": {
                "mode": "warn",
                "onBackendError": "warn",
                "timeoutSeconds": 3,
                # Answers stay cached and a dead backend's circuit stays open for the run.
                "cacheTTLSeconds": 3600,
                "negativeCacheTTLSeconds": 3600,
                "breakerFailures": 2,
                "breakerResetSeconds": 3600,
            },
        },
        # SSM is down for good: nothing listens on port 1 (and nobody unprivileged can).
        aws_env(secrets_manager=moto.endpoint, ssm="http://127.0.0.1:1"),
    )
    try:
        server.start()
        yield MetricsWorld(server, proxy, namespace)
    finally:
        server.stop()
        proxy.stop()
