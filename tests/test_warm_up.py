"""The warm parent's warm-up: a job file's ``warm_up()`` and what a first connection needs.

Real workers, real zygotes and task processes; each job file is the test's own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from perseid_jobs import Client, TaskStatus
from perseid_jobs.launch.warmup import load_warm
from perseid_jobs.store.redisproc import RedisServer

from .conftest import wait_until, wait_workers
from .test_jobs_reload import offered
from .test_zygote import children

WARMED = """
import os

from perseid_jobs import job

PREPARED = None


def warm_up():
    global PREPARED
    with open({record!r}, "a") as fh:
        fh.write(f"{{os.getpid()}}\\n")
    PREPARED = f"prepared by {{os.getpid()}}"


@job(max_duration="1m", slots=1)
def run(task):
    with open(task.args["out"], "a") as fh:
        fh.write(f"{{os.getpid()}} {{os.getppid()}} {{PREPARED}}\\n")
"""

RAISING = """
from perseid_jobs import job


def warm_up():
    raise RuntimeError("no settings file at /etc/app.toml\\nset APP_SETTINGS")


@job(max_duration="1m", slots=1)
def run(task):
    pass
"""

# After the first connection of a task process: the modules it had to import itself.
CONNECTING = """
import json
import sys

import redis

from perseid_jobs import job


@job(max_duration="1m", slots=1)
def run(task):
    before = set(sys.modules)
    redis.Redis.from_url(task.args["redis"]).rpush(task.args["key"], task.id)
    with open(task.args["out"], "w") as fh:
        json.dump(sorted(set(sys.modules) - before), fh)
"""


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    directory = tmp_path / "jobs"
    directory.mkdir()
    return directory


@pytest.fixture
def c(redis_server: RedisServer, namespace: str, jobs: Path) -> Iterator[Client]:
    client = Client.from_url(redis_server.url, namespace=namespace, jobs_dir=jobs)
    yield client
    client.close()


def test_warm_up_runs_once_in_the_zygote_and_every_task_sees_what_it_prepared(
    c: Client, jobs: Path, tmp_path: Path, start_worker
) -> None:
    record = tmp_path / "warm-ups"
    (jobs / "warmed.py").write_text(WARMED.format(record=str(record)))
    w = start_worker(2, jobs=jobs)
    wait_workers(c, 1)
    out = tmp_path / "out"
    # The client reads the job's definition from the same file: that must not warm it up.
    tasks = [c.schedule("warmed", {"out": str(out)}) for _ in range(6)]
    for task in tasks:
        done = c.wait(task.id, 15)
        assert done.status is TaskStatus.COMPLETED, done.reason
    (zygote,) = children(w.proc.pid)
    assert record.read_text().split() == [str(zygote)]  # once, in the zygote, not per task
    lines = [line.split(" ", 2) for line in out.read_text().splitlines()]
    assert len(lines) == 6
    assert len({pid for pid, _, _ in lines}) == 6  # six task processes...
    assert {(ppid, seen) for _, ppid, seen in lines} == {(str(zygote), f"prepared by {zygote}")}


def test_a_raising_warm_up_makes_the_job_unavailable_with_a_one_line_reason(
    c: Client, jobs: Path, start_worker
) -> None:
    (jobs / "broken.py").write_text(RAISING)
    (jobs / "fine.py").write_text(WARMED.format(record=str(jobs.parent / "rec")))
    w = start_worker(2, jobs=jobs)
    wait_workers(c, 1)
    wait_until(lambda: "fine" in offered(c), 10, "the catalog")
    assert "broken" not in offered(c)
    line = (
        f"job file skipped: {jobs / 'broken.py'}: warm_up() failed: RuntimeError:"
        " no settings file at /etc/app.toml set APP_SETTINGS"
    )
    wait_until(lambda: line in w.output(), 5, "the skipped line")
    assert line + "\n" in w.output()  # the whole reason on that one line


@pytest.mark.parametrize(
    ("hook", "reason"),
    [
        (
            "async def warm_up():\n    pass\n",
            "warm_up must be a plain function (def), not async def",
        ),
        ("warm_up = 3\n", "warm_up must be a function taking no arguments, not int"),
        ("def warm_up():\n    raise SystemExit(2)\n", "warm_up() failed: SystemExit: 2"),
    ],
)
def test_a_warm_up_that_is_not_a_plain_function_or_exits_is_a_load_error(
    jobs: Path, hook: str, reason: str
) -> None:
    job = "@job(max_duration='1m')\ndef run(task):\n    pass\n"
    (jobs / "odd.py").write_text(f"from perseid_jobs import job\n\n{hook}\n\n{job}")
    loaded, errors = load_warm(jobs)
    assert loaded == {}
    assert errors == [f"{jobs / 'odd.py'}: {reason}"]


def test_a_task_process_first_redis_connection_imports_nothing_the_zygote_did_not(
    c: Client, jobs: Path, tmp_path: Path, redis_server: RedisServer, namespace: str, start_worker
) -> None:
    (jobs / "connecting.py").write_text(CONNECTING)
    start_worker(2, jobs=jobs)
    wait_workers(c, 1)
    out = tmp_path / "imported.json"
    key = f"{namespace}:warm-test"
    task = c.schedule("connecting", {"redis": redis_server.url, "key": key, "out": str(out)})
    done = c.wait(task.id, 15)
    assert done.status is TaskStatus.COMPLETED, done.reason
    assert json.loads(out.read_text()) == []
    assert c.redis.lrange(key, 0, -1) == [task.id]
    c.redis.delete(key)
