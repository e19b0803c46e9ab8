"""ServiceMonitor, PrometheusRule and the Grafana dashboard use the webhook's real metrics."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric

from tests.chart.rendering import CHART_DIR, FULLNAME, NAMESPACE, VALUE_SETS, render
from webhook.metrics import Metrics

MONITORING = VALUE_SETS["monitoring"]

# Series that exist in Prometheus without coming from the webhook.
PROMETHEUS_SERIES = {"up"}

# PromQL words that look like metric names but are not (functions are followed by "(").
PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


def family_series(family: Metric) -> set[str]:
    """The series names prometheus_client exposes for one metric family."""
    suffixes = {
        "counter": ["_total"],
        "histogram": ["_bucket", "_sum", "_count"],
        "gauge": [""],
        "info": ["_info"],
    }[family.type]
    return {family.name + suffix for suffix in suffixes}


def webhook_series() -> set[str]:
    """Every series name the webhook's Metrics can expose."""
    return {name for family in Metrics().registry.collect() for name in family_series(family)}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    # Not after a digit (1e-9, 5m) or a $ (Grafana variables).
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][\w:]*", expr):
        if expr[match.end() :].lstrip().startswith("("):
            continue  # a function
        if match.group().lower() not in PROMQL_KEYWORDS:
            names.add(match.group())
    return names


def test_monitoring_metric_name_extraction() -> None:
    expr = (
        'sum by (backend) (rate(a_total{job="x",result=~"error|timeout"}[10m])) / '
        "sum without (le) (b_bucket offset 5m) and on (job) up > 1e-9 * 86400"
    )
    assert metric_names(expr) == {"a_total", "b_bucket", "up"}
    assert "secret_injector_reviews_total" in webhook_series()
    assert "secret_injector_review_duration_seconds_bucket" in webhook_series()
    assert "secret_injector_build_info" in webhook_series()


def alert_rules() -> list[dict[str, Any]]:
    rule = render(MONITORING).one("PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard_exprs(dashboard: dict[str, Any]) -> Iterator[str]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", variable["definition"])


def test_monitoring_alerts_cover_the_required_conditions() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "SecretInjectorDown",
        "SecretInjectorDenialSpike",
        "SecretInjectorBackendErrors",
        "SecretInjectorCertificateExpiringSoon",
    } <= names


def test_monitoring_alerts_use_only_existing_metrics() -> None:
    known = webhook_series() | PROMETHEUS_SERIES
    for rule in alert_rules():
        used = metric_names(rule["expr"])
        assert used, rule["alert"]
        assert used <= known, f"{rule['alert']} uses unknown series {used - known}"


def test_monitoring_alerts_select_the_service_monitors_job() -> None:
    job = f'job="{FULLNAME}-metrics",namespace="{NAMESPACE}"'
    rendered = render(MONITORING)
    monitor = rendered.one("ServiceMonitor")["spec"]
    service = rendered.one("Service", f"{FULLNAME}-metrics")
    selected = monitor["selector"]["matchLabels"].items()
    assert selected <= service["metadata"]["labels"].items()
    assert not selected <= rendered.one("Service", FULLNAME)["metadata"]["labels"].items()
    for rule in alert_rules():
        for selector in re.findall(r"\{([^}]*)\}", rule["expr"]):
            assert selector.startswith(job), (rule["alert"], selector)
        assert rule["labels"]["team"] == "platform"
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_monitoring_alerts_follow_thresholds() -> None:
    values = {
        "metrics": MONITORING["metrics"]
        | {"prometheusRule": {"enabled": True, "certificateExpiryDays": 3, "jobLabel": "si"}}
    }
    rules = {
        r["alert"]: r["expr"]
        for g in render(values).one("PrometheusRule")["spec"]["groups"]
        for r in g["rules"]
    }
    assert "< 3 * 86400" in rules["SecretInjectorCertificateExpiringSoon"]
    assert 'job="si"' in rules["SecretInjectorDown"]


def test_monitoring_dashboard_uses_only_existing_metrics() -> None:
    dashboard = json.loads((CHART_DIR / "files" / "dashboard.json").read_text())
    known = webhook_series() | PROMETHEUS_SERIES
    exprs = list(dashboard_exprs(dashboard))
    assert len(exprs) >= 10
    used = set().union(*(metric_names(e) for e in exprs))
    assert used <= known, f"dashboard uses unknown series {used - known}"
    # Every instrument of the webhook is on the dashboard.
    families = {family.name for family in Metrics().registry.collect()}
    assert {f for f in families if not any(s.startswith(f) for s in used)} == set()
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


@pytest.mark.parametrize(("values", "present"), [({}, False), (MONITORING, True)])
def test_monitoring_dashboard_config_map_for_the_grafana_sidecar(
    values: dict[str, Any], present: bool
) -> None:
    rendered = render(values)
    maps = [c for c in rendered.of_kind("ConfigMap") if c["metadata"]["name"].endswith("dashboard")]
    assert len(maps) == int(present)
    if present:
        (cm,) = maps
        assert cm["metadata"]["namespace"] == "grafana"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "Platform"}
        shipped = json.loads((CHART_DIR / "files" / "dashboard.json").read_text())
        assert json.loads(cm["data"]["secret-injector.json"]) == shipped
