"""`make soak`: a long mixed load at half the webhook's maximum, then a burst (issue #8).

1. the webhook as in production (TLS, config, policy, verification against real OpenBao
   and moto), pinned to CPU 0; wrk pinned to CPU 1;
2. its maximum for a mixed workload (injected small/typical/large, denied, skipped,
   malformed, cache misses) at c=8, unpaced, for 10 s;
3. the soak: SOAK_DURATION seconds (default 600) at half that rate, in 30-second wrk
   segments whose pacing (wrk's delay hook) is corrected after each segment; after each,
   RSS, open descriptors and threads are sampled;
4. a burst: 10 s with five times the connections, unpaced (wrk is a closed-loop
   generator: it offers at most what the server answers, which is far above 5x the soak
   rate only when the soak rate is low; the report says what it reached);
5. a cool-down segment, then the verdicts: zero 5xx and zero connection errors, RSS at
   the end within +-10 % of RSS after the first minute, descriptors and threads not
   growing, no review still in flight once the load stops.

SOAK_DURATION (seconds, default 600), SOAK_QUICK=1 (60 s soak, for a smoke run).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import backends, bodies, certs, check, metrics_text, processes, procstat, wrk
from bench.run import LOAD_CPU
from bench.targets import Server, has_webhook, start_webhook

SEGMENT_S = 30.0
CONNECTIONS = 8
BURST_FACTOR = 5
BURST_S = 10.0
WARMUP_S = 60.0
RSS_TOLERANCE = 0.10
FD_SLACK = 4  # a listener or client socket opened lazily is not a leak

# (body, weight per cycle of 50): ~5 % cache misses, 4 % denied, 2 % malformed, 16 % skipped.
MIX: tuple[tuple[str, int], ...] = (
    ("typical", 20),
    ("small", 8),
    ("large", 5),
    ("skip", 8),
    ("denied", 2),
    ("malformed", 1),
)
COLD_WEIGHT = 3  # fresh references that exist nowhere: a miss and a backend call each


@dataclass(frozen=True, slots=True)
class Segment:
    phase: str
    result: wrk.WrkResult
    delay_ms: float
    sample: procstat.Sample
    elapsed_s: float


def mixed_script(workdir: Path, files: dict[str, Path], name: str, delay_ms: float) -> Path:
    script = workdir / f"mix-{name}.lua"
    script.write_text(
        wrk.rotating_script(
            [(files[body], weight) for body, weight in MIX],
            cold=files["cold"],
            cold_weight=COLD_WEIGHT,
            cold_marker=bodies.COLD_MARKER,
            cold_names=f"soak{os.getpid()}{name}",
            delay_ms=delay_ms,
        )
    )
    return script


def run_segment(
    webhook: Server,
    workdir: Path,
    files: dict[str, Path],
    *,
    name: str,
    connections: int,
    duration_s: float,
    delay_ms: float,
) -> wrk.WrkResult:
    script = mixed_script(workdir, files, name, delay_ms)
    cmd = wrk.command(webhook.url, script, connections=connections, duration_s=duration_s)
    result = wrk.run(cmd, duration_s)
    webhook.served += result.requests
    return result


def server_errors(result: wrk.WrkResult) -> int:
    return sum(n for status, n in result.statuses.items() if status >= 500)


def next_delay(delay_ms: float, target_rate: float, achieved: float, connections: int) -> float:
    """Correct the per-connection delay so the next segment lands on `target_rate`.

    Each connection cycles through latency + delay; the cycle that gives the target rate is
    connections / target_rate, the measured one connections / achieved.
    """
    if achieved <= 0:
        return delay_ms
    wanted = connections / target_rate * 1000.0
    measured = connections / achieved * 1000.0
    return max(0.0, delay_ms + (wanted - measured))


def main() -> int:
    quick = os.environ.get("SOAK_QUICK", "") not in ("", "0")
    duration = float(os.environ.get("SOAK_DURATION") or ("60" if quick else "600"))
    warmup = min(WARMUP_S, duration / 4)
    processes.require("wrk", "wrk")
    repo = Path(__file__).resolve().parent.parent
    results_dir = repo / "bench" / "results"
    results_dir.mkdir(exist_ok=True)
    started = datetime.datetime.now(datetime.UTC)
    if not has_webhook():
        print("soak: webhook/cli.py is not there yet: nothing to soak")
        return 1
    with (
        processes.exclusive("make soak"),
        tempfile.TemporaryDirectory(prefix="secret-injector-soak-") as tmp,
    ):
        workdir = Path(tmp)
        with contextlib.ExitStack() as stack:
            files = _write_bodies(workdir)
            tls = certs.make(workdir / "certs", repo)
            backend = backends.start(workdir, LOAD_CPU)
            stack.callback(backend.stop)
            webhook = start_webhook(workdir, tls, backend)
            stack.callback(webhook.stop)
            expectations: tuple[tuple[str, check.Expect], ...] = (
                ("typical", "injected"),
                ("skip", "skipped"),
                ("denied", "denied"),
                ("malformed", "malformed"),
            )
            for body, expect in expectations:
                check.require(webhook.port, files[body].read_bytes(), expect, body)
            result = soak(webhook, workdir, files, duration, warmup)
        result["meta"] = {
            "started": started.isoformat(timespec="seconds"),
            "duration_s": duration,
            "quick": quick,
        }
    text = markdown(result)
    print()
    print(text)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    out = results_dir / f"soak-{stamp}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    (results_dir / f"soak-{stamp}.md").write_text(text + "\n")
    print(f"\nsoak: JSON in {out.relative_to(repo)}")
    return 0 if all(v["met"] for v in result["verdicts"]) else 1


def _write_bodies(workdir: Path) -> dict[str, Path]:
    made = {
        "small": bodies.injected("small"),
        "typical": bodies.injected("typical"),
        "large": bodies.injected("large"),
        "skip": bodies.skipped(),
        "denied": bodies.denied(),
        "malformed": bodies.malformed(),
        "cold": bodies.cold_template(),
    }
    files = {}
    for name, body in made.items():
        files[name] = workdir / f"{name}.json"
        files[name].write_bytes(body)
    return files


def soak(
    webhook: Server, workdir: Path, files: dict[str, Path], duration: float, warmup: float
) -> dict[str, Any]:
    print("soak: measuring the maximum for the mixed workload (10 s, c=8)", flush=True)
    peak = run_segment(
        webhook, workdir, files, name="max", connections=CONNECTIONS, duration_s=10, delay_ms=0
    )
    target = peak.rate / 2
    print(f"soak: max {peak.rate:,.0f} req/s; soaking {duration:.0f} s at {target:,.0f} req/s")
    delay = next_delay(0.0, target, peak.rate, CONNECTIONS)
    segments: list[Segment] = []
    began = time.monotonic()
    baseline: procstat.Sample | None = None
    index = 0
    while (elapsed := time.monotonic() - began) < duration:
        length = min(SEGMENT_S, max(1.0, duration - elapsed))
        result = run_segment(
            webhook, workdir, files, name=f"s{index}", connections=CONNECTIONS,
            duration_s=length, delay_ms=delay,
        )  # fmt: skip
        time.sleep(0.5)  # wrk's connections close: count descriptors at rest
        sample = procstat.sample(webhook.pid)
        segments.append(Segment("soak", result, delay, sample, time.monotonic() - began))
        if baseline is None and time.monotonic() - began >= warmup:
            baseline = sample
        print(
            f"  {time.monotonic() - began:5.0f} s  {result.rate:8,.0f} req/s  "
            f"p99 {result.latency_ms['p99']:.2f} ms  RSS {sample.rss_bytes / 2**20:.1f} MiB  "
            f"fds {sample.fds}  threads {sample.threads}  5xx {server_errors(result)}",
            flush=True,
        )
        delay = next_delay(delay, target, result.rate, CONNECTIONS)
        index += 1
    if baseline is None:
        baseline = segments[0].sample
    print(f"soak: burst, {BURST_FACTOR * CONNECTIONS} connections unpaced for {BURST_S:.0f} s")
    burst = run_segment(
        webhook, workdir, files, name="burst", connections=BURST_FACTOR * CONNECTIONS,
        duration_s=BURST_S, delay_ms=0,
    )  # fmt: skip
    time.sleep(0.5)
    segments.append(
        Segment("burst", burst, 0, procstat.sample(webhook.pid), time.monotonic() - began)
    )
    cool = run_segment(
        webhook, workdir, files, name="cool", connections=CONNECTIONS,
        duration_s=SEGMENT_S if duration >= 300 else 10, delay_ms=delay,
    )  # fmt: skip
    time.sleep(1.0)  # let the last connections close
    final = procstat.sample(webhook.pid)
    segments.append(Segment("cool-down", cool, delay, final, time.monotonic() - began))
    in_flight = metrics_text.gauge(webhook.metrics_port, "secret_injector_reviews_in_flight")
    return report(peak, target, segments, baseline, final, in_flight)


def report(
    peak: wrk.WrkResult,
    target: float,
    segments: list[Segment],
    baseline: procstat.Sample,
    final: procstat.Sample,
    in_flight: float | None,
) -> dict[str, Any]:
    everything = [peak, *(s.result for s in segments)]
    statuses: dict[int, int] = {}
    for result in everything:
        for status, n in result.statuses.items():
            statuses[status] = statuses.get(status, 0) + n
    five_xx = sum(n for status, n in statuses.items() if status >= 500)
    errors = sum(r.error_count - r.errors.get("status", 0) for r in everything)
    rss_change = final.rss_bytes / baseline.rss_bytes - 1
    soak_segments = [s for s in segments if s.phase == "soak"]
    verdicts = [
        _verdict("no 5xx answer", five_xx == 0, f"{five_xx}"),
        _verdict("no connection error or timeout", errors == 0, f"{errors}"),
        _verdict(
            "RSS at the end within +-10 % of RSS after warm-up",
            abs(rss_change) <= RSS_TOLERANCE,
            f"{baseline.rss_bytes / 2**20:.1f} -> {final.rss_bytes / 2**20:.1f} MiB "
            f"({rss_change * 100:+.1f} %)",
        ),
        _verdict(
            "open descriptors not growing",
            final.fds <= baseline.fds + FD_SLACK,
            f"{baseline.fds} -> {final.fds}",
        ),
        _verdict(
            "threads not growing",
            final.threads <= baseline.threads + FD_SLACK,
            f"{baseline.threads} -> {final.threads}",
        ),
        _verdict(
            "no review in flight once the load stopped (no stuck task)",
            in_flight == 0 if in_flight is not None else None,
            "-" if in_flight is None else f"{in_flight:g}",
        ),
    ]
    return {
        "max_rate": round(peak.rate, 1),
        "target_rate": round(target, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "segments": [
            {
                "phase": s.phase,
                "elapsed_s": round(s.elapsed_s, 1),
                "delay_ms": round(s.delay_ms, 3),
                **s.result.to_json(),
                "rss_mib": round(s.sample.rss_bytes / 2**20, 1),
                "fds": s.sample.fds,
                "threads": s.sample.threads,
            }
            for s in segments
        ],
        "soak_rate": round(
            sum(s.result.requests for s in soak_segments)
            / max(1e-9, sum(s.result.duration_s for s in soak_segments)),
            1,
        ),
        "burst_rate": round(next(s.result.rate for s in segments if s.phase == "burst"), 1),
        "verdicts": verdicts,
    }


def _verdict(name: str, met: bool | None, value: str) -> dict[str, Any]:
    return {"target": name, "value": value, "met": met}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"### secret-injector soak ({result['meta']['started']}, "
        f"{result['meta']['duration_s']:.0f} s)",
        "",
        f"Mixed workload: max {result['max_rate']:,.0f} req/s at c=8; soaked at "
        f"{result['soak_rate']:,.0f} req/s (target {result['target_rate']:,.0f}); burst "
        f"({BURST_FACTOR}x connections) {result['burst_rate']:,.0f} req/s. "
        "HTTP statuses: " + ", ".join(f"{k}: {v:,}" for k, v in result["statuses"].items()) + ".",
        "",
        "| phase | t s | req/s | p50 ms | p99 ms | max ms | RSS MiB | fds | threads |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in result["segments"]:
        lat = s["latency_ms"]
        lines.append(
            f"| {s['phase']} | {s['elapsed_s']:.0f} | {s['rate']:,.0f} | {lat['p50']:.2f} | "
            f"{lat['p99']:.2f} | {lat['max']:.1f} | {s['rss_mib']:.1f} | {s['fds']} | "
            f"{s['threads']} |"
        )
    lines += ["", "| verdict | value | |", "| --- | --- | --- |"]
    for v in result["verdicts"]:
        mark = {True: "PASS", False: "FAIL", None: "n/a"}[v["met"]]
        lines.append(f"| {v['target']} | {v['value']} | {mark} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
