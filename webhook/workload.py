"""Pods from manifests: the Pod a controller would create from a workload's template,
wrapped in the AdmissionReview the API server would send for it (for `explain` and
`make run`)."""

from __future__ import annotations

import copy
import hashlib
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import jsonpatch
import orjson
import yaml

from webhook.review import API_VERSION, PatchOp, RawPod

# (apiVersion group, kind) -> where the pod template sits, and who owns the pods.
TEMPLATES: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    ("apps", "Deployment"): (("spec", "template"), "ReplicaSet"),
    ("apps", "ReplicaSet"): (("spec", "template"), "ReplicaSet"),
    ("apps", "StatefulSet"): (("spec", "template"), "StatefulSet"),
    ("apps", "DaemonSet"): (("spec", "template"), "DaemonSet"),
    ("batch", "Job"): (("spec", "template"), "Job"),
    ("batch", "CronJob"): (("spec", "jobTemplate", "spec", "template"), "Job"),
}
OWNER_API = {"ReplicaSet": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1"}


class ManifestError(ValueError):
    """A document is not a Kubernetes object we can read a pod from."""


def label(obj: Mapping[str, Any]) -> str:
    """`Deployment/web` for messages."""
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return f"{obj.get('kind', '?')}/{name or '?'}"


def is_pod(obj: Mapping[str, Any]) -> bool:
    return obj.get("kind") == "Pod" and obj.get("apiVersion") == "v1"


def template_path(obj: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Where `obj` keeps its pod template, or None if it is no workload we know."""
    api_version = obj.get("apiVersion")
    group = api_version.split("/", 1)[0] if isinstance(api_version, str) else ""
    entry = TEMPLATES.get((group, str(obj.get("kind"))))
    return entry[0] if entry else None


def pod_for(obj: Mapping[str, Any], namespace: str) -> RawPod | None:
    """The Pod `obj` is, or that its controller would create; None for other kinds."""
    own_metadata = obj.get("metadata", {})
    if not isinstance(own_metadata, dict):
        raise ManifestError(f"{label(obj)}: metadata must be a mapping")
    if is_pod(obj):
        pod = copy.deepcopy(dict(obj))
        pod.setdefault("metadata", {})["namespace"] = namespace
        return pod
    path = template_path(obj)
    if path is None:
        return None
    template = _walk(obj, path)
    name = own_metadata.get("name") or "workload"
    metadata = copy.deepcopy(template.get("metadata") or {})
    if not isinstance(metadata, dict):
        raise ManifestError(f"{label(obj)}: {'.'.join(path)}.metadata must be a mapping")
    owner_kind = TEMPLATES[_key(obj)][1]
    # A Deployment's ReplicaSet (a CronJob's Job) is named after the template's hash.
    digest = hashlib.sha256(orjson.dumps(template, option=orjson.OPT_SORT_KEYS)).hexdigest()
    owner_name = name if owner_kind == obj.get("kind") else f"{name}-{digest[:10]}"
    metadata.pop("name", None)
    metadata.update(
        namespace=namespace,
        generateName=f"{owner_name}-",
        ownerReferences=[
            {
                "apiVersion": OWNER_API.get(owner_kind, "batch/v1"),
                "kind": owner_kind,
                "name": owner_name,
                "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{owner_name}")),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": copy.deepcopy(template.get("spec")),
    }


def apply_patch(obj: Mapping[str, Any], patch: list[PatchOp]) -> dict[str, Any]:
    """A copy of `obj` with the pod patch applied to the pod (or to its template)."""
    patched = copy.deepcopy(dict(obj))
    if not patch:
        return patched
    if is_pod(obj):
        result: dict[str, Any] = jsonpatch.apply_patch(patched, patch)
        return result
    path = template_path(obj)
    if path is None:
        raise ManifestError(f"{label(obj)} has no pod template to patch")
    template = _walk(patched, path)
    new_template = jsonpatch.apply_patch(template, patch)
    template.clear()
    template.update(new_template)
    return patched


def admission_review(pod: RawPod, namespace: str, user: str) -> dict[str, Any]:
    """The AdmissionReview the API server sends to a webhook when `pod` is created."""
    return {
        "apiVersion": API_VERSION,
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod.get("metadata", {}).get("name", ""),
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": user},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


class _Dumper(yaml.SafeDumper):
    """Block style, and multi-line strings (SPC `objects`) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(objects: Iterable[Mapping[str, Any]]) -> str:
    """A YAML stream (`---` before each object), keys in their original order."""
    return yaml.dump_all(
        [dict(o) for o in objects], Dumper=_Dumper, sort_keys=False, explicit_start=True
    )


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    return (str(obj.get("apiVersion", "")).split("/", 1)[0], str(obj.get("kind")))


def _walk(obj: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node: Any = obj
    for index, step in enumerate(path):
        node = node.get(step) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            where = ".".join(path[: index + 1])
            raise ManifestError(f"{label(obj)}: {where} is missing or not a mapping")
    return node  # type: ignore[no-any-return]
