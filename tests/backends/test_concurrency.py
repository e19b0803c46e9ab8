"""Concurrent reviews of one new reference make one backend call (single-flight + cache).

Counted where the calls land: OpenBao's audit log, boto3's own event hooks on the real
clients, and the backend-request metric.
"""

from __future__ import annotations

import asyncio

import boto3
import pytest

from tests.backends.builders import (
    PREFIX,
    VaultWorld,
    VerifierFactory,
    admission_request,
    backend_calls,
    injection,
    make_settings,
    pod_with,
    sample,
    unique,
)
from tests.servers import MotoServer
from webhook.errors import SecretNotFoundError
from webhook.metrics import Metrics
from webhook.refs import AwsSecretRef, VaultRef
from webhook.verification import open_verifier

REVIEWS = 50


@pytest.mark.parametrize("exists", [True, False], ids=["existing", "missing"])
async def test_fifty_reviews_of_one_new_vault_reference_make_one_call(
    vault_world: VaultWorld, make_verifier: VerifierFactory, metrics: Metrics, exists: bool
) -> None:
    name = unique("concurrent")
    if exists:
        vault_world.server.client().secrets.kv.v2.create_or_update_secret(
            path=f"prod/{name}", secret={"k": "v"}
        )
    verifier = make_verifier(make_settings(mode="warn", vault=vault_world.provider()))
    ref = VaultRef(f"secret/data/prod/{name}", "k")
    pod = pod_with(injection("env.K", ref))
    answers = await asyncio.gather(
        *(verifier.verify(admission_request(), pod) for _ in range(REVIEWS))
    )
    expected = [] if exists else [f"{PREFIX}env.K: {ref}: secret not found"]
    assert answers == [expected] * REVIEWS
    metadata_reads = [
        path
        for _, path in vault_world.server.audited_paths()
        if path == f"secret/metadata/prod/{name}"
    ]
    assert len(metadata_reads) == 1
    assert backend_calls(metrics, "vault") == 1
    lookups = "secret_injector_verify_cache_lookups_total"
    assert sample(metrics, lookups, result="miss") == 1
    assert sample(metrics, lookups, result="hit") == REVIEWS - 1
    # And the answer is cached for the reviews that come later.
    await verifier.verify(admission_request(), pod)
    assert backend_calls(metrics, "vault") == 1


async def test_fifty_reviews_of_one_new_aws_reference_make_one_call(
    aws_env: MotoServer, metrics: Metrics
) -> None:
    name = unique("concurrent")
    aws_env.client("secretsmanager").create_secret(Name=name, SecretString="x")
    sent: list[str] = []
    session = boto3.Session()
    session.events.register(
        "before-call.secrets-manager.DescribeSecret", lambda **kwargs: sent.append(name)
    )
    verifier = open_verifier(make_settings(mode="enforce"), metrics, aws_session=session)
    assert verifier is not None
    try:
        pod = pod_with(injection("file.db", AwsSecretRef(name)))
        answers = await asyncio.gather(
            *(verifier.verify(admission_request(), pod) for _ in range(REVIEWS))
        )
    finally:
        await verifier.close()
    assert answers == [[]] * REVIEWS
    assert len(sent) == 1
    assert backend_calls(metrics, "aws-sm") == 1


async def test_the_pods_of_a_template_reuse_found_answers_until_the_first_expires(
    vault_world: VaultWorld, make_verifier: VerifierFactory, metrics: Metrics
) -> None:
    """Once every reference of a PodInjection (shared by the pods of a template) was
    found, its next pods are answered without looking each up, and counted as hits;
    when the first answer expires, the references are checked again."""
    names = [unique("template"), unique("template")]
    client = vault_world.server.client()
    for name in names:
        client.secrets.kv.v2.create_or_update_secret(path=f"prod/{name}", secret={"k": "v"})
    ttl = 1.0
    verifier = make_verifier(
        make_settings(mode="enforce", vault=vault_world.provider(), cache_ttl_seconds=ttl)
    )
    pod = pod_with(
        *(
            injection(f"env.K{n}", VaultRef(f"secret/data/prod/{name}", "k"))
            for n, name in enumerate(names)
        )
    )
    lookups = "secret_injector_verify_cache_lookups_total"
    assert await verifier.verify(admission_request(), pod) == []
    assert (backend_calls(metrics, "vault"), sample(metrics, lookups, result="miss")) == (2, 2)
    for _ in range(5):
        assert await verifier.verify(admission_request(), pod) == []
    assert backend_calls(metrics, "vault") == 2
    assert sample(metrics, lookups, result="hit") == 10
    await asyncio.sleep(ttl + 0.1)
    client.secrets.kv.v2.delete_metadata_and_all_versions(path=f"prod/{names[1]}")
    with pytest.raises(SecretNotFoundError, match=names[1]):
        await verifier.verify(admission_request(), pod)
    assert backend_calls(metrics, "vault") == 4
