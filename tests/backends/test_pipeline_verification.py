"""Verification inside the admission pipeline: after policy, before the patch, real servers."""

from __future__ import annotations

import orjson
import pytest

from tests.backends.builders import (
    VaultWorld,
    VerifierFactory,
    backend_calls,
    make_settings,
    unique,
)
from tests.conftest import PREFIX, make_pod, make_review
from tests.servers import MotoServer, free_port
from webhook import pipeline, policy
from webhook.metrics import Metrics
from webhook.review import parse_review
from webhook.settings import OnBackendError, Settings, VaultAuth, VaultProvider, VerifyMode
from webhook.verification import ReferenceVerifier


def review_of(annotations: dict[str, str], namespace: str = "prod") -> bytes:
    pod = make_pod({PREFIX + "inject": "true", **annotations}, namespace=namespace)
    return orjson.dumps(make_review(pod))


async def admit(body: bytes, settings: Settings, verifier: ReferenceVerifier) -> pipeline.Decision:
    ctx = pipeline.Context(settings=settings, policy=policy.Policy(), verifier=verifier)
    return await pipeline.admit(parse_review(body), ctx)


@pytest.mark.parametrize(
    ("path", "mode", "outcome", "message"),
    [
        pytest.param("prod/db", "enforce", "injected", None, id="exists"),
        pytest.param(
            "prod/nope",
            "enforce",
            "denied",
            f"{PREFIX}env.DB_PASSWORD: vault:secret/data/prod/nope#password: secret not found",
            id="missing-enforce",
        ),
        pytest.param(
            "prod/nope",
            "warn",
            "injected",
            f"{PREFIX}env.DB_PASSWORD: vault:secret/data/prod/nope#password: secret not found",
            id="missing-warn",
        ),
    ],
)
async def test_pipeline_verifies_vault_references(
    vault_world: VaultWorld,
    make_verifier: VerifierFactory,
    path: str,
    mode: VerifyMode,
    outcome: str,
    message: str | None,
) -> None:
    settings = make_settings(mode=mode, vault=vault_world.provider())
    body = review_of({PREFIX + "env.DB_PASSWORD": f"vault:secret/data/{path}#password"})
    decision = await admit(body, settings, make_verifier(settings))
    assert decision.outcome == outcome
    if outcome == "denied":
        assert decision.denial is not None
        assert (decision.denial.code, decision.denial.message) == (404, message)
        assert decision.patch == []
    else:
        assert decision.patch
        assert decision.warnings == ([] if message is None else [message])


async def test_pipeline_policy_runs_before_any_backend_call(
    vault_world: VaultWorld, make_verifier: VerifierFactory, metrics: Metrics
) -> None:
    """A namespace cannot probe another team's secrets: denied before Vault is asked."""
    settings = make_settings(mode="enforce", vault=vault_world.provider())
    body = review_of({PREFIX + "file.db": "vault:secret/data/payments/db#password"})
    before = len(vault_world.server.audited_paths())
    decision = await admit(body, settings, make_verifier(settings))
    assert decision.outcome == "denied"
    assert decision.denial is not None and decision.denial.code == 403
    assert backend_calls(metrics, "vault") == 0
    assert vault_world.server.audited_paths()[before:] == []


@pytest.mark.parametrize("on_backend_error", ["warn", "deny"])
async def test_pipeline_backend_down_follows_on_backend_error(
    make_verifier: VerifierFactory, on_backend_error: OnBackendError
) -> None:
    dead = VaultProvider(
        address=f"http://127.0.0.1:{free_port()}", auth=VaultAuth(method="token", token_file=None)
    )
    settings = make_settings(mode="enforce", on_backend_error=on_backend_error, vault=dead)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VAULT_TOKEN", "unused")
        body = review_of({PREFIX + "file.db": "vault:secret/data/prod/db#password"})
        decision = await admit(body, settings, make_verifier(settings))
    line = f"{PREFIX}file.db: vault:secret/data/prod/db#password: not verified: vault unreachable"
    if on_backend_error == "warn":
        assert (decision.outcome, decision.warnings) == ("injected", [line])
    else:
        assert decision.outcome == "denied" and decision.denial is not None
        assert (decision.denial.code, decision.denial.message) == (503, line)


async def test_pipeline_aws_region_annotation_is_used(
    aws_env: MotoServer, make_verifier: VerifierFactory
) -> None:
    name = f"prod/{unique('db')}"
    aws_env.client("secretsmanager", "eu-west-1").create_secret(Name=name, SecretString="x")
    aws_env.client("ssm", "eu-west-1").put_parameter(Name=f"/{name}", Value="x", Type="String")
    settings = make_settings(mode="enforce", aws_region="us-east-1")
    annotations = {
        PREFIX + "file.db": f"aws-sm:{name}",
        PREFIX + "file.param": f"aws-ssm:/{name}",
    }
    verifier = make_verifier(settings)
    in_eu = await admit(
        review_of({**annotations, PREFIX + "aws-region": "eu-west-1"}), settings, verifier
    )
    assert (in_eu.outcome, in_eu.warnings) == ("injected", [])
    in_us = await admit(review_of(annotations), settings, verifier)
    assert in_us.outcome == "denied" and in_us.denial is not None
    assert in_us.denial.lines == (
        f"{PREFIX}file.db: aws-sm:{name}: secret not found",
        f"{PREFIX}file.param: aws-ssm:/{name}: parameter not found",
    )
