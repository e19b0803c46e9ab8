"""Settings: one frozen object built once from the config file; every default lives here."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from webhook import config_file

VerifyMode = Literal["off", "warn", "enforce"]
OnBackendError = Literal["warn", "deny"]


@dataclass(frozen=True, slots=True)
class Listen:
    address: str = "0.0.0.0"
    port: int = 8443
    metrics_address: str = "0.0.0.0"
    metrics_port: int = 9090
    # After SIGTERM: seconds to keep serving with readiness failing (while the endpoint
    # leaves the Service), then seconds to finish in-flight reviews; together below the
    # pod's terminationGracePeriodSeconds.
    shutdown_delay_seconds: float = 0.0
    shutdown_timeout_seconds: float = 20.0
    # A request body not received within this is refused (400): the API server sends it at
    # once, and a stalled client must not hold a handler and a connection indefinitely.
    body_timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        for name, port in (("port", self.port), ("metricsPort", self.metrics_port)):
            if not 0 <= port <= 65535:
                raise ValueError(f"{name} must be between 0 and 65535, got {port}")
        if self.shutdown_delay_seconds < 0 or self.shutdown_timeout_seconds < 0:
            raise ValueError("shutdownDelaySeconds and shutdownTimeoutSeconds must not be negative")
        if self.body_timeout_seconds <= 0:
            raise ValueError("bodyTimeoutSeconds must be positive")


@dataclass(frozen=True, slots=True)
class SelfManagedTls:
    """The self-managed CA (webhook/selfsigned.py): one CA and serving certificate in a
    Secret shared by every replica, written to certFile/keyFile, caBundle kept in sync."""

    enabled: bool = False
    secret_name: str = "secret-injector-tls"
    # None: the pod's namespace (POD_NAMESPACE, else the service account's namespace file).
    namespace: str | None = None
    # The Service the API server calls; the certificate names <svc>, <svc>.<ns>, <svc>.<ns>.svc
    # and <svc>.<ns>.svc.cluster.local.
    service_name: str = "secret-injector"
    # Webhook configurations (by name) whose webhooks get our CA as clientConfig.caBundle.
    mutating_webhook_configurations: tuple[str, ...] = ()
    validating_webhook_configurations: tuple[str, ...] = ()
    validity_days: int = 90
    renew_before_days: int = 30
    ca_validity_days: int = 3650
    # A new CA joins the bundle this long before the old one ends; both stay trusted meanwhile.
    ca_renew_before_days: int = 365
    # How often each replica re-reads the Secret, renews when due and re-checks caBundle.
    check_interval_seconds: float = 300.0

    def __post_init__(self) -> None:
        if not 0 < self.renew_before_days < self.validity_days:
            raise ValueError("selfManaged: renewBeforeDays must be between 0 and validityDays")
        if not self.renew_before_days < self.ca_renew_before_days < self.ca_validity_days:
            raise ValueError(
                "selfManaged: caRenewBeforeDays must be above renewBeforeDays and below "
                "caValidityDays (a serving certificate never outlives its CA)"
            )
        if self.check_interval_seconds <= 0:
            raise ValueError("selfManaged: checkIntervalSeconds must be positive")


@dataclass(frozen=True, slots=True)
class Tls:
    cert_file: str = "/etc/secret-injector/tls/tls.crt"
    key_file: str = "/etc/secret-injector/tls/tls.key"
    # Mounted Secrets change by symlink swap, without inotify events: poll.
    reload_interval_seconds: float = 5.0
    self_managed: SelfManagedTls = field(default_factory=SelfManagedTls)


@dataclass(frozen=True, slots=True)
class VaultAuth:
    """How the webhook itself logs in to Vault to read metadata (never values)."""

    method: Literal["kubernetes", "token", "approle"] = "kubernetes"
    # kubernetes: the webhook's role and service-account token file.
    role: str = "secret-injector"
    mount_path: str = "kubernetes"
    service_account_token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    # token: VAULT_TOKEN, or this file.
    token_file: str | None = None
    # approle: role id and a file holding the secret id.
    role_id: str | None = None
    secret_id_file: str | None = None
    approle_mount_path: str = "approle"


@dataclass(frozen=True, slots=True)
class VaultProvider:
    address: str | None = None  # None: VAULT_ADDR
    # The auth mount the *pods* log in through (vault-csi-provider vaultKubernetesMountPath).
    auth_mount_path: str = "kubernetes"
    # The role pods log in with when they don't say; {namespace} and {serviceAccount} expand.
    default_role: str = "{namespace}"
    namespace: str | None = None  # Vault Enterprise namespace
    ca_cert: str | None = None  # None: VAULT_CACERT
    auth: VaultAuth = field(default_factory=VaultAuth)


@dataclass(frozen=True, slots=True)
class AwsProvider:
    region: str | None = None  # None: AWS_REGION / AWS_DEFAULT_REGION
    # How pods authenticate to AWS through the CSI provider: IRSA (false) or EKS Pod
    # Identity (true); the SPC parameter `usePodIdentity` of the AWS provider.
    use_pod_identity: bool = False


@dataclass(frozen=True, slots=True)
class Providers:
    vault: VaultProvider = field(default_factory=VaultProvider)
    aws: AwsProvider = field(default_factory=AwsProvider)


@dataclass(frozen=True, slots=True)
class Verify:
    mode: VerifyMode = "warn"
    # Deadline for all backend checks of one review; keep it well below the webhook
    # configuration's timeoutSeconds (5 in the chart).
    timeout_seconds: float = 1.0
    cache_ttl_seconds: float = 60.0
    negative_cache_ttl_seconds: float = 10.0
    cache_max_entries: int = 10_000
    on_backend_error: OnBackendError = "warn"
    # Circuit breaker: this many consecutive failures open it for resetSeconds.
    breaker_failures: int = 5
    breaker_reset_seconds: float = 10.0
    # Backend calls in flight at once (each blocks a thread); more wait within the deadline.
    max_concurrent_calls: int = 16

    def __post_init__(self) -> None:
        if not 0 < self.timeout_seconds <= 10:
            raise ValueError(f"timeoutSeconds must be in (0, 10], got {self.timeout_seconds}")
        if self.cache_ttl_seconds < 0 or self.negative_cache_ttl_seconds < 0:
            raise ValueError("cache TTLs must not be negative")
        if self.cache_max_entries < 1:
            raise ValueError("cacheMaxEntries must be at least 1")
        if self.breaker_failures < 1:
            raise ValueError("breakerFailures must be at least 1")
        if self.breaker_reset_seconds <= 0:
            raise ValueError("breakerResetSeconds must be positive")
        if self.max_concurrent_calls < 1:
            raise ValueError("maxConcurrentCalls must be at least 1")


@dataclass(frozen=True, slots=True)
class Kubernetes:
    manage_secret_provider_classes: bool = True
    # Deadline for one API call made during a review.
    timeout_seconds: float = 2.0
    # None: in-cluster config, else ~/.kube/config; unreachable: SPCs are only reported.
    kubeconfig: str | None = None
    # SPCs known to exist (per owner) skip the API call for this long; bounds how long an
    # SPC deleted behind our back stays missing for new pods.
    cache_ttl_seconds: float = 120.0
    cache_max_entries: int = 10_000

    def __post_init__(self) -> None:
        if not 0 < self.timeout_seconds <= 10:
            raise ValueError(f"timeoutSeconds must be in (0, 10], got {self.timeout_seconds}")
        if self.cache_ttl_seconds < 0 or self.cache_max_entries < 1:
            raise ValueError("cacheTTLSeconds must not be negative, cacheMaxEntries at least 1")


@dataclass(frozen=True, slots=True)
class Decisions:
    """The decision cache (webhook/decisions.py): policy, SPCs and patch per pod template."""

    # How long one template's result is reused; 0 turns the cache off.
    ttl_seconds: float = 60.0
    # An entry holds its key (the spec as JSON) and the patch: ~20 KiB for a typical pod,
    # ~60 KiB for a large one.
    max_entries: int = 256

    def __post_init__(self) -> None:
        if self.ttl_seconds < 0 or self.max_entries < 1:
            raise ValueError("ttlSeconds must not be negative, maxEntries at least 1")


@dataclass(frozen=True, slots=True)
class Logging:
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True, slots=True)
class Settings:
    listen: Listen = field(default_factory=Listen)
    tls: Tls = field(default_factory=Tls)
    annotation_prefix: str = "secret-injector.io"
    default_mount_path: str = "/mnt/secrets"
    providers: Providers = field(default_factory=Providers)
    verify: Verify = field(default_factory=Verify)
    policy_file: str | None = None
    kubernetes: Kubernetes = field(default_factory=Kubernetes)
    decision_cache: Decisions = field(default_factory=Decisions)
    logging: Logging = field(default_factory=Logging)
    max_body_bytes: int = 3 * 1024 * 1024

    def __post_init__(self) -> None:
        prefix = self.annotation_prefix.rstrip("/")
        if not prefix or "/" in prefix or " " in prefix:
            raise ValueError(
                f"annotationPrefix must be a DNS subdomain like secret-injector.io, "
                f"got {self.annotation_prefix!r}"
            )
        if not self.default_mount_path.startswith("/"):
            raise ValueError("defaultMountPath must be an absolute path")

    @property
    def prefix(self) -> str:
        """The annotation prefix with its trailing slash: `secret-injector.io/`."""
        return self.annotation_prefix.rstrip("/") + "/"

    @classmethod
    def load(cls, path: str | Path, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate a config file; raises ConfigError naming file, line and key."""
        settings = config_file.build(cls, config_file.read_file(path))
        return settings.with_environment(os.environ if env is None else env)

    def with_environment(self, env: Mapping[str, str]) -> Settings:
        """Fill what the file left unset from the backends' standard variables."""
        vault = self.providers.vault
        aws = self.providers.aws
        vault = replace(
            vault,
            address=vault.address or env.get("VAULT_ADDR"),
            ca_cert=vault.ca_cert or env.get("VAULT_CACERT"),
            namespace=vault.namespace or env.get("VAULT_NAMESPACE"),
        )
        aws = replace(
            aws, region=aws.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        )
        return replace(self, providers=Providers(vault=vault, aws=aws))
