"""review: AdmissionReview v1 parsing at the boundary and the answers we send back."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import make_pod, make_review
from tests.reliability.conftest import fuzz_settings
from tests.reliability.strategies import wrecked
from webhook.errors import PolicyError, ReviewError
from webhook.review import allow, check_pod_shape, deny, encode_patch, parse_review


def review(request: dict[str, Any] | None = None, **top: Any) -> bytes:
    body: dict[str, Any] = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}
    body["request"] = {
        "uid": "u-1",
        "operation": "CREATE",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "namespace": "team-a",
        "userInfo": {"username": "alice"},
        "object": {
            "metadata": {"generateName": "web-", "annotations": {"a": "b"}},
            "spec": {"serviceAccountName": "web", "containers": [{"name": "app"}]},
        },
        **(request or {}),
    }
    body.update(top)
    return orjson.dumps(body)


def test_parse_review_reads_a_pod_create() -> None:
    req = parse_review(review({"dryRun": True}))
    assert (req.uid, req.operation, req.namespace, req.name) == ("u-1", "CREATE", "team-a", "web-")
    assert (req.user, req.service_account, req.dry_run) == ("alice", "web", True)
    assert req.is_pod and not req.is_mirror
    assert req.annotations == {"a": "b"}


def test_parse_review_delete_needs_no_object() -> None:
    req = parse_review(review({"operation": "DELETE", "object": None}))
    assert req.pod is None and req.operation == "DELETE"


def test_parse_review_keeps_the_spec_as_sent_and_decodes_it_once() -> None:
    body = review()
    sent = orjson.loads(body)["request"]["object"]
    req = parse_review(body)
    assert req.spec_json == orjson.dumps(sent["spec"])
    assert req.pod == {"metadata": sent["metadata"], "spec": sent["spec"]}
    assert req.pod is req.pod


def test_parse_review_skips_what_it_does_not_read() -> None:
    """managedFields holds a string that is not UTF-8, which orjson refuses: never decoded."""
    metadata = {"name": "web", "managedFields": [{"manager": "kubectl", "x": "HUGE"}]}
    body = review({"object": {"metadata": metadata, "spec": {"containers": [{"name": "a"}]}}})
    req = parse_review(body.replace(b'"HUGE"', b'"\xff"'))
    assert req.name == "web"
    assert req.pod is not None and req.pod["metadata"] == {"name": "web"}


def test_parse_review_leaves_an_unreadable_spec_to_whoever_reads_it() -> None:
    body = review().replace(b'"containers"', b'"hostname":"\xff","containers"')
    req = parse_review(body)  # a pod left alone never reads its spec
    assert (req.uid, req.name) == ("u-1", "web-")
    with pytest.raises(ReviewError, match=r"request\.object\.spec could not be decoded") as caught:
        _ = req.pod
    assert caught.value.http_status == 400


def test_parse_review_reads_one_spec_when_the_body_repeats_the_key() -> None:
    """The spec a decision is keyed on is the spec it is planned from: both read
    `spec_json`, the last of repeated keys, as orjson and the API server's decoder do."""
    first = {"serviceAccountName": "trusted", "containers": [{"name": "a"}]}
    last = {"serviceAccountName": "web", "containers": [{"name": "b"}]}
    body = review({"object": {"metadata": {"name": "web"}, "spec": last}})
    body = body.replace(b'"spec":', b'"spec":' + orjson.dumps(first) + b',"spec":', 1)
    req = parse_review(body)
    assert req.spec_json == orjson.dumps(last)
    assert req.pod is not None and req.pod["spec"] == last
    assert req.service_account == "web"


OPTED_IN_REVIEW = make_review(
    make_pod(
        {"secret-injector.io/inject": "true", "secret-injector.io/file.db": "vault:a/b#c"},
        containers=[{"name": "app", "image": "app:1", "env": [{"name": "A", "value": "b"}]}],
        namespace="team-a",
    ),
    uid="u-1",
)


@fuzz_settings(300)
@given(st.data())
def test_parse_review_reads_what_a_plain_reading_of_the_json_reads(data: st.DataObject) -> None:
    """The Structs read the same values as `orjson.loads` and plain lookups would, on a
    review damaged anywhere (fields removed, of the wrong type, replaced by any JSON); or
    the review is refused with a ReviewError, never another exception."""
    doc = data.draw(wrecked(OPTED_IN_REVIEW))
    try:
        req = parse_review(json.dumps(doc).encode())  # any int, beyond 64 bits too
    except ReviewError:
        return
    request = doc["request"]
    assert (req.uid, req.operation) == (request["uid"], request["operation"])
    assert (req.kind, req.dry_run) == (request["kind"]["kind"], request.get("dryRun", False))
    if req.operation not in ("CREATE", "UPDATE"):
        return
    obj = request["object"]
    metadata = obj.get("metadata") or {}
    assert req.annotations == (metadata.get("annotations") or {})
    assert req.namespace == (request.get("namespace") or metadata.get("namespace") or "default")
    if req.spec_json:
        assert req.pod == {
            "metadata": {k: v for k, v in metadata.items() if k in _READ and v is not None},
            "spec": obj["spec"],
        }


_READ = {"name", "generateName", "namespace", "annotations", "ownerReferences"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b"not json", "request body is not JSON", id="not-json"),
        pytest.param(b"[1, 2]", "must be a JSON object", id="array"),
        pytest.param(b"", "request body is not JSON", id="empty"),
        pytest.param(
            review(apiVersion="admission.k8s.io/v1beta1"),
            "expected apiVersion admission.k8s.io/v1 and kind AdmissionReview",
            id="v1beta1",
        ),
        pytest.param(review(kind="Pod"), "kind AdmissionReview", id="wrong-kind"),
        pytest.param(
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}',
            "has no request object",
            id="no-request",
        ),
        pytest.param(review({"uid": ""}), "request.uid is missing", id="empty-uid"),
        pytest.param(review({"uid": 7}), "request.uid is missing", id="uid-not-string"),
        pytest.param(review({"object": None}), "request.object is missing", id="no-object"),
        pytest.param(review({"kind": "Pod"}), "request.kind must be an object", id="kind-string"),
        pytest.param(review({"object": 5}), "request.object must be an object", id="object-number"),
        pytest.param(
            review({"object": {"metadata": "web", "spec": {}}}),
            "request.object.metadata must be an object",
            id="metadata-string",
        ),
        pytest.param(
            review({"operation": "DELETE", "oldObject": []}),
            "request.oldObject must be an object",
            id="old-object-list",
        ),
        pytest.param(
            b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply", id="nested-deep"
        ),
        pytest.param(review({"operation": 1}), "request.operation", id="operation-int"),
        pytest.param(review({"dryRun": "yes"}), "request.dryRun must be a boolean", id="dryrun"),
        pytest.param(
            review({"object": {"metadata": {"annotations": {"a": 1}}, "spec": {"containers": []}}}),
            "annotations must map strings to strings",
            id="annotation-not-string",
        ),
        pytest.param(
            review({"object": {"metadata": {}, "spec": []}}),
            "request.object.spec is missing or not an object",
            id="spec-list",
        ),
    ],
)
def test_parse_review_rejects_malformed_requests(body: bytes, reason: str) -> None:
    with pytest.raises(ReviewError) as caught:
        parse_review(body)
    assert reason in caught.value.reason
    assert caught.value.http_status == 400


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        pytest.param(
            {"containers": [{"name": "a", "env": {}}]},
            "request.object.spec.containers[0].env must be a list of objects",
            id="env-mapping",
        ),
        pytest.param(
            {"containers": [{"image": "x"}]},
            "request.object.spec.containers[0].name must be a string",
            id="container-without-name",
        ),
        pytest.param(
            {"containers": [{"name": "a"}], "volumes": [3]},
            "request.object.spec.volumes must be a list of objects",
            id="volume-number",
        ),
        pytest.param({}, "request.object.spec.containers must be a list", id="no-containers"),
    ],
)
def test_check_pod_shape_rejects_what_the_pipeline_could_not_read(
    spec: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ReviewError) as caught:
        check_pod_shape({"metadata": {}, "spec": spec})
    assert reason in caught.value.reason
    assert caught.value.http_status == 400


def test_allow_encodes_patch_as_base64_jsonpatch() -> None:
    ops = [{"op": "add", "path": "/metadata/annotations/x~1y", "value": "z"}]
    answer = allow("u-1", ops, ["careful"])
    response = answer["response"]
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert response["uid"] == "u-1" and response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    assert orjson.loads(base64.b64decode(response["patch"])) == ops
    assert response["warnings"] == ["careful"]


def test_allow_with_a_patch_encoded_beforehand_answers_the_same() -> None:
    """A cached decision carries its patch encoded once for all the template's pods."""
    ops = [{"op": "add", "path": "/spec/volumes/-", "value": {"name": "v", "csi": {}}}]
    assert allow("u-2", ops, [], encode_patch(ops)) == allow("u-2", ops)


def test_allow_without_operations_has_no_patch() -> None:
    assert allow("u-1")["response"] == {"uid": "u-1", "allowed": True}


def test_deny_carries_code_and_every_line() -> None:
    response = deny("u-1", PolicyError(["rule: a: b (c)", "rule: d: e (f)"]))["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert response["status"]["message"] == "rule: a: b (c)\nrule: d: e (f)"
