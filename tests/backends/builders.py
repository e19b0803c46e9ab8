"""Builders for the backend tests: pods, requests, settings, and a seeded OpenBao world."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import orjson

from tests.conftest import make_pod, make_review
from tests.servers import BaoServer
from webhook.metrics import Metrics
from webhook.refs import Injection, PodInjection, SecretRef
from webhook.review import AdmissionRequest, parse_review
from webhook.settings import (
    AwsProvider,
    OnBackendError,
    Providers,
    Settings,
    VaultAuth,
    VaultProvider,
    Verify,
    VerifyMode,
)
from webhook.verification import ReferenceVerifier

PREFIX = "secret-injector.io/"

# What the webhook's own Vault identity may do: read KV v2 metadata and list KV v1. No
# `read` on secret/data/* or kv1/*: it cannot read a value, and does not need to.
METADATA_ONLY_POLICY = """
path "secret/metadata/*" { capabilities = ["read", "list"] }
path "kv1/*" { capabilities = ["list"] }
path "team-a/secret/metadata/*" { capabilities = ["read"] }
"""
# The same, plus `read` on sys/mounts, which tells a mistyped mount from a forbidden one.
WITH_MOUNTS_POLICY = METADATA_ONLY_POLICY + 'path "sys/mounts" { capabilities = ["read"] }\n'

APPROLE_ROLE_ID = "secret-injector-role-id"
APPROLE_SECRET_ID = "secret-injector-secret-id"


def injection(key: str, ref: SecretRef) -> Injection:
    """`injection("env.DB_PASSWORD", ref)`: one annotation under our prefix."""
    delivery, _, target = key.partition(".")
    assert delivery in ("file", "env")
    return Injection(
        annotation=PREFIX + key,
        delivery="file" if delivery == "file" else "env",
        target=target,
        ref=ref,
    )


def pod_with(*injections: Injection, aws_region: str | None = None) -> PodInjection:
    return PodInjection(injections=tuple(injections), aws_region=aws_region)


def admission_request(namespace: str = "prod") -> AdmissionRequest:
    pod = make_pod(name="web", namespace=namespace)
    review = make_review(pod, uid="11111111-2222-3333-4444-555555555555", user="alice")
    return parse_review(orjson.dumps(review))


def make_settings(
    *,
    mode: VerifyMode = "enforce",
    on_backend_error: OnBackendError = "warn",
    vault: VaultProvider | None = None,
    aws_region: str | None = "us-east-1",
    **verify: Any,
) -> Settings:
    """Settings for a verifier; `verify` overrides Verify fields (timeout_seconds=0.5 ...).

    The deadline defaults to a generous 5 s: tests share two cores with other test runs,
    and only the tests about deadlines (which set their own) may depend on one.
    """
    verify.setdefault("timeout_seconds", 5.0)
    return Settings(
        providers=Providers(vault=vault or VaultProvider(), aws=AwsProvider(region=aws_region)),
        verify=Verify(mode=mode, on_backend_error=on_backend_error, **verify),
    )


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """A metric sample's value (0 when it was never recorded)."""
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def backend_calls(metrics: Metrics, backend: str) -> float:
    """Calls that reached `backend` (every result but circuit_open, which makes none)."""
    return sum(
        sample(metrics, "secret_injector_backend_requests_total", backend=backend, result=r)
        for r in ("found", "missing", "error", "timeout")
    )


@dataclass(frozen=True)
class VaultWorld:
    """The session OpenBao, seeded, with identities for the webhook."""

    server: BaoServer
    metadata_token_file: Path  # a token holding METADATA_ONLY_POLICY
    mounts_token_file: Path  # a token holding WITH_MOUNTS_POLICY
    metadata_token: str
    secret_id_file: Path

    def provider(self, namespace: str | None = None, **auth: Any) -> VaultProvider:
        """A VaultProvider for this server; token auth with the metadata-only token unless
        `auth` says otherwise (VaultAuth fields)."""
        fields = {"method": "token", "token_file": str(self.metadata_token_file), **auth}
        return VaultProvider(
            address=self.server.address, namespace=namespace, auth=VaultAuth(**fields)
        )


def seed_vault(server: BaoServer, workdir: Path) -> VaultWorld:
    """KV v2 at secret/ (the dev default), KV v1 at kv1/, AppRole, and webhook identities."""
    root = server.client()
    kv2 = root.secrets.kv.v2
    kv2.create_or_update_secret(path="prod/db", secret={"password": "s3cr3t-value"})
    # prod/versions: v1 destroyed, v2 deleted, v3 current.
    for n in range(3):
        kv2.create_or_update_secret(path="prod/versions", secret={"password": f"v{n + 1}"})
    kv2.destroy_secret_versions(path="prod/versions", versions=[1])
    kv2.delete_secret_versions(path="prod/versions", versions=[2])
    kv2.create_or_update_secret(path="prod/gone", secret={"password": "x"})
    kv2.delete_latest_version_of_secret(path="prod/gone")
    root.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
    root.secrets.kv.v1.create_or_update_secret(
        path="prod/db", secret={"password": "v1-value"}, mount_point="kv1"
    )
    root.secrets.kv.v1.create_or_update_secret(
        path="top", secret={"password": "v1-top"}, mount_point="kv1"
    )
    # A Vault Enterprise / OpenBao namespace with a KV v2 mount of its own.
    root.sys.create_namespace(path="team-a")
    team_a = server.client(namespace="team-a")
    team_a.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    _once_upgraded(
        lambda: team_a.secrets.kv.v2.create_or_update_secret(
            path="app/db", secret={"password": "ns"}
        )
    )
    # A KV v2 mount the webhook's identity may not use at all.
    root.sys.enable_secrets_engine("kv", path="other", options={"version": "2"})
    _once_upgraded(
        lambda: root.secrets.kv.v2.create_or_update_secret(
            path="x", secret={"password": "y"}, mount_point="other"
        )
    )
    root.sys.create_or_update_policy("secret-injector-metadata", METADATA_ONLY_POLICY)
    root.sys.create_or_update_policy("secret-injector-mounts", WITH_MOUNTS_POLICY)
    metadata_token = root.auth.token.create(policies=["secret-injector-metadata"], ttl="2h")
    mounts_token = root.auth.token.create(policies=["secret-injector-mounts"], ttl="2h")
    root.sys.enable_auth_method("approle")
    root.write(
        "auth/approle/role/secret-injector",
        role_id=APPROLE_ROLE_ID,
        token_policies=["secret-injector-metadata"],
        token_ttl="1h",
    )
    root.write("auth/approle/role/secret-injector/custom-secret-id", secret_id=APPROLE_SECRET_ID)
    workdir.mkdir(parents=True, exist_ok=True)
    files = {
        "metadata": metadata_token["auth"]["client_token"],
        "mounts": mounts_token["auth"]["client_token"],
        "secret-id": APPROLE_SECRET_ID,
    }
    for name, content in files.items():
        (workdir / name).write_text(content + "\n")
    return VaultWorld(
        server=server,
        metadata_token_file=workdir / "metadata",
        mounts_token_file=workdir / "mounts",
        metadata_token=files["metadata"],
        secret_id_file=workdir / "secret-id",
    )


def _once_upgraded(write: Callable[[], object], seconds: float = 30.0) -> None:
    """Run `write` on a KV v2 mount just enabled: the mount upgrades its storage in the
    background and refuses writes ("Upgrading from non-versioned to versioned data") until
    it is done, which takes longer on a busy machine."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            write()
            return
        except hvac.exceptions.InvalidRequest as exc:
            if "Upgrading from non-versioned" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


VerifierFactory = Callable[[Settings], ReferenceVerifier]


def unique(prefix: str) -> str:
    """A name no other test uses (the servers are shared by the whole session)."""
    return f"{prefix}-{time.monotonic_ns()}"


# Seconds beyond the configured deadline a review may take: scheduling, not the backend.
DEADLINE_SLACK = 0.5
