"""Builders for the policy tests: real AdmissionRequests (through review.parse_review)."""

from __future__ import annotations

from typing import Any

import orjson

from webhook.refs import (
    AwsParameterRef,
    AwsSecretRef,
    Delivery,
    Injection,
    PodInjection,
    SecretRef,
    VaultRef,
)
from webhook.review import AdmissionRequest, parse_review

PREFIX = "secret-injector.io/"


def request(
    spec: dict[str, Any] | None = None,
    *,
    namespace: str = "team-a",
    service_account: str = "web",
    annotations: dict[str, str] | None = None,
) -> AdmissionRequest:
    """A Pod CREATE review in `namespace`, with an `app` container unless `spec` says more."""
    pod_spec: dict[str, Any] = {
        "serviceAccountName": service_account,
        "containers": [{"name": "app", "image": "registry.example.com/app:1.0"}],
    }
    pod_spec.update(spec or {})
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "uid-1",
            "operation": "CREATE",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": namespace,
            "userInfo": {"username": "alice"},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"generateName": "web-", "annotations": annotations or {}},
                "spec": pod_spec,
            },
        },
    }
    return parse_review(orjson.dumps(body))


def ref(text: str) -> SecretRef:
    """A reference value from its annotation text (the few shapes these tests use)."""
    scheme, _, rest = text.partition(":")
    if scheme == "vault":
        path, _, key = rest.partition("#")
        return VaultRef(path, key or "value")
    if scheme == "aws-sm":
        return AwsSecretRef(rest)
    if scheme == "aws-ssm":
        return AwsParameterRef(rest)
    raise ValueError(text)


def injections(**annotations: str) -> PodInjection:
    """`file_db="vault:..."` -> the PodInjection of `secret-injector.io/file.db`."""
    items = []
    for key, value in annotations.items():
        kind, _, target = key.partition("_")
        delivery: Delivery = "file" if kind == "file" else "env"
        items.append(Injection(f"{PREFIX}{kind}.{target}", delivery, target, ref(value)))
    return PodInjection(injections=tuple(items))


def container(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": "registry.example.com/app:1.0", **fields}


def env(**values: str) -> list[dict[str, Any]]:
    return [{"name": name, "value": value} for name, value in values.items()]
