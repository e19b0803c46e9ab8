"""The harness end to end against the floor server: wrk scripts run and report."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import bodies, certs, check, procstat, wrk
from bench.targets import Server, start_floor

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    workdir = tmp_path_factory.mktemp("bench")
    repo = Path(__file__).resolve().parents[2]
    server = start_floor(workdir, certs.make(workdir / "certs", repo))
    try:
        yield server, workdir
    finally:
        server.stop()


def test_floor_answers_an_allowing_review(floor: tuple[Server, Path]) -> None:
    server, _ = floor
    answer = check.post(server.port, bodies.injected("small"))
    assert check.problem(answer, "any") is None
    assert answer.review["response"]["allowed"] is True


def test_fixed_script_measures_latency_and_cpu(floor: tuple[Server, Path]) -> None:
    server, workdir = floor
    body = workdir / "typical.json"
    body.write_bytes(bodies.injected("typical"))
    script = workdir / "typical.lua"
    script.write_text(wrk.fixed_script(body))
    before = procstat.sample(server.pid)
    result = wrk.run(wrk.command(server.url, script, connections=2, duration_s=1), 1)
    after = procstat.sample(server.pid)
    assert result.requests > 0
    assert result.error_count == 0
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p99"] <= result.latency_ms["max"]
    assert after.cpu_s > before.cpu_s


def test_rotating_script_counts_statuses_and_paces(floor: tuple[Server, Path]) -> None:
    server, workdir = floor
    files = []
    for name, body in (("skip", bodies.skipped()), ("small", bodies.injected("small"))):
        files.append((workdir / f"{name}.json", 1))
        files[-1][0].write_bytes(body)
    cold = workdir / "cold.json"
    cold.write_bytes(bodies.cold_template())
    script = workdir / "mix.lua"
    script.write_text(
        wrk.rotating_script(
            files,
            cold=cold,
            cold_weight=1,
            cold_marker=bodies.COLD_MARKER,
            cold_names="test",
            delay_ms=10,
        )
    )
    result = wrk.run(wrk.command(server.url, script, connections=1, duration_s=1), 1)
    # One connection with a 10 ms pause after each answer: at most ~100 in a second.
    assert 0 < result.requests <= 110
    assert result.statuses == {200: result.requests}
