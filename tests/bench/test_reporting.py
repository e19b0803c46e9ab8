"""The benchmark's arithmetic: wrk output, targets, soak pacing."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

import pytest

from bench import metrics_text, processes, profile, report, soak, wrk

WRK_OUTPUT = """Running 1s test @ https://127.0.0.1:1/mutate
  1 threads and 8 connections
BENCH_RESULT {"requests":5000,"duration_us":2000000,"bytes":1,\
"errors":{"connect":0,"read":0,"write":0,"status":3,"timeout":0},\
"latency_us":{"mean":1500.5,"max":9000,"p":{"50":1200,"90":2000,"99":3500,"99.9":8000}},\
"statuses":{"200":4997,"400":3}}
"""


def test_parse_result_reads_the_done_line() -> None:
    result = wrk.parse_result(WRK_OUTPUT)
    assert result.rate == 2500
    assert result.latency_ms == {
        "mean": 1.5005,
        "max": 9.0,
        "p50": 1.2,
        "p90": 2.0,
        "p99": 3.5,
        "p99.9": 8.0,
    }
    assert result.statuses == {200: 4997, 400: 3}
    assert result.error_count == 3


def test_parse_result_without_the_line_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="no result line"):
        wrk.parse_result("unable to connect to 127.0.0.1:1 Connection refused\n")


def _case(server: str, body: str, rate: float, p99: float) -> dict[str, Any]:
    return {
        "server": server,
        "body": body,
        "concurrency": 8,
        "rate": rate,
        "latency_ms": {"p50": 1.0, "p99": p99, "max": p99},
        "cpu_us_per_review": 100.0,
    }


def _result(typical: float, p99: float, large: float, skip: float, rss: float) -> dict[str, Any]:
    summary = [
        {
            "body": body,
            "concurrency": 8,
            "floor": _case("floor", body, 1000.0, 1.0),
            "webhook": _case("webhook", body, rate, p99),
        }
        for body, rate in (("typical", typical), ("large", large), ("skip", skip))
    ]
    return {
        "summary": summary,
        "cases": [row["webhook"] for row in summary],
        "cold": {"cold": {"latency_ms": {"p99": 12.0}}},
        "memory": {"webhook": {"reviews": 150_000, "rss_final_mib": rss}},
    }


@pytest.mark.parametrize(
    ("result", "verdicts"),
    [
        pytest.param(
            _result(800, 3.0, 850, 950, 60), [True, True, True, True, True, True], id="all-met"
        ),
        pytest.param(
            _result(700, 5.0, 790, 890, 120),
            [False, False, False, False, True, False],
            id="all-missed-but-cold",
        ),
    ],
)
def test_targets_compare_with_the_floor_of_the_same_run(
    result: dict[str, Any], verdicts: list[bool]
) -> None:
    assert [t["met"] for t in report.targets(result)] == verdicts


def test_rss_target_is_not_judged_before_100k_reviews() -> None:
    result = _result(800, 3.0, 850, 950, 60)
    result["memory"]["webhook"]["reviews"] = 99_999
    assert report.targets(result)[-1]["met"] is None


@pytest.mark.parametrize(
    ("delay", "target", "achieved", "expected"),
    [
        pytest.param(0.0, 1000.0, 2000.0, 4.0, id="too-fast-adds-delay"),
        pytest.param(4.0, 1000.0, 500.0, 0.0, id="too-slow-removes-delay"),
        pytest.param(2.0, 1000.0, 1000.0, 2.0, id="on-target-unchanged"),
        pytest.param(2.0, 1000.0, 0.0, 2.0, id="nothing-measured-unchanged"),
    ],
)
def test_next_delay_converges_on_the_target_rate(
    delay: float, target: float, achieved: float, expected: float
) -> None:
    assert soak.next_delay(delay, target, achieved, connections=8) == pytest.approx(expected)


def test_metrics_delta_keeps_what_changed() -> None:
    before = metrics_text.parse(
        'secret_injector_verify_cache_lookups_total{result="hit"} 10.0\n'
        'secret_injector_verify_cache_lookups_total{result="miss"} 2.0\n'
        "secret_injector_other_total 5.0\n"
    )
    after = {**before, 'secret_injector_verify_cache_lookups_total{result="miss"}': 7.0}
    assert metrics_text.delta(before, after) == {
        'secret_injector_verify_cache_lookups_total{result="miss"}': 5.0
    }


def test_profile_folds_line_numbers_and_groups_by_module() -> None:
    stacks = profile.parse_collapsed(
        [
            "main (webhook/cli.py:36);admit (webhook/pipeline.py:93);_yaml (yaml/emitter.py:10) 3",
            "main (webhook/cli.py:37);parse_review (webhook/review.py:50) 2",
            "broken frame without a count",
            "",
        ]
    )
    assert stacks == [
        (["main (webhook/cli.py)", "admit (webhook/pipeline.py)", "_yaml (yaml/emitter.py)"], 3),
        (["main (webhook/cli.py)", "parse_review (webhook/review.py)"], 2),
    ]
    assert [profile.module_of(frames[-1]) for frames, _ in stacks] == ["yaml", "webhook/review.py"]
    text = profile.top(stacks)
    assert "60.0 %  yaml" in text
    assert "100.0 %  main (webhook/cli.py)" in text


def test_exclusive_holds_the_benchmark_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock_file = tmp_path / "bench.lock"
    monkeypatch.setattr(processes, "LOCK_FILE", lock_file)
    with processes.exclusive("make bench"), lock_file.open("a") as other:
        assert "make bench (pid" in lock_file.read_text()
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with lock_file.open("a") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released


def test_rss_target_is_judged_under_load_not_after_the_idle_trim() -> None:
    result = _result(800, 3.0, 850, 950, 120)
    result["memory"]["webhook"]["rss_idle_mib"] = 90.0
    assert report.targets(result)[-1]["met"] is False
