"""The policy file through the real app: loaded at start, reloaded live, broken edits kept out;
and `check-config` on policy files."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import serving
from tests.integration.reviews import admission_review, pod
from tests.integration.webhook_client import Client
from webhook.app import Server
from webhook.errors import ConfigError
from webhook.metrics import Metrics
from webhook.settings import Settings
from webhook.tls import ReloadingContext

P = "secret-injector.io/"
# Namespace `demo` asking for another team's secret: the default tenancy rule denies it.
FOREIGN = {P + "inject": "true", P + "file.db": "vault:secret/data/payments/db#password"}


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text("mode: enforce\n")
    return path


@pytest.fixture
async def policy_client(
    settings: Settings, policy_path: Path, client_ssl: Any
) -> AsyncIterator[Client]:
    async with serving(replace(settings, policy_file=str(policy_path)), client_ssl) as client:
        yield client


async def mutate(client: Client) -> dict[str, Any]:
    status, answer = await client.post("/mutate", admission_review(pod(FOREIGN)))
    assert status == 200
    response: dict[str, Any] = answer["response"]
    return response


@pytest.mark.slow
async def test_policy_file_edits_apply_without_restart_and_broken_ones_are_kept_out(
    policy_client: Client, policy_path: Path
) -> None:
    denied = await mutate(policy_client)
    assert (denied["allowed"], denied["status"]["code"]) == (False, 403)
    assert "allowedRefs" in denied["status"]["message"]

    # Every violation becomes a warning.
    await asyncio.to_thread(policy_path.write_text, "mode: audit\n")
    async with asyncio.timeout(15):  # the file is polled every 5 s
        while not (answer := await mutate(policy_client))["allowed"]:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    assert any("allowedRefs" in w for w in answer["warnings"])

    # Broken: the audit policy stays in force.
    await asyncio.to_thread(policy_path.write_text, "mode: sometimes\n")
    rejected = 'secret_injector_policy_reloads_total{result="rejected"} 1.0'
    async with asyncio.timeout(15):
        while rejected not in await policy_client.metrics():  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    assert (await mutate(policy_client))["allowed"] is True
    text = await policy_client.metrics()
    assert 'secret_injector_policy_reloads_total{result="applied"} 1.0' in text
    assert 'secret_injector_policy_violations_total{action="warn",rule="allowedRefs"}' in text


async def test_server_refuses_to_start_with_a_broken_policy_file(
    settings: Settings, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("mode: enforce\nallowedRefs:\n  acton: deny\n")
    configured = replace(settings, policy_file=str(policy))
    metrics = Metrics()
    server = Server(configured, metrics, ReloadingContext(configured.tls, metrics))
    with pytest.raises(ConfigError, match=rf"{policy}:3"):
        await server.start()


@pytest.mark.parametrize(
    ("policy", "code", "message"),
    [
        pytest.param("mode: audit\n", 0, "policy.yaml: ok", id="valid"),
        pytest.param("mode: sometimes\n", 1, "policy.yaml:1: mode", id="bad-mode"),
        pytest.param("envFromSecrets: maybe\n", 1, "policy.yaml:1: envFromSecrets", id="bad-rule"),
    ],
)
def test_check_config_validates_the_policy_file(
    tmp_path: Path,
    python: str,
    python_env: dict[str, str],
    policy: str,
    code: int,
    message: str,
) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(policy)
    config = tmp_path / "config.yaml"
    config.write_text(f"policyFile: {policy_file}\n")
    for args in (["--config", str(config)], ["--policy", str(policy_file)]):
        done = subprocess.run(
            [python, "-m", "webhook", "check-config", *args],
            env=python_env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == code, done.stderr
        assert message in (done.stdout if code == 0 else done.stderr)
