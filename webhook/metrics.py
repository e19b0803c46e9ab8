"""Metrics: our own CollectorRegistry and every instrument, in base units with bounded labels.

Label values come from the small fixed sets below; never a pod name, a namespace or a
secret path (those are in the audit line). The known label combinations are created at
zero when the process starts, so `rate()` and the chart's alerts see a series from the
first scrape instead of none until the first event.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.metrics_core import Metric

from webhook import __version__
from webhook.policy import RULES

# Reviews take tens of microseconds to a few milliseconds, more with a backend check; the
# API server gives up after timeoutSeconds (5 in the chart).
REVIEW_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
BACKEND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# Every label value the instruments take (the README's metrics table lists the same).
ENDPOINTS = ("mutate", "validate")
# The operation label: the AdmissionReview's operation, "other" for anything else, and
# "unknown" when the body was not a usable AdmissionReview.
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT", "other", "unknown")
# invalid: not a usable AdmissionReview, answered with an HTTP error (400, 413, 415).
OUTCOMES = ("skipped", "injected", "allowed", "warned", "denied", "error", "invalid")
ACTIONS = ("deny", "warn")
BACKENDS = ("vault", "aws-sm", "aws-ssm")
BACKEND_RESULTS = ("found", "missing", "error", "timeout", "circuit_open")
CACHE_RESULTS = ("hit", "miss")
RELOAD_RESULTS = ("applied", "rejected")


class Metrics:
    """All instruments of one webhook process, on a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reviews = Counter(
            "secret_injector_reviews",
            "Admission reviews answered, by endpoint, operation and outcome "
            "(skipped, injected, allowed, warned, denied, error; invalid: not a usable "
            "AdmissionReview, answered with an HTTP error).",
            ["endpoint", "operation", "outcome"],
            registry=r,
        )
        self.review_duration = Histogram(
            "secret_injector_review_duration_seconds",
            "Time to answer one admission review, from the first byte read to the answer.",
            ["endpoint"],
            buckets=REVIEW_BUCKETS,
            registry=r,
        )
        # Reviews being answered now: a plain count kept by the handler, read at each
        # scrape (Gauge.inc/dec take a lock twice per review; the event loop is one thread).
        self.reviews_in_flight = 0
        Gauge(
            "secret_injector_reviews_in_flight",
            "Admission reviews being answered now.",
            registry=r,
        ).set_function(lambda: self.reviews_in_flight)
        self.violations = Counter(
            "secret_injector_policy_violations",
            "Policy violations found, by rule and action (deny, warn).",
            ["rule", "action"],
            registry=r,
        )
        self.policy_reloads = Counter(
            "secret_injector_policy_reloads",
            "Policy file changes seen, by result (applied; rejected: the file is broken and "
            "the previous policy stays in force).",
            ["result"],
            registry=r,
        )
        self.backend_requests = Counter(
            "secret_injector_backend_requests",
            "Metadata calls to secret backends, by backend (vault, aws-sm, aws-ssm) and result "
            "(found, missing, error, timeout, circuit_open).",
            ["backend", "result"],
            registry=r,
        )
        self.backend_duration = Histogram(
            "secret_injector_backend_request_duration_seconds",
            "Latency of metadata calls to secret backends.",
            ["backend"],
            buckets=BACKEND_BUCKETS,
            registry=r,
        )
        self.cache_lookups = Counter(
            "secret_injector_verify_cache_lookups",
            "Existence-cache lookups, by result (hit, miss).",
            ["result"],
            registry=r,
        )
        self.decision_cache_lookups = Counter(
            "secret_injector_decision_cache_lookups",
            "Decision-cache lookups of opted-in pods, by result (hit: a pod of a template "
            "seen within decisionCache.ttlSeconds, no policy or patch computed; miss).",
            ["result"],
            registry=r,
        )
        self.certificate_expiry = Gauge(
            "secret_injector_certificate_expiry_timestamp_seconds",
            "Unix time at which the serving certificate expires.",
            registry=r,
        )
        # Children of `reviews` and `review_duration` by label values: labels() costs about
        # as much as the rest of counting a review, and the label sets are few.
        self._review_counts: dict[tuple[str, str, str], Counter] = {}
        self._review_times: dict[str, Histogram] = {}
        self.build = Info("secret_injector_build", "Build information.", registry=r)
        self.build.info({"version": __version__})
        self._start_at_zero()

    def _start_at_zero(self) -> None:
        for endpoint in ENDPOINTS:
            self.review_duration.labels(endpoint)
            self.reviews.labels(endpoint, "unknown", "invalid")
            for outcome in OUTCOMES[:-1]:
                if endpoint == "mutate" or outcome != "injected":  # validate never patches
                    self.reviews.labels(endpoint, "CREATE", outcome)
        for rule in RULES:
            for action in ACTIONS:
                self.violations.labels(rule, action)
        for reload_result in RELOAD_RESULTS:
            self.policy_reloads.labels(reload_result)
        for backend in BACKENDS:
            self.backend_duration.labels(backend)
            for result in BACKEND_RESULTS:
                self.backend_requests.labels(backend, result)
        for cache_result in CACHE_RESULTS:
            self.cache_lookups.labels(cache_result)
            self.decision_cache_lookups.labels(cache_result)

    def count_review(self, endpoint: str, operation: str, outcome: str) -> None:
        """reviews{endpoint, operation, outcome} += 1."""
        key = (endpoint, operation, outcome)
        child = self._review_counts.get(key)
        if child is None:
            child = self._review_counts[key] = self.reviews.labels(*key)
        child.inc()

    def time_review(self, endpoint: str, seconds: float) -> None:
        """review_duration{endpoint}.observe(seconds)."""
        child = self._review_times.get(endpoint)
        if child is None:
            child = self._review_times[endpoint] = self.review_duration.labels(endpoint)
        child.observe(seconds)

    def render(self) -> bytes:
        """The registry in the Prometheus text format, without the `_created` series."""
        return generate_latest(_WithoutCreated(self.registry))


class _WithoutCreated:
    """A registry's families without their `_created` samples.

    The text format exposes each counter's and histogram's creation time as a series of
    its own (`secret_injector_reviews_created`), doubling the series for no use here;
    prometheus_client only offers to turn them off for the whole process.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family
