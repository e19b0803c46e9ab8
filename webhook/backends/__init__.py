"""Secret backends: what a metadata-only existence check looks like, whichever the store.

A backend answers one question, "does this reference point at something the pod will be
able to fetch?", by reading metadata only (Vault KV v2 metadata or a KV v1 LIST, AWS
DescribeSecret, SSM DescribeParameters); no backend reads a secret value. A check is a
blocking call, made in a worker thread with client-side timeouts (see verification.py).
What metadata cannot tell, a backend cannot check: whether a key exists inside a Vault
secret or inside a JSON Secrets Manager secret (that takes the value), so a `#key` is
never verified, only the secret (and its pinned version) that holds it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Protocol

from webhook.refs import AwsParameterRef, AwsSecretRef, SecretRef, VaultRef

BackendName = Literal["vault", "aws-sm", "aws-ssm"]

# What went wrong when a backend could not answer. Transient kinds count towards the
# circuit breaker; the others mean the backend answered and refused, or we are misconfigured.
FailureKind = Literal["timeout", "unreachable", "unavailable", "refused", "config", "error"]
TRANSIENT: frozenset[FailureKind] = frozenset({"timeout", "unreachable", "unavailable"})


@dataclass(frozen=True, slots=True)
class Existence:
    """A backend's answer: found, or missing and why ("version 3 not found")."""

    found: bool
    problem: str = ""


FOUND = Existence(found=True)


class BackendError(Exception):
    """The backend gave no answer: unreachable, too slow, or refusing the webhook's identity.

    `reason` completes "<backend> ..." ("unreachable (connection refused)") and never holds
    a secret value or a credential.
    """

    def __init__(self, reason: str, kind: FailureKind) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind: FailureKind = kind

    @property
    def transient(self) -> bool:
        return self.kind in TRANSIENT


class Backend(Protocol):
    """One secret store, checked by metadata only. `check` blocks; run it in a thread."""

    @property
    def name(self) -> BackendName: ...

    def check(self, target: SecretRef, region: str | None) -> Existence:
        """Whether `target` exists; raises BackendError when the store cannot tell."""
        ...

    def warm_up(self, region: str | None) -> None:
        """Best effort, at start-up: make clients and log in, so the first review does not
        pay for it within its deadline. Never raises."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Lookup:
    """What one check asks, stripped of what metadata cannot see (the key inside a secret).

    Two annotations naming different keys of one secret make one Lookup, so one call.
    """

    backend: BackendName
    region: str | None  # AWS only: the region the pod's CSI provider will use
    target: SecretRef


def lookup_for(ref: SecretRef, region: str | None) -> Lookup:
    """The Lookup that checks `ref`; `region` is the pod's effective AWS region."""
    if isinstance(ref, VaultRef):
        return Lookup("vault", None, dataclasses.replace(ref, key=""))
    if isinstance(ref, AwsSecretRef):
        return Lookup("aws-sm", region, dataclasses.replace(ref, json_key=None))
    if isinstance(ref, AwsParameterRef):
        return Lookup("aws-ssm", region, ref)
    raise TypeError(f"unknown reference type {type(ref).__name__}")  # a bug, not input
