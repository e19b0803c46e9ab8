"""values.yaml is documented, values.schema.json is strict, validate.yaml refuses unsafe sets."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.chart.rendering import CHART_DIR, render_error

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())


def schema_nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every sub-schema with its path, following properties, items and definitions."""
    yield path, node
    for key, child in node.get("properties", {}).items():
        yield from schema_nodes(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from schema_nodes(node["items"], f"{path}[]")
    for key, child in node.get("definitions", {}).items():
        yield from schema_nodes(child, f"#{key}")
    for combinator in ("allOf", "oneOf", "anyOf"):
        for index, child in enumerate(node.get(combinator, [])):
            yield from schema_nodes(child, f"{path}/{combinator}{index}")


def test_values_schema_rejects_unknown_keys_at_every_level() -> None:
    for path, node in schema_nodes(SCHEMA):
        if node.get("type") != "object":
            continue
        extra = node.get("additionalProperties")
        if "properties" in node:
            assert extra is False, f"{path or '(top)'} accepts unknown keys"
        elif extra is None:
            # A free-form Kubernetes object (validated by the API server) must say so.
            assert str(node.get("$comment", "")).startswith(("Kubernetes ", "Passed through")), path
        else:
            assert extra == {"type": "string"}, f"{path} is a map of something other than strings"


def value_paths(
    node: yaml.Node, schema: dict[str, Any], path: str = ""
) -> Iterator[tuple[str, int, bool]]:
    """(path, line, is a group) of every values.yaml key the schema defines, recursively."""
    if not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        key = key_node.value
        child = schema.get("properties", {}).get(key)
        if child is None:
            continue
        child = resolve(child)
        group = "properties" in child and not is_kubernetes_type(child)
        yield f"{path}{key}", key_node.start_mark.line, group
        if group:
            yield from value_paths(value_node, child, f"{path}{key}.")


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a `$ref` (possibly wrapped in allOf to carry a description) to its definition."""
    if "allOf" in schema:
        return resolve(schema["allOf"][0])
    if "$ref" in schema:
        definition: dict[str, Any] = SCHEMA["definitions"][schema["$ref"].rsplit("/", 1)[1]]
        return definition
    return schema


def is_kubernetes_type(schema: dict[str, Any]) -> bool:
    return str(schema.get("$comment", "")).startswith("Kubernetes ")


def documented_values() -> list[tuple[str, int, bool]]:
    root = yaml.compose((CHART_DIR / "values.yaml").read_text())
    assert root is not None
    return list(value_paths(root, SCHEMA))


def test_values_every_value_has_a_comment_above_it() -> None:
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    paths = documented_values()
    assert len(paths) > 100
    for path, line, _ in paths:
        assert lines[line - 1].strip().startswith("#"), f"values.yaml:{line + 1}: {path}"


def test_values_every_value_is_in_the_readme_table() -> None:
    readme = (CHART_DIR / "README.md").read_text()
    rows = set(re.findall(r"^\| `([^`]+)` \|", readme, re.MULTILINE))
    leaves = {path for path, _, group in documented_values() if not group}
    assert leaves - rows == set(), "values missing from README.md"
    assert rows - leaves == set(), "README.md documents values that do not exist"


def test_values_and_schema_define_the_same_keys() -> None:
    """Every value is in the schema (checked by rendering) and every schema key has a default."""
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())

    def missing(schema: dict[str, Any], data: dict[str, Any], path: str) -> Iterator[str]:
        if str(schema.get("$comment", "")).startswith(("Kubernetes ", "Passed through")):
            return
        for key, child in schema.get("properties", {}).items():
            if key not in data:
                yield path + key
            elif child.get("type") == "object" and isinstance(data[key], dict):
                yield from missing(child, data[key], f"{path}{key}.")

    assert list(missing(SCHEMA, values, "")) == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            {"replicaCont": 3}, "additional properties 'replicaCont'", id="misspelled-top"
        ),
        pytest.param(
            {"replicaCount": "two"}, "/replicaCount': got string, want integer", id="type"
        ),
        pytest.param(
            {"config": {"verify": {"mod": "warn"}}},
            "additional properties 'mod'",
            id="misspelled-deep",
        ),
        pytest.param({"config": {"verify": {"mode": "strict"}}}, "/config/verify/mode", id="enum"),
        pytest.param(
            {"webhooks": {"timeoutSeconds": 30}}, "/webhooks/timeoutSeconds", id="timeout"
        ),
        pytest.param({"tls": {"mode": "genCA"}}, "/tls/mode", id="tls-mode"),
        pytest.param({"securityContext": {"privileged": True}}, "privileged", id="privileged"),
        pytest.param({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot", id="root"),
        pytest.param(
            {"config": {"annotationPrefix": "bad prefix/'"}}, "annotationPrefix", id="cel-injection"
        ),
        pytest.param(
            {"config": {"providers": {"vault": {"address": "https://user:pw@vault:8200"}}}},
            "/config/providers/vault/address",
            id="vault-userinfo",
        ),
        pytest.param({"image": {"digest": "latest"}}, "/image/digest", id="digest"),
    ],
)
def test_values_schema_rejects(values: dict[str, Any], message: str) -> None:
    error = render_error(values)
    assert "values don't meet the specifications of the schema" in error
    assert message in error


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            {"webhooks": {"validating": {"enabled": False}}},
            "validating webhook must be enabled",
            id="fail-open-without-guard",
        ),
        pytest.param(
            {"webhooks": {"validating": {"failurePolicy": "Ignore"}}},
            "validating webhook must be enabled with failurePolicy Fail",
            id="both-fail-open",
        ),
        pytest.param(
            {"config": {"verify": {"timeoutSeconds": 3.5}}},
            "must stay below webhooks.timeoutSeconds",
            id="deadline-above-timeout",
        ),
        pytest.param(
            {"replicaCount": 1},
            "podDisruptionBudget.minAvailable (1) must be below",
            id="pdb-blocks",
        ),
        pytest.param(
            {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}},
            "minReplicas must not exceed",
            id="hpa-range",
        ),
        pytest.param(
            {"terminationGracePeriodSeconds": 20},
            "terminationGracePeriodSeconds (20) must exceed",
            id="grace-period",
        ),
        pytest.param({"config": {"listen": {"metricsPort": 8443}}}, "must differ", id="same-ports"),
        pytest.param(
            {"tls": {"mode": "existingSecret", "existingSecret": {"name": "x"}}},
            "tls.existingSecret.caBundle",
            id="existing-secret-without-ca",
        ),
        pytest.param(
            {"serviceAccount": {"create": False}}, "default ServiceAccount", id="default-sa"
        ),
        pytest.param(
            {"config": {"providers": {"vault": {"auth": {"method": "token"}}}}},
            "needs vaultFiles.credentialsSecret",
            id="vault-token-without-secret",
        ),
        pytest.param(
            {
                "config": {"providers": {"vault": {"auth": {"method": "approle"}}}},
                "vaultFiles": {"credentialsSecret": "s"},
            },
            "needs config.providers.vault.auth.roleId",
            id="approle-without-role-id",
        ),
        pytest.param(
            {"metrics": {"prometheusRule": {"enabled": True}}},
            "needs metrics.serviceMonitor.enabled=true",
            id="alerts-without-scrape",
        ),
        pytest.param(
            {"tls": {"mode": "selfManaged", "selfManaged": {"renewBeforeDays": 120}}},
            "renewBeforeDays < validityDays",
            id="self-managed-renewal",
        ),
    ],
)
def test_values_unsafe_combinations_fail_with_a_reason(
    values: dict[str, Any], message: str
) -> None:
    error = render_error(values)
    assert "validate.yaml" in error
    assert message in error
