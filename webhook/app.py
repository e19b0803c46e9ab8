"""The aiohttp applications and the server process: the TLS webhook listener, the
plain-HTTP metrics listener, clients opened and closed with the app, graceful shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from webhook import decisions, handlers, memory, pipeline, policy, policy_file, verification
from webhook.handlers import CONTEXT, HEALTH, METRICS, SETTINGS, Health
from webhook.metrics import Metrics
from webhook.settings import Settings
from webhook.tls import ReloadingContext

if TYPE_CHECKING:
    from webhook.selfsigned import SelfManagedCa

log = logging.getLogger("secret_injector.server")

TLS = web.AppKey("tls", ReloadingContext)

# Longer than the API server's idle keep-alive (Go's http.Transport: 90 s), so that the
# client, not us, closes idle connections and never sends on one we just closed.
KEEPALIVE_SECONDS = 120.0

# Longest wait for the backends' start-up login before the webhook reports ready anyway.
WARM_UP_SECONDS = 10.0


@contextlib.asynccontextmanager
async def open_context(
    settings: Settings, metrics: Metrics, *, serving: bool = True
) -> AsyncIterator[pipeline.Context]:
    """The pipeline's Context with its clients, closed on exit.

    `serve` and `explain` both come through here, so they decide alike. `explain` passes
    serving=False: no Kubernetes API writes (SPCs are only computed) and no policy reloads.
    Raises ConfigError for a broken policy file or Kubernetes configuration.
    """
    async with contextlib.AsyncExitStack() as stack:

        def follow(new_policy: policy.Policy) -> None:
            ctx.policy = new_policy

        source = policy_file.PolicySource(settings.policy_file, metrics=metrics, on_change=follow)
        ctx = pipeline.Context(settings=settings, policy=source.policy, metrics=metrics)
        if serving:  # `explain` answers one pod: nothing to reuse
            lookups = {r: metrics.decision_cache_lookups.labels(r) for r in ("hit", "miss")}
            ctx.decisions = decisions.DecisionCache(
                ttl=settings.decision_cache.ttl_seconds,
                max_entries=settings.decision_cache.max_entries,
                on_lookup=lambda result: lookups[result].inc(),
            )
        ctx.verifier = verification.open_verifier(settings, metrics)
        if ctx.verifier is not None:
            stack.push_async_callback(ctx.verifier.close)
            # Ready only once the backends' clients are made and logged in (or have failed:
            # a backend down at start-up is then handled per onBackendError), so the first
            # reviews do not spend their deadline on a login.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WARM_UP_SECONDS):
                    await ctx.verifier.wait_ready()
        if serving:
            # Imported here: the Kubernetes client takes seconds to import, and `explain`
            # never needs it.
            from webhook import kube

            store = kube.open_spc_store(settings)
            if store is not None:
                stack.push_async_callback(store.close)
            ctx.spc_store = store
            watcher = asyncio.create_task(source.watch(), name="policy-reload")
            stack.push_async_callback(_cancel, watcher)
        yield ctx


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _context_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_context(app[SETTINGS], app[METRICS], serving=True) as ctx:
        app[CONTEXT] = ctx
        app[HEALTH].config_loaded = True
        yield
        app[HEALTH].config_loaded = False


async def _tls_watch_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[TLS].watch(), name="tls-reload")
    yield
    await _cancel(task)


def make_app(
    settings: Settings, metrics: Metrics, health: Health, tls: ReloadingContext | None = None
) -> web.Application:
    """The webhook application: admission endpoints, health and readiness."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[HEALTH] = health
    app.cleanup_ctx.append(_context_ctx)
    if tls is not None:
        app[TLS] = tls
        health.tls_loaded = True
        app.cleanup_ctx.append(_tls_watch_ctx)
    handlers.routes(app)
    return app


def make_metrics_app(metrics: Metrics) -> web.Application:
    """The metrics application, served without TLS on its own port."""
    app = web.Application()
    app[METRICS] = metrics
    handlers.metrics_routes(app)
    return app


class Server:
    """The two listeners of one webhook process."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        tls: ReloadingContext,
        ca: SelfManagedCa | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.health = Health()
        if ca is not None:
            # Not ready while the API servers may not trust our certificate yet.
            self.health.checks["caBundle of the webhook configurations not in sync"] = lambda: (
                ca.in_sync
            )
        self._tls = tls
        shutdown = settings.listen.shutdown_timeout_seconds
        self._runner = web.AppRunner(
            make_app(settings, metrics, self.health, tls),
            access_log=None,  # one audit line per review of our own instead
            shutdown_timeout=shutdown,
            keepalive_timeout=KEEPALIVE_SECONDS,
        )
        self._metrics_runner = web.AppRunner(
            make_metrics_app(metrics), access_log=None, shutdown_timeout=1.0
        )

    @property
    def port(self) -> int:
        """The TLS port actually bound (useful when the settings say 0)."""
        return int(self._runner.addresses[0][1])

    @property
    def metrics_port(self) -> int:
        return int(self._metrics_runner.addresses[0][1])

    async def start(self) -> None:
        """Open the clients, then listen; raises OSError when a port cannot be bound."""
        listen = self.settings.listen
        await self._runner.setup()
        await self._metrics_runner.setup()
        try:
            await web.TCPSite(
                self._runner,
                listen.address,
                listen.port,
                ssl_context=self._tls.server_context,
                backlog=1024,
            ).start()
            await web.TCPSite(
                self._metrics_runner, listen.metrics_address, listen.metrics_port
            ).start()
        except BaseException:
            await self._metrics_runner.cleanup()
            await self._runner.cleanup()
            raise
        log.info(
            "listening",
            extra={
                "webhook": f"https://{listen.address}:{self.port}",
                "metrics": f"http://{listen.metrics_address}:{self.metrics_port}/metrics",
            },
        )

    async def stop(self) -> None:
        """Fail readiness, stop accepting, finish in-flight reviews, close the clients."""
        self.health.shutting_down = True
        delay = self.settings.listen.shutdown_delay_seconds
        if delay > 0:
            # Keep answering while the endpoint is removed from the Service.
            log.info("shutting down: readiness failing", extra={"delay_seconds": delay})
            await asyncio.sleep(delay)
        log.info("shutting down: no new connections, finishing in-flight reviews")
        await self._runner.cleanup()  # closes listeners, waits up to shutdown_timeout
        await self._metrics_runner.cleanup()
        log.info("stopped")


# Collect the youngest generation after this many net allocations (CPython's default: 700).
# A large review allocates enough objects for several collections each; measured on the
# webhook (README "Performance"): with gc.freeze(), large-body throughput +70 % and the
# typical p99 at c=8 from 98 to 11 ms (collection pauses over the clients' objects).
GC_THRESHOLD = (50_000, 20, 100)


def _freeze_start_up_objects() -> None:
    """Keep the garbage collector off what start-up made (modules, SDK clients, their
    tables): objects that live as long as the process, traversed by every full
    collection otherwise."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


async def _trim_memory() -> None:
    """Give freed memory back to the OS now and then (see webhook/memory.py)."""
    while True:
        await asyncio.sleep(memory.TRIM_INTERVAL_SECONDS)
        await asyncio.to_thread(memory.trim)


async def serve(settings: Settings) -> None:
    """Run the webhook until SIGTERM or SIGINT, then shut down gracefully.

    Raises ConfigError (TLS files, policy file, Kubernetes configuration) or WebhookError
    (the self-managed CA could not be set up) when it cannot start.
    """
    metrics = Metrics()
    async with contextlib.AsyncExitStack() as stack:
        ca = None
        if settings.tls.self_managed.enabled:
            from webhook import selfsigned  # the Kubernetes client: see open_context

            ca = selfsigned.open_self_managed_ca(settings)
        if ca is not None:
            await ca.start()  # writes tls.certFile/keyFile before they are loaded below
            stack.push_async_callback(ca.close)
        tls = ReloadingContext(settings.tls, metrics)  # TlsError: refuse to start
        server = Server(settings, metrics, tls, ca)
        await server.start()
        _freeze_start_up_objects()
        memory.trim()  # what start-up freed
        trimmer = asyncio.create_task(_trim_memory(), name="memory-trim")
        stack.push_async_callback(_cancel, trimmer)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
            log.info("signal received, shutting down")
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            await server.stop()
