"""The webhook configurations: scope, exclusions, match conditions, failure policies, CA."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.rendering import (
    FULLNAME,
    NAMESPACE,
    VALUE_SETS,
    WEBHOOK_CONFIGURATION,
    render,
)

ALWAYS_EXCLUDED = {"kube-system", "kube-node-lease", NAMESPACE}

value_sets = pytest.mark.parametrize(
    "values", [pytest.param(v, id=name) for name, v in VALUE_SETS.items()]
)


def excluded_namespaces(selector: dict[str, Any]) -> set[str]:
    """Namespaces a selector can never match through a NotIn on the namespace name."""
    return {
        value
        for expression in selector.get("matchExpressions", [])
        if expression["key"] == "kubernetes.io/metadata.name" and expression["operator"] == "NotIn"
        for value in expression["values"]
    }


@value_sets
def test_webhooks_always_exclude_system_and_own_namespaces(values: dict[str, Any]) -> None:
    webhooks = list(render(values).webhooks())
    assert webhooks
    for _, webhook in webhooks:
        assert excluded_namespaces(webhook["namespaceSelector"]) >= ALWAYS_EXCLUDED


def test_webhooks_keep_the_users_selector_and_add_the_exclusions() -> None:
    user = VALUE_SETS["namespace-selector"]["webhooks"]["namespaceSelector"]
    for _, webhook in render(VALUE_SETS["namespace-selector"]).webhooks():
        selector = webhook["namespaceSelector"]
        assert selector["matchLabels"] == user["matchLabels"]
        # Every user requirement survives (requirements are ANDed: ours can only narrow).
        for expression in user["matchExpressions"]:
            assert expression in selector["matchExpressions"]
        assert excluded_namespaces(selector) == ALWAYS_EXCLUDED | {"monitoring"}


@value_sets
def test_webhooks_filter_with_match_conditions_on_the_prefix(values: dict[str, Any]) -> None:
    prefix = (
        values.get("config", {}).get("annotationPrefix", "secret-injector.io").rstrip("/") + "/"
    )
    for kind, webhook in render(values).webhooks():
        expressions = [c["expression"] for c in webhook["matchConditions"]]
        assert any(f"'{prefix}" in e for e in expressions), expressions
        assert any("kubernetes.io/config.mirror" in e for e in expressions)
        if kind == "ValidatingWebhookConfiguration":
            # Fails closed, so it must only see pods that opted in.
            assert any(f"['{prefix}inject'] == 'true'" in e for e in expressions), expressions


@value_sets
def test_webhooks_are_narrow_and_fast(values: dict[str, Any]) -> None:
    for kind, webhook in render(values).webhooks():
        assert 1 <= webhook["timeoutSeconds"] <= 10
        assert webhook["admissionReviewVersions"] == ["v1"]
        assert webhook["rules"] == [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ]
        expected_side_effects = "NoneOnDryRun" if kind.startswith("Mutating") else "None"
        assert webhook["sideEffects"] == expected_side_effects


def test_webhooks_default_policies() -> None:
    webhooks = dict(render().webhooks())
    mutating = webhooks["MutatingWebhookConfiguration"]
    validating = webhooks["ValidatingWebhookConfiguration"]
    assert mutating["failurePolicy"] == "Ignore"
    assert mutating["reinvocationPolicy"] == "IfNeeded"
    assert mutating["timeoutSeconds"] == 5
    assert mutating["clientConfig"]["service"]["path"] == "/mutate"
    assert validating["failurePolicy"] == "Fail"
    assert validating["clientConfig"]["service"]["path"] == "/validate"
    for webhook in (mutating, validating):
        assert webhook["clientConfig"]["service"] == {
            "name": FULLNAME,
            "namespace": NAMESPACE,
            "path": webhook["clientConfig"]["service"]["path"],
            "port": 443,
        }


@pytest.mark.parametrize(
    ("values", "annotation", "ca_bundle"),
    [
        pytest.param({}, f"{NAMESPACE}/{FULLNAME}-serving", None, id="cert-manager"),
        pytest.param(
            VALUE_SETS["tls-existing-secret"], None, "LS0tLS1CRUdJTi0tLS0t", id="existing-secret"
        ),
        pytest.param(VALUE_SETS["tls-self-managed"], None, None, id="self-managed"),
    ],
)
def test_webhooks_get_their_ca_per_tls_mode(
    values: dict[str, Any], annotation: str | None, ca_bundle: str | None
) -> None:
    rendered = render(values)
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        config = rendered.one(kind, WEBHOOK_CONFIGURATION)
        annotations = config["metadata"].get("annotations", {})
        assert annotations.get("cert-manager.io/inject-ca-from") == annotation
        for webhook in config["webhooks"]:
            assert webhook["clientConfig"].get("caBundle") == ca_bundle


@value_sets
def test_webhooks_names_are_fully_qualified(values: dict[str, Any]) -> None:
    # The API server requires at least three DNS labels, whatever the annotation prefix.
    for _, webhook in render(values).webhooks():
        assert webhook["name"] in {"mutate.secret-injector.io", "validate.secret-injector.io"}


def test_webhooks_validating_guard_can_be_dropped_only_when_mutating_fails_closed() -> None:
    rendered = render(VALUE_SETS["tls-self-managed-no-validating"])
    assert "ValidatingWebhookConfiguration" not in rendered.kinds()
    ((_, mutating),) = rendered.webhooks()
    assert mutating["failurePolicy"] == "Fail"
