"""Violation lines stay under the API's 120-character advice for warnings, whatever the names."""

from __future__ import annotations

import pytest

from tests.policy.pods import container, request
from webhook.policy import MAX_LINE, Policy, Violation, check
from webhook.refs import Injection, PodInjection, UnknownKey, VaultRef

# The longest names Kubernetes accepts: a DNS-1123 label is 63 characters, an annotation
# key a 253-character DNS subdomain prefix plus a 63-character name.
LABEL = "a" * 30 + "-" + "b" * 32
PREFIX = ".".join(["p" * 63, "q" * 63, "r" * 63, "s" * 61]) + "/"
NAMESPACE = "n" * 63
ENV_NAME = "E" * 40 + "_PASSWORD_" + "F" * 40


def _long_pod() -> tuple[PodInjection, dict[str, object]]:
    annotation = PREFIX + "env." + "X" * 59
    injection = Injection(
        annotation, "env", "X" * 59, VaultRef("secret/data/" + "t" * 63 + "/" + "d" * 80, "k")
    )
    pod = PodInjection(
        (injection,), unknown_keys=(UnknownKey(PREFIX + "z" * 63, "file." + "z" * 58),)
    )
    spec: dict[str, object] = {
        "volumes": [
            {
                "name": LABEL,
                "secret": {
                    "secretName": LABEL,
                    "items": [{"key": "k" * 253, "path": "x", "mode": 0o777}],
                },
            }
        ],
        "containers": [
            container(
                LABEL,
                env=[
                    {"name": ENV_NAME, "value": "hunter2"},
                    {"name": "X", "value": "postgres://u:p@h"},
                ],
                envFrom=[{"secretRef": {"name": "s" * 253}}],
                volumeMounts=[{"name": LABEL, "mountPath": "/x"}],
            )
        ],
    }
    return pod, spec


def test_violation_lines_of_the_longest_names_fit() -> None:
    pod, spec = _long_pod()
    policy = Policy()
    violations = check(request(spec, namespace=NAMESPACE, service_account=LABEL), pod, policy, "x")
    rules = {v.rule for v in violations}
    assert rules == {
        "unknownAnnotations",
        "allowedRefs",
        "plaintextSecrets",
        "secretVolumes",
        "envFromSecrets",
    }
    for violation in violations:
        assert len(violation.line) <= MAX_LINE < 120, violation.line
        assert violation.line.startswith(violation.rule + ": ")


def test_violation_line_shortens_names_in_the_middle() -> None:
    violation = Violation(
        "plaintextSecrets",
        f"container app env {ENV_NAME}",
        "secret-like name, literal value",
        "use an env.* annotation",
        "deny",
    )
    line = violation.line
    assert len(line) == MAX_LINE
    name = line.split(" env ", 1)[1].split(":", 1)[0]
    assert name.startswith("EEEE") and name.endswith("FFFF") and "..." in name
    assert line.endswith(": secret-like name, literal value (use an env.* annotation)")


@pytest.mark.parametrize("width", [1, 30, 60])
def test_violation_line_short_enough_is_untouched(width: int) -> None:
    violation = Violation("delivery", "w" * width, "what", "fix", "warn")
    assert violation.line == f"delivery: {'w' * width}: what (fix)"


def test_violation_line_of_only_fixed_text_is_cut() -> None:
    violation = Violation("rule", "where", "what " * 30, "fix", "deny")
    assert len(violation.line) == MAX_LINE and violation.line.endswith("...")
