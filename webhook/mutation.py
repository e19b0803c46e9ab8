"""build_patch(): the JSON Patch add operations for volumes, mounts, env and the marker.

INTERIM STUB: replaced by the core-language work (issue #2) within this session.
"""

from __future__ import annotations

from collections.abc import Sequence

from webhook.providers import SpcPlan
from webhook.refs import PodInjection
from webhook.review import PatchOp, RawPod
from webhook.settings import Settings


def build_patch(
    pod: RawPod, injection: PodInjection, plan: Sequence[SpcPlan], settings: Settings
) -> list[PatchOp]:
    raise NotImplementedError
