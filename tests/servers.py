"""Real backend servers for tests: OpenBao dev server, moto server, and a delaying TCP proxy.

Register with `pytest_plugins = ["tests.servers"]` in tests/conftest.py. Fixtures:

- `openbao`: a session-wide `bao server -dev` (root token `root`) with a file audit device,
  so tests can see which API paths were called (`openbao.audited_paths()`);
- `openbao_factory`: starts more, private OpenBao servers (stopped after the test), e.g. to
  stop and restart one mid-test;
- `moto`: a session-wide `moto_server` (Secrets Manager, SSM, ...);
- `aws_env`: points boto3 at `moto` through the standard environment variables, with fake
  credentials and no shared config or instance metadata lookups;
- `delaying_proxy`: a TCP proxy (asyncio, in a thread) whose added latency tests can change.

Every server binds 127.0.0.1 on a port chosen at run time and is stopped by its PID.
Binaries are looked up next to the running interpreter first (a venv's bin/), then on PATH.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from webhook.devrun import RunError, find_tool

ROOT_TOKEN = "root"
START_TIMEOUT = 30.0


def free_port() -> int:
    """A port nobody listens on right now (bind port 0 and let go of it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_binary(name: str) -> str:
    """`name` from the interpreter's own bin/ (a venv), else from PATH; skip if absent."""
    try:
        return find_tool(name)
    except RunError:
        pytest.skip(f"{name} is not installed (pip install the dev extras)")


def _wait_http(
    url: str,
    process: subprocess.Popen[bytes],
    log: Path,
    ok: Callable[[int], bool],
    ca_file: Path | None = None,
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} server exited early:\n{log.read_text(errors='replace')}")
        try:
            # The server writes its CA at start-up: load it on every try.
            context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
            with urllib.request.urlopen(url, timeout=1, context=context) as response:
                if ok(response.status):
                    return
        except urllib.error.HTTPError as exc:
            if ok(exc.code):
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up within {START_TIMEOUT}s:\n{log.read_text()}")


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


class BaoServer:
    """One `bao server -dev` process: in-memory storage, unsealed, root token `root`.

    With `tls`, it serves HTTPS with a CA of its own making in `ca_file` (`-dev-tls`).
    """

    def __init__(self, workdir: Path, port: int | None = None, tls: bool = False) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.tls = tls
        self.audit_log = workdir / "audit.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path | None:
        return self.workdir / "tls" / "vault-ca.pem" if self.tls else None

    def start(self) -> None:
        """Start (or start again, on the same port, with empty storage)."""
        (self.workdir / "tls").mkdir(parents=True, exist_ok=True)
        config = self.workdir / "audit.hcl"
        # Audit devices are declared in config: OpenBao refuses to enable them over the API.
        config.write_text(
            'audit "file" "trail" {\n'
            f"  options {{ file_path = {json.dumps(str(self.audit_log))} }}\n"
            "}\n"
        )
        log = self.workdir / "bao.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        with log.open("ab") as out:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [
                    find_binary("bao"),
                    "server",
                    "-dev",
                    f"-dev-root-token-id={ROOT_TOKEN}",
                    f"-dev-listen-address=127.0.0.1:{self.port}",
                    "-dev-no-store-token",
                    f"-config={config}",
                    *(
                        ["-dev-tls", f"-dev-tls-cert-dir={self.workdir / 'tls'}"]
                        if self.tls
                        else []
                    ),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
            )
        _wait_http(
            f"{self.address}/v1/sys/health", self.process, log, lambda s: s == 200, self.ca_file
        )

    def stop(self) -> None:
        _stop(self.process)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self, token: str = ROOT_TOKEN, namespace: str | None = None) -> Any:
        """An hvac client (root token by default) for seeding and configuring."""
        import hvac

        verify = str(self.ca_file) if self.ca_file else True
        return hvac.Client(
            url=self.address, token=token, timeout=10, verify=verify, namespace=namespace
        )

    def audited_paths(self) -> list[tuple[str, str]]:
        """(operation, path) of every request the server has audited so far."""
        if not self.audit_log.exists():
            return []
        seen = []
        for line in self.audit_log.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("type") == "request":
                request = entry.get("request", {})
                seen.append((request.get("operation", ""), request.get("path", "")))
        return seen


class MotoServer:
    """One `moto_server` process: Secrets Manager, SSM and the rest, all regions."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "moto.log"
        with log.open("ab") as out:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [find_binary("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        _wait_http(f"{self.endpoint}/moto-api/", self.process, log, lambda s: s == 200)

    def stop(self) -> None:
        _stop(self.process)
        self.process = None

    def client(self, service: str, region: str = "us-east-1") -> Any:
        """A boto3 client for seeding, talking to this server with fake credentials."""
        import boto3

        return boto3.client(
            service,  # type: ignore[call-overload]  # any service name moto serves
            region_name=region,
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


class DelayingProxy:
    """A TCP proxy to `upstream` that holds every chunk from upstream for `delay` seconds.

    Runs its own event loop in a thread, so blocking clients (hvac, boto3) can use it.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay = 0.0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        future: Future[asyncio.Server] = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        )
        self._server = future.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()
            if self._server is not None:
                await self._server.wait_closed()
            await asyncio.sleep(0.05)  # closed transports release their sockets on the loop

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, delayed=False),
                self._pump(up_reader, writer, delayed=True),
            )
        finally:
            self._writers -= {writer, up_writer}
            writer.close()
            up_writer.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delayed: bool
    ) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while chunk := await reader.read(65536):
                if delayed and self.delay > 0:
                    await asyncio.sleep(self.delay)
                writer.write(chunk)
                await writer.drain()
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    """A session-wide OpenBao dev server (root token `root`, KV v2 at secret/)."""
    server = BaoServer(tmp_path_factory.mktemp("openbao"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def openbao_factory(tmp_path: Path) -> Iterator[Callable[..., BaoServer]]:
    """Start private OpenBao servers for one test (`tls=True` for HTTPS); stopped after it."""
    servers: list[BaoServer] = []

    def start(tls: bool = False) -> BaoServer:
        server = BaoServer(tmp_path / f"openbao-{len(servers)}", tls=tls)
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A session-wide moto server; use unique names, other tests share it."""
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """boto3 clients made during the test talk to `moto` (standard variables only)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", moto.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return moto


@pytest.fixture
def delaying_proxy() -> Iterator[Callable[[str, int], DelayingProxy]]:
    """Start delaying proxies in front of (host, port); all are stopped after the test."""
    proxies: list[DelayingProxy] = []

    def start(host: str, port: int) -> DelayingProxy:
        proxy = DelayingProxy(host, port)
        proxy.start()
        proxies.append(proxy)
        return proxy

    try:
        yield start
    finally:
        for proxy in proxies:
            proxy.stop()


def make_tls(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A throwaway CA and a serving certificate for `host`: (ca.pem, tls.crt, tls.key)."""
    from webhook import certs

    ca = certs.make_authority("test CA")
    cert, key = certs.issue_serving_cert(ca, ["localhost"], [host])
    paths = (directory / "ca.pem", directory / "tls.crt", directory / "tls.key")
    certs.write_pem(paths[0], certs.cert_pem(ca.cert))
    certs.write_pem(paths[1], certs.cert_pem(cert))
    certs.write_pem(paths[2], certs.key_pem(key), private=True)
    return paths


def make_service_account_jwt(namespace: str, name: str, uid: str) -> str:
    """A service-account JWT shaped like the kubelet's (ES256, signed by a throwaway key).

    Vault's kubernetes auth reads the claims and lets the TokenReview API vouch for the
    token, so the key does not need to be known to anyone.
    """
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    def encode(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    now = int(time.time())
    header = {"alg": "ES256", "typ": "JWT", "kid": "test"}
    claims = {
        "iss": "kubernetes/serviceaccount",
        "sub": f"system:serviceaccount:{namespace}:{name}",
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/service-account.name": name,
        "kubernetes.io/serviceaccount/service-account.uid": uid,
        "iat": now,
        "exp": now + 3600,
    }
    signing_input = f"{encode(json.dumps(header).encode())}.{encode(json.dumps(claims).encode())}"
    key = ec.generate_private_key(ec.SECP256R1())
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


class TokenReviewServer:
    """A fake kube-apiserver that answers only TokenReview, the one call Vault's kubernetes
    auth method makes: `POST /apis/authentication.k8s.io/v1/tokenreviews`.

    A token registered with `accept(token, namespace, name, uid)` is authenticated as that
    service account; any other is not. HTTPS (Vault insists on a CA for the API server)
    with the CA in `ca_file`, in a thread with its own event loop.
    """

    def __init__(self, workdir: Path) -> None:
        self.ca_file, self._cert, self._key = make_tls(workdir)
        self.tokens: dict[str, tuple[str, str, str]] = {}
        self.reviews = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: Any = None

    @property
    def address(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def accept(self, token: str, namespace: str, name: str, uid: str) -> None:
        self.tokens[token] = (namespace, name, uid)

    def start(self) -> None:
        from aiohttp import web

        async def review(request: web.Request) -> web.Response:
            body = await request.json()
            self.reviews += 1
            token = str(body.get("spec", {}).get("token", ""))
            status: dict[str, Any] = {"authenticated": False}
            if token in self.tokens:
                namespace, name, uid = self.tokens[token]
                status = {
                    "authenticated": True,
                    "user": {
                        "username": f"system:serviceaccount:{namespace}:{name}",
                        "uid": uid,
                        "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
                    },
                }
            answer = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": body.get("spec", {}),
                "status": status,
            }
            response = web.json_response(answer, status=201)
            response.force_close()  # no idle TLS connection left behind at stop()
            return response

        async def serve() -> int:
            app = web.Application()
            app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", review)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self._cert, self._key)
            site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
            await site.start()
            port: int = self._runner.addresses[0][1]
            return port

        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(serve(), self._loop).result(timeout=10)

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            await asyncio.sleep(0.1)  # let closing TLS transports finish before the loop ends

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture
def token_review(tmp_path: Path) -> Iterator[TokenReviewServer]:
    """A fake TokenReview endpoint for Vault's kubernetes auth method."""
    server = TokenReviewServer(tmp_path / "token-review")
    server.start()
    try:
        yield server
    finally:
        server.stop()
