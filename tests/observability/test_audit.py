"""Every stdout line is a JSON object; every decision has exactly one audit line, with the
fields security needs (checked against the canary run's requests and answers)."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import pytest

from tests.observability.canary_run import CanaryRun
from webhook.metrics import OPERATIONS, OUTCOMES

# Audit field -> the JSON types it may have.
AUDIT_FIELDS: dict[str, tuple[type, ...]] = {
    "time": (str,),
    "level": (str,),
    "logger": (str,),
    "msg": (str,),
    "endpoint": (str,),
    "uid": (str,),
    "namespace": (str,),
    "pod": (str,),
    "owner": (str, type(None)),
    "operation": (str,),
    "kind": (str,),
    "user": (str,),
    "dry_run": (bool,),
    "decision": (str,),
    "outcome": (str,),
    "references": (list,),
    "violations": (list,),
    "warnings": (list,),
    "patch_operations": (int,),
    "duration_ms": (float, int),
}
DENIAL_FIELDS: dict[str, tuple[type, ...]] = {"code": (int,), "reason": (str,)}
REFERENCE = re.compile(r"(vault|aws-sm|aws-ssm):[^#?\s]+")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def log_lines(run: CanaryRun) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run.stdout.splitlines()]


def audit_lines(run: CanaryRun) -> list[dict[str, Any]]:
    return [e for e in log_lines(run) if e["logger"] == "secret_injector.audit"]


def test_audit_stdout_is_json_objects_only(canary_run: CanaryRun) -> None:
    lines = canary_run.stdout.splitlines()
    entries = [json.loads(line) for line in lines]  # raises on any other line
    assert all(isinstance(e, dict) for e in entries)
    for entry in entries:
        assert {"time", "level", "logger", "msg"} <= entry.keys(), entry
        assert TIME.fullmatch(entry["time"]), entry["time"]
        assert entry["level"] in ("debug", "info", "warning", "error")


@pytest.mark.parametrize(
    ("logger", "msg", "level"),
    [
        pytest.param("secret_injector.server", "listening", "info", id="startup"),
        pytest.param("secret_injector.tls", "serving certificate loaded", "info", id="tls"),
        pytest.param(
            "secret_injector.server", "malformed admission request rejected", "warning", id="400"
        ),
        pytest.param(
            "webhook.verification",
            "vault could not verify a reference: unreachable",
            "warning",
            id="backend-down",
        ),
        pytest.param("secret_injector.server", "stopped", "info", id="shutdown"),
    ],
)
def test_audit_other_lines_are_json_too(
    canary_run: CanaryRun, logger: str, msg: str, level: str
) -> None:
    found = [e for e in log_lines(canary_run) if (e["logger"], e["msg"]) == (logger, msg)]
    assert found
    assert {e["level"] for e in found} == {level}


def test_audit_backend_error_line_says_what_to_act_on(canary_run: CanaryRun) -> None:
    ns = canary_run.canaries.namespace
    found = [e for e in log_lines(canary_run) if e["msg"].startswith("vault could not")]
    assert found
    for entry in found:
        assert (entry["backend"], entry["region"]) == ("vault", None)
        assert entry["kind"] in ("unreachable", "timeout")
        assert re.fullmatch(rf"vault:secret/data/{ns}/down-\d+", entry["reference"])


def test_audit_one_line_per_decision(canary_run: CanaryRun) -> None:
    answered = [json.loads(e.sent)["request"]["uid"] for e, _ in canary_run.reviews()]
    audited = Counter(e["uid"] for e in audit_lines(canary_run))
    assert len(answered) == len(set(answered)) >= 400
    assert audited == Counter(answered)


def test_audit_lines_have_every_field(canary_run: CanaryRun) -> None:
    for entry in audit_lines(canary_run):
        fields = dict(AUDIT_FIELDS)
        if entry["decision"] == "denied":
            fields |= DENIAL_FIELDS
        assert entry.keys() == fields.keys(), entry
        for name, types in fields.items():
            assert isinstance(entry[name], types), (name, entry)
        assert entry["msg"] == "admission decision"
        assert entry["decision"] in ("allowed", "denied")
        assert entry["outcome"] in OUTCOMES
        assert entry["operation"] in OPERATIONS
        assert entry["duration_ms"] >= 0
        for ref in entry["references"]:
            assert REFERENCE.fullmatch(ref), ref  # scheme:path, no key, no version
        assert all(isinstance(line, str) for line in entry["violations"] + entry["warnings"])


def test_audit_lines_match_the_request_and_the_answer(canary_run: CanaryRun) -> None:
    audit = {e["uid"]: e for e in audit_lines(canary_run)}
    prefix = "secret-injector.io/"
    for exchange, response in canary_run.reviews():
        request = json.loads(exchange.sent)["request"]
        entry = audit[request["uid"]]
        # A CONNECT's object is its options (PodExecOptions ...): request.name names the pod.
        connect = request["operation"] == "CONNECT"
        obj = {} if connect else request["object"] or request["oldObject"]
        metadata = obj.get("metadata", {"name": request["name"]})
        owners = metadata.get("ownerReferences") or [{}]
        refs = {
            value.split("#")[0]
            for key, value in (metadata.get("annotations") or {}).items()
            if key.startswith((prefix + "file.", prefix + "env.")) and REFERENCE.match(value)
        }
        assert entry["endpoint"] == exchange.endpoint
        assert entry["namespace"] == request["namespace"]
        assert entry["pod"] == metadata.get("name", metadata.get("generateName"))
        assert entry["owner"] == (f"{owners[0]['kind']}/{owners[0]['name']}" if owners[0] else None)
        assert (entry["operation"], entry["user"]) == (
            request["operation"],
            request["userInfo"]["username"],
        )
        assert entry["dry_run"] is request["dryRun"]
        assert entry["decision"] == ("allowed" if response["allowed"] else "denied")
        assert entry["warnings"] == response.get("warnings", [])
        if not response["allowed"]:
            assert entry["code"] == response["status"]["code"]
            assert entry["reason"] == response["status"]["message"]
        if entry["outcome"] != "skipped":
            assert set(entry["references"]) <= refs


def test_audit_outcomes_of_the_run(canary_run: CanaryRun) -> None:
    """Every outcome but `error` (a bug) happened and was audited."""
    outcomes = Counter(e["outcome"] for e in audit_lines(canary_run))
    assert set(outcomes) == {"skipped", "injected", "allowed", "warned", "denied"}
    violations = {line.split(":")[0] for e in audit_lines(canary_run) for line in e["violations"]}
    assert violations == {"allowedRefs", "plaintextSecrets", "unknownAnnotations"}
