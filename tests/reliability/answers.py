"""What every answer of the webhook must look like, whatever it was sent; and leak checks."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jsonpatch
import pytest

from tests.reliability.running import Answer, ThreadedWebhook, open_fds

# HTTP statuses a review may get: an AdmissionReview, or a refusal of the request itself.
REFUSALS = {400: "BadRequest", 413: "RequestEntityTooLarge"}
# response.status.code of a denied pod: never 500 (an internal error is a crash in disguise).
DENIAL_CODES = {400, 403, 404, 409, 503}
# Descriptors the test process may open meanwhile for its own reasons (a log file, a
# lazily created selector): growth beyond this is a leak.
FD_SLACK = 4
# aiohttp's RequestHandler lingering_time: after answering a request whose body it did not
# read (refused as too large or too slow), it reads on for up to this long before closing
# (RFC 9112 9.6), even when the client has hung up meanwhile (aio-libs/aiohttp#1800).
AIOHTTP_LINGERING_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Review:
    """A decoded AdmissionReview answer."""

    uid: Any
    allowed: bool
    patch: list[dict[str, Any]]
    warnings: list[str]
    code: int | None
    message: str


def check_answer(
    answer: Answer, uid: Any = None, refusals: dict[int, str] = REFUSALS
) -> Review | None:
    """Assert `answer` is a well-formed AdmissionReview echoing `uid` (returned decoded), or
    an HTTP refusal in `refusals` with a Kubernetes Status body giving a reason (None)."""
    assert answer.status == 200 or answer.status in refusals, (answer.status, answer.body[:500])
    assert answer.headers.get("content-type", "").startswith("application/json"), answer.headers
    body = json.loads(answer.body)
    if answer.status != 200:
        assert body["kind"] == "Status" and body["apiVersion"] == "v1", body
        assert body["code"] == answer.status and body["reason"] == refusals[answer.status], body
        assert isinstance(body["message"], str) and body["message"], body
        return None
    assert (body["apiVersion"], body["kind"]) == ("admission.k8s.io/v1", "AdmissionReview"), body
    response = body["response"]
    assert response["uid"] == uid, (response["uid"], uid)
    assert isinstance(response["allowed"], bool)
    warnings = response.get("warnings", [])
    assert isinstance(warnings, list) and all(isinstance(w, str) for w in warnings)
    patch: list[dict[str, Any]] = []
    if "patch" in response:
        assert response["allowed"] is True and response["patchType"] == "JSONPatch", response
        try:
            patch = json.loads(base64.b64decode(response["patch"], validate=True))
        except (binascii.Error, ValueError) as exc:
            raise AssertionError(f"patch is not base64 JSON: {response['patch'][:200]}") from exc
        assert isinstance(patch, list) and patch, patch
        assert all(op["op"] == "add" for op in patch), patch  # we only ever add
    code: int | None = None
    message = ""
    if not response["allowed"]:
        status = response["status"]
        code, message = status["code"], status["message"]
        assert code in DENIAL_CODES, status
        assert isinstance(message, str) and message, status
    return Review(response["uid"], response["allowed"], patch, warnings, code, message)


def apply_patch(obj: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """`obj` with `patch` applied, as the API server would (raises if it does not apply)."""
    patched: dict[str, Any] = jsonpatch.apply_patch(obj, patch, in_place=False)
    return patched


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `condition` until it holds or `timeout` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@contextlib.contextmanager
def no_leaks(
    webhook: ThreadedWebhook, caplog: pytest.LogCaptureFixture, settle: float = 10.0
) -> Iterator[None]:
    """Assert that, within `settle` seconds of the end of the block, the webhook's loop has
    no more tasks and this process no more open descriptors than before it (connections
    closed, handlers done), and that nothing was logged as an error (an internal error or
    a traceback)."""
    tasks, fds = webhook.tasks(), open_fds()
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()} {r.exc_text or ''}" for r in errors[:3]]
    assert webhook.alive, f"the webhook's event loop died: {webhook.crashed!r}"
    assert wait_until(lambda: webhook.tasks() <= tasks, settle), (
        f"tasks {tasks} -> {webhook.tasks()}"
    )
    assert wait_until(lambda: open_fds() <= fds + FD_SLACK, settle), f"fds {fds} -> {open_fds()}"
