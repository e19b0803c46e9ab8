"""Pod security settings and least-privilege RBAC, for every value set."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.rendering import (
    FULLNAME,
    NAMESPACE,
    VALUE_SETS,
    WEBHOOK_CONFIGURATION,
    Rendered,
    render,
)

value_sets = pytest.mark.parametrize(
    "values", [pytest.param(v, id=name) for name, v in VALUE_SETS.items()]
)

READ_VERBS = {"get", "list", "watch", "*"}


def rules(rendered: Rendered) -> list[tuple[str, dict[str, Any]]]:
    """(role kind, rule) for every rule of every Role and ClusterRole."""
    return [
        (role["kind"], rule)
        for kind in ("Role", "ClusterRole")
        for role in rendered.of_kind(kind)
        for rule in role["rules"]
    ]


def grants(rule: dict[str, Any], group: str, resource: str, verb: str) -> bool:
    return (
        bool({group, "*"} & set(rule.get("apiGroups", [])))
        and bool({resource, "*"} & set(rule.get("resources", [])))
        and bool({verb, "*"} & set(rule["verbs"]))
    )


@value_sets
def test_security_pod_is_locked_down(values: dict[str, Any]) -> None:
    rendered = render(values)
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod and "hostPID" not in pod and "hostIPC" not in pod
    context = rendered.container()["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    resources = rendered.container()["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert {"cpu", "memory"} <= set(resources["limits"])


@value_sets
def test_security_every_writable_mount_is_an_empty_dir(values: dict[str, Any]) -> None:
    rendered = render(values)
    volumes = {
        v["name"]: v for v in rendered.one("Deployment")["spec"]["template"]["spec"]["volumes"]
    }
    for mount in rendered.container()["volumeMounts"]:
        if not mount.get("readOnly"):
            assert "emptyDir" in volumes[mount["name"]], mount["name"]
        elif "secret" in volumes[mount["name"]]:
            assert volumes[mount["name"]]["secret"]["defaultMode"] <= 0o440


@value_sets
def test_security_no_role_reads_secrets_without_names(values: dict[str, Any]) -> None:
    for kind, rule in rules(render(values)):
        for verb in READ_VERBS | {"update", "patch", "delete", "deletecollection"}:
            if grants(rule, "", "secrets", verb):
                assert kind == "Role", f"a ClusterRole grants {verb} on secrets"
                assert rule.get("resourceNames"), f"{verb} on every Secret: {rule}"


@value_sets
def test_security_no_wildcards_and_no_escalation(values: dict[str, Any]) -> None:
    for _, rule in rules(render(values)):
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(field, []), rule
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
        assert not set(rule.get("resources", [])) & {"pods/exec", "serviceaccounts/token"}, rule


@pytest.mark.parametrize(
    ("values", "may_create_secrets"),
    [pytest.param(v, k.startswith("tls-self-managed"), id=k) for k, v in VALUE_SETS.items()],
)
def test_security_secret_create_only_in_self_managed_mode(
    values: dict[str, Any], may_create_secrets: bool
) -> None:
    rendered = render(values)
    creating = [(k, r) for k, r in rules(rendered) if grants(r, "", "secrets", "create")]
    assert bool(creating) == may_create_secrets
    for kind, _ in creating:
        # Create can't be limited by name in RBAC: confine it to the release namespace.
        assert kind == "Role"
    for role in rendered.of_kind("Role"):
        assert role["metadata"]["namespace"] == NAMESPACE


def test_security_self_managed_secret_access_is_by_name() -> None:
    rendered = render(VALUE_SETS["tls-self-managed"])
    named = [r for _, r in rules(rendered) if grants(r, "", "secrets", "get")]
    assert named == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [f"{FULLNAME}-tls"],
            "verbs": ["get", "update"],
        }
    ]
    custom = render(VALUE_SETS["tls-self-managed-no-validating"])
    assert next(r["resourceNames"] for _, r in rules(custom) if r.get("resourceNames")) == [
        "injector-ca"
    ]


@value_sets
def test_security_webhook_configurations_patched_by_name_only(values: dict[str, Any]) -> None:
    rendered = render(values)
    self_managed = values.get("tls", {}).get("mode") == "selfManaged"
    for resource in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        patching = [
            r
            for _, r in rules(rendered)
            if grants(r, "admissionregistration.k8s.io", resource, "patch")
        ]
        assert len(patching) == (1 if self_managed else 0)
        for rule in patching:
            assert rule["resourceNames"] == [WEBHOOK_CONFIGURATION]


@pytest.mark.parametrize(
    ("values", "verbs"),
    [
        # Created if absent, then patched with an ownerReference: the garbage collector
        # deletes them, so neither list nor delete.
        pytest.param({}, {"create", "get", "patch"}, id="managed"),
        pytest.param(VALUE_SETS["vault-token-no-spc"], set(), id="unmanaged"),
    ],
)
def test_security_secret_provider_class_access_follows_config(
    values: dict[str, Any], verbs: set[str]
) -> None:
    rendered = render(values)
    granted = {
        verb
        for _, rule in rules(rendered)
        if "secretproviderclasses" in rule.get("resources", [])
        for verb in rule["verbs"]
    }
    assert granted == verbs
    # Nothing left to grant cluster-wide: no ClusterRole at all.
    assert bool(rendered.of_kind("ClusterRole")) == bool(verbs)
    assert bool(rendered.of_kind("ClusterRoleBinding")) == bool(verbs)


@pytest.mark.parametrize(
    ("values", "token"),
    [
        pytest.param({}, True, id="defaults"),
        pytest.param(VALUE_SETS["vault-token-no-spc"], False, id="no-api-use"),
        pytest.param(
            {"config": {"kubernetes": {"manageSecretProviderClasses": False}}},
            True,
            id="vault-kubernetes-auth",
        ),
        pytest.param(
            VALUE_SETS["vault-token-no-spc"] | {"tls": {"mode": "selfManaged"}},
            True,
            id="self-managed-tls",
        ),
    ],
)
def test_security_api_token_mounted_only_when_needed(values: dict[str, Any], token: bool) -> None:
    rendered = render(values)
    assert rendered.one("ServiceAccount")["automountServiceAccountToken"] is False
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is token
