"""End to end: real redis-server, real worker processes, real task processes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from perseid_jobs import Client, TaskStatus
from perseid_jobs.api.client import CapacityWarning
from perseid_jobs.core.models import Task
from perseid_jobs.store.scripts import script_source

from .conftest import wait_until, wait_workers


def max_overlap(tasks: list[Task]) -> int:
    """Most tasks running at the same instant, from their Redis start/end times."""
    points = []
    for t in tasks:
        assert t.started_at and t.ended_at
        points += [(t.started_at, 1), (t.ended_at, -1)]
    level = best = 0
    for _, delta in sorted(points, key=lambda p: (p[0], p[1])):
        level += delta
        best = max(best, level)
    return best


def test_one_off_task_completes_with_redis_times(client: Client, start_worker) -> None:
    start_worker(4)
    wait_workers(client, 1)
    task = client.schedule("hello", {"name": "Ada"})
    done = client.wait(task.id, 15)
    assert done.status is TaskStatus.COMPLETED
    assert done.exit_code == 0
    assert done.attempt == 1
    assert done.start_at and done.started_at and done.ended_at
    assert done.start_at <= done.started_at <= done.ended_at
    assert done.instance


def test_failing_job_is_failed_with_the_exception_in_reason(client: Client, start_worker) -> None:
    start_worker(2)
    task = client.schedule("fail", {"message": "disk on fire"})
    done = client.wait(task.id, 15)
    assert done.status is TaskStatus.FAILED
    assert done.exit_code == 1
    assert done.reason == "exit code 1: ValueError: disk on fire"


def test_exit_100_ends_the_task_cancelled(client: Client, start_worker) -> None:
    start_worker(2)
    done = client.wait(client.schedule("cancel_self").id, 15)
    assert done.status is TaskStatus.CANCELLED
    assert done.exit_code == 100


def test_task_past_max_duration_is_killed_with_its_process_group(
    client: Client, start_worker
) -> None:
    w = start_worker(2)
    done = client.wait(client.schedule("timeout").id, 20)
    assert done.status is TaskStatus.FAILED
    assert done.reason == "timeout after 2s"
    wait_until(lambda: list(w.bucket.rglob(f"{done.id}.log")), 10, "the log upload")
    log_files = list(w.bucket.rglob(f"{done.id}.log"))
    lines = [orjson.loads(x) for x in log_files[0].read_bytes().splitlines()]
    child_pid = next(x["child_pid"] for x in lines if "child_pid" in x)

    def child_gone() -> bool:
        try:
            state = Path(f"/proc/{child_pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return True
        return state in ("Z", "X")  # a zombie waiting for init to reap it is dead

    wait_until(child_gone, 5, "the job's own child process to die")


def test_two_512_slot_tasks_at_most_on_a_1024_slot_worker(client: Client, start_worker) -> None:
    start_worker(1024)
    wait_workers(client, 1)
    ids = [client.schedule("heavy", {"seconds": 0.6}).id for _ in range(4)]
    done = [client.wait(i, 20) for i in ids]
    assert all(t.status is TaskStatus.COMPLETED for t in done)
    assert max_overlap(done) == 2


def test_two_workers_run_four_512_slot_tasks_at_once(client: Client, start_worker) -> None:
    start_worker(1024)
    start_worker(1024)
    wait_workers(client, 2)
    ids = [client.schedule("heavy", {"seconds": 1.5}).id for _ in range(4)]
    done = [client.wait(i, 20) for i in ids]
    assert all(t.status is TaskStatus.COMPLETED for t in done)
    assert max_overlap(done) == 4
    assert len({t.instance for t in done}) == 2


def test_task_needing_more_slots_than_the_instance_has_is_never_claimed_by_it(
    client: Client, start_worker
) -> None:
    start_worker(256)
    wait_workers(client, 1)
    with pytest.warns(CapacityWarning, match="needs 512 slots"):
        heavy = client.schedule("heavy")
    small = client.schedule("hello")
    # The small task was due after the heavy one; once it ran, the worker had passed over it.
    assert client.wait(small.id, 15).status is TaskStatus.COMPLETED
    assert client.get(heavy.id).status is TaskStatus.PENDING
    assert client.workers()[0].slots_used == 0


def test_cancel_of_a_pending_task_ends_it_at_once(client: Client) -> None:
    task = client.schedule("hello", at="+1h")
    cancelled = client.cancel(task.id)
    assert cancelled.status is TaskStatus.CANCELLED
    assert cancelled.reason == "cancelled by user"
    assert client.tasks(status="pending") == []


def test_cancel_of_a_running_task_kills_it_and_frees_its_slots(
    client: Client, start_worker
) -> None:
    start_worker(4)
    task = client.schedule("sleep", {"seconds": 60})
    wait_until(lambda: client.get(task.id).status is TaskStatus.RUNNING, 15, "running")
    client.cancel(task.id)
    done = client.wait(task.id, 10)
    assert done.status is TaskStatus.CANCELLED
    assert done.reason == "cancelled by user"
    assert client.workers()[0].slots_used == 0


def test_killed_worker_task_is_failed_by_another_within_lease_and_reap_interval(
    client: Client, start_worker
) -> None:
    victim = start_worker(4)
    wait_workers(client, 1)
    task = client.schedule("sleep", {"seconds": 60})
    running = wait_until(
        lambda: (t := client.get(task.id)).status is TaskStatus.RUNNING and t, 15, "running"
    )
    assert isinstance(running, Task)
    victim.kill9()
    start_worker(4)
    killed_at = client.now_ms()
    done = client.wait(task.id, 10)
    assert done.status is TaskStatus.FAILED
    assert done.reason == f"instance {running.instance} lost"
    assert done.ended_at is not None
    # lease TTL 1 s + reap interval 0.3 s (+ scheduling slack of the test machine)
    assert done.ended_at.timestamp() * 1000 - killed_at <= 1000 + 300 + 700
    wait_until(lambda: [w.id for w in client.workers()] != [running.instance], 5, "victim gone")
    assert all(w.slots_used == 0 for w in client.workers())


def test_two_workers_racing_on_500_tasks_run_each_exactly_once(
    client: Client, start_worker, raw_redis: redis.Redis
) -> None:
    ids = [client.schedule("noop").id for _ in range(500)]
    start_worker(2)
    start_worker(2)
    done = [client.wait(i, 60) for i in ids]
    assert all(t.status is TaskStatus.COMPLETED and t.attempt == 1 for t in done)
    starts = [
        f["id"]
        for _, f in raw_redis.xrange(client.keys.events, count=100000)
        if f["event"] == "running"
    ]
    assert sorted(starts) == sorted(ids)
    assert len({t.instance for t in done}) == 2


def test_sigterm_drains_running_tasks_then_deregisters(client: Client, start_worker) -> None:
    w = start_worker(4)
    task = client.schedule("sleep", {"seconds": 1})
    wait_until(lambda: client.get(task.id).status is TaskStatus.RUNNING, 15, "running")
    assert w.terminate() == 0
    assert client.get(task.id).status is TaskStatus.COMPLETED
    assert client.workers() == []


def test_drain_timeout_fails_what_is_left_as_worker_shutdown(client: Client, start_worker) -> None:
    w = start_worker(4, "--drain-timeout", "0.5s")
    task = client.schedule("sleep", {"seconds": 60})
    wait_until(lambda: client.get(task.id).status is TaskStatus.RUNNING, 15, "running")
    assert w.terminate() == 0
    done = client.get(task.id)
    assert done.status is TaskStatus.FAILED
    assert done.reason == "worker shutdown"


def test_task_processes_die_with_a_killed_worker(client: Client, start_worker) -> None:
    w = start_worker(2)
    task = client.schedule("sleep", {"seconds": 60})
    wait_until(lambda: client.get(task.id).status is TaskStatus.RUNNING, 15, "running")
    children = Path(f"/proc/{w.proc.pid}/task/{w.proc.pid}/children").read_text().split()
    zygote = int(children[0])

    def task_processes() -> list[str]:  # Redis says running a moment before the fork
        return Path(f"/proc/{zygote}/task/{zygote}/children").read_text().split()

    grand = wait_until(task_processes, 5, "the task's process, a child of the zygote")
    assert isinstance(grand, list)
    w.kill9()

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state == "Z"

    wait_until(lambda: gone(zygote) and all(gone(int(p)) for p in grand), 5, "tasks to die")


def test_job_with_retries_runs_again_after_its_backoff_until_it_succeeds(
    client: Client, start_worker, raw_redis: redis.Redis
) -> None:
    start_worker(2)
    task = client.schedule("flaky", {"succeed_on": 2})
    done = client.wait(task.id, 15)
    assert (done.status, done.attempt) == (TaskStatus.COMPLETED, 2)
    retries = [f for _, f in raw_redis.xrange(client.keys.events) if f["event"] == "retry"]
    assert [(f["id"], f["attempt"], f["reason"]) for f in retries] == [
        (task.id, "1", "exit code 1: RuntimeError: attempt 1 fails")
    ]


def test_job_with_retries_fails_once_they_are_spent(client: Client, start_worker) -> None:
    start_worker(2)
    done = client.wait(client.schedule("flaky", {"succeed_on": 99}).id, 15)
    assert (done.status, done.attempt) == (TaskStatus.FAILED, 3)
    assert done.reason == "exit code 1: RuntimeError: attempt 3 fails"


class Monitor:
    """The commands Redis runs while it is open, as ``MONITOR`` reports them."""

    def __init__(self, raw_redis: redis.Redis) -> None:
        self._monitor = raw_redis.monitor()
        self._monitor.__enter__()  # MONITOR is on once this returns
        self.commands: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        with contextlib.suppress(redis.RedisError, OSError, ValueError):
            for command in self._monitor.listen():
                self.commands.append(command)

    def close(self) -> list[dict[str, Any]]:
        self._monitor.connection.disconnect()
        self._thread.join(5)
        return self.commands


def test_an_idle_worker_warms_its_start_path_once_before_a_due_time_and_a_busy_one_never(
    client: Client, start_worker, raw_redis: redis.Redis
) -> None:
    start_worker(2)
    wait_workers(client, 1)
    monitor = Monitor(raw_redis)
    due_times: list[float] = []
    try:
        # Three quiet due times: a loop that wakes more than the warm-up's 2 ms late (a
        # busy machine) rightly claims at once without one, so one of three must show it.
        for _ in range(3):
            due = client.schedule("hello", at="+1s")
            assert client.wait(due.id, 15).status is TaskStatus.COMPLETED
            assert due.start_at is not None
            due_times.append(due.start_at.timestamp())
        backlog = [client.schedule("hello") for _ in range(20)]
        for task in backlog:
            assert client.wait(task.id, 15).status is TaskStatus.COMPLETED
    finally:
        commands = monitor.close()
    claim = f"EVALSHA {hashlib.sha1(script_source('claim').encode()).hexdigest()}"
    ports = {c["client_port"] for c in commands if c["command"].startswith(claim)}
    assert ports  # the worker's claim connection
    warm_ups = [
        float(c["time"])
        for c in commands
        if c["client_port"] in ports and c["client_address"] != "lua" and c["command"] == "TIME"
    ]
    # A round trip on the claim's connection around each due time (2 ms before it by the
    # worker's clock; its timer and the round trip may run late on a busy machine), not
    # when the task was scheduled a second earlier (the zygote and its spare go through
    # their loops too: see test_zygote); at most one per due time, none for the backlog.
    assert 1 <= len(warm_ups) <= len(due_times)
    for at in warm_ups:
        assert any(due_s - 0.5 <= at <= due_s + 0.1 for due_s in due_times), (at, due_times)
    per_due = [sum(due_s - 0.5 <= at <= due_s + 0.1 for at in warm_ups) for due_s in due_times]
    assert max(per_due) == 1
