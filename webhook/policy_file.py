"""The policy file: YAML in, a `Policy` out; and `PolicySource`, the policy in force.

The file's keys are the fields of webhook/policy.py in camelCase (see examples/policy.yaml
and the README's Policy section). Conveniences on top of that schema: a rule may be
written as just its action (`envFromSecrets: warn` for `envFromSecrets: {action: warn}`);
an unquoted `off`, which YAML 1.1 reads as false, means off; `secretVolumes.maxMode` is a
quoted octal string (`"0440"`), because YAML reads an unquoted `0440` as octal and `440`
as decimal, a difference nobody sees in a review.

A mounted ConfigMap changes by an atomic symlink swap that sends no inotify event on the
file itself, so `PolicySource` polls the file's content hash; a broken new file is
refused, logged once, and the previous policy stays in force.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from webhook import config_file, globs
from webhook.errors import ConfigError
from webhook.metrics import Metrics
from webhook.policy import RULES, Policy

log = logging.getLogger(__name__)

ACTIONS = ("deny", "warn", "off")
_OCTAL = re.compile(r"0?o?([0-7]{1,4})")


def load(path: str | Path) -> Policy:
    """Read and validate a policy file; raises ConfigError naming file, line and key."""
    return build(config_file.read_file(path))


def loads(text: str, source: str = "<policy>") -> Policy:
    """Validate policy text (what `load` does after reading the file)."""
    return build(config_file.read_document(text, source))


def build(doc: config_file.Document) -> Policy:
    """A Policy from a parsed document, shorthands expanded."""
    data = doc.data
    if isinstance(data, dict):
        data = dict(data)
        for rule in RULES:
            value = data.get(rule)
            if isinstance(value, str | bool):
                data[rule] = {"action": _action(doc, (rule,), value)}
            elif isinstance(value, dict) and isinstance(value.get("action"), bool):
                data[rule] = {**value, "action": _action(doc, (rule, "action"), value["action"])}
        volumes = data.get("secretVolumes")
        if isinstance(volumes, dict) and "maxMode" in volumes:
            volumes = dict(volumes)
            volumes["maxMode"] = _mode(doc, volumes["maxMode"])
            data["secretVolumes"] = volumes
        _check_globs(doc, data)
    return config_file.build(Policy, config_file.Document(doc.source, data, doc.lines))


def _check_globs(doc: config_file.Document, data: dict[str, Any]) -> None:
    """Check every glob where it is written, so an error names its exact key and line.

    (The dataclasses check them again, for policies built in Python.)
    """
    checks = {
        "refs": globs.check_ref_glob,
        "namespaces": globs.check_name_glob,
        "excludeNamespaces": globs.check_name_glob,
        "serviceAccounts": globs.check_name_glob,
    }
    for rule in ("allowedRefs", "delivery"):
        grants = data.get(rule, {}).get("grants") if isinstance(data.get(rule), dict) else None
        for i, grant in enumerate(grants if isinstance(grants, list) else []):
            for key, check in checks.items():
                items = grant.get(key) if isinstance(grant, dict) else None
                for j, item in enumerate(items if isinstance(items, list) else []):
                    if isinstance(item, str):
                        try:
                            check(item)
                        except ValueError as exc:
                            raise doc.error(
                                (rule, "grants", str(i), key, str(j)), str(exc)
                            ) from None


def _action(doc: config_file.Document, path: tuple[str, ...], value: str | bool) -> str:
    if value is False:  # YAML 1.1 reads an unquoted `off` as false
        return "off"
    if value not in ACTIONS:
        shown = "a boolean" if isinstance(value, bool) else repr(value)
        raise doc.error(path, f"must be one of {' | '.join(ACTIONS)}, got {shown}")
    return str(value)


def _mode(doc: config_file.Document, value: Any) -> int:
    path = ("secretVolumes", "maxMode")
    if not isinstance(value, str):
        raise doc.error(
            path,
            'must be a quoted octal mode like "0440" (YAML reads 0440 as octal and 440 as '
            f"decimal), got {_show(value)}",
        )
    match = _OCTAL.fullmatch(value.strip())
    if match is None:
        raise doc.error(path, f'must be an octal mode like "0440", got {value!r}')
    return int(match.group(1), 8)


def _show(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"the number {value} (octal {value:04o})"
    return repr(value)


class PolicySource:
    """The policy in force, reloaded from its file when the file's content changes.

    Without a file, the default `Policy()` is in force and never changes. The first load
    happens in the constructor and raises ConfigError: a webhook must not start with a
    policy nobody wrote. Later loads never raise: a broken edit is logged and ignored.
    """

    def __init__(
        self,
        path: str | Path | None,
        *,
        interval_seconds: float = 5.0,
        metrics: Metrics | None = None,
        on_change: Callable[[Policy], None] | None = None,
    ) -> None:
        self.path = None if path is None else Path(path)
        self.interval_seconds = interval_seconds
        self._metrics = metrics
        self._on_change = on_change
        self._policy = Policy()
        self._applied: str | None = None  # digest of the file behind the policy in force
        self._seen: str | None = None  # digest of the last content looked at
        if self.path is not None:
            digest, result = _read(self.path)
            if isinstance(result, ConfigError):
                raise result
            self._policy, self._applied, self._seen = result, digest, digest

    @property
    def policy(self) -> Policy:
        return self._policy

    def poll(self) -> bool:
        """Look at the file once; True when a new policy took effect."""
        if self.path is None:
            return False
        return self._apply(*_read(self.path))

    async def watch(self) -> None:
        """Poll every `interval_seconds` until cancelled (run it as a task)."""
        if self.path is None:
            return
        while True:
            await asyncio.sleep(self.interval_seconds)
            self._apply(*await asyncio.to_thread(_read, self.path))

    def _apply(self, digest: str, result: Policy | ConfigError) -> bool:
        if digest == self._seen:
            return False  # unchanged, or the same broken content already reported
        self._seen = digest
        if isinstance(result, ConfigError):
            log.error(
                "policy file rejected, the previous policy stays in force",
                extra={"policy_file": str(self.path), "error": str(result)},
            )
            self._count("rejected")
            return False
        if digest == self._applied:
            log.info("policy file is back to the policy in force", extra=self._fields())
            return False
        self._policy, self._applied = result, digest
        log.info("policy reloaded", extra=self._fields())
        self._count("applied")
        if self._on_change is not None:
            self._on_change(result)
        return True

    def _fields(self) -> dict[str, str]:
        return {"policy_file": str(self.path), "policy_sha256": self._applied or ""}

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.policy_reloads.labels(result).inc()


def _read(path: Path) -> tuple[str, Policy | ConfigError]:
    """(digest of the content, the policy or why it is refused). Blocking: run off the loop."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return f"unreadable: {exc}", ConfigError(f"{path}: cannot read: {exc}")
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return digest, ConfigError(f"{path}: not UTF-8: {exc}")
    try:
        return digest, loads(text, str(path))
    except ConfigError as exc:
        return digest, exc
