"""ExistenceCache: TTLs, bound, single-flight; driven by a fake clock, no sleeping."""

from __future__ import annotations

import asyncio

import pytest

from webhook.backends import FOUND, BackendError, Existence
from webhook.backends.cache import ExistenceCache, Land, LookupResult

MISSING = Existence(False, "secret not found")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Loader:
    """Counts loads; lands `value` at once, or when `release()` is called after `hold()`."""

    def __init__(self, value: Existence | BackendError) -> None:
        self.value = value
        self.calls = 0
        self.held: list[Land] | None = None

    def hold(self) -> None:
        self.held = []

    def release(self) -> None:
        assert self.held is not None
        for land in self.held:
            land(self.value)
        self.held = None

    def __call__(self, key: str, land: Land) -> None:
        self.calls += 1
        if self.held is None:
            land(self.value)
        else:
            self.held.append(land)


def make_cache(
    clock: Clock, lookups: list[LookupResult] | None = None, max_entries: int = 100
) -> ExistenceCache[str]:
    record = lookups.append if lookups is not None else (lambda result: None)
    return ExistenceCache(
        ttl=60, negative_ttl=10, max_entries=max_entries, on_lookup=record, clock=clock
    )


@pytest.mark.parametrize(
    ("value", "ttl"),
    [pytest.param(FOUND, 60, id="found-positive-ttl"), pytest.param(MISSING, 10, id="missing")],
)
async def test_cache_keeps_an_answer_for_its_ttl(value: Existence, ttl: float) -> None:
    clock = Clock()
    cache = make_cache(clock)
    load = Loader(value)
    assert await cache.get("k", load) == value
    clock.now += ttl - 0.01
    assert await cache.get("k", load) == value
    assert load.calls == 1
    clock.now += 0.02
    assert await cache.get("k", load) == value
    assert load.calls == 2


async def test_cache_never_keeps_a_failure() -> None:
    cache = make_cache(Clock())
    failure = BackendError("unreachable", "unreachable")
    load = Loader(failure)
    for _ in range(2):
        assert await cache.get("k", load) is failure
    assert load.calls == 2
    assert len(cache) == 0


async def test_cache_zero_ttl_keeps_nothing() -> None:
    cache: ExistenceCache[str] = ExistenceCache(ttl=0, negative_ttl=0, max_entries=10)
    load = Loader(FOUND)
    await cache.get("k", load)
    await cache.get("k", load)
    assert load.calls == 2


async def test_cache_evicts_the_least_recently_used_beyond_its_bound() -> None:
    cache = make_cache(Clock(), max_entries=2)
    loads = {key: Loader(FOUND) for key in "abc"}
    await cache.get("a", loads["a"])
    await cache.get("b", loads["b"])
    await cache.get("a", loads["a"])  # a is now the most recently used
    await cache.get("c", loads["c"])  # evicts b
    assert len(cache) == 2
    assert cache.cached("a") == FOUND
    assert cache.cached("b") is None
    assert cache.cached("c") == FOUND


async def test_cache_drops_expired_answers_when_storing_new_ones() -> None:
    clock = Clock()
    cache = make_cache(clock)
    for key in "abcd":
        await cache.get(key, Loader(MISSING))
    assert len(cache) == 4
    clock.now += 11  # past the negative TTL: a..d are stale, none was asked for again
    await cache.get("e", Loader(FOUND))
    assert len(cache) == 1
    assert cache.cached("e") == FOUND


async def test_cache_concurrent_callers_share_one_load_and_its_failure() -> None:
    lookups: list[LookupResult] = []
    cache = make_cache(Clock(), lookups)
    load = Loader(BackendError("unreachable", "unreachable"))
    load.hold()
    waiters = [cache.get("k", load) for _ in range(10)]
    assert not any(w.done() for w in waiters)
    load.release()
    results = await asyncio.gather(*waiters)
    assert load.calls == 1
    assert all(isinstance(r, BackendError) for r in results)
    assert sorted(lookups) == ["hit"] * 9 + ["miss"]


async def test_cache_a_caller_giving_up_does_not_cancel_the_shared_load() -> None:
    cache = make_cache(Clock())
    load = Loader(FOUND)
    load.hold()
    impatient = cache.get("k", load)
    patient = cache.get("k", load)
    impatient.cancel()
    load.release()
    assert await patient == FOUND
    assert impatient.cancelled()
    assert cache.cached("k") == FOUND
    assert load.calls == 1


async def test_cache_close_answers_the_waits_and_drops_late_answers() -> None:
    cache = make_cache(Clock())
    load = Loader(FOUND)
    load.hold()
    waiter = cache.get("k", load)
    cache.close()
    answer = await waiter
    assert isinstance(answer, BackendError)
    assert (answer.reason, answer.kind) == ("is shutting down", "unavailable")
    load.release()  # the backend answers after shutdown began
    assert cache.cached("k") is None


async def test_cache_answers_a_hit_with_a_done_future() -> None:
    """A cached answer costs the review no wait on the event loop."""
    cache = make_cache(Clock())
    load = Loader(FOUND)
    await cache.get("k", load)
    hit = cache.get("k", load)
    assert hit.done() and hit.result() == FOUND
    assert load.calls == 1
