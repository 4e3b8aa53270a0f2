"""The zygote's heap on huge pages: which ranges are collapsed, and that memory stays as it was."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from perseid_jobs.launch.hugepages import HUGE, collapsible

_THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")

_MAPS = """\
55d0c0000000-55d0c0021000 r--p 00000000 fe:00 123   /usr/bin/python3.11
55d0c1000000-55d0c1600000 rw-p 00000000 00:00 0     [heap]
7f0000100000-7f0000700000 rw-p 00000000 00:00 0
7f0000800000-7f0000900000 rw-p 00000000 00:00 0
7f0000a00000-7f0000e00000 rw-p 00001000 fe:00 77    /usr/lib/libpython3.11.so
7f0001000000-7f0001400000 rw-s 00000000 00:01 9     /dev/zero (deleted)
7f0002000000-7f0002400000 r--p 00000000 00:00 0
7ffd00000000-7ffd00400000 rw-p 00000000 00:00 0     [stack]
"""


def test_only_whole_huge_pages_of_private_anonymous_writable_memory_are_picked() -> None:
    assert collapsible(_MAPS) == [
        (0x55D0C1000000, 0x600000),  # the heap, aligned: all of it
        (0x7F0000200000, 0x400000),  # 1..7 MiB: the aligned 2..6 MiB
        # 8..9 MiB holds no aligned 2 MiB; a file, a shared, a read-only mapping and
        # the stack are left as they are.
    ]


_COLLAPSE = """
import os, sys
from perseid_jobs.launch import hugepages

def huge_kb():
    with open("/proc/self/smaps_rollup") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("AnonHugePages"))

data = bytearray(os.urandom(1 << 20) * 12)  # 12 MiB, every page present
before, digest = huge_kb(), hash(bytes(data))
done = hugepages.collapse()
print(before, huge_kb(), done, flush=True)
pid = os.fork()
if pid == 0:
    data[12345] ^= 0xFF  # a write in the child: copied there, not seen by the parent
    os._exit(0 if hash(bytes(data)) != digest else 1)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
assert hash(bytes(data)) == digest
print("intact", flush=True)
"""


@pytest.mark.skipif(
    not _THP.exists() or "[never]" in _THP.read_text(), reason="no transparent huge pages here"
)
def test_collapse_puts_a_big_heap_on_huge_pages_and_forks_still_copy_on_write() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_COLLAPSE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    counts, intact = done.stdout.splitlines()
    before, after, collapsed = (int(x) for x in counts.split())
    assert collapsed >= 4 * HUGE  # most of the 12 MiB buffer lies in whole huge pages
    assert after - before >= collapsed // 1024 // 2
    assert intact == "intact"
