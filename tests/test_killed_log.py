"""A task the worker kills has a log whose last line says it was killed, and why."""

from __future__ import annotations

from pathlib import Path

import msgspec
import orjson

from perseid_jobs import Client, TaskStatus

from .conftest import wait_until, wait_workers


def last_line(client: Client, task_id: str) -> dict[str, object]:
    url = wait_until(lambda: client.get(task_id).log_url, 15, "log upload")
    assert isinstance(url, str)
    lines = Path(url.removeprefix("file://")).read_bytes().splitlines()
    assert orjson.loads(lines[0])["msg"] == "task started"
    doc: dict[str, object] = orjson.loads(lines[-1])
    assert (doc["task"], doc["hostname"]) == (task_id, orjson.loads(lines[0])["hostname"])
    return doc


def test_a_timed_out_task_log_ends_with_why_it_was_killed(client: Client, start_worker) -> None:
    start_worker(2)
    wait_workers(client, 1)
    task = client.wait(client.schedule("timeout").id, 20)
    assert (task.status, task.reason) == (TaskStatus.FAILED, "timeout after 2s")
    doc = last_line(client, task.id)
    assert (doc["level"], doc["msg"], doc["job"]) == (50, "killed: timeout after 2s", "timeout")


def test_a_cancelled_running_task_log_ends_with_why_it_was_killed(
    client: Client, start_worker
) -> None:
    start_worker(2)
    wait_workers(client, 1)
    task = client.schedule("sleep", {"seconds": 60})
    wait_until(lambda: client.get(task.id).status is TaskStatus.RUNNING, 10, "running")
    client.cancel(task.id)
    assert client.wait(task.id, 20).status is TaskStatus.CANCELLED
    doc = last_line(client, task.id)
    assert (doc["level"], doc["msg"]) == (40, "killed: cancelled by user")


def test_a_task_killed_at_shutdown_log_ends_with_why(client: Client, start_worker) -> None:
    w = start_worker(2, "--drain-timeout", "0.5s")
    wait_workers(client, 1)
    task = client.schedule("sleep", {"seconds": 60})
    wait_until(lambda: client.get(task.id).status is TaskStatus.RUNNING, 10, "running")
    assert w.terminate() == 0
    assert client.get(task.id).status is TaskStatus.FAILED
    doc = last_line(client, task.id)
    assert (doc["level"], doc["msg"]) == (50, "killed: worker shutdown")


def test_a_task_claimed_by_a_worker_that_died_before_starting_it_gets_a_log(
    client: Client, start_worker
) -> None:
    """An instance claims a task and dies before any process ran it (no log anywhere):
    the worker that reaps it writes its one-line log after the grace (orphan_logs.py)."""
    task = client.schedule("hello", at="+1h")
    jobs = {"hello": msgspec.json.encode(client.job_definition("hello")).decode()}
    client.scripts.register("doomed", ttl_ms=60_000, slots=4, host="h", pid=1, version="t",
                            jobs=jobs)  # fmt: skip
    client.redis.zadd(client.keys.due, {task.id: 0})  # due now
    claimed = client.scripts.claim("doomed", 1)
    assert [t.id for t in claimed.tasks] == [task.id]  # type: ignore[union-attr]
    client.redis.zadd(client.keys.instances, {"doomed": 0})  # its lease lapses: it died
    start_worker(2)
    wait_workers(client, 1)
    failed = client.wait(task.id, 15)
    assert (failed.status, failed.reason) == (TaskStatus.FAILED, "instance doomed lost")
    url = wait_until(lambda: client.get(task.id).log_url, 20, "the reaper's log of it")
    assert isinstance(url, str)
    (line,) = Path(url.removeprefix("file://")).read_bytes().splitlines()
    doc = orjson.loads(line)
    assert (doc["task"], doc["level"], doc["msg"]) == (
        task.id,
        50,
        "killed: the worker process exited before the task started",
    )
