"""build_patch(): the JSON Patch add operations for volumes, mounts, env and the marker.

Only `add` operations, built by hand (diffing a deep copy costs 40-70x more CPU per review,
research/performance.md). Arrays and maps are created when absent and appended to with
`/-` otherwise, so a user's fields are never removed, replaced or reordered. Everything we
add is recognised on the way in, so a second call on our own output returns [] (the API
server may reinvoke us: reinvocationPolicy IfNeeded).

Receiving containers: the `containers` annotation, else every container in
spec.containers. Init containers receive nothing by default but may be named in the
annotation (an init container that needs a secret, e.g. a migration): the CSI volume is
mounted before any container starts. Ephemeral containers are never touched.

Each receiving container gets every SPC's volume, read-only, at `<mount-path>/<provider>`
(also when it only asked for env vars: the CSI driver syncs the Secret behind the env vars
only while a container mounts the volume), and one `secretKeyRef` env var per `env.<NAME>`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webhook.annotations import CONTAINERS, INJECTED, STATUS, show
from webhook.errors import AnnotationError, ConflictError
from webhook.providers import SpcPlan
from webhook.refs import PodInjection
from webhook.review import PatchOp, RawPod
from webhook.settings import Settings

CSI_DRIVER = "secrets-store.csi.k8s.io"


def build_patch(
    pod: RawPod, injection: PodInjection, plan: Sequence[SpcPlan], settings: Settings
) -> list[PatchOp]:
    """The add operations that inject `plan` into `pod`; [] when it is already injected.

    Raises AnnotationError when the `containers` annotation names a container the pod does
    not have, and ConflictError (one line per clash) when the pod already has a volume,
    mount or env var of ours that is not what we would add.
    """
    spec = pod.get("spec") or {}
    receivers = _receivers(spec, injection, settings)
    conflicts: list[str] = []
    ops = _volume_ops(spec, plan, conflicts)
    for receiver in receivers:
        ops += _mount_ops(receiver, plan, conflicts)
        ops += _env_ops(receiver, plan, conflicts)
    if conflicts:
        raise ConflictError(conflicts)
    ops += _marker_ops(pod, settings)
    return ops


def pointer(*tokens: str | int) -> str:
    """An RFC 6901 JSON pointer: `~` becomes `~0` and `/` becomes `~1`, in that order."""
    return "".join(
        f"/{t}" if isinstance(t, int) else "/" + t.replace("~", "~0").replace("/", "~1")
        for t in tokens
    )


def volume_for(spc: SpcPlan) -> dict[str, Any]:
    """The pod volume for one SPC: a read-only Secrets Store CSI volume."""
    return {
        "name": spc.volume_name,
        "csi": {
            "driver": CSI_DRIVER,
            "readOnly": True,
            "volumeAttributes": {"secretProviderClass": spc.name},
        },
    }


def mount_for(spc: SpcPlan) -> dict[str, Any]:
    """The read-only mount of an SPC's volume in a receiving container."""
    return {"name": spc.volume_name, "mountPath": spc.mount_path, "readOnly": True}


def env_for(spc: SpcPlan, var: str, key: str) -> dict[str, Any]:
    """An env var read from the Secret the CSI driver syncs for the SPC."""
    return {"name": var, "valueFrom": {"secretKeyRef": {"name": spc.name, "key": key}}}


@dataclass(frozen=True, slots=True)
class _Container:
    """A receiving container and where it sits in the pod."""

    field: str  # containers | initContainers
    index: int
    body: Mapping[str, Any]

    @property
    def label(self) -> str:
        kind = "init container" if self.field == "initContainers" else "container"
        return f'{kind} "{self.body.get("name")}"'


def _receivers(
    spec: Mapping[str, Any], injection: PodInjection, settings: Settings
) -> list[_Container]:
    containers = _containers(spec, "containers")
    if injection.containers is None:
        return containers
    init = _containers(spec, "initContainers")
    by_name = {c.body.get("name"): c for c in init + containers}
    missing = [name for name in injection.containers if name not in by_name]
    if missing:
        present = ", ".join(str(c.body.get("name")) for c in containers) or "none"
        if init:
            present += "; init containers: " + ", ".join(str(c.body.get("name")) for c in init)
        raise AnnotationError(
            [
                f"annotation {settings.prefix}{CONTAINERS}: the pod has no container named "
                f"{show(name)} (containers: {present})"
                for name in missing
            ]
        )
    return [by_name[name] for name in injection.containers]


def _volume_ops(
    spec: Mapping[str, Any], plan: Sequence[SpcPlan], conflicts: list[str]
) -> list[PatchOp]:
    volumes = _items(spec, "volumes")
    existing = {v.get("name"): v for v in volumes}
    new = []
    for spc in plan:
        found = existing.get(spc.volume_name)
        if found is None:
            new.append(volume_for(spc))
        elif _spc_of(found) != spc.name:
            conflicts.append(_volume_conflict(found, spc))
    if not new:
        return []
    if not isinstance(spec.get("volumes"), list):  # absent or null: create it
        return [{"op": "add", "path": "/spec/volumes", "value": new}]
    return [{"op": "add", "path": "/spec/volumes/-", "value": volume} for volume in new]


def _spc_of(volume: Mapping[str, Any]) -> str | None:
    """The SecretProviderClass a Secrets Store CSI volume uses; None for any other volume."""
    csi = volume.get("csi")
    if not isinstance(csi, dict) or csi.get("driver") != CSI_DRIVER:
        return None
    attributes = csi.get("volumeAttributes")
    name = attributes.get("secretProviderClass") if isinstance(attributes, dict) else None
    return name if isinstance(name, str) else None


def _volume_conflict(found: Mapping[str, Any], spc: SpcPlan) -> str:
    current = _spc_of(found)
    if current is not None:
        what = f"uses SecretProviderClass {show(current)}, but the annotations need {spc.name}"
    else:
        what = "already exists and is not the Secrets Store CSI volume secret-injector adds"
    return (
        f'volume "{spc.volume_name}" {what} (remove or rename that volume; secret-injector '
        "adds its own)"
    )


def _mount_ops(
    receiver: _Container, plan: Sequence[SpcPlan], conflicts: list[str]
) -> list[PatchOp]:
    mounts = [
        (mount, _normal(mount.get("mountPath"))) for mount in _items(receiver.body, "volumeMounts")
    ]
    new = []
    for spc in plan:
        if any(_is_our_mount(mount, spc) for mount, _ in mounts):
            continue
        clashes = [
            line for mount, normal in mounts if (line := _mount_clash(receiver, mount, normal, spc))
        ]
        conflicts += clashes
        if not clashes:
            new.append(mount_for(spc))
    return _append(receiver, "volumeMounts", new)


def _normal(path: Any) -> str | None:
    """A mount path as the kernel sees it: `/mnt//secrets/` is `/mnt/secrets`."""
    if not isinstance(path, str):
        return None
    return posixpath.normpath("/" + path.lstrip("/"))


def _is_our_mount(mount: Mapping[str, Any], spc: SpcPlan) -> bool:
    return (
        mount.get("name") == spc.volume_name
        and mount.get("mountPath") == spc.mount_path
        and mount.get("readOnly") is True
        and not mount.get("subPath")
        and not mount.get("subPathExpr")
    )


def _mount_clash(
    receiver: _Container, mount: Mapping[str, Any], normal: str | None, spc: SpcPlan
) -> str | None:
    if mount.get("name") == spc.volume_name:
        path = mount.get("mountPath")
        shown = show(path) if isinstance(path, str) else "(no path)"
        return (
            f'{receiver.label} mounts volume "{spc.volume_name}" at {shown}, not read-only '
            f"at {spc.mount_path} as secret-injector does (remove that mount; secret-injector "
            "adds its own)"
        )
    if normal == spc.mount_path:
        where = "at"
    elif normal is not None and normal.startswith(spc.mount_path + "/"):
        where = "inside"
    else:
        return None
    volume = mount.get("name")
    return (
        f"{receiver.label} already mounts volume {show(str(volume))} {where} {spc.mount_path}, "
        f"where secret-injector mounts the {spc.provider} secrets (move that mount or choose "
        "another mount-path annotation)"
    )


def _env_ops(receiver: _Container, plan: Sequence[SpcPlan], conflicts: list[str]) -> list[PatchOp]:
    env = _items(receiver.body, "env")
    existing = {e.get("name"): e for e in env}
    new = []
    for spc in plan:
        for var, key in spc.env:
            found = existing.get(var)
            if found is None:
                new.append(env_for(spc, var, key))
            elif not _is_our_env(found, spc, key):
                conflicts.append(
                    f'{receiver.label} already has env var "{var}" (remove it or choose '
                    "another name in the env. annotation; secret-injector never overwrites one)"
                )
    return _append(receiver, "env", new)


def _is_our_env(var: Mapping[str, Any], spc: SpcPlan, key: str) -> bool:
    source = var.get("valueFrom")
    ref = source.get("secretKeyRef") if isinstance(source, dict) else None
    return (
        "value" not in var
        and isinstance(ref, dict)
        and ref.get("name") == spc.name
        and ref.get("key") == key
        and not ref.get("optional")
    )


def _marker_ops(pod: RawPod, settings: Settings) -> list[PatchOp]:
    key = settings.prefix + STATUS
    metadata = pod.get("metadata")
    if not isinstance(metadata, dict):
        return [{"op": "add", "path": "/metadata", "value": {"annotations": {key: INJECTED}}}]
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        return [{"op": "add", "path": "/metadata/annotations", "value": {key: INJECTED}}]
    if annotations.get(key) == INJECTED:
        return []
    return [{"op": "add", "path": pointer("metadata", "annotations", key), "value": INJECTED}]


def _append(receiver: _Container, name: str, new: list[dict[str, Any]]) -> list[PatchOp]:
    """Ops that append `new` to the container's `name` list, creating it when absent or null."""
    if not new:
        return []
    base = pointer("spec", receiver.field, receiver.index, name)
    if not isinstance(receiver.body.get(name), list):
        return [{"op": "add", "path": base, "value": new}]
    return [{"op": "add", "path": base + "/-", "value": item} for item in new]


def _containers(spec: Mapping[str, Any], name: str) -> list[_Container]:
    """The containers of one list, with their index in it (the patch paths need it)."""
    value = spec.get(name)
    if not isinstance(value, list):
        return []
    return [_Container(name, i, c) for i, c in enumerate(value) if isinstance(c, dict)]


def _items(obj: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    """A list-of-objects field, [] when absent or null (review.parse_review checked types)."""
    value = obj.get(name)
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]
