"""The error tree: each error that denies a pod carries its admission status code.

Two channels: a malformed AdmissionReview is the API server's problem and gets an HTTP
error (`ReviewError`, 400/413); a pod we refuse gets HTTP 200 with `allowed: false` and
the error's `code` in `response.status` (`WebhookError`).
"""

from __future__ import annotations

from collections.abc import Sequence


class ReviewError(Exception):
    """The request is not a usable AdmissionReview v1: answered with an HTTP error."""

    def __init__(self, reason: str, http_status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status


class WebhookError(Exception):
    """Base for errors that deny a pod; `code` goes into response.status.code."""

    code = 500
    reason = "InternalError"

    def __init__(self, lines: str | Sequence[str]) -> None:
        self.lines: tuple[str, ...] = (lines,) if isinstance(lines, str) else tuple(lines)
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return "\n".join(self.lines)


class AnnotationError(WebhookError):
    """An annotation under our prefix is malformed or unknown."""

    code = 400
    reason = "BadRequest"


class PolicyError(WebhookError):
    """The pod breaks the platform's policy; one line per violation."""

    code = 403
    reason = "Forbidden"


class SecretNotFoundError(WebhookError):
    """A referenced secret (or version, or stage) does not exist."""

    code = 404
    reason = "NotFound"


class ConflictError(WebhookError):
    """The injection would clobber something the user wrote (an env var of the same name)."""

    code = 409
    reason = "Conflict"


class BackendUnavailableError(WebhookError):
    """A backend could not answer within the deadline, or refused our identity."""

    code = 503
    reason = "ServiceUnavailable"


class KubernetesError(WebhookError):
    """The Kubernetes API refused an object the webhook needs (a SecretProviderClass)."""

    code = 500
    reason = "InternalError"


class KubernetesUnavailableError(KubernetesError):
    """The Kubernetes API did not answer in time, failed, or refused the webhook's identity."""

    code = 503
    reason = "ServiceUnavailable"


class ConfigError(Exception):
    """A config or policy file is invalid; the message names the file, key and line."""
