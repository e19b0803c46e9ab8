"""A webhook served from a thread of the test process, and what the tests measure about it.

`ThreadedWebhook` runs the real `app.Server` (TLS on 127.0.0.1 port 0, uvloop as in
production) on an event loop of its own in a thread, so synchronous hypothesis tests can
send it thousands of requests, and so the loop's tasks can be counted from outside.
`HttpsClient` is a small keep-alive HTTPS client (http.client) that never retries: a
dropped connection fails the test; `raw_exchange` speaks bytes over TLS for what no HTTP client
sends (truncated bodies, lying Content-Length).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from webhook.app import Server
from webhook.metrics import Metrics
from webhook.settings import Settings
from webhook.tls import ReloadingContext

T = TypeVar("T")

# A request that takes longer than this is a hang, whatever the input.
REQUEST_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float


def open_fds() -> int:
    """Open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


class ThreadedWebhook:
    """The webhook `Server` on its own event loop in a thread; `start()` then `stop()`."""

    def __init__(self, settings: Settings, ca_file: Path) -> None:
        self.settings = settings
        self.ca_file = ca_file
        self.metrics = Metrics()
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self._server: Server | None = None
        self.crashed: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        except BaseException as exc:  # recorded: the test asserts on it
            self.crashed = exc

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run `coroutine` on the webhook's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self) -> None:
        self._thread.start()

        async def start() -> Server:
            server = Server(
                self.settings, self.metrics, ReloadingContext(self.settings.tls, self.metrics)
            )
            await server.start()
            return server

        self._server = self.call(start())

    def stop(self) -> None:
        if self._server is not None:
            self.call(self._server.stop())

        async def cancel_the_rest() -> None:  # e.g. a connection aiohttp still lingers on
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.call(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()

    @property
    def server(self) -> Server:
        assert self._server is not None, "start() first"
        return self._server

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.loop.is_running()

    def tasks(self) -> int:
        """Tasks on the webhook's loop that are not done (the one counting them excluded)."""

        async def count() -> int:
            me = asyncio.current_task()
            return sum(1 for t in asyncio.all_tasks() if t is not me and not t.done())

        return self.call(count())

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def client(self) -> HttpsClient:
        return HttpsClient("localhost", self.port, self.client_context())

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@contextlib.contextmanager
def threaded_webhook(settings: Settings, ca_file: Path) -> Iterator[ThreadedWebhook]:
    webhook = ThreadedWebhook(settings, ca_file)
    webhook.start()
    try:
        yield webhook
    finally:
        webhook.stop()


class HttpsClient:
    """Keep-alive HTTPS requests to one server (a new connection after one is closed)."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext) -> None:
        self.host = host
        self.port = port
        self.context = context
        self._conn: http.client.HTTPSConnection | None = None

    def _connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(
                self.host, self.port, context=self.context, timeout=REQUEST_TIMEOUT
            )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """Send one request and read the whole answer. No retry: a connection the server
        drops instead of answering is a failure of the test (http.client raises)."""
        conn = self._connection()
        started = time.monotonic()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
        except BaseException:
            self.close()
            raise
        answer = Answer(
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            data,
            time.monotonic() - started,
        )
        if response.will_close:
            self.close()
        return answer

    def post(self, path: str, body: bytes, content_type: str | None = "application/json") -> Answer:
        headers = {"Content-Type": content_type} if content_type is not None else {}
        return self.request("POST", path, body, headers)


def raw_exchange(
    port: int,
    context: ssl.SSLContext,
    data: bytes,
    *,
    then: Callable[[ssl.SSLSocket], None] | None = None,
    timeout: float = REQUEST_TIMEOUT,
    until_closed: bool = False,
) -> bytes:
    """Send `data` over a new TLS connection, run `then` (e.g. hang up), and read until a
    whole response came (or, `until_closed`, until the server closes the connection) or
    `timeout` passed; returns what the server sent."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=timeout) as plain,
        context.wrap_socket(plain, server_hostname="localhost") as tls,
    ):
        tls.sendall(data)
        if then is not None:
            then(tls)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = tls.recv(65536)
            except (ssl.SSLError, ConnectionResetError, TimeoutError, OSError):
                break
            if not chunk:
                break
            received += chunk
            if not until_closed and _complete(received):
                break
        return received


def _complete(received: bytes) -> bool:
    """A whole HTTP response with a Content-Length is in `received`."""
    head, sep, body = received.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False
