"""A small fake Kubernetes API server: the one fake of the test suite (no kube-apiserver here).

It answers like the real one for the few resources secret-injector uses: 201 on create with
uid, resourceVersion and creationTimestamp filled; `kind: Status` objects for 404 NotFound,
409 AlreadyExists, 409 Conflict (stale resourceVersion) and 422 Invalid; JSON merge patch,
strategic merge patch (built-in kinds only, merge keys for the lists we patch) and JSON
patch as the official client sends them. Stored objects are validated against real schemas:
kubernetes-validate (strict, Kubernetes 1.30) for built-in kinds, the SecretProviderClass CRD
(with unknown fields rejected, like `fieldValidation=Strict`) for SPCs.

Tests steer it with fault knobs (`fail`, `hang`) and read its request log (`count`).

    async with FakeKube(namespaces=["team-a"]) as fake:   # in-process, from async tests
        fake.kubeconfig(tmp_path / "kubeconfig")
    with FakeKube().in_thread() as fake: ...               # from sync tests
    python -m tests.fake_kube --kubeconfig FILE [--namespace NS] [--seed OBJECTS.yaml]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import copy
import itertools
import json
import re
import signal
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonpatch
import jsonschema
import kubernetes_validate
import yaml
from aiohttp import web

KUBERNETES_VERSION = "1.30.0"
# The real CRD of the Secrets Store CSI driver: the repository's copy, else the shared one.
CRD_FILES = (
    Path(__file__).resolve().parent / "data" / "secretproviderclass-crd.yaml",
    Path("/work/shared/data/secretproviderclass-crd.yaml"),
)

Obj = dict[str, Any]
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


class ApiError(Exception):
    """An error answered as a `kind: Status` object."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


@dataclass(frozen=True, slots=True)
class Resource:
    """One REST resource: where it lives and how its objects are checked."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    # Strategic merge patch: list field -> merge key (others are replaced); None: not allowed
    # (custom resources answer 415 to strategic merge patch, like the real server).
    merge_keys: dict[str, str] | None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def details(self, name: str, kind: str | None = None) -> Obj:
        details: Obj = {"name": name, "kind": kind or self.plural}
        if self.group:
            details["group"] = self.group
        return details

    def not_found(self, name: str) -> ApiError:
        return ApiError(
            404, "NotFound", f'{self.group_resource} "{name}" not found', self.details(name)
        )


SPC = Resource(
    "secrets-store.csi.x-k8s.io", "v1", "secretproviderclasses", "SecretProviderClass", True, None
)
SECRET = Resource("", "v1", "secrets", "Secret", True, {})
NAMESPACE = Resource("", "v1", "namespaces", "Namespace", False, {})
_WEBHOOK_MERGE_KEYS = {"webhooks": "name"}
MUTATING = Resource(
    "admissionregistration.k8s.io",
    "v1",
    "mutatingwebhookconfigurations",
    "MutatingWebhookConfiguration",
    False,
    _WEBHOOK_MERGE_KEYS,
)
VALIDATING = Resource(
    "admissionregistration.k8s.io",
    "v1",
    "validatingwebhookconfigurations",
    "ValidatingWebhookConfiguration",
    False,
    _WEBHOOK_MERGE_KEYS,
)
RESOURCES = (SPC, SECRET, NAMESPACE, MUTATING, VALIDATING)


# ---------------------------------------------------------------------------- validation


@cache
def _spc_validator() -> jsonschema.protocols.Validator:
    path = next((p for p in CRD_FILES if p.exists()), CRD_FILES[0])
    crd = yaml.safe_load(path.read_text(encoding="utf-8"))
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = _closed(served["schema"]["openAPIV3Schema"])
    return jsonschema.Draft202012Validator(schema)


def _closed(schema: Any) -> Any:
    """The schema with unknown fields rejected wherever it lists properties."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed(value) for key, value in schema.items()}
    if "properties" in closed and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed


def validate(resource: Resource, obj: Obj) -> None:
    """Raise a 422 Invalid ApiError when `obj` breaks the resource's schema."""
    name = str(obj.get("metadata", {}).get("name", ""))
    causes: list[Obj] = []
    if not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
        causes.append(
            _cause(
                "metadata.name",
                f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain is required",
            )
        )
    if resource is SPC:
        causes += [
            _cause(_field(err.absolute_path), err.message)
            for err in _spc_validator().iter_errors(obj)
        ]
        # Custom resources get the same ObjectMeta validation as built-in kinds.
        causes += _schema_causes(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj.get("metadata", {})}
        )
    else:
        causes += _schema_causes(obj)
    if resource is SECRET:
        causes += _secret_causes(obj)
    if resource in (MUTATING, VALIDATING):
        for i, hook in enumerate(obj.get("webhooks") or []):
            bundle = (hook.get("clientConfig") or {}).get("caBundle")
            if bundle is not None and not _is_base64(bundle):
                causes.append(_cause(f"webhooks[{i}].clientConfig.caBundle", "illegal base64"))
    if causes:
        summary = "; ".join(f"{c['field']}: {c['message']}" for c in causes)
        details = resource.details(name, kind=resource.kind)
        details["causes"] = causes
        raise ApiError(422, "Invalid", f'{resource.kind} "{name}" is invalid: {summary}', details)


def _schema_causes(obj: Obj) -> list[Obj]:
    return [dict(cause) for cause in _schema_causes_of(json.dumps(obj, sort_keys=True))]


@cache  # the same objects come back in every test (namespaces, webhook configurations)
def _schema_causes_of(text: str) -> tuple[Obj, ...]:
    try:
        kubernetes_validate.validate(json.loads(text), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        return (_cause(_field(err.absolute_path), err.message),)
    return ()


def _secret_causes(obj: Obj) -> list[Obj]:
    data = obj.get("data") or {}
    causes = [
        _cause(
            f"data[{k}]",
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
        )
        for k in data
        if not _SECRET_KEY.match(k)
    ]
    causes += [
        _cause(f"data[{k}]", "illegal base64 data")
        for k, v in data.items()
        if isinstance(v, str) and not _is_base64(v)
    ]
    if obj.get("type") == "kubernetes.io/tls":
        causes += [
            _cause(f"data[{k}]", "Required value") for k in ("tls.crt", "tls.key") if k not in data
        ]
    return causes


def _is_base64(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _cause(path: str, message: str) -> Obj:
    return {"reason": "FieldValueInvalid", "message": message, "field": path}


def _field(path: Sequence[Any]) -> str:
    return ".".join(str(p) for p in path) or "<root>"


# ---------------------------------------------------------------------------- patches


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any, merge_keys: dict[str, str]) -> Any:
    """Kubernetes strategic merge patch, for the list fields named in `merge_keys`.

    Lists with a merge key merge element by element (matched on that key); other lists are
    replaced, as for the fields of our kinds that have no patch strategy.
    """
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return copy.deepcopy(patch)
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif key in merge_keys and isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, merge_keys[key], merge_keys)
        else:
            result[key] = strategic_merge_patch(result.get(key), value, merge_keys)
    return result


def _merge_list(current: list[Any], patch: list[Any], key: str, keys: dict[str, str]) -> list[Any]:
    merged = list(current)
    for item in patch:
        index = next((i for i, old in enumerate(merged) if old.get(key) == item.get(key)), None)
        if index is None:
            merged.append(copy.deepcopy(item))
        else:
            merged[index] = strategic_merge_patch(merged[index], item, keys)
    return merged


# ---------------------------------------------------------------------------- the server


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass(slots=True)
class Fault:
    """Answer `status` to, hang `seconds`, or hold at a barrier the next `times` requests."""

    path: re.Pattern[str]
    method: str | None
    times: int
    status: int | None = None
    seconds: float = 0.0
    barrier: asyncio.Barrier | None = None


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    content_type: str


@dataclass(slots=True)
class FakeKube:
    """The fake API server and its store; start it with `async with` or `in_thread()`."""

    namespaces: Sequence[str] = ("default",)
    objects: dict[tuple[str, str, str], Obj] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    url: str = ""
    _versions: Iterator[int] = field(default_factory=lambda: itertools.count(1000))
    _runner: web.AppRunner | None = None
    _closing: asyncio.Event | None = None
    _arrived: asyncio.Condition | None = None

    def __post_init__(self) -> None:
        for name in self.namespaces:
            self.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # -- knobs and inspection (for tests) ---------------------------------------------

    def fail(self, path: str, status: int = 500, times: int = 1, method: str | None = None) -> None:
        """The next `times` requests whose path matches the regex `path` get `status`."""
        self.faults.append(Fault(re.compile(path), method, times, status=status))

    def hang(self, path: str, seconds: float, times: int = 1, method: str | None = None) -> None:
        """The next `times` matching requests wait `seconds` (or until close) first."""
        self.faults.append(Fault(re.compile(path), method, times, seconds=seconds))

    def hold(self, path: str, times: int, method: str | None = None) -> None:
        """The next `times` matching requests wait until all of them have arrived, then go on
        in arrival order: a deterministic race (e.g. two replicas creating the same Secret)."""
        self.faults.append(Fault(re.compile(path), method, times, barrier=asyncio.Barrier(times)))

    async def wait_for(self, count: int, method: str | None = None, path: str = "") -> None:
        """Wait until `count` requests like those `count()` counts have arrived."""
        assert self._arrived is not None, "start the fake first"
        async with self._arrived:
            await self._arrived.wait_for(lambda: self.count(method, path) >= count)

    def count(self, method: str | None = None, path: str = "") -> int:
        """How many requests were served with this method and a path matching regex `path`."""
        pattern = re.compile(path)
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method) and pattern.search(r.path)
        )

    def seed(self, obj: Obj) -> Obj:
        """Store `obj` as if created through the API (validated, metadata filled)."""
        resource = _resource_of(obj)
        namespace = obj.get("metadata", {}).get("namespace", "") if resource.namespaced else ""
        return self._create(resource, namespace, json.loads(json.dumps(obj)))  # as if sent

    def get(self, resource: Resource, name: str, namespace: str = "") -> Obj | None:
        """A stored object (a copy), or None."""
        obj = self.objects.get((resource.plural, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, resource: Resource, namespace: str | None = None) -> list[Obj]:
        return [
            copy.deepcopy(obj)
            for (plural, ns, _), obj in sorted(self.objects.items())
            if plural == resource.plural and (namespace is None or ns == namespace)
        ]

    def kubeconfig(self, path: Path) -> Path:
        """Write a kubeconfig pointing at this server (plain HTTP, no credentials)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> str:
        self._closing = asyncio.Event()
        self._arrived = asyncio.Condition()
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._closing is not None:
            self._closing.set()  # releases hanging requests at once
        for fault in self.faults:
            if fault.barrier is not None:
                await fault.barrier.abort()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeKube:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[FakeKube]:
        """Serve from a thread with its own event loop, for sync code; stopped on exit."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-kube", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=10)
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.close(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()

    # -- HTTP ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(Request(request.method, request.path, request.content_type))
        assert self._arrived is not None
        async with self._arrived:
            self._arrived.notify_all()
        try:
            await self._inject_fault(request)
            resource, namespace, name = self._route(request.path)
            body = await self._dispatch(request, resource, namespace, name)
        except ApiError as err:
            return web.json_response(err.status(), status=err.code)
        return web.json_response(body, status=201 if request.method == "POST" else 200)

    async def _inject_fault(self, request: web.Request) -> None:
        for fault in self.faults:
            if fault.times <= 0 or not fault.path.search(request.path):
                continue
            if fault.method is not None and fault.method != request.method:
                continue
            fault.times -= 1
            if fault.status is not None:
                reason = _REASONS.get(fault.status, "InternalError")
                raise ApiError(fault.status, reason, f"injected fault ({fault.status})", {})
            if fault.barrier is not None:
                with contextlib.suppress(asyncio.BrokenBarrierError):
                    await fault.barrier.wait()
                return
            assert self._closing is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), fault.seconds)
            return

    def _route(self, path: str) -> tuple[Resource, str, str]:
        for resource in RESOURCES:
            rest = path.removeprefix(resource.prefix + "/")
            if rest == path:
                continue
            parts = rest.split("/")
            namespace = ""
            if resource.namespaced:
                if len(parts) < 3 or parts[0] != "namespaces":
                    continue
                namespace, parts = parts[1], parts[2:]
            if parts[0] == resource.plural and len(parts) <= 2:
                return resource, namespace, parts[1] if len(parts) == 2 else ""
        raise ApiError(404, "NotFound", "the server could not find the requested resource", {})

    async def _dispatch(self, request: web.Request, resource: Resource, ns: str, name: str) -> Obj:
        method = request.method
        if method == "GET" and not name:
            return self._list(resource, ns, request.query.get("labelSelector", ""))
        if method == "GET":
            return self._read(resource, ns, name)
        if method == "DELETE" and name:
            self._read(resource, ns, name)
            del self.objects[(resource.plural, ns, name)]
            return {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": resource.details(name),
            }
        body = await _json_body(request)
        if method == "POST" and not name:
            if ns and (NAMESPACE.plural, "", ns) not in self.objects:
                raise NAMESPACE.not_found(ns)
            return self._create(resource, ns, body)
        if method == "PUT" and name:
            return self._update(resource, ns, name, body)
        if method == "PATCH" and name:
            current = self._read(resource, ns, name)
            patched = _apply_patch(resource, current, body, request.content_type)
            return self._update(resource, ns, name, patched, patch=True)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here", {})

    # -- the store ---------------------------------------------------------------------

    def _read(self, resource: Resource, ns: str, name: str) -> Obj:
        obj = self.objects.get((resource.plural, ns, name))
        if obj is None:
            raise resource.not_found(name)
        return copy.deepcopy(obj)

    def _list(self, resource: Resource, ns: str, selector: str) -> Obj:
        items = [
            obj
            for obj in self.list(resource, ns if resource.namespaced else None)
            if _matches(obj.get("metadata", {}).get("labels") or {}, selector)
        ]
        return {
            "apiVersion": resource.api_version,
            "kind": resource.kind + "List",
            "metadata": {"resourceVersion": str(next(self._versions))},
            "items": items,
        }

    def _create(self, resource: Resource, ns: str, obj: Obj) -> Obj:
        _check_type(resource, obj)
        meta = obj.setdefault("metadata", {})
        name = meta.get("name", "")
        if resource.namespaced and meta.setdefault("namespace", ns) != ns:
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does "
                "not match the namespace sent on the request",
            )
        if meta.get("resourceVersion"):
            raise ApiError(
                500, "InternalError", "resourceVersion should not be set on objects to be created"
            )
        _fold_string_data(obj)
        validate(resource, obj)
        if (resource.plural, ns, name) in self.objects:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{resource.group_resource} "{name}" already exists',
                resource.details(name),
            )
        meta.update(
            uid=str(uuid.uuid4()),
            resourceVersion=str(next(self._versions)),
            creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        if resource.group:
            meta["generation"] = 1
        self.objects[(resource.plural, ns, name)] = obj
        return copy.deepcopy(obj)

    def _update(self, resource: Resource, ns: str, name: str, obj: Obj, patch: bool = False) -> Obj:
        current = self._read(resource, ns, name)
        _check_type(resource, obj)
        meta = obj.setdefault("metadata", {})
        if meta.get("name") != name:
            raise ApiError(
                400, "BadRequest", "the name of the object does not match the name on the URL"
            )
        wanted = meta.get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {resource.group_resource} "{name}": the object '
                "has been modified; please apply your changes to the latest version and try again",
                resource.details(name),
            )
        for key in ("uid", "creationTimestamp", "generation"):  # server-owned
            if key in current["metadata"]:
                meta[key] = current["metadata"][key]
            else:
                meta.pop(key, None)
        if resource.namespaced:
            meta["namespace"] = ns
        _fold_string_data(obj)
        if resource is SECRET and obj.get("type", "Opaque") != current.get("type", "Opaque"):
            raise ApiError(
                422,
                "Invalid",
                f'Secret "{name}" is invalid: type: Invalid value: field is immutable',
                resource.details(name, kind="Secret"),
            )
        validate(resource, obj)
        if _content(obj) == _content(current) and patch:
            return current  # a no-op patch does not bump resourceVersion
        if resource.group and _content(obj, keep_meta=False) != _content(current, keep_meta=False):
            meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[(resource.plural, ns, name)] = obj
        return copy.deepcopy(obj)


def _resource_of(obj: Obj) -> Resource:
    for resource in RESOURCES:
        if obj.get("kind") == resource.kind and obj.get("apiVersion") == resource.api_version:
            return resource
    raise ValueError(f"the fake does not serve {obj.get('apiVersion')}/{obj.get('kind')}")


def _check_type(resource: Resource, obj: Any) -> None:
    """The body must be an object of the endpoint's kind; a missing kind or apiVersion is
    taken from the endpoint, as the real server decodes with it as the default."""
    if not isinstance(obj, dict):
        raise ApiError(400, "BadRequest", "the body must be a JSON object")
    obj.setdefault("apiVersion", resource.api_version)
    obj.setdefault("kind", resource.kind)
    if obj["kind"] != resource.kind or obj["apiVersion"] != resource.api_version:
        raise ApiError(
            400,
            "BadRequest",
            f"the API version in the data ({obj['apiVersion']}) and kind "
            f"({obj['kind']}) do not match {resource.api_version}/{resource.kind}",
        )


def _fold_string_data(obj: Obj) -> None:
    """Secrets: stringData is write-only, merged into data (as the real server does)."""
    strings = obj.pop("stringData", None)
    if isinstance(strings, dict):
        data = obj.setdefault("data", {})
        for key, value in strings.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _content(obj: Obj, keep_meta: bool = True) -> str:
    trimmed = {k: v for k, v in obj.items() if keep_meta or k not in ("metadata", "status")}
    if keep_meta and "metadata" in trimmed:
        trimmed["metadata"] = {
            k: v for k, v in trimmed["metadata"].items() if k != "resourceVersion"
        }
    return json.dumps(trimmed, sort_keys=True)


def _matches(labels: dict[str, str], selector: str) -> bool:
    """Equality-based label selectors: `a=b`, `a==b`, `a!=b`, `a`, `!a`, comma-separated."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except ValueError as err:
        raise ApiError(400, "BadRequest", f"the body is not JSON: {err}") from None


def _apply_patch(resource: Resource, current: Obj, patch: Any, content_type: str) -> Obj:
    if content_type == "application/merge-patch+json":
        result = merge_patch(current, patch)
    elif content_type == "application/strategic-merge-patch+json":
        if resource.merge_keys is None:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an "
                "unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json, "
                "application/apply-patch+yaml",
            )
        result = strategic_merge_patch(current, patch, resource.merge_keys)
    elif content_type == "application/json-patch+json":
        try:
            result = jsonpatch.apply_patch(current, patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as err:
            raise ApiError(
                422,
                "Invalid",
                f"the server rejected our request due to an error in our request: {err}",
            ) from None
    else:
        raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {content_type!r}")
    if not isinstance(result, dict):
        raise ApiError(422, "Invalid", "the patch does not yield an object")
    return result


# ---------------------------------------------------------------------------- subprocess


def main(argv: Sequence[str] | None = None) -> None:
    """Run the fake until SIGTERM/SIGINT; prints its URL on stdout once it listens."""
    parser = argparse.ArgumentParser(prog="python -m tests.fake_kube")
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig for it here")
    parser.add_argument("--namespace", action="append", default=[], help="create this namespace")
    parser.add_argument("--seed", type=Path, help="YAML stream of objects to store first")
    args = parser.parse_args(argv)
    fake = FakeKube(namespaces=["default", *args.namespace])
    if args.seed is not None:
        for obj in yaml.safe_load_all(args.seed.read_text(encoding="utf-8")):
            if obj:
                fake.seed(obj)
    asyncio.run(_serve(fake, args.kubeconfig))


async def _serve(fake: FakeKube, kubeconfig: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with fake:
        if kubeconfig is not None:
            fake.kubeconfig(kubeconfig)
        print(fake.url, flush=True)
        await stop.wait()


if __name__ == "__main__":
    main()
