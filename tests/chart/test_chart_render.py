"""The chart renders for every value set, lints clean and yields valid Kubernetes objects."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from tests.chart.rendering import (
    CHART_DIR,
    CRD_KINDS,
    FULLNAME,
    NAMESPACE,
    VALUE_SETS,
    Rendered,
    chart,
    render,
)

KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]

# Cluster-scoped kinds; every other object must land in the release namespace.
CLUSTER_SCOPED = {
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
}

value_sets = pytest.mark.parametrize(
    "values", [pytest.param(v, id=name) for name, v in VALUE_SETS.items()]
)


def builtin_objects(rendered: Rendered) -> list[dict[str, Any]]:
    return [o for o in rendered.objects if (o["apiVersion"], o["kind"]) not in CRD_KINDS]


@functools.cache
def validation_error(obj_json: str, version: str) -> str | None:
    """kubernetes-validate's strict verdict, once per distinct object (value sets share many)."""
    try:
        kubernetes_validate.validate(json.loads(obj_json), version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return str(exc.message)
    return None


@value_sets
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_chart_objects_validate_strictly(values: dict[str, Any], version: str) -> None:
    for obj in builtin_objects(render(values)):
        error = validation_error(json.dumps(obj, sort_keys=True), version)
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        assert error is None, f"{name} is invalid for Kubernetes {version}: {error}"


@value_sets
def test_chart_crd_objects_have_their_basic_shape(values: dict[str, Any]) -> None:
    for obj in render(values).objects:
        if (obj["apiVersion"], obj["kind"]) not in CRD_KINDS:
            continue
        assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}, obj["kind"]
        assert obj["metadata"]["namespace"] in {NAMESPACE, "grafana"}
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "sec"
        assert isinstance(obj["spec"], dict) and obj["spec"]


@value_sets
def test_chart_objects_are_labelled_and_namespaced(values: dict[str, Any]) -> None:
    rendered = render(values)
    names = [(o["kind"], o["metadata"]["name"]) for o in rendered.objects]
    assert len(names) == len(set(names)), "duplicate objects"
    for obj in rendered.objects:
        meta = obj["metadata"]
        assert meta["labels"]["app.kubernetes.io/name"] == "secret-injector"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta, obj["kind"]
        elif obj["kind"] != "ConfigMap" or not meta["name"].endswith("-dashboard"):
            assert meta["namespace"] == NAMESPACE, obj["kind"]


@pytest.mark.parametrize(
    ("values", "present", "absent"),
    [
        pytest.param(
            {},
            {"Certificate", "Issuer", "PodDisruptionBudget", "ValidatingWebhookConfiguration"},
            {
                "HorizontalPodAutoscaler",
                "NetworkPolicy",
                "ServiceMonitor",
                "PrometheusRule",
                "Role",
            },
            id="defaults",
        ),
        pytest.param(
            VALUE_SETS["tls-existing-secret"],
            set(),
            {"Certificate", "Issuer", "Role"},
            id="existing",
        ),
        pytest.param(
            VALUE_SETS["tls-self-managed"], {"Role", "RoleBinding"}, {"Certificate"}, id="self"
        ),
        pytest.param(VALUE_SETS["hpa"], {"HorizontalPodAutoscaler"}, set(), id="hpa"),
        pytest.param(VALUE_SETS["network-policy"], {"NetworkPolicy"}, set(), id="netpol"),
        pytest.param(
            VALUE_SETS["monitoring"], {"ServiceMonitor", "PrometheusRule"}, set(), id="monitoring"
        ),
        pytest.param(
            {"podDisruptionBudget": {"enabled": False}}, set(), {"PodDisruptionBudget"}, id="no-pdb"
        ),
    ],
)
def test_chart_optional_objects_follow_values(
    values: dict[str, Any], present: set[str], absent: set[str]
) -> None:
    kinds = render(values).kinds()
    assert present <= kinds
    assert not absent & kinds


def test_chart_hpa_replaces_the_replica_count() -> None:
    rendered = render(VALUE_SETS["hpa"])
    assert "replicas" not in rendered.one("Deployment")["spec"]
    hpa = rendered.one("HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 8)
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": FULLNAME,
    }


def test_chart_default_deployment_is_highly_available() -> None:
    rendered = render()
    spec = rendered.one("Deployment")["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for constraint in pod["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    pdb = rendered.one("PodDisruptionBudget")["spec"]
    assert 0 < pdb["minAvailable"] < spec["replicas"]
    assert pdb["selector"] == spec["selector"]


def test_chart_probes_use_https_on_the_webhook_port() -> None:
    container = render().container()
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "https": 8443,
        "metrics": 9090,
    }
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        http = container[probe]["httpGet"]
        assert (http["path"], http["port"], http["scheme"]) == (path, "https", "HTTPS")


def test_chart_service_forwards_443_to_the_webhook_port() -> None:
    rendered = render()
    (port,) = rendered.one("Service", FULLNAME)["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (443, "https")
    (metrics,) = rendered.one("Service", f"{FULLNAME}-metrics")["spec"]["ports"]
    assert (metrics["port"], metrics["targetPort"]) == (9090, "metrics")


@pytest.mark.parametrize(
    ("values", "pre_stop"),
    [
        pytest.param({}, 0, id="own-sigterm-handling"),
        pytest.param(
            {"lifecycle": {"preStopSleepSeconds": 5}, "terminationGracePeriodSeconds": 40},
            5,
            id="pre-stop-sleep",
        ),
    ],
)
def test_chart_graceful_termination_covers_the_drain(values: dict[str, Any], pre_stop: int) -> None:
    rendered = render(values)
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    listen = yaml.safe_load(rendered.config_text())["listen"]
    (container,) = pod["containers"]
    if pre_stop:
        assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": pre_stop}}
    else:
        assert "lifecycle" not in container
        assert listen["shutdownDelaySeconds"] > 0  # readiness fails while endpoints update
    drain = pre_stop + listen["shutdownDelaySeconds"] + listen["shutdownTimeoutSeconds"]
    assert pod["terminationGracePeriodSeconds"] > drain


def test_chart_config_edits_roll_the_pods() -> None:
    def checksum(values: dict[str, Any]) -> str:
        meta = render(values).one("Deployment")["spec"]["template"]["metadata"]
        value: str = meta["annotations"]["checksum/config"]
        return value

    base = checksum({})
    assert len(base) == 64
    assert checksum({"config": {"logging": {"level": "debug"}}}) != base
    # The policy file is reloaded live: editing it must not restart the webhook.
    assert checksum({"policy": {"mode": "audit"}}) == base


@pytest.mark.parametrize(
    ("values", "mounts"),
    [
        pytest.param({}, {"config", "policy", "tls", "tmp"}, id="defaults"),
        pytest.param(
            VALUE_SETS["vault-approle"],
            {"config", "policy", "tls", "tmp", "vault-ca", "vault-credentials"},
            id="vault-files",
        ),
    ],
)
def test_chart_mounts_only_what_it_needs(values: dict[str, Any], mounts: set[str]) -> None:
    rendered = render(values)
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert {v["name"] for v in pod["volumes"]} == mounts
    assert {m["name"] for m in rendered.container()["volumeMounts"]} == mounts


def test_chart_existing_secret_mounts_that_secret_read_only() -> None:
    rendered = render(VALUE_SETS["tls-existing-secret"])
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    (tls,) = [v for v in pod["volumes"] if v["name"] == "tls"]
    assert tls["secret"] == {"secretName": "webhook-tls", "defaultMode": 0o440}
    (mount,) = [m for m in rendered.container()["volumeMounts"] if m["name"] == "tls"]
    assert mount["readOnly"] is True


def test_chart_self_managed_writes_certificates_to_memory() -> None:
    rendered = render(VALUE_SETS["tls-self-managed"])
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    (tls,) = [v for v in pod["volumes"] if v["name"] == "tls"]
    assert tls["emptyDir"]["medium"] == "Memory"
    assert not any(v.get("secret") for v in pod["volumes"])


def test_chart_cert_manager_certificate_names_the_service() -> None:
    rendered = render()
    cert = rendered.one("Certificate", f"{FULLNAME}-serving")["spec"]
    assert cert["dnsNames"] == [FULLNAME, f"{FULLNAME}.{NAMESPACE}", f"{FULLNAME}.{NAMESPACE}.svc"]
    assert cert["secretName"] == f"{FULLNAME}-tls"
    assert cert["issuerRef"]["name"] == f"{FULLNAME}-ca"
    ca = rendered.one("Certificate", f"{FULLNAME}-ca")["spec"]
    assert ca["isCA"] is True
    issuer = render(VALUE_SETS["tls-cert-manager-issuer"]).one("Certificate")["spec"]["issuerRef"]
    assert issuer == {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}


def test_chart_never_generates_certificates() -> None:
    for template in CHART_DIR.joinpath("templates").iterdir():
        text = template.read_text()
        for function in ("genCA", "genSelfSignedCert", "genSignedCert", "genPrivateKey"):
            assert function not in text, f"{template.name} uses {function}"
    for name, values in VALUE_SETS.items():
        for obj in render(values).objects:
            if obj["kind"] == "Secret":
                pytest.fail(f"{name}: the chart renders a Secret")


def test_chart_notes_tell_how_to_opt_in() -> None:
    notes = render(VALUE_SETS["custom-prefix"]).notes
    assert 'secrets.example.com/inject: "true"' in notes
    assert "secrets.example.com/file." in notes
    assert "8443" in notes  # the private-cluster firewall note


@value_sets
def test_chart_lints_clean_in_strict_mode(values: dict[str, Any]) -> None:
    report = helm_python.lint(
        CHART_DIR, values, strict=True, namespace=NAMESPACE, kube_version="v1.30.0"
    )
    assert report["errors"] == []
    assert report["messages"] == []


def test_chart_names_stay_valid_for_the_longest_release_name() -> None:
    release = "r" * 53  # Helm's limit
    manifests = chart().render(
        values=VALUE_SETS["tls-self-managed"] | VALUE_SETS["monitoring"],
        name=release,
        namespace=NAMESPACE,
    )
    texts = [text for name, text in manifests.items() if name.endswith(".yaml")]
    objects = [obj for text in texts for obj in yaml.safe_load_all(text) if obj]
    assert objects
    for obj in objects:
        name = obj["metadata"]["name"]
        # Services are DNS-1035 labels; everything else here a DNS-1123 subdomain.
        limit = 63 if obj["kind"] == "Service" else 253
        assert len(name) <= limit and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name), name
        for value in obj["metadata"]["labels"].values():
            assert len(value) <= 63, value


@pytest.mark.parametrize(
    ("values", "image"),
    [
        pytest.param({}, "ghcr.io/secret-injector/secret-injector:0.1.0", id="app-version"),
        pytest.param(
            {"image": {"repository": "registry.example/si", "tag": "1.2.3"}},
            "registry.example/si:1.2.3",
            id="tag",
        ),
        pytest.param(
            {"image": {"digest": "sha256:" + "a" * 64}},
            "ghcr.io/secret-injector/secret-injector:0.1.0@sha256:" + "a" * 64,
            id="digest",
        ),
    ],
)
def test_chart_image_reference(values: dict[str, Any], image: str) -> None:
    assert render(values).container()["image"] == image


def test_chart_pod_values_reach_the_pod() -> None:
    values: dict[str, Any] = {
        "priorityClassName": "system-cluster-critical",
        "imagePullSecrets": [{"name": "regcred"}],
        "podAnnotations": {"example.com/team": "platform"},
        "podLabels": {"team": "platform"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "extraEnv": [{"name": "AWS_ENDPOINT_URL_SECRETS_MANAGER", "value": "https://vpce"}],
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
        "commonLabels": {"cost-center": "42"},
    }
    rendered = render(values)
    template = rendered.one("Deployment")["spec"]["template"]
    pod = template["spec"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == values["nodeSelector"]
    assert pod["tolerations"] == values["tolerations"]
    assert template["metadata"]["annotations"]["example.com/team"] == "platform"
    assert template["metadata"]["labels"]["team"] == "platform"
    env = {e["name"]: e for e in rendered.container()["env"]}
    assert env["AWS_ENDPOINT_URL_SECRETS_MANAGER"]["value"] == "https://vpce"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    account = rendered.one("ServiceAccount")["metadata"]
    assert account["annotations"] == values["serviceAccount"]["annotations"]
    for obj in rendered.objects:
        assert obj["metadata"]["labels"]["cost-center"] == "42"
