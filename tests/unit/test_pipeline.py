"""pipeline: the step order and what each kind of review comes out as."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from tests.conftest import PREFIX, make_pod, make_review
from webhook import pipeline, policy
from webhook.refs import PodInjection
from webhook.review import AdmissionRequest, parse_review
from webhook.settings import Settings

REF = "vault:secret/data/team-a/db#password"


class RecordingStore:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    async def ensure(
        self,
        namespace: str,
        spcs: Sequence[dict[str, Any]],
        owner: Mapping[str, Any] | None = None,
    ) -> None:
        self.calls.append((namespace, len(spcs)))


class RecordingVerifier:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def verify(self, req: AdmissionRequest, pod: PodInjection) -> list[str]:
        self.seen += [str(i.ref) for i in pod.injections]
        return []


def request(annotations: dict[str, str] | None, **review: Any) -> AdmissionRequest:
    pod = make_pod(annotations, namespace="team-a")
    return parse_review(orjson.dumps(make_review(pod, namespace="team-a", **review)))


def context(**seams: Any) -> pipeline.Context:
    return pipeline.Context(settings=Settings(), policy=policy.Policy(), **seams)


async def test_admit_skips_a_pod_without_our_annotations() -> None:
    decision = await pipeline.admit(request({"team": "a"}), context())
    assert (decision.outcome, decision.patch, decision.warnings) == ("skipped", [], [])


async def test_admit_warns_when_our_annotations_lack_the_opt_in() -> None:
    decision = await pipeline.admit(request({PREFIX + "file.db": REF}), context())
    assert decision.outcome == "warned" and decision.patch == []
    assert decision.warnings == [
        f'{PREFIX}inject is not set: 1 annotation under {PREFIX} ignored (set it to "true")'
    ]
    assert all(len(w) <= 120 for w in decision.warnings)


async def test_admit_explicit_opt_out_is_silent() -> None:
    annotations = {PREFIX + "inject": "false", PREFIX + "file.db": REF}
    decision = await pipeline.admit(request(annotations), context())
    assert (decision.outcome, decision.warnings) == ("skipped", [])


async def test_admit_injects_verifies_and_creates_the_spcs() -> None:
    store, verifier = RecordingStore(), RecordingVerifier()
    annotations = {PREFIX + "inject": "true", PREFIX + "file.db": REF}
    decision = await pipeline.admit(
        request(annotations), context(spc_store=store, verifier=verifier)
    )
    assert decision.outcome == "injected" and decision.patch
    assert decision.references == [REF]
    assert verifier.seen == [REF]
    assert store.calls == [("team-a", 1)]


async def test_admit_dry_run_creates_nothing() -> None:
    store = RecordingStore()
    annotations = {PREFIX + "inject": "true", PREFIX + "file.db": REF}
    decision = await pipeline.admit(request(annotations, dry_run=True), context(spc_store=store))
    assert decision.outcome == "injected" and store.calls == []


async def test_admit_policy_denial_comes_before_verification() -> None:
    verifier = RecordingVerifier()
    annotations = {PREFIX + "inject": "true", PREFIX + "file.db": "vault:secret/data/team-b/db#pw"}
    decision = await pipeline.admit(request(annotations), context(verifier=verifier))
    assert decision.outcome == "denied" and decision.denial is not None
    assert decision.denial.code == 403
    assert verifier.seen == []


async def test_admit_leaves_deletes_and_other_kinds_alone() -> None:
    annotations = {PREFIX + "inject": "true", PREFIX + "file.db": REF}
    for review in ({"operation": "DELETE"}, {"kind": "Deployment", "group": "apps"}):
        decision = await pipeline.admit(request(annotations, **review), context())
        assert decision.outcome == "skipped"
