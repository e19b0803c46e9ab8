"""Hostile input to /mutate and /validate over the running server (real TLS, one server for
the module): arbitrary bytes and JSON, truncated bodies, wrong types and missing fields at
every level of an AdmissionReview, random annotations under our prefix. Never a 5xx,
never a dead loop or a hang: every answer is an AdmissionReview echoing the uid, or a
400/413 with a reason; nothing is left running or open afterwards.

Each test runs its hypothesis examples inside `no_leaks`: the webhook's tasks and this
process's descriptors are counted before the first example and after the last.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import make_pod, make_review
from tests.reliability.answers import (
    AIOHTTP_LINGERING_SECONDS,
    apply_patch,
    check_answer,
    no_leaks,
)
from tests.reliability.conftest import fuzz_settings
from tests.reliability.pod_schema import validation_errors
from tests.reliability.running import Answer, ThreadedWebhook, raw_exchange
from tests.reliability.strategies import (
    NAMESPACE,
    PASTED_SECRET,
    PREFIX,
    json_values,
    our_annotations,
    wrecked,
)

ENDPOINTS = ("/mutate", "/validate")
OPTED_IN = {
    PREFIX + "inject": "true",
    PREFIX + "file.db-password": f"vault:secret/data/{NAMESPACE}/db#password",
    PREFIX + "env.API_KEY": f"aws-sm:{NAMESPACE}/api#key",
    PREFIX + "containers": "app,sidecar",
}
UID = "fuzz-uid-0001"


def valid_review() -> dict[str, Any]:
    """An opted-in Pod CREATE that the webhook patches (the base the fuzzers damage)."""
    pod = make_pod(
        OPTED_IN,
        containers=[
            {"name": "app", "image": "app:1", "env": [{"name": "MODE", "value": "prod"}]},
            {"name": "sidecar", "image": "proxy:1", "volumeMounts": []},
        ],
        init_containers=["migrate"],
        volumes=[{"name": "cache", "emptyDir": {}}],
        namespace=NAMESPACE,
    )
    pod["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": "web-1",
            "uid": "u-1",
            "controller": True,
        }
    ]
    return make_review(pod, uid=UID)


def uid_of(review: Any) -> Any:
    """The uid the answer must echo, when the review still has one."""
    try:
        return review["request"]["uid"]
    except (KeyError, TypeError, IndexError):
        return None


def post(webhook: ThreadedWebhook, endpoint: str, body: bytes) -> Answer:
    """POST on a connection of its own, closed afterwards."""
    client = webhook.client()
    try:
        return client.post(endpoint, body)
    finally:
        client.close()


def test_fuzz_arbitrary_bytes_are_refused_with_400(
    webhook: ThreadedWebhook, caplog: pytest.LogCaptureFixture
) -> None:
    @fuzz_settings(150)
    @given(body=st.binary(max_size=4096), endpoint=st.sampled_from(ENDPOINTS))
    def refused(body: bytes, endpoint: str) -> None:
        answer = post(webhook, endpoint, body)
        assert check_answer(answer) is None
        assert answer.status == 400

    with no_leaks(webhook, caplog):
        refused()


def test_fuzz_arbitrary_json_is_refused_with_400(
    webhook: ThreadedWebhook, caplog: pytest.LogCaptureFixture
) -> None:
    @fuzz_settings(150)
    @given(value=json_values, endpoint=st.sampled_from(ENDPOINTS))
    def refused(value: Any, endpoint: str) -> None:
        answer = post(webhook, endpoint, json.dumps(value).encode())
        assert check_answer(answer) is None
        assert answer.status == 400

    with no_leaks(webhook, caplog):
        refused()


def test_fuzz_wrecked_reviews_are_answered_or_refused(
    webhook: ThreadedWebhook, caplog: pytest.LogCaptureFixture
) -> None:
    @fuzz_settings(400)
    @given(data=st.data(), endpoint=st.sampled_from(ENDPOINTS))
    def answered(data: st.DataObject, endpoint: str) -> None:
        review = data.draw(wrecked(valid_review()), label="review")
        decoded = check_answer(post(webhook, endpoint, json.dumps(review).encode()), uid_of(review))
        if decoded is not None and decoded.patch:
            apply_patch(review["request"]["object"], decoded.patch)  # applies where it was made

    with no_leaks(webhook, caplog):
        answered()


def test_fuzz_annotations_under_our_prefix_are_answered_precisely(
    webhook: ThreadedWebhook, caplog: pytest.LogCaptureFixture
) -> None:
    @fuzz_settings(250)
    @given(annotations=our_annotations(), endpoint=st.sampled_from(ENDPOINTS))
    def answered(annotations: dict[str, str], endpoint: str) -> None:
        pod = make_pod(annotations, containers=["app", "sidecar"], namespace=NAMESPACE)
        answer = post(webhook, endpoint, json.dumps(make_review(pod, uid="fuzz-a")).encode())
        decoded = check_answer(answer, "fuzz-a")
        assert decoded is not None  # a well-formed review is never refused as a request
        assert PASTED_SECRET not in answer.body.decode(), "a pasted value was echoed back"
        if decoded.patch:
            patched = apply_patch(pod, decoded.patch)
            assert validation_errors(patched) is None, validation_errors(patched)
            body = json.dumps(make_review(patched, uid="again")).encode()
            again = check_answer(post(webhook, "/mutate", body), "again")
            assert again is not None and again.allowed and again.patch == []

    with no_leaks(webhook, caplog):
        answered()


def test_fuzz_truncated_body_with_its_true_length_is_refused_with_400(
    webhook: ThreadedWebhook, caplog: pytest.LogCaptureFixture
) -> None:
    body = json.dumps(valid_review()).encode()

    @fuzz_settings(50)
    @given(cut=st.integers(0, len(body) - 1), endpoint=st.sampled_from(ENDPOINTS))
    def refused(cut: int, endpoint: str) -> None:
        answer = post(webhook, endpoint, body[:cut])
        assert check_answer(answer) is None
        assert answer.status == 400

    with no_leaks(webhook, caplog):
        refused()


def request_head(endpoint: str, length: int) -> bytes:
    return (
        f"POST {endpoint} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_fuzz_truncated_body_then_hang_up_leaves_nothing_behind(
    webhook: ThreadedWebhook, caplog: pytest.LogCaptureFixture
) -> None:
    body = json.dumps(valid_review()).encode()

    def hang_up(tls: ssl.SSLSocket) -> None:
        tls.shutdown(socket.SHUT_RDWR)

    @fuzz_settings(25)
    @given(cut=st.integers(0, len(body) - 1))
    def survived(cut: int) -> None:
        data = request_head("/mutate", len(body)) + body[:cut]
        raw_exchange(webhook.port, webhook.client_context(), data, then=hang_up, timeout=2)
        assert check_answer(post(webhook, "/mutate", body), UID) is not None

    with no_leaks(webhook, caplog):
        survived()


def test_stalled_body_is_refused_at_the_body_deadline_and_its_connection_closed(
    webhook: ThreadedWebhook, caplog: pytest.LogCaptureFixture
) -> None:
    body = json.dumps(valid_review()).encode()
    deadline = webhook.settings.listen.body_timeout_seconds
    with no_leaks(webhook, caplog):
        started = time.monotonic()
        received = raw_exchange(
            webhook.port,
            webhook.client_context(),
            request_head("/mutate", len(body)) + body[: len(body) // 2],
            timeout=deadline + AIOHTTP_LINGERING_SECONDS + 5,
            until_closed=True,  # the client stalls: it neither sends more nor hangs up
        )
        closed_after = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 400 "), received[:300]
    assert b"request body not received within" in received
    assert closed_after < deadline + AIOHTTP_LINGERING_SECONDS + 1.0


def body_of_size(size: int) -> bytes:
    """The valid review, padded with blanks (JSON allows them) to exactly `size` bytes."""
    body = json.dumps(valid_review()).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        pytest.param(0, 200, id="at-the-limit"),
        pytest.param(1, 413, id="one-byte-over"),
        pytest.param(1024 * 1024, 413, id="a-mebibyte-over"),
    ],
)
def test_body_size_limit_is_exact_and_answered_with_413(
    webhook: ThreadedWebhook, extra: int, status: int
) -> None:
    answer = post(webhook, "/mutate", body_of_size(webhook.settings.max_body_bytes + extra))
    check_answer(answer, UID)
    assert answer.status == status


def test_bodies_over_the_limit_leave_nothing_behind(
    webhook: ThreadedWebhook, caplog: pytest.LogCaptureFixture
) -> None:
    over = body_of_size(webhook.settings.max_body_bytes + 1024 * 1024)
    with no_leaks(webhook, caplog, settle=AIOHTTP_LINGERING_SECONDS + 2):
        for _ in range(5):
            assert post(webhook, "/mutate", over).status == 413
