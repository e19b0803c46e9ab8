"""The fake API server answers like the real one: Status objects, resourceVersion, validation."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes.client import (
    ApiClient,
    ApiException,
    Configuration,
    CoreV1Api,
    V1ObjectMeta,
    V1Secret,
)

from tests.fake_kube import SECRET, FakeKube

SECRETS = "/api/v1/namespaces/team-a/secrets"
SPCS = "/apis/secrets-store.csi.x-k8s.io/v1/namespaces/team-a/secretproviderclasses"
MWC = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


def secret(name: str = "db", **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, **extra}


def mwc() -> dict[str, Any]:
    hook = {
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "clientConfig": {"url": "https://x"},
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "hooks"},
        "webhooks": [{"name": "a.example.com", **hook}, {"name": "b.example.com", **hook}],
    }


async def send(
    fake: FakeKube, method: str, path: str, body: Any = None, content_type: str = "application/json"
) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type}
        async with session.request(method, fake.url + path, data=data, headers=headers) as resp:
            return resp.status, await resp.json()


async def test_create_fills_server_metadata(fake: FakeKube) -> None:
    status, body = await send(fake, "POST", SECRETS, secret(stringData={"password": "x"}))
    assert status == 201
    meta = body["metadata"]
    assert meta["namespace"] == "team-a" and meta["uid"] and meta["resourceVersion"]
    assert meta["creationTimestamp"].endswith("Z")
    assert body["data"] == {"password": base64.b64encode(b"x").decode()}
    assert "stringData" not in body


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "reason", "details"),
    [
        pytest.param(
            "GET",
            SECRETS + "/nope",
            None,
            404,
            "NotFound",
            {"name": "nope", "kind": "secrets"},
            id="not-found",
        ),
        pytest.param(
            "POST",
            SECRETS,
            secret("existing"),
            409,
            "AlreadyExists",
            {"name": "existing", "kind": "secrets"},
            id="already-exists",
        ),
        pytest.param(
            "POST",
            "/api/v1/namespaces/gone/secrets",
            secret(),
            404,
            "NotFound",
            {"name": "gone", "kind": "namespaces"},
            id="no-namespace",
        ),
        pytest.param(
            "GET", "/apis/example.com/v1/widgets", None, 404, "NotFound", {}, id="no-such-resource"
        ),
    ],
)
async def test_errors_are_status_objects(
    fake: FakeKube,
    method: str,
    path: str,
    body: Any,
    code: int,
    reason: str,
    details: dict[str, Any],
) -> None:
    fake.seed({**secret("existing"), "metadata": {"name": "existing", "namespace": "team-a"}})
    status, answer = await send(fake, method, path, body)
    assert status == code
    assert (answer["kind"], answer["status"], answer["code"], answer["reason"]) == (
        "Status",
        "Failure",
        code,
        reason,
    )
    assert answer["details"] == details


async def test_update_with_a_stale_resource_version_is_a_conflict(fake: FakeKube) -> None:
    _, created = await send(fake, "POST", SECRETS, secret())
    status, updated = await send(fake, "PUT", SECRETS + "/db", {**created, "data": {"a": "YQ=="}})
    assert status == 200
    assert updated["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    status, answer = await send(fake, "PUT", SECRETS + "/db", created)
    assert (status, answer["reason"]) == (409, "Conflict")
    assert "the object has been modified" in answer["message"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        pytest.param(SECRETS, secret(data={"k": "not base64!"}), "data[k]", id="secret-base64"),
        pytest.param(
            SECRETS,
            secret(type="kubernetes.io/tls", data={}),
            "data[tls.crt]",
            id="tls-secret-keys",
        ),
        pytest.param(SECRETS, secret(bogus=1), "<root>", id="secret-unknown-field"),
        pytest.param(SECRETS, secret("Not_A_Name"), "metadata.name", id="bad-name"),
        pytest.param(
            SPCS,
            {
                "apiVersion": "secrets-store.csi.x-k8s.io/v1",
                "kind": "SecretProviderClass",
                "metadata": {"name": "x"},
                "spec": {"provider": "vault", "parameters": {"n": 1}},
            },
            "spec.parameters.n",
            id="spc-parameter-not-string",
        ),
        pytest.param(
            SPCS,
            {
                "apiVersion": "secrets-store.csi.x-k8s.io/v1",
                "kind": "SecretProviderClass",
                "metadata": {"name": "x", "labels": {"a": 1}},
                "spec": {},
            },
            "metadata.labels.a",
            id="spc-metadata",
        ),
    ],
)
async def test_invalid_objects_are_rejected_with_422(
    fake: FakeKube, path: str, body: dict[str, Any], field: str
) -> None:
    status, answer = await send(fake, "POST", path, body)
    assert (status, answer["reason"]) == (422, "Invalid")
    assert field in [cause["field"] for cause in answer["details"]["causes"]]


@pytest.mark.parametrize(
    ("content_type", "patch", "expected"),
    [
        pytest.param(
            "application/strategic-merge-patch+json",
            {"webhooks": [{"name": "b.example.com", "clientConfig": {"caBundle": "YQ=="}}]},
            [None, "YQ=="],
            id="strategic-merges-by-name",
        ),
        pytest.param(
            "application/merge-patch+json",
            {
                "webhooks": [
                    {
                        **mwc()["webhooks"][1],
                        "clientConfig": {"caBundle": "YQ==", "url": "https://x"},
                    }
                ]
            },
            ["YQ=="],
            id="merge-replaces-lists",
        ),
        pytest.param(
            "application/json-patch+json",
            [{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "YQ=="}],
            ["YQ==", None],
            id="json-patch",
        ),
    ],
)
async def test_patches_apply_as_the_client_sends_them(
    fake: FakeKube, content_type: str, patch: Any, expected: list[str | None]
) -> None:
    fake.seed(mwc())
    status, answer = await send(fake, "PATCH", MWC + "/hooks", patch, content_type)
    assert status == 200
    assert [h["clientConfig"].get("caBundle") for h in answer["webhooks"]] == expected


async def test_patch_with_a_stale_resource_version_is_a_conflict(fake: FakeKube) -> None:
    fake.seed(mwc())
    patch = {"metadata": {"resourceVersion": "1"}, "webhooks": []}
    status, answer = await send(
        fake, "PATCH", MWC + "/hooks", patch, "application/strategic-merge-patch+json"
    )
    assert (status, answer["reason"]) == (409, "Conflict")


async def test_custom_resources_refuse_strategic_merge_patch(fake: FakeKube) -> None:
    spc = {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "x"},
        "spec": {"provider": "vault"},
    }
    await send(fake, "POST", SPCS, spc)
    status, _ = await send(
        fake, "PATCH", SPCS + "/x", {"spec": {}}, "application/strategic-merge-patch+json"
    )
    assert status == 415


async def test_list_filters_by_label_selector(fake: FakeKube) -> None:
    for name, labels in (("a", {"tier": "db"}), ("b", {"tier": "web"}), ("c", {})):
        await send(fake, "POST", SECRETS, secret(name, metadata={"name": name, "labels": labels}))
    _, answer = await send(fake, "GET", SECRETS + "?labelSelector=tier%3Ddb")
    assert answer["kind"] == "SecretList"
    assert [item["metadata"]["name"] for item in answer["items"]] == ["a"]
    _, answer = await send(fake, "GET", SECRETS + "?labelSelector=tier,tier!%3Ddb")
    assert [item["metadata"]["name"] for item in answer["items"]] == ["b"]


async def test_faults_answer_the_next_matching_requests(fake: FakeKube) -> None:
    fake.fail("/secrets", status=503, times=2, method="GET")
    codes = [(await send(fake, "GET", SECRETS))[0] for _ in range(3)]
    assert codes == [503, 503, 200]
    assert fake.count("GET", "/secrets$") == 3


async def test_close_releases_a_hanging_request() -> None:
    fake = FakeKube()
    await fake.start()
    fake.hang("/namespaces", seconds=600)
    request = asyncio.create_task(send(fake, "GET", "/api/v1/namespaces/default"))
    await fake.wait_for(1)
    async with asyncio.timeout(30):  # a safety net: without the release, close waits 600 s
        await fake.close()
        with contextlib.suppress(aiohttp.ClientError):  # answered, or cut by the shutdown
            await request


def test_in_thread_serves_the_official_client() -> None:
    body = V1Secret(metadata=V1ObjectMeta(name="db"), string_data={"password": "x"})
    with FakeKube(namespaces=["team-a"]).in_thread() as fake:
        configuration = Configuration(host=fake.url)
        with ApiClient(configuration) as client:
            api = CoreV1Api(client)
            created = api.create_namespaced_secret("team-a", body)
            with pytest.raises(ApiException) as caught:
                api.create_namespaced_secret("team-a", body)
        assert created.metadata is not None and created.metadata.uid
        assert caught.value.status == 409
        assert fake.get(SECRET, "db", "team-a") is not None


def test_runs_as_a_subprocess_until_terminated(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fake_kube",
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            "team-a",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert url in kubeconfig.read_text()
        with ApiClient(Configuration(host=url)) as client:
            namespace = CoreV1Api(client).read_namespace("team-a")
        assert namespace.metadata is not None and namespace.metadata.name == "team-a"
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert process.returncode == 0
