"""AdmissionReview v1 in and out: parse once at the boundary, answer in the same version."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from webhook.errors import ReviewError, WebhookError

API_VERSION = "admission.k8s.io/v1"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"

RawPod = dict[str, Any]
PatchOp = dict[str, Any]


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """What the pipeline reads of a review; `pod` is kept raw to be patched untouched."""

    uid: str
    operation: str  # CREATE | UPDATE | DELETE | CONNECT
    kind: str  # the object's kind: Pod, Deployment, ...
    group: str
    sub_resource: str
    namespace: str
    name: str  # the pod's name, or its generateName while it has none
    dry_run: bool
    user: str
    pod: RawPod | None  # the object when it is a Pod being created or updated
    annotations: Mapping[str, str]
    service_account: str
    owner: str | None  # "ReplicaSet/web-5d9c7" for the first ownerReference

    @property
    def is_pod(self) -> bool:
        return self.kind == "Pod" and self.group == "" and not self.sub_resource

    @property
    def is_mirror(self) -> bool:
        return MIRROR_ANNOTATION in self.annotations


def parse_review(body: bytes) -> AdmissionRequest:
    """Parse the raw request body; raises ReviewError (HTTP 400) naming what is wrong."""
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ReviewError(f"request body is not JSON: {exc}") from None
    if not isinstance(review, dict):
        raise ReviewError("request body must be a JSON object (an AdmissionReview)")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != "AdmissionReview":
        raise ReviewError(
            f"expected apiVersion {API_VERSION} and kind AdmissionReview, got "
            f"apiVersion {_show(review.get('apiVersion'))} and kind {_show(review.get('kind'))}"
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise ReviewError("AdmissionReview has no request object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("request.uid is missing or not a string")
    operation = _string(request, "operation", "request.operation", required=True)
    kind_obj = _mapping(request.get("kind"), "request.kind")
    kind = _string(kind_obj, "kind", "request.kind.kind", required=True)
    group = _string(kind_obj, "group", "request.kind.group")
    sub_resource = _string(request, "subResource", "request.subResource")
    dry_run = request.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise ReviewError("request.dryRun must be a boolean")
    user_info = _mapping(request.get("userInfo"), "request.userInfo")
    user = _string(user_info, "username", "request.userInfo.username")

    obj = request.get("object")
    pod: RawPod | None = None
    metadata: Mapping[str, Any] = {}
    if operation in ("CREATE", "UPDATE"):
        if not isinstance(obj, dict):
            raise ReviewError(f"request.object is missing for operation {operation}")
        metadata = _mapping(obj.get("metadata"), "request.object.metadata")
        if kind == "Pod" and group == "" and not sub_resource:
            if not isinstance(obj.get("spec"), dict):
                raise ReviewError("request.object.spec is missing or not an object")
            pod = obj  # its containers and volumes: check_pod_shape, before they are read
    annotations = _annotations(metadata.get("annotations"))
    namespace = request.get("namespace") or metadata.get("namespace") or "default"
    if not isinstance(namespace, str):
        raise ReviewError("request.namespace must be a string")
    described = metadata or _old_metadata(request, operation)  # who, for the audit line
    name = described.get("name") or described.get("generateName") or request.get("name") or ""
    if not isinstance(name, str):
        raise ReviewError("request.object.metadata.name must be a string")
    service_account = "default"
    if pod is not None:
        service_account = pod.get("spec", {}).get("serviceAccountName") or "default"
    return AdmissionRequest(
        uid=uid,
        operation=operation,
        kind=kind,
        group=group,
        sub_resource=sub_resource,
        namespace=namespace,
        name=name,
        dry_run=dry_run,
        user=user,
        pod=pod,
        annotations=annotations,
        service_account=service_account if isinstance(service_account, str) else "default",
        owner=_owner(described.get("ownerReferences")),
    )


def allow(
    uid: str,
    patch: Sequence[PatchOp] = (),
    warnings: Sequence[str] = (),
    encoded_patch: str = "",
) -> dict[str, Any]:
    """An allowing AdmissionReview, with a base64 JSONPatch when there are operations
    (`encoded_patch`: `encode_patch(patch)` done already, for a cached decision)."""
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = encoded_patch or encode_patch(patch)
    if warnings:
        response["warnings"] = list(warnings)
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def encode_patch(patch: Sequence[PatchOp]) -> str:
    """The `patch` field of an AdmissionResponse: the operations as JSON, in base64."""
    return base64.b64encode(orjson.dumps(list(patch))).decode("ascii")


def deny(uid: str, error: WebhookError, warnings: Sequence[str] = ()) -> dict[str, Any]:
    """A denying AdmissionReview carrying the error's code and message."""
    response: dict[str, Any] = {
        "uid": uid,
        "allowed": False,
        "status": {
            "code": error.code,
            "reason": error.reason,
            "message": error.message,
        },
    }
    if warnings:
        response["warnings"] = list(warnings)
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def encode(review: Mapping[str, Any]) -> bytes:
    return orjson.dumps(review)


def check_pod_shape(pod: RawPod) -> None:
    """The parts of a Pod that the policy and patching read must have their API types;
    raises ReviewError (HTTP 400). The pipeline calls it before reading them, so a pod
    left alone (not opted in) and the pods of a template already planned (same spec) do
    not pay for it."""
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        raise ReviewError("request.object.spec is missing or not an object")
    for list_field in ("containers", "initContainers", "ephemeralContainers", "volumes"):
        items = spec.get(list_field)
        if items is None:
            continue
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ReviewError(f"request.object.spec.{list_field} must be a list of objects")
        for index, item in enumerate(items):
            if not isinstance(item.get("name"), str):
                where = f"request.object.spec.{list_field}[{index}].name"
                raise ReviewError(f"{where} must be a string")
            for sub in ("env", "volumeMounts", "envFrom"):
                value = item.get(sub)
                if value is not None and (
                    not isinstance(value, list) or not all(isinstance(v, dict) for v in value)
                ):
                    raise ReviewError(
                        f"request.object.spec.{list_field}[{index}].{sub} must be a list of objects"
                    )
    if not isinstance(spec.get("containers"), list):
        raise ReviewError("request.object.spec.containers must be a list of objects")


def _annotations(value: Any) -> Mapping[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ReviewError("request.object.metadata.annotations must map strings to strings")
    return value


def _old_metadata(request: Mapping[str, Any], operation: str) -> Mapping[str, Any]:
    """A DELETE's object is in oldObject: its metadata names the pod and its owner."""
    old = request.get("oldObject") if operation == "DELETE" else None
    metadata = old.get("metadata") if isinstance(old, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def _owner(value: Any) -> str | None:
    if not isinstance(value, list) or not value or not isinstance(value[0], dict):
        return None
    kind, name = value[0].get("kind"), value[0].get("name")
    return f"{kind}/{name}" if isinstance(kind, str) and isinstance(name, str) else None


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ReviewError(f"{where} must be an object")
    return value


def _string(obj: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise ReviewError(f"{where} is missing or not a string")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
