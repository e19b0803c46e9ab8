"""The `verify` and `providers` config keys the verifier reads, and open_verifier's modes."""

from __future__ import annotations

import pytest

from webhook import config_file
from webhook.errors import ConfigError
from webhook.metrics import Metrics
from webhook.settings import Settings, Verify
from webhook.verification import ReferenceVerifier, open_verifier

CONFIG = """\
providers:
  vault:
    address: https://vault.vault:8200
    namespace: team-a
    caCert: /etc/vault/ca.crt
    auth: {method: approle, roleId: webhook, secretIdFile: /var/run/vault/secret-id}
  aws: {region: eu-west-1}
verify:
  mode: enforce
  timeoutSeconds: 1.5
  cacheTTLSeconds: 30
  negativeCacheTTLSeconds: 5
  cacheMaxEntries: 500
  onBackendError: deny
  breakerFailures: 3
  breakerResetSeconds: 20
  maxConcurrentCalls: 8
"""


def load(text: str) -> Settings:
    return config_file.build(Settings, config_file.read_document(text, "config.yaml"))


def test_verify_settings_load_from_config_keys() -> None:
    settings = load(CONFIG)
    assert settings.verify == Verify(
        mode="enforce",
        timeout_seconds=1.5,
        cache_ttl_seconds=30,
        negative_cache_ttl_seconds=5,
        cache_max_entries=500,
        on_backend_error="deny",
        breaker_failures=3,
        breaker_reset_seconds=20,
        max_concurrent_calls=8,
    )
    vault = settings.providers.vault
    assert (vault.namespace, vault.ca_cert, vault.auth.method, vault.auth.role_id) == (
        "team-a",
        "/etc/vault/ca.crt",
        "approle",
        "webhook",
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param(
            "breakerFailures: 0",
            "config.yaml:1: verify: breakerFailures must be at least 1",
            id="breaker-failures",
        ),
        pytest.param(
            "breakerResetSeconds: 0",
            "config.yaml:1: verify: breakerResetSeconds must be positive",
            id="breaker-reset",
        ),
        pytest.param(
            "maxConcurrentCalls: 0",
            "config.yaml:1: verify: maxConcurrentCalls must be at least 1",
            id="max-concurrent-calls",
        ),
        pytest.param(
            "onBackendError: ignore",
            "config.yaml:2: verify.onBackendError: must be one of warn | deny, got 'ignore'",
            id="on-backend-error",
        ),
    ],
)
def test_verify_settings_reject_bad_values_with_file_and_line(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(f"verify:\n  {line}\n")
    assert str(error.value) == message


@pytest.mark.parametrize(("mode", "opened"), [("off", False), ("warn", True), ("enforce", True)])
async def test_open_verifier_is_none_only_when_verification_is_off(mode: str, opened: bool) -> None:
    settings = load(f"verify: {{mode: {mode}}}\n")
    verifier = open_verifier(settings, Metrics())
    assert isinstance(verifier, ReferenceVerifier) == opened
    if verifier is not None:
        await verifier.close()
