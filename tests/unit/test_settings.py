"""Settings: DESIGN.md's config keys load; mistakes get errors naming file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from webhook.errors import ConfigError
from webhook.settings import Settings

DESIGN_EXAMPLE = """\
listen: {address: 0.0.0.0, port: 8443, metricsPort: 9090}
tls: {certFile: /etc/secret-injector/tls/tls.crt, keyFile: /etc/secret-injector/tls/tls.key}
annotationPrefix: secret-injector.io
providers:
  vault:
    address: "https://vault.vault:8200"
    authMountPath: kubernetes
    defaultRole: "{namespace}"
  aws: {region: us-east-1}
verify: {mode: warn, timeoutSeconds: 1, cacheTTLSeconds: 60, onBackendError: warn}
policyFile: /etc/secret-injector/policy.yaml
kubernetes: {manageSecretProviderClasses: true}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_settings_load_design_example(tmp_path: Path) -> None:
    settings = Settings.load(write(tmp_path, DESIGN_EXAMPLE), env={})
    assert settings.listen.port == 8443
    assert settings.listen.metrics_port == 9090
    assert settings.providers.vault.address == "https://vault.vault:8200"
    assert settings.providers.vault.default_role == "{namespace}"
    assert settings.providers.aws.region == "us-east-1"
    assert settings.verify.mode == "warn"
    assert settings.verify.timeout_seconds == 1.0
    assert settings.verify.cache_ttl_seconds == 60.0
    assert settings.policy_file == "/etc/secret-injector/policy.yaml"
    assert settings.kubernetes.manage_secret_provider_classes is True
    assert settings.prefix == "secret-injector.io/"


def test_settings_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert Settings.load(write(tmp_path, ""), env={}) == Settings()


def test_settings_environment_fills_unset_backend_values(tmp_path: Path) -> None:
    env = {
        "VAULT_ADDR": "http://127.0.0.1:8200",
        "VAULT_CACERT": "/ca.pem",
        "AWS_REGION": "eu-west-1",
    }
    settings = Settings.load(write(tmp_path, "listen: {port: 9443}\n"), env=env)
    assert settings.providers.vault.address == "http://127.0.0.1:8200"
    assert settings.providers.vault.ca_cert == "/ca.pem"
    assert settings.providers.aws.region == "eu-west-1"


def test_settings_file_wins_over_environment(tmp_path: Path) -> None:
    settings = Settings.load(write(tmp_path, DESIGN_EXAMPLE), env={"AWS_REGION": "eu-west-1"})
    assert settings.providers.aws.region == "us-east-1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "verify:\n  mode: warn\n  timeoutSecnds: 1\n",
            ":3: verify.timeoutSecnds: unknown key (did you mean timeoutSeconds?)",
            id="typo-did-you-mean",
        ),
        pytest.param(
            "verify:\n  mode: wrn\n",
            ":2: verify.mode: must be one of off | warn | enforce, got 'wrn'",
            id="bad-enum",
        ),
        pytest.param(
            "listen:\n  port: '8443'\n",
            ":2: listen.port: must be an integer, got a string",
            id="wrong-type",
        ),
        pytest.param(
            "listen:\n  port: 70000\n",
            ":1: listen: port must be between 0 and 65535, got 70000",
            id="out-of-range",
        ),
        pytest.param(
            "verify: {timeoutSeconds: 30}\n",
            ":1: verify: timeoutSeconds must be in (0, 10], got 30.0",
            id="deadline-too-long",
        ),
        pytest.param(
            "providers: [vault]\n",
            ":1: providers: must be a mapping, got a list",
            id="list-for-mapping",
        ),
        pytest.param("- a\n", ": (top level): must be a mapping, got a list", id="top-level-list"),
        pytest.param("listen: {port: 1\n", ": not valid YAML", id="broken-yaml"),
        pytest.param(
            "kubernetes:\n  manageSecretProviderClasses: yes please\n",
            ":2: kubernetes.manageSecretProviderClasses: must be true or false, got a string",
            id="not-a-bool",
        ),
        pytest.param(
            "annotationPrefix: 'a/b'\n",
            "annotationPrefix must be a DNS subdomain",
            id="bad-prefix",
        ),
    ],
)
def test_settings_errors_name_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        Settings.load(path, env={})
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)


def test_settings_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.load(tmp_path / "absent.yaml", env={})
