"""Render charts/secret-injector with the real Helm engine (helm_python), once per value set."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import yaml

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "secret-injector"
RELEASE = "sec"
NAMESPACE = "platform-secrets"
FULLNAME = f"{RELEASE}-secret-injector"
WEBHOOK_CONFIGURATION = f"{FULLNAME}-{NAMESPACE}"

Obj = dict[str, Any]

# Kinds of CRDs that kubernetes-validate has no schema for; their shape is checked by hand.
CRD_KINDS = {
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}

# Value sets rendered by the matrix tests: each TLS mode and every optional feature.
VALUE_SETS: dict[str, Obj] = {
    "defaults": {},
    "tls-cert-manager-issuer": {
        "tls": {"certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}}
    },
    "tls-existing-secret": {
        "tls": {
            "mode": "existingSecret",
            "existingSecret": {"name": "webhook-tls", "caBundle": "LS0tLS1CRUdJTi0tLS0t"},
        }
    },
    "tls-self-managed": {"tls": {"mode": "selfManaged"}},
    "tls-self-managed-no-validating": {
        "tls": {"mode": "selfManaged", "selfManaged": {"secretName": "injector-ca"}},
        "webhooks": {"mutating": {"failurePolicy": "Fail"}, "validating": {"enabled": False}},
    },
    "hpa": {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 8}},
    "network-policy": {
        "networkPolicy": {
            "enabled": True,
            "webhookFrom": [{"ipBlock": {"cidr": "172.16.0.0/28"}}],
            "egress": {
                "kubernetesApi": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
                "vault": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "vault"}
                        },
                        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "vault"}},
                    }
                ],
                "extra": [
                    {"to": [{"ipBlock": {"cidr": "10.1.0.0/16"}}], "ports": [{"port": 8443}]}
                ],
            },
        }
    },
    "network-policy-defaults": {"networkPolicy": {"enabled": True}},
    "namespace-selector": {
        "webhooks": {
            "excludeNamespaces": ["monitoring"],
            "namespaceSelector": {
                "matchLabels": {"secret-injector.io/enabled": "true"},
                "matchExpressions": [
                    # A user trying to include the excluded namespaces explicitly.
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "In",
                        "values": ["kube-system", NAMESPACE, "apps"],
                    },
                    {"key": "tier", "operator": "Exists"},
                ],
            },
        }
    },
    "monitoring": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "prometheusRule": {"enabled": True, "alertLabels": {"team": "platform"}},
            "dashboard": {"enabled": True, "namespace": "grafana", "folder": "Platform"},
        }
    },
    "vault-approle": {
        "config": {
            "providers": {
                "vault": {
                    "address": "https://vault.vault.svc:8200",
                    "namespace": "team-a",
                    "auth": {"method": "approle", "roleId": "1234-abcd"},
                },
                "aws": {"region": "eu-west-1", "usePodIdentity": True},
            },
            "verify": {"mode": "enforce", "timeoutSeconds": 0.5},
        },
        "vaultFiles": {"caCertConfigMap": "vault-ca", "credentialsSecret": "vault-approle"},
    },
    "vault-token-no-spc": {
        "config": {
            "providers": {"vault": {"auth": {"method": "token"}}},
            "kubernetes": {"manageSecretProviderClasses": False},
            "verify": {"mode": "off"},
        },
        "vaultFiles": {"credentialsSecret": "vault-token"},
    },
    "custom-prefix": {"config": {"annotationPrefix": "secrets.example.com/"}},
    "fail-closed-mutating": {"webhooks": {"mutating": {"failurePolicy": "Fail"}}},
}


@dataclass(frozen=True)
class Rendered:
    """One render of the chart: the manifests by template, parsed into objects."""

    manifests: dict[str, str]
    objects: tuple[Obj, ...]

    @property
    def notes(self) -> str:
        return next(text for name, text in self.manifests.items() if name.endswith("NOTES.txt"))

    def of_kind(self, kind: str) -> list[Obj]:
        """Every rendered object of `kind`."""
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Obj:
        """The one object of `kind` (named `name`, if given); fails if there isn't exactly one."""
        found = [o for o in self.of_kind(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def kinds(self) -> set[str]:
        return {obj["kind"] for obj in self.objects}

    def webhooks(self) -> Iterator[tuple[str, Obj]]:
        """(configuration kind, webhook) for every webhook of both configurations."""
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            for config in self.of_kind(kind):
                for webhook in config["webhooks"]:
                    yield kind, webhook

    def config_text(self) -> str:
        """The webhook's rendered config file."""
        cm = self.one("ConfigMap", f"{FULLNAME}-config")
        text: str = cm["data"]["config.yaml"]
        return text

    def policy_text(self) -> str:
        """The webhook's rendered policy file."""
        cm = self.one("ConfigMap", f"{FULLNAME}-policy")
        text: str = cm["data"]["policy.yaml"]
        return text

    def container(self) -> Obj:
        """The webhook container of the Deployment."""
        containers = self.one("Deployment")["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1
        container: Obj = containers[0]
        return container


@functools.cache
def chart() -> helm_python.Chart:
    """The chart, loaded once per test session."""
    return helm_python.Chart.load(CHART_DIR)


@functools.cache
def _render_cached(values_json: str) -> Rendered:
    manifests = chart().render(values=json.loads(values_json), name=RELEASE, namespace=NAMESPACE)
    objects = tuple(
        obj
        for name, text in sorted(manifests.items())
        if name.endswith(".yaml")
        for obj in yaml.safe_load_all(text)
        if obj
    )
    return Rendered(manifests, objects)


def render(values: Obj | None = None) -> Rendered:
    """Render with `values` (cached per value set: the chart is immutable during a run)."""
    return _render_cached(json.dumps(values or {}, sort_keys=True))


def render_error(values: Obj) -> str:
    """The message of the error rendering `values` raises; fails if it renders."""
    try:
        chart().render(values=values, name=RELEASE, namespace=NAMESPACE)
    except helm_python.HelmError as exc:
        return str(exc)
    raise AssertionError(f"rendering {values} should have failed")
