"""Starting and stopping the servers of a run: free ports, CPU pinning, readiness, by PID."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path


def free_port() -> int:
    """A port that was free a moment ago (bound to 0 on 127.0.0.1, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(
    cmd: Sequence[str],
    log: Path,
    *,
    cpu: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `cmd` (pinned to `cpu` by taskset, which execs: the PID is the server's)."""
    argv = pinned(cmd, cpu)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ if env is None else env),
            cwd=cwd,
            start_new_session=True,  # our Ctrl-C is handled by us, not by the servers
        )
    boost(proc.pid)
    return proc


def priority() -> list[str]:
    """`nice -n N` for the processes of a measurement (BENCH_NICE, default -15, as root).

    Other work on a shared machine (a test suite) would otherwise take the pinned CPUs
    in the middle of a case; a higher priority for the servers and the load generator
    alike keeps the comparison fair and the figures steadier. BENCH_NICE=0 turns it off.
    """
    level = _level()
    if level == 0 or (level < 0 and os.geteuid() != 0):
        return []
    return ["nice", "-n", str(level)]


def boost(pid: int) -> None:
    """Give the session of `pid` the measurement priority too.

    With the scheduler's autogroups (sched_autogroup_enabled), a process in a session of
    its own competes as a group, and `nice` only ranks it within that group: the
    group's own nice value, in /proc/<pid>/autogroup, is what counts against others.
    """
    level = _level()
    if level == 0 or (level < 0 and os.geteuid() != 0):
        return
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(level))


def _level() -> int:
    return int(os.environ.get("BENCH_NICE") or "-15")


def pinned(cmd: Sequence[str], cpu: str | None) -> list[str]:
    """`cmd` pinned to `cpu` at the measurement priority (nice and taskset exec: same PID)."""
    argv = list(cmd)
    if cpu is not None:
        argv = ["taskset", "-c", cpu, *argv]
    return [*priority(), *argv]


def wait_tls(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    """Wait until `port` completes a TLS handshake; fail early if the process exits."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    _wait(port, proc, log, timeout, context)


def wait_tcp(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    _wait(port, proc, log, timeout, None)


def _wait(
    port: int,
    proc: subprocess.Popen[bytes],
    log: Path,
    timeout: float,
    context: ssl.SSLContext | None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if context is None:
                    return
                with context.wrap_socket(sock):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(
        f"{proc.args!r} did not listen on {port} within {timeout:.0f} s:\n{tail(log)}"
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; by PID only."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def require(binary: str, package: str) -> str:
    """The path of `binary`, installing the Debian `package` when it is missing."""
    found = shutil.which(binary)
    if found is not None:
        return found
    print(f"bench: installing {package} for {binary}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", package]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(install, env=env, check=True)
    found = shutil.which(binary)
    if found is None:
        raise RuntimeError(f"{binary} is still missing after installing {package}")
    return found


LOCK_FILE = Path(tempfile.gettempdir()) / "secret-injector-bench.lock"


@contextlib.contextmanager
def exclusive(what: str) -> Iterator[None]:
    """Hold the machine-wide benchmark lock: two benchmarks on the same CPUs spoil both.

    Another `make bench`, `make soak` or profile (from any checkout) holds it until it
    ends; this one waits and says for whom.
    """
    with LOCK_FILE.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another benchmark"
            print(f"{what}: waiting for {holder} to finish (lock {LOCK_FILE})", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0)
        lock.truncate()
        lock.write(f"{what} (pid {os.getpid()}, {os.getcwd()})\n")
        lock.flush()
        try:
            yield
        finally:
            lock.truncate(0)
            fcntl.flock(lock, fcntl.LOCK_UN)
