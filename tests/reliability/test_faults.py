"""Faults of the webhook's dependencies under load, against real servers: OpenBao killed and
restarted, AWS (moto) slowed beyond the deadline through a delaying TCP proxy, the
Kubernetes API (the in-repo fake) answering 500, 409 and not at all to SecretProviderClass
creation.

Every review is answered within its deadline (plus a generous slack: a behaviour, not a
benchmark) with the configured outcome (`verify.onBackendError`: warn or deny; a failed SPC
creation always denies with 503, "try again"); the service recovers by itself once the
dependency is back; no task is left on the loop and no descriptor open.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_pod, make_review
from tests.fake_kube import SPC, FakeKube
from tests.reliability.answers import FD_SLACK
from tests.reliability.conftest import serving_settings
from tests.reliability.load import Outcome, ReviewLoad
from tests.reliability.running import open_fds
from tests.servers import BaoServer, DelayingProxy, MotoServer
from webhook import certs
from webhook.app import Server
from webhook.metrics import Metrics
from webhook.settings import (
    AwsProvider,
    Kubernetes,
    OnBackendError,
    Providers,
    Settings,
    VaultAuth,
    VaultProvider,
    Verify,
)
from webhook.tls import ReloadingContext

NAMESPACE = "team-a"
PREFIX = "secret-injector.io/"
# verify.timeoutSeconds of these tests: the default (0.5 s was flaky on a busy 2-core machine)
DEADLINE = 1.0
KUBE_DEADLINE = 1.0  # kubernetes.timeoutSeconds (two calls per review to a slow fake)
SLACK = 1.0  # scheduling on a shared 2-core machine, not the dependency
BREAKER_RESET = 0.5
LOAD = 6  # concurrent reviews


def verify_settings(on_backend_error: OnBackendError) -> Verify:
    """No cache (every review asks the backend), a short deadline and breaker reset."""
    return Verify(
        mode="warn",
        timeout_seconds=DEADLINE,
        cache_ttl_seconds=0,
        negative_cache_ttl_seconds=0,
        on_backend_error=on_backend_error,
        breaker_failures=3,
        breaker_reset_seconds=BREAKER_RESET,
    )


def reviews(annotations: dict[str, str], owners: int = 3) -> Callable[[int], dict[str, Any]]:
    """Review number -> an opted-in Pod CREATE with its own uid, owned by one of `owners`
    ReplicaSets (pods of a few Deployments sharing one SecretProviderClass)."""

    def review(number: int) -> dict[str, Any]:
        pod = make_pod({PREFIX + "inject": "true", **annotations}, namespace=NAMESPACE)
        owner = number % owners
        pod["metadata"]["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": f"web-{owner}",
                "uid": f"rs-uid-{owner}",
                "controller": True,
            }
        ]
        return make_review(pod, uid=f"review-{number}")

    return review


async def warm_up(
    url: str,
    context: ssl.SSLContext,
    body_for: Callable[[int], dict[str, Any]],
    healthy: Callable[[Outcome], bool],
) -> None:
    """Load as the test will until `LOAD` answers in a row are `healthy`: clients, pools
    and connections are then open (the first calls of a fresh process are slow: boto3
    builds its clients, hvac and urllib3 open their pools). What stays open from then on
    is the baseline; what grows beyond it is a leak."""
    async with ReviewLoad(url, context, body_for, concurrency=LOAD) as warm:
        last = warm.outcomes
        assert await settled(lambda: len(last) >= LOAD and all(map(healthy, last[-LOAD:])), 20)


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Server]:
    metrics = Metrics()
    server = Server(settings, metrics, ReloadingContext(settings.tls, metrics))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def settled(condition: Callable[[], bool], within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@contextlib.asynccontextmanager
async def nothing_left_behind() -> AsyncIterator[None]:
    """Tasks of this loop and descriptors of this process, after as before the block."""
    tasks, fds = len(asyncio.all_tasks()), open_fds()
    yield
    assert await settled(lambda: len(asyncio.all_tasks()) <= tasks), [
        t.get_coro() for t in asyncio.all_tasks()
    ]
    assert await settled(lambda: open_fds() <= fds + FD_SLACK), f"fds {fds} -> {open_fds()}"


def assert_answered_in_time(outcomes: list[Outcome], deadline: float) -> None:
    assert outcomes, "no review was sent"
    failed = [o for o in outcomes if o.status != 200]
    assert not failed, [str(o) for o in failed[:3]]
    slowest = max(o.seconds for o in outcomes)
    assert slowest < deadline + SLACK, f"a review took {slowest:.2f}s (deadline {deadline}s)"


def is_backend_error_outcome(outcome: Outcome, on_backend_error: OnBackendError) -> bool:
    """The answer `onBackendError` asks for when the backend cannot tell."""
    if on_backend_error == "deny":
        return (
            outcome.allowed is False and outcome.code == 503 and "not verified" in outcome.message
        )
    return outcome.injected and any("not verified" in w for w in outcome.warnings)


def is_verified_injection(outcome: Outcome) -> bool:
    return outcome.injected and not outcome.warnings


def is_missing_warning(outcome: Outcome) -> bool:
    """verify.mode warn: a reference the backend says does not exist (yet)."""
    return outcome.injected and all("secret not found" in w for w in outcome.warnings)


def assert_outage_then_recovery(
    load: ReviewLoad,
    on_backend_error: OnBackendError,
    recovered: Outcome,
    empty: tuple[float, float] = (0.0, 0.0),
) -> None:
    """Every answer is a verified injection or the configured backend-error outcome (or,
    for reviews sent while the backend was `empty`, a not-found warning), there were some
    backend-error outcomes, and once `recovered` was answered only verified injections."""
    outcomes = load.outcomes
    odd = [
        o
        for o in outcomes
        if not (
            is_verified_injection(o)
            or is_backend_error_outcome(o, on_backend_error)
            or (empty[0] <= o.sent <= empty[1] and is_missing_warning(o))
        )
    ]
    assert not odd, [str(o) for o in odd[:3]]
    assert any(is_backend_error_outcome(o, on_backend_error) for o in outcomes)
    after = load.since(recovered.sent + recovered.seconds)
    assert after, "no review after recovery"
    assert all(is_verified_injection(o) for o in after), [
        str(o) for o in after if not is_verified_injection(o)
    ][:3]


def certs_context(cert_dir: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs.CertFiles.under(cert_dir).ca_cert))


@pytest.fixture
def cert_dir(tmp_path: Path) -> Path:
    files, _ = certs.write_dev_certs(tmp_path / "certs")
    return files.cert.parent


@pytest.mark.parametrize("on_backend_error", ["deny", "warn"])
async def test_openbao_killed_and_restarted_under_load(
    openbao_factory: Callable[..., BaoServer],
    cert_dir: Path,
    tmp_path: Path,
    on_backend_error: OnBackendError,
) -> None:
    bao = await asyncio.to_thread(openbao_factory)

    def seed() -> None:  # a restarted dev server is empty
        bao.client().secrets.kv.v2.create_or_update_secret(
            path=f"{NAMESPACE}/db", secret={"password": "not-read-by-the-webhook"}
        )

    await asyncio.to_thread(seed)
    token = tmp_path / "token"
    token.write_text("root\n")
    vault = VaultProvider(
        address=bao.address, auth=VaultAuth(method="token", token_file=str(token))
    )
    settings = serving_settings(
        cert_dir,
        providers=Providers(vault=vault, aws=AwsProvider(region="us-east-1")),
        verify=verify_settings(on_backend_error),
    )
    body_for = reviews({PREFIX + "file.db": f"vault:secret/data/{NAMESPACE}/db#password"})
    async with serving(settings) as server:
        url = f"https://localhost:{server.port}/mutate"
        context = certs_context(cert_dir)
        await warm_up(url, context, body_for, is_verified_injection)
        async with nothing_left_behind(), ReviewLoad(url, context, body_for, LOAD) as load:
            await load.until(is_verified_injection)
            assert bao.process is not None
            bao.process.kill()  # no goodbye: SIGKILL
            await asyncio.to_thread(bao.process.wait)
            killed = time.monotonic()
            await load.until(lambda o: is_backend_error_outcome(o, on_backend_error), after=killed)
            await asyncio.sleep(1.0)  # a while down, under load
            restarting = time.monotonic()
            await asyncio.to_thread(bao.start)  # same port, empty storage
            await asyncio.to_thread(seed)
            seeded = time.monotonic()
            recovered = await load.until(is_verified_injection, after=seeded)
            await asyncio.sleep(BREAKER_RESET + 1.0)
            await load.stop()
    assert_answered_in_time(load.outcomes, DEADLINE)
    assert_outage_then_recovery(load, on_backend_error, recovered, empty=(restarting, seeded))


@pytest.mark.parametrize("on_backend_error", ["deny", "warn"])
async def test_aws_slower_than_the_deadline_under_load(
    aws_env: MotoServer,
    delaying_proxy: Callable[[str, int], DelayingProxy],
    monkeypatch: pytest.MonkeyPatch,
    cert_dir: Path,
    on_backend_error: OnBackendError,
) -> None:
    proxy = delaying_proxy("127.0.0.1", aws_env.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", proxy.address)
    name = f"{NAMESPACE}/api-{on_backend_error}-{time.monotonic_ns()}"
    await asyncio.to_thread(
        aws_env.client("secretsmanager").create_secret, Name=name, SecretString='{"key": "v"}'
    )
    settings = serving_settings(
        cert_dir,
        providers=Providers(aws=AwsProvider(region="us-east-1")),
        verify=verify_settings(on_backend_error),
    )
    body_for = reviews({PREFIX + "env.API_KEY": f"aws-sm:{name}#key"})
    async with serving(settings) as server:
        url = f"https://localhost:{server.port}/mutate"
        context = certs_context(cert_dir)
        await warm_up(url, context, body_for, is_verified_injection)
        async with nothing_left_behind(), ReviewLoad(url, context, body_for, LOAD) as load:
            await load.until(is_verified_injection)
            proxy.delay = DEADLINE * 4
            slowed = time.monotonic()
            await load.until(lambda o: is_backend_error_outcome(o, on_backend_error), after=slowed)
            await asyncio.sleep(2.0)
            proxy.delay = 0.0
            # Bytes the proxy holds back still arrive late, and fail their calls (and may
            # open the breaker again): recovery is judged once they are through.
            settle = DEADLINE * 4 + BREAKER_RESET
            recovered = await load.until(is_verified_injection, after=time.monotonic() + settle)
            await asyncio.sleep(BREAKER_RESET + 1.0)
            await load.stop()
            await asyncio.sleep(DEADLINE * 4)  # the proxy's last delayed chunks
    assert_answered_in_time(load.outcomes, DEADLINE)
    assert_outage_then_recovery(load, on_backend_error, recovered)
    timeouts = [o for o in load.outcomes if "did not answer within" in " ".join(o.warnings)]
    assert timeouts or on_backend_error == "deny"


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        pytest.param("500", "answered 500 InternalError", id="500"),
        pytest.param("409", "answered 409 Conflict", id="409-conflict"),
        pytest.param("hang", "did not answer within", id="timeout"),
    ],
)
async def test_kubernetes_api_failing_spc_creation_under_load(
    cert_dir: Path, tmp_path: Path, fault: str, message: str
) -> None:
    # The fake API server has a thread and a loop of its own: this loop's tasks are ours.
    with FakeKube(namespaces=[NAMESPACE]).in_thread() as fake:
        kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig")
        kubernetes = Kubernetes(
            kubeconfig=str(kubeconfig),
            timeout_seconds=KUBE_DEADLINE,
            cache_ttl_seconds=0,  # every review asks the API server (POST, then GET)
        )
        settings = serving_settings(cert_dir, kubernetes=kubernetes)
        body_for = reviews({PREFIX + "file.db": f"vault:secret/data/{NAMESPACE}/db#password"})
        async with serving(settings) as server:
            url = f"https://localhost:{server.port}/mutate"
            context = certs_context(cert_dir)
            for owner in range(3):  # the SPC and its three owners, one at a time
                assert (await ReviewLoad(url, context, body_for).answer(owner)).injected
            await warm_up(url, context, body_for, lambda o: o.injected)
            async with nothing_left_behind(), ReviewLoad(url, context, body_for, LOAD) as load:
                await load.until(lambda o: o.injected)
                spc_creation = r"/secretproviderclasses$"
                if fault == "hang":
                    fake.hang(spc_creation, seconds=KUBE_DEADLINE * 2.5, times=8, method="POST")
                else:
                    fake.fail(spc_creation, status=int(fault), times=8, method="POST")
                broken = time.monotonic()
                await load.until(lambda o: o.allowed is False, after=broken)
                assert await settled(lambda: all(f.times == 0 for f in fake.faults))
                recovered = await load.until(lambda o: o.injected, after=time.monotonic())
                await asyncio.sleep(0.5)
                await load.stop()
                await asyncio.sleep(KUBE_DEADLINE * 2.5)  # hanging requests end at the fake
    assert_answered_in_time(load.outcomes, KUBE_DEADLINE)
    denied = [o for o in load.outcomes if not o.injected]
    assert denied, "the fault was never seen"
    for outcome in denied:
        assert (outcome.allowed, outcome.code) == (False, 503), str(outcome)
        assert message in outcome.message and "try again" in outcome.message, outcome.message
    assert all(o.injected for o in load.since(recovered.sent))
    spcs = fake.list(SPC, NAMESPACE)
    assert len(spcs) == 1, "one SPC, shared by every pod"
    owners = {ref["uid"] for ref in spcs[0]["metadata"]["ownerReferences"]}
    assert owners == {"rs-uid-0", "rs-uid-1", "rs-uid-2"}


async def test_pods_of_many_controllers_racing_for_one_spc_all_get_in_on_retry(
    cert_dir: Path, tmp_path: Path
) -> None:
    """The first pods of eight ReplicaSets whose pod templates share one SPC, all at once:
    each must add its owner to the same object (optimistic concurrency). Losers of that
    race are denied 503 "try again" in time, never admitted without the SPC; retried as a
    controller would, every pod gets in and the SPC ends up owned by all eight."""
    owners = 8
    with FakeKube(namespaces=[NAMESPACE]).in_thread() as fake:
        kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig")
        settings = serving_settings(
            cert_dir, kubernetes=Kubernetes(kubeconfig=str(kubeconfig), timeout_seconds=2.0)
        )
        body_for = reviews(
            {PREFIX + "file.db": f"vault:secret/data/{NAMESPACE}/db#password"}, owners=owners
        )
        async with serving(settings) as server:
            url = f"https://localhost:{server.port}/mutate"
            client = ReviewLoad(url, certs_context(cert_dir), body_for)
            waiting = list(range(owners))
            outcomes: list[Outcome] = []
            for _ in range(5):  # rounds of retries, as controllers back off and retry
                answers = await asyncio.gather(*(client.answer(n) for n in waiting))
                outcomes += answers
                waiting = [n for n, o in zip(waiting, answers, strict=True) if not o.injected]
                if not waiting:
                    break
    assert waiting == [], [str(o) for o in outcomes if not o.injected][:3]
    assert_answered_in_time(outcomes, 2.0)
    for outcome in outcomes:
        if not outcome.injected:
            assert (outcome.allowed, outcome.code) == (False, 503), str(outcome)
            assert "try again" in outcome.message, outcome.message
    (spc,) = fake.list(SPC, NAMESPACE)
    assert {ref["uid"] for ref in spc["metadata"]["ownerReferences"]} == {
        f"rs-uid-{n}" for n in range(owners)
    }
