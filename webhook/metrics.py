"""Metrics: our own CollectorRegistry and every instrument, in base units with bounded labels.

Label values come from small fixed sets (endpoint, operation, outcome, rule, action,
backend, result); never a pod name, a namespace or a secret path.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from webhook import __version__

# Reviews take tens of microseconds to a few milliseconds; backend checks up to the deadline.
REVIEW_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BACKEND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


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
            "Time to answer one admission review.",
            ["endpoint"],
            buckets=REVIEW_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "secret_injector_reviews_in_flight",
            "Admission reviews being answered now.",
            registry=r,
        )
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
        self.certificate_expiry = Gauge(
            "secret_injector_certificate_expiry_timestamp_seconds",
            "Unix time at which the serving certificate expires.",
            registry=r,
        )
        self.build = Info("secret_injector_build", "Build information.", registry=r)
        self.build.info({"version": __version__})

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
