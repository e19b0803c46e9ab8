"""`python -m bench.ab TREE_A TREE_B`: two versions of the webhook and the floor, in one run.

On a shared or virtual machine the same server measures ±10 % from one minute to the
next, which hides most single changes. This starts the floor and the webhook of each
tree (a `git worktree` of another commit, say) side by side, pinned to the same CPU as
`make bench` pins them, and drives them in turn, round after round, with the order
alternating: what disturbs one round disturbs all three. It prints the median CPU time
per review (and its range) for each server and body, and the ratio to the floor.

    git worktree add /tmp/before HEAD~1
    python -m bench.ab /tmp/before .            # AB_ROUNDS=5, AB_BODIES=typical,skip
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench import backends, certs, processes, targets
from bench.run import LOAD_CPU, Bench, Options

SECONDS = 4.0  # per server, body and round
CONNECTIONS = 8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs=2, type=Path, metavar="TREE", help="repository trees")
    args = parser.parse_args()
    trees: list[Path] = [tree.resolve() for tree in args.trees]
    for tree in trees:
        if not (tree / "webhook" / "app.py").exists():
            print(f"ab: {tree} has no webhook/app.py", file=sys.stderr)
            return 2
    rounds = int(os.environ.get("AB_ROUNDS") or "5")
    bodies = [b for b in (os.environ.get("AB_BODIES") or "typical,skip").split(",") if b]
    with (
        processes.exclusive("bench.ab"),
        tempfile.TemporaryDirectory(prefix="secret-injector-ab-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        bench = Bench(Options.from_env(), workdir)
        bench.write_bodies()
        tls = certs.make(workdir / "certs", trees[0])
        backend = backends.start(workdir, LOAD_CPU)
        stack.callback(backend.stop)
        servers = {"floor": targets.start_floor(workdir, tls)}
        stack.callback(servers["floor"].stop)
        for name, tree in zip("AB", trees, strict=True):
            (workdir / name).mkdir()
            servers[name] = targets.start_webhook(workdir / name, tls, backend, repo=tree)
            stack.callback(servers[name].stop)
        for server in servers.values():  # warm-up: caches filled, code paths run once
            for body in bodies:
                bench.drive(server, body, CONNECTIONS, 2)
        cpu: dict[tuple[str, str], list[float]] = {(n, b): [] for n in servers for b in bodies}
        for number in range(rounds):
            order = list(servers) if number % 2 == 0 else list(reversed(servers))
            for body in bodies:
                for name in order:
                    case = bench.drive(servers[name], body, CONNECTIONS, SECONDS)
                    cpu[(name, body)].append(case["cpu_us_per_review"])
    print(f"CPU µs per review, c={CONNECTIONS}, median of {rounds} rounds [range]; A={trees[0]}")
    print(f"B={trees[1]}")
    for body in bodies:
        floor = statistics.median(cpu[("floor", body)])
        line = [f"{body:8} floor {floor:.0f}"]
        for name in "AB":
            runs = cpu[(name, body)]
            median = statistics.median(runs)
            spread = f"[{min(runs):.0f}-{max(runs):.0f}]"
            line.append(f"{name} {median:.0f} ({floor / median:.2f}x floor) {spread}")
        print(" | ".join(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
