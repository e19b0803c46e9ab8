"""wrk as the load generator: Lua scripts that POST our bodies, a runner, and its results.

Every script ends with a `done` function that prints one `BENCH_RESULT {json}` line:
requests, duration, errors, latency percentiles (µs, from wrk's own histogram) and, when
the script counts responses, the count per HTTP status. Pacing (for the cold path and
the soak) uses wrk's `delay()` hook: wrk starts a request's latency clock when it writes
the request, after the delay, so delays do not inflate the latencies.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import processes

RESULT_TAG = "BENCH_RESULT "

# Percentiles reported by every script (wrk's latency:percentile takes 0-100).
_DONE = r"""
local percentiles = {50, 90, 99, 99.9}
function done(summary, latency, requests)
  local parts = {}
  for _, p in ipairs(percentiles) do
    parts[#parts + 1] = string.format('"%s":%d', tostring(p), latency:percentile(p))
  end
  local statuses = {}
  if counting then
    local merged = {}
    for _, thread in ipairs(threads) do
      local counts = thread:get("counts")
      for status, n in pairs(counts) do
        merged[status] = (merged[status] or 0) + n
      end
    end
    for status, n in pairs(merged) do
      statuses[#statuses + 1] = string.format('"%d":%d', status, n)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"max":%d,"p":{%s}},"statuses":{%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, table.concat(parts, ","), table.concat(statuses, ",")))
end
"""

_HEAD = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
threads = {}
counting = %(counting)s

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end
"""

_COUNT = r"""
counts = {}
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
"""


def fixed_script(body: Path) -> str:
    """POST the same body on every request (wrk's static request: no Lua per request)."""
    return (
        _HEAD % {"counting": "false"}
        + f'wrk.body = slurp("{_lua_path(body)}")\n'
        + "function setup(thread) threads[#threads + 1] = thread end\n"
        + _DONE
    )


def rotating_script(
    bodies: Sequence[tuple[Path, int]],
    *,
    cold: Path | None = None,
    cold_weight: int = 0,
    cold_marker: str = "",
    cold_names: str = "",
    delay_ms: float = 0.0,
) -> str:
    """Rotate among `(body, weight)`; `cold_weight` slots per cycle get a fresh reference.

    Fresh references are `<cold_names>-<thread>-<n>` (wrk passes nothing per thread, so
    each thread takes a number in setup); the OpenBao seed must hold them.
    """
    lines = [_HEAD % {"counting": "true"}, _COUNT]
    # Requests are formatted in init(): wrk sets the Host header just before calling it.
    lines.append("local requests = {}")
    lines.append("local head, tail")
    lines.append("function init(args)")
    for path, weight in bodies:
        lines.append(f'  local r = wrk.format(nil, nil, nil, slurp("{_lua_path(path)}"))')
        lines.append(f"  for _ = 1, {weight} do requests[#requests + 1] = r end")
    if cold is not None and cold_weight > 0:
        lines.append(f'  local template = slurp("{_lua_path(cold)}")')
        lines.append(f'  local at = assert(string.find(template, "{cold_marker}", 1, true))')
        lines.append("  head = string.sub(template, 1, at - 1)")
        lines.append(f"  tail = string.sub(template, at + {len(cold_marker)})")
        lines.append(f"  for _ = 1, {cold_weight} do requests[#requests + 1] = false end")
    lines.append("end")
    lines.append(
        r"""
local index = 0
local fresh = 0
local numbered = 0
function setup(thread)
  threads[#threads + 1] = thread
  numbered = numbered + 1
  thread:set("thread_id", numbered)
end
function request()
  index = index % #requests + 1
  local r = requests[index]
  if r then return r end
  fresh = fresh + 1
  local name = string.format("%s-%d-%d", cold_names, thread_id, fresh)
  return wrk.format(nil, nil, nil, head .. name .. tail)
end
"""
    )
    lines.append(f'cold_names = "{cold_names}"')
    if delay_ms > 0:
        lines.append(f"function delay() return {delay_ms:.3f} end")
    lines.append(_DONE)
    return "\n".join(lines)


def _lua_path(path: Path) -> str:
    text = str(path.resolve())
    if '"' in text or "\\" in text:
        raise ValueError(f"unusable path for a Lua string: {text}")
    return text


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run measured."""

    requests: int
    duration_s: float
    errors: Mapping[str, int]
    latency_ms: Mapping[str, float]  # mean, max, p50, p90, p99, p99.9
    statuses: Mapping[int, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "duration_s": round(self.duration_s, 3),
            "rate": round(self.rate, 1),
            "errors": dict(self.errors),
            "latency_ms": dict(self.latency_ms),
            "statuses": {str(k): v for k, v in self.statuses.items()},
        }


def parse_result(stdout: str) -> WrkResult:
    """The `BENCH_RESULT` line of a run, in ms and seconds; a clear error when missing."""
    for line in stdout.splitlines():
        if line.startswith(RESULT_TAG):
            data = json.loads(line[len(RESULT_TAG) :])
            break
    else:
        raise RuntimeError(f"wrk printed no result line; its output was:\n{stdout[-2000:]}")
    latency = data["latency_us"]
    ms = {"mean": latency["mean"] / 1000, "max": latency["max"] / 1000}
    ms.update({_percentile_name(p): v / 1000 for p, v in latency["p"].items()})
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=data["duration_us"] / 1e6,
        errors={k: int(v) for k, v in data["errors"].items()},
        latency_ms=ms,
        statuses={int(k): int(v) for k, v in data["statuses"].items()},
    )


def _percentile_name(p: str) -> str:
    """`99.9` -> `p99.9`, `50` -> `p50` (Lua prints whole numbers without a fraction)."""
    return "p" + re.sub(r"\.0$", "", p)


def command(
    url: str, script: Path, *, connections: int, duration_s: float, threads: int = 1, cpu: str = "1"
) -> list[str]:
    """The wrk command line, pinned to `cpu`; the timeout stays far above any latency."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    return processes.pinned([
        wrk,
        f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
        "--timeout", "10s", "--latency", "-s", str(script), url,
    ], cpu)  # fmt: skip


def start(cmd: Sequence[str]) -> subprocess.Popen[str]:
    """Start wrk in a session of its own, at the measurement priority."""
    proc = subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    processes.boost(proc.pid)
    return proc


def finish(proc: subprocess.Popen[str], timeout: float) -> WrkResult:
    """Wait for a started wrk and parse its result."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise RuntimeError(f"wrk did not finish within {timeout:.0f} s:\n{out[-2000:]}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}:\n{out[-2000:]}")
    return parse_result(out)


def run(cmd: Sequence[str], duration_s: float) -> WrkResult:
    return finish(start(cmd), timeout=duration_s + 30)
