"""The scenarios every system runs: throughput, due → start latency, the idle worker.

Times come from the jobs' own marker lines (see :mod:`bench.peers.bench_record`),
so each system is measured from the job's side, the same way.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field

from bench.peers.bench_record import EnqueueSpec
from bench.peers.bench_write import RECORDS_KEY
from bench.processes import Mark, MarkerFile, Service, tree_run_seconds
from bench.stats import percentile
from bench.systems import Stage, System

READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Throughput:
    """Jobs per second, from the worker's start and once the first job ran."""

    total: float
    running: float
    startup_s: float
    error: str = ""

    @classmethod
    def failed(cls, why: str) -> Throughput:
        """A repetition that measured nothing, and why."""
        return cls(math.nan, math.nan, math.nan, why)


@dataclass(frozen=True)
class Latency:
    """Due → job code running, in ms, over one batch of jobs due at distinct instants."""

    p50_ms: float
    p99_ms: float
    max_ms: float
    early: int
    early_pct: float
    error: str = ""
    claim_p50_ms: float = math.nan
    launch_p50_ms: float = math.nan

    @classmethod
    def failed(cls, why: str) -> Latency:
        """A repetition that measured nothing, and why."""
        return cls(math.nan, math.nan, math.nan, 0, math.nan, why)


@dataclass(frozen=True)
class Idle:
    """An idle worker: its CPU and the Redis calls it makes."""

    cpu_pct: float
    calls_per_s: float
    by_kind: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""

    @classmethod
    def failed(cls, why: str) -> Idle:
        """A repetition that measured nothing, and why."""
        return cls(math.nan, math.nan, error=why)

    def busiest(self) -> tuple[str, float]:
        """The most frequent kind of call and its rate per second."""
        if not self.by_kind or not self.seconds:
            return "", 0.0
        kind, count = max(self.by_kind.items(), key=lambda kv: kv[1])
        return kind, count / self.seconds


def _fresh(stage: Stage) -> MarkerFile:
    """Empty Redis and a new marker file for one scenario."""
    client = stage.client()
    client.flushall()
    client.close()
    stage.work.mkdir(parents=True, exist_ok=True)
    return MarkerFile(stage.work / "marks.txt")


def _ready(system: System, stage: Stage, worker: Service) -> str:
    """Run one job through the started worker; '' once it ran, else why not."""
    probe = MarkerFile(stage.work / "probe.txt")
    system.enqueue(stage, EnqueueSpec(stage.redis_url, str(probe.path), 1))
    if probe.wait_for(1, READY_TIMEOUT_S, worker):
        return ""
    return f"the worker ran no probe job in {READY_TIMEOUT_S:g}s:\n{worker.tail()}"


def throughput(
    system: System, stage: Stage, n: int, sleep: float, timeout: float, *, write: bool = False
) -> Throughput:
    """``n`` jobs enqueued before the worker starts; rate until the last one completed.

    ``write``: each job first writes one record to Redis over its own client
    (:mod:`bench.peers.bench_write`); a run in which fewer than ``n`` records
    landed measured nothing.
    """
    marks = _fresh(stage)
    spec = EnqueueSpec(
        stage.redis_url, str(marks.path), n, sleep, write=stage.redis_url if write else ""
    )
    system.enqueue(stage, spec)
    t0 = time.time()
    worker = system.start_worker(stage)
    try:
        if not marks.wait_for(n, timeout, worker):
            why = f"{marks.count()}/{n} jobs done in {timeout:g}s:\n{worker.tail()}"
            return Throughput.failed(why)
        done = marks.marks()
        end = max(m.end for m in done)
        recorded = system.completed_at(stage, n)
        if recorded is not None:
            end = max(end, recorded)
        first = min(m.start for m in done)
        if write and (written := _records(stage)) < n:
            return Throughput.failed(f"only {written} of {n} jobs wrote their record to Redis")
        return Throughput(n / (end - t0), n / (end - first), first - t0)
    finally:
        worker.stop()


def _records(stage: Stage) -> int:
    """How many records the connection scenario's jobs wrote."""
    client = stage.client()
    try:
        return int(client.llen(RECORDS_KEY))
    finally:
        client.close()


def latency(system: System, stage: Stage, n: int, span: float, lead: float) -> Latency:
    """``n`` jobs due at distinct instants over ``span`` s, scheduled on an idle, running worker."""
    marks = _fresh(stage)
    worker = system.start_worker(stage)
    try:
        why = _ready(system, stage, worker)
        if why:
            return Latency.failed(why)
        time.sleep(0.5)
        spec = EnqueueSpec(stage.redis_url, str(marks.path), n, lead=lead, span=span)
        system.enqueue(stage, spec)
        if not marks.wait_for(n, lead + span + 30, worker):
            why = f"{marks.count()}/{n} jobs started:\n{worker.tail()}"
            return Latency.failed(why)
        done = marks.marks()
        late_ms = [(m.start - m.due) * 1000 for m in done]
        early = sum(1 for v in late_ms if v < 0)
        claim_ms, launch_ms = _split(done, system.claimed_at(stage))
        return Latency(
            percentile(late_ms, 50),
            percentile(late_ms, 99),
            max(late_ms),
            early,
            100 * early / len(late_ms),
            "",
            percentile(claim_ms, 50),
            percentile(launch_ms, 50),
        )
    finally:
        worker.stop()


def _split(done: list[Mark], claimed: dict[int, int]) -> tuple[list[float], list[float]]:
    """Per job, due → claimed and claimed → job code running (ms), where claims are recorded."""
    claim_ms, launch_ms = [], []
    for mark in done:
        at = claimed.get(round(mark.due * 1000))
        if at is not None:
            claim_ms.append(at - mark.due * 1000)
            launch_ms.append(mark.start * 1000 - at)
    return claim_ms, launch_ms


def idle(system: System, stage: Stage, seconds: float, settle: float) -> Idle:
    """CPU and Redis calls of a started worker with nothing to do, over ``seconds``."""
    _fresh(stage)
    worker = system.start_worker(stage)
    try:
        why = _ready(system, stage, worker)
        if why:
            return Idle.failed(why)
        time.sleep(settle)
        calls, cpu, elapsed = _observe(stage, worker, seconds)
        kinds = _kinds(calls, system.script_names())
        return Idle(100 * cpu / elapsed, sum(kinds.values()) / elapsed, dict(kinds), elapsed)
    finally:
        worker.stop()


def _observe(stage: Stage, worker: Service, seconds: float) -> tuple[list[str], float, float]:
    """MONITOR lines and the worker tree's CPU seconds over ``seconds`` of wall time."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("redis-cli is not on PATH (it ships with redis-server)")
    out = stage.work / "monitor.txt"
    with out.open("wb") as fh:
        monitor = subprocess.Popen([cli, "-u", stage.redis_url, "monitor"], stdout=fh)
        time.sleep(0.3)  # MONITOR is on before the window opens
        cpu0, t0 = tree_run_seconds(worker.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = tree_run_seconds(worker.pid), time.monotonic()
        monitor.terminate()
        monitor.wait()
    lines = out.read_text(errors="replace").splitlines()
    return _in_window(lines, time.time() - (time.monotonic() - t0), t1 - t0), cpu1 - cpu0, t1 - t0


def _in_window(lines: list[str], start: float, seconds: float) -> list[str]:
    """Client calls (not commands run inside scripts) whose timestamp falls in the window."""
    kept = []
    for line in lines:
        stamp, _, rest = line.partition(" ")
        try:
            when = float(stamp)
        except ValueError:
            continue
        if start <= when <= start + seconds and not rest.startswith("[0 lua]"):
            kept.append(rest)
    return kept


def _kinds(calls: list[str], scripts: dict[str, str]) -> Counter[str]:
    """Count calls by command, naming a known script for EVALSHA."""
    kinds: Counter[str] = Counter()
    for rest in calls:
        words = rest.split("] ", 1)[-1].split(" ")
        command = words[0].strip('"').upper()
        if command in ("EVALSHA", "EVAL") and len(words) > 1:
            sha = words[1].strip('"')
            command = f"{command} {scripts.get(sha, sha[:8])}"
        kinds[command] += 1
    return kinds
