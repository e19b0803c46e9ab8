"""Shared test builders: make_pod() and make_review(), and fixtures of the same names.

Import the functions where a table is built at collection time:

    from tests.conftest import PREFIX, make_pod, make_review

    pod = make_pod({PREFIX + "inject": "true", PREFIX + "file.db": "vault:secret/data/app/db#pw"})
    review = make_review(pod, namespace="shop")      # a dict; orjson.dumps() it to post it

or take them as fixtures (`def test_x(make_review: ReviewFactory) -> None`).
"""

from __future__ import annotations

import copy
import io
import logging
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import hypothesis
import pytest

from webhook import logs

pytest_plugins = ["tests.servers"]

# Property tests: no deadline (two shared cores), and in CI the same examples on every run,
# so a red CI is reproducible; locally they draw new examples each run.
hypothesis.settings.register_profile("ci", derandomize=True, deadline=None, database=None)
hypothesis.settings.register_profile("dev", deadline=None)
hypothesis.settings.load_profile("ci" if os.environ.get("CI") else "dev")

PREFIX = "secret-injector.io/"
DATA = Path(__file__).parent / "data"
IMAGE = "registry.example.com/app:1.0"

ContainerSpec = str | Mapping[str, Any]


def make_pod(
    annotations: Mapping[str, str] | None = None,
    *,
    containers: Sequence[ContainerSpec] = ("app",),
    init_containers: Sequence[ContainerSpec] = (),
    volumes: Sequence[Mapping[str, Any]] | None = None,
    name: str | None = "web",
    namespace: str | None = "default",
    labels: Mapping[str, str] | None = None,
    service_account: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A valid Pod as the API server sends it to a webhook.

    Containers are names (`"app"` becomes `{"name": "app", "image": IMAGE}`) or full
    container objects (copied). `annotations=None` leaves out the annotations map entirely,
    `volumes=None` the volumes list. Extra keyword arguments go into `spec` as they are
    (use the API's camelCase: `restartPolicy="Never"`).
    """
    metadata: dict[str, Any] = {}
    if name is not None:
        metadata["name"] = name
    if namespace is not None:
        metadata["namespace"] = namespace
    if labels is not None:
        metadata["labels"] = dict(labels)
    if annotations is not None:
        metadata["annotations"] = dict(annotations)
    body: dict[str, Any] = {"containers": [_container(c) for c in containers]}
    if init_containers:
        body["initContainers"] = [_container(c) for c in init_containers]
    if volumes is not None:
        body["volumes"] = copy.deepcopy([dict(v) for v in volumes])
    if service_account is not None:
        body["serviceAccountName"] = service_account
    body.update(copy.deepcopy(spec))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": body}


def make_review(
    obj: Mapping[str, Any] | None = None,
    *,
    operation: str = "CREATE",
    namespace: str | None = None,
    kind: str | None = None,
    group: str = "",
    version: str = "v1",
    resource: str | None = None,
    sub_resource: str | None = None,
    dry_run: bool = False,
    uid: str | None = None,
    user: str = "system:serviceaccount:kube-system:replicaset-controller",
    old_object: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An AdmissionReview v1 request for `obj` (default: make_pod()), as the API server sends it.

    The namespace defaults to the object's, the kind to the object's kind. For DELETE the
    object goes into oldObject and object is null, as the API server does.
    """
    obj = copy.deepcopy(dict(obj)) if obj is not None else make_pod()
    kind = kind or str(obj.get("kind", "Pod"))
    metadata = obj.get("metadata") or {}
    namespace = namespace if namespace is not None else metadata.get("namespace", "default")
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource or _plural(kind)},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "requestResource": {
            "group": group,
            "version": version,
            "resource": resource or _plural(kind),
        },
        "name": metadata.get("name", ""),
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": user, "groups": ["system:serviceaccounts"]},
        "object": obj if operation != "DELETE" else None,
        "oldObject": copy.deepcopy(dict(old_object)) if old_object is not None else None,
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{operation.title()}Options"},
    }
    if operation == "DELETE":
        request["oldObject"] = obj
    if sub_resource is not None:
        request["subResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


class PodFactory(Protocol):
    def __call__(
        self,
        annotations: Mapping[str, str] | None = None,
        *,
        containers: Sequence[ContainerSpec] = ...,
        init_containers: Sequence[ContainerSpec] = ...,
        volumes: Sequence[Mapping[str, Any]] | None = ...,
        name: str | None = ...,
        namespace: str | None = ...,
        labels: Mapping[str, str] | None = ...,
        service_account: str | None = ...,
        **spec: Any,
    ) -> dict[str, Any]: ...


class ReviewFactory(Protocol):
    def __call__(
        self,
        obj: Mapping[str, Any] | None = None,
        *,
        operation: str = ...,
        namespace: str | None = ...,
        kind: str | None = ...,
        group: str = ...,
        version: str = ...,
        resource: str | None = ...,
        sub_resource: str | None = ...,
        dry_run: bool = ...,
        uid: str | None = ...,
        user: str = ...,
        old_object: Mapping[str, Any] | None = ...,
    ) -> dict[str, Any]: ...


@pytest.fixture(name="make_pod")
def make_pod_fixture() -> PodFactory:
    """The make_pod builder, for tests that prefer fixtures."""
    return make_pod


@pytest.fixture(name="make_review")
def make_review_fixture() -> ReviewFactory:
    """The make_review builder, for tests that prefer fixtures."""
    return make_review


def _container(spec: ContainerSpec) -> dict[str, Any]:
    if isinstance(spec, str):
        return {"name": spec, "image": IMAGE}
    return copy.deepcopy(dict(spec))


def _plural(kind: str) -> str:
    lowered = kind.lower()
    return lowered + ("es" if lowered.endswith("s") else "s")


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """A buffer for `logs.configure(level, log_stream)`; logging (root handlers and level,
    the SDK loggers' levels, warnings capture) and the audit trail restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logs.trail.sink)
    quiet = {name: logging.getLogger(name).level for name in logs.QUIET_LOGGERS}
    stream = io.StringIO()
    yield stream
    logs.trail.sink = saved[2]
    logging.captureWarnings(False)
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)
