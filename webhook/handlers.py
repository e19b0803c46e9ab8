"""HTTP <-> pipeline: the admission endpoints, health, readiness and metrics.

A malformed AdmissionReview is answered with an HTTP error and a Kubernetes `Status`
body giving the reason (400, 413, 415); every parsed review gets HTTP 200 and an
AdmissionReview, even when the pipeline fails on a bug (then `allowed: false`, code 500,
a generic message, and the traceback in the log).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST

from webhook import logs, pipeline, review
from webhook.errors import ReviewError, WebhookError
from webhook.metrics import Metrics
from webhook.settings import Settings

log = logging.getLogger("secret_injector.server")

Step = Callable[[review.AdmissionRequest, pipeline.Context], Awaitable[pipeline.Decision]]

OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})
JSON = "application/json"


@dataclass(slots=True)
class Health:
    """What readiness depends on; set by the server as it starts and stops."""

    tls_loaded: bool = False
    config_loaded: bool = False
    shutting_down: bool = False
    # Further conditions: the reason to report while the check returns False.
    checks: dict[str, Callable[[], bool]] = field(default_factory=dict)

    def problems(self) -> list[str]:
        found = []
        if not self.tls_loaded:
            found.append("TLS certificate not loaded")
        if not self.config_loaded:
            found.append("configuration and clients not loaded")
        if self.shutting_down:
            found.append("shutting down")
        found += [reason for reason, check in self.checks.items() if not check()]
        return found


SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
HEALTH = web.AppKey("health", Health)
CONTEXT = web.AppKey("context", pipeline.Context)


class InternalError(WebhookError):
    """A bug in the webhook while answering a review; details only in the log."""


def status_response(
    http_status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """An HTTP error with a Kubernetes `Status` body, as the API server's own errors look."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": http_status,
        "reason": _reason_phrase(http_status),
        "message": message,
    }
    return web.Response(
        status=http_status, body=orjson.dumps(body), content_type=JSON, headers=headers
    )


async def mutate(request: web.Request) -> web.Response:
    """POST /mutate: the mutating webhook."""
    return await _answer(request, "mutate", pipeline.admit)


async def validate(request: web.Request) -> web.Response:
    """POST /validate: the validating webhook (policy on the final pod, injected guard)."""
    return await _answer(request, "validate", pipeline.validate)


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: the process is alive and its event loop answers."""
    del request
    return web.Response(body=b'{"status":"ok"}', content_type=JSON)


async def readyz(request: web.Request) -> web.Response:
    """GET /readyz: certificates and config loaded, and not shutting down."""
    problems = request.app[HEALTH].problems()
    if problems:
        body = orjson.dumps({"status": "not ready", "reasons": problems})
        return web.Response(status=503, body=body, content_type=JSON)
    return web.Response(body=b'{"status":"ready"}', content_type=JSON)


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics on the plain-HTTP port: Prometheus text format."""
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST})


async def _answer(request: web.Request, endpoint: str, step: Step) -> web.Response:
    app_metrics = request.app[METRICS]
    started = time.perf_counter()
    app_metrics.reviews_in_flight += 1
    try:
        return await _review(request, endpoint, step, started, app_metrics)
    finally:
        app_metrics.reviews_in_flight -= 1
        app_metrics.time_review(endpoint, time.perf_counter() - started)


async def _review(
    request: web.Request, endpoint: str, step: Step, started: float, app_metrics: Metrics
) -> web.Response:
    ctx = request.app[CONTEXT]
    try:
        body = await _read_body(request)
        req = review.parse_review(body)
    except ReviewError as exc:
        return _malformed(request, endpoint, exc)
    except Exception:  # a bug in parsing: still a clear HTTP answer, never a dead process
        app_metrics.count_review(endpoint, "unknown", "error")
        log.exception("admission request could not be parsed", extra={"endpoint": endpoint})
        return status_response(400, "the AdmissionReview could not be parsed")

    operation = req.operation if req.operation in OPERATIONS else "other"
    outcome: str
    try:
        decision = await step(req, ctx)
        outcome = decision.outcome
    except ReviewError as exc:  # a malformed pod, found where its parts are first read
        return _malformed(request, endpoint, exc)
    except Exception:
        # An internal bug: deny this one pod with a generic message (no details that
        # could carry anything sensitive), keep serving, and log the traceback.
        # The traceback may quote the pod: its literal env values are hidden from it.
        log.exception(
            "admission review failed with an internal error",
            extra={
                "endpoint": endpoint,
                "uid": req.uid,
                "namespace": req.namespace,
                "pod": req.name,
                "operation": req.operation,
                **logs.redacting(logs.literal_env_values(_pod_if_readable(req))),
            },
        )
        error = InternalError(
            f"secret-injector internal error while answering {endpoint} (request uid "
            f"{req.uid}); the webhook's log has the details"
        )
        decision = pipeline.Decision(outcome="denied", denial=error)
        outcome = "error"

    if decision.denial is not None:
        answer = review.deny(req.uid, decision.denial, decision.warnings)
    else:
        answer = review.allow(req.uid, decision.patch, decision.warnings, decision.encoded_patch)
    app_metrics.count_review(endpoint, operation, outcome)
    logs.audit(endpoint, req, decision, time.perf_counter() - started, outcome=outcome)
    _report_unsaved_spcs(ctx, req, decision)
    return web.Response(body=review.encode(answer), content_type=JSON)


def _pod_if_readable(req: review.AdmissionRequest) -> review.RawPod | None:
    """The pod, for the log's redaction; None when its spec cannot be decoded (then no
    value of it can be in the traceback either)."""
    try:
        return req.pod
    except ReviewError:
        return None


def _malformed(request: web.Request, endpoint: str, exc: ReviewError) -> web.Response:
    request.app[METRICS].count_review(endpoint, "unknown", "invalid")
    log.warning(
        "malformed admission request rejected",
        extra={
            "endpoint": endpoint,
            "status": exc.http_status,
            "reason": exc.reason,
            "remote": request.remote,
        },
    )
    return status_response(exc.http_status, exc.reason)


async def _read_body(request: web.Request) -> bytes:
    """The raw body, within the size limit, if it claims to be JSON; raises ReviewError."""
    declared = request.headers.get(hdrs.CONTENT_TYPE)
    # What the API server sends is compared as is; parsing it (request.content_type) costs
    # ~5 us, so only other spellings ("application/json; charset=utf-8") are parsed.
    if declared is not None and declared != JSON and request.content_type != JSON:
        raise ReviewError(
            f"Content-Type must be {JSON} (an AdmissionReview), got {request.content_type}", 415
        )
    settings = request.app[SETTINGS]
    limit = settings.max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise ReviewError(_too_large(length, limit), 413)
    deadline = settings.listen.body_timeout_seconds
    try:
        if request.content.is_eof():  # all of it came with the headers: nothing to wait for
            return await request.read()
        async with asyncio.timeout(deadline):
            return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:  # chunked bodies, counted as they arrive
        raise ReviewError(_too_large(None, limit), 413) from exc
    except TimeoutError:
        raise ReviewError(
            f"request body not received within {deadline:g}s (listen.bodyTimeoutSeconds)"
        ) from None
    except ConnectionResetError:  # aiohttp's "Connection lost": the client went away
        raise ReviewError("request body incomplete: the client closed the connection") from None


def _too_large(length: int | None, limit: int) -> str:
    size = f" ({length} bytes)" if length is not None else ""
    return f"request body{size} is larger than the limit of {limit} bytes (maxBodyBytes)"


def _report_unsaved_spcs(
    ctx: pipeline.Context, req: review.AdmissionRequest, decision: pipeline.Decision
) -> None:
    """Without a Kubernetes API the SecretProviderClasses are computed and reported only:
    once per pod template (decisionCache.ttlSeconds), not for each of its pods."""
    if decision.cached:
        return
    if ctx.spc_store is None and decision.allowed and decision.patch and decision.spcs:
        log.info(
            "SecretProviderClasses computed, not created (no Kubernetes API configured)",
            extra={"uid": req.uid, "namespace": req.namespace, "spcs": decision.spcs},
        )


def _reason_phrase(http_status: int) -> str:
    reasons: dict[int, str] = {
        400: "BadRequest",
        404: "NotFound",
        405: "MethodNotAllowed",
        413: "RequestEntityTooLarge",
        415: "UnsupportedMediaType",
        500: "InternalError",
        503: "ServiceUnavailable",
    }
    return reasons.get(http_status, "Failure")


def routes(app: web.Application) -> None:
    """The TLS listener's routes."""
    app.router.add_post("/mutate", mutate)
    app.router.add_post("/validate", validate)
    app.router.add_get("/healthz", healthz, allow_head=True)
    app.router.add_get("/readyz", readyz, allow_head=True)
    _refuse_the_rest(app)


def metrics_routes(app: web.Application) -> None:
    """The plain-HTTP metrics listener's routes."""
    app.router.add_get("/metrics", metrics, allow_head=True)
    _refuse_the_rest(app)


def _refuse_the_rest(app: web.Application) -> None:
    """JSON `Status` answers, with a useful message, for what `app` does not serve: 405
    (and `Allow`) for another method on one of its paths, 404 for any other path.

    Routes added after the app's own, not a middleware: aiohttp runs a middleware around
    every request, which cost each review ~15 µs of CPU (`python -m bench.ab`, skip body).
    """
    served = []
    for resource in list(app.router.resources()):
        if not isinstance(resource, web.Resource):  # only plain path resources here
            continue
        methods = sorted({route.method for route in resource})
        served += [f"{method} {resource.canonical}" for method in methods if method != "HEAD"]
        resource.add_route(hdrs.METH_ANY, _not_allowed(",".join(methods)))
    app.router.add_route(hdrs.METH_ANY, "/{path:.*}", _not_found(", ".join(served)))


def _not_allowed(allowed: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def answer(request: web.Request) -> web.Response:
        message = f"method {request.method} is not allowed on {request.path} (use {allowed})"
        return status_response(405, message, {hdrs.ALLOW: allowed})

    return answer


def _not_found(endpoints: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def answer(request: web.Request) -> web.Response:
        return status_response(404, f"no endpoint {request.path}; this server answers {endpoints}")

    return answer
