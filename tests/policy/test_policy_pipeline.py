"""Policy through pipeline.admit (/mutate) and pipeline.validate (/validate), with real parsing."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import jsonpatch
import orjson
import pytest

from tests.conftest import PREFIX, make_pod, make_review
from webhook import pipeline
from webhook.errors import PolicyError
from webhook.metrics import Metrics
from webhook.policy import DeliveryGrant, DeliveryRule, EnvFromSecretsRule, Policy
from webhook.review import AdmissionRequest, parse_review
from webhook.settings import Settings

NAMESPACE = "team-a"
OWN = {PREFIX + "inject": "true", PREFIX + "file.db": "vault:secret/data/team-a/db#password"}
INJECTED = {PREFIX + "status": "injected"}
FILE_ONLY = Policy(delivery=DeliveryRule(grants=(DeliveryGrant(kinds=("file",)),)))
DENY_ENV_FROM = Policy(env_from_secrets=EnvFromSecretsRule(action="deny"))


def app(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": "registry.example.com/app:1.0", **fields}


# (extra annotations, make_pod keyword arguments, policy, the violation's line)
CASES = {
    "unknown-annotation": (
        {PREFIX + "flie.db": "vault:secret/data/team-a/db#password"},
        {},
        Policy(),
        "unknownAnnotations: secret-injector.io/flie.db: unknown annotation "
        "(did you mean file.db?)",
    ),
    "other-tenant": (
        {PREFIX + "env.TOKEN": "vault:secret/data/team-b/api#token"},
        {},
        Policy(),
        "allowedRefs: secret-injector.io/env.TOKEN: vault:secret/data/team-b/api not allowed "
        "(use vault:secret/data/team-a/*)",
    ),
    "env-delivery-forbidden": (
        {PREFIX + "env.DB_PASSWORD": "vault:secret/data/team-a/db#password"},
        {},
        FILE_ONLY,
        "delivery: secret-injector.io/env.DB_PASSWORD: env delivery not allowed in team-a "
        "(use a file.<name> annotation)",
    ),
    "plaintext-in-init": (
        {},
        {"init_containers": [app("migrate", env=[{"name": "ADMIN_PASSWORD", "value": "hunter2"}])]},
        Policy(),
        "plaintextSecrets: container migrate env ADMIN_PASSWORD: secret-like name, literal value "
        "(use an env.* annotation)",
    ),
    "plaintext-jwt": (
        {},
        {
            "containers": [
                app(
                    "app",
                    env=[
                        {
                            "name": "UPSTREAM_AUTH",
                            "value": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZWFtLWEifQ.c2lnbmF0dXJl",
                        }
                    ],
                )
            ]
        },
        Policy(),
        "plaintextSecrets: container app env UPSTREAM_AUTH: looks like a JWT "
        "(use an env.* annotation)",
    ),
    "secret-volume-mode": (
        {},
        {"volumes": [{"name": "tls", "secret": {"secretName": "tls", "defaultMode": 0o644}}]},
        Policy(),
        "secretVolumes: volume tls: defaultMode 0644 is wider than 0440 (set defaultMode: 0440)",
    ),
    "secret-volume-writable": (
        {},
        {
            "volumes": [{"name": "tls", "secret": {"secretName": "tls", "defaultMode": 0o440}}],
            "containers": [app("app", volumeMounts=[{"name": "tls", "mountPath": "/tls"}])],
        },
        Policy(),
        "secretVolumes: container app mount tls: secret volume mounted writable "
        "(set readOnly: true)",
    ),
    "env-from-secret": (
        {},
        {"containers": [app("app", envFrom=[{"secretRef": {"name": "db"}}])]},
        DENY_ENV_FROM,
        "envFromSecrets: container app envFrom secret db: imports every key "
        "(use secretKeyRef for the keys you need)",
    ),
}
IDS = list(CASES)


def request_for(annotations: dict[str, str], pod_fields: dict[str, Any]) -> AdmissionRequest:
    pod = make_pod({**OWN, **annotations}, namespace=NAMESPACE, **pod_fields)
    return parse_review(orjson.dumps(make_review(pod)))


def context(policy: Policy, metrics: Metrics | None = None) -> pipeline.Context:
    return pipeline.Context(settings=Settings(), policy=policy, metrics=metrics)


@pytest.mark.parametrize(("annotations", "pod", "policy", "line"), CASES.values(), ids=IDS)
async def test_admit_denies_each_rule_with_its_line(
    annotations: dict[str, str], pod: dict[str, Any], policy: Policy, line: str
) -> None:
    metrics = Metrics()
    decision = await pipeline.admit(request_for(annotations, pod), context(policy, metrics))
    assert isinstance(decision.denial, PolicyError)
    assert (decision.outcome, decision.denial.code, decision.denial.lines) == (
        "denied",
        403,
        (line,),
    )
    assert decision.patch == [] and decision.violations == [line]
    rule = line.split(":", 1)[0]
    assert (
        metrics.registry.get_sample_value(
            "secret_injector_policy_violations_total", {"rule": rule, "action": "deny"}
        )
        == 1.0
    )


@pytest.mark.parametrize(("annotations", "pod", "policy", "line"), CASES.values(), ids=IDS)
async def test_admit_audit_mode_injects_with_the_line_as_warning(
    annotations: dict[str, str], pod: dict[str, Any], policy: Policy, line: str
) -> None:
    metrics = Metrics()
    ctx = context(replace(policy, mode="audit"), metrics)
    decision = await pipeline.admit(request_for(annotations, pod), ctx)
    assert (decision.outcome, decision.denial, decision.warnings) == ("injected", None, [line])
    assert decision.patch
    rule = line.split(":", 1)[0]
    assert (
        metrics.registry.get_sample_value(
            "secret_injector_policy_violations_total", {"rule": rule, "action": "warn"}
        )
        == 1.0
    )


@pytest.mark.parametrize(("annotations", "pod", "policy", "line"), CASES.values(), ids=IDS)
async def test_validate_denies_the_final_pod_and_audit_warns(
    annotations: dict[str, str], pod: dict[str, Any], policy: Policy, line: str
) -> None:
    req = request_for({**annotations, **INJECTED}, pod)
    denied = await pipeline.validate(req, context(policy))
    assert denied.denial is not None and denied.denial.lines == (line,)
    warned = await pipeline.validate(req, context(replace(policy, mode="audit")))
    assert (warned.outcome, warned.denial, warned.warnings) == ("warned", None, [line])


async def test_validate_guard_denies_an_opted_in_pod_without_the_marker() -> None:
    decision = await pipeline.validate(request_for({}, {}), context(Policy()))
    assert decision.denial is not None and decision.denial.code == 403
    assert decision.denial.lines[0].startswith(
        "injection: annotation secret-injector.io/status: pod is opted in but was not injected"
    )


async def test_validate_guard_allows_an_opted_in_pod_with_the_marker() -> None:
    decision = await pipeline.validate(request_for(INJECTED, {}), context(Policy()))
    assert (decision.outcome, decision.denial, decision.warnings) == ("allowed", None, [])


async def test_validate_guard_holds_in_audit_mode() -> None:
    """Audit relaxes policy rules, not the fail-closed guard: that is about availability."""
    decision = await pipeline.validate(request_for({}, {}), context(Policy(mode="audit")))
    assert decision.denial is not None


async def test_validate_checks_pods_that_are_not_opted_in() -> None:
    pod = make_pod(
        None,
        namespace=NAMESPACE,
        containers=[app("app", env=[{"name": "API_KEY", "value": "k-123"}])],
    )
    decision = await pipeline.validate(
        parse_review(orjson.dumps(make_review(pod))), context(Policy())
    )
    assert decision.denial is not None and decision.denial.lines == (
        "plaintextSecrets: container app env API_KEY: secret-like name, literal value "
        "(use an env.* annotation)",
    )


@pytest.mark.parametrize(
    "annotations",
    [
        pytest.param(OWN, id="file"),
        pytest.param(
            {
                PREFIX + "inject": "true",
                PREFIX + "env.DB_PASSWORD": "vault:secret/data/team-a/db#password",
                PREFIX + "file.api": "aws-sm:team-a/api#key",
                PREFIX + "env.CONFIG": "aws-ssm:/team-a/config",
            },
            id="env-and-aws",
        ),
    ],
)
async def test_our_own_injection_passes_the_validating_policy(annotations: dict[str, str]) -> None:
    """The pod /mutate produces breaks none of the rules /validate checks on the final pod."""
    pod = make_pod(annotations, namespace=NAMESPACE)
    ctx = context(Policy())
    mutated = await pipeline.admit(parse_review(orjson.dumps(make_review(pod))), ctx)
    assert mutated.outcome == "injected", mutated.denial
    final = jsonpatch.apply_patch(pod, mutated.patch)
    checked = await pipeline.validate(parse_review(orjson.dumps(make_review(final))), ctx)
    assert (checked.outcome, checked.violations) == ("allowed", [])


async def test_admit_policy_reads_the_context_policy_of_each_review() -> None:
    """A reloaded policy (PolicySource swaps ctx.policy) applies to the next review."""
    req = request_for({PREFIX + "env.DB": "vault:secret/data/team-a/db#password"}, {})
    ctx = context(Policy())
    assert (await pipeline.admit(req, ctx)).outcome == "injected"
    ctx.policy = FILE_ONLY
    assert (await pipeline.admit(req, ctx)).outcome == "denied"
