"""`python -m bench.profile`: where the webhook's CPU goes under the benchmark's load.

Starts the webhook as `make bench` does (TLS, config, policy, verification with a warm
cache against real OpenBao and moto; CPU 0), drives it with wrk (CPU 1) and samples it
with py-spy (CPU 1). Prints the top functions by own time and by inclusive time, and a
breakdown by module; writes the collapsed stacks to bench/results/ (open them in
speedscope, or feed them to flamegraph.pl).

    python -m bench.profile [--body typical] [--connections 8] [--seconds 15]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from bench import backends, certs, check, processes, wrk
from bench.run import LOAD_CPU, Bench, Options
from bench.targets import has_webhook, start_floor, start_webhook

_LINE = re.compile(r":\d+\)$")


def parse_collapsed(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    """`a (f.py:1);b (g.py:2) 7` -> ([a (f.py), b (g.py)], 7), line numbers dropped."""
    stacks = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        frames, _, count = line.rpartition(" ")
        if not count.isdigit() or not frames:
            continue  # py-spy splits a frame whose name holds a newline: not ours
        stacks.append(([_LINE.sub(")", f) for f in frames.split(";")], int(count)))
    return stacks


def module_of(frame: str) -> str:
    """A coarse owner of a frame: `webhook/x.py`, a library name, or the file."""
    match = re.search(r"\(([^()]*)\)$", frame)
    path = match.group(1) if match else frame
    if path.startswith("webhook/") or "/webhook/" in path:
        return "webhook/" + path.rsplit("webhook/", 1)[1]
    if "site-packages/" in path:
        path = path.rsplit("site-packages/", 1)[1]
    # py-spy shortens paths to the package: `aiohttp/web_protocol.py`, `asyncio/events.py`.
    head, _, rest = path.partition("/")
    return head if rest else path


def top(stacks: list[tuple[list[str], int]], limit: int = 25) -> str:
    total = sum(n for _, n in stacks) or 1
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    modules: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        own[frames[-1]] += n
        modules[module_of(frames[-1])] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples", "", "own time (where the CPU is spent):"]
    lines += [f"  {n / total * 100:5.1f} %  {f}" for f, n in own.most_common(limit)]
    lines += ["", "own time by module:"]
    lines += [f"  {n / total * 100:5.1f} %  {m}" for m, n in modules.most_common(limit)]
    lines += ["", "inclusive time, our code (what each step costs with what it calls):"]
    ours = [(f, n) for f, n in inclusive.most_common() if module_of(f).startswith("webhook/")]
    lines += [f"  {n / total * 100:5.1f} %  {f}" for f, n in ours[:limit]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--body", default="typical", choices=["small", "typical", "large", "skip"])
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument(
        "--server", default="webhook", choices=["webhook", "floor"], help="which to profile"
    )
    parser.add_argument(
        "--native", action="store_true", help="C frames too (py-spy pauses the process to sample)"
    )
    args = parser.parse_args()
    if not has_webhook():
        print("profile: webhook/cli.py is not there yet")
        return 1
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        print(f"profile: py-spy is missing: {sys.executable} -m pip install py-spy")
        return 1
    repo = Path(__file__).resolve().parent.parent
    results = repo / "bench" / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = results / f"profile-{args.server}-{args.body}-c{args.connections}-{stamp}.txt"
    with (
        processes.exclusive("bench.profile"),
        tempfile.TemporaryDirectory(prefix="secret-injector-profile-") as tmp,
    ):
        workdir = Path(tmp)
        with contextlib.ExitStack() as stack:
            bench = Bench(Options.from_env(), workdir)
            bench.write_bodies()
            tls = certs.make(workdir / "certs", repo)
            backend = backends.start(workdir, LOAD_CPU)
            stack.callback(backend.stop)
            if args.server == "floor":
                webhook = start_floor(workdir, tls)
                stack.callback(webhook.stop)
            else:
                webhook = start_webhook(workdir, tls, backend)
                stack.callback(webhook.stop)
                expect: check.Expect = "skipped" if args.body == "skip" else "injected"
                check.require(webhook.port, bench.files[args.body].read_bytes(), expect, args.body)
            bench.drive(webhook, args.body, args.connections, 3)  # warm-up, fills the cache
            load = wrk.start(
                wrk.command(
                    webhook.url,
                    workdir / f"{args.body}.lua",
                    connections=args.connections,
                    duration_s=args.seconds + 2,
                )
            )
            spy = processes.pinned([
                str(py_spy), "record", "--pid", str(webhook.pid),
                "--duration", str(args.seconds), "--rate", str(args.rate), "--format", "raw",
                "--output", str(out),
                *(["--native"] if args.native else ["--nonblocking"]),
            ], LOAD_CPU)  # fmt: skip
            subprocess.run(spy, check=True, capture_output=True)
            result = wrk.finish(load, args.seconds + 40)
    print(
        f"profile: {args.server} {args.body} c={args.connections}: "
        f"{result.rate:,.0f} req/s under py-spy (p99 {result.latency_ms['p99']:.2f} ms)\n"
    )
    print(top(parse_collapsed(out.read_text().splitlines())))
    print(f"\nprofile: collapsed stacks in {out.relative_to(repo)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
