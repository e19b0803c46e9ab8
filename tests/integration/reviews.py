"""Builders for the AdmissionReviews the integration tests send."""

from __future__ import annotations

from typing import Any


def pod(
    annotations: dict[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A minimal valid Pod with the given annotations."""
    metadata: dict[str, Any] = {"generateName": "web-5d9c7-", "namespace": "demo"}
    if annotations is not None:
        metadata["annotations"] = annotations
    metadata["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9c7", "uid": "u-rs"}
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "containers": containers or [{"name": "app", "image": "nginx:1.27"}],
            **spec,
        },
    }


def admission_review(
    obj: dict[str, Any] | None,
    *,
    uid: str = "4b6b9d64-8b7b-4d8e-9a1e-000000000001",
    operation: str = "CREATE",
    kind: str = "Pod",
    group: str = "",
    sub_resource: str | None = None,
    namespace: str = "demo",
    dry_run: bool = False,
) -> dict[str, Any]:
    """An AdmissionReview v1 as the API server sends it."""
    request: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": kind.lower() + "s"},
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": obj,
        "oldObject": None,
        "dryRun": dry_run,
    }
    if sub_resource is not None:
        request["subResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
