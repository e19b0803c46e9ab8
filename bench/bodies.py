"""The AdmissionReview bodies the benchmark sends, and the secrets they reference.

Pods look like what a ReplicaSet controller sends for a Deployment: generateName,
ownerReferences, labels, probes, resources, a projected service-account volume and the
managedFields the API server adds. Each opted-in pod passes the default policy (every
reference lives under the pod's namespace, no literal secret-like env values, no
whole-Secret envFrom) so the webhook injects it: a benchmark of denials would be
meaningless. Sizes: small ~3.5 KiB (one container), typical ~10 KiB (two containers,
15 env vars each), large ~55 KiB (eight containers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

Size = Literal["small", "typical", "large"]

NAMESPACE = "shop"
OTHER_NAMESPACE = "payments"  # a namespace the pods may not read from (denied case)
PREFIX = "secret-injector.io/"

# Replaced in the Lua script by a fresh reference per request (the cold path).
COLD_MARKER = "__COLD_REF__"
COLD_VAULT_PREFIX = f"secret/data/{NAMESPACE}/cold/"
COLD_KEY = "password"


@dataclass(frozen=True, slots=True)
class Seed:
    """The secrets the bodies reference, to create in OpenBao and moto before the run."""

    vault: Mapping[str, Mapping[str, str]]  # KV v2 API path -> data
    aws_secrets: Mapping[str, str]  # name -> SecretString
    aws_parameters: Mapping[str, str]  # name -> value


# Fake values: the webhook never reads them, the backends only need them to exist.
SEED = Seed(
    vault={
        f"secret/data/{NAMESPACE}/db": {"username": "shop", "password": "not-a-real-password"},
        f"secret/data/{NAMESPACE}/tls": {"crt": "not-a-cert", "key": "not-a-key"},
    },
    aws_secrets={
        f"{NAMESPACE}/api": '{"key": "not-a-real-key", "id": "shop"}',
    },
    aws_parameters={
        f"/{NAMESPACE}/feature-flags": "checkout=on",
    },
)

INJECT_ANNOTATIONS: dict[str, str] = {
    PREFIX + "inject": "true",
    PREFIX + "file.db-password": f"vault:secret/data/{NAMESPACE}/db#password",
    PREFIX + "file.tls.key": f"vault:secret/data/{NAMESPACE}/tls#key",
    PREFIX + "env.DB_USER": f"vault:secret/data/{NAMESPACE}/db#username",
    PREFIX + "env.API_KEY": f"aws-sm:{NAMESPACE}/api#key",
    PREFIX + "file.flags": f"aws-ssm:/{NAMESPACE}/feature-flags",
}

_PLAIN_ANNOTATIONS = {
    "kubectl.kubernetes.io/restartedAt": "2024-05-02T10:11:12Z",
    "prometheus.io/scrape": "true",
    "prometheus.io/port": "9102",
}

_ENV_NAMES = [
    "LOG_LEVEL",
    "LOG_FORMAT",
    "HTTP_PORT",
    "GRPC_PORT",
    "METRICS_PORT",
    "CACHE_SIZE",
    "WORKERS",
    "REGION",
    "FEATURE_CHECKOUT",
    "FEATURE_SEARCH",
    "UPSTREAM_HOST",
    "UPSTREAM_TIMEOUT",
    "DB_HOST",
    "DB_PORT",
    "DB_NAME",
    "QUEUE_NAME",
    "TRACE_SAMPLER",
    "TRACE_ENDPOINT",
    "LOCALE",
    "TZ",
    "MAX_BODY",
    "IDLE_TIMEOUT",
    "READ_TIMEOUT",
    "WRITE_TIMEOUT",
    "POOL_SIZE",
    "RETRY_LIMIT",
    "RETRY_BACKOFF",
    "BUCKET_NAME",
    "CDN_HOST",
    "SESSION_TTL",
]

_PARAMS: dict[Size, tuple[int, int, bool]] = {
    # containers, env vars per container, managedFields
    "small": (1, 4, False),
    "typical": (2, 14, True),
    "large": (8, 40, True),
}


def make_pod(size: Size, annotations: Mapping[str, str], namespace: str = NAMESPACE) -> Any:
    """A Pod as a ReplicaSet controller creates it, with `annotations` on its metadata."""
    containers, env_count, managed = _PARAMS[size]
    app = "storefront"
    labels = {
        "app.kubernetes.io/name": app,
        "app.kubernetes.io/instance": f"{app}-prod",
        "app.kubernetes.io/version": "4.12.1",
        "app.kubernetes.io/part-of": "shop",
        "pod-template-hash": "5d9c7b8f6d",
    }
    spec: dict[str, Any] = {
        "serviceAccountName": app,
        "automountServiceAccountToken": True,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            _container(index, env_count, full=size != "small", extra=size == "large")
            for index in range(containers)
        ],
        "volumes": [
            {"name": "config", "configMap": {"name": f"{app}-config", "defaultMode": 420}},
            {
                "name": "kube-api-access-x7k2p",
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {
                            "configMap": {
                                "name": "kube-root-ca.crt",
                                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                            }
                        },
                        {
                            "downwardAPI": {
                                "items": [
                                    {
                                        "path": "namespace",
                                        "fieldRef": {
                                            "apiVersion": "v1",
                                            "fieldPath": "metadata.namespace",
                                        },
                                    }
                                ]
                            }
                        },
                    ],
                },
            },
        ],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler",
        "enableServiceLinks": False,
        "preemptionPolicy": "PreemptLowerPriority",
        "priority": 0,
        "tolerations": [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
    }
    if size != "small":
        spec["affinity"] = {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {
                                "matchLabels": {"app.kubernetes.io/name": app},
                            },
                        },
                    }
                ]
            }
        }
        spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": app}},
            }
        ]
    metadata: dict[str, Any] = {
        "generateName": f"{app}-5d9c7b8f6d-",
        "namespace": namespace,
        "labels": labels,
        "annotations": dict(annotations),
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": f"{app}-5d9c7b8f6d",
                "uid": "0b9f3c52-8a4e-4a8e-9d55-0e4b2f8c1a77",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if managed:
        metadata["managedFields"] = [_managed_fields(spec, labels, annotations)]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def _container(index: int, env_count: int, *, full: bool, extra: bool) -> dict[str, Any]:
    name = "app" if index == 0 else f"sidecar-{index}"
    env: list[dict[str, Any]] = [
        {"name": _env_name(i), "value": f"value-{index}-{i}"} for i in range(env_count)
    ]
    env.append(
        {
            "name": "POD_NAME",
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
        }
    )
    container: dict[str, Any] = {
        "name": name,
        "image": f"registry.example.com/shop/{name}:4.12.1",
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": 8080 + index, "protocol": "TCP"}],
        "env": env,
        "envFrom": [{"configMapRef": {"name": "storefront-env"}}],
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "256Mi"},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/storefront", "readOnly": True},
            {
                "name": "kube-api-access-x7k2p",
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "readOnly": True,
            },
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    if full:
        probe: dict[str, Any] = {
            "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
            "periodSeconds": 10,
            "timeoutSeconds": 1,
            "successThreshold": 1,
            "failureThreshold": 3,
        }
        container["livenessProbe"] = {**probe, "initialDelaySeconds": 10}
        container["readinessProbe"] = {**probe, "httpGet": {**probe["httpGet"], "path": "/readyz"}}
    if extra:
        container["startupProbe"] = {"tcpSocket": {"port": "http"}, "failureThreshold": 30}
        container["lifecycle"] = {"preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 5"]}}}
    return container


def _env_name(i: int) -> str:
    base = _ENV_NAMES[i % len(_ENV_NAMES)]
    return base if i < len(_ENV_NAMES) else f"{base}_{i // len(_ENV_NAMES)}"


def _managed_fields(
    spec: Mapping[str, Any], labels: Mapping[str, str], annotations: Mapping[str, str]
) -> dict[str, Any]:
    """The kube-controller-manager's managedFields entry: a field set mirroring the pod."""
    containers: dict[str, Any] = {}
    for container in spec["containers"]:
        fields: dict[str, Any] = {".": {}}
        for key in container:
            if key in ("name", "env", "ports", "volumeMounts"):
                continue
            fields[f"f:{key}"] = {}
        fields["f:env"] = {
            ".": {},
            **{
                f'k:{{"name":"{e["name"]}"}}': {".": {}, "f:name": {}, "f:value": {}}
                for e in container["env"]
            },
        }
        fields["f:ports"] = {
            ".": {},
            **{
                f'k:{{"containerPort":{p["containerPort"]},"protocol":"TCP"}}': {
                    ".": {},
                    "f:containerPort": {},
                    "f:name": {},
                    "f:protocol": {},
                }
                for p in container["ports"]
            },
        }
        fields["f:volumeMounts"] = {
            ".": {},
            **{
                f'k:{{"mountPath":"{m["mountPath"]}"}}': {
                    ".": {},
                    "f:mountPath": {},
                    "f:name": {},
                    "f:readOnly": {},
                }
                for m in container["volumeMounts"]
            },
        }
        containers[f'k:{{"name":"{container["name"]}"}}'] = fields
    return {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "apiVersion": "v1",
        "time": "2024-05-02T10:11:13Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": {
                "f:annotations": {".": {}, **{f"f:{k}": {} for k in annotations}},
                "f:generateName": {},
                "f:labels": {".": {}, **{f"f:{k}": {} for k in labels}},
                "f:ownerReferences": {".": {}, 'k:{"uid":"0b9f3c52"}': {}},
            },
            "f:spec": {
                "f:containers": containers,
                **{f"f:{k}": {} for k in spec if k != "containers"},
            },
        },
    }


def make_review(pod: Any, uid: str = "705ab4f5-6393-11e8-b7cc-42010a800002") -> Any:
    """An AdmissionReview v1 for the creation of `pod`, as the API server sends it."""
    resource = {"group": "", "version": "v1", "resource": "pods"}
    kind = {"group": "", "version": "v1", "kind": "Pod"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": kind,
            "resource": resource,
            "requestKind": kind,
            "requestResource": resource,
            "namespace": pod["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "a3b3e2f0-3c1f-4b5e-8f4e-2a1b0c9d8e7f",
                "groups": [
                    "system:serviceaccounts",
                    "system:serviceaccounts:kube-system",
                    "system:authenticated",
                ],
            },
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def encode(review: Any) -> bytes:
    return orjson.dumps(review)


def injected(size: Size) -> bytes:
    """An opted-in review the webhook injects."""
    return encode(make_review(make_pod(size, {**_PLAIN_ANNOTATIONS, **INJECT_ANNOTATIONS})))


def skipped(size: Size = "typical") -> bytes:
    """A review of a pod without our annotations: allowed untouched."""
    return encode(make_review(make_pod(size, _PLAIN_ANNOTATIONS)))


def denied(size: Size = "typical") -> bytes:
    """An opted-in review referencing another namespace's secret: denied by tenancy."""
    annotations = {
        **_PLAIN_ANNOTATIONS,
        **INJECT_ANNOTATIONS,
        PREFIX + "file.stolen": f"vault:secret/data/{OTHER_NAMESPACE}/db#password",
    }
    return encode(make_review(make_pod(size, annotations)))


def cold_template(size: Size = "typical") -> bytes:
    """An opted-in review with `COLD_MARKER` where a fresh vault reference goes."""
    annotations = {
        **_PLAIN_ANNOTATIONS,
        **INJECT_ANNOTATIONS,
        PREFIX + "file.fresh": f"vault:{COLD_VAULT_PREFIX}{COLD_MARKER}#{COLD_KEY}",
    }
    return encode(make_review(make_pod(size, annotations)))


def cold_path(name: str) -> str:
    """The KV v2 API path of the cold secret `name` (seeded in OpenBao)."""
    return COLD_VAULT_PREFIX + name


def malformed() -> bytes:
    """A truncated review: the webhook must answer 400, never 5xx."""
    return injected("small")[:1500]
