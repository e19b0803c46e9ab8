"""The metrics' documented label values are the ones the code can produce."""

from __future__ import annotations

import dataclasses
import typing

from tests.observability.scrape import parse
from webhook import handlers, metrics, pipeline, policy
from webhook.backends import BackendName
from webhook.backends.cache import LookupResult
from webhook.config_file import camel


def test_metric_labels_rules_are_the_policy_rules() -> None:
    rules = {camel(f.name) for f in dataclasses.fields(policy.Policy) if f.name != "mode"}
    assert set(metrics.RULES) == rules


def test_metric_labels_backends_and_cache_results() -> None:
    assert set(metrics.BACKENDS) == set(typing.get_args(BackendName))
    assert set(metrics.CACHE_RESULTS) == set(typing.get_args(LookupResult))


def test_metric_labels_outcomes_and_operations() -> None:
    decided = set(typing.get_args(pipeline.Outcome))
    assert set(metrics.OUTCOMES) == decided | {"error", "invalid"}
    assert handlers.OPERATIONS | {"other", "unknown"} == set(metrics.OPERATIONS)


def test_metric_labels_known_series_start_at_zero() -> None:
    page = parse(metrics.Metrics().render().decode())
    counters = {k: v for k, v in page.items() if k[0].endswith("_total")}
    assert set(counters.values()) == {0.0}
    reviews = {dict(labels)["outcome"] for name, labels in counters if "reviews" in name}
    assert reviews == set(metrics.OUTCOMES)
    backend = {
        (dict(labels)["backend"], dict(labels)["result"])
        for name, labels in counters
        if name == "secret_injector_backend_requests_total"
    }
    assert backend == {(b, r) for b in metrics.BACKENDS for r in metrics.BACKEND_RESULTS}
    assert len(page) < 200  # a page a person can read
