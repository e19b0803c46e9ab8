"""Bugs the reliability tests found, pinned by the smallest input that showed each one."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from webhook.policy import MAX_LINE, Violation


@pytest.fixture
def alarm() -> Iterator[None]:
    """Fail (rather than hang the suite) when the test runs past 5 seconds."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError("did not finish within 5 s: an endless loop")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(5)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(
    ("where", "what"),
    [
        # Found by test_fuzz_pods: a line too long for its words to be cut enough looped
        # forever in Violation.line, blocking the event loop (every review, every replica).
        pytest.param("container x env " + "A" * 20, "w " * 200, id="many-short-words"),
        pytest.param("container " + "n" * 15, "word " * 40, id="word-already-at-its-shortest"),
        pytest.param("container " + "x" * 300, "one long name", id="one-long-word"),
        pytest.param("a b", "c", id="short"),
    ],
)
def test_violation_line_is_bounded_and_terminates(alarm: None, where: str, what: str) -> None:
    line = Violation("plaintextSecrets", where, what, "fix it", "deny").line
    assert len(line) <= MAX_LINE
    assert line.startswith("plaintextSecrets: ")
