"""Structured logs: one JSON object per line, and the audit line of every admission decision.

`serve` logs to stdout and prints nothing else there; the other commands log to stderr
because their stdout is their output. Audit lines have the shape of the other JSON lines
(logger `secret_injector.audit`) but are written straight to the configured stream, not
through `logging`: a LogRecord, the handler chain and the formatter cost more than the
rest of a skipped review together. They are flushed once per event-loop turn, and a log
record flushes them before its own line, so the order of lines is kept.

No secret value ever reaches a log line: the webhook never reads one, and the audit line
carries references (paths), not values. The one place a value could pass through is a
pod's own literal env values (the plaintext policy looks at them): a record logged with
`extra=redacting(values)` has those values replaced by `[redacted]` everywhere, its
traceback included.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TextIO

import orjson

from webhook.pipeline import Decision
from webhook.review import AdmissionRequest

Level = Literal["debug", "info", "warning", "error"]

AUDIT = "secret_injector.audit"

# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_RECORD_FIELDS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)
# Libraries whose debug output may echo request or response bodies: never below warning.
QUIET_LOGGERS = ("botocore", "boto3", "urllib3", "kubernetes", "hvac", "asyncio")
# The LogRecord attribute holding the values to hide (a leading `_`: not a log field).
_REDACT = "_redact"
REDACTED = "[redacted]"
# Shorter literal values are left alone: replacing "1" or "on" everywhere would make a
# traceback unreadable, and values that short are not credentials.
MIN_REDACTED_LENGTH = 4


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "msg", ...extra fields, "error"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            entry["error"] = record.exc_text
        hidden: Sequence[str] = getattr(record, _REDACT, ())
        if hidden:
            entry = _redact(entry, hidden)
        return orjson.dumps(entry, default=str).decode()


_second: tuple[int, str] = (-1, "")


def _timestamp(created: float) -> str:
    """`2026-11-28T22:18:53.123Z` (UTC, milliseconds); the date and time of day are
    formatted once a second, since every review writes a line (datetime costs ~7 us)."""
    global _second
    seconds, millis = divmod(round(created * 1000), 1000)  # to the nearest millisecond
    if _second[0] != seconds:
        _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{_second[1]}.{millis:03d}Z"


class TextFormatter(logging.Formatter):
    """`secret-injector: warning: msg (key=value ...)` for commands a person reads."""

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(
            f"{key}={value}"
            for key, value in record.__dict__.items()
            if key not in _RECORD_FIELDS and not key.startswith("_")
        )
        text = f"secret-injector: {record.levelname.lower()}: {record.getMessage()}"
        text += f" ({extra})" if extra else ""
        if record.exc_info and record.exc_info[0] is not None:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        hidden: Sequence[str] = getattr(record, _REDACT, ())
        return str(_redact(text, hidden)) if hidden else text


def configure(
    level: Level = "info", stream: TextIO | None = None, *, structured: bool = True
) -> None:
    """Send every log record (ours, aiohttp's, the SDKs', warnings) to `stream`: JSON
    lines, or plain text when `structured` is false (for `explain` and the like)."""
    out = sys.stdout if stream is None else stream
    trail.flush()  # what was meant for the stream in use until now
    handler = _StreamHandler(out)
    handler.setFormatter(JsonFormatter() if structured else TextFormatter())
    trail.sink = out if structured and logging.getLevelName(level.upper()) <= logging.INFO else None
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    logging.captureWarnings(True)
    # No line shows the thread or process: do not look them up for every record (the
    # logging HOWTO's "Optimization"); the audit line alone is written once per review.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def redacting(values: Iterable[str]) -> dict[str, Any]:
    """`extra=` fields that make the formatter hide `values` in every field of the record."""
    kept = {v for v in values if len(v) >= MIN_REDACTED_LENGTH}
    return {_REDACT: tuple(sorted(kept, key=len, reverse=True))}  # longest first


def literal_env_values(pod: Mapping[str, Any] | None) -> list[str]:
    """The literal `env[].value`s of every container of a raw pod (init and ephemeral too)."""
    spec = pod.get("spec") if isinstance(pod, Mapping) else None
    if not isinstance(spec, Mapping):
        return []
    found = []
    for kind in ("containers", "initContainers", "ephemeralContainers"):
        containers = spec.get(kind)
        for container in containers if isinstance(containers, list) else ():
            env = container.get("env") if isinstance(container, Mapping) else None
            for var in env if isinstance(env, list) else ():
                value = var.get("value") if isinstance(var, Mapping) else None
                if isinstance(value, str) and value:
                    found.append(value)
    return found


def _redact(value: Any, hidden: Sequence[str]) -> Any:
    if isinstance(value, str):
        for secret in hidden:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, Mapping):
        return {key: _redact(item, hidden) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(item, hidden) for item in value]
    if value is None or isinstance(value, int | float):  # bool is an int
        return value
    return _redact(str(value), hidden)


class AuditTrail:
    """Audit lines for `sink` (None: not written), written together once per event-loop
    turn: one write(2) for every review answered in the turn, whatever the stream's
    buffering (the image sets PYTHONUNBUFFERED)."""

    def __init__(self) -> None:
        self.sink: TextIO | None = None
        self._lines: list[str] = []
        self._lock = threading.Lock()  # log records from worker threads flush too

    def write(self, entry: dict[str, Any]) -> None:
        if self.sink is None:
            return
        line = orjson.dumps(entry, default=str).decode()
        with self._lock:
            self._lines.append(line)
            if len(self._lines) > 1:
                return  # the first line of the turn scheduled the write
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # outside the server (a command, a test): at once
            self.flush()
            return
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the pending lines (a log record calls this before its own line)."""
        with self._lock:
            lines, self._lines = self._lines, []
            if not lines or self.sink is None:
                return
            try:
                self.sink.write("\n".join(lines) + "\n")
                self.sink.flush()
            except (OSError, ValueError) as exc:  # stdout gone: say so where we still can
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.write(f"secret-injector: {len(lines)} audit lines lost: {exc}\n")


class _StreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes the pending audit lines first, to keep lines in order."""

    def emit(self, record: logging.LogRecord) -> None:
        trail.flush()
        super().emit(record)


trail = AuditTrail()  # set by configure()


def audit(
    endpoint: str,
    req: AdmissionRequest,
    decision: Decision,
    duration_seconds: float,
    *,
    outcome: str | None = None,
) -> None:
    """The one audit line of a decision; `outcome` overrides the decision's (`error`)."""
    if trail.sink is None:
        return
    entry: dict[str, Any] = {
        "time": _timestamp(time.time()),
        "level": "info",
        "logger": AUDIT,
        "msg": "admission decision",
        "endpoint": endpoint,
        "uid": req.uid,
        "namespace": req.namespace,
        "pod": req.name,
        "owner": req.owner,
        "operation": req.operation,
        "kind": req.kind,
        "user": req.user,
        "dry_run": req.dry_run,
        "decision": "allowed" if decision.allowed else "denied",
        "outcome": outcome or decision.outcome,
        "references": _paths(tuple(decision.references)),
        "violations": decision.violations,
        "warnings": decision.warnings,
        "patch_operations": len(decision.patch),
        "duration_ms": round(duration_seconds * 1000, 3),
    }
    if decision.denial is not None:
        entry["code"] = decision.denial.code
        entry["reason"] = decision.denial.message
    trail.write(entry)


@functools.lru_cache(maxsize=1024)  # the pods of a template name the same references
def _paths(references: tuple[str, ...]) -> list[str]:
    """`scheme:path`: the key, version and stage are dropped (they are not values, but the
    audit trail is about which secrets a pod reaches). Shared: never to be changed."""
    return sorted({ref.split("#", 1)[0].split("?", 1)[0] for ref in references})
