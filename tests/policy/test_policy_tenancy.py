"""Tenancy against real backends: a real OpenBao and moto hold the secrets of two teams.

A team-a pod asking for team-b's *existing* secret is denied by policy before any backend
call (counted twice: by our metrics, and by OpenBao's own audit log); its own secret is
verified against the backend and injected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from tests.backends.builders import METADATA_ONLY_POLICY
from tests.conftest import PREFIX, make_pod, make_review
from tests.servers import BaoServer, MotoServer
from webhook import pipeline
from webhook.errors import AnnotationError, PolicyError, SecretNotFoundError
from webhook.metrics import Metrics
from webhook.policy import Policy
from webhook.review import parse_review
from webhook.settings import (
    AwsProvider,
    Providers,
    Settings,
    VaultAuth,
    VaultProvider,
    Verify,
)
from webhook.verification import open_verifier

TEAMS = ("team-a", "team-b")
BACKENDS = ("vault", "aws-sm", "aws-ssm")


@pytest.fixture(scope="module")
def vault_token_file(openbao: BaoServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both teams' secrets in KV v2, and the webhook's metadata-only token in a file."""
    root = openbao.client()
    for team in TEAMS:
        root.secrets.kv.v2.create_or_update_secret(
            path=f"{team}/db", secret={"password": f"{team}-value"}
        )
    root.sys.create_or_update_policy("policy-tests-metadata", METADATA_ONLY_POLICY)
    token = root.auth.token.create(policies=["policy-tests-metadata"], ttl="1h")
    path = tmp_path_factory.mktemp("policy-tenancy") / "token"
    path.write_text(token["auth"]["client_token"] + "\n")
    return path


@pytest.fixture(scope="module")
def aws_secrets(moto: MotoServer) -> None:
    """Both teams' secrets in Secrets Manager and Parameter Store."""
    sm, ssm = moto.client("secretsmanager"), moto.client("ssm")
    for team in TEAMS:
        name = f"{team}/policy-tenancy-db"
        if name not in {s["Name"] for s in sm.list_secrets()["SecretList"]}:
            sm.create_secret(Name=name, SecretString='{"password": "x"}')
        ssm.put_parameter(
            Name=f"/{team}/policy-tenancy-db", Value="x", Type="SecureString", Overwrite=True
        )


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def ctx(
    vault_token_file: Path,
    aws_secrets: None,
    aws_env: MotoServer,
    openbao: BaoServer,
    metrics: Metrics,
) -> AsyncIterator[pipeline.Context]:
    """The pipeline as `serve` builds it: default policy, real verifier (enforce)."""
    vault = VaultProvider(
        address=openbao.address, auth=VaultAuth(method="token", token_file=str(vault_token_file))
    )
    settings = Settings(
        providers=Providers(vault=vault, aws=AwsProvider(region="us-east-1")),
        verify=Verify(mode="enforce", timeout_seconds=5),
    )
    verifier = open_verifier(settings, metrics)
    assert verifier is not None
    try:
        yield pipeline.Context(settings, Policy(), verifier=verifier, metrics=metrics)
    finally:
        await verifier.close()


def backend_calls(metrics: Metrics) -> dict[str, float]:
    """Calls that reached each backend, whatever their result."""
    calls: dict[str, float] = {}
    for family in metrics.registry.collect():
        if family.name == "secret_injector_backend_requests":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.value:  # known series start at 0
                    backend = sample.labels["backend"]
                    calls[backend] = calls.get(backend, 0.0) + sample.value
    return calls


async def admit(ctx: pipeline.Context, namespace: str, reference: str) -> pipeline.Decision:
    pod = make_pod({PREFIX + "inject": "true", PREFIX + "file.db": reference}, namespace=namespace)
    return await pipeline.admit(parse_review(orjson.dumps(make_review(pod))), ctx)


OTHER_TEAM = {
    "vault": "vault:secret/data/team-b/db#password",
    "aws-sm": "aws-sm:team-b/policy-tenancy-db#password",
    "aws-ssm": "aws-ssm:/team-b/policy-tenancy-db",
}
OWN = {
    "vault": "vault:secret/data/team-a/db#password",
    "aws-sm": "aws-sm:team-a/policy-tenancy-db#password",
    "aws-ssm": "aws-ssm:/team-a/policy-tenancy-db",
}


@pytest.mark.parametrize("backend", BACKENDS)
async def test_tenancy_other_teams_existing_secret_is_denied_before_any_backend_call(
    ctx: pipeline.Context, metrics: Metrics, backend: str
) -> None:
    decision = await admit(ctx, "team-a", OTHER_TEAM[backend])
    assert isinstance(decision.denial, PolicyError)
    [line] = decision.denial.lines
    assert line.startswith(f"allowedRefs: {PREFIX}file.db: {OTHER_TEAM[backend].split('#')[0]}")
    assert backend_calls(metrics) == {}
    # The same reference is fine for its owner: the secret exists, policy made the difference.
    assert (await admit(ctx, "team-b", OTHER_TEAM[backend])).outcome == "injected"
    assert sum(backend_calls(metrics).values()) == 1.0


@pytest.mark.parametrize("backend", BACKENDS)
async def test_tenancy_own_secret_is_verified_and_injected(
    ctx: pipeline.Context, metrics: Metrics, backend: str
) -> None:
    decision = await admit(ctx, "team-a", OWN[backend])
    assert (decision.outcome, decision.denial, decision.warnings) == ("injected", None, [])
    assert backend_calls(metrics) == {backend: 1.0}


async def test_tenancy_own_missing_secret_reaches_the_backend_and_is_denied(
    ctx: pipeline.Context, metrics: Metrics
) -> None:
    decision = await admit(ctx, "team-a", "vault:secret/data/team-a/nope#password")
    assert isinstance(decision.denial, SecretNotFoundError)
    assert backend_calls(metrics) == {"vault": 1.0}


@pytest.mark.parametrize(
    "reference",
    [
        "vault:secret/data/team-a/../team-b/db#password",
        "vault:secret/data/team-a/%2e%2e/team-b/db#password",
        "vault:secret/data/team-a-b/db#password",
        "aws-sm:team-a/../team-b/policy-tenancy-db",
    ],
)
async def test_tenancy_escapes_are_denied_before_any_backend_call(
    ctx: pipeline.Context, metrics: Metrics, reference: str
) -> None:
    decision = await admit(ctx, "team-a", reference)
    assert isinstance(decision.denial, AnnotationError | PolicyError)
    assert backend_calls(metrics) == {}


async def test_tenancy_openbao_audit_log_shows_only_the_own_path(
    ctx: pipeline.Context, openbao: BaoServer
) -> None:
    """OpenBao's own audit log agrees: a team-a pod never made it ask about team-b."""
    before = len(openbao.audited_paths())
    assert (await admit(ctx, "team-a", OTHER_TEAM["vault"])).outcome == "denied"
    assert (await admit(ctx, "team-a", OWN["vault"])).outcome == "injected"
    paths = [path for _, path in openbao.audited_paths()[before:]]
    assert any("team-a/db" in path for path in paths)
    assert not any("team-b" in path for path in paths)
