"""The SPC store against the fake API server: create-if-absent, owners for GC, errors as denials."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.fake_kube import SPC, FakeKube
from webhook.errors import ConfigError, KubernetesError, KubernetesUnavailableError
from webhook.kube import KubeApi, KubernetesSpcStore, load_configuration, open_spc_store
from webhook.settings import Kubernetes, Settings

NS = "team-a"
SPC_PATH = rf"/namespaces/{NS}/secretproviderclasses"

VAULT_SPC: dict[str, Any] = {
    "apiVersion": "secrets-store.csi.x-k8s.io/v1",
    "kind": "SecretProviderClass",
    "metadata": {
        "name": "secret-injector-vault-5f1c2a9e",
        "labels": {"app.kubernetes.io/managed-by": "secret-injector"},
    },
    "spec": {
        "provider": "vault",
        "parameters": {
            "roleName": "team-a",
            "vaultAddress": "https://vault.vault:8200",
            "vaultKubernetesMountPath": "kubernetes",
            "objects": '- objectName: "db.password"\n'
            '  secretPath: "secret/data/team-a/db"\n'
            '  secretKey: "password"\n',
        },
        "secretObjects": [
            {
                "secretName": "secret-injector-vault-5f1c2a9e",
                "type": "Opaque",
                "data": [{"objectName": "db.password", "key": "DB_PASSWORD"}],
            }
        ],
    },
}
AWS_SPC: dict[str, Any] = {
    "apiVersion": "secrets-store.csi.x-k8s.io/v1",
    "kind": "SecretProviderClass",
    "metadata": {"name": "secret-injector-aws-0c3d4e5f"},
    "spec": {
        "provider": "aws",
        "parameters": {
            "region": "us-east-1",
            "objects": '- objectName: "team-a/api"\n'
            '  objectType: "secretsmanager"\n'
            '  objectAlias: "api.json"\n'
            '  objectVersionLabel: "AWSCURRENT"\n'
            "  jmesPath:\n"
            '    - path: "key"\n'
            '      objectAlias: "api-key"\n'
            '- objectName: "/team-a/flags"\n'
            '  objectType: "ssmparameter"\n',
        },
    },
}
REPLICA_SET = {
    "apiVersion": "apps/v1",
    "kind": "ReplicaSet",
    "name": "web-5d9c7",
    "uid": "7c0ffee0-0000-4000-8000-000000000001",
}
NEW_REPLICA_SET = {
    **REPLICA_SET,
    "name": "web-6e8d8",
    "uid": "7c0ffee0-0000-4000-8000-000000000002",
}


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[KubernetesSpcStore]:
    opened = open_spc_store(settings)
    assert opened is not None
    yield opened
    await opened.close()


def spc_named(name: str, base: dict[str, Any] = VAULT_SPC) -> dict[str, Any]:
    spc = copy.deepcopy(base)
    spc["metadata"]["name"] = name
    return spc


@pytest.mark.parametrize(
    "spc", [pytest.param(VAULT_SPC, id="vault"), pytest.param(AWS_SPC, id="aws")]
)
async def test_ensure_creates_an_absent_spc_that_passes_the_crd_schema(
    fake: FakeKube, store: KubernetesSpcStore, spc: dict[str, Any]
) -> None:
    await store.ensure(NS, [spc], REPLICA_SET)
    stored = fake.get(SPC, spc["metadata"]["name"], NS)
    assert stored is not None
    assert stored["spec"] == spc["spec"]
    assert stored["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "secret-injector"
    assert stored["metadata"]["ownerReferences"] == [REPLICA_SET]
    assert stored["metadata"]["uid"] and stored["metadata"]["resourceVersion"]
    assert fake.count("POST", SPC_PATH) == 1


async def test_ensure_takes_an_existing_spc_as_is(
    fake: FakeKube, store: KubernetesSpcStore
) -> None:
    seeded = copy.deepcopy(VAULT_SPC)
    seeded["metadata"]["namespace"] = NS
    existing = fake.seed(seeded)
    await store.ensure(NS, [VAULT_SPC])  # a bare pod: no owner to add
    assert fake.get(SPC, VAULT_SPC["metadata"]["name"], NS) == existing
    assert (fake.count("POST", SPC_PATH), fake.count("PATCH")) == (1, 0)


async def test_ensure_makes_no_call_for_an_spc_it_knows(
    fake: FakeKube, store: KubernetesSpcStore
) -> None:
    await store.ensure(NS, [VAULT_SPC, AWS_SPC], REPLICA_SET)
    calls = len(fake.requests)
    for _ in range(3):
        await store.ensure(NS, [VAULT_SPC, AWS_SPC], REPLICA_SET)
    assert len(fake.requests) == calls == 2


async def test_ensure_asks_again_once_the_known_name_expires(
    fake: FakeKube, settings: Settings
) -> None:
    now = [0.0]
    config = load_configuration(settings.kubernetes)
    assert config is not None
    store = KubernetesSpcStore(
        KubeApi(config, 1.0), replace(settings.kubernetes, cache_ttl_seconds=60), lambda: now[0]
    )
    try:
        await store.ensure(NS, [VAULT_SPC])
        now[0] = 59.0
        await store.ensure(NS, [VAULT_SPC])
        assert fake.count("POST", SPC_PATH) == 1
        del fake.objects[(SPC.plural, NS, VAULT_SPC["metadata"]["name"])]  # behind our back
        now[0] = 61.0
        await store.ensure(NS, [VAULT_SPC])
    finally:
        await store.close()
    assert fake.count("POST", SPC_PATH) == 2
    assert fake.get(SPC, VAULT_SPC["metadata"]["name"], NS) is not None


async def test_ensure_adds_a_new_owner_and_keeps_the_old_ones(
    fake: FakeKube, store: KubernetesSpcStore
) -> None:
    await store.ensure(NS, [VAULT_SPC], REPLICA_SET)
    await store.ensure(NS, [VAULT_SPC], NEW_REPLICA_SET)  # the rollout's new ReplicaSet
    await store.ensure(NS, [VAULT_SPC], NEW_REPLICA_SET)
    stored = fake.get(SPC, VAULT_SPC["metadata"]["name"], NS)
    assert stored is not None
    assert stored["metadata"]["ownerReferences"] == [REPLICA_SET, NEW_REPLICA_SET]
    assert (fake.count("POST"), fake.count("GET"), fake.count("PATCH")) == (2, 1, 1)


async def test_ensure_leaves_an_unowned_spc_unowned(
    fake: FakeKube, store: KubernetesSpcStore
) -> None:
    await store.ensure(NS, [VAULT_SPC])  # first used by a bare pod: kept for it, never collected
    await store.ensure(NS, [VAULT_SPC], REPLICA_SET)
    stored = fake.get(SPC, VAULT_SPC["metadata"]["name"], NS)
    assert stored is not None
    assert "ownerReferences" not in stored["metadata"]
    assert fake.count("PATCH") == 0


async def test_ensure_retries_when_the_spc_changes_between_read_and_patch(
    fake: FakeKube, store: KubernetesSpcStore
) -> None:
    await store.ensure(NS, [VAULT_SPC], REPLICA_SET)
    fake.fail(SPC_PATH, status=409, method="PATCH")  # another replica patched it first
    await store.ensure(NS, [VAULT_SPC], NEW_REPLICA_SET)
    stored = fake.get(SPC, VAULT_SPC["metadata"]["name"], NS)
    assert stored is not None
    assert stored["metadata"]["ownerReferences"] == [REPLICA_SET, NEW_REPLICA_SET]
    assert fake.count("PATCH") == 2


async def test_ensure_creates_again_when_the_spc_vanishes_after_409(
    fake: FakeKube, store: KubernetesSpcStore
) -> None:
    await store.ensure(NS, [VAULT_SPC], REPLICA_SET)
    fake.fail(SPC_PATH, status=404, method="GET")  # collected between our create and get
    await store.ensure(NS, [VAULT_SPC], NEW_REPLICA_SET)
    assert (fake.count("POST"), fake.count("GET"), fake.count("PATCH")) == (3, 2, 1)


@pytest.mark.parametrize(
    ("status", "error", "code", "words"),
    [
        pytest.param(500, KubernetesUnavailableError, 503, "answered 500", id="500"),
        pytest.param(503, KubernetesUnavailableError, 503, "answered 503", id="503"),
        pytest.param(429, KubernetesUnavailableError, 503, "answered 429", id="429"),
        pytest.param(403, KubernetesUnavailableError, 503, "needs create, get and patch", id="403"),
        pytest.param(404, KubernetesError, 500, "CRD installed", id="404-no-crd"),
        pytest.param(400, KubernetesError, 500, "rejected it", id="400"),
    ],
)
async def test_ensure_turns_an_api_error_into_a_denial(
    fake: FakeKube,
    store: KubernetesSpcStore,
    status: int,
    error: type[KubernetesError],
    code: int,
    words: str,
) -> None:
    fake.fail(SPC_PATH, status=status, method="POST")
    with pytest.raises(error) as caught:
        await store.ensure(NS, [VAULT_SPC], REPLICA_SET)
    assert type(caught.value) is error
    assert caught.value.code == code
    assert words in caught.value.message
    assert f"SecretProviderClass {NS}/{VAULT_SPC['metadata']['name']}" in caught.value.message
    await store.ensure(NS, [VAULT_SPC], REPLICA_SET)  # nothing cached from the failure
    assert fake.get(SPC, VAULT_SPC["metadata"]["name"], NS) is not None


async def test_ensure_denies_for_a_missing_namespace(store: KubernetesSpcStore) -> None:
    with pytest.raises(KubernetesError, match='namespaces "gone" not found') as caught:
        await store.ensure("gone", [VAULT_SPC])
    assert caught.value.code == 500


async def test_ensure_denies_an_spc_the_crd_schema_rejects(store: KubernetesSpcStore) -> None:
    broken = spc_named("secret-injector-vault-broken")
    broken["spec"]["parameters"]["objects"] = ["not", "a", "string"]
    with pytest.raises(KubernetesError, match="422 Invalid") as caught:
        await store.ensure(NS, [broken])
    assert caught.value.code == 500


async def test_ensure_gives_up_at_the_deadline(fake: FakeKube, settings: Settings) -> None:
    fake.hang(SPC_PATH, seconds=60)  # released when the fake closes
    store = open_spc_store(
        replace(settings, kubernetes=replace(settings.kubernetes, timeout_seconds=0.5))
    )
    assert store is not None
    try:
        with pytest.raises(KubernetesUnavailableError, match=r"did not answer within 0\.5s") as err:
            # Only a safety net against a hung suite; the store's own deadline is 0.5 s.
            await asyncio.wait_for(store.ensure(NS, [VAULT_SPC]), timeout=30)
    finally:
        await store.close()
    assert err.value.code == 503


async def test_ensure_reports_an_unreachable_api(tmp_path: Path) -> None:
    async with FakeKube() as gone:
        kubeconfig = gone.kubeconfig(tmp_path / "kubeconfig")
    store = open_spc_store(Settings(kubernetes=Kubernetes(kubeconfig=str(kubeconfig))))
    assert store is not None
    try:
        with pytest.raises(KubernetesUnavailableError, match="unreachable"):
            await store.ensure(NS, [VAULT_SPC])
    finally:
        await store.close()


@pytest.fixture
def no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither in a cluster nor with a kubeconfig anywhere."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.mark.usefixtures("no_cluster")
@pytest.mark.parametrize(
    "kubernetes",
    [
        pytest.param(Kubernetes(), id="no-config"),
        pytest.param(Kubernetes(kubeconfig="/nonexistent/kubeconfig"), id="missing-kubeconfig"),
    ],
)
def test_open_spc_store_is_none_without_api_config(kubernetes: Kubernetes) -> None:
    assert open_spc_store(Settings(kubernetes=kubernetes)) is None


async def test_open_spc_store_is_none_when_spcs_are_not_managed(settings: Settings) -> None:
    unmanaged = replace(
        settings, kubernetes=replace(settings.kubernetes, manage_secret_provider_classes=False)
    )
    assert open_spc_store(unmanaged) is None


async def test_open_spc_store_finds_kubeconfig_from_the_environment(
    fake: FakeKube, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "config")))
    store = open_spc_store(Settings())
    assert store is not None
    try:
        await store.ensure(NS, [VAULT_SPC])
    finally:
        await store.close()
    assert fake.count("POST", SPC_PATH) == 1


def test_open_spc_store_in_a_cluster_without_token_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(ConfigError, match="Kubernetes API configuration"):
        open_spc_store(Settings())
