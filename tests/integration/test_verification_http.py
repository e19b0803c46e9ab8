"""Verification through the real app and `explain`, against real OpenBao and moto servers."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from tests.integration.conftest import serving
from tests.integration.reviews import admission_review, pod
from tests.integration.test_injection_http import patch_of
from tests.integration.webhook_client import Client
from tests.servers import BaoServer, MotoServer
from webhook.settings import (
    AwsProvider,
    Providers,
    Settings,
    VaultAuth,
    VaultProvider,
    Verify,
    VerifyMode,
)

P = "secret-injector.io/"


class Seeded:
    """Secrets that exist, under a path of their own in namespace `demo`'s tenancy."""

    def __init__(self, openbao: BaoServer, moto: MotoServer) -> None:
        self.app = f"app-{time.monotonic_ns()}"
        openbao.client().secrets.kv.v2.create_or_update_secret(
            path=f"demo/{self.app}/database", secret={"password": "never-shown"}
        )
        moto.client("secretsmanager").create_secret(
            Name=f"demo/{self.app}/api-key", SecretString='{"apiKey": "never-shown"}'
        )

    def annotations(self, **overrides: str) -> dict[str, str]:
        return {
            P + "inject": "true",
            P + "file.db-password": f"vault:secret/data/demo/{self.app}/database#password",
            P + "env.API_KEY": f"aws-sm:demo/{self.app}/api-key#apiKey",
            **{P + key: value for key, value in overrides.items()},
        }


@pytest.fixture
def seeded(openbao: BaoServer, aws_env: MotoServer) -> Seeded:
    return Seeded(openbao, aws_env)


@pytest.fixture
def root_token_file(tmp_path: Path) -> Path:
    path = tmp_path / "vault-token"
    path.write_text("root\n")
    return path


def verifying(settings: Settings, openbao: BaoServer, token: Path, mode: VerifyMode) -> Settings:
    vault = VaultProvider(
        address=openbao.address, auth=VaultAuth(method="token", token_file=str(token))
    )
    return replace(
        settings,
        providers=Providers(vault=vault, aws=AwsProvider(region="us-east-1")),
        verify=Verify(mode=mode, timeout_seconds=3),
    )


ClientFactory = Callable[[VerifyMode], Any]


@pytest.fixture
def verifying_client(
    settings: Settings, openbao: BaoServer, root_token_file: Path, client_ssl: Any
) -> ClientFactory:
    @asynccontextmanager
    async def open_client(mode: VerifyMode) -> AsyncIterator[Client]:
        configured = verifying(settings, openbao, root_token_file, mode)
        async with serving(configured, client_ssl) as client:
            yield client

    return open_client


async def mutate(client: Client, obj: dict[str, Any]) -> dict[str, Any]:
    status, answer = await client.post("/mutate", admission_review(obj))
    assert status == 200
    response: dict[str, Any] = answer["response"]
    return response


async def test_existing_references_are_injected_under_enforce(
    verifying_client: ClientFactory, seeded: Seeded
) -> None:
    async with verifying_client("enforce") as client:
        original = pod(seeded.annotations())
        response = await mutate(client, original)
        patched = jsonpatch.apply_patch(original, patch_of(response))
        assert patched["metadata"]["annotations"][P + "status"] == "injected"
        assert "warnings" not in response
        text = await client.metrics()
        assert 'secret_injector_backend_requests_total{backend="vault",result="found"}' in text


@pytest.mark.parametrize(
    ("override", "missing"),
    [
        pytest.param(
            {"file.db-password": "vault:secret/data/demo/nobody/database#password"},
            "vault:secret/data/demo/nobody/database",
            id="vault",
        ),
        pytest.param(
            {"env.API_KEY": "aws-sm:demo/nobody/api-key#apiKey"},
            "aws-sm:demo/nobody/api-key",
            id="aws-sm",
        ),
    ],
)
async def test_a_missing_reference_is_denied_under_enforce_and_warned_under_warn(
    verifying_client: ClientFactory, seeded: Seeded, override: dict[str, str], missing: str
) -> None:
    obj = pod(seeded.annotations(**override))
    async with verifying_client("enforce") as client:
        response = await mutate(client, obj)
    assert (response["allowed"], response["status"]["code"]) == (False, 404)
    assert missing in response["status"]["message"]
    assert "never-shown" not in str(response)

    async with verifying_client("warn") as client:
        response = await mutate(client, obj)
    assert patch_of(response)
    assert any(missing in warning for warning in response["warnings"])


def test_explain_verifies_references_as_configured(
    tmp_path: Path,
    python: str,
    python_env: dict[str, str],
    seeded: Seeded,
    openbao: BaoServer,
    aws_env: MotoServer,
    root_token_file: Path,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "providers": {
                    "vault": {
                        "address": openbao.address,
                        "auth": {"method": "token", "tokenFile": str(root_token_file)},
                    },
                    "aws": {"region": "us-east-1"},
                },
                "verify": {"mode": "enforce", "timeoutSeconds": 3},
            }
        )
    )
    env = {
        **python_env,
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": aws_env.endpoint,
        "AWS_ENDPOINT_URL_SSM": aws_env.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }

    def explain(annotations: dict[str, str]) -> subprocess.CompletedProcess[str]:
        manifest = tmp_path / "pod.yaml"
        manifest.write_text(yaml.safe_dump(pod(annotations)))
        return subprocess.run(
            [python, "-m", "webhook", "explain", "-f", str(manifest), "--config", str(config)],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    found = explain(seeded.annotations())
    assert found.returncode == 0, found.stderr
    assert "SecretProviderClass" in found.stdout

    missing = explain(seeded.annotations(**{"file.x": "vault:secret/data/demo/nobody/x#y"}))
    assert missing.returncode == 1
    assert "denied: Pod/" in missing.stderr
    assert "vault:secret/data/demo/nobody/x" in missing.stderr
