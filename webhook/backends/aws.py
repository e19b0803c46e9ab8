"""AWS existence checks through boto3: Secrets Manager DescribeSecret, SSM DescribeParameters.

Both calls return metadata only (names, version ids and staging labels, parameter types),
never a value; the webhook's IAM policy needs only `secretsmanager:DescribeSecret`,
`secretsmanager:ListSecretVersionIds` (for `?version-id=` of a version without a staging
label) and `ssm:DescribeParameters`. Credentials come from the default chain (IRSA / pod
identity in a cluster), endpoints from the standard variables (AWS_ENDPOINT_URL,
AWS_ENDPOINT_URL_SECRETS_MANAGER, AWS_ENDPOINT_URL_SSM), which botocore reads itself.

Errors are told apart by their error code, never their HTTP status: a missing secret is
`ResourceNotFoundException` with status 400 on AWS (404 on moto).
API: https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_DescribeSecret.html,
https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_DescribeParameters.html
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any, Literal

import boto3
import botocore.exceptions
from botocore.config import Config

from webhook.backends import FOUND, BackendError, BackendName, Existence
from webhook.refs import AwsParameterRef, AwsSecretRef, SecretRef

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_ssm import SSMClient

log = logging.getLogger(__name__)

Service = Literal["secretsmanager", "ssm"]

# Codes meaning "this identity may not do that" (or is not a valid identity at all).
REFUSED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "IncompleteSignature",
    }
)
# Codes meaning "try again later".
UNAVAILABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "InternalFailure",
        "InternalServiceError",
        "InternalServerError",
        "ServiceUnavailable",
        "RequestTimeout",
    }
)
# SSM may answer a filtered DescribeParameters with empty pages and a NextToken.
MAX_PAGES = 10


class AwsClients:
    """boto3 clients per service and region, made once, shared by threads (clients are
    thread-safe; making them from one session is not, hence the lock)."""

    def __init__(self, timeout: float, session: boto3.Session | None = None) -> None:
        self._session = session or boto3.Session()
        self._lock = threading.Lock()
        self._clients: dict[tuple[Service, str], Any] = {}
        # One attempt with client-side timeouts: the review's deadline is the retry budget.
        self._config = Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
        )

    def region(self, region: str | None) -> str:
        chosen = region or self._session.region_name
        if not chosen:
            raise BackendError(
                "has no region (aws-region annotation, providers.aws.region or AWS_REGION)",
                "config",
            )
        return chosen

    def secrets_manager(self, region: str | None) -> SecretsManagerClient:
        client: SecretsManagerClient = self._client("secretsmanager", self.region(region))
        return client

    def ssm(self, region: str | None) -> SSMClient:
        client: SSMClient = self._client("ssm", self.region(region))
        return client

    def _client(self, service: Service, region: str) -> Any:
        with self._lock:
            client = self._clients.get((service, region))
            if client is None:
                try:
                    client = self._session.client(service, region_name=region, config=self._config)
                except botocore.exceptions.InvalidRegionError:
                    raise BackendError(f"has no region named {region!r}", "config") from None
                self._clients[(service, region)] = client
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


class SecretsManagerBackend:
    """`aws-sm:` references: the secret exists, is not scheduled for deletion, and has the
    version stage (AWSCURRENT by default) or version id the reference asks for."""

    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients

    @property
    def name(self) -> BackendName:
        return "aws-sm"

    def close(self) -> None:
        self._clients.close()

    def warm_up(self, region: str | None) -> None:
        with contextlib.suppress(BackendError):  # no region yet: annotations may bring one
            self._clients.secrets_manager(region)

    def check(self, target: SecretRef, region: str | None) -> Existence:
        assert isinstance(target, AwsSecretRef)
        client = self._clients.secrets_manager(region)
        try:
            meta = client.describe_secret(SecretId=target.name)
        except Exception as exc:
            if _code(exc) == "ResourceNotFoundException":
                return Existence(False, "secret not found")
            raise _failure(exc) from None
        if meta.get("DeletedDate") is not None:
            return Existence(False, "secret is scheduled for deletion")
        stages = meta.get("VersionIdsToStages") or {}
        if target.version_id is not None:
            if target.version_id in stages or self._is_deprecated_version(target, region):
                return FOUND
            return Existence(False, f"version id {target.version_id} not found")
        stage = target.version_stage or "AWSCURRENT"
        if any(stage in labels for labels in stages.values()):
            return FOUND
        if target.version_stage is None:
            return Existence(False, "secret has no current value (no AWSCURRENT version)")
        return Existence(False, f"version stage {stage} not found")

    def _is_deprecated_version(self, target: AwsSecretRef, region: str | None) -> bool:
        """DescribeSecret lists only versions with a staging label; a version without one
        ("deprecated") can still be fetched until Secrets Manager removes it."""
        client = self._clients.secrets_manager(region)
        token: str | None = None
        for _ in range(MAX_PAGES):
            try:
                if token is None:
                    page = client.list_secret_version_ids(
                        SecretId=target.name, IncludeDeprecated=True
                    )
                else:
                    page = client.list_secret_version_ids(
                        SecretId=target.name, IncludeDeprecated=True, NextToken=token
                    )
            except Exception as exc:
                if _code(exc) == "ResourceNotFoundException":
                    return False
                raise _failure(exc) from None
            if any(v.get("VersionId") == target.version_id for v in page.get("Versions", [])):
                return True
            token = page.get("NextToken")
            if not token:
                return False
        return False


class ParameterStoreBackend:
    """`aws-ssm:` references: the parameter exists (String, StringList or SecureString)."""

    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients

    @property
    def name(self) -> BackendName:
        return "aws-ssm"

    def close(self) -> None:
        self._clients.close()

    def warm_up(self, region: str | None) -> None:
        with contextlib.suppress(BackendError):
            self._clients.ssm(region)

    def check(self, target: SecretRef, region: str | None) -> Existence:
        assert isinstance(target, AwsParameterRef)
        client = self._clients.ssm(region)
        names = parameter_names(target.name)
        token: str | None = None
        for _ in range(MAX_PAGES):
            filters: Any = [{"Key": "Name", "Option": "Equals", "Values": names}]
            try:
                if token is None:
                    page = client.describe_parameters(ParameterFilters=filters)
                else:
                    page = client.describe_parameters(ParameterFilters=filters, NextToken=token)
            except Exception as exc:
                raise _failure(exc) from None
            if page.get("Parameters"):
                return FOUND
            token = page.get("NextToken")
            if not token:
                break
        return Existence(False, "parameter not found")


def parameter_names(name: str) -> list[str]:
    """The parameter names a reference may mean: an ARN is turned into its name.

    `arn:aws:ssm:<region>:<account>:parameter/a/b` names `/a/b`; `...:parameter/a` names
    `a` or `/a` (the ARN is the same for both), so both are asked for.
    """
    if not name.startswith("arn:"):
        return [name]
    _, _, resource = name.partition(":parameter")
    if not resource.startswith("/"):
        return [name]
    if resource.count("/") > 1:
        return [resource]
    return [resource[1:], resource]


def _code(exc: Exception) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def _failure(exc: Exception) -> BackendError:
    """Our error for a failed AWS call, by exception class or error code (never status)."""
    if isinstance(
        exc, botocore.exceptions.ReadTimeoutError | botocore.exceptions.ConnectTimeoutError
    ):
        return BackendError("did not answer in time", "timeout")
    if isinstance(exc, botocore.exceptions.SSLError):
        return BackendError("TLS handshake failed", "unreachable")
    if isinstance(
        exc,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectionClosedError
        | botocore.exceptions.ConnectionError,
    ):
        return BackendError("unreachable", "unreachable")
    if isinstance(
        exc,
        botocore.exceptions.NoCredentialsError
        | botocore.exceptions.PartialCredentialsError
        | botocore.exceptions.CredentialRetrievalError,
    ):
        return BackendError("has no credentials for the webhook (default chain)", "config")
    code = _code(exc)
    if code in REFUSED_CODES:
        return BackendError(f"refused the webhook's identity ({code})", "refused")
    if code in UNAVAILABLE_CODES:
        return BackendError(f"is unavailable ({code})", "unavailable")
    if code:
        return BackendError(f"answered with an error ({code})", "error")
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return BackendError(f"failed ({type(exc).__name__})", "error")
    log.exception("unexpected error talking to AWS")
    return BackendError(f"failed unexpectedly ({type(exc).__name__})", "error")
