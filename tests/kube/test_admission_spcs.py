"""The admission pipeline with the SPC store against the fake API server: the SPCs the
planner makes are created (and pass the real CRD schema), owned by the pod's controller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
import pytest

from tests.conftest import PREFIX, make_pod, make_review
from tests.fake_kube import SPC, FakeKube
from webhook import pipeline, policy, review
from webhook.kube import KubernetesSpcStore, open_spc_store
from webhook.settings import AwsProvider, Providers, Settings, VaultProvider

NS = "team-a"
REPLICA_SET = {
    "apiVersion": "apps/v1",
    "kind": "ReplicaSet",
    "name": "web-5d9c7",
    "uid": "7c0ffee0-0000-4000-8000-000000000001",
    "controller": True,
    "blockOwnerDeletion": True,
}
ANNOTATIONS = {
    PREFIX + "inject": "true",
    PREFIX + "file.db-password": "vault:secret/data/team-a/db#password",
    PREFIX + "env.API_KEY": "aws-sm:team-a/api#key",
    PREFIX + "file.flags": "aws-ssm:/team-a/flags",
}


@pytest.fixture
async def context(settings: Settings) -> AsyncIterator[pipeline.Context]:
    configured = replace(
        settings,
        providers=Providers(
            vault=VaultProvider(address="https://vault.vault:8200"),
            aws=AwsProvider(region="us-east-1"),
        ),
    )
    store = open_spc_store(configured)
    assert isinstance(store, KubernetesSpcStore)
    yield pipeline.Context(settings=configured, policy=policy.Policy(), spc_store=store)
    await store.close()


def request(owner: dict[str, Any] | None = REPLICA_SET, dry_run: bool = False) -> Any:
    pod = make_pod(ANNOTATIONS, name=None, namespace=NS)
    pod["metadata"]["generateName"] = "web-5d9c7-"
    if owner is not None:
        pod["metadata"]["ownerReferences"] = [owner]
    return review.parse_review(orjson.dumps(make_review(pod, dry_run=dry_run)))


async def test_admit_creates_the_planned_spcs_owned_by_the_controller(
    fake: FakeKube, context: pipeline.Context
) -> None:
    decision = await pipeline.admit(request(), context)
    assert decision.outcome == "injected", decision.denial
    assert {spc["spec"]["provider"] for spc in decision.spcs} == {"vault", "aws"}
    for spc in decision.spcs:
        stored = fake.get(SPC, spc["metadata"]["name"], NS)
        assert stored is not None  # and so it passed the CRD schema
        assert stored["spec"] == spc["spec"]
        owner = {k: REPLICA_SET[k] for k in ("apiVersion", "kind", "name", "uid")}
        assert stored["metadata"]["ownerReferences"] == [owner]


async def test_admit_of_the_next_pod_makes_no_api_call(
    fake: FakeKube, context: pipeline.Context
) -> None:
    await pipeline.admit(request(), context)
    calls = len(fake.requests)
    decision = await pipeline.admit(request(), context)
    assert decision.outcome == "injected"
    assert len(fake.requests) == calls


async def test_admit_on_dry_run_creates_nothing(fake: FakeKube, context: pipeline.Context) -> None:
    decision = await pipeline.admit(request(dry_run=True), context)
    assert decision.outcome == "injected" and decision.spcs
    assert fake.requests == []


async def test_admit_of_a_bare_pod_creates_unowned_spcs(
    fake: FakeKube, context: pipeline.Context
) -> None:
    decision = await pipeline.admit(request(owner=None), context)
    assert decision.outcome == "injected"
    for spc in decision.spcs:
        stored = fake.get(SPC, spc["metadata"]["name"], NS)
        assert stored is not None and "ownerReferences" not in stored["metadata"]


async def test_admit_denies_with_503_when_the_api_fails(
    fake: FakeKube, context: pipeline.Context
) -> None:
    fake.fail("secretproviderclasses", status=500, method="POST")
    decision = await pipeline.admit(request(), context)
    assert decision.outcome == "denied" and decision.denial is not None
    assert decision.denial.code == 503
    assert "cannot create SecretProviderClass team-a/" in decision.denial.message
    assert decision.patch == []
