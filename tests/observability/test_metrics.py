"""The metrics page of a running `serve`: each instrument moves exactly as a scripted
sequence of reviews says, and its series do not grow with the pods and paths passing by.

Each step scrapes /metrics before and after its reviews and compares every sample that
counts events (counters, gauges, histogram counts) exactly: what the step expects moved
by exactly that much, and nothing else moved at all.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import jsonpatch
import orjson
import pytest
from cryptography import x509

import webhook
from tests.conftest import PREFIX, make_pod, make_review
from tests.observability.conftest import MetricsWorld
from tests.observability.scrape import SampleKey, counted, delta, families, key, parse
from tests.observability.webhook_process import post, scrape
from webhook import metrics

REVIEWS = "secret_injector_reviews_total"
VIOLATIONS = "secret_injector_policy_violations_total"
BACKEND = "secret_injector_backend_requests_total"
BACKEND_SECONDS = "secret_injector_backend_request_duration_seconds"
REVIEW_SECONDS = "secret_injector_review_duration_seconds"
CACHE = "secret_injector_verify_cache_lookups_total"
DECISIONS = "secret_injector_decision_cache_lookups_total"
IN_FLIGHT = "secret_injector_reviews_in_flight"
Pod = dict[str, Any]


class Reviewer:
    """Sends reviews one at a time and counts them per endpoint."""

    def __init__(self, world: MetricsWorld, session: aiohttp.ClientSession) -> None:
        self.ns = world.namespace
        self.url = world.server.webhook_url
        self.session = session
        self.sent: Counter[str] = Counter()

    def pod(self, refs: Mapping[str, str] | None = None, **kwargs: Any) -> Pod:
        """A pod in the world's namespace, opted in with `refs` (annotation suffix -> ref)."""
        annotations = None
        if refs is not None:
            annotations = {PREFIX + "inject": "true", **{PREFIX + k: v for k, v in refs.items()}}
        kwargs.setdefault("namespace", self.ns)
        return make_pod(annotations, name=f"web-{secrets.token_hex(3)}", **kwargs)

    async def send(
        self, endpoint: str, body: bytes | Mapping[str, Any], content_type: str = "application/json"
    ) -> int:
        self.sent[endpoint] += 1
        return (await post(self.session, self.url, endpoint, body, content_type)).status

    async def review(self, endpoint: str, obj: Pod, **kwargs: Any) -> dict[str, Any]:
        self.sent[endpoint] += 1
        exchange = await post(self.session, self.url, endpoint, make_review(obj, **kwargs))
        assert exchange.status == 200, exchange.body
        response: dict[str, Any] = exchange.json()["response"]
        return response

    async def mutate(self, pod: Pod, **kwargs: Any) -> dict[str, Any]:
        return await self.review("mutate", pod, **kwargs)

    async def validate(self, pod: Pod, **kwargs: Any) -> dict[str, Any]:
        return await self.review("validate", pod, **kwargs)

    async def reinvoke(self, pod: Pod) -> dict[str, Any]:
        """Mutate, then mutate the result again (reinvocationPolicy: IfNeeded)."""
        first = await self.mutate(pod)
        assert "patch" in first, first
        result = jsonpatch.apply_patch(pod, orjson.loads(base64.b64decode(first["patch"])))
        return await self.mutate(result)


def reviews(endpoint: str, operation: str, outcome: str, n: int = 1) -> dict[SampleKey, float]:
    return {key(REVIEWS, endpoint=endpoint, operation=operation, outcome=outcome): n}


def violations(rule: str, action: str, n: int = 1) -> dict[SampleKey, float]:
    return {key(VIOLATIONS, rule=rule, action=action): n}


def backend(name: str, result: str, n: int = 1) -> dict[SampleKey, float]:
    """Backend calls counted by result; calls that were made are also timed."""
    counts: dict[SampleKey, float] = {key(BACKEND, backend=name, result=result): n}
    if result != "circuit_open":  # refused at once: no call, nothing timed
        counts[key(BACKEND_SECONDS + "_count", backend=name)] = n
        counts[key(BACKEND_SECONDS + "_bucket", backend=name, le="+Inf")] = n
    return counts


def cache(hits: int = 0, misses: int = 0) -> dict[SampleKey, float]:
    return {key(CACHE, result="hit"): hits, key(CACHE, result="miss"): misses}


def decisions(hits: int = 0, misses: int = 0) -> dict[SampleKey, float]:
    """Decision-cache lookups: one per opted-in pod on /mutate (a pod template seen before
    is a hit)."""
    return {key(DECISIONS, result="hit"): hits, key(DECISIONS, result="miss"): misses}


def total(*parts: Mapping[SampleKey, float]) -> dict[SampleKey, float]:
    """The parts added up, zeros left out."""
    summed: Counter[SampleKey] = Counter()
    for part in parts:
        summed.update(part)
    # Two timed calls to one backend with different results add up their counts.
    return {k: v for k, v in summed.items() if v}


def timed(sent: Mapping[str, int]) -> dict[SampleKey, float]:
    """Every review sent is timed on its endpoint, answered or not."""
    counts: dict[SampleKey, float] = {}
    for endpoint, n in sent.items():
        counts[key(REVIEW_SECONDS + "_count", endpoint=endpoint)] = n
        counts[key(REVIEW_SECONDS + "_bucket", endpoint=endpoint, le="+Inf")] = n
    return counts


def vault(ns: str, name: str, field: str = "password") -> str:
    return f"vault:secret/data/{ns}/{name}#{field}"


Step = Callable[[Reviewer], Awaitable[None]]


async def not_opted_in(r: Reviewer) -> None:
    await r.mutate(r.pod())


async def delete(r: Reviewer) -> None:
    await r.mutate(r.pod({"file.db": vault(r.ns, "found-1")}), operation="DELETE")


async def update_on_validate(r: Reviewer) -> None:
    pod = r.pod({"file.db": vault(r.ns, "found-1")})
    await r.validate(pod, operation="UPDATE", old_object=pod)


async def connect_exec(r: Reviewer) -> None:
    await r.mutate(r.pod(), operation="CONNECT", sub_resource="exec")


async def unknown_operation(r: Reviewer) -> None:
    await r.mutate(r.pod(), operation="PATCH")


async def other_kind(r: Reviewer) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": r.ns}}
    await r.mutate(secret)


async def found_then_cached(r: Reviewer) -> None:
    for _ in range(2):
        assert "patch" in await r.mutate(r.pod({"file.db": vault(r.ns, "found-1")}))


async def two_keys_one_lookup(r: Reviewer) -> None:
    refs = {"file.pw": vault(r.ns, "found-2"), "file.user": vault(r.ns, "found-2", "user")}
    assert "patch" in await r.mutate(r.pod(refs))


async def missing_is_a_warning(r: Reviewer) -> None:
    for _ in range(2):
        answer = await r.mutate(r.pod({"file.db": vault(r.ns, "missing-a")}))
        assert answer["allowed"] and "secret not found" in answer["warnings"][0]


async def reinvoked_with_a_warning(r: Reviewer) -> None:
    second = await r.reinvoke(r.pod({"file.db": vault(r.ns, "missing-b")}))
    assert "patch" not in second and second["warnings"]


async def reinvoked_clean(r: Reviewer) -> None:
    second = await r.reinvoke(r.pod({"file.db": vault(r.ns, "found-3")}))
    assert "patch" not in second and "warnings" not in second


async def aws_secret_found(r: Reviewer) -> None:
    await r.mutate(r.pod({"env.API_KEY": f"aws-sm:{r.ns}/key-1"}))


async def ssm_down_then_circuit_open(r: Reviewer) -> None:
    for n in range(3):  # breakerFailures: 2
        refs = {"file.p": f"aws-ssm:/{r.ns}/p-{n}", "aws-region": "us-west-1"}
        answer = await r.mutate(r.pod(refs))
        assert "not verified: aws-ssm" in answer["warnings"][0]  # onBackendError: warn


async def other_tenants_path(r: Reviewer) -> None:
    answer = await r.mutate(r.pod({"file.db": vault("someone-else", "found-1")}))
    assert answer["status"]["code"] == 403


async def plaintext_on_mutate(r: Reviewer) -> None:
    env = [{"name": "DB_PASSWORD", "value": "hunter2hunter2"}, {"name": "API_TOKEN", "value": "x1"}]
    pod = r.pod({"file.db": vault(r.ns, "found-1")}, containers=[{"name": "a", "env": env}])
    assert (await r.mutate(pod))["status"]["code"] == 403


async def plaintext_on_validate(r: Reviewer) -> None:
    env = [{"name": "DB_PASSWORD", "value": "hunter2hunter2"}]
    assert not (await r.validate(r.pod(containers=[{"name": "a", "env": env}])))["allowed"]


async def env_from_secret(r: Reviewer) -> None:
    container = {"name": "a", "envFrom": [{"secretRef": {"name": "all"}}]}
    assert (await r.validate(r.pod(containers=[container])))["warnings"]


async def writable_secret_volume(r: Reviewer) -> None:
    volumes = [{"name": "s", "secret": {"secretName": "s", "defaultMode": 0o644}}]
    assert not (await r.validate(r.pod(volumes=volumes)))["allowed"]


async def unknown_annotation(r: Reviewer) -> None:
    refs = {"file.db": vault(r.ns, "found-1"), "flie.x": vault(r.ns, "found-1")}
    assert (await r.mutate(r.pod(refs)))["status"]["code"] == 403


async def malformed_annotation(r: Reviewer) -> None:
    refs = {"file.db": f"vault:secret/data/{r.ns}/found-1"}  # no #key
    assert (await r.mutate(r.pod(refs)))["status"]["code"] == 400


async def not_injected_on_validate(r: Reviewer) -> None:
    assert not (await r.validate(r.pod({"file.db": vault(r.ns, "found-1")})))["allowed"]


async def clean_on_validate(r: Reviewer) -> None:
    assert (await r.validate(r.pod()))["allowed"]


async def invalid_bodies(r: Reviewer) -> None:
    assert await r.send("mutate", b"{") == 400
    assert await r.send("validate", orjson.dumps(make_review()), "text/plain") == 415


STEPS = [
    pytest.param(not_opted_in, reviews("mutate", "CREATE", "skipped"), id="not-opted-in"),
    pytest.param(delete, reviews("mutate", "DELETE", "skipped"), id="delete"),
    pytest.param(update_on_validate, reviews("validate", "UPDATE", "skipped"), id="update"),
    pytest.param(connect_exec, reviews("mutate", "CONNECT", "skipped"), id="connect"),
    pytest.param(unknown_operation, reviews("mutate", "other", "skipped"), id="other-op"),
    pytest.param(other_kind, reviews("mutate", "CREATE", "skipped"), id="other-kind"),
    pytest.param(
        found_then_cached,
        total(
            reviews("mutate", "CREATE", "injected", 2),
            backend("vault", "found"),
            cache(misses=1, hits=1),
            decisions(misses=1, hits=1),
        ),
        id="found-then-cached",
    ),
    pytest.param(
        two_keys_one_lookup,
        total(
            reviews("mutate", "CREATE", "injected"),
            backend("vault", "found"),
            cache(misses=1),
            decisions(misses=1),
        ),
        id="two-keys-one-lookup",
    ),
    pytest.param(
        missing_is_a_warning,
        total(
            reviews("mutate", "CREATE", "injected", 2),
            backend("vault", "missing"),
            cache(misses=1, hits=1),
            decisions(misses=1, hits=1),
        ),
        id="missing-warned-and-cached",
    ),
    pytest.param(
        reinvoked_with_a_warning,
        total(
            reviews("mutate", "CREATE", "injected"),
            reviews("mutate", "CREATE", "warned"),
            backend("vault", "missing"),
            cache(misses=1, hits=1),
            decisions(misses=2),
        ),
        id="reinvoked-warned",
    ),
    pytest.param(
        reinvoked_clean,
        total(
            reviews("mutate", "CREATE", "injected"),
            reviews("mutate", "CREATE", "allowed"),
            backend("vault", "found"),
            cache(misses=1, hits=1),
            decisions(misses=2),
        ),
        id="reinvoked-allowed",
    ),
    pytest.param(
        aws_secret_found,
        total(
            reviews("mutate", "CREATE", "injected"),
            backend("aws-sm", "found"),
            cache(misses=1),
            decisions(misses=1),
        ),
        id="aws-sm-found",
    ),
    pytest.param(
        ssm_down_then_circuit_open,
        total(
            reviews("mutate", "CREATE", "injected", 3),
            backend("aws-ssm", "error", 2),
            backend("aws-ssm", "circuit_open"),
            cache(misses=3),  # failures are never cached
            decisions(misses=3),
        ),
        id="ssm-down-circuit-open",
    ),
    pytest.param(
        other_tenants_path,
        total(
            reviews("mutate", "CREATE", "denied"),
            violations("allowedRefs", "deny"),
            decisions(misses=1),
        ),
        id="policy-before-backend",
    ),
    pytest.param(
        plaintext_on_mutate,
        total(
            reviews("mutate", "CREATE", "denied"),
            violations("plaintextSecrets", "deny", 2),
            decisions(misses=1),
        ),
        id="plaintext-mutate",
    ),
    pytest.param(
        plaintext_on_validate,
        total(reviews("validate", "CREATE", "denied"), violations("plaintextSecrets", "deny")),
        id="plaintext-validate",
    ),
    pytest.param(
        env_from_secret,
        total(reviews("validate", "CREATE", "warned"), violations("envFromSecrets", "warn")),
        id="envfrom-warned",
    ),
    pytest.param(
        writable_secret_volume,
        total(reviews("validate", "CREATE", "denied"), violations("secretVolumes", "deny")),
        id="secret-volume",
    ),
    pytest.param(
        unknown_annotation,
        total(
            reviews("mutate", "CREATE", "denied"),
            violations("unknownAnnotations", "deny"),
            decisions(misses=1),
        ),
        id="unknown-annotation",
    ),
    pytest.param(
        malformed_annotation,
        total(reviews("mutate", "CREATE", "denied"), decisions(misses=1)),
        id="bad-annotation",
    ),
    pytest.param(not_injected_on_validate, reviews("validate", "CREATE", "denied"), id="guard"),
    pytest.param(clean_on_validate, reviews("validate", "CREATE", "allowed"), id="validate-clean"),
    pytest.param(
        invalid_bodies,
        total(reviews("mutate", "unknown", "invalid"), reviews("validate", "unknown", "invalid")),
        id="invalid-bodies",
    ),
]


@pytest.mark.parametrize(("step", "expected"), STEPS)
async def test_metrics_move_exactly_as_the_reviews_say(
    metrics_world: MetricsWorld, step: Step, expected: dict[SampleKey, float]
) -> None:
    server = metrics_world.server
    async with server.session() as session:
        r = Reviewer(metrics_world, session)
        before = parse(await scrape(session, server.metrics_url))
        await step(r)
        after = parse(await scrape(session, server.metrics_url))
    changes = delta(before, after)
    assert counted(changes) == total(expected, timed(r.sent))
    for endpoint in r.sent:  # the time was added up too
        assert changes[key(REVIEW_SECONDS + "_sum", endpoint=endpoint)] > 0


async def test_metrics_in_flight_counts_reviews_being_answered(
    metrics_world: MetricsWorld,
) -> None:
    server = metrics_world.server
    metrics_world.vault_proxy.delay = 0.5  # Vault answers slowly: the review waits
    try:
        async with server.session() as session:
            r = Reviewer(metrics_world, session)
            pending = asyncio.ensure_future(r.mutate(r.pod({"file.db": vault(r.ns, "found-5")})))
            seen = set()
            while not pending.done():
                page = parse(await scrape(session, server.metrics_url))
                seen.add(page[key(IN_FLIGHT)])
            assert "patch" in await pending
            after = parse(await scrape(session, server.metrics_url))
    finally:
        metrics_world.vault_proxy.delay = 0.0
    assert 1.0 in seen
    assert seen <= {0.0, 1.0}
    assert after[key(IN_FLIGHT)] == 0.0


async def test_metrics_certificate_expiry_and_build_info(metrics_world: MetricsWorld) -> None:
    server = metrics_world.server
    async with server.session() as session:
        page = parse(await scrape(session, server.metrics_url))
    cert = x509.load_pem_x509_certificate(server.certs.cert.read_bytes())
    expires = cert.not_valid_after_utc.timestamp()
    assert page[key("secret_injector_certificate_expiry_timestamp_seconds")] == expires
    assert expires > datetime.datetime.now(datetime.UTC).timestamp()
    assert page[key("secret_injector_build_info", version=webhook.__version__)] == 1.0


async def test_metrics_families_types_and_base_units(metrics_world: MetricsWorld) -> None:
    server = metrics_world.server
    async with server.session() as session:
        text = await scrape(session, server.metrics_url)
    assert {k: v for k, v in families(text).items() if k.startswith("secret_injector_")} == {
        "secret_injector_reviews": "counter",
        "secret_injector_review_duration_seconds": "histogram",
        "secret_injector_reviews_in_flight": "gauge",
        "secret_injector_policy_violations": "counter",
        "secret_injector_policy_reloads": "counter",
        "secret_injector_backend_requests": "counter",
        "secret_injector_backend_request_duration_seconds": "histogram",
        "secret_injector_verify_cache_lookups": "counter",
        "secret_injector_decision_cache_lookups": "counter",
        "secret_injector_certificate_expiry_timestamp_seconds": "gauge",
        "secret_injector_build_info": "gauge",  # an Info is a gauge in the text format
    }
    assert "_created" not in text
    # Review latency buckets: sub-millisecond to the API server's timeout, in seconds.
    page = parse(text)
    bounds = {
        dict(labels)["le"]
        for name, labels in page
        if name == REVIEW_SECONDS + "_bucket" and dict(labels)["endpoint"] == "mutate"
    }
    assert {float(b) for b in bounds} == {*metrics.REVIEW_BUCKETS, float("inf")}
    assert min(metrics.REVIEW_BUCKETS) <= 0.0005 and max(metrics.REVIEW_BUCKETS) >= 5


# Every label and the values it may take; anything else would be unbounded.
ALLOWED_LABELS: dict[str, set[str]] = {
    "endpoint": set(metrics.ENDPOINTS),
    "operation": set(metrics.OPERATIONS),
    "outcome": set(metrics.OUTCOMES),
    "rule": set(metrics.RULES),
    "action": set(metrics.ACTIONS),
    "backend": set(metrics.BACKENDS),
    "result": {*metrics.BACKEND_RESULTS, *metrics.CACHE_RESULTS, *metrics.RELOAD_RESULTS},
    "le": {*(str(b) for b in metrics.REVIEW_BUCKETS + metrics.BACKEND_BUCKETS), "+Inf"},
    "version": {webhook.__version__},
}


def bounded_pod(r: Reviewer, run: str, n: int) -> tuple[str, Pod]:
    """Pod n of a run: its own namespace, name and secret path; every kind of review."""
    ns = f"bnd-{run}-{n}"
    path = f"{ns}/app-{n}"
    kind = n % 6
    if kind == 0:
        refs = {"file.db": f"vault:secret/data/{path}#password"}  # missing in Vault
    elif kind == 1:
        refs = {"env.KEY": f"aws-sm:{path}"}  # missing in Secrets Manager
    elif kind == 2:
        refs = {"file.p": f"aws-ssm:/{path}", "aws-region": "eu-west-1"}  # SSM is down
    elif kind == 3:
        refs = {"file.db": f"vault:secret/data/other-{path}#password"}  # not this tenant's
    elif kind == 4:
        env = [{"name": f"DB_PASSWORD_{n}", "value": f"hunter2-{n}"}]  # plaintext
        pod = r.pod(namespace=ns, containers=[{"name": f"app-{n}", "env": env}])
        pod["metadata"]["name"] = f"pod-{run}-{n}"
        return "validate", pod
    else:
        refs = {"file.db": f"vault:secret/data/{path}#pw", f"flie.{n}": "x"}  # unknown key
    pod = r.pod(refs, namespace=ns)
    pod["metadata"]["name"] = f"pod-{run}-{n}"
    return "mutate", pod


async def send_bounded(r: Reviewer, run: str, count: int) -> None:
    gate = asyncio.Semaphore(16)

    async def one(n: int) -> None:
        endpoint, pod = bounded_pod(r, run, n)
        async with gate:
            await r.review(endpoint, pod)

    await asyncio.gather(*(one(n) for n in range(count)))


async def test_metrics_series_do_not_grow_with_pods_and_paths(metrics_world: MetricsWorld) -> None:
    server = metrics_world.server
    run = secrets.token_hex(3)
    async with server.session() as session:
        r = Reviewer(metrics_world, session)
        await send_bounded(r, f"{run}w", 12)  # every kind once or twice first
        text_before = await scrape(session, server.metrics_url)
        await send_bounded(r, run, 1000)
        text_after = await scrape(session, server.metrics_url)
    before, after = parse(text_before), parse(text_after)
    assert after.keys() == before.keys()  # not one series more
    moved = delta(before, after)
    assert moved[key(REVIEW_SECONDS + "_count", endpoint="mutate")] == 834  # kind 4 validates
    assert moved[key(BACKEND, backend="vault", result="missing")] == 167
    assert moved[key(BACKEND, backend="aws-sm", result="missing")] == 167
    assert moved[key(BACKEND, backend="aws-ssm", result="circuit_open")] == 167
    assert moved[key(VIOLATIONS, rule="allowedRefs", action="deny")] == 167
    assert moved[key(VIOLATIONS, rule="plaintextSecrets", action="deny")] == 166
    assert moved[key(VIOLATIONS, rule="unknownAnnotations", action="deny")] == 166
    for _, labels in after:
        for label, value in labels:
            assert value in ALLOWED_LABELS[label], (label, value)
    assert f"bnd-{run}" not in text_after and f"pod-{run}" not in text_after
