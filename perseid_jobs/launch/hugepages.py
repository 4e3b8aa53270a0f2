"""The zygote's loaded heap on huge pages, so that each fork copies fewer page-table entries.

A fork copies one page-table entry for every present page of the parent's
private writable memory (Linux copies no entries of file mappings never
written, which fault in later). The zygote holds whatever its jobs imported:
measured on the benchmark's 2-core VM, a zygote of the no-op job alone holds
10.8 MB of such memory, one whose job file imports redis-py (which imports its
asyncio client, and so asyncio) 21.8 MB, and there ``copy_page_range`` alone
took 40 % of the zygote's CPU (``perf``, 2,000 no-op starts).

``MADV_COLLAPSE`` (Linux 6.1) rebuilds a 2 MiB-aligned range of present pages
as one transparent huge page, mapped by one entry that a fork copies at once.
Independent of the system's THP setting ``enabled`` unless that is ``never``;
it sets no ``MADV_HUGEPAGE``, so later allocations, the child's included, get
ordinary pages as before. A write to a shared huge page splits its mapping
and copies the one 4 KiB page written, as for any page, so a task's page
copies do not grow; the ranges the zygote itself keeps writing end up split
in the zygote, and a fork copies those entries in batches of the same huge
page. Measured with a zygote driven alone (``python -m bench.zygote_alone``),
in docs/benchmark.md's fifth session.

Only the ranges that fit whole in one mapping collapse: the main heap, and
runs of CPython's 1 MiB object arenas that happen to be adjacent (about half
of the zygote's memory). Where the kernel cannot (no THP, an older kernel, no
memory for a huge page), nothing changes.
"""

from __future__ import annotations

import ctypes
import sys

MADV_COLLAPSE = 25
"""From <linux/mman.h>; Python 3.11's ``mmap`` module does not name it."""

HUGE = 2 << 20
"""A PMD-sized transparent huge page on x86-64 and arm64 (4 KiB base pages)."""

_libc = ctypes.CDLL(None, use_errno=True)
_madvise = _libc.madvise
_madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_madvise.restype = ctypes.c_int


def collapsible(maps: str) -> list[tuple[int, int]]:
    """The whole huge-page ranges (start, length) of private anonymous writable mappings.

    ``maps``: the text of ``/proc/self/maps``. Anonymous means no file: the
    main heap (``[heap]``) and unnamed mappings (object arenas, big buffers).
    """
    ranges = []
    for line in maps.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[1] != "rw-p":
            continue
        name = fields[5] if len(fields) > 5 else ""
        if name not in ("", "[heap]"):
            continue
        low, high = (int(x, 16) for x in fields[0].split("-"))
        start, end = -(-low // HUGE) * HUGE, high // HUGE * HUGE
        if end > start:
            ranges.append((start, end - start))
    return ranges


def collapse() -> int:
    """Collapse what :func:`collapsible` finds in this process; the bytes collapsed."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        with open("/proc/self/maps") as maps:
            ranges = collapsible(maps.read())
    except OSError:
        return 0
    done = 0
    for start, length in ranges:
        # Each range on its own: one that fails (EINVAL: no THP here; EAGAIN/ENOMEM:
        # no huge page free) leaves that range as it was, and the others still gain.
        if _madvise(start, length, MADV_COLLAPSE) == 0:
            done += length
    return done
