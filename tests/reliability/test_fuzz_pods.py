"""Random valid Pods (the strict Kubernetes 1.30 schema, see pod_schema.py) through the
running server: a pod that is not opted in is left alone; an opted-in pod is either denied
with a precise code or patched, and then the patch applies, the patched pod is still valid
in kubernetes-validate strict mode, a second review of it is a no-op, and the validating
webhook admits it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import make_review
from tests.reliability.answers import Review, apply_patch, check_answer, no_leaks
from tests.reliability.conftest import fuzz_settings
from tests.reliability.pod_schema import pods, schema_pods, validation_errors
from tests.reliability.running import HttpsClient, ThreadedWebhook
from tests.reliability.strategies import NAMESPACE, PREFIX, opted_in


def without_our_annotations(pod: dict[str, Any]) -> dict[str, Any]:
    annotations = pod.get("metadata", {}).get("annotations")
    if isinstance(annotations, dict):
        for key in [k for k in annotations if k.startswith(PREFIX)]:
            del annotations[key]
    return pod


def review(client: HttpsClient, endpoint: str, pod: dict[str, Any], uid: str) -> Review:
    body = json.dumps(make_review(pod, namespace=NAMESPACE, uid=uid)).encode()
    decoded = check_answer(client.post(endpoint, body), uid)
    assert decoded is not None, "a valid Pod CREATE is never refused as a request"
    return decoded


def test_fuzz_valid_pods_not_opted_in_are_left_alone(
    webhook: ThreadedWebhook, caplog: pytest.LogCaptureFixture
) -> None:
    client = webhook.client()

    @fuzz_settings(120)
    @given(pod=(pods() | schema_pods()).map(without_our_annotations))
    def left_alone(pod: dict[str, Any]) -> None:
        assert validation_errors(pod) is None, validation_errors(pod)
        mutated = review(client, "/mutate", pod, "skip")
        assert (mutated.allowed, mutated.patch) == (True, [])
        validated = review(client, "/validate", pod, "skip")
        assert validated.allowed or validated.code == 403  # the policy may deny the pod

    with no_leaks(webhook, caplog):
        try:
            left_alone()
        finally:
            client.close()


def test_fuzz_valid_pods_opted_in_are_patched_into_valid_pods_once(
    webhook: ThreadedWebhook, caplog: pytest.LogCaptureFixture
) -> None:
    client = webhook.client()
    outcomes: dict[str, int] = {}

    @fuzz_settings(200)
    @given(data=st.data())
    def patched_once(data: st.DataObject) -> None:
        pod = data.draw(pods(), label="pod")
        names = [str(c["name"]) for c in pod["spec"]["containers"]]
        metadata = pod.setdefault("metadata", {})
        metadata["annotations"] = {
            **metadata.get("annotations", {}),
            **data.draw(opted_in(names), label="annotations"),
        }
        assert validation_errors(pod) is None, validation_errors(pod)
        mutated = review(client, "/mutate", pod, "opted-in")
        if not mutated.allowed:
            # Policy on the pod's own fields (403), a clash with what the pod has (409), or
            # a container name the `containers` list cannot carry (400).
            assert mutated.code in (400, 403, 409), mutated
            outcomes[f"denied {mutated.code}"] = outcomes.get(f"denied {mutated.code}", 0) + 1
            return
        assert mutated.patch, "an opted-in pod that is admitted gets the injection"
        outcomes["patched"] = outcomes.get("patched", 0) + 1
        patched = apply_patch(pod, mutated.patch)
        assert validation_errors(patched) is None, validation_errors(patched)
        again = review(client, "/mutate", patched, "again")
        assert (again.allowed, again.patch) == (True, []), again
        validated = review(client, "/validate", patched, "final")
        assert validated.allowed, validated

    with no_leaks(webhook, caplog):
        try:
            patched_once()
        finally:
            client.close()
    # The property is only worth something if most examples reach the patch.
    assert outcomes.get("patched", 0) >= sum(outcomes.values()) // 2, outcomes
