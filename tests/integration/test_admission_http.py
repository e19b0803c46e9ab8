"""The admission endpoints over real TLS: malformed input, pass-through, internal errors."""

from __future__ import annotations

import base64
import logging
from typing import Any

import orjson
import pytest

from tests.integration.conftest import AuditLines
from tests.integration.reviews import admission_review, pod
from tests.integration.webhook_client import Client
from webhook import pipeline
from webhook.review import AdmissionRequest

ENDPOINTS = ["/mutate", "/validate"]
UID = "4b6b9d64-8b7b-4d8e-9a1e-000000000001"


def _review_with(path: tuple[str, ...], value: Any) -> bytes:
    """A valid Pod CREATE review with the value at `path` replaced (or removed if ...)."""
    review = admission_review(pod({"secret-injector.io/inject": "true"}))
    node: Any = review
    for step in path[:-1]:
        node = node[int(step)] if isinstance(node, list) else node[step]
    if value is ...:
        del node[path[-1]]
    elif isinstance(node, list):
        node[int(path[-1])] = value
    else:
        node[path[-1]] = value
    return orjson.dumps(review)


def _with_raw(path: tuple[str, ...], raw: bytes) -> bytes:
    """A valid review with the JSON text `raw` at `path` (JSON that orjson cannot write)."""
    return _review_with(path, "RAW-VALUE").replace(b'"RAW-VALUE"', raw)


DEEP = b"[" * 5000 + b"]" * 5000
NOT_UTF8 = b'"\xff"'  # a string orjson refuses to decode (the JSON text must be UTF-8)

MALFORMED = [
    pytest.param(b"", "not JSON", id="empty-body"),
    pytest.param(b"not json", "not JSON", id="not-json"),
    pytest.param(b"\xff\xfe{}", "not JSON", id="not-utf8"),
    pytest.param(b'{"apiVersion": ', "not JSON", id="truncated-json"),
    pytest.param(b"[]", "JSON object", id="json-array"),
    pytest.param(b'"AdmissionReview"', "JSON object", id="json-string"),
    pytest.param(b"null", "JSON object", id="json-null"),
    pytest.param(
        _review_with(("apiVersion",), "admission.k8s.io/v1beta1"), "apiVersion", id="v1beta1"
    ),
    pytest.param(_review_with(("apiVersion",), ...), "apiVersion", id="no-apiVersion"),
    pytest.param(_review_with(("kind",), "AdmissionRequest"), "kind", id="wrong-kind"),
    pytest.param(_review_with(("request",), ...), "no request", id="no-request"),
    pytest.param(_review_with(("request",), []), "request must be an object", id="request-is-list"),
    pytest.param(_review_with(("request", "uid"), ...), "request.uid", id="no-uid"),
    pytest.param(_review_with(("request", "uid"), ""), "request.uid", id="empty-uid"),
    pytest.param(_review_with(("request", "uid"), 42), "request.uid", id="uid-number"),
    pytest.param(_review_with(("request", "operation"), ...), "operation", id="no-operation"),
    pytest.param(_review_with(("request", "operation"), 1), "operation", id="operation-number"),
    pytest.param(_review_with(("request", "kind"), "Pod"), "request.kind", id="kind-string"),
    pytest.param(_review_with(("request", "kind", "kind"), ...), "kind", id="no-kind-kind"),
    pytest.param(_review_with(("request", "object"), ...), "object", id="no-object"),
    pytest.param(_review_with(("request", "object"), None), "object", id="null-object"),
    pytest.param(_review_with(("request", "object"), "pod"), "object", id="object-string"),
    pytest.param(
        _review_with(("request", "object", "metadata"), []), "metadata", id="metadata-list"
    ),
    pytest.param(
        _review_with(("request", "object", "metadata", "annotations"), {"a": 1}),
        "annotations",
        id="annotation-value-number",
    ),
    pytest.param(
        _review_with(("request", "object", "metadata", "annotations"), ["a"]),
        "annotations",
        id="annotations-list",
    ),
    pytest.param(_review_with(("request", "object", "spec"), ...), "spec", id="no-spec"),
    pytest.param(_review_with(("request", "object", "spec"), 3), "spec", id="spec-number"),
    pytest.param(
        _review_with(("request", "object", "spec", "containers"), {"name": "app"}),
        "containers",
        id="containers-object",
    ),
    pytest.param(
        _review_with(("request", "object", "spec", "containers"), ["app"]),
        "containers",
        id="container-string",
    ),
    pytest.param(
        _review_with(("request", "object", "spec", "containers", "0", "name"), 7),
        "containers[0].name",
        id="container-name-number",
    ),
    pytest.param(
        _review_with(("request", "object", "spec", "containers", "0", "env"), {"A": "b"}),
        "env",
        id="env-object",
    ),
    pytest.param(
        _review_with(("request", "object", "spec", "volumes"), "none"),
        "volumes",
        id="volumes-string",
    ),
    pytest.param(
        _with_raw(("request", "object", "spec", "hostname"), NOT_UTF8),
        "request.object.spec could not be decoded",
        id="spec-not-utf8",
    ),
    pytest.param(
        _with_raw(("request", "object", "spec", "x"), DEEP), "nested too deeply", id="spec-deep"
    ),
    pytest.param(
        _with_raw(("request", "object", "metadata", "managedFields"), DEEP),
        "nested too deeply",
        id="skipped-field-deep",
    ),
    pytest.param(_review_with(("request", "dryRun"), "yes"), "dryRun", id="dryrun-string"),
    pytest.param(_review_with(("request", "namespace"), 5), "namespace", id="namespace-number"),
    pytest.param(_review_with(("request", "userInfo"), "me"), "userInfo", id="userinfo-string"),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("body", "reason"), MALFORMED)
async def test_malformed_review_is_answered_400_with_reason(
    client: Client, endpoint: str, body: bytes, reason: str
) -> None:
    status, answer = await client.post(endpoint, body)
    assert status == 400
    assert answer["kind"] == "Status"
    assert answer["code"] == 400
    assert reason in answer["message"]


async def test_malformed_pod_left_alone_by_mutate_is_still_rejected_by_validate(
    client: Client,
) -> None:
    """/mutate reads nothing but the annotations of a pod that is not opted in (and
    leaves it unchanged); /validate runs the policy over its containers, so checks them."""
    malformed = pod(containers=[{"name": "app", "env": {"A": "b"}}])
    status, answer = await client.post("/mutate", admission_review(malformed))
    assert (status, answer["response"]["allowed"]) == (200, True)
    assert "patch" not in answer["response"]
    status, answer = await client.post("/validate", admission_review(malformed))
    assert (status, answer["code"]) == (400, 400)
    assert "spec.containers[0].env must be a list of objects" in answer["message"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_body_over_the_limit_is_answered_413(client: Client, endpoint: str) -> None:
    limit = client.server.settings.max_body_bytes
    body = orjson.dumps(admission_review(pod({"x": "y" * limit})))
    status, answer = await client.post(endpoint, body)
    assert (status, answer["code"]) == (413, 413)
    assert f"limit of {limit} bytes" in answer["message"]


async def test_chunked_body_over_the_limit_is_answered_413(client: Client) -> None:
    limit = client.server.settings.max_body_bytes

    async def chunks() -> Any:
        for _ in range(limit // 1024 + 2):
            yield b" " * 1024

    status, answer = await client.post("/mutate", chunks())
    assert (status, answer["code"]) == (413, 413)
    assert "limit" in answer["message"]


async def test_body_just_under_the_limit_is_parsed(client: Client) -> None:
    limit = client.server.settings.max_body_bytes
    review = admission_review(pod(), operation="DELETE")
    review["padding"] = ""
    review["padding"] = "x" * (limit - len(orjson.dumps(review)))
    body = orjson.dumps(review)
    assert len(body) == limit
    status, answer = await client.post("/mutate", body)
    assert (status, answer["response"]["allowed"]) == (200, True)


async def test_wrong_content_type_is_answered_415(client: Client) -> None:
    body = orjson.dumps(admission_review(pod(), operation="DELETE"))
    status, answer = await client.post("/mutate", body, headers={"Content-Type": "text/plain"})
    assert status == 415
    assert "application/json" in answer["message"]


async def test_json_content_type_with_charset_is_accepted(client: Client) -> None:
    body = orjson.dumps(admission_review(pod(), operation="DELETE"))
    headers = {"Content-Type": "application/json; charset=utf-8"}
    status, _ = await client.post("/mutate", body, headers=headers)
    assert status == 200


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        pytest.param("GET", "/mutate", "POST", id="get-mutate"),
        pytest.param("PUT", "/validate", "POST", id="put-validate"),
        pytest.param("POST", "/healthz", "GET,HEAD", id="post-healthz"),
        pytest.param("DELETE", "/readyz", "GET,HEAD", id="delete-readyz"),
    ],
)
async def test_wrong_method_is_answered_405(
    client: Client, method: str, path: str, allow: str
) -> None:
    async with client.session.request(method, path) as response:
        answer = await response.json()
        assert response.status == 405
        assert set(response.headers["Allow"].split(",")) == set(allow.split(","))
    assert answer["code"] == 405
    assert method in answer["message"]


async def test_unknown_path_is_answered_404_naming_the_endpoints(client: Client) -> None:
    status, answer = await client.post("/mutating", admission_review(pod()))
    assert status == 404
    assert "POST /mutate" in answer["message"]


PASS_THROUGH = [
    pytest.param(
        admission_review(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "annotations": {"secret-injector.io/inject": "true"}},
                "spec": {
                    "template": {
                        "metadata": {"annotations": {"secret-injector.io/inject": "true"}},
                        "spec": {"containers": [{"name": "app", "image": "nginx"}]},
                    }
                },
            },
            kind="Deployment",
            group="apps",
        ),
        id="deployment",
    ),
    pytest.param(
        admission_review(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}, kind="ConfigMap"
        ),
        id="configmap",
    ),
    pytest.param(admission_review(None, operation="DELETE"), id="delete"),
    pytest.param(
        admission_review(
            {"apiVersion": "v1", "kind": "PodExecOptions", "command": ["sh"]},
            operation="CONNECT",
            kind="PodExecOptions",
            sub_resource="exec",
        ),
        id="connect-exec",
    ),
    pytest.param(
        admission_review(
            pod({"secret-injector.io/inject": "true"}), operation="UPDATE", sub_resource="status"
        ),
        id="status-subresource",
    ),
    pytest.param(
        admission_review(
            pod({"secret-injector.io/inject": "true"}),
            operation="UPDATE",
            sub_resource="ephemeralcontainers",
        ),
        id="ephemeralcontainers-subresource",
    ),
    pytest.param(
        admission_review(
            {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": "web"},
                "target": {"kind": "Node", "name": "n1"},
            },
            kind="Binding",
            sub_resource="binding",
        ),
        id="binding-subresource",
    ),
    pytest.param(
        admission_review(
            pod(
                {
                    "secret-injector.io/inject": "true",
                    "secret-injector.io/file.db": "vault:secret/data/demo/db#password",
                    "kubernetes.io/config.mirror": "abc",
                }
            )
        ),
        id="mirror-pod",
    ),
    pytest.param(
        admission_review(pod({"secret-injector.io/inject": "true"}), operation="UPDATE"),
        id="pod-update",
    ),
    pytest.param(admission_review(pod()), id="no-annotations"),
    pytest.param(admission_review(pod({"app": "web"})), id="no-inject-annotation"),
    pytest.param(
        admission_review(
            pod(
                {
                    "secret-injector.io/inject": "false",
                    "secret-injector.io/file.db": "vault:secret/data/demo/db#password",
                }
            )
        ),
        id="inject-false",
    ),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("review", PASS_THROUGH)
async def test_pass_through_is_allowed_without_patch(
    client: Client, endpoint: str, review: dict[str, Any]
) -> None:
    status, answer = await client.post(endpoint, review)
    assert status == 200
    assert (answer["apiVersion"], answer["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    assert answer["response"] == {"uid": review["request"]["uid"], "allowed": True}


async def test_uid_is_echoed_exactly(client: Client) -> None:
    uid = "0f6e2a1c-ffff-4c3b-9d1e-abcdefabcdef"
    status, answer = await client.post("/mutate", admission_review(pod(), uid=uid))
    assert (status, answer["response"]["uid"]) == (200, uid)


async def test_internal_error_denies_with_500_and_keeps_serving(
    client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret_looking = "s3cr3t-value-that-must-not-leak"

    async def broken(req: AdmissionRequest, ctx: pipeline.Context) -> pipeline.Decision:
        raise RuntimeError(f"bug while handling {secret_looking}")

    monkeypatch.setattr(pipeline, "admit", broken)
    caplog.set_level(logging.INFO)
    status, answer = await client.post("/mutate", admission_review(pod()))
    assert status == 200
    response = answer["response"]
    assert (response["uid"], response["allowed"], response["status"]["code"]) == (UID, False, 500)
    assert secret_looking not in response["status"]["message"]
    assert "internal error" in response["status"]["message"]
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged and logged[0].exc_info is not None  # the traceback is in the log
    assert 'outcome="error"' in await client.metrics()

    monkeypatch.undo()
    status, answer = await client.post("/validate", admission_review(pod(), operation="DELETE"))
    assert (status, answer["response"]["allowed"]) == (200, True)


async def test_audit_line_has_the_decision_fields(client: Client, audit_lines: AuditLines) -> None:
    mirror = pod({"kubernetes.io/config.mirror": "abc", "secret-injector.io/inject": "true"})
    review = admission_review(mirror, namespace="shop")
    await client.post("/mutate", review)
    (fields,) = audit_lines()
    assert {
        key: fields[key]
        for key in (
            "endpoint",
            "uid",
            "namespace",
            "pod",
            "owner",
            "operation",
            "user",
            "decision",
            "outcome",
            "references",
            "violations",
            "warnings",
        )
    } == {
        "endpoint": "mutate",
        "uid": UID,
        "namespace": "shop",
        "pod": "web-5d9c7-",
        "owner": "ReplicaSet/web-5d9c7",
        "operation": "CREATE",
        "user": "system:serviceaccount:kube-system:replicaset-controller",
        "decision": "allowed",
        "outcome": "skipped",
        "references": [],
        "violations": [],
        "warnings": [],
    }
    assert isinstance(fields["duration_ms"], float) and fields["duration_ms"] >= 0


async def test_reviews_are_counted_by_endpoint_operation_and_outcome(client: Client) -> None:
    await client.post("/mutate", admission_review(pod(), operation="DELETE"))
    await client.post("/validate", admission_review(pod(), operation="DELETE"))
    await client.post("/validate", b"[]")
    text = await client.metrics()
    total = "secret_injector_reviews_total"
    for line in (
        f'{total}{{endpoint="mutate",operation="DELETE",outcome="skipped"}} 1.0',
        f'{total}{{endpoint="validate",operation="DELETE",outcome="skipped"}} 1.0',
        f'{total}{{endpoint="validate",operation="unknown",outcome="invalid"}} 1.0',
        'secret_injector_review_duration_seconds_count{endpoint="validate"} 2.0',
        "secret_injector_reviews_in_flight 0.0",
    ):
        assert line in text


def decoded_patch(response: dict[str, Any]) -> list[dict[str, Any]]:
    assert response["patchType"] == "JSONPatch"
    patch: list[dict[str, Any]] = orjson.loads(base64.b64decode(response["patch"]))
    return patch
