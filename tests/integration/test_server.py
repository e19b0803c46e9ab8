"""The server's lifecycle: health, readiness, the metrics port, graceful shutdown."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import replace

import aiohttp
import pytest

from tests.integration.reviews import admission_review, pod
from tests.integration.webhook_client import Client
from webhook import pipeline
from webhook.app import Server
from webhook.metrics import Metrics
from webhook.review import AdmissionRequest
from webhook.settings import Settings
from webhook.tls import ReloadingContext


async def test_healthz_and_readyz_answer_when_serving(client: Client) -> None:
    assert await client.get("/healthz") == (200, {"status": "ok"})
    assert await client.get("/readyz") == (200, {"status": "ready"})


async def test_metrics_are_served_on_their_own_plain_http_port(client: Client) -> None:
    text = await client.metrics()
    assert "secret_injector_certificate_expiry_timestamp_seconds" in text
    assert 'secret_injector_build_info{version="' in text
    assert client.server.metrics_port != client.server.port
    status, _ = await client.get("/metrics")  # not on the TLS port
    assert status == 404
    url = f"http://127.0.0.1:{client.server.metrics_port}/mutate"
    async with client.session.post(url, json={}) as response:  # no webhook on the metrics port
        assert response.status == 404
        assert (await response.json())["message"] == (
            "no endpoint /mutate; this server answers GET /metrics"
        )
    url = f"http://127.0.0.1:{client.server.metrics_port}/metrics"
    async with client.session.post(url) as response:
        assert (response.status, response.headers["Allow"]) == (405, "GET,HEAD")
        assert (await response.json())["code"] == 405


async def start(settings: Settings) -> Server:
    metrics = Metrics()
    server = Server(settings, metrics, ReloadingContext(settings.tls, metrics))
    await server.start()
    return server


async def test_shutdown_fails_readiness_first_then_stops_accepting(
    settings: Settings, client_ssl: ssl.SSLContext
) -> None:
    settings = replace(settings, listen=replace(settings.listen, shutdown_delay_seconds=0.5))
    server = await start(settings)
    url = f"https://localhost:{server.port}"
    connector = aiohttp.TCPConnector(ssl=client_ssl, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"{url}/readyz") as response:
            assert response.status == 200
        stopping = asyncio.create_task(server.stop())
        await asyncio.sleep(0.1)
        async with session.get(f"{url}/readyz") as response:
            assert response.status == 503
            assert (await response.json())["reasons"] == ["shutting down"]
        async with session.get(f"{url}/healthz") as response:
            assert response.status == 200  # alive while draining: no restart by the kubelet
        await stopping
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"{url}/healthz")


async def test_shutdown_finishes_in_flight_reviews(
    settings: Settings, client_ssl: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = asyncio.Event()
    real_admit = pipeline.admit

    async def slow_admit(req: AdmissionRequest, ctx: pipeline.Context) -> pipeline.Decision:
        started.set()
        await asyncio.sleep(0.5)
        return await real_admit(req, ctx)

    monkeypatch.setattr(pipeline, "admit", slow_admit)
    server = await start(settings)
    review = admission_review(pod(), operation="DELETE")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl)) as session:
        request = asyncio.create_task(
            session.post(f"https://localhost:{server.port}/mutate", json=review)
        )
        await started.wait()
        await server.stop()  # returns once the review above was answered
        response = await request
        async with response:
            assert response.status == 200
            assert (await response.json())["response"]["allowed"] is True
