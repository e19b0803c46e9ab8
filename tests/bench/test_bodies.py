"""The benchmark's bodies: valid Pods in AdmissionReviews of the advertised sizes."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import orjson
import pytest

from bench import bodies
from webhook.review import parse_review

PREFIX = bodies.PREFIX


def _pod(body: bytes) -> Any:
    return orjson.loads(body)["request"]["object"]


@pytest.mark.parametrize(
    ("size", "low_kib", "high_kib", "containers"),
    [
        pytest.param("small", 3.0, 4.5, 1, id="small"),
        pytest.param("typical", 9.5, 12.0, 2, id="typical"),
        pytest.param("large", 50.0, 60.0, 8, id="large"),
    ],
)
def test_injected_body_has_the_advertised_size(
    size: bodies.Size, low_kib: float, high_kib: float, containers: int
) -> None:
    body = bodies.injected(size)
    assert low_kib * 1024 <= len(body) <= high_kib * 1024
    assert len(_pod(body)["spec"]["containers"]) == containers


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(bodies.injected("small"), id="small"),
        pytest.param(bodies.injected("typical"), id="typical"),
        pytest.param(bodies.injected("large"), id="large"),
        pytest.param(bodies.skipped(), id="skip"),
        pytest.param(bodies.denied(), id="denied"),
        pytest.param(bodies.cold_template().replace(b"__COLD_REF__", b"x-1-1"), id="cold"),
    ],
)
def test_body_is_a_strictly_valid_pod_review(body: bytes) -> None:
    kubernetes_validate.validate(_pod(body), kubernetes_validate.latest_version(), strict=True)
    req = parse_review(body)
    assert (req.kind, req.operation, req.namespace, req.is_pod) == (
        "Pod",
        "CREATE",
        bodies.NAMESPACE,
        True,
    )


def test_injected_references_stay_in_the_namespace_and_are_seeded() -> None:
    annotations = parse_review(bodies.injected("typical")).annotations
    refs = [v for k, v in annotations.items() if k.startswith((PREFIX + "file.", PREFIX + "env."))]
    assert refs
    seeded = {f"vault:{path}" for path in bodies.SEED.vault}
    seeded |= {f"aws-sm:{name}" for name in bodies.SEED.aws_secrets}
    seeded |= {f"aws-ssm:{name}" for name in bodies.SEED.aws_parameters}
    for ref in refs:
        scheme, _, rest = ref.partition(":")
        assert rest.lstrip("/").startswith(f"secret/data/{bodies.NAMESPACE}/") or rest.lstrip(
            "/"
        ).startswith(f"{bodies.NAMESPACE}/"), ref
        assert f"{scheme}:{rest.partition('#')[0]}" in seeded, ref


def test_env_injections_do_not_clash_with_the_pods_env() -> None:
    body = bodies.injected("large")
    injected = {
        k.removeprefix(PREFIX + "env.")
        for k in parse_review(body).annotations
        if k.startswith(PREFIX + "env.")
    }
    for container in _pod(body)["spec"]["containers"]:
        names = [e["name"] for e in container["env"]]
        assert len(names) == len(set(names)), container["name"]
        assert not injected & set(names)


def test_skipped_body_has_no_annotation_under_our_prefix() -> None:
    annotations = parse_review(bodies.skipped()).annotations
    assert annotations
    assert not [k for k in annotations if k.startswith(PREFIX)]


def test_denied_body_references_another_namespace() -> None:
    annotations = parse_review(bodies.denied()).annotations
    assert any(f"/{bodies.OTHER_NAMESPACE}/" in v for v in annotations.values())


def test_malformed_body_is_not_json() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(bodies.malformed())


def test_cold_template_carries_the_marker_once() -> None:
    assert bodies.cold_template().count(bodies.COLD_MARKER.encode()) == 1
