"""Structured logs: one JSON object per line, and the audit line of every admission decision.

`serve` logs to stdout and prints nothing else there; the other commands log to stderr
because their stdout is their output. No secret value ever reaches a log line: the
webhook never reads one, and the audit line carries references (paths), not values.
"""

from __future__ import annotations

import datetime
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import Any, Literal, TextIO

import orjson

from webhook.pipeline import Decision
from webhook.review import AdmissionRequest

Level = Literal["debug", "info", "warning", "error"]

AUDIT = logging.getLogger("secret_injector.audit")

# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_RECORD_FIELDS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)
# Libraries whose debug output may echo request or response bodies: never below warning.
_QUIET = ("botocore", "boto3", "urllib3", "kubernetes", "hvac", "asyncio")


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "msg", ...extra fields, "error"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
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
        return orjson.dumps(entry, default=str).decode()


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
        return text


def configure(
    level: Level = "info", stream: TextIO | None = None, *, structured: bool = True
) -> None:
    """Send every log record (ours, aiohttp's, the SDKs', warnings) to `stream`: JSON
    lines, or plain text when `structured` is false (for `explain` and the like)."""
    handler = logging.StreamHandler(sys.stdout if stream is None else stream)
    handler.setFormatter(JsonFormatter() if structured else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    logging.captureWarnings(True)


def audit(
    endpoint: str,
    req: AdmissionRequest,
    decision: Decision,
    duration_seconds: float,
    *,
    outcome: str | None = None,
) -> None:
    """The one audit line of a decision; `outcome` overrides the decision's (`error`)."""
    fields: dict[str, Any] = {
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
        "references": _paths(decision.references),
        "violations": decision.violations,
        "warnings": decision.warnings,
        "patch_operations": len(decision.patch),
        "duration_ms": round(duration_seconds * 1000, 3),
    }
    if decision.denial is not None:
        fields["code"] = decision.denial.code
        fields["reason"] = decision.denial.message
    AUDIT.info("admission decision", extra=fields)


def _paths(references: Sequence[str]) -> list[str]:
    """`scheme:path`: the key, version and stage are dropped (they are not values, but the
    audit trail is about which secrets a pod reaches)."""
    return sorted({ref.split("#", 1)[0].split("?", 1)[0] for ref in references})
