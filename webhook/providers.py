"""SecretProviderClass objects for the vault and aws CSI providers. No I/O.

INTERIM STUB: replaced by the core-language work (issue #2) within this session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from webhook.refs import PodInjection, Provider
from webhook.review import AdmissionRequest
from webhook.settings import Settings


@dataclass(frozen=True, slots=True)
class SpcPlan:
    """One SecretProviderClass and how the pod uses it."""

    provider: Provider
    name: str  # content-addressed: same annotations, same name
    body: dict[str, Any]  # the SecretProviderClass object
    volume_name: str
    mount_path: str
    env: tuple[tuple[str, str], ...]  # (ENV_NAME, key in the synced Secret named `name`)


def plan(req: AdmissionRequest, pod: PodInjection, settings: Settings) -> list[SpcPlan]:
    raise NotImplementedError
