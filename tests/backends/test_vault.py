"""Verification of `vault:` references against a real OpenBao, with a metadata-only identity."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import hvac
import hvac.exceptions
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
)
from tests.servers import BaoServer, TokenReviewServer, make_service_account_jwt
from webhook.errors import BackendUnavailableError, SecretNotFoundError
from webhook.metrics import Metrics
from webhook.refs import VaultRef
from webhook.settings import OnBackendError, VaultAuth, VaultProvider, VerifyMode

ANNOTATION = PREFIX + "env.DB_PASSWORD"

EXISTENCE_CASES = [
    pytest.param(VaultRef("secret/data/prod/db", "password"), None, id="kv2-exists"),
    pytest.param(
        VaultRef("secret/data/prod/db", "no-such-key"),
        None,  # keys live inside the value: metadata cannot tell, so it is not checked
        id="kv2-key-not-checked",
    ),
    pytest.param(
        VaultRef("secret/data/prod/nope", "password"), "secret not found", id="kv2-missing"
    ),
    pytest.param(
        VaultRef("secret/data/prod/versions", "password", version=3), None, id="kv2-version"
    ),
    pytest.param(
        VaultRef("secret/data/prod/versions", "password", version=9),
        "version 9 not found (current is 3)",
        id="kv2-wrong-version",
    ),
    pytest.param(
        VaultRef("secret/data/prod/versions", "password", version=2),
        "version 2 is deleted",
        id="kv2-deleted-version",
    ),
    pytest.param(
        VaultRef("secret/data/prod/versions", "password", version=1),
        "version 1 is destroyed",
        id="kv2-destroyed-version",
    ),
    pytest.param(
        VaultRef("secret/data/prod/gone", "password"),
        "current version 1 is deleted",
        id="kv2-latest-deleted",
    ),
    pytest.param(
        VaultRef("secret/prod/db", "password"),
        "KV v2 paths need data/ after the mount: secret/data/",
        id="kv2-without-data",
    ),
    pytest.param(VaultRef("kv1/prod/db", "password"), None, id="kv1-exists"),
    pytest.param(VaultRef("kv1/top", "password"), None, id="kv1-at-mount-root"),
    pytest.param(VaultRef("kv1/prod/nope", "password"), "secret not found", id="kv1-missing"),
    pytest.param(VaultRef("kv1/nodir/db", "password"), "secret not found", id="kv1-no-parent"),
    pytest.param(VaultRef("kv1/prod", "password"), "secret not found", id="kv1-folder"),
]


@pytest.mark.parametrize(("ref", "problem"), EXISTENCE_CASES)
async def test_vault_reference_is_denied_when_missing_in_enforce_mode(
    vault_world: VaultWorld, make_verifier: VerifierFactory, ref: VaultRef, problem: str | None
) -> None:
    verifier = make_verifier(make_settings(mode="enforce", vault=vault_world.provider()))
    pod = pod_with(injection("env.DB_PASSWORD", ref))
    if problem is None:
        assert await verifier.verify(admission_request(), pod) == []
        return
    with pytest.raises(SecretNotFoundError) as denied:
        await verifier.verify(admission_request(), pod)
    assert denied.value.message == f"{ANNOTATION}: {ref}: {problem}"
    assert denied.value.code == 404


@pytest.mark.parametrize(("ref", "problem"), EXISTENCE_CASES)
async def test_vault_reference_is_a_warning_when_missing_in_warn_mode(
    vault_world: VaultWorld, make_verifier: VerifierFactory, ref: VaultRef, problem: str | None
) -> None:
    verifier = make_verifier(make_settings(mode="warn", vault=vault_world.provider()))
    warnings = await verifier.verify(
        admission_request(), pod_with(injection("env.DB_PASSWORD", ref))
    )
    assert warnings == ([] if problem is None else [f"{ANNOTATION}: {ref}: {problem}"])


def test_vault_metadata_identity_cannot_read_a_value(vault_world: VaultWorld) -> None:
    """The identity the tests give the webhook really is metadata-only: Vault says 403."""
    client = vault_world.server.client(token=vault_world.metadata_token)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v2.read_secret_version(path="prod/db", raise_on_deleted_version=True)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v1.read_secret(path="prod/db", mount_point="kv1")
    assert client.secrets.kv.v2.read_secret_metadata(path="prod/db")["data"]["current_version"]


async def test_vault_verification_sends_no_value_read_to_the_server(
    vault_world: VaultWorld, make_verifier: VerifierFactory
) -> None:
    """Per OpenBao's own audit log, verifying every kind of reference reads no data path."""
    before = len(vault_world.server.audited_paths())
    verifier = make_verifier(make_settings(mode="warn", vault=vault_world.provider()))
    pod = pod_with(
        *(injection(f"file.f{i}", case.values[0]) for i, case in enumerate(EXISTENCE_CASES))  # type: ignore[arg-type]
    )
    await verifier.verify(admission_request(), pod)
    calls = vault_world.server.audited_paths()[before:]
    assert calls, "the verifier made no call at all"
    value_reads = [
        (op, path)
        for op, path in calls
        if op == "read" and (path.startswith("secret/data/") or path.startswith("kv1/"))
    ]
    assert value_reads == []
    assert {op for op, _ in calls} <= {"read", "list"}


async def test_vault_keys_of_one_secret_make_one_call_and_one_line_each(
    vault_world: VaultWorld, make_verifier: VerifierFactory, metrics: Metrics
) -> None:
    verifier = make_verifier(make_settings(mode="warn", vault=vault_world.provider()))
    pod = pod_with(
        injection("env.USER", VaultRef("secret/data/prod/missing-pair", "user")),
        injection("env.PASS", VaultRef("secret/data/prod/missing-pair", "pass")),
    )
    warnings = await verifier.verify(admission_request(), pod)
    assert warnings == [
        f"{PREFIX}env.USER: vault:secret/data/prod/missing-pair#user: secret not found",
        f"{PREFIX}env.PASS: vault:secret/data/prod/missing-pair#pass: secret not found",
    ]
    assert backend_calls(metrics, "vault") == 1


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        pytest.param(
            "metadata",
            "not verified: vault refused the webhook's identity (permission denied)",
            id="without-sys-mounts",
        ),
        pytest.param("mounts", "no secrets engine is mounted at secrte/", id="with-sys-mounts"),
    ],
)
async def test_vault_mistyped_mount_is_found_out_when_sys_mounts_is_readable(
    vault_world: VaultWorld, make_verifier: VerifierFactory, token: str, expected: str
) -> None:
    token_file = (
        vault_world.metadata_token_file if token == "metadata" else vault_world.mounts_token_file
    )
    provider = vault_world.provider(token_file=str(token_file))
    verifier = make_verifier(make_settings(mode="warn", vault=provider))
    ref = VaultRef("secret/data/prod/db".replace("secret", "secrte"), "password")
    warnings = await verifier.verify(
        admission_request(), pod_with(injection("env.DB_PASSWORD", ref))
    )
    assert warnings == [f"{ANNOTATION}: {ref}: {expected}"]


@pytest.mark.parametrize(
    ("mode", "on_backend_error"),
    [("warn", "warn"), ("enforce", "warn"), ("warn", "deny"), ("enforce", "deny")],
)
async def test_vault_path_the_webhook_may_not_read_follows_on_backend_error(
    vault_world: VaultWorld,
    make_verifier: VerifierFactory,
    mode: VerifyMode,
    on_backend_error: OnBackendError,
) -> None:
    settings = make_settings(
        mode=mode, on_backend_error=on_backend_error, vault=vault_world.provider()
    )
    verifier = make_verifier(settings)
    ref = VaultRef("other/data/x", "password")
    line = (
        f"{ANNOTATION}: {ref}: not verified: vault refused the webhook's identity "
        "(permission denied)"
    )
    pod = pod_with(injection("env.DB_PASSWORD", ref))
    if on_backend_error == "warn":
        assert await verifier.verify(admission_request(), pod) == [line]
        return
    with pytest.raises(BackendUnavailableError) as denied:
        await verifier.verify(admission_request(), pod)
    assert (denied.value.code, denied.value.message) == (503, line)


async def test_vault_enforce_denial_lists_missing_and_unverified_references(
    vault_world: VaultWorld, make_verifier: VerifierFactory
) -> None:
    verifier = make_verifier(make_settings(mode="enforce", vault=vault_world.provider()))
    pod = pod_with(
        injection("env.A", VaultRef("secret/data/prod/db", "password")),
        injection("env.B", VaultRef("secret/data/prod/nope", "password")),
        injection("env.C", VaultRef("other/data/x", "password")),
    )
    with pytest.raises(SecretNotFoundError) as denied:
        await verifier.verify(admission_request(), pod)
    assert denied.value.lines == (
        f"{PREFIX}env.B: vault:secret/data/prod/nope#password: secret not found",
        f"{PREFIX}env.C: vault:other/data/x#password: not verified: vault refused the "
        "webhook's identity (permission denied)",
    )


async def test_vault_namespace_from_config_is_used(
    vault_world: VaultWorld, make_verifier: VerifierFactory
) -> None:
    ref = VaultRef("secret/data/app/db", "password")
    pod = pod_with(injection("env.DB_PASSWORD", ref))
    in_namespace = make_verifier(
        make_settings(mode="enforce", vault=vault_world.provider(namespace="team-a"))
    )
    assert await in_namespace.verify(admission_request(), pod) == []
    at_root = make_verifier(make_settings(mode="warn", vault=vault_world.provider()))
    assert await at_root.verify(admission_request(), pod) == [
        f"{ANNOTATION}: {ref}: secret not found"
    ]


async def test_vault_token_from_vault_token_variable(
    vault_world: VaultWorld, make_verifier: VerifierFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", vault_world.metadata_token)
    provider = vault_world.provider(token_file=None)
    verifier = make_verifier(make_settings(mode="enforce", vault=provider))
    pod = pod_with(injection("env.DB_PASSWORD", VaultRef("secret/data/prod/db", "password")))
    assert await verifier.verify(admission_request(), pod) == []


async def test_vault_approle_login_verifies(
    vault_world: VaultWorld, make_verifier: VerifierFactory
) -> None:
    provider = vault_world.provider(
        method="approle",
        token_file=None,
        role_id="secret-injector-role-id",
        secret_id_file=str(vault_world.secret_id_file),
    )
    verifier = make_verifier(make_settings(mode="enforce", vault=provider))
    pod = pod_with(injection("env.DB_PASSWORD", VaultRef("secret/data/prod/db", "password")))
    assert await verifier.verify(admission_request(), pod) == []
    missing = pod_with(injection("env.DB_PASSWORD", VaultRef("kv1/prod/nope", "password")))
    with pytest.raises(SecretNotFoundError):
        await verifier.verify(admission_request(), missing)


@pytest.mark.parametrize(
    ("auth", "reason"),
    [
        pytest.param(
            {"method": "approle", "role_id": "secret-injector-role-id", "secret_id_file": "{file}"},
            "vault refused the webhook's identity (approle login failed)",
            id="approle-wrong-secret-id",
        ),
        pytest.param(
            {"method": "token", "token_file": "{file}"},
            "vault refused the webhook's identity (permission denied)",
            id="token-unknown",
        ),
        pytest.param(
            {"method": "kubernetes", "service_account_token_file": "/nonexistent/token"},
            "vault cannot read serviceAccountTokenFile /nonexistent/token "
            "(No such file or directory)",
            id="kubernetes-no-token-file",
        ),
    ],
)
async def test_vault_refused_identity_is_a_backend_error(
    vault_world: VaultWorld,
    make_verifier: VerifierFactory,
    tmp_path: Path,
    auth: dict[str, str],
    reason: str,
) -> None:
    bogus = tmp_path / "bogus"
    bogus.write_text("not-a-credential\n")
    fields = {"token_file": None, **{k: v.format(file=bogus) for k, v in auth.items()}}
    settings = make_settings(
        mode="enforce", on_backend_error="deny", vault=vault_world.provider(**fields)
    )
    verifier = make_verifier(settings)
    ref = VaultRef("secret/data/prod/db", "password")
    with pytest.raises(BackendUnavailableError) as denied:
        await verifier.verify(admission_request(), pod_with(injection("env.DB_PASSWORD", ref)))
    assert denied.value.message == f"{ANNOTATION}: {ref}: not verified: {reason}"


async def test_vault_kubernetes_login_with_the_webhooks_service_account_token(
    vault_world: VaultWorld,
    make_verifier: VerifierFactory,
    token_review: TokenReviewServer,
    tmp_path: Path,
) -> None:
    """OpenBao's kubernetes auth method, asking a (fake) TokenReview API about our JWT."""
    mount = f"kubernetes-{time.monotonic_ns()}"
    root = vault_world.server.client()
    root.sys.enable_auth_method("kubernetes", path=mount)
    root.write(
        f"auth/{mount}/config",
        kubernetes_host=token_review.address,
        kubernetes_ca_cert=token_review.ca_file.read_text(),
        disable_local_ca_jwt=True,
    )
    root.write(
        f"auth/{mount}/role/secret-injector",
        bound_service_account_names=["secret-injector"],
        bound_service_account_namespaces=["secret-injector"],
        token_policies=["secret-injector-metadata"],
    )
    jwt = make_service_account_jwt("secret-injector", "secret-injector", "uid-1")
    token_review.accept(jwt, "secret-injector", "secret-injector", "uid-1")
    token_file = tmp_path / "token"
    token_file.write_text(jwt)
    provider = vault_world.provider(
        method="kubernetes",
        token_file=None,
        role="secret-injector",
        mount_path=mount,
        service_account_token_file=str(token_file),
    )
    verifier = make_verifier(make_settings(mode="enforce", vault=provider))
    pod = pod_with(injection("env.DB_PASSWORD", VaultRef("secret/data/prod/db", "password")))
    assert await verifier.verify(admission_request(), pod) == []
    assert token_review.reviews == 1
    # A service account the TokenReview API does not vouch for is refused.
    token_file.write_text(make_service_account_jwt("secret-injector", "secret-injector", "x"))
    stranger = make_verifier(make_settings(mode="enforce", on_backend_error="deny", vault=provider))
    with pytest.raises(BackendUnavailableError) as denied:
        await stranger.verify(admission_request(), pod)
    assert denied.value.message.endswith(
        "not verified: vault refused the webhook's identity (kubernetes login failed)"
    )


async def test_vault_tls_with_a_ca_file(
    openbao_factory: Callable[..., BaoServer],
    make_verifier: VerifierFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = openbao_factory(tls=True)
    server.client().secrets.kv.v2.create_or_update_secret(path="app", secret={"k": "v"})
    assert server.ca_file is not None
    for name in ("VAULT_CACERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VAULT_TOKEN", "root")
    ref = VaultRef("secret/data/app", "k")
    pod = pod_with(injection("env.K", ref))
    auth = VaultAuth(method="token", token_file=None)
    trusted = VaultProvider(address=server.address, ca_cert=str(server.ca_file), auth=auth)
    verifier = make_verifier(make_settings(mode="enforce", vault=trusted))
    assert await verifier.verify(admission_request(), pod) == []
    untrusted = VaultProvider(address=server.address, auth=auth)
    verifier = make_verifier(make_settings(mode="warn", vault=untrusted))
    assert await verifier.verify(admission_request(), pod) == [
        f"{PREFIX}env.K: {ref}: not verified: vault TLS handshake failed "
        "(check providers.vault.caCert)"
    ]


async def test_vault_without_an_address_is_a_backend_error(
    make_verifier: VerifierFactory,
) -> None:
    verifier = make_verifier(make_settings(mode="enforce", vault=VaultProvider(address=None)))
    ref = VaultRef("secret/data/prod/db", "password")
    assert await verifier.verify(admission_request(), pod_with(injection("env.X", ref))) == [
        f"{PREFIX}env.X: {ref}: not verified: vault address is not configured "
        "(providers.vault.address or VAULT_ADDR)"
    ]
