"""The self-managed CA against the fake API server: one CA for all replicas, caBundle, renewal."""

from __future__ import annotations

import asyncio
import base64
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.fake_kube import MUTATING, SECRET, VALIDATING, FakeKube
from webhook.certs import cluster_names as service_names
from webhook.errors import ConfigError, KubernetesUnavailableError
from webhook.kube import open_api
from webhook.selfsigned import (
    MARKER,
    PUBLISH_DELAY,
    Bundle,
    Lifetimes,
    SelfManagedCa,
    issue_serving_cert,
    make_authority,
    open_self_managed_ca,
    renew,
)
from webhook.settings import SelfManagedTls, Settings, Tls

NS = "secret-injector"
SECRET_NAME = "secret-injector-tls"
SECRETS = rf"/namespaces/{NS}/secrets"
WEBHOOKS = r"webhookconfigurations/secret-injector$"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
LIFE = Lifetimes.of(SelfManagedTls())
NAMES = service_names("secret-injector", NS)


def webhook_configuration(kind: str, hooks: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": "secret-injector"},
        "webhooks": [
            {
                "name": hook,
                "admissionReviewVersions": ["v1"],
                "sideEffects": "NoneOnDryRun",
                "clientConfig": {
                    "service": {"name": "secret-injector", "namespace": NS, "path": "/mutate"}
                },
            }
            for hook in hooks
        ],
    }


@pytest.fixture
def configurations(fake: FakeKube) -> None:
    fake.seed(webhook_configuration("MutatingWebhookConfiguration", ["mutate.secret-injector.io"]))
    fake.seed(
        webhook_configuration(
            "ValidatingWebhookConfiguration",
            ["validate.secret-injector.io", "validate-env.secret-injector.io"],
        )
    )


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


Replica = Callable[..., SelfManagedCa]


@pytest.fixture
async def replica(
    settings: Settings, tmp_path: Path, clock: Clock, configurations: None
) -> AsyncIterator[Replica]:
    """Make replicas (each its own client and TLS directory) that share the fake and clock."""
    made: list[SelfManagedCa] = []

    def make(name: str = "a", **self_managed: Any) -> SelfManagedCa:
        conf = SelfManagedTls(
            enabled=True,
            namespace=NS,
            mutating_webhook_configurations=("secret-injector",),
            validating_webhook_configurations=("secret-injector",),
        )
        tls = Tls(
            cert_file=str(tmp_path / name / "tls.crt"),
            key_file=str(tmp_path / name / "tls.key"),
            self_managed=replace(conf, **self_managed),
        )
        api = open_api(settings)
        assert api is not None
        ca = SelfManagedCa(api, replace(settings, tls=tls), NS, clock)
        made.append(ca)
        return ca

    yield make
    for ca in made:
        await ca.close()


def ca_bundles(fake: FakeKube) -> list[str]:
    return [
        hook["clientConfig"].get("caBundle", "")
        for resource in (MUTATING, VALIDATING)
        for hook in (fake.get(resource, "secret-injector") or {})["webhooks"]
    ]


def served_cert(ca: SelfManagedCa) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(ca.tls.cert_file).read_bytes())


def key_mode(ca: SelfManagedCa) -> int:
    """The key file's mode; the key must also match the served certificate."""
    key = Path(ca.tls.key_file)
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert private.public_key() == served_cert(ca).public_key()
    return stat.S_IMODE(key.stat().st_mode)


def stored_bundle(fake: FakeKube) -> Bundle:
    secret = fake.get(SECRET, SECRET_NAME, NS)
    assert secret is not None
    return Bundle.from_secret_data(secret["data"])


async def test_replicas_racing_to_create_share_one_ca(fake: FakeKube, replica: Replica) -> None:
    first, second = replica("a"), replica("b")
    fake.hold(SECRETS, times=2, method="POST")  # both read "absent", then both create
    one, two = await asyncio.gather(first.sync(), second.sync())
    assert fake.count("POST", SECRETS) == 2
    assert len(fake.list(SECRET, NS)) == 1
    assert one.signer.cert == two.signer.cert == stored_bundle(fake).signer.cert
    assert one.cert == two.cert
    files = ("tls.crt", "tls.key")
    a, b = (Path(first.tls.cert_file).parent, Path(second.tls.cert_file).parent)
    assert [(a / f).read_bytes() for f in files] == [(b / f).read_bytes() for f in files]


async def test_replica_loads_the_secret_another_created(fake: FakeKube, replica: Replica) -> None:
    created = await replica("a").sync()
    loaded = await replica("b").sync()
    assert (loaded.signer.cert, loaded.cert, loaded.key.private_numbers()) == (
        created.signer.cert,
        created.cert,
        created.key.private_numbers(),
    )
    assert (fake.count("POST", SECRETS), fake.count("PUT", SECRETS)) == (1, 0)


async def test_secret_is_a_labelled_tls_secret(fake: FakeKube, replica: Replica) -> None:
    await replica().sync()
    secret = fake.get(SECRET, SECRET_NAME, NS)
    assert secret is not None
    assert secret["type"] == "kubernetes.io/tls"
    assert sorted(secret["data"]) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    assert secret["metadata"]["labels"] == {
        MARKER: "true",
        "app.kubernetes.io/managed-by": "secret-injector",
    }


async def test_files_hold_a_serving_pair_for_the_service(replica: Replica) -> None:
    ca = replica()
    bundle = await ca.sync()
    cert = served_cert(ca)
    assert key_mode(ca) == 0o600
    assert cert == bundle.cert
    cert.verify_directly_issued_by(bundle.signer.cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "secret-injector",
        "secret-injector.secret-injector",
        "secret-injector.secret-injector.svc",
        "secret-injector.secret-injector.svc.cluster.local",
    ]


async def test_ca_bundle_is_set_on_both_configurations_once(
    fake: FakeKube, replica: Replica
) -> None:
    first = replica("a")
    bundle = await first.sync()
    wanted = base64.b64encode(bundle.ca_bundle).decode()
    assert ca_bundles(fake) == [wanted] * 3
    assert first.in_sync
    assert fake.count("PATCH", WEBHOOKS) == 2
    await first.sync()
    await replica("b").sync()
    assert fake.count("PATCH", WEBHOOKS) == 2  # equal: not patched again


async def test_ca_bundle_patch_retries_after_a_conflict(fake: FakeKube, replica: Replica) -> None:
    fake.fail("mutatingwebhookconfigurations", status=409, method="PATCH")
    ca = replica()
    await ca.sync()
    assert ca.in_sync
    assert fake.count("PATCH", "mutatingwebhookconfigurations") == 2
    assert all(ca_bundles(fake))


async def test_ca_bundle_is_restored_after_it_was_reset(fake: FakeKube, replica: Replica) -> None:
    ca = replica()
    await ca.sync()
    config = fake.get(MUTATING, "secret-injector")
    assert config is not None
    del config["webhooks"][0]["clientConfig"]["caBundle"]  # e.g. an upgrade re-applied it
    fake.objects[(MUTATING.plural, "", "secret-injector")] = config
    await ca.sync()
    assert len(set(ca_bundles(fake))) == 1 and all(ca_bundles(fake))


async def test_missing_configuration_is_reported_not_fatal(
    fake: FakeKube, replica: Replica
) -> None:
    ca = replica(validating_webhook_configurations=("not-installed",))
    await ca.sync()
    assert not ca.in_sync
    assert fake.get(SECRET, SECRET_NAME, NS) is not None


async def test_serving_certificate_is_renewed_before_it_ends(
    fake: FakeKube, replica: Replica, clock: Clock
) -> None:
    ca = replica()
    first = await ca.sync()
    clock.now = T0 + LIFE.validity - LIFE.renew_before - timedelta(hours=1)
    assert (await ca.sync()).cert == first.cert
    assert fake.count("PUT", SECRETS) == 0
    clock.now = T0 + LIFE.validity - LIFE.renew_before + timedelta(hours=1)
    renewed = await ca.sync()
    assert renewed.cert != first.cert
    assert renewed.signer.cert == first.signer.cert
    assert stored_bundle(fake).cert == renewed.cert
    assert served_cert(ca) == renewed.cert
    assert fake.count("PUT", SECRETS) == 1
    assert fake.count("PATCH", WEBHOOKS) == 2  # same CA: caBundle untouched


async def test_replicas_racing_to_renew_agree_on_one_certificate(
    fake: FakeKube, replica: Replica, clock: Clock
) -> None:
    first, second = replica("a"), replica("b")
    await first.sync()
    await second.sync()
    clock.now = T0 + LIFE.validity - LIFE.renew_before + timedelta(hours=1)
    fake.hold(SECRETS, times=2, method="PUT")
    one, two = await asyncio.gather(first.sync(), second.sync())
    assert fake.count("PUT", SECRETS) == 2  # one wins, one gets 409 and loads the winner's
    assert one.cert == two.cert == stored_bundle(fake).cert


async def test_ca_near_its_end_is_succeeded_with_an_overlap(
    fake: FakeKube, replica: Replica, clock: Clock
) -> None:
    ca = replica()
    original = await ca.sync()
    ca_renewal = original.signer.cert.not_valid_after_utc - LIFE.ca_renew_before
    clock.now = ca_renewal - timedelta(days=1)  # serving certificate fresh from the old CA
    fresh = await ca.sync()
    assert fresh.signer.cert == original.signer.cert

    clock.now = ca_renewal + timedelta(minutes=1)
    overlap = await ca.sync()
    assert overlap.signer.cert != original.signer.cert
    assert overlap.trusted == (overlap.signer.cert, original.signer.cert)
    assert overlap.cert == fresh.cert  # still served from the old CA, which stays trusted
    assert ca_bundles(fake) == [base64.b64encode(overlap.ca_bundle).decode()] * 3

    clock.now = fresh.cert.not_valid_after_utc - LIFE.renew_before + timedelta(hours=1)
    moved = await ca.sync()
    moved.cert.verify_directly_issued_by(overlap.signer.cert)
    assert moved.trusted == overlap.trusted

    clock.now = original.signer.cert.not_valid_after_utc + timedelta(hours=1)
    final = await ca.sync()
    assert final.trusted == (overlap.signer.cert,)  # the expired CA left the bundle
    assert ca_bundles(fake) == [base64.b64encode(final.ca_bundle).decode()] * 3


async def test_a_foreign_secret_is_never_replaced(fake: FakeKube, replica: Replica) -> None:
    fake.seed(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET_NAME, "namespace": NS},
            "data": {"password": base64.b64encode(b"hunter2").decode()},
        }
    )
    with pytest.raises(ConfigError, match="is not a secret-injector CA") as caught:
        await replica().sync()
    assert "hunter2" not in str(caught.value)
    assert fake.count("PUT") == 0


async def test_an_empty_secret_marked_for_us_is_filled(fake: FakeKube, replica: Replica) -> None:
    fake.seed(  # as the chart may render it, so that RBAC needs no `create` on Secrets
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET_NAME, "namespace": NS, "labels": {MARKER: "true"}},
            "type": "Opaque",
        }
    )
    bundle = await replica().sync()
    secret = fake.get(SECRET, SECRET_NAME, NS)
    assert secret is not None
    assert secret["type"] == "Opaque"
    assert stored_bundle(fake).cert == bundle.cert
    assert (fake.count("POST", SECRETS), fake.count("PUT", SECRETS)) == (0, 1)


async def test_forbidden_secret_is_an_actionable_error(fake: FakeKube, replica: Replica) -> None:
    fake.fail(SECRETS, status=403, method="GET")
    with pytest.raises(KubernetesUnavailableError, match="needs get, create and update"):
        await replica().sync()


async def test_start_keeps_syncing_until_closed(fake: FakeKube, replica: Replica) -> None:
    ca = replica(check_interval_seconds=0.01)
    await ca.start()
    reads = fake.count("GET", SECRETS)
    async with asyncio.timeout(30):  # a safety net: the loop syncs every ~10 ms
        await fake.wait_for(reads + 2, "GET", SECRETS)
    await ca.close()
    after = fake.count("GET", SECRETS)
    await asyncio.sleep(0.05)
    assert fake.count("GET", SECRETS) == after


# ------------------------------------------------------------------ renew(), pure


def bundle_at(now: datetime, ca_now: datetime | None = None) -> Bundle:
    ca = make_authority(ca_now or now, LIFE.ca_validity)
    return Bundle(ca, (ca.cert,), *issue_serving_cert(ca, NAMES, now, LIFE.validity))


def test_renew_keeps_a_fresh_bundle() -> None:
    assert renew(bundle_at(T0), NAMES, T0 + timedelta(days=1), LIFE) is None


def test_renew_issues_at_once_for_other_names() -> None:
    bundle = bundle_at(T0)
    names = service_names("renamed", NS)
    renewed = renew(bundle, names, T0 + timedelta(days=1), LIFE)
    assert renewed is not None and renewed.signer == bundle.signer
    sans = renewed.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == names


def test_renew_issues_at_once_when_the_issuer_is_not_trusted() -> None:
    bundle = bundle_at(T0)
    stranger = bundle_at(T0)
    mixed = Bundle(bundle.signer, bundle.trusted, stranger.cert, stranger.key)
    renewed = renew(mixed, NAMES, T0 + timedelta(days=1), LIFE)
    assert renewed is not None
    renewed.cert.verify_directly_issued_by(bundle.signer.cert)


def test_renew_waits_for_a_new_ca_to_be_published_before_using_it() -> None:
    # The CA and the serving certificate fall due together.
    start = T0 - LIFE.ca_validity + LIFE.ca_renew_before
    bundle = bundle_at(T0 - LIFE.validity + LIFE.renew_before, ca_now=start)
    overlap = renew(bundle, NAMES, T0 + timedelta(minutes=1), LIFE)
    assert overlap is not None
    assert overlap.signer != bundle.signer and overlap.cert == bundle.cert
    later = renew(overlap, NAMES, T0 + PUBLISH_DELAY + timedelta(minutes=2), LIFE)
    assert later is not None
    later.cert.verify_directly_issued_by(overlap.signer.cert)


def test_serving_certificate_never_outlives_its_ca() -> None:
    ca_now = T0 - LIFE.ca_validity + timedelta(days=10)
    bundle = bundle_at(T0, ca_now=ca_now)
    assert bundle.cert.not_valid_after_utc == bundle.signer.cert.not_valid_after_utc


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({}, id="empty"),
        pytest.param({"ca.crt": "", "ca.key": "", "tls.crt": "", "tls.key": ""}, id="blank"),
        pytest.param(
            {"ca.crt": "bm90IGJhc2U2NA==", "ca.key": "!", "tls.crt": "", "tls.key": ""},
            id="garbage",
        ),
    ],
)
def test_bundle_from_unusable_secret_data_is_a_value_error(data: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        Bundle.from_secret_data(data)


def test_bundle_round_trips_through_secret_data() -> None:
    bundle = bundle_at(T0)
    again = Bundle.from_secret_data(bundle.secret_data())
    assert (again.signer.cert, again.trusted, again.cert) == (
        bundle.signer.cert,
        bundle.trusted,
        bundle.cert,
    )


# ------------------------------------------------------------------ open_self_managed_ca


def test_open_self_managed_ca_is_none_when_disabled() -> None:
    assert open_self_managed_ca(Settings()) is None


def test_open_self_managed_ca_needs_the_kubernetes_api(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    enabled = Settings(tls=Tls(self_managed=SelfManagedTls(enabled=True, namespace=NS)))
    with pytest.raises(ConfigError, match="needs the Kubernetes API"):
        open_self_managed_ca(enabled)


async def test_open_self_managed_ca_takes_the_namespace_from_the_pod(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "platform")
    enabled = replace(settings, tls=Tls(self_managed=SelfManagedTls(enabled=True)))
    ca = open_self_managed_ca(enabled)
    assert ca is not None
    await ca.close()
    assert ca.namespace == "platform"
    assert "secret-injector.platform.svc" in ca.names


async def test_unreachable_api_at_start_is_an_error_naming_the_secret(
    settings: Settings, tmp_path: Path
) -> None:
    async with FakeKube() as gone:
        kubeconfig = gone.kubeconfig(tmp_path / "gone")
    unreachable = replace(
        settings, kubernetes=replace(settings.kubernetes, kubeconfig=str(kubeconfig))
    )
    enabled = replace(unreachable, tls=Tls(self_managed=SelfManagedTls(enabled=True, namespace=NS)))
    ca = open_self_managed_ca(enabled)
    assert ca is not None
    try:
        with pytest.raises(
            KubernetesUnavailableError, match=f"Secret {NS}/{SECRET_NAME}: .*unreachable"
        ):
            await ca.start()
    finally:
        await ca.close()
