"""Steady review load on a webhook from the test's own event loop, every answer recorded.

async with ReviewLoad(url, ssl_context, body_for, concurrency=6) as load:
    ...                      # break things, repair them
    await load.until(lambda o: o.injected and not o.warnings, after=repaired)
load.outcomes                # every review sent, in the order answered
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp

# A review that takes longer than this is a hang, whatever the configuration says.
CLIENT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """One review as the API server would have seen it."""

    sent: float  # time.monotonic() when it was sent
    seconds: float
    status: int  # HTTP status; 0 when the request itself failed
    error: str = ""  # the client error when status is 0
    allowed: bool | None = None
    code: int | None = None
    message: str = ""
    warnings: tuple[str, ...] = ()
    patch: tuple[dict[str, Any], ...] = ()

    def __str__(self) -> str:
        """One line for assertion messages (the patch left out)."""
        return (
            f"<{self.status} after {self.seconds:.2f}s allowed={self.allowed} code={self.code}"
            f" message={self.message[:160]!r} warnings={[w[:160] for w in self.warnings]}"
            f" patched={bool(self.patch)}{' error=' + self.error if self.error else ''}>"
        )

    @property
    def injected(self) -> bool:
        return self.status == 200 and bool(self.allowed) and bool(self.patch)


@dataclass(slots=True)
class ReviewLoad:
    """`concurrency` clients sending reviews back to back until the block ends."""

    url: str
    context: ssl.SSLContext
    body_for: Callable[[int], dict[str, Any]]  # review number -> AdmissionReview
    concurrency: int = 6
    fresh_connections: bool = False  # a new connection (and TLS handshake) per review
    outcomes: list[Outcome] = field(default_factory=list)
    _numbers: itertools.count[int] = field(default_factory=itertools.count)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _workers: list[asyncio.Task[None]] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ReviewLoad:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                ssl=self.context, limit=self.concurrency, force_close=self.fresh_connections
            ),
            timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT),
        )
        self._workers = [
            asyncio.create_task(self._work(), name=f"load-{i}") for i in range(self.concurrency)
        ]
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Let every review in flight finish, then close the connections."""
        self._stop.set()
        await asyncio.gather(*self._workers)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def until(
        self, condition: Callable[[Outcome], bool], *, after: float = 0.0, within: float = 20.0
    ) -> Outcome:
        """The first outcome sent after `after` (monotonic) that meets `condition`."""
        async with asyncio.timeout(within):
            while True:
                for outcome in self.outcomes:
                    if outcome.sent >= after and condition(outcome):
                        return outcome
                await asyncio.sleep(0.05)

    async def answer(self, number: int) -> Outcome:
        """Send review `number` alone, on a connection of its own, and return its outcome."""
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.context)) as s:
            self._session = s
            try:
                return await self._send(number)
            finally:
                self._session = None

    def since(self, moment: float) -> list[Outcome]:
        return [o for o in self.outcomes if o.sent >= moment]

    async def _work(self) -> None:
        while not self._stop.is_set():
            outcome = await self._send(next(self._numbers))
            self.outcomes.append(outcome)
            if outcome.status == 0:
                await asyncio.sleep(0.05)  # no busy loop on a refused connection

    async def _send(self, number: int) -> Outcome:
        assert self._session is not None
        body = self.body_for(number)
        sent = time.monotonic()
        try:
            async with self._session.post(self.url, json=body) as response:
                status, data = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Outcome(sent, time.monotonic() - sent, 0, error=repr(exc))
        return _decode(sent, time.monotonic() - sent, status, data)


def _decode(sent: float, seconds: float, status: int, data: bytes) -> Outcome:
    if status != 200:
        return Outcome(sent, seconds, status, message=data[:300].decode(errors="replace"))
    response = json.loads(data)["response"]
    patch: tuple[dict[str, Any], ...] = ()
    with contextlib.suppress(KeyError):
        patch = tuple(json.loads(base64.b64decode(response["patch"])))
    status_obj = response.get("status") or {}
    return Outcome(
        sent,
        seconds,
        status,
        allowed=response["allowed"],
        code=status_obj.get("code"),
        message=status_obj.get("message", ""),
        warnings=tuple(response.get("warnings", ())),
        patch=patch,
    )
