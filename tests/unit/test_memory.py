"""webhook.memory: freed heap memory given back on glibc, nothing done elsewhere; the
server trims now and then."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from webhook import app, memory

glibc_only = pytest.mark.skipif(memory._LIBC is None, reason="malloc_trim is glibc's")

# In a child process, so the test's own heap stays as it was. The child makes 200,000
# blocks of 1 KiB (over Python's 512-byte small-object limit and under glibc's mmap
# threshold: glibc's heap) and frees all but every 100th, which leaves ~190 MiB of free
# chunks pinned between live ones.
FRAGMENT_THEN_TRIM = """
from webhook import memory

def rss_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20

blocks = [bytes(1024) for _ in range(200_000)]
kept = blocks[::100]
del blocks
before = rss_mib()
returned = memory.trim()
print(before, rss_mib(), returned, len(kept))
"""


@glibc_only
def test_trim_gives_freed_heap_memory_back() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FRAGMENT_THEN_TRIM],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    ).stdout.split()
    before, after, returned = float(out[0]), float(out[1]), out[2]
    assert returned == "True"
    assert before - after > 100, (before, after)


def test_elsewhere_nothing_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_LIBC", None)
    assert memory.trim() is False


async def test_the_server_trims_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    third = asyncio.Event()
    loop = asyncio.get_running_loop()

    def trim() -> bool:  # called in a worker thread, off the event loop
        trims.append(1)
        if len(trims) == 3:
            loop.call_soon_threadsafe(third.set)
        return True

    monkeypatch.setattr(memory, "TRIM_INTERVAL_SECONDS", 0.01)
    monkeypatch.setattr(memory, "trim", trim)
    trimmer = asyncio.create_task(app._trim_memory())
    async with asyncio.timeout(5):
        await third.wait()
    trimmer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trimmer
