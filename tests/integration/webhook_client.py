"""An HTTPS client for the webhook under test, and its metrics port."""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Any

import aiohttp

from webhook.app import Server

Body = bytes | AsyncIterable[bytes] | dict[str, Any] | list[Any]


class Client:
    """An HTTPS session to the server under test, and its metrics port."""

    def __init__(self, session: aiohttp.ClientSession, server: Server) -> None:
        self.session = session
        self.server = server

    async def post(
        self,
        path: str,
        body: bytes | AsyncIterable[bytes] | dict[str, Any] | list[Any],
        **kwargs: Any,
    ) -> tuple[int, Any]:
        """POST and return (HTTP status, decoded JSON body); bytes are sent as JSON."""
        if not isinstance(body, dict | list):
            kwargs.setdefault("headers", {"Content-Type": "application/json"})
            response = await self.session.post(path, data=body, **kwargs)
        else:
            response = await self.session.post(path, json=body, **kwargs)
        async with response:
            return response.status, await response.json(content_type=None)

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(path) as response:
            return response.status, await response.json(content_type=None)

    async def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.server.metrics_port}/metrics"
        async with self.session.get(url) as response:
            assert response.status == 200
            return await response.text()
