"""Processes the benchmark starts: worker trees, their CPU time, marker files."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU of ``pid`` (plus its reaped children's if ``children``); 0 if gone."""
    try:
        f = _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    ticks = int(f[11]) + int(f[12])
    if children:
        ticks += int(f[13]) + int(f[14])
    return ticks / _TICK


def minor_faults(pid: int, *, reaped_children: bool = False) -> int:
    """Minor page faults of ``pid`` (or of its reaped children); 0 if gone.

    In a forked process nearly every one is a copy-on-write copy of a page
    the parent shared, so this counts what forking costs a process later.
    """
    try:
        f = _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(f[8] if reaped_children else f[7])


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                parent[int(entry)] = int(_stat_fields(int(entry))[1])
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parent.items() if ppid in frontier]
        found += frontier
    return found


def tree_cpu_seconds(root: int) -> float:
    """CPU time of a process tree: its live members plus the children they reaped."""
    return sum(cpu_seconds(pid, children=True) for pid in descendants(root))


def tree_run_seconds(root: int) -> float:
    """Time on CPU of every thread of a process tree's live members, to the nanosecond.

    Finer than :func:`tree_cpu_seconds` (clock ticks), for an idle process; it
    leaves out children reaped meanwhile.
    """
    total = 0
    for pid in descendants(root):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                    total += int(fh.read().split()[0])
    return total / 1e9


class Service:
    """A process started in its own session, so stopping it reaches its whole tree."""

    def __init__(self, argv: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.argv = argv
        self.log = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """The process id of the service's leader."""
        return self.proc.pid

    def alive(self) -> bool:
        """True while the leader runs."""
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the leader (a graceful stop), then SIGKILL the session if it lingers."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def tail(self, lines: int = 15) -> str:
        """The end of what it printed, for error messages."""
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


@dataclass(frozen=True)
class Mark:
    """One job's line: when its code started and ended, and when it was due (0: now)."""

    start: float
    end: float
    due: float


class MarkerFile:
    """The file the jobs append to; read incrementally while they run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._lines = 0

    def count(self) -> int:
        """Lines written so far (reads only what was appended since the last call)."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return 0
        whole = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(whole)
        self._lines += whole.count(b"\n")
        return self._lines

    def wait_for(self, n: int, timeout: float, alive: Service | None = None) -> bool:
        """Poll until ``n`` lines exist; False on timeout or if ``alive`` died."""
        deadline = time.monotonic() + timeout
        while self.count() < n:
            if time.monotonic() > deadline or (alive is not None and not alive.alive()):
                return False
            time.sleep(0.02)
        return True

    def marks(self) -> list[Mark]:
        """Every complete line, parsed."""
        out = []
        for line in self.path.read_text().splitlines():
            start, end, due = (float(x) for x in line.split())
            out.append(Mark(start, end, due))
        return out
