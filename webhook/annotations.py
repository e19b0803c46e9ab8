"""Annotation keys and the reference grammar: annotations in, a PodInjection out. No I/O.

INTERIM STUB: replaced by the core-language work (issue #2) within this session.
"""

from __future__ import annotations

from collections.abc import Mapping

from webhook.refs import PodInjection
from webhook.settings import Settings


def parse(annotations: Mapping[str, str], settings: Settings) -> PodInjection | None:
    """None when the pod is not opted in; raises AnnotationError listing every problem."""
    raise NotImplementedError


def check_injected(annotations: Mapping[str, str], settings: Settings) -> None:
    """Raise PolicyError when an opted-in pod lacks the `status: injected` marker."""
    raise NotImplementedError
