"""The self-managed CA: one CA and serving certificate in a Secret that every replica shares.

On start-up and every `tls.selfManaged.checkIntervalSeconds`, each replica:
1. reads the Secret; when it is absent, creates it with a new CA and serving certificate.
   Replicas racing: the first create wins (201), the others get 409 AlreadyExists and load
   the winner's;
2. renews what is due (`renew`), replacing the Secret conditionally on its resourceVersion:
   a replica that loses that race (409 Conflict) loads the winner's instead;
3. writes the serving pair to tls.keyFile and tls.certFile, which the TLS loader reloads
   (key first: the loader keeps serving the old pair while the two do not match);
4. sets `clientConfig.caBundle` of every webhook of the named webhook configurations to the
   CA bundle when it differs: a strategic merge patch (merge key: webhook name) conditional
   on the configuration's resourceVersion.

Renewal: a serving certificate is issued again `renewBeforeDays` before its end, or at once
when it no longer fits (other names, untrusted issuer, wrong key). A CA
`caRenewBeforeDays` before its end gets a successor that joins the bundle next to it; the
old CA stays trusted until it expires, and serving certificates move to the new CA only
once it has been in the bundle for PUBLISH_DELAY, so that the API servers trust it first.
Certificates are ECDSA P-256, built by webhook/certs.py (shared with `secret-injector certs`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from webhook import certs
from webhook.certs import BACKDATE, Authority, cert_pem, key_pem, write_pem
from webhook.errors import ConfigError, KubernetesError, KubernetesUnavailableError, WebhookError
from webhook.kube import ATTEMPTS, MANAGED_BY, MANAGER, KubeApi, Obj, StatusError, open_api
from webhook.settings import SelfManagedTls, Settings, Tls

log = logging.getLogger("secret_injector.selfsigned")

# A new CA is in the caBundle this long before it signs serving certificates.
PUBLISH_DELAY = timedelta(hours=1)
# On a Secret: ours to replace when it cannot be read (e.g. created empty by the chart).
MARKER = "secret-injector.io/self-managed-ca"
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True, slots=True)
class Bundle:
    """What the Secret holds: the signing CA, every CA still trusted, the serving pair."""

    signer: Authority
    trusted: tuple[x509.Certificate, ...]  # the caBundle, signer first
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def ca_bundle(self) -> bytes:
        return b"".join(cert_pem(cert) for cert in self.trusted)

    def secret_data(self) -> dict[str, str]:
        """Secret `data`: ca.crt (bundle), ca.key (signer's key), tls.crt, tls.key."""
        files = {
            "ca.crt": self.ca_bundle,
            "ca.key": key_pem(self.signer.key),
            "tls.crt": cert_pem(self.cert),
            "tls.key": key_pem(self.key),
        }
        return {name: base64.b64encode(pem).decode("ascii") for name, pem in files.items()}

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str]) -> Bundle:
        """Read a Secret's data; ValueError when it is not a complete, consistent bundle."""
        try:
            pems = {name: base64.b64decode(data[name], validate=True) for name in _KEYS}
        except KeyError as missing:
            raise ValueError(f"no {missing} key") from None
        trusted = x509.load_pem_x509_certificates(pems["ca.crt"])
        signer_key = _ec_key(pems["ca.key"])
        signers = [c for c in trusted if c.public_key() == signer_key.public_key()]
        if not signers:
            raise ValueError("ca.key belongs to no certificate in ca.crt")
        signer = Authority(signers[0], signer_key)
        others = tuple(c for c in trusted if c != signers[0])
        return cls(
            signer, (signer.cert, *others), _certificate(pems["tls.crt"]), _ec_key(pems["tls.key"])
        )


_KEYS = ("ca.crt", "ca.key", "tls.crt", "tls.key")


@dataclass(frozen=True, slots=True)
class Lifetimes:
    validity: timedelta
    renew_before: timedelta
    ca_validity: timedelta
    ca_renew_before: timedelta

    @classmethod
    def of(cls, settings: SelfManagedTls) -> Lifetimes:
        return cls(
            timedelta(days=settings.validity_days),
            timedelta(days=settings.renew_before_days),
            timedelta(days=settings.ca_validity_days),
            timedelta(days=settings.ca_renew_before_days),
        )


# ------------------------------------------------------------------ certificates (pure)


def make_authority(now: datetime, lifetime: timedelta) -> Authority:
    """A new CA; the date in its name tells CAs apart in a bundle holding two."""
    return certs.make_authority(
        f"secret-injector CA {now:%Y-%m-%d %H:%M:%S}", now=now, lifetime=lifetime
    )


def issue_serving_cert(
    ca: Authority, dns_names: Sequence[str], now: datetime, lifetime: timedelta
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A serving certificate for the Service's names (no IP addresses), never outliving `ca`."""
    return certs.issue_serving_cert(ca, dns_names, (), now=now, lifetime=lifetime)


def renew(
    bundle: Bundle | None, names: Sequence[str], now: datetime, life: Lifetimes
) -> Bundle | None:
    """The bundle to store instead of `bundle`, or None when it is fine as it is."""
    if bundle is None:
        ca = make_authority(now, life.ca_validity)
        return Bundle(ca, (ca.cert,), *issue_serving_cert(ca, names, now, life.validity))
    signer = bundle.signer
    # An expired CA leaves the bundle (a signer that is not due for renewal is not expired).
    trusted = tuple(c for c in bundle.trusted if c.not_valid_after_utc > now)
    if signer.cert.not_valid_after_utc - now <= life.ca_renew_before:
        signer = make_authority(now, life.ca_validity)
        trusted = (signer.cert, *trusted)
    due = bundle.cert.not_valid_after_utc - now <= life.renew_before
    published = signer.cert.not_valid_before_utc + BACKDATE + PUBLISH_DELAY <= now
    if not fits(bundle, trusted, names, now) or (due and published):
        return Bundle(signer, trusted, *issue_serving_cert(signer, names, now, life.validity))
    if signer is bundle.signer and trusted == bundle.trusted:
        return None
    return Bundle(signer, trusted, bundle.cert, bundle.key)


def fits(
    bundle: Bundle, trusted: Sequence[x509.Certificate], names: Sequence[str], now: datetime
) -> bool:
    """The serving pair matches, names exactly `names`, is signed by a trusted CA, and is
    valid for longer than a new CA takes to be published."""
    cert = bundle.cert
    if cert.public_key() != bundle.key.public_key():
        return False
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc - PUBLISH_DELAY:
        return False
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    if set(sans.get_values_for_type(x509.DNSName)) != set(names):
        return False
    return any(_issued_by(cert, ca) for ca in trusted)


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _certificate(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _ec_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("not an ECDSA key")
    return key


def _utcnow() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------ the Kubernetes side


class SelfManagedCa:
    """Keeps the shared CA Secret, the serving files and the caBundles in step."""

    def __init__(
        self,
        api: KubeApi,
        settings: Settings,
        namespace: str,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.api = api
        self.tls: Tls = settings.tls
        self.conf = settings.tls.self_managed
        self.namespace = namespace
        self.names = certs.cluster_names(self.conf.service_name, namespace)
        self.life = Lifetimes.of(self.conf)
        self.clock = clock
        self.bundle: Bundle | None = None
        # Whether, at the end of the last pass, every named caBundle held our CA bundle.
        self.in_sync = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """First sync (raises when it fails: the webhook cannot serve), then keep syncing."""
        await self.sync()
        self._task = asyncio.create_task(self._keep_syncing(), name="self-managed-ca")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.api.close()

    async def sync(self) -> Bundle:
        """One pass: the Secret (created or renewed when due), the files, the caBundles.

        `in_sync` changes only at the end: a failed pass leaves the files being served, and
        readiness built on it does not flap while a pass runs."""
        try:
            bundle = await self._ensure_secret()
        except StatusError as exc:
            raise KubernetesUnavailableError(
                f"self-managed CA: Secret {self._where}: {exc.status} {exc.reason} "
                f"({exc.message}); the webhook's service account needs get, create and update "
                "on that Secret"
            ) from None
        except KubernetesError as exc:  # from KubeApi.call: unreachable, no answer in time
            raise type(exc)(f"self-managed CA: Secret {self._where}: {exc.message}") from None
        self.bundle = bundle
        await asyncio.to_thread(self._write_files, bundle)
        self.in_sync = await self._sync_ca_bundles(bundle)
        return bundle

    async def _keep_syncing(self) -> None:
        while True:
            # Jitter keeps replicas started together from syncing in lockstep.
            await asyncio.sleep(self.conf.check_interval_seconds * random.uniform(0.9, 1.1))
            try:
                await self.sync()
            except (WebhookError, ConfigError, OSError) as exc:
                log.error("self-managed CA: sync failed, retrying later: %s", exc)

    async def _ensure_secret(self) -> Bundle:
        for _ in range(ATTEMPTS):
            secret = await self._read_secret()
            current = self._parse(secret)
            new = renew(current, self.names, self.clock(), self.life)
            if new is None:
                assert current is not None  # renew(None, ...) always makes a bundle
                return current
            try:
                if secret is None:
                    await self.api.call(
                        self.api.core.create_namespaced_secret, self.namespace, self._secret(new)
                    )
                    log.info("self-managed CA: created Secret %s", self._where)
                else:
                    await self.api.call(
                        self.api.core.replace_namespaced_secret,
                        self.conf.secret_name,
                        self.namespace,
                        self._secret(new, secret),
                    )
                    log.info("self-managed CA: renewed Secret %s", self._where)
            except StatusError as exc:
                if exc.status in (404, 409):  # another replica got there first: read theirs
                    continue
                raise
            return new
        raise KubernetesUnavailableError(
            f"self-managed CA: Secret {self._where} kept changing under us ({ATTEMPTS} attempts)"
        )

    @property
    def _where(self) -> str:
        return f"{self.namespace}/{self.conf.secret_name}"

    async def _read_secret(self) -> Obj | None:
        try:
            return await self.api.call(
                self.api.core.read_namespaced_secret, self.conf.secret_name, self.namespace
            )
        except StatusError as exc:
            if exc.status == 404:
                return None
            raise

    def _parse(self, secret: Obj | None) -> Bundle | None:
        """The Secret's bundle; None when absent or unreadable but ours to replace."""
        if secret is None:
            return None
        try:
            return Bundle.from_secret_data(secret.get("data") or {})
        except ValueError as exc:
            labels = secret.get("metadata", {}).get("labels") or {}
            if labels.get(MARKER) != "true":
                raise ConfigError(
                    f"tls.selfManaged: Secret {self._where} exists but is not a secret-injector "
                    f"CA ({exc}) and has no {MARKER}=true label; delete it or choose another "
                    "secretName"
                ) from None
            log.warning(
                "self-managed CA: Secret %s unreadable (%s): replacing it", self._where, exc
            )
            return None

    def _secret(self, bundle: Bundle, current: Obj | None = None) -> Obj:
        """The Secret to create, or `current` with the new bundle (and its resourceVersion)."""
        if current is None:
            current = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": self.conf.secret_name, "namespace": self.namespace},
                "type": "kubernetes.io/tls",
            }
        secret = dict(current)
        meta = dict(secret["metadata"])
        meta["labels"] = {**(meta.get("labels") or {}), MARKER: "true"}
        meta["labels"].setdefault(MANAGED_BY, MANAGER)
        secret["metadata"] = meta
        secret["data"] = bundle.secret_data()
        return secret

    def _write_files(self, bundle: Bundle) -> None:
        """Write the serving pair where the TLS loader reads it, when it changed."""
        key, cert = Path(self.tls.key_file), Path(self.tls.cert_file)
        wanted = ((key, key_pem(bundle.key), True), (cert, cert_pem(bundle.cert), False))
        if all(_read(path) == data for path, data, _ in wanted):
            return
        for path, data, private in wanted:  # the key first (see the module docstring)
            write_pem(path, data, private=private)
        log.info("self-managed CA: serving certificate written to %s", cert)

    async def _sync_ca_bundles(self, bundle: Bundle) -> bool:
        """Patch every named webhook configuration whose caBundle differs; True when all
        hold ours now."""
        wanted = base64.b64encode(bundle.ca_bundle).decode("ascii")
        admission = self.api.admission
        targets: list[tuple[str, Callable[..., Any], Callable[..., Any], str]] = [
            (
                "MutatingWebhookConfiguration",
                admission.read_mutating_webhook_configuration,
                admission.patch_mutating_webhook_configuration,
                name,
            )
            for name in self.conf.mutating_webhook_configurations
        ]
        targets += [
            (
                "ValidatingWebhookConfiguration",
                admission.read_validating_webhook_configuration,
                admission.patch_validating_webhook_configuration,
                name,
            )
            for name in self.conf.validating_webhook_configurations
        ]
        in_sync = True
        for kind, read, patch, name in targets:
            try:
                in_sync &= await self._sync_ca_bundle(kind, read, patch, name, wanted)
            except (StatusError, KubernetesUnavailableError) as exc:
                log.error(
                    "self-managed CA: cannot set the caBundle of %s %s: %s (the webhook's "
                    "service account needs get and patch on it)",
                    kind,
                    name,
                    exc,
                )
                in_sync = False
        return in_sync

    async def _sync_ca_bundle(
        self,
        kind: str,
        read: Callable[..., Any],
        patch: Callable[..., Any],
        name: str,
        wanted: str,
    ) -> bool:
        for _ in range(ATTEMPTS):
            try:
                config = await self.api.call(read, name)
            except StatusError as exc:
                if exc.status == 404:
                    log.warning("self-managed CA: %s %s not found", kind, name)
                    return False
                raise
            stale = [
                hook["name"]
                for hook in config.get("webhooks") or []
                if (hook.get("clientConfig") or {}).get("caBundle") != wanted
            ]
            if not stale:
                return True
            body = {
                "metadata": {"resourceVersion": config["metadata"]["resourceVersion"]},
                "webhooks": [{"name": h, "clientConfig": {"caBundle": wanted}} for h in stale],
            }
            try:
                await self.api.call(patch, name, body)  # strategic merge: by webhook name
            except StatusError as exc:
                if exc.status == 409:  # changed since we read it: read again
                    continue
                raise
            log.info("self-managed CA: caBundle set on %s %s (%s)", kind, name, ", ".join(stale))
            return True
        return False


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def own_namespace(settings: SelfManagedTls) -> str:
    """tls.selfManaged.namespace, else POD_NAMESPACE, else the service account's namespace."""
    if settings.namespace:
        return settings.namespace
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return NAMESPACE_FILE.read_text(encoding="utf-8").strip()
    except OSError:
        raise ConfigError(
            "tls.selfManaged.namespace is not set and neither POD_NAMESPACE nor "
            f"{NAMESPACE_FILE} tells the webhook's namespace"
        ) from None


def open_self_managed_ca(settings: Settings) -> SelfManagedCa | None:
    """The self-managed CA when tls.selfManaged.enabled, else None; `await ca.start()`
    before serving, `await ca.close()` on shutdown."""
    if not settings.tls.self_managed.enabled:
        return None
    api = open_api(settings)
    if api is None:
        raise ConfigError(
            "tls.selfManaged.enabled needs the Kubernetes API (in-cluster, or "
            "kubernetes.kubeconfig)"
        )
    return SelfManagedCa(api, settings, own_namespace(settings.tls.self_managed))
