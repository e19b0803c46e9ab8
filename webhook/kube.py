"""The Kubernetes API seam: SecretProviderClasses created if absent, owned for garbage collection.

Every call goes through the official `kubernetes` client, off the event loop
(`asyncio.to_thread`) under `kubernetes.timeoutSeconds`, which also bounds the socket
(`_request_timeout`); answers are read as plain JSON. Errors become ours right here:
`StatusError` for an error Status the caller handles (404, 409), else
`KubernetesUnavailableError` (timeout, 5xx, 429, 403) or `KubernetesError` (422, ...), which
the pipeline turns into a denial.

Garbage collection is Kubernetes' own: each SPC gets an ownerReference to the controller of
every pod that uses it (ReplicaSet, StatefulSet, DaemonSet, Job; the pod's `ownerReferences`
carry its uid at CREATE). The cluster's garbage collector deletes an SPC once all its owners
are gone, and prunes owners that are gone while others remain (a rollout's old ReplicaSets
keep their SPCs, so a rollback still finds them). This needs only create/get/patch on SPCs:
no pod list, no delete, no sweeper to race with pods being admitted. An SPC first created
for a pod without a controller (a bare pod, whose uid is unknown at admission) has no
owners and is kept: it is never given owners later, so it is never collected under a pod
still using it.

The hot path: an (SPC, owner) pair known to exist makes no API call for
`kubernetes.cacheTTLSeconds`; an SPC deleted behind our back meanwhile (by hand, or by the
garbage collector racing with an owner being added) is created again after that time.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import urllib3
from kubernetes import config as kube_config
from kubernetes.client import ApiClient, ApiException, Configuration
from kubernetes.client.api.custom_objects_api import CustomObjectsApi

from webhook.errors import ConfigError, KubernetesError, KubernetesUnavailableError
from webhook.settings import Kubernetes, Settings

if TYPE_CHECKING:
    from kubernetes.client.api.admissionregistration_v1_api import AdmissionregistrationV1Api
    from kubernetes.client.api.core_v1_api import CoreV1Api

log = logging.getLogger("secret_injector.kube")

# The client's loaders are untyped; these names give them the types we call them with.
load_kube_config: Callable[..., None] = kube_config.load_kube_config
load_incluster_config: Callable[..., None] = kube_config.load_incluster_config

Obj = dict[str, Any]
SPC_GROUP = "secrets-store.csi.x-k8s.io"
SPC_VERSION = "v1"
SPC_PLURAL = "secretproviderclasses"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "secret-injector"
# Optimistic-concurrency retries (409 Conflict, an object deleted between two calls).
ATTEMPTS = 3


class StatusError(Exception):
    """The API server answered with an error Status (404, 409, 422, ...)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def load_configuration(settings: Kubernetes) -> Configuration | None:
    """Client configuration: `kubeconfig` if set, else in-cluster, else $KUBECONFIG or
    ~/.kube/config; None when none of them exists (SPCs are then only reported)."""
    configuration = Configuration()
    try:
        if settings.kubeconfig is not None:
            if not Path(settings.kubeconfig).is_file():
                log.warning(
                    "kubernetes.kubeconfig %s does not exist: SecretProviderClasses are only "
                    "reported, not created",
                    settings.kubeconfig,
                )
                return None
            load_kube_config(config_file=settings.kubeconfig, client_configuration=configuration)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            load_incluster_config(client_configuration=configuration)
        else:
            paths = os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)
            found = [p for p in (os.path.expanduser(p) for p in paths) if p and Path(p).is_file()]
            if not found:
                return None
            load_kube_config(config_file=found[0], client_configuration=configuration)
    except (kube_config.ConfigException, OSError, ValueError) as exc:
        raise ConfigError(f"Kubernetes API configuration: {exc}") from None
    # One attempt per call: the deadline is short and the caller decides what a failure means.
    configuration.retries = 0
    return configuration


class KubeApi:
    """The official client's calls, off the event loop under a deadline; JSON in and out."""

    def __init__(self, configuration: Configuration, timeout: float) -> None:
        self.client = ApiClient(configuration)
        self.timeout = timeout
        self.custom = CustomObjectsApi(self.client)

    # The core and admissionregistration APIs serve only the self-managed CA (its Secret
    # and the webhook configurations' caBundle): imported on first use, because importing
    # them costs the process 21 MiB and 4 MiB of memory (kubernetes 37, measured with
    # /proc/self/statm around the import), a fifth of the webhook's RSS.
    @functools.cached_property
    def core(self) -> CoreV1Api:
        from kubernetes.client.api.core_v1_api import CoreV1Api

        return CoreV1Api(self.client)

    @functools.cached_property
    def admission(self) -> AdmissionregistrationV1Api:
        from kubernetes.client.api.admissionregistration_v1_api import AdmissionregistrationV1Api

        return AdmissionregistrationV1Api(self.client)

    async def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Obj:
        """The JSON answer of `method(*args, **kwargs)`.

        Raises StatusError for an error Status and KubernetesUnavailableError when the API
        cannot be reached or does not answer within the deadline.
        """
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.to_thread(self._call, method, args, kwargs)
        except TimeoutError:
            raise KubernetesUnavailableError(
                f"the Kubernetes API did not answer within {self.timeout:g}s "
                "(kubernetes.timeoutSeconds)"
            ) from None

    def _call(
        self, method: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Obj:
        try:
            response = method(
                *args, _preload_content=False, _request_timeout=self.timeout, **kwargs
            )
        except ApiException as exc:
            if not exc.status:  # raised by the client itself (TLS, connection)
                raise KubernetesUnavailableError(
                    f"the Kubernetes API is unreachable: {exc.reason}"
                ) from None
            raise StatusError(exc.status, *_status_text(exc)) from None
        except urllib3.exceptions.HTTPError as exc:
            cause = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
            # urllib3's NewConnectionError (refused, no route) is also a ConnectTimeoutError.
            refused = isinstance(cause, urllib3.exceptions.NewConnectionError)
            if isinstance(cause, urllib3.exceptions.TimeoutError) and not refused:
                problem = f"did not answer within {self.timeout:g}s (kubernetes.timeoutSeconds)"
            else:
                problem = f"is unreachable ({type(cause).__name__})"
            raise KubernetesUnavailableError(f"the Kubernetes API {problem}") from None
        try:
            answer: Obj = json.loads(response.data)
        except ValueError:
            raise KubernetesUnavailableError("the Kubernetes API answered with non-JSON") from None
        finally:
            response.release_conn()
        return answer

    def close(self) -> None:
        close: Callable[[], None] = self.client.close  # untyped in the client
        close()


def _status_text(exc: ApiException) -> tuple[str, str]:
    """(reason, message) of the Status object in an error answer."""
    try:
        status = json.loads(exc.body or "")
    except ValueError:
        status = None
    if isinstance(status, dict):
        return str(status.get("reason") or exc.reason), str(status.get("message") or exc.reason)
    return str(exc.reason), str(exc.reason)


class KnownNames:
    """A bounded LRU set whose entries expire: what the hot path may skip."""

    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._entries: OrderedDict[tuple[str, ...], float] = OrderedDict()
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock

    def __contains__(self, key: tuple[str, ...]) -> bool:
        expiry = self._entries.get(key)
        if expiry is None:
            return False
        if expiry <= self._clock():
            del self._entries[key]
            return False
        self._entries.move_to_end(key)
        return True

    def add(self, key: tuple[str, ...]) -> None:
        self._entries[key] = self._clock() + self._ttl
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def discard(self, key: tuple[str, ...]) -> None:
        self._entries.pop(key, None)


class KubernetesSpcStore:
    """Creates SecretProviderClasses if absent and adds the pod's controller as an owner."""

    def __init__(
        self, api: KubeApi, settings: Kubernetes, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.api = api
        self.timeout = settings.timeout_seconds
        self.known = KnownNames(settings.cache_ttl_seconds, settings.cache_max_entries, clock)

    async def ensure(
        self,
        namespace: str,
        spcs: Sequence[Mapping[str, Any]],
        owner: Mapping[str, Any] | None = None,
    ) -> None:
        """Make every SPC exist in `namespace`, owned by `owner` (the pod's controller).

        Raises KubernetesUnavailableError / KubernetesError (a denial) when it cannot.
        """
        uid = str(owner["uid"]) if owner is not None else ""
        todo = [spc for spc in spcs if (namespace, spc["metadata"]["name"], uid) not in self.known]
        name = ""
        try:
            async with asyncio.timeout(self.timeout):  # one deadline for the whole review
                for spc in todo:
                    name = spc["metadata"]["name"]
                    await self._ensure_one(namespace, spc, owner)
                    self.known.add((namespace, name, uid))
        except TimeoutError:
            raise KubernetesUnavailableError(
                _explain(
                    namespace,
                    name,
                    f"the Kubernetes API did not answer within "
                    f"{self.timeout:g}s (kubernetes.timeoutSeconds)",
                )
            ) from None
        except KubernetesError as exc:  # from KubeApi.call, which does not know the SPC
            raise type(exc)(_explain(namespace, name, exc.message)) from None
        except StatusError as exc:
            raise _denial(namespace, name, exc) from None

    async def _ensure_one(
        self, namespace: str, spc: Mapping[str, Any], owner: Mapping[str, Any] | None
    ) -> None:
        name = spc["metadata"]["name"]
        body = with_owner(spc, owner)
        for _ in range(ATTEMPTS):
            try:
                await self.api.call(
                    self.api.custom.create_namespaced_custom_object,
                    SPC_GROUP,
                    SPC_VERSION,
                    namespace,
                    SPC_PLURAL,
                    body,
                )
                log.info("created SecretProviderClass %s/%s", namespace, name)
                return
            except StatusError as exc:
                if exc.status != 409 or exc.reason != "AlreadyExists":
                    raise
            # Same name, same content (the name is a hash of it): only the owner may be new.
            if owner is None or await self._add_owner(namespace, name, owner):
                return
        raise StatusError(409, "Conflict", f"still changing after {ATTEMPTS} attempts")

    async def _add_owner(self, namespace: str, name: str, owner: Mapping[str, Any]) -> bool:
        """Add `owner` to an existing SPC; False when the SPC vanished or changed meanwhile."""
        try:
            current = await self.api.call(
                self.api.custom.get_namespaced_custom_object,
                SPC_GROUP,
                SPC_VERSION,
                namespace,
                SPC_PLURAL,
                name,
            )
        except StatusError as exc:
            if exc.status == 404:  # collected between our create and get: create again
                return False
            raise
        meta = current.get("metadata", {})
        owners = list(meta.get("ownerReferences") or [])
        # No owners: first created for a bare pod; stay unowned (never collected) for it.
        if not owners or any(ref.get("uid") == owner["uid"] for ref in owners):
            return True
        # A merge patch replaces the whole list: the resourceVersion makes it conditional.
        patch = {
            "metadata": {
                "resourceVersion": meta["resourceVersion"],
                "ownerReferences": [*owners, owner_reference(owner)],
            }
        }
        try:
            await self.api.call(
                self.api.custom.patch_namespaced_custom_object,
                SPC_GROUP,
                SPC_VERSION,
                namespace,
                SPC_PLURAL,
                name,
                patch,
            )
        except StatusError as exc:
            if exc.status in (404, 409):
                return False
            raise
        log.info(
            "SecretProviderClass %s/%s: added owner %s/%s",
            namespace,
            name,
            owner.get("kind"),
            owner.get("name"),
        )
        return True

    async def close(self) -> None:
        self.api.close()


def owner_reference(owner: Mapping[str, Any]) -> Obj:
    """An ownerReference to `owner`; not `controller` (an SPC is shared), no blockOwnerDeletion
    (which would need update on the owner's finalizers)."""
    return {key: owner[key] for key in ("apiVersion", "kind", "name", "uid")}


def with_owner(spc: Mapping[str, Any], owner: Mapping[str, Any] | None) -> Obj:
    """A copy of `spc` labelled as ours, owned by `owner` when there is one."""
    body = copy.deepcopy(dict(spc))
    meta = body.setdefault("metadata", {})
    meta.setdefault("labels", {}).setdefault(MANAGED_BY, MANAGER)
    if owner is not None:
        meta["ownerReferences"] = [owner_reference(owner)]
    return body


def _explain(namespace: str, name: str, problem: str) -> str:
    return (
        f"cannot create SecretProviderClass {namespace}/{name}: {problem}; the pod was not "
        "admitted, try again (a controller retries by itself)"
    )


def _denial(namespace: str, name: str, exc: StatusError) -> KubernetesError:
    """The denial for an error Status, saying what to do about it."""
    what = f"cannot create SecretProviderClass {namespace}/{name}"
    if exc.status == 403:
        return KubernetesUnavailableError(
            f"{what}: forbidden ({exc.message}); the webhook's service account needs create, "
            f"get and patch on {SPC_PLURAL}.{SPC_GROUP} (the chart's ClusterRole)"
        )
    if exc.status == 404:
        return KubernetesError(
            f"{what}: not found ({exc.message}); is the Secrets Store CSI driver with its "
            "SecretProviderClass CRD installed, and does the namespace exist?"
        )
    if exc.status == 409 or exc.status == 429 or exc.status >= 500:
        return KubernetesUnavailableError(
            f"{what}: the Kubernetes API answered {exc.status} {exc.reason} ({exc.message}); "
            "try again"
        )
    return KubernetesError(
        f"{what}: the Kubernetes API rejected it ({exc.status} {exc.reason}: {exc.message}); "
        "this is a secret-injector bug, please report it"
    )


def open_api(settings: Settings) -> KubeApi | None:
    """A client for the configured Kubernetes API, or None when there is none."""
    configuration = load_configuration(settings.kubernetes)
    if configuration is None:
        return None
    return KubeApi(configuration, settings.kubernetes.timeout_seconds)


def open_spc_store(settings: Settings) -> KubernetesSpcStore | None:
    """The SPC store, or None when SPCs are only computed and reported (no Kubernetes API
    configuration, or `kubernetes.manageSecretProviderClasses: false`)."""
    if not settings.kubernetes.manage_secret_provider_classes:
        return None
    api = open_api(settings)
    if api is None:
        log.info("no Kubernetes API configuration: SecretProviderClasses are only reported")
        return None
    return KubernetesSpcStore(api, settings.kubernetes)
