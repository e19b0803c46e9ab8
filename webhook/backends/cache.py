"""A bounded TTL cache of existence answers, with single-flight loading.

Concurrent reviews asking about one reference share one backend call: the first starts
it, the others wait for the same result. Answers are kept for `ttl` (found) or
`negative_ttl` (missing, shorter, so a secret created after a denial is seen soon);
failures are never kept (the circuit breaker deals with those). The least recently used
entry goes first when the cache is full. Only existence answers are stored: no value.

A load is started with a `land` callback rather than awaited as a coroutine: the loader
calls it on the event loop with the answer, and it hands the answer straight to each
caller's own future. On a busy event loop every hop between futures and tasks waits
for a whole loop iteration (every review ready in it); a backend answer reaches the
review in two hops (the thread's call_soon_threadsafe, then the review's wake-up)
instead of the seven of a load task awaited through shields and asyncio.wait.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from webhook.backends import BackendError, Existence

K = TypeVar("K", bound=Hashable)

LookupResult = Literal["hit", "miss"]
Answer = Existence | BackendError  # a backend's answer, or why there is none
Land = Callable[[Answer], None]  # called once, on the event loop, with a load's answer
Loader = Callable[[K, Land], None]  # starts loading a key; must not block


@dataclass(slots=True)
class _Flight:
    """A load under way and the futures of the callers waiting for it."""

    waiters: list[asyncio.Future[Answer]] = field(default_factory=list)


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
        self._flights: dict[K, _Flight] = {}

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

    def now(self) -> float:
        """The cache's clock, that `fresh_until` answers in."""
        return self._clock()

    def fresh_until(self, keys: Iterable[K]) -> float:
        """When the first of the answers kept for `keys` expires (0 when one is not kept)."""
        until = math.inf
        for key in keys:
            entry = self._entries.get(key)
            if entry is None:
                return 0.0
            until = min(until, entry.expires)
        return until

    def count_hits(self, count: int) -> None:
        """Count `count` answers that a caller kept from this cache as hits."""
        for _ in range(count):
            self._on_lookup("hit")

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

    def get(self, key: K, load: Loader[K]) -> asyncio.Future[Answer]:
        """A future for the answer to `key`: cached (done already), joined to a load under
        way, or loaded now by `load(key, land)`. Call from the event loop.

        The future is the caller's own: cancelling it (the review's deadline passed)
        stops only this caller's wait. The load goes on for the others, and its answer
        fills the cache. Joining a load counts as a hit: it costs the backend nothing.
        """
        waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        value = self.cached(key)
        if value is not None:
            self._on_lookup("hit")
            waiter.set_result(value)
            return waiter
        flight = self._flights.get(key)
        if flight is not None:
            self._on_lookup("hit")
            flight.waiters.append(waiter)
            return waiter
        self._on_lookup("miss")
        flight = self._flights[key] = _Flight([waiter])
        load(key, lambda answer: self._land(key, flight, answer))
        return waiter

    def _land(self, key: K, flight: _Flight, answer: Answer) -> None:
        if self._flights.get(key) is not flight:
            return  # the cache was closed meanwhile
        del self._flights[key]
        if isinstance(answer, Existence):
            self._store(key, answer)
        for waiter in flight.waiters:
            if not waiter.done():  # cancelled: that caller stopped waiting
                waiter.set_result(answer)
        flight.waiters.clear()

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

    def close(self) -> None:
        """At shutdown: every wait under way is answered "shutting down" (a review still
        in flight then follows onBackendError); answers landing later are dropped."""
        closing = BackendError("is shutting down", "unavailable")
        for flight in self._flights.values():
            for waiter in flight.waiters:
                if not waiter.done():
                    waiter.set_result(closing)
            flight.waiters.clear()
        self._flights.clear()
