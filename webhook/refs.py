"""Value types for secret references and the injections parsed from a pod's annotations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Delivery = Literal["file", "env"]
Provider = Literal["vault", "aws"]


@dataclass(frozen=True, slots=True)
class VaultRef:
    """`vault:<api-path>#<key>[?version=<n>]`: one key of a Vault/OpenBao KV secret."""

    path: str  # API path as written, KV v2 includes `data/`: secret/data/prod/db
    key: str
    version: int | None = None

    @property
    def scheme(self) -> str:
        return "vault"

    @property
    def provider(self) -> Provider:
        return "vault"

    def __str__(self) -> str:
        pinned = f"?version={self.version}" if self.version is not None else ""
        return f"vault:{self.path}#{self.key}{pinned}"


@dataclass(frozen=True, slots=True)
class AwsSecretRef:
    """`aws-sm:<name-or-arn>[#<json-key>][?version-stage=S | ?version-id=I]`."""

    name: str
    json_key: str | None = None
    version_stage: str | None = None
    version_id: str | None = None

    @property
    def scheme(self) -> str:
        return "aws-sm"

    @property
    def provider(self) -> Provider:
        return "aws"

    def __str__(self) -> str:
        key = f"#{self.json_key}" if self.json_key is not None else ""
        if self.version_stage is not None:
            return f"aws-sm:{self.name}{key}?version-stage={self.version_stage}"
        if self.version_id is not None:
            return f"aws-sm:{self.name}{key}?version-id={self.version_id}"
        return f"aws-sm:{self.name}{key}"


@dataclass(frozen=True, slots=True)
class AwsParameterRef:
    """`aws-ssm:<parameter-name>`: an SSM Parameter Store parameter."""

    name: str

    @property
    def scheme(self) -> str:
        return "aws-ssm"

    @property
    def provider(self) -> Provider:
        return "aws"

    def __str__(self) -> str:
        return f"aws-ssm:{self.name}"


SecretRef = VaultRef | AwsSecretRef | AwsParameterRef


@dataclass(frozen=True, slots=True)
class Injection:
    """One `file.<name>` or `env.<NAME>` annotation: what to deliver, how, from where."""

    annotation: str  # the full annotation key, named in every message about it
    delivery: Delivery
    target: str  # the file name or the env var name
    ref: SecretRef


@dataclass(frozen=True, slots=True)
class UnknownKey:
    """An annotation under our prefix that is not part of the language."""

    annotation: str
    suggestion: str | None  # the closest known key ("file.db"), if any is close


@dataclass(frozen=True, slots=True)
class PodInjection:
    """Everything an opted-in pod asked for through its annotations."""

    injections: tuple[Injection, ...]
    vault_role: str | None = None
    aws_region: str | None = None
    containers: tuple[str, ...] | None = None  # None: every app container
    mount_path: str = "/mnt/secrets"
    unknown_keys: tuple[UnknownKey, ...] = ()

    @property
    def providers(self) -> tuple[Provider, ...]:
        """The CSI providers in use, in a stable order."""
        used = {i.ref.provider for i in self.injections}
        return tuple(p for p in ("vault", "aws") if p in used)
