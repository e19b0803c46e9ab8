"""CircuitBreaker state machine, driven by a fake clock."""

from __future__ import annotations

from webhook.backends.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(failures=3, reset_seconds=10, clock=Clock())
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # the streak is broken
    breaker.record_failure()
    breaker.record_failure()
    assert (breaker.state, breaker.allow()) == ("closed", True)
    breaker.record_failure()
    assert (breaker.state, breaker.allow()) == ("open", False)


def test_breaker_lets_one_probe_through_after_the_reset_time() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, reset_seconds=10, clock=clock)
    breaker.record_failure()
    clock.now += 9.9
    assert breaker.allow() is False
    assert round(breaker.retry_in(), 1) == 0.1
    clock.now += 0.1
    assert breaker.state == "half-open"
    assert breaker.allow() is True  # the probe
    assert breaker.allow() is False  # everyone else waits for it


def test_breaker_probe_success_closes_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, reset_seconds=10, clock=clock)
    breaker.record_failure()
    clock.now += 10
    assert breaker.allow()
    breaker.record_success()
    assert (breaker.state, breaker.failures, breaker.allow()) == ("closed", 0, True)


def test_breaker_probe_failure_opens_it_for_another_period() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=5, reset_seconds=10, clock=clock)
    for _ in range(5):
        breaker.record_failure()
    clock.now += 10
    assert breaker.allow()
    breaker.record_failure()
    assert (breaker.state, breaker.allow()) == ("open", False)
    clock.now += 10
    assert breaker.allow()
