"""A bounded TTL cache of existence answers, with single-flight loading.

Concurrent reviews asking about one reference share one backend call: the first starts
it, the others wait for the same result. Answers are kept for `ttl` (found) or
`negative_ttl` (missing, shorter, so a secret created after a denial is seen soon);
failures are never kept (the circuit breaker deals with those). The least recently used
entry goes first when the cache is full. Only existence answers are stored: no value.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from webhook.backends import Existence

K = TypeVar("K", bound=Hashable)

LookupResult = Literal["hit", "miss"]


@dataclass(frozen=True, slots=True)
class _Entry:
    value: Existence
    expires: float


class ExistenceCache(Generic[K]):
    """Existence answers by key, loaded once however many callers ask at the same time."""

    def __init__(
        self,
        ttl: float,
        negative_ttl: float,
        max_entries: int,
        on_lookup: Callable[[LookupResult], None] = lambda result: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_lookup = on_lookup
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, _Entry] = OrderedDict()
        self._flights: dict[K, asyncio.Future[Existence]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def cached(self, key: K) -> Existence | None:
        """The fresh answer for `key`, if there is one (and mark it recently used)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry.value

    def cached_all(self, keys: list[K]) -> dict[K, Existence] | None:
        """Fresh answers for every key (each counted as a hit), or None when any must be
        loaded (then nothing is counted: `get` counts each key)."""
        answers: dict[K, Existence] = {}
        for key in keys:
            value = self.cached(key)
            if value is None:
                return None
            answers[key] = value
        for _ in answers:
            self._on_lookup("hit")
        return answers

    async def get(self, key: K, load: Callable[[], Awaitable[Existence]]) -> Existence:
        """The answer for `key`: cached, joined to a load under way, or loaded now.

        A load's exception reaches every caller waiting for it. A caller that stops
        waiting (its review's deadline passed) does not cancel the load: others may be
        waiting for it, and its answer fills the cache. Joining a load counts as a hit:
        it costs the backend nothing.
        """
        value = self.cached(key)
        if value is not None:
            self._on_lookup("hit")
            return value
        flight = self._flights.get(key)
        if flight is not None:
            self._on_lookup("hit")
            return await asyncio.shield(flight)
        self._on_lookup("miss")
        flight = asyncio.ensure_future(self._load(key, load))
        self._flights[key] = flight
        # Everyone waiting may have given up: retrieve the exception so none goes unheard.
        flight.add_done_callback(_consume)
        return await asyncio.shield(flight)

    async def _load(self, key: K, load: Callable[[], Awaitable[Existence]]) -> Existence:
        try:
            value = await load()
            self._store(key, value)
            return value
        finally:
            self._flights.pop(key, None)

    def _store(self, key: K, value: Existence) -> None:
        ttl = self._ttl if value.found else self._negative_ttl
        if ttl <= 0:
            return
        now = self._clock()
        # Expired entries at the least recently used end go first, so memory follows the
        # references in use instead of growing to maxEntries with answers nobody asks for.
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.expires > now:
                break
            self._entries.popitem(last=False)
        self._entries[key] = _Entry(value, now + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        """Cancel loads under way (at shutdown)."""
        flights = list(self._flights.values())
        for flight in flights:
            flight.cancel()
        await asyncio.gather(*flights, return_exceptions=True)
        self._flights.clear()


def _consume(future: asyncio.Future[Existence]) -> None:
    if not future.cancelled():
        future.exception()
