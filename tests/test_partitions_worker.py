"""Workers over a namespace of several partitions (one redis-server here; a Cluster in
tests/chaos/test_cluster.py): each task once, --slots over all partitions, wake-ups."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from perseid_jobs import Client, TaskStatus
from perseid_jobs.store.partitions import partition_of_id
from perseid_jobs.store.redisproc import RedisServer

from .chaos.conftest import read_attempts, slots_left
from .conftest import JOBS, WorkerProc, wait_until, wait_workers

PARTS = "4"


@pytest.fixture
def records(tmp_path: Path) -> Path:
    (tmp_path / "records").mkdir()
    return tmp_path / "records"


@pytest.fixture
def pc(redis_server: RedisServer, namespace: str) -> Client:
    return Client.from_url(redis_server.url, namespace=namespace, jobs_dir=JOBS, partitions=4)


def test_two_workers_run_each_task_of_every_partition_once(
    pc: Client, start_worker: Callable[..., WorkerProc], records: Path
) -> None:
    start_worker(4, "--partitions", PARTS)
    start_worker(4, "--partitions", PARTS)
    wait_workers(pc, 2)
    assert [w.slots_total for w in pc.workers()] == [4, 4]
    ids = [pc.schedule("chaos_record", {"dir": str(records), "seconds": 0.01}).id
           for _ in range(200)]  # fmt: skip
    done = [pc.wait(i, 30) for i in ids]
    assert all(t.status is TaskStatus.COMPLETED and t.attempt == 1 for t in done)
    assert {partition_of_id(i) for i in ids} == {0, 1, 2, 3}
    attempts = read_attempts(records)
    assert sorted(attempts) == sorted(ids) and all(len(a) == 1 for a in attempts.values())
    assert slots_left(pc) == (0, 0)


def test_slots_hold_over_all_partitions_together(
    pc: Client, start_worker: Callable[..., WorkerProc], records: Path
) -> None:
    start_worker(2, "--partitions", PARTS)
    wait_workers(pc, 1)
    ids = [pc.schedule("chaos_record", {"dir": str(records), "seconds": 0.3}).id
           for _ in range(12)]  # fmt: skip
    assert len({partition_of_id(i) for i in ids}) > 1
    assert all(pc.wait(i, 30).status is TaskStatus.COMPLETED for i in ids)
    spans = [(a.start, a.end) for runs in read_attempts(records).values() for a in runs]
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    assert most == 2  # never more than --slots 2, and both slots used


def test_an_idle_worker_is_woken_in_any_partition_and_stops_a_cancelled_task(
    pc: Client, start_worker: Callable[..., WorkerProc], records: Path
) -> None:
    # A long heartbeat: a task started well within it was started by a wake-up, not a poll.
    start_worker(2, "--partitions", PARTS, "--heartbeat", "20s", "--lease-ttl", "60s")
    wait_workers(pc, 1)
    for n in range(4):
        t = pc.schedule("chaos_record", {"dir": str(records), "seconds": 0.01})
        started = time.monotonic()
        assert pc.wait(t.id, 5).status is TaskStatus.COMPLETED
        assert time.monotonic() - started < 5, f"task {n} waited for a poll"
    slow = pc.schedule("chaos_record", {"dir": str(records), "seconds": 30})
    wait_until(lambda: pc.get(slow.id).status is TaskStatus.RUNNING, 10, "the task running")
    pc.cancel(slow.id)
    assert pc.wait(slow.id, 10).status is TaskStatus.CANCELLED
