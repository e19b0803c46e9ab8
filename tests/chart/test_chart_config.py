"""The rendered config file is exactly the webhook's settings and loads with Settings.load."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.rendering import CHART_DIR, VALUE_SETS, Rendered, render
from webhook import config_file
from webhook.settings import Settings

# Settings keys the chart leaves to the webhook's defaults on purpose. A key missing from the
# rendered config and not listed here means the settings grew: add it to values.yaml `config`
# (and values.schema.json), or list it here with the reason.
CHART_OMITS: dict[str, str] = {}

value_sets = pytest.mark.parametrize(
    "values", [pytest.param(v, id=name) for name, v in VALUE_SETS.items()]
)


def settings_keys(cls: type[Any], prefix: str = "") -> set[str]:
    """Dotted camelCase key paths of a settings dataclass, nested dataclasses expanded."""
    keys: set[str] = set()
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        key = prefix + config_file.camel(field.name)
        nested = [t for t in (hints[field.name], *typing.get_args(hints[field.name]))]
        dataclass_types = [t for t in nested if dataclasses.is_dataclass(t)]
        if dataclass_types:
            keys |= settings_keys(typing.cast(type[Any], dataclass_types[0]), key + ".")
        else:
            keys.add(key)
    return keys


def mapping_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted key paths of the leaves of a nested mapping."""
    keys: set[str] = set()
    for key, value in data.items():
        if isinstance(value, dict) and value:
            keys |= mapping_keys(value, f"{prefix}{key}.")
        else:
            keys.add(prefix + key)
    return keys


def load(rendered: Rendered, tmp_path: Path) -> Settings:
    path = tmp_path / "config.yaml"
    path.write_text(rendered.config_text())
    return Settings.load(path, env={})


@value_sets
def test_config_loads_with_the_webhooks_settings(values: dict[str, Any], tmp_path: Path) -> None:
    settings = load(render(values), tmp_path)
    assert settings.listen.port == 8443
    assert settings.policy_file == "/etc/secret-injector/policy/policy.yaml"


def test_config_renders_every_settings_key() -> None:
    # The self-managed render is the most complete: its tls.selfManaged block only
    # appears in that mode.
    rendered = yaml.safe_load(render(VALUE_SETS["tls-self-managed"]).config_text())
    missing = settings_keys(Settings) - mapping_keys(rendered) - set(CHART_OMITS)
    assert not missing, f"settings keys the chart does not render: {sorted(missing)}"


def test_config_values_mirror_the_settings_keys() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["config"]
    unknown = mapping_keys(values) - settings_keys(Settings)
    assert not unknown, f"values.yaml config keys that are not settings: {sorted(unknown)}"


def test_config_carries_the_values(tmp_path: Path) -> None:
    settings = load(render(VALUE_SETS["vault-approle"]), tmp_path)
    vault = settings.providers.vault
    assert vault.address == "https://vault.vault.svc:8200"
    assert vault.namespace == "team-a"
    assert vault.ca_cert == "/etc/secret-injector/vault-ca/ca.crt"
    assert vault.auth.method == "approle"
    assert vault.auth.role_id == "1234-abcd"
    assert vault.auth.secret_id_file == "/etc/secret-injector/vault-credentials/secret-id"
    assert vault.auth.token_file is None
    assert settings.providers.aws.region == "eu-west-1"
    assert settings.providers.aws.use_pod_identity is True
    assert (settings.verify.mode, settings.verify.timeout_seconds) == ("enforce", 0.5)


def test_config_leaves_unset_values_to_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(render().config_text())
    env = {"VAULT_ADDR": "https://vault.example:8200", "AWS_REGION": "ap-south-1"}
    settings = Settings.load(path, env=env)
    assert settings.providers.vault.address == "https://vault.example:8200"
    assert settings.providers.aws.region == "ap-south-1"
    assert settings.providers.vault.ca_cert is None


@value_sets
def test_config_paths_match_the_mounts(values: dict[str, Any], tmp_path: Path) -> None:
    rendered = render(values)
    settings = load(rendered, tmp_path)
    container = rendered.container()
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert container["args"] == ["serve", "--config", f"{mounts['config']}/config.yaml"]
    assert Path(settings.tls.cert_file).parent == Path(mounts["tls"])
    assert Path(settings.tls.key_file).parent == Path(mounts["tls"])
    assert settings.policy_file == f"{mounts['policy']}/policy.yaml"
    vault = settings.providers.vault
    if vault.ca_cert is not None:
        (item,) = volumes["vault-ca"]["configMap"]["items"]
        assert vault.ca_cert == f"{mounts['vault-ca']}/{item['path']}"
    for path in (vault.auth.token_file, vault.auth.secret_id_file):
        if path is not None:
            assert Path(path).parent == Path(mounts["vault-credentials"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (settings.listen.port, settings.listen.metrics_port) == (
        ports["https"],
        ports["metrics"],
    )


def test_config_self_managed_names_our_objects(tmp_path: Path) -> None:
    rendered = render(VALUE_SETS["tls-self-managed"])
    self_managed = yaml.safe_load(rendered.config_text())["tls"]["selfManaged"]
    assert self_managed["enabled"] is True
    assert self_managed["secretName"] == rendered.one("Role")["rules"][0]["resourceNames"][0]
    assert (
        self_managed["serviceName"]
        == rendered.one("Service", self_managed["serviceName"])["metadata"]["name"]
    )
    assert self_managed["namespace"] == rendered.one("Deployment")["metadata"]["namespace"]
    mutating = rendered.one("MutatingWebhookConfiguration")["metadata"]["name"]
    validating = rendered.one("ValidatingWebhookConfiguration")["metadata"]["name"]
    assert self_managed["mutatingWebhookConfigurations"] == [mutating]
    assert self_managed["validatingWebhookConfigurations"] == [validating]
    without_guard = render(VALUE_SETS["tls-self-managed-no-validating"]).config_text()
    assert (
        yaml.safe_load(without_guard)["tls"]["selfManaged"]["validatingWebhookConfigurations"] == []
    )


@pytest.mark.parametrize(
    "mode", ["certManager", "existingSecret"], ids=["cert-manager", "existing-secret"]
)
def test_config_other_tls_modes_keep_self_managed_off(mode: str) -> None:
    values = VALUE_SETS["tls-existing-secret"] if mode == "existingSecret" else {}
    assert "selfManaged" not in yaml.safe_load(render(values).config_text())["tls"]


def test_config_policy_is_rendered_verbatim() -> None:
    policy = {"mode": "audit", "rules": {"envFromSecrets": "deny"}}
    text = render({"policy": policy}).policy_text()
    assert yaml.safe_load(text) == policy
    assert yaml.safe_load(render().policy_text()) is None
