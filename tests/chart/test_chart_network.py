"""The NetworkPolicy: who may call and scrape the webhook, and where it may connect."""

from __future__ import annotations

from typing import Any

from tests.chart.rendering import VALUE_SETS, Rendered, render


def policy(rendered: Rendered) -> dict[str, Any]:
    spec: dict[str, Any] = rendered.one("NetworkPolicy")["spec"]
    return spec


def ports(rule: dict[str, Any]) -> set[tuple[int, str]]:
    return {(p["port"], p.get("protocol", "TCP")) for p in rule["ports"]}  # TCP: the default


def egress_to(spec: dict[str, Any], port: int) -> list[dict[str, Any]]:
    """The egress rules that open TCP `port`."""
    return [rule for rule in spec["egress"] if (port, "TCP") in ports(rule)]


def test_network_policy_selects_the_webhook_pods() -> None:
    rendered = render(VALUE_SETS["network-policy-defaults"])
    selector = rendered.one("Deployment")["spec"]["selector"]
    assert policy(rendered)["podSelector"] == selector
    assert policy(rendered)["policyTypes"] == ["Ingress", "Egress"]


def test_network_policy_defaults_admit_the_api_server_from_anywhere() -> None:
    spec = policy(render(VALUE_SETS["network-policy-defaults"]))
    webhook, metrics = spec["ingress"]
    assert ports(webhook) == {(8443, "TCP")}
    assert "from" not in webhook  # the API server's address is unknown: any source
    assert ports(metrics) == {(9090, "TCP")}
    assert metrics["from"] == [
        {
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]


def test_network_policy_default_egress() -> None:
    spec = policy(render(VALUE_SETS["network-policy-defaults"]))
    (dns,) = [rule for rule in spec["egress"] if (53, "UDP") in ports(rule)]
    assert ports(dns) == {(53, "UDP"), (53, "TCP")}
    (peer,) = dns["to"]
    assert peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kube-system"
    }
    assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    for port in (443, 6443, 8200):
        assert egress_to(spec, port), f"no egress to {port}"
    # Nothing else: no rule without ports (that would open every port).
    assert all(rule.get("ports") for rule in spec["egress"])


def test_network_policy_narrows_to_the_given_peers() -> None:
    values = VALUE_SETS["network-policy"]["networkPolicy"]
    spec = policy(render(VALUE_SETS["network-policy"]))
    assert spec["ingress"][0]["from"] == values["webhookFrom"]
    (api,) = egress_to(spec, 6443)
    assert api["to"] == values["egress"]["kubernetesApi"]
    (vault,) = egress_to(spec, 8200)
    assert vault["to"] == values["egress"]["vault"]
    assert spec["egress"][-1] == {
        "to": [{"ipBlock": {"cidr": "10.1.0.0/16"}}],
        "ports": [{"port": 8443}],
    }


def test_network_policy_without_verification_opens_no_backend() -> None:
    values = {"networkPolicy": {"enabled": True}, "config": {"verify": {"mode": "off"}}}
    spec = policy(render(values))
    assert egress_to(spec, 8200) == []
    # 443 stays open for the Kubernetes API only.
    (api,) = egress_to(spec, 443)
    assert ports(api) == {(443, "TCP"), (6443, "TCP")}
