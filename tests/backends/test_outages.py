"""Backends that die, stall or come back: every review is answered within the deadline, per
`onBackendError`, a failing backend stops costing time (circuit breaker), and service
resumes when the backend returns. Deadlines are asserted with slack: a behaviour, not a
benchmark."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from tests.backends.builders import (
    APPROLE_ROLE_ID,
    APPROLE_SECRET_ID,
    DEADLINE_SLACK,
    METADATA_ONLY_POLICY,
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
from tests.servers import BaoServer, DelayingProxy, MotoServer, free_port
from webhook.errors import BackendUnavailableError, SecretNotFoundError
from webhook.metrics import Metrics
from webhook.refs import AwsParameterRef, AwsSecretRef, PodInjection, SecretRef, VaultRef
from webhook.settings import OnBackendError, VaultAuth, VaultProvider

DEADLINE = 1.0
BREAKER_RESET = 0.4


def seed_approle_vault(server: BaoServer) -> None:
    """A (re)started dev server: the webhook's AppRole, and secret/app/a and app/b."""
    root = server.client()
    root.sys.create_or_update_policy("secret-injector-metadata", METADATA_ONLY_POLICY)
    root.sys.enable_auth_method("approle")
    root.write(
        "auth/approle/role/secret-injector",
        role_id=APPROLE_ROLE_ID,
        token_policies=["secret-injector-metadata"],
    )
    root.write("auth/approle/role/secret-injector/custom-secret-id", secret_id=APPROLE_SECRET_ID)
    for name in ("a", "b"):
        root.secrets.kv.v2.create_or_update_secret(path=f"app/{name}", secret={"k": "v"})


async def timed(review: Awaitable[list[str]]) -> tuple[list[str] | BackendUnavailableError, float]:
    """A review's warnings (or its denial) and how long it took to answer."""
    started = time.monotonic()
    try:
        outcome: list[str] | BackendUnavailableError = await review
    except BackendUnavailableError as denial:
        outcome = denial
    return outcome, time.monotonic() - started


def expected(
    on_backend_error: OnBackendError, ref: SecretRef, reason: str
) -> list[str] | tuple[int, str]:
    line = f"{PREFIX}file.x: {ref}: not verified: {reason}"
    return [line] if on_backend_error == "warn" else (503, line)


def shown(outcome: list[str] | BackendUnavailableError) -> list[str] | tuple[int, str]:
    if isinstance(outcome, BackendUnavailableError):
        return (outcome.code, outcome.message)
    return outcome


def single(ref: SecretRef) -> PodInjection:
    return pod_with(injection("file.x", ref))


@pytest.mark.parametrize("on_backend_error", ["warn", "deny"])
async def test_vault_stopped_mid_test_is_answered_in_time_and_service_resumes(
    openbao_factory: Callable[..., BaoServer],
    make_verifier: VerifierFactory,
    metrics: Metrics,
    on_backend_error: OnBackendError,
) -> None:
    server = openbao_factory()
    seed_approle_vault(server)
    secret_id_file = server.workdir / "secret-id"
    secret_id_file.write_text(APPROLE_SECRET_ID)
    auth = VaultAuth(method="approle", role_id=APPROLE_ROLE_ID, secret_id_file=str(secret_id_file))
    settings = make_settings(
        mode="enforce",
        on_backend_error=on_backend_error,
        vault=VaultProvider(address=server.address, auth=auth),
        timeout_seconds=DEADLINE,
        breaker_failures=2,
        breaker_reset_seconds=BREAKER_RESET,
    )
    verifier = make_verifier(settings)
    await verifier.wait_ready()
    a, b = VaultRef("secret/data/app/a", "k"), VaultRef("secret/data/app/b", "k")
    assert await verifier.verify(admission_request(), single(a)) == []

    server.stop()
    # What is cached is still answered: the pod is not held hostage by an outage.
    assert await verifier.verify(admission_request(), single(a)) == []
    for _ in range(2):
        outcome, took = await timed(verifier.verify(admission_request(), single(b)))
        assert took < DEADLINE + DEADLINE_SLACK
        assert shown(outcome) == expected(on_backend_error, b, "vault unreachable")
    calls = backend_calls(metrics, "vault")
    # Two failures in a row: the breaker is open, the next review costs no call at all.
    outcome, took = await timed(verifier.verify(admission_request(), single(b)))
    assert took < DEADLINE + DEADLINE_SLACK
    assert isinstance(outcome, BackendUnavailableError) == (on_backend_error == "deny")
    assert "not verified: vault is failing (2 failures in a row; next try in" in str(shown(outcome))
    assert backend_calls(metrics, "vault") == calls
    assert (
        sample(
            metrics,
            "secret_injector_backend_requests_total",
            backend="vault",
            result="circuit_open",
        )
        == 1
    )

    # Back, as a new dev server on the same port: empty storage, our old token unknown.
    server.start()
    seed_approle_vault(server)
    await asyncio.sleep(BREAKER_RESET)  # let the breaker allow its probe
    assert await verifier.verify(admission_request(), single(b)) == []
    missing = VaultRef("secret/data/app/c", "k")
    with pytest.raises(SecretNotFoundError, match="secret not found"):
        await verifier.verify(admission_request(), single(missing))


@pytest.mark.parametrize("on_backend_error", ["warn", "deny"])
async def test_vault_slower_than_the_deadline_is_answered_in_time_and_recovers(
    vault_world: VaultWorld,
    delaying_proxy: Callable[[str, int], DelayingProxy],
    make_verifier: VerifierFactory,
    metrics: Metrics,
    on_backend_error: OnBackendError,
) -> None:
    proxy = delaying_proxy("127.0.0.1", vault_world.server.port)
    auth = VaultAuth(method="token", token_file=str(vault_world.metadata_token_file))
    settings = make_settings(
        mode="enforce",
        on_backend_error=on_backend_error,
        vault=VaultProvider(address=proxy.address, auth=auth),
        timeout_seconds=DEADLINE,
        breaker_failures=2,
        breaker_reset_seconds=BREAKER_RESET,
    )
    verifier = make_verifier(settings)
    await verifier.wait_ready()
    assert await verifier.verify(admission_request(), single(VaultRef("kv1/prod/db", "k"))) == []

    proxy.delay = DEADLINE * 2
    slow = VaultRef(f"secret/data/{unique('slow')}", "k")
    for _ in range(2):
        outcome, took = await timed(verifier.verify(admission_request(), single(slow)))
        assert took < DEADLINE + DEADLINE_SLACK
        reason = f"vault did not answer within {DEADLINE:g}s"
        assert shown(outcome) == expected(on_backend_error, slow, reason)
    assert (
        sample(metrics, "secret_injector_backend_requests_total", backend="vault", result="timeout")
        == 2
    )
    # Open: a review of many references now costs no backend time at all.
    many = pod_with(
        *(injection(f"file.f{i}", VaultRef(f"secret/data/{unique('x')}", "k")) for i in range(5))
    )
    calls = backend_calls(metrics, "vault")
    outcome, took = await timed(verifier.verify(admission_request(), many))
    assert took < DEADLINE + DEADLINE_SLACK
    assert backend_calls(metrics, "vault") == calls
    assert len(shown(outcome) if isinstance(outcome, list) else outcome.lines) == 5

    proxy.delay = 0
    await asyncio.sleep(BREAKER_RESET)
    assert await verifier.verify(admission_request(), single(VaultRef("kv1/top", "k"))) == []
    with pytest.raises(SecretNotFoundError, match="secret not found"):
        await verifier.verify(admission_request(), single(slow))


async def test_many_slow_references_share_one_deadline(
    vault_world: VaultWorld,
    delaying_proxy: Callable[[str, int], DelayingProxy],
    make_verifier: VerifierFactory,
) -> None:
    """Checks run concurrently: ten slow references take one deadline, not ten."""
    proxy = delaying_proxy("127.0.0.1", vault_world.server.port)
    auth = VaultAuth(method="token", token_file=str(vault_world.metadata_token_file))
    verifier = make_verifier(
        make_settings(
            mode="warn",
            vault=VaultProvider(address=proxy.address, auth=auth),
            timeout_seconds=DEADLINE,
            breaker_failures=100,
        )
    )
    await verifier.wait_ready()
    proxy.delay = DEADLINE * 2
    pod = pod_with(
        *(injection(f"file.f{i}", VaultRef(f"secret/data/{unique('s')}", "k")) for i in range(10))
    )
    warnings, took = await timed(verifier.verify(admission_request(), pod))
    assert took < DEADLINE + DEADLINE_SLACK
    assert isinstance(warnings, list) and len(warnings) == 10
    assert all(
        w.endswith(f"not verified: vault did not answer within {DEADLINE:g}s") for w in warnings
    )


@pytest.mark.parametrize("on_backend_error", ["warn", "deny"])
async def test_aws_slower_than_the_deadline_is_answered_in_time(
    aws_env: MotoServer,
    delaying_proxy: Callable[[str, int], DelayingProxy],
    make_verifier: VerifierFactory,
    monkeypatch: pytest.MonkeyPatch,
    on_backend_error: OnBackendError,
) -> None:
    name = unique("slow-aws")
    aws_env.client("secretsmanager").create_secret(Name=name, SecretString="x")
    proxy = delaying_proxy("127.0.0.1", aws_env.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", proxy.address)
    verifier = make_verifier(
        make_settings(
            mode="enforce",
            on_backend_error=on_backend_error,
            timeout_seconds=DEADLINE,
            breaker_failures=1,
            breaker_reset_seconds=BREAKER_RESET,
        )
    )
    await verifier.wait_ready()
    ref = AwsSecretRef(name)
    proxy.delay = DEADLINE * 2
    outcome, took = await timed(verifier.verify(admission_request(), single(ref)))
    assert took < DEADLINE + DEADLINE_SLACK
    reason = f"aws-sm did not answer within {DEADLINE:g}s"
    assert shown(outcome) == expected(on_backend_error, ref, reason)
    proxy.delay = 0
    await asyncio.sleep(BREAKER_RESET)
    assert await verifier.verify(admission_request(), single(ref)) == []


async def test_aws_unreachable_endpoint_is_a_quick_backend_error(
    aws_env: MotoServer,
    make_verifier: VerifierFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", f"http://127.0.0.1:{free_port()}")
    settings = make_settings(mode="enforce", on_backend_error="deny", timeout_seconds=DEADLINE)
    verifier = make_verifier(settings)
    await verifier.wait_ready()
    ref = AwsParameterRef("/app/db")
    outcome, took = await timed(verifier.verify(admission_request(), single(ref)))
    assert took < DEADLINE + DEADLINE_SLACK
    assert shown(outcome) == expected("deny", ref, "aws-ssm unreachable")
