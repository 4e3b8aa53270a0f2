"""Helpers of the chaos tests: worker fleets, attempt records, the figures each test reports."""

from __future__ import annotations

import itertools
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from perseid_jobs import Client
from perseid_jobs.core.errors import RedisUnavailable
from perseid_jobs.store.connection import REDIS_ERRORS

from ..conftest import WorkerProc


class Fleet:
    """Worker processes on one Redis URL and namespace; all killed at the end of the test."""

    def __init__(self, url: str, namespace: str, tmp: Path, *extra: str) -> None:
        self.url = url
        self.namespace = namespace
        self.tmp = tmp
        self.extra = extra
        self.procs: list[WorkerProc] = []

    def start(self, slots: int = 4, *extra: str) -> WorkerProc:
        """Start one worker (the fleet's extra options first, then these)."""
        w = WorkerProc(self.url, self.namespace, self.tmp, slots, *self.extra, *extra)
        self.procs.append(w)
        return w

    def stop(self) -> None:
        """SIGKILL whatever still runs."""
        for w in self.procs:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
            w._stderr.close()


@pytest.fixture
def fleets(tmp_path: Path) -> Iterator[list[Fleet]]:
    """Fleets made by the test; stopped afterwards."""
    made: list[Fleet] = []
    yield made
    for f in made:
        f.stop()


class Attempt(msgspec.Struct):
    """One attempt of a task as the job saw it (monotonic ns; end None if killed)."""

    task_id: str
    attempt: int
    pid: int
    worker: int
    start: int
    end: int | None
    alive: int  # the last moment it was seen running: its end, else its last tick


def read_attempts(directory: Path) -> dict[str, list[Attempt]]:
    """Attempts by task id, from the files tests/jobs/chaos_record.py writes."""
    out: dict[str, list[Attempt]] = {}
    for path in directory.iterdir():
        task_id, attempt, pid = path.name.split(".")
        start = end = None
        worker = alive = 0
        for line in path.read_text().splitlines():
            kind, *rest = line.split()
            if kind == "S" and len(rest) == 2:
                start, worker = int(rest[0]), int(rest[1])
                alive = start
            elif kind in ("T", "E") and rest:
                alive = max(alive, int(rest[0]))
                if kind == "E":
                    end = int(rest[0])
        if start is not None:
            out.setdefault(task_id, []).append(
                Attempt(task_id, int(attempt), int(pid), worker, start, end, alive)
            )
    for runs in out.values():
        runs.sort(key=lambda a: a.start)
    return out


def overlapping(attempts: dict[str, list[Attempt]], *, killed_end_unknown: bool = True) -> int:
    """Tasks with two running periods that overlap.

    A killed attempt has no end: with ``killed_end_unknown`` it counts as never ending
    (any later run overlaps it); otherwise it ended at its last tick (chaos_retry ticks
    every 5 ms, so an overlap shorter than a tick could go unseen).
    """
    bad = 0
    for runs in attempts.values():
        for a, b in itertools.pairwise(runs):
            if a.end is None and killed_end_unknown:
                bad += 1
                break
            if b.start <= (a.end if a.end is not None else a.alive):
                bad += 1
                break
    return bad


def slots_left(client: Client) -> tuple[int, int]:
    """(slots in use, tasks held) summed over every instance Redis still knows."""
    r = client.redis
    used = held = 0
    for k in client.partitions():
        for inst in r.zrange(k.instances, 0, -1):
            used += int(r.hget(k.instance(inst), "slots_used") or 0)
            held += int(r.scard(k.instance_tasks(inst)))
    return used, held


def spread(values_ms: list[float]) -> str:
    """min/median/max of a list of milliseconds, as text."""
    if not values_ms:
        return "n/a"
    return f"{min(values_ms):.0f}/{statistics.median(values_ms):.0f}/{max(values_ms):.0f} ms"


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Any:
    """Print one test's figures on the terminal even when output is captured."""

    def emit(name: str, **figures: object) -> None:
        text = " ".join(f"{k}={v}" for k, v in figures.items())
        with capsys.disabled():
            print(f"\n[chaos] {name}: {text}", flush=True)

    return emit


@pytest.fixture
def redis_servers(tmp_path: Path) -> Iterator[Any]:
    """Start private redis-servers: ``redis_servers(appendonly=False) -> RedisServer``."""
    from perseid_jobs.store.redisproc import RedisServer

    started: list[RedisServer] = []

    def start(**kw: Any) -> RedisServer:
        d = tmp_path / f"redis{len(started)}"
        d.mkdir()
        s = RedisServer(directory=d, **kw).start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def task_rows(client: Client, ids: list[str], *fields: str) -> list[dict[str, str | None]]:
    """The given hash fields of many tasks, in one round trip."""
    pipe = client.redis.pipeline(transaction=False)
    for task_id in ids:
        keys = client.keys_of(task_id) or client.keys
        pipe.hmget(keys.task(task_id), list(fields))
    return [dict(zip(fields, row, strict=True)) for row in pipe.execute()]


def all_settled(client: Client) -> bool:
    """Nothing pending, blocked or running in the namespace."""
    r = client.redis
    return all(
        r.zcard(k.due) + r.zcard(k.blocked) + r.zcard(k.running) == 0 for k in client.partitions()
    )


class AckedScheduler:
    """Schedules ``chaos_record`` tasks one by one through an outage, each under its own key.

    A schedule that raised was not acknowledged and is sent again with the same key and
    request id, so a retry whose first try did land returns that task instead of a second
    one, even once that task has ended and released its key (what the request id is for:
    see Client.schedule).
    """

    def __init__(self, client: Client, records: Path, count: int, pause_s: float) -> None:
        self.client = client
        self.records = records
        self.count = count
        self.pause_s = pause_s
        self.acked: list[str] = []
        self.failures = 0
        self.run_id = uuid.uuid4().hex

    def run(self) -> None:
        """Schedule them all (the body of a thread)."""
        for i in range(self.count):
            while True:
                try:
                    args = {"dir": str(self.records), "seconds": 0.05}
                    task = self.client.schedule(
                        "chaos_record", args, key=f"k{i}", request_id=f"{self.run_id}-{i}"
                    )
                    break
                except (*REDIS_ERRORS, RedisUnavailable):
                    self.failures += 1
                    time.sleep(0.05)
            self.acked.append(task.id)
            time.sleep(self.pause_s)
