"""The decision cache: the pure part of a /mutate decision, computed once per pod template.

The pods of one ReplicaSet, Job or StatefulSet differ only in name, uid, ownerReferences
and managedFields. What annotation parsing, the policy, SPC planning and patching read is
the namespace, the annotations and the spec (the service account is in the spec), so
those, together with the policy in force, decide the result. A node drain recreating 300
pods of 10 Deployments costs 10 full runs instead of 300.

Verification and SPC creation are not cached here: they have their own caches (with
their own TTLs, negative answers and failures that are never kept), and they depend on
things outside the pod (the backends, the cluster). So an entry never outlives an
existence answer, a backend error is never cached, and dry-run reviews still create
nothing. Entries expire after `ttlSeconds` and the least recently used go first when the
cache is full; a policy reload empties it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from webhook.errors import WebhookError
from webhook.policy import Policy, Violation
from webhook.refs import PodInjection
from webhook.review import AdmissionRequest, PatchOp

LookupResult = Literal["hit", "miss"]
Key = tuple[str, bytes, bytes]  # namespace, annotations (JSON), spec (JSON as sent)


@dataclass(frozen=True, slots=True)
class Template:
    """What every pod of one template gets, before verification and SPC creation.

    `denial` comes from the annotations or the policy (it precedes verification);
    `plan_denial` from planning the SPCs and the patch (it follows verification), so a
    cached template answers exactly as a full run would. Shared by reviews: never mutated.
    """

    pod: PodInjection | None  # None when the annotations could not be parsed
    references: tuple[str, ...] = ()
    violations: tuple[Violation, ...] = ()
    denial: WebhookError | None = None
    spcs: tuple[dict[str, Any], ...] = ()
    patch: tuple[PatchOp, ...] = ()
    encoded_patch: str = ""  # review.encode_patch(patch): the same for every pod
    plan_denial: WebhookError | None = None


@dataclass(frozen=True, slots=True)
class _Entry:
    template: Template
    expires: float


def key(req: AdmissionRequest) -> Key:
    """What a /mutate decision depends on: the namespace, the annotations and the spec.

    The spec as the API server sent it (`req.spec_json`), not a digest of it: a dict
    lookup compares the bytes, so two templates never share an entry, and hashing 5-50 KiB
    with SHA-256 costs 2-3 times Python's own hash of them. Two specs that differ only in
    how they are written (key order, spacing) get two entries: a miss, never a wrong hit.
    The price is memory: an entry holds its spec (2-50 KiB).
    """
    return (req.namespace, orjson.dumps(req.annotations), req.spec_json)


class DecisionCache:
    """Templates by key, for `ttl` seconds, at most `max_entries`, under one policy."""

    def __init__(
        self,
        ttl: float,
        max_entries: int,
        on_lookup: Callable[[LookupResult], None] = lambda result: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._on_lookup = on_lookup
        self._clock = clock
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._policy: Policy | None = None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def enabled(self) -> bool:
        return self._ttl > 0 and self._max_entries > 0

    def get(self, key: Key, policy: Policy) -> Template | None:
        """The fresh template for `key` under `policy`, else None (counted as a miss)."""
        if policy is not self._policy:  # reloaded: every entry was decided by another
            self._entries.clear()
            self._policy = policy
        entry = self._entries.get(key)
        if entry is not None and entry.expires > self._clock():
            self._entries.move_to_end(key)
            self._on_lookup("hit")
            return entry.template
        if entry is not None:
            del self._entries[key]
        self._on_lookup("miss")
        return None

    def put(self, key: Key, policy: Policy, template: Template) -> None:
        """Keep `template`, decided under `policy`; ignored if the policy changed since."""
        if policy is not self._policy or not self.enabled:
            return
        self._entries[key] = _Entry(template, self._clock() + self._ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
