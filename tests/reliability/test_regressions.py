"""Bugs the reliability tests found, pinned by the smallest input that showed each one."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from webhook import certs
from webhook.metrics import Metrics
from webhook.policy import MAX_LINE, Violation
from webhook.settings import Tls
from webhook.tls import ReloadingContext


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


def test_tls_pair_refused_for_its_key_mode_is_loaded_once_the_mode_is_fixed(
    tmp_path: Path,
) -> None:
    # Found by test_tls_process: the refusal was remembered by content only, so a key
    # whose permissions were then fixed (same bytes) was never loaded.
    files, _ = certs.write_dev_certs(tmp_path / "certs")
    ca = certs.read_authority(files)
    assert ca is not None
    metrics = Metrics()
    tls = ReloadingContext(Tls(cert_file=str(files.cert), key_file=str(files.key)), metrics)
    cert, key = certs.issue_serving_cert(ca, ["localhost"])
    certs.write_pem(files.cert, certs.cert_pem(cert))
    certs.write_pem(files.key, certs.key_pem(key), private=True)
    os.chmod(files.key, 0o644)
    assert tls.reload_if_changed() is False  # refused: world-readable
    assert tls.reload_if_changed() is False  # and not tried again while nothing changes
    os.chmod(files.key, 0o600)
    assert tls.reload_if_changed() is True
    assert tls.current.not_after == cert.not_valid_after_utc.timestamp()
