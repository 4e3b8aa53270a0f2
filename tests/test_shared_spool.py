"""Two workers on one host sharing a logs directory: neither takes the other's logs."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from perseid_jobs import Client, TaskStatus

from .conftest import wait_until, wait_workers

TASKS = 300


@pytest.fixture
def bucket_dir(tmp_path: Path) -> Iterator[Path]:
    """A bucket on another filesystem than the logs, when there is one (tmpfs).

    There, an upload is a copy, not a second name of the spool file: a log
    taken while still written is stored cut short, as a user saw it.
    """
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp_path.stat().st_dev:
        path = Path(tempfile.mkdtemp(prefix=f"perseid-bucket-{uuid.uuid4().hex[:6]}-", dir=shm))
    else:
        path = tmp_path / "bucket"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def lines_of(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_two_workers_share_a_logs_dir_and_one_is_killed_and_restarted(
    client: Client, start_worker, tmp_path: Path, bucket_dir: Path
) -> None:
    logs = tmp_path / "shared-logs"
    args = ("--logs-dir", str(logs), "--bucket", bucket_dir.as_uri())
    first = start_worker(6, *args)
    wait_workers(client, 1)
    ids = [client.schedule("sleep", {"seconds": 0.05 + (i % 7) / 100}).id for i in range(TASKS)]
    # The second starts while the first runs tasks: their logs are not leftovers.
    wait_until(lambda: client.tasks(status=TaskStatus.RUNNING), 10, "tasks running")
    second = start_worker(6, *args)
    wait_workers(client, 2)

    def ended() -> int:
        return sum(client.get(i).status.terminal for i in ids)

    wait_until(lambda: ended() >= TASKS // 3, 60, "a third of the tasks done")
    first.kill9()  # mid-run: its tasks die with it, their logs stay in its spool
    restarted = start_worker(6, *args)
    wait_until(lambda: ended() == TASKS, 90, "every task ended")
    try:
        wait_until(lambda: all(client.get(i).log_url for i in ids), 30, "every log_url recorded")
    except AssertionError as exc:  # which ones, and where their logs are, if anywhere
        missing = [(t.id, t.status, t.reason) for t in map(client.get, ids) if not t.log_url]
        left = [str(p) for m in missing for p in logs.rglob(f"{m[0]}*")]
        raise AssertionError(f"{exc}: {missing}; their logs: {left}") from None

    stored = sorted(p for p in bucket_dir.rglob("*") if p.is_file())
    assert len(stored) == TASKS, "exactly one object per task, no temporaries"
    assert sorted(p.stem for p in stored) == sorted(ids)
    killed = 0
    for task_id in ids:
        task = client.get(task_id)
        assert task.log_url is not None
        path = Path(task.log_url.removeprefix("file://"))
        assert path.is_file() and path.parent.is_relative_to(bucket_dir)
        lines = lines_of(path)
        assert {line["task"] for line in lines} == {task_id}, "only this task's lines"
        if task.status is TaskStatus.COMPLETED:
            assert lines[0]["msg"] == "task started"
            assert lines[-1]["msg"] == "woke up", f"log of {task_id} cut short"
        else:  # running on the worker killed -9: the zygote says so as it kills the task
            assert task.status is TaskStatus.FAILED
            # Or it ran to its end, and its report died with the worker: complete all the same.
            last = str(lines[-1]["msg"])
            assert last.startswith("killed: ") or last == "woke up", lines[-1]
            # Killed so early that the task had not written its first line yet: only the last.
            assert lines[0]["msg"] == "task started" or len(lines) == 1
            killed += last.startswith("killed: ")
    assert killed > 0, "the kill -9 landed while tasks ran"
    for w in (second, restarted):
        assert w.terminate() == 0
    for w in (first, second, restarted):
        assert "vanished" not in w.output(), w.output()
    # Every spool is gone: uploaded, recorded, and the dead instance's removed once emptied.
    assert [p.name for p in logs.iterdir() if p.name != ".lock"] == []
