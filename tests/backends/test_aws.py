"""Verification of `aws-sm:` and `aws-ssm:` references against a real moto server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from tests.backends.builders import (
    PREFIX,
    admission_request,
    backend_calls,
    injection,
    make_settings,
    pod_with,
    unique,
)
from tests.servers import MotoServer
from webhook.errors import SecretNotFoundError
from webhook.metrics import Metrics
from webhook.refs import AwsParameterRef, AwsSecretRef, SecretRef
from webhook.settings import Settings
from webhook.verification import ReferenceVerifier, open_verifier

ANNOTATION = PREFIX + "file.db"
NO_SUCH_VERSION = "11111111-2222-3333-4444-555555555555"


@dataclass(frozen=True)
class AwsWorld:
    """Secrets and parameters seeded in moto, named uniquely for this module."""

    prefix: str
    current: str  # version ids of <prefix>/db
    previous: str
    oldest: str  # no staging label left: "deprecated"

    def name(self, leaf: str) -> str:
        return f"{self.prefix}/{leaf}"


@pytest.fixture(scope="module")
def aws_world(moto: MotoServer) -> AwsWorld:
    prefix = unique("app")
    sm = moto.client("secretsmanager", "us-east-1")
    oldest = sm.create_secret(Name=f"{prefix}/db", SecretString='{"password": "a"}')["VersionId"]
    previous = sm.put_secret_value(SecretId=f"{prefix}/db", SecretString='{"password": "b"}')
    current = sm.put_secret_value(SecretId=f"{prefix}/db", SecretString='{"password": "c"}')
    sm.create_secret(Name=f"{prefix}/rotating", SecretString="x")
    sm.put_secret_value(
        SecretId=f"{prefix}/rotating", SecretString="y", VersionStages=["AWSPENDING"]
    )
    sm.create_secret(Name=f"{prefix}/empty")  # no value yet: nothing to fetch
    sm.create_secret(Name=f"{prefix}/deleted", SecretString="x")
    sm.delete_secret(SecretId=f"{prefix}/deleted", RecoveryWindowInDays=7)
    moto.client("secretsmanager", "eu-west-1").create_secret(Name=f"{prefix}/eu", SecretString="x")
    ssm = moto.client("ssm", "us-east-1")
    ssm.put_parameter(Name=f"/{prefix}/db", Value="x", Type="SecureString")
    ssm.put_parameter(Name=f"{prefix}-flat", Value="x", Type="String")
    moto.client("ssm", "eu-west-1").put_parameter(Name=f"/{prefix}/eu", Value="x", Type="String")
    return AwsWorld(prefix, current["VersionId"], previous["VersionId"], oldest)


Case = Callable[[AwsWorld], tuple[SecretRef, str | None]]

ARN = "arn:aws:ssm:us-east-1:123456789012:parameter"

CASES: list[Any] = [
    pytest.param(lambda w: (AwsSecretRef(w.name("db")), None), id="sm-exists"),
    pytest.param(
        lambda w: (AwsSecretRef(w.name("db"), json_key="no-such-key"), None),
        id="sm-json-key-not-checked",
    ),
    pytest.param(lambda w: (AwsSecretRef(w.name("nope")), "secret not found"), id="sm-missing"),
    pytest.param(
        lambda w: (AwsSecretRef(w.name("db"), version_stage="AWSPREVIOUS"), None),
        id="sm-stage",
    ),
    pytest.param(
        lambda w: (
            AwsSecretRef(w.name("db"), version_stage="AWSPENDING"),
            "version stage AWSPENDING not found",
        ),
        id="sm-wrong-stage",
    ),
    pytest.param(
        lambda w: (AwsSecretRef(w.name("rotating"), version_stage="AWSPENDING"), None),
        id="sm-pending-stage",
    ),
    pytest.param(
        lambda w: (AwsSecretRef(w.name("db"), version_id=w.current), None), id="sm-version-id"
    ),
    pytest.param(
        lambda w: (AwsSecretRef(w.name("db"), version_id=w.oldest), None),
        id="sm-deprecated-version-id",
    ),
    pytest.param(
        lambda w: (
            AwsSecretRef(w.name("db"), version_id=NO_SUCH_VERSION),
            f"version id {NO_SUCH_VERSION} not found",
        ),
        id="sm-wrong-version-id",
    ),
    pytest.param(
        lambda w: (
            AwsSecretRef(w.name("empty")),
            "secret has no current value (no AWSCURRENT version)",
        ),
        id="sm-no-value-yet",
    ),
    pytest.param(
        lambda w: (AwsSecretRef(w.name("deleted")), "secret is scheduled for deletion"),
        id="sm-scheduled-for-deletion",
    ),
    pytest.param(lambda w: (AwsSecretRef(w.name("eu")), "secret not found"), id="sm-other-region"),
    pytest.param(lambda w: (AwsParameterRef(f"/{w.prefix}/db"), None), id="ssm-exists"),
    pytest.param(lambda w: (AwsParameterRef(f"{w.prefix}-flat"), None), id="ssm-flat-name"),
    pytest.param(
        lambda w: (AwsParameterRef(f"{ARN}/{w.prefix}/db"), None), id="ssm-arn-hierarchical"
    ),
    pytest.param(lambda w: (AwsParameterRef(f"{ARN}/{w.prefix}-flat"), None), id="ssm-arn-flat"),
    pytest.param(
        lambda w: (AwsParameterRef(f"/{w.prefix}/nope"), "parameter not found"),
        id="ssm-missing",
    ),
    pytest.param(
        lambda w: (AwsParameterRef(f"/{w.prefix}/eu"), "parameter not found"),
        id="ssm-other-region",
    ),
]


class OperationLog:
    """Every AWS operation the verifier's real boto3 clients send, by name."""

    def __init__(self) -> None:
        self.operations: list[str] = []

    def __call__(self, model: Any, **kwargs: Any) -> None:
        self.operations.append(model.name)


@pytest.fixture(scope="module")
def shared_session() -> tuple[boto3.Session, OperationLog]:
    """One boto3 session for the module (making clients from a fresh one is slow), whose
    clients report each operation they send."""
    session = boto3.Session()
    log = OperationLog()
    session.events.register("before-call", log)
    return session, log


@pytest.fixture
def operations(shared_session: tuple[boto3.Session, OperationLog]) -> OperationLog:
    log = shared_session[1]
    log.operations.clear()
    return log


VerifierFactory = Callable[..., ReferenceVerifier]


@pytest.fixture
async def aws_verifier(
    aws_env: MotoServer,
    metrics: Metrics,
    shared_session: tuple[boto3.Session, OperationLog],
) -> AsyncIterator[VerifierFactory]:
    """open_verifier with the shared boto3 session (or `session`), closed after the test."""
    opened: list[ReferenceVerifier] = []

    def make(settings: Settings, session: boto3.Session | None = None) -> ReferenceVerifier:
        verifier = open_verifier(settings, metrics, aws_session=session or shared_session[0])
        assert verifier is not None
        opened.append(verifier)
        return verifier

    yield make
    for verifier in opened:
        await verifier.close()


@pytest.mark.parametrize("case", CASES)
async def test_aws_reference_is_denied_when_missing_in_enforce_mode(
    aws_world: AwsWorld, aws_verifier: VerifierFactory, case: Case
) -> None:
    ref, problem = case(aws_world)
    verifier = aws_verifier(make_settings(mode="enforce", aws_region="us-east-1"))
    pod = pod_with(injection("file.db", ref))
    if problem is None:
        assert await verifier.verify(admission_request(), pod) == []
        return
    with pytest.raises(SecretNotFoundError) as denied:
        await verifier.verify(admission_request(), pod)
    assert (denied.value.code, denied.value.message) == (404, f"{ANNOTATION}: {ref}: {problem}")


@pytest.mark.parametrize("case", CASES)
async def test_aws_reference_is_a_warning_when_missing_in_warn_mode(
    aws_world: AwsWorld, aws_verifier: VerifierFactory, case: Case
) -> None:
    ref, problem = case(aws_world)
    verifier = aws_verifier(make_settings(mode="warn", aws_region="us-east-1"))
    warnings = await verifier.verify(admission_request(), pod_with(injection("file.db", ref)))
    assert warnings == ([] if problem is None else [f"{ANNOTATION}: {ref}: {problem}"])


@pytest.mark.parametrize(
    ("annotation_region", "config_region", "found"),
    [
        pytest.param("eu-west-1", "us-east-1", True, id="annotation-overrides-config"),
        pytest.param(None, "eu-west-1", True, id="config"),
        pytest.param(None, "us-east-1", False, id="config-other-region"),
        pytest.param("us-east-1", "eu-west-1", False, id="annotation-other-region"),
    ],
)
async def test_aws_region_comes_from_the_annotation_else_config(
    aws_world: AwsWorld,
    aws_verifier: VerifierFactory,
    annotation_region: str | None,
    config_region: str,
    found: bool,
) -> None:
    verifier = aws_verifier(make_settings(mode="warn", aws_region=config_region))
    pod = pod_with(
        injection("file.sm", AwsSecretRef(aws_world.name("eu"))),
        injection("file.ssm", AwsParameterRef(f"/{aws_world.prefix}/eu")),
        aws_region=annotation_region,
    )
    warnings = await verifier.verify(admission_request(), pod)
    assert len(warnings) == (0 if found else 2)


async def test_aws_region_missing_everywhere_is_a_backend_error(
    aws_world: AwsWorld, aws_verifier: VerifierFactory
) -> None:
    verifier = aws_verifier(make_settings(mode="enforce", aws_region=None))
    ref = AwsSecretRef(aws_world.name("db"))
    assert await verifier.verify(admission_request(), pod_with(injection("file.db", ref))) == [
        f"{ANNOTATION}: {ref}: not verified: aws-sm has no region "
        "(aws-region annotation, providers.aws.region or AWS_REGION)"
    ]


async def test_aws_verification_sends_only_metadata_operations(
    aws_world: AwsWorld,
    aws_verifier: VerifierFactory,
    operations: OperationLog,
) -> None:
    verifier = aws_verifier(make_settings(mode="warn", aws_region="us-east-1"))
    refs = [case.values[0](aws_world)[0] for case in CASES]
    pod = pod_with(*(injection(f"file.f{i}", ref) for i, ref in enumerate(refs)))
    await verifier.verify(admission_request(), pod)
    assert set(operations.operations) == {
        "DescribeSecret",
        "ListSecretVersionIds",  # for the unknown version id only
        "DescribeParameters",
    }
    assert operations.operations.count("ListSecretVersionIds") == 1


async def test_aws_missing_credentials_are_a_backend_error(
    aws_world: AwsWorld,
    aws_verifier: VerifierFactory,
    monkeypatch: pytest.MonkeyPatch,
    metrics: Metrics,
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    # A session of its own: sessions keep the credentials they found.
    verifier = aws_verifier(make_settings(mode="enforce"), boto3.Session())
    ref = AwsParameterRef(f"/{aws_world.prefix}/db")
    assert await verifier.verify(admission_request(), pod_with(injection("file.db", ref))) == [
        f"{ANNOTATION}: {ref}: not verified: aws-ssm has no credentials for the webhook "
        "(default chain)"
    ]
    assert backend_calls(metrics, "aws-ssm") == 1
