"""Where a perseid-jobs worker spends its time: CPU per process, py-spy samples per function.

One extra no-op throughput run with ``py-spy record`` attached to the worker
and its subprocesses (the zygote; task processes live too briefly to sample,
so their share shows up in the CPU accounting instead).
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.peers.bench_record import EnqueueSpec
from bench.processes import MarkerFile, cpu_seconds, descendants, minor_faults
from bench.systems import BENCH, Perseid, Stage

PY_SPY = BENCH / ".venv-tools" / "bin" / "py-spy"
_LINE = re.compile(r" \(([^)]*?)(?::\d+)?\)$")


@dataclass(frozen=True)
class CpuShare:
    """CPU seconds of each part during the profiled run, and its wall time."""

    wall_s: float
    tasks: int
    worker_s: float
    zygote_s: float
    task_processes_s: float
    redis_s: float
    # Minor page faults (copy-on-write copies, mostly); absent in older results files.
    worker_faults: int = 0
    zygote_faults: int = 0
    task_processes_faults: int = 0


@dataclass(frozen=True)
class Profile:
    """The CPU split and the hottest functions by py-spy samples, per process role."""

    cpu: CpuShare
    samples: dict[str, int] = field(default_factory=dict)
    top_self: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    raw_path: str = ""


def available() -> bool:
    """True once ``make bench`` installed py-spy."""
    return PY_SPY.exists()


def profile_worker(stage: Stage, n: int, redis_pid: int, out: Path) -> Profile:
    """Run ``n`` no-op tasks through a worker sampled by py-spy; summarise the samples."""
    system = Perseid()
    client = stage.client()
    client.flushall()
    client.close()
    stage.work.mkdir(parents=True, exist_ok=True)
    marks = MarkerFile(stage.work / "marks.txt")
    system.enqueue(stage, EnqueueSpec(stage.redis_url, str(marks.path), n))
    redis0 = cpu_seconds(redis_pid)
    t0 = time.monotonic()
    worker = system.start_worker(stage)
    spy = subprocess.Popen(
        [
            str(PY_SPY),
            "record",
            "--pid",
            str(worker.pid),
            "--subprocesses",
            "--threads",
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        marks.wait_for(n, 30 + n / 10, worker)
        wall = time.monotonic() - t0
        zygote = next((p for p in descendants(worker.pid) if p != worker.pid), worker.pid)
        cpu = CpuShare(
            wall,
            marks.count(),
            cpu_seconds(worker.pid),
            cpu_seconds(zygote),
            cpu_seconds(zygote, children=True) - cpu_seconds(zygote),
            cpu_seconds(redis_pid) - redis0,
            minor_faults(worker.pid),
            minor_faults(zygote),
            minor_faults(zygote, reaped_children=True),
        )
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
        worker.stop()
    samples, top = summarise(out) if out.exists() else ({}, {})
    return Profile(cpu, samples, top, str(out))


def role(frames: list[str]) -> str:
    """Which part a sampled stack belongs to: a worker thread, the zygote or a task process."""
    chain = [f for f in frames if f.startswith("process ")]
    if len(chain) >= 3:
        return "task processes"
    if len(chain) == 2:
        return "zygote"
    thread = next((f for f in frames if f.startswith("thread (")), "")
    name = thread.partition(": ")[2] or "(unnamed)"
    return "worker main thread" if name == "MainThread" else f"worker thread {name}"


def summarise(raw: Path, top: int = 12) -> tuple[dict[str, int], dict[str, list[tuple[str, int]]]]:
    """Samples per role, and each role's functions with the most samples on top of the stack."""
    samples: Counter[str] = Counter()
    hot: dict[str, Counter[str]] = {}
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or frames[-1].startswith(("thread (", "process ")):
            continue
        who = role(frames)
        samples[who] += int(count)
        hot.setdefault(who, Counter())[_LINE.sub(r" (\1)", frames[-1])] += int(count)
    return dict(samples), {who: c.most_common(top) for who, c in hot.items()}
