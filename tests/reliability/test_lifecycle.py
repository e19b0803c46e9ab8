"""The serving process's life under load (`python -m webhook serve --config ...`, uvloop,
real certificates): SIGTERM fails readiness first, answers every review it accepted and
exits 0 within the grace period; a certificate and key replaced on disk are served to new
connections without one failed request, and a world-readable key is never loaded.

The reviews are verified against AWS (moto) through a delaying proxy, so each one spends a
quarter of a second in flight: shutting down then really has reviews to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import make_pod, make_review
from tests.reliability.load import Outcome, ReviewLoad
from tests.reliability.served import ServeProcess, python_env, write_config
from tests.servers import DelayingProxy, MotoServer
from webhook import certs

NAMESPACE = "team-a"
PREFIX = "secret-injector.io/"
BACKEND_DELAY = 0.25  # seconds each review waits for AWS
SHUTDOWN_DELAY = 1.0  # listen.shutdownDelaySeconds: readiness failing, still serving
SHUTDOWN_TIMEOUT = 4.0  # listen.shutdownTimeoutSeconds: to finish in-flight reviews
GRACE = SHUTDOWN_DELAY + SHUTDOWN_TIMEOUT  # what the chart's terminationGracePeriod covers
SLACK = 1.0
ROUTING_LAG = 0.5  # how long the "API server" keeps sending after readiness fails


@dataclass
class Aws:
    """Secrets Manager behind a delaying proxy, and the environment that points at it."""

    proxy: DelayingProxy
    secret: str
    late_secret: str  # referenced only by the reviews sent at the end of the shutdown delay
    env: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def slow_aws(moto: MotoServer, delaying_proxy: Callable[[str, int], DelayingProxy]) -> Aws:
    name = f"{NAMESPACE}/lifecycle-{uuid.uuid4().hex[:8]}"
    late = f"{name}-late"
    for secret in (name, late):
        moto.client("secretsmanager").create_secret(Name=secret, SecretString='{"key": "v"}')
    proxy = delaying_proxy("127.0.0.1", moto.port)
    proxy.delay = BACKEND_DELAY
    env = python_env(
        AWS_ENDPOINT_URL_SECRETS_MANAGER=proxy.address,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return Aws(proxy, name, late, env)


def review_for(secret: str) -> Callable[[int], dict[str, Any]]:
    def review(number: int) -> dict[str, Any]:
        pod = make_pod(
            {PREFIX + "inject": "true", PREFIX + "env.API_KEY": f"aws-sm:{secret}#key"},
            namespace=NAMESPACE,
        )
        return make_review(pod, uid=f"lifecycle-{number}")

    return review


def answered(outcome: Outcome) -> bool:
    """Answered as the API server wants: an AdmissionReview that injects (and verifies)."""
    return outcome.injected and not outcome.warnings


@contextlib.contextmanager
def serving(config: Path, env: dict[str, str]) -> Iterator[ServeProcess]:
    process = ServeProcess(config, env).start()
    try:
        yield process
    finally:
        process.stop()


@dataclass
class Readiness:
    """GET /readyz on a new connection every 50 ms: (monotonic time, status or error)."""

    url: str
    context: ssl.SSLContext
    seen: list[tuple[float, int | str]] = field(default_factory=list)

    async def poll(self, stop: asyncio.Event) -> None:
        connector = aiohttp.TCPConnector(ssl=self.context, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            while not stop.is_set():
                try:
                    async with session.get(self.url) as response:
                        self.seen.append((time.monotonic(), response.status))
                except aiohttp.ClientError as exc:
                    self.seen.append((time.monotonic(), type(exc).__name__))
                await asyncio.sleep(0.05)

    def first(self, what: Callable[[int | str], bool]) -> float:
        return next(t for t, status in self.seen if what(status))


async def send_at(moment: float, load: ReviewLoad, count: int = 4) -> list[Outcome]:
    """`count` reviews sent together at `moment` (monotonic), each on its own connection:
    reviews routed to the replica just before the endpoint update reached the API server,
    still in flight when the listener closes at the end of the shutdown delay."""
    await asyncio.sleep(max(0.0, moment - time.monotonic()))
    return list(await asyncio.gather(*(load.answer(1000 + n) for n in range(count))))


async def test_sigterm_under_load_fails_readiness_first_answers_every_review_and_exits_0(
    tmp_path: Path, slow_aws: Aws
) -> None:
    files, _ = certs.write_dev_certs(tmp_path / "certs")
    config = write_config(
        tmp_path / "config.yaml",
        files.cert,
        files.key,
        listen={
            "shutdownDelaySeconds": SHUTDOWN_DELAY,
            "shutdownTimeoutSeconds": SHUTDOWN_TIMEOUT,
        },
        verify={"mode": "enforce", "timeoutSeconds": 2, "cacheTTLSeconds": 0},
        providers={"aws": {"region": "us-east-1"}},
    )
    context = ssl.create_default_context(cafile=str(files.ca_cert))
    body_for = review_for(slow_aws.secret)
    with serving(config, slow_aws.env) as served:
        base = f"https://localhost:{served.port}"
        readiness = Readiness(f"{base}/readyz", context)
        stop_polling = asyncio.Event()
        poller = asyncio.create_task(readiness.poll(stop_polling))
        async with ReviewLoad(f"{base}/mutate", context, body_for, concurrency=6) as load:
            await load.until(answered)
            await asyncio.sleep(0.5)
            signalled = time.monotonic()
            served.signal()
            # Their own secret: concurrent checks of one reference share a backend call, and
            # joining one the load started earlier would answer them before the delay ends.
            late_body_for = review_for(slow_aws.late_secret)
            laggards = asyncio.create_task(
                send_at(
                    signalled + SHUTDOWN_DELAY - 0.15, ReviewLoad(load.url, context, late_body_for)
                )
            )
            # The API server stops sending here once the endpoint is gone (readiness).
            async with asyncio.timeout(5):
                while not any(status == 503 for _, status in readiness.seen):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            await asyncio.sleep(ROUTING_LAG)
            await load.stop()
            late = await laggards
            refused = await ReviewLoad(f"{base}/mutate", context, body_for).answer(99)
            refused_after = time.monotonic()
        code = await asyncio.to_thread(served.wait, GRACE + SLACK)
        exited = time.monotonic()
        stop_polling.set()
        await poller
    assert code == 0, served.stderr()
    assert exited - signalled < GRACE + SLACK
    # Readiness failed at once, while reviews were still answered.
    not_ready = readiness.first(lambda status: status == 503)
    assert signalled <= not_ready < signalled + 0.5
    assert readiness.first(lambda status: isinstance(status, str)) > not_ready
    # Every review sent was answered, those in flight at shutdown included.
    outcomes = [*load.outcomes, *late]
    assert all(answered(o) for o in outcomes), [str(o) for o in outcomes if not answered(o)][:3]
    assert any(o.sent >= signalled for o in load.outcomes), "no review during the delay"
    assert all(o.sent + o.seconds > signalled + SHUTDOWN_DELAY for o in late)
    # The listener was closed before the process ended: no new connection.
    assert refused.status == 0 and "ClientConnectorError" in refused.error, str(refused)
    assert refused_after < exited
    assert served.stray == [], "only JSON lines on stdout"
    messages = [line["msg"] for line in served.lines]
    assert messages.index("signal received, shutting down") < messages.index("stopped")
