"""Policy: which references a namespace may use and how secrets may be exposed. No I/O.

Interim core version: only the `unknownAnnotations` rule (deny). The policy issue (#4)
replaces this module with the full rule set and the policy file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from webhook.refs import PodInjection
from webhook.review import AdmissionRequest

Action = Literal["deny", "warn", "off"]


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str
    where: str
    what: str
    fix: str
    action: Literal["deny", "warn"]

    @property
    def line(self) -> str:
        """`<rule>: <where>: <what> (<how to fix>)`."""
        return f"{self.rule}: {self.where}: {self.what} ({self.fix})"


@dataclass(frozen=True, slots=True)
class Policy:
    unknown_annotations: Action = "deny"


def check(
    req: AdmissionRequest, pod: PodInjection | None, policy: Policy, stage: str
) -> list[Violation]:
    """Every violation of `policy` by the request, denials and warnings alike."""
    del req, stage
    if pod is None or policy.unknown_annotations == "off":
        return []
    return [
        Violation(
            "unknownAnnotations",
            unknown.annotation,
            "unknown annotation"
            + (f", did you mean {unknown.suggestion}?" if unknown.suggestion else ""),
            "see the annotation list in the README",
            policy.unknown_annotations,
        )
        for unknown in pod.unknown_keys
    ]
