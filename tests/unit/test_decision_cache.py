"""decisions: one full /mutate run per pod template and TTL, answers as without the cache."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pytest

from tests.conftest import PREFIX, make_pod, make_review
from webhook import decisions, pipeline, policy
from webhook.errors import BackendUnavailableError
from webhook.metrics import Metrics
from webhook.refs import PodInjection
from webhook.review import AdmissionRequest, parse_review
from webhook.settings import Settings

REF = "vault:secret/data/team-a/db#password"
OPTED_IN = {PREFIX + "inject": "true", PREFIX + "file.db": REF}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingStore:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    async def ensure(
        self,
        namespace: str,
        spcs: Sequence[dict[str, Any]],
        owner: Mapping[str, Any] | None = None,
    ) -> None:
        self.calls.append((namespace, owner["uid"] if owner else None))


class FlakyVerifier:
    """Fails with a backend error `failures` times, then answers with no warning."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def verify(self, req: AdmissionRequest, pod: PodInjection) -> list[str]:
        self.calls += 1
        if self.calls <= self.failures:
            raise BackendUnavailableError(["vault: did not answer within 1s"])
        return []


def request(
    name: str = "web-abc12",
    annotations: Mapping[str, str] = OPTED_IN,
    owner_uid: str = "rs-1",
    dry_run: bool = False,
    **spec: Any,
) -> AdmissionRequest:
    pod = make_pod(annotations, name=name, namespace="team-a", **spec)
    pod["metadata"]["uid"] = f"uid-{name}"
    pod["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": "web-5d9c7",
            "uid": owner_uid,
            "controller": True,
        }
    ]
    review = make_review(pod, namespace="team-a", uid=f"review-{name}", dry_run=dry_run)
    return parse_review(orjson.dumps(review))


def context(clock: Clock | None = None, ttl: float = 60.0, **seams: Any) -> pipeline.Context:
    metrics = Metrics()
    cache = decisions.DecisionCache(
        ttl=ttl,
        max_entries=2,
        on_lookup=lambda result: metrics.decision_cache_lookups.labels(result).inc(),
        clock=clock or Clock(),
    )
    return pipeline.Context(
        settings=Settings(), policy=policy.Policy(), metrics=metrics, decisions=cache, **seams
    )


@pytest.fixture
def policy_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the pods the policy was run on (a spy on the real policy.check)."""
    runs: list[str] = []
    check = policy.check

    def spy(req: AdmissionRequest, *args: Any) -> list[policy.Violation]:
        runs.append(req.name)
        return check(req, *args)

    monkeypatch.setattr(policy, "check", spy)
    return runs


def lookups(ctx: pipeline.Context) -> dict[str, float]:
    assert ctx.metrics is not None
    counter = ctx.metrics.decision_cache_lookups
    return {result: counter.labels(result)._value.get() for result in ("hit", "miss")}


async def test_decision_cache_runs_one_template_once(policy_runs: list[str]) -> None:
    ctx = context()
    first = await pipeline.admit(request("web-abc12"), ctx)
    second = await pipeline.admit(request("web-xyz89"), ctx)
    assert policy_runs == ["web-abc12"]
    assert lookups(ctx) == {"hit": 1, "miss": 1}
    assert (first.outcome, second.outcome) == ("injected", "injected")
    assert (first.patch, first.spcs, first.references) == (
        second.patch,
        second.spcs,
        second.references,
    )


async def test_decision_cache_answers_as_a_full_run() -> None:
    uncached = pipeline.Context(settings=Settings(), policy=policy.Policy())
    expected = await pipeline.admit(request("web-xyz89"), uncached)
    ctx = context()
    await pipeline.admit(request("web-abc12"), ctx)
    cached = await pipeline.admit(request("web-xyz89"), ctx)
    assert (cached.cached, expected.cached) == (True, False)
    assert dataclasses.replace(cached, cached=False) == expected


@pytest.mark.parametrize(
    ("other"),
    [
        pytest.param({"containers": ["app", "sidecar"]}, id="containers"),
        pytest.param({"service_account": "builder"}, id="service-account"),
        pytest.param({"annotations": {**OPTED_IN, PREFIX + "env.TOKEN": REF}}, id="annotations"),
    ],
)
async def test_decision_cache_misses_on_another_template(
    policy_runs: list[str], other: dict[str, Any]
) -> None:
    ctx = context()
    await pipeline.admit(request("web-abc12"), ctx)
    decision = await pipeline.admit(request("web-xyz89", **other), ctx)
    assert policy_runs == ["web-abc12", "web-xyz89"]
    assert lookups(ctx) == {"hit": 0, "miss": 2}
    assert decision.outcome == "injected"


async def test_decision_cache_misses_after_a_policy_change(policy_runs: list[str]) -> None:
    ctx = context()
    await pipeline.admit(request("web-abc12"), ctx)
    ctx.policy = policy.Policy(mode="audit")
    await pipeline.admit(request("web-xyz89"), ctx)
    assert policy_runs == ["web-abc12", "web-xyz89"]


async def test_decision_cache_applies_a_new_policy_to_a_known_template() -> None:
    ctx = context()
    leaky = {"containers": [{"name": "app", "env": [{"name": "DB_PASSWORD", "value": "hunter2!"}]}]}
    assert (await pipeline.admit(request("web-abc12", **leaky), ctx)).outcome == "denied"
    ctx.policy = policy.Policy(mode="audit")
    decision = await pipeline.admit(request("web-xyz89", **leaky), ctx)
    assert decision.outcome == "injected" and decision.warnings


async def test_decision_cache_expires_after_its_ttl(policy_runs: list[str]) -> None:
    clock = Clock()
    ctx = context(clock, ttl=30)
    await pipeline.admit(request("web-a"), ctx)
    clock.now += 29
    await pipeline.admit(request("web-b"), ctx)
    clock.now += 1
    await pipeline.admit(request("web-c"), ctx)
    assert policy_runs == ["web-a", "web-c"]


async def test_decision_cache_keeps_the_most_recently_used(policy_runs: list[str]) -> None:
    ctx = context()  # max_entries=2
    for name, containers in [("a", ["x"]), ("b", ["y"]), ("a2", ["x"]), ("c", ["z"])]:
        await pipeline.admit(request(name, containers=containers), ctx)
    await pipeline.admit(request("a3", containers=["x"]), ctx)  # kept: used after b
    await pipeline.admit(request("b2", containers=["y"]), ctx)  # evicted by c
    assert policy_runs == ["a", "b", "c", "b2"]


async def test_decision_cache_answers_each_review_with_its_own_uid() -> None:
    store = RecordingStore()
    ctx = context(spc_store=store)
    for name, owner in [("web-a", "rs-1"), ("web-b", "rs-2")]:
        req = request(name, owner_uid=owner)
        decision = await pipeline.admit(req, ctx)
        assert req.uid == f"review-{name}" and decision.outcome == "injected"
    assert store.calls == [("team-a", "rs-1"), ("team-a", "rs-2")]


async def test_decision_cache_still_creates_nothing_on_dry_run() -> None:
    store = RecordingStore()
    ctx = context(spc_store=store)
    await pipeline.admit(request("web-a"), ctx)
    decision = await pipeline.admit(request("web-b", dry_run=True), ctx)
    assert decision.outcome == "injected" and lookups(ctx)["hit"] == 1
    assert store.calls == [("team-a", "rs-1")]


async def test_decision_cache_never_keeps_a_backend_error() -> None:
    verifier = FlakyVerifier(failures=1)
    ctx = context(verifier=verifier)
    denied = await pipeline.admit(request("web-a"), ctx)
    admitted = await pipeline.admit(request("web-b"), ctx)
    assert denied.outcome == "denied"
    assert isinstance(denied.denial, BackendUnavailableError)
    assert admitted.outcome == "injected" and verifier.calls == 2


async def test_decision_cache_keeps_a_policy_denial_per_review() -> None:
    ctx = context()
    leaky = {"containers": [{"name": "app", "env": [{"name": "DB_PASSWORD", "value": "hunter2!"}]}]}
    first = await pipeline.admit(request("web-a", **leaky), ctx)
    second = await pipeline.admit(request("web-b", **leaky), ctx)
    assert lookups(ctx) == {"hit": 1, "miss": 1}
    assert (first.outcome, second.outcome) == ("denied", "denied")
    assert first.denial is not None and second.denial is not None
    assert first.denial.message == second.denial.message
    assert second.violations == first.violations and second.patch == []


async def test_decision_cache_off_with_a_zero_ttl(policy_runs: list[str]) -> None:
    ctx = context(ttl=0)
    await pipeline.admit(request("web-a"), ctx)
    await pipeline.admit(request("web-b"), ctx)
    assert policy_runs == ["web-a", "web-b"]


def _written_as(req_name: str, spec_text: bytes) -> AdmissionRequest:
    """`request(req_name)` with its spec replaced by the JSON text `spec_text`."""
    body = orjson.dumps(make_review(_pod_of(req_name), namespace="team-a", uid=req_name))
    sent = orjson.dumps(_pod_of(req_name)["spec"])
    assert sent in body
    return parse_review(body.replace(sent, spec_text))


def _pod_of(name: str) -> dict[str, Any]:
    return make_pod(
        OPTED_IN,
        name=name,
        namespace="team-a",
        containers=["app", "sidecar"],
        restartPolicy="Always",
    )


async def test_decision_cache_misses_on_the_same_spec_written_otherwise(
    policy_runs: list[str],
) -> None:
    """The key is the spec as sent: another spelling of it is a second entry, never a hit
    on an entry it does not match byte for byte."""
    spec = _pod_of("web-abc12")["spec"]
    reordered = orjson.dumps(dict(reversed(list(spec.items()))))
    assert reordered != orjson.dumps(spec) and orjson.loads(reordered) == spec
    ctx = context()
    first = await pipeline.admit(_written_as("web-abc12", orjson.dumps(spec)), ctx)
    second = await pipeline.admit(_written_as("web-xyz89", reordered), ctx)
    assert policy_runs == ["web-abc12", "web-xyz89"]
    assert lookups(ctx) == {"hit": 0, "miss": 2}
    assert (first.patch, first.outcome) == (second.patch, second.outcome)


async def test_decision_cache_keys_a_repeated_spec_key_on_the_spec_it_planned(
    policy_runs: list[str],
) -> None:
    """A body naming `spec` twice is planned from the last one, and filed under it: a pod
    whose only spec is the first one does not get that decision."""
    first = make_pod(OPTED_IN, containers=["app"])["spec"]
    last = _pod_of("web-abc12")["spec"]
    both = orjson.dumps(first)[:-1] + b"}," + b'"spec":' + orjson.dumps(last)
    ctx = context()
    doubled = await pipeline.admit(_written_as("web-abc12", both), ctx)
    only_last = await pipeline.admit(_written_as("web-xyz89", orjson.dumps(last)), ctx)
    only_first = await pipeline.admit(_written_as("web-def34", orjson.dumps(first)), ctx)
    assert policy_runs == ["web-abc12", "web-def34"]
    assert (doubled.cached, only_last.cached, only_first.cached) == (False, True, False)
    assert only_last.patch == doubled.patch != only_first.patch
