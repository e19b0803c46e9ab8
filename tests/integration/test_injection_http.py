"""Injection through the real app over TLS: patch, idempotence, the validating guard,
denials, the audit line, and `explain` deciding as `serve` does."""

from __future__ import annotations

import base64
import logging
import subprocess
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import pytest
import yaml

from tests.integration.conftest import REPO, AuditLines
from tests.integration.reviews import admission_review, pod
from tests.integration.webhook_client import Client

P = "secret-injector.io/"
OPTED_IN = {
    P + "inject": "true",
    P + "file.db-password": "vault:secret/data/demo/myapp/database#password",
    P + "env.API_KEY": "aws-sm:demo/myapp/api-key#apiKey",
}


def patch_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    assert response["allowed"] is True, response
    assert response["patchType"] == "JSONPatch"
    ops: list[dict[str, Any]] = orjson.loads(base64.b64decode(response["patch"]))
    return ops


async def mutate(client: Client, obj: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    status, answer = await client.post("/mutate", admission_review(obj, **kwargs))
    assert status == 200
    response: dict[str, Any] = answer["response"]
    return response


async def test_opted_in_pod_is_patched_and_a_second_review_changes_nothing(
    client: Client,
) -> None:
    original = pod(
        OPTED_IN,
        containers=[
            {"name": "app", "image": "nginx", "env": [{"name": "MODE", "value": "prod"}]},
            {"name": "sidecar", "image": "envoy"},
        ],
    )
    ops = patch_of(await mutate(client, original))
    assert {op["op"] for op in ops} == {"add"}
    assert any("secret-injector.io~1status" in op["path"] for op in ops)  # RFC 6901 escape
    patched = jsonpatch.apply_patch(original, ops)

    assert patched["metadata"]["annotations"][P + "status"] == "injected"
    volumes = [v for v in patched["spec"]["volumes"] if "csi" in v]
    assert {v["csi"]["driver"] for v in volumes} == {"secrets-store.csi.k8s.io"}
    assert all(v["csi"]["readOnly"] is True for v in volumes)
    for container in patched["spec"]["containers"]:
        mounts = [m for m in container["volumeMounts"] if m["name"] in {v["name"] for v in volumes}]
        assert mounts and all(m["readOnly"] is True for m in mounts)
        api_key = [e for e in container["env"] if e["name"] == "API_KEY"]
        assert api_key and "secretKeyRef" in api_key[0]["valueFrom"]
    assert patched["spec"]["containers"][0]["env"][0] == {"name": "MODE", "value": "prod"}

    again = await mutate(client, patched)
    assert again == {"uid": again["uid"], "allowed": True}


async def test_validate_allows_the_injected_pod_and_guards_an_uninjected_one(
    client: Client,
) -> None:
    original = pod(OPTED_IN)
    patched = jsonpatch.apply_patch(original, patch_of(await mutate(client, original)))
    status, answer = await client.post("/validate", admission_review(patched))
    assert (status, answer["response"]["allowed"]) == (200, True)

    status, answer = await client.post("/validate", admission_review(original))
    assert (status, answer["response"]["allowed"]) == (200, False)
    assert P + "status" in answer["response"]["status"]["message"]


async def test_dry_run_is_patched_too(client: Client) -> None:
    assert patch_of(await mutate(client, pod(OPTED_IN), dry_run=True))


@pytest.mark.parametrize(
    ("annotations", "code", "needle"),
    [
        pytest.param(
            {
                P + "inject": "true",
                P + "file.app": "vault:secret/data/demo/app#token",
                P + "flie.db": "vault:secret/data/demo/db#password",
            },
            {400, 403},  # an annotation error, or the unknownAnnotations policy rule
            "did you mean file.db?",
            id="unknown-key",
        ),
        pytest.param(
            {P + "inject": "true", P + "file.db": "vault:secret/data/demo/db"},
            {400},
            P + "file.db",
            id="vault-ref-without-key",
        ),
        pytest.param(
            {P + "inject": "true", P + "env.MODE": "aws-sm:demo/app"},
            {409},
            "MODE",
            id="env-conflict",
        ),
    ],
)
async def test_bad_annotations_are_denied_with_a_precise_message(
    client: Client, annotations: dict[str, str], code: set[int], needle: str
) -> None:
    obj = pod(annotations, containers=[{"name": "app", "env": [{"name": "MODE", "value": "x"}]}])
    response = await mutate(client, obj)
    assert response["allowed"] is False
    assert response["status"]["code"] in code
    assert needle in response["status"]["message"]
    assert "patch" not in response


async def test_audit_line_names_references_by_path_only(
    client: Client, audit_lines: AuditLines
) -> None:
    response = await mutate(client, pod(OPTED_IN))
    (fields,) = audit_lines()
    assert (fields["decision"], fields["outcome"]) == ("allowed", "injected")
    assert fields["references"] == [
        "aws-sm:demo/myapp/api-key",
        "vault:secret/data/demo/myapp/database",
    ]
    assert fields["patch_operations"] == len(patch_of(response))


async def test_spcs_are_reported_in_the_log_without_a_kubernetes_api(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="secret_injector.server")
    await mutate(client, pod(OPTED_IN))
    (record,) = [r for r in caplog.records if "spcs" in vars(r)]
    spcs = vars(record)["spcs"]
    assert {spc["kind"] for spc in spcs} == {"SecretProviderClass"}
    assert {spc["spec"]["provider"] for spc in spcs} == {"vault", "aws"}


def explain(python: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "webhook", "explain", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_explain_prints_the_patched_workload_and_its_spcs(
    python: str, python_env: dict[str, str]
) -> None:
    done = explain(python, python_env, "-f", "examples/deployment.yaml")
    assert done.returncode == 0, done.stderr
    deployment, *spcs = yaml.safe_load_all(done.stdout)
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"][P + "status"] == "injected"
    assert "namespace" not in template["metadata"]  # the template is patched, not a pod
    assert any(v.get("csi") for v in template["spec"]["volumes"])
    assert spcs and {s["kind"] for s in spcs} == {"SecretProviderClass"}
    assert {s["metadata"]["namespace"] for s in spcs} == {"demo"}
    source = yaml.safe_load((REPO / "examples/deployment.yaml").read_text())
    names = {spc["metadata"]["name"] for spc in spcs}
    volume_spcs = {
        v["csi"]["volumeAttributes"]["secretProviderClass"]
        for v in template["spec"]["volumes"]
        if v.get("csi")
    }
    assert volume_spcs == names
    assert deployment["metadata"] == source["metadata"]


def test_explain_a_denied_pod_exits_1_with_the_reason_on_stderr(
    tmp_path: Path, python: str, python_env: dict[str, str]
) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "web",
                    "annotations": {
                        P + "inject": "true",
                        P + "file.app": "vault:secret/data/x/app#token",
                        P + "flie.db": "vault:secret/data/x/db#password",
                    },
                },
                "spec": {"containers": [{"name": "app", "image": "nginx"}]},
            }
        )
    )
    done = explain(python, python_env, "-f", str(manifest), "--namespace", "x")
    assert done.returncode == 1
    assert "denied: Pod/web" in done.stderr
    assert "did you mean file.db?" in done.stderr
    assert done.stdout == ""
