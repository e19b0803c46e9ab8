"""Check one answer of each body before measuring: a benchmark of denials means nothing."""

from __future__ import annotations

import base64
import http.client
import ssl
from dataclasses import dataclass
from typing import Any, Literal

import orjson

Expect = Literal["injected", "skipped", "denied", "malformed", "any"]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    review: Any  # the parsed AdmissionReview, or None when the body was not JSON


def post(port: int, body: bytes, path: str = "/mutate") -> Answer:
    """POST `body` over TLS (the benchmark's own CA is not worth verifying on loopback)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    try:
        review = orjson.loads(data)
    except orjson.JSONDecodeError:
        review = None
    return Answer(resp.status, review)


def problem(answer: Answer, expect: Expect) -> str | None:
    """What is wrong with `answer` for a body that should be `expect`; None when right."""
    if expect == "malformed":
        return None if answer.status == 400 else f"expected HTTP 400, got {answer.status}"
    if answer.status != 200:
        return f"expected HTTP 200, got {answer.status}: {answer.review!r:.300}"
    response = answer.review.get("response") if isinstance(answer.review, dict) else None
    if not isinstance(response, dict):
        return f"no AdmissionReview response in {answer.review!r:.300}"
    allowed, patch = response.get("allowed"), response.get("patch")
    if expect == "any":
        return None
    if expect == "denied":
        return None if allowed is False else f"expected a denial, got {response!r:.300}"
    if allowed is not True:
        return f"expected allowed, got {response.get('status')!r:.500}"
    if expect == "skipped":
        return None if patch is None else "expected no patch for a pod without our annotations"
    if not isinstance(patch, str) or response.get("patchType") != "JSONPatch":
        return f"expected a JSONPatch, got {response!r:.300}"
    ops = orjson.loads(base64.b64decode(patch))
    if not ops or any(op.get("op") != "add" for op in ops):
        return f"expected add operations, got {ops!r:.300}"
    if response.get("warnings"):
        # verify: warn turns a missing reference into a warning: the seed is wrong.
        return f"unexpected warnings (a reference not found?): {response['warnings']}"
    return None


def require(port: int, body: bytes, expect: Expect, what: str) -> Answer:
    answer = post(port, body)
    wrong = problem(answer, expect)
    if wrong is not None:
        raise RuntimeError(f"{what}: {wrong}")
    return answer
