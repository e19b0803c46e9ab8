"""Giving freed memory back to the operating system: glibc's malloc_trim, now and then.

Why: under load the webhook's RSS grew by a quarter and stayed there, and almost all of
it was memory already freed that glibc kept. Measured with the bench's servers after
typical and large reviews at c=8 and c=64 (`gdb -p PID -batch -ex 'call (int)malloc_trim(0)'`
then /proc/PID/smaps_rollup): the webhook went 98 -> 126 MiB and back to 100 MiB after
malloc_trim(0); the bare aiohttp floor 39 -> 61 -> 41 MiB. What glibc keeps are free
chunks between live ones in its heap: request bodies and answers over 512 bytes (they
bypass Python's own allocator) and TLS buffers. malloc_trim(0) returns their pages.

The server calls `trim()` every TRIM_INTERVAL_SECONDS, off the event loop. A trim walks
the heap: ~2 ms when there is nothing to return, ~30 ms to return 300 MiB.

Tried and dropped: a fixed mmap threshold of 32 KiB (mallopt M_MMAP_THRESHOLD), so that
big buffers get pages of their own, returned when freed. It kept RSS at 105 MiB under the
same load, but every such buffer then costs an mmap, a munmap and page faults: CPU per
review +40 % for typical reviews, +66 % for large (`python -m bench.ab`).

Other C libraries (musl, macOS): `trim()` does nothing.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

TRIM_INTERVAL_SECONDS = 10.0


def _glibc() -> Any | None:
    """The process's C library when it is glibc, else None."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
    except (ValueError, OSError):  # not a glibc system: the name is unknown
        return None
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "malloc_trim"):
        return None
    return libc


_LIBC = _glibc()


def trim() -> bool:
    """Return free heap memory to the OS; True when some was returned. ctypes lets go of
    the GIL for the call, so other threads (the event loop) run meanwhile."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))
