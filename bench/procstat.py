"""What /proc says about a server process: CPU time, resident memory, open descriptors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Sample:
    cpu_s: float  # user + system time of every thread of the process
    rss_bytes: int
    fds: int
    threads: int


def sample(pid: int) -> Sample:
    """A snapshot of `pid`; raises ProcessLookupError when it has exited."""
    base = Path(f"/proc/{pid}")
    try:
        stat = (base / "stat").read_text()
        status = (base / "status").read_text()
        fds = len(os.listdir(base / "fd"))
    except FileNotFoundError:
        raise ProcessLookupError(f"process {pid} has exited") from None
    # Fields after the parenthesised command name (which may hold spaces): state is
    # field 3, utime and stime are fields 14 and 15 (proc(5)).
    rest = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(rest[11]) + int(rest[12])) / _TICKS
    values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kib = int(values["VmRSS"].split()[0])
    return Sample(cpu_s=cpu, rss_bytes=rss_kib * 1024, fds=fds, threads=int(values["Threads"]))


def cpu_busy_s(cpu: int) -> float:
    """Seconds CPU `cpu` has spent busy since boot, whoever ran on it (/proc/stat)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            ticks = [int(v) for v in line.split()[1:]]
            idle = ticks[3] + ticks[4]  # idle + iowait
            return (sum(ticks[:8]) - idle) / _TICKS  # guest time is already in user
    raise ValueError(f"no cpu{cpu} in /proc/stat")
