"""Job files added, changed and removed while a worker runs; the warnings about served jobs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from perseid_jobs import Client, TaskStatus
from perseid_jobs.api.served import NotServedWarning
from perseid_jobs.store.redisproc import RedisServer

from .conftest import JOBS, wait_until, wait_workers
from .test_zygote import alive, children

WRITER = """
from pathlib import Path

from perseid_jobs import job


@job(max_duration="{max_duration}", slots=1)
def run(task):
    Path(task.args["out"]).write_text("{tag}")
"""

HOLDER = """
import time
from pathlib import Path

from perseid_jobs import job


@job(max_duration="2m", slots=1)
def run(task):
    task.logger.info("holding")
    while not Path(task.args["release"]).exists():
        time.sleep(0.02)
    task.logger.info("released")
"""


def task_process(zygote: int, task_id: str) -> int | None:
    """The child of ``zygote`` that runs ``task_id`` (it holds the task's log open)."""
    for pid in children(zygote):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(f"/{task_id}.log"):
                    return pid
    return None


def write_job(jobs: Path, name: str, tag: str, max_duration: str = "1m") -> None:
    (jobs / f"{name}.py").write_text(WRITER.format(tag=tag, max_duration=max_duration))


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    """A jobs directory of the test's own, with one job, ``first``."""
    directory = tmp_path / "jobs"
    directory.mkdir()
    write_job(directory, "first", "first")
    return directory


@pytest.fixture
def c(redis_server: RedisServer, namespace: str, jobs: Path) -> Iterator[Client]:
    """A client whose local jobs directory is the test's."""
    client = Client.from_url(redis_server.url, namespace=namespace, jobs_dir=jobs)
    yield client
    client.close()


def offered(c: Client) -> dict[str, float]:
    """Jobs some live instance offers: name -> max duration (s), from the catalog."""
    return {j.name: j.max_duration for j in c.jobs() if j.instances}


def run_to_end(c: Client, job: str, tmp: Path) -> str:
    out = tmp / f"out-{job}"
    out.unlink(missing_ok=True)
    done = c.wait(c.schedule(job, {"out": str(out)}).id, 15)
    assert done.status is TaskStatus.COMPLETED, done.reason
    return out.read_text()


def test_a_job_file_added_while_the_worker_runs_is_served_without_a_restart(
    c: Client, jobs: Path, tmp_path: Path, start_worker
) -> None:
    w = start_worker(2, "--jobs-rescan", "0.2s", jobs=jobs)
    wait_workers(c, 1)
    assert set(offered(c)) == {"first"}
    write_job(jobs, "added", "added")
    wait_until(lambda: "added" in offered(c), 10, "the added job in the catalog")
    assert run_to_end(c, "added", tmp_path) == "added"
    assert run_to_end(c, "first", tmp_path) == "first"
    assert w.proc.poll() is None and len(c.workers()) == 1  # the same process, no restart
    assert "jobs reloaded: 2 served (added: added;" in w.output()


def test_a_changed_job_file_runs_its_new_code_and_a_removed_one_leaves_the_catalog(
    c: Client, jobs: Path, tmp_path: Path, start_worker
) -> None:
    start_worker(2, "--jobs-rescan", "0.2s", jobs=jobs)
    wait_workers(c, 1)
    write_job(jobs, "second", "second")
    wait_until(lambda: "second" in offered(c), 10, "the second job")
    assert run_to_end(c, "first", tmp_path) == "first"
    write_job(jobs, "first", "first, changed", max_duration="3m")
    wait_until(lambda: offered(c).get("first") == 180, 10, "the changed definition")
    assert run_to_end(c, "first", tmp_path) == "first, changed"
    (jobs / "second.py").unlink()
    wait_until(lambda: "second" not in offered(c), 10, "the removed job gone")
    assert "second" not in {j.name for j in c.jobs()}  # no live instance offers it: dropped
    inst = c.workers()[0].id
    assert c.redis.smembers(c.keys.instance_jobs(inst)) == {"first"}


def test_sighup_loads_the_jobs_again_at_once(c: Client, jobs: Path, tmp_path: Path, start_worker):
    w = start_worker(2, "--jobs-rescan", "0", jobs=jobs)  # no rescans: only the signal
    wait_workers(c, 1)
    write_job(jobs, "added", "added")
    w.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "added" in offered(c), 10, "the added job in the catalog")
    assert run_to_end(c, "added", tmp_path) == "added"
    assert w.proc.poll() is None


def test_a_running_task_survives_the_zygote_replacement_and_completes(
    c: Client, jobs: Path, tmp_path: Path, start_worker
) -> None:
    (jobs / "hold.py").write_text(HOLDER)
    w = start_worker(2, "--jobs-rescan", "0.2s", jobs=jobs)
    wait_workers(c, 1)
    release = tmp_path / "release"
    task = c.schedule("hold", {"release": str(release)})
    wait_until(lambda: c.get(task.id).status is TaskStatus.RUNNING, 15, "running")
    (old,) = children(w.proc.pid)  # the zygote
    holder = wait_until(lambda: task_process(old, task.id), 5, "the task's process")
    write_job(jobs, "added", "added")
    wait_until(lambda: "added" in offered(c), 10, "the reload")
    fresh = children(w.proc.pid) - {old}
    assert len(fresh) == 1 and alive(old)  # the old one keeps its task
    assert isinstance(holder, int) and alive(holder)
    assert c.get(task.id).status is TaskStatus.RUNNING
    assert run_to_end(c, "added", tmp_path) == "added"  # on the fresh zygote meanwhile
    release.touch()
    done = c.wait(task.id, 15)
    assert (done.status, done.exit_code) == (TaskStatus.COMPLETED, 0)
    wait_until(lambda: not alive(old), 10, "the retired zygote to exit")
    # Then reaped by the worker: until it is, it stays a child (a zombie).
    wait_until(lambda: children(w.proc.pid) == fresh, 10, "the retired zygote reaped")
    logged = wait_until(lambda: list(w.bucket.rglob(f"{task.id}.log")), 10, "the log upload")
    text = logged[0].read_text()  # type: ignore[index]
    assert '"holding"' in text and '"released"' in text
    assert w.terminate() == 0


def test_a_jobs_directory_that_cannot_be_loaded_again_keeps_the_jobs_loaded_before(
    c: Client, jobs: Path, tmp_path: Path, start_worker
) -> None:
    w = start_worker(2, "--jobs-rescan", "0.2s", jobs=jobs)
    wait_workers(c, 1)
    jobs.rename(tmp_path / "moved")  # the directory is gone: a fresh zygote fails
    wait_until(lambda: "could not be loaded" in w.output(), 10, "the failed reload")
    assert run_to_end(c, "first", tmp_path) == "first"  # the current zygote served on
    assert "first" in offered(c)


def test_a_worker_serving_no_jobs_warns_naming_its_directory(
    c: Client, tmp_path: Path, start_worker
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    w = start_worker(2, jobs=empty)
    wait_workers(c, 1)
    wait_until(lambda: f"no jobs in {empty}: this instance serves none" in w.output(), 5, "warning")


def test_schedule_warns_when_no_live_worker_serves_the_job(
    client: Client, jobs: Path, start_worker
) -> None:
    start_worker(2, jobs=jobs)  # serves `first` only
    wait_workers(client, 1)
    with pytest.warns(NotServedWarning, match="no live worker serves job 'sleep'"):
        task = client.schedule("sleep")  # known from the client's local jobs directory
    assert client.get(task.id).status is TaskStatus.PENDING  # scheduled all the same
    client.schedule("first")  # served: no warning (warnings are errors in the tests)


def test_the_schedule_command_prints_the_not_served_warning_as_one_line(
    redis_server: RedisServer, namespace: str, client: Client, jobs: Path, start_worker
) -> None:
    start_worker(2, jobs=jobs)
    wait_workers(client, 1)
    argv = [sys.executable, "-m", "perseid_jobs", "schedule", "sleep", "--jobs", str(JOBS)]
    argv += ["--redis", redis_server.url, "--namespace", namespace]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSEID_")}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: no live worker serves job 'sleep'")
    assert client.get(done.stdout.strip()).status is TaskStatus.PENDING


@pytest.mark.parametrize("value", ["1ms", "soon"])
def test_a_bad_jobs_rescan_is_one_line_naming_the_option(redis_server: RedisServer, value) -> None:
    argv = [sys.executable, "-m", "perseid_jobs", "worker", "--slots", "1", "--jobs", str(JOBS)]
    argv += ["--redis", redis_server.url, "--jobs-rescan", value]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --jobs-rescan"), lines
    assert value in lines[0]
