"""Vault / OpenBao existence checks through hvac, reading KV metadata only, never a value.

KV v2: `GET <mount>/metadata/<path>` (the reference's `<mount>/data/<path>` is what the
pod's CSI provider reads; we map it to the metadata endpoint): the secret exists, and its
current or pinned version exists and is neither deleted nor destroyed. KV v1 has no
metadata: `LIST <mount>/<parent>` shows whether the leaf exists. Which mount a path is in,
and its KV version, comes from `sys/internal/ui/mounts/<path>` (answered for any token
that may use the path, no sudo), cached. Neither endpoint lists the keys inside a secret,
so `#key` cannot be checked without reading the value, and is not.

Grant the webhook's identity only this (KV v2 mount `secret/`, KV v1 mount `kv/`):

    path "secret/metadata/*" { capabilities = ["read"] }
    path "kv/*"              { capabilities = ["list"] }
    path "sys/mounts"        { capabilities = ["read"] }  # optional: tells a typo'd mount
                                                           # from one we may not use

Vault API: https://openbao.org/api-docs/secret/kv/kv-v2/#read-secret-metadata and
https://openbao.org/api-docs/secret/kv/kv-v1/#list-secrets.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import hvac
import hvac.exceptions
import requests

from webhook.backends import FOUND, BackendError, BackendName, Existence
from webhook.refs import SecretRef, VaultRef
from webhook.settings import VaultProvider

log = logging.getLogger(__name__)

T = TypeVar("T")

# Re-login on a 403 at most this often: a 403 is also the answer for a path we may not use,
# and each of those must not cost a login.
RELOGIN_INTERVAL_SECONDS = 10.0
# Renew the webhook's own login when this share of its token's TTL has passed.
RENEW_AT = 0.75


@dataclass(frozen=True, slots=True)
class Mount:
    """A secrets engine mount: `path` ends with a slash ("secret/")."""

    path: str
    type: str
    kv_version: int  # 1 or 2 for kv mounts, 0 for any other engine


def kv2_existence(
    metadata: Mapping[str, Any], version: int | None, now: datetime | None = None
) -> Existence:
    """Whether the current (or pinned) version described by KV v2 `metadata` is readable."""
    now = now or datetime.now(UTC)
    versions = metadata.get("versions") or {}
    current = int(metadata.get("current_version") or 0)
    if version is None:
        if current == 0 or str(current) not in versions:
            return Existence(False, "secret has no version")
        label = f"current version {current}"
        state = versions[str(current)]
    else:
        if str(version) not in versions:
            return Existence(False, f"version {version} not found (current is {current})")
        label = f"version {version}"
        state = versions[str(version)]
    if state.get("destroyed"):
        return Existence(False, f"{label} is destroyed")
    deletion = state.get("deletion_time") or ""
    if deletion and _parse_time(deletion) <= now:
        return Existence(False, f"{label} is deleted")
    return FOUND


def kv_split(mount: Mount, path: str) -> tuple[str, str] | Existence:
    """Split `path` inside `mount` into (endpoint kind, rest), or say why it cannot exist.

    KV v2 references carry `data/` after the mount (the API path the CSI provider reads);
    the metadata of `secret/data/a/b` is at `secret/metadata/a/b`.
    """
    rest = path[len(mount.path) :]
    if mount.kv_version == 2:
        if not rest.startswith("data/"):
            return Existence(False, f"KV v2 paths need data/ after the mount: {mount.path}data/")
        rest = rest[len("data/") :]
    if not rest or rest.endswith("/"):
        return Existence(False, "path names a folder, not a secret")
    return ("metadata" if mount.kv_version == 2 else "list", rest)


def _parse_time(text: str) -> datetime:
    # Vault writes RFC 3339 with nanoseconds; Python 3.11's fromisoformat accepts that.
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)  # unreadable: do not call it deleted


class VaultBackend:
    """Checks `vault:` references against one Vault/OpenBao with the webhook's own identity."""

    def __init__(
        self,
        config: VaultProvider,
        timeout: float,
        mount_ttl: float,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._config = config
        self._env = os.environ if env is None else env
        self._mount_ttl = mount_ttl
        self._mounts: dict[str, tuple[Mount, float]] = {}
        self._auth_lock = threading.Lock()
        self._renew_at = 0.0  # monotonic time to log in (again); 0: not logged in yet
        self._last_login = -RELOGIN_INTERVAL_SECONDS
        self._lost_contact = False  # unreachable since the last login: re-login on a 403
        self._client: hvac.Client | None = None
        if config.address:
            self._client = hvac.Client(
                url=config.address,
                token="",  # never hvac's own VAULT_TOKEN / ~/.vault-token lookup
                verify=config.ca_cert or True,
                # (connect, read): a dead or slow Vault frees the thread after this.
                timeout=(timeout, timeout),  # type: ignore[arg-type]  # requests accepts a pair
                namespace=config.namespace,
            )

    @property
    def name(self) -> BackendName:
        return "vault"

    def close(self) -> None:
        if self._client is not None:
            self._client.adapter.close()

    def warm_up(self, region: str | None) -> None:
        if self._client is None:
            return  # no Vault here; a vault: reference is answered "address is not configured"
        try:
            self._login(force=False)
        except BackendError as error:
            log.warning("vault login at start-up failed: vault %s", error.reason)

    def check(self, target: SecretRef, region: str | None) -> Existence:
        """Whether the KV secret (and pinned version) behind `target` exists."""
        assert isinstance(target, VaultRef)
        if any(part in ("", ".", "..") for part in target.path.rstrip("/").split("/")):
            return Existence(False, "not a valid Vault path")
        mount = self._mount(target.path)
        if mount is None:
            first = target.path.split("/", 1)[0]
            return Existence(False, f"no secrets engine is mounted at {first}/")
        if mount.kv_version == 0:
            # Reading another engine's path may mint credentials (database/creds/...):
            # there is nothing to check without reading, so we don't.
            return FOUND
        split = kv_split(mount, target.path)
        if isinstance(split, Existence):
            return split
        kind, rest = split
        if kind == "metadata":
            metadata = self._data("get", f"{mount.path}metadata/{rest}")
            if metadata is None:
                return Existence(False, "secret not found")
            return kv2_existence(metadata, target.version)
        parent, _, leaf = rest.rpartition("/")
        listing = self._data("list", mount.path + (parent + "/" if parent else ""))
        if listing is None or leaf not in (listing.get("keys") or []):
            return Existence(False, "secret not found")
        return FOUND

    # -- mounts ---------------------------------------------------------------------------

    def _mount(self, path: str) -> Mount | None:
        now = time.monotonic()
        for mount_path, (known, expires) in list(self._mounts.items()):
            if path.startswith(mount_path) and expires > now:
                return known
        try:
            data = self._authenticated(lambda: self._get(f"sys/internal/ui/mounts/{path}"))
        except hvac.exceptions.Forbidden:
            # The same 403 answers "no mount there" and "you may not use this path".
            return self._mount_from_list(path)
        if data is None:
            return None
        mount = _mount_of(data.get("data") or {})
        if mount is None:
            return None
        self._mounts[mount.path] = (mount, now + self._mount_ttl)
        return mount

    def _mount_from_list(self, path: str) -> Mount | None:
        """Tell a missing mount from a forbidden path, when we may read sys/mounts."""
        try:
            listing = self._authenticated(lambda: self._get("sys/mounts"))
        except hvac.exceptions.Forbidden:
            raise _refused() from None
        mounts = (listing or {}).get("data") or {}
        if any(path.startswith(mount_path) for mount_path in mounts):
            raise _refused()
        return None

    # -- requests -------------------------------------------------------------------------

    def _data(self, method: str, path: str) -> dict[str, Any] | None:
        """The `data` of a GET or LIST of `path`, or None on 404."""
        try:
            body = self._authenticated(lambda: self._request(method, path))
        except hvac.exceptions.Forbidden:
            raise _refused() from None
        if body is None:
            return None
        data = body.get("data")
        return data if isinstance(data, dict) else {}

    def _get(self, path: str) -> dict[str, Any] | None:
        return self._request("get", path)

    def _request(self, method: str, path: str) -> dict[str, Any] | None:
        """One request; None on 404; our errors for everything but 403 (raised as is)."""
        client = self._require_client()
        try:
            response = client.adapter.request(method, "/v1/" + quote(path, safe="/"))
        except hvac.exceptions.InvalidPath:
            return None
        except hvac.exceptions.Forbidden:
            raise
        except Exception as exc:
            raise _failure(exc) from None
        if isinstance(response, dict):
            return response
        return {}  # 204 No Content and the like: exists, nothing to read

    # -- the webhook's identity -----------------------------------------------------------

    def _require_client(self) -> hvac.Client:
        if self._client is None:
            raise BackendError(
                "address is not configured (providers.vault.address or VAULT_ADDR)", "config"
            )
        return self._client

    def _authenticated(self, call: Callable[[], T]) -> T:
        """Run `call` logged in; on a 403, log in again (token expired, Vault restarted)."""
        self._login(force=False)
        try:
            return call()
        except hvac.exceptions.Forbidden:
            recent = time.monotonic() - self._last_login < RELOGIN_INTERVAL_SECONDS
            if recent and not self._lost_contact:
                raise
            self._login(force=True)
            return call()
        except BackendError as error:
            if error.transient:
                # Vault may come back as a new server that no longer knows our token.
                self._lost_contact = True
            raise

    def _login(self, force: bool) -> None:
        with self._auth_lock:
            if not force and time.monotonic() < self._renew_at:
                return
            client = self._require_client()
            auth = self._config.auth
            self._last_login = time.monotonic()
            self._lost_contact = False
            if auth.method == "token":
                client.token = self._token()
                # A token file may be rotated by an agent: read it again now and then.
                self._renew_at = (
                    self._last_login + RELOGIN_INTERVAL_SECONDS if auth.token_file else math.inf
                )
                return
            try:
                answer = self._log_in(client)
            except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest) as exc:
                log.warning("vault %s login refused: %s", auth.method, type(exc).__name__)
                raise BackendError(
                    f"refused the webhook's identity ({auth.method} login failed)", "refused"
                ) from None
            except hvac.exceptions.InvalidPath:
                raise BackendError(
                    f"refused the webhook's identity (no {auth.method} auth mount)", "refused"
                ) from None
            except BackendError:
                raise
            except Exception as exc:
                raise _failure(exc) from None
            lease = _lease_seconds(answer)
            self._renew_at = self._last_login + lease * RENEW_AT if lease > 0 else math.inf

    def _log_in(self, client: hvac.Client) -> Any:
        """AppRole or Kubernetes login; hvac keeps the token it returns on the client."""
        auth = self._config.auth
        if auth.method == "approle":
            if not auth.role_id:
                raise BackendError("approle login needs providers.vault.auth.roleId", "config")
            return client.auth.approle.login(
                role_id=auth.role_id,
                secret_id=_read_secret_file(auth.secret_id_file, "secretIdFile"),
                mount_point=auth.approle_mount_path,
            )
        return client.auth.kubernetes.login(
            role=auth.role,
            jwt=_read_secret_file(auth.service_account_token_file, "serviceAccountTokenFile"),
            mount_point=auth.mount_path,
        )

    def _token(self) -> str:
        file = self._config.auth.token_file
        if file is not None:
            return _read_secret_file(file, "tokenFile")
        token = self._env.get("VAULT_TOKEN", "")
        if not token:
            raise BackendError(
                "token auth needs VAULT_TOKEN or providers.vault.auth.tokenFile", "config"
            )
        return token


def _mount_of(data: Mapping[str, Any]) -> Mount | None:
    path = data.get("path")
    if not isinstance(path, str) or not path:
        return None
    engine = str(data.get("type") or "")
    version = 0
    if engine in ("kv", "generic"):
        options = data.get("options") or {}
        version = 2 if str(options.get("version") or "1") == "2" else 1
    return Mount(path=path if path.endswith("/") else path + "/", type=engine, kv_version=version)


def _lease_seconds(answer: Any) -> float:
    if isinstance(answer, dict):
        auth = answer.get("auth") or {}
        try:
            return float(auth.get("lease_duration") or 0)
        except (TypeError, ValueError):
            return 0.0
    return 0.0


def _read_secret_file(path: str | None, key: str) -> str:
    if not path:
        raise BackendError(f"providers.vault.auth.{key} is not set", "config")
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise BackendError(f"cannot read {key} {path} ({exc.strerror})", "config") from None


def _refused() -> BackendError:
    # Vault answers 403 alike for a path the policy does not grant and for a token it does
    # not know: both are "the webhook's identity was refused".
    return BackendError("refused the webhook's identity (permission denied)", "refused")


def _failure(exc: Exception) -> BackendError:
    """Our error for anything but 403/404 while talking to Vault; never a credential."""
    if isinstance(exc, requests.exceptions.Timeout):
        return BackendError("did not answer in time", "timeout")
    if isinstance(exc, requests.exceptions.SSLError):
        return BackendError("TLS handshake failed (check providers.vault.caCert)", "unreachable")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return BackendError("unreachable", "unreachable")
    if isinstance(exc, hvac.exceptions.VaultDown):
        return BackendError("is sealed or down (503)", "unavailable")
    if isinstance(exc, hvac.exceptions.RateLimitExceeded):
        return BackendError("is rate limiting the webhook (429)", "unavailable")
    if isinstance(exc, hvac.exceptions.Unauthorized):
        return BackendError("refused the webhook's identity (401)", "refused")
    if isinstance(
        exc,
        hvac.exceptions.InternalServerError
        | hvac.exceptions.BadGateway
        | hvac.exceptions.VaultNotInitialized,
    ):
        return BackendError(f"failed ({type(exc).__name__})", "unavailable")
    if isinstance(exc, hvac.exceptions.VaultError):
        return BackendError(f"answered with an error ({type(exc).__name__})", "error")
    log.exception("unexpected error talking to vault")
    return BackendError(f"failed unexpectedly ({type(exc).__name__})", "error")
