"""``perseid-jobs run``: one task locally, without Redis, with a worker's verdict.

Real subprocesses and signals. The verdicts are checked against what a real
worker on a private Redis records for the same jobs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import orjson
import pytest

from perseid_jobs import Client
from perseid_jobs.store.redisproc import RedisServer

from .conftest import JOBS, WorkerProc, wait_until, wait_workers

VERDICT = re.compile(r"^(\w+) in [\d.]+s \(exit (-?\d+)\)(?:: (.*))?$")

EXIT_WITH = """\
import sys
from perseid_jobs import job


@job(max_duration="30s", slots=1)
def run(task):
    sys.exit(task.args["code"])
"""

# Past its max duration it ignores SIGTERM: SIGKILL after the grace ends it.
STUBBORN_TIMEOUT = """\
import signal
import time
from perseid_jobs import job


@job(max_duration="1s", slots=1)
def run(task):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(600)
"""

# Its own process group must die with it: the child and the task both log their pids.
SPAWN_AND_WAIT = """\
import os
import signal
import subprocess
import time
from perseid_jobs import job


@job(max_duration="2m", slots=1)
def run(task):
    if task.args.get("stubborn"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen(["sleep", "600"])
    task.logger.info("spawned", extra={"child_pid": child.pid, "task_pid": os.getpid()})
    time.sleep(600)
"""


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    """The example jobs this file uses, and two of its own."""
    d = tmp_path / "jobs"
    d.mkdir()
    for name in ("timeout", "fail", "cancel_self", "hello"):
        shutil.copy(JOBS / f"{name}.py", d)
    (d / "exit_with.py").write_text(EXIT_WITH)
    (d / "stubborn_timeout.py").write_text(STUBBORN_TIMEOUT)
    (d / "spawn_and_wait.py").write_text(SPAWN_AND_WAIT)
    return d


def run(
    jobs: Path, job: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "perseid_jobs", "run", job, "--jobs", str(jobs),
         "--kill-grace", "0.5s", *args],
        input=stdin, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def verdict(proc: subprocess.CompletedProcess[str]) -> tuple[str, int, str]:
    """(status, exit code, reason) from ``run``'s last stderr line."""
    found = VERDICT.match(proc.stderr.splitlines()[-1])
    assert found, proc.stderr
    return found[1], int(found[2]), found[3] or ""


CASES = [
    # job, args, run's exit code
    ("timeout", "{}", 1),
    ("fail", '{"message": "boom"}', 1),
    ("cancel_self", "{}", 100),
    ("exit_with", '{"code": 3}', 3),
    ("stubborn_timeout", "{}", 1),
]


def test_run_gives_the_verdict_a_worker_gives(
    jobs: Path,
    redis_server: RedisServer,
    namespace: str,
    start_worker: Callable[..., WorkerProc],
) -> None:
    client = Client.from_url(redis_server.url, namespace=namespace, jobs_dir=jobs)
    start_worker(4, jobs=jobs)
    wait_workers(client, 1)
    ids = [client.schedule(job, orjson.loads(args)).id for job, args, _ in CASES]
    ran = [run(jobs, job, "--args", args) for job, args, _ in CASES]
    for (job, _, code), proc, task_id in zip(CASES, ran, ids, strict=True):
        task = client.wait(task_id, timeout=30)
        assert verdict(proc) == (task.status.value, task.exit_code, task.reason), job
        assert proc.returncode == code, (job, proc.stderr)


def test_run_times_out_at_max_duration_and_kills_the_group(jobs: Path) -> None:
    started = time.monotonic()
    proc = run(jobs, "timeout")
    took = time.monotonic() - started
    assert verdict(proc) == ("failed", -15, "timeout after 2s")
    assert proc.returncode == 1 and took < 8, (took, proc.stderr)
    assert proc.stdout.splitlines()[-1].endswith("killed: timeout after 2s")  # as a worker's log
    child = int(re.search(r"child_pid=(\d+)", proc.stdout)[1])  # type: ignore[index]
    assert not _alive(child)


def test_run_prints_records_extra_fields_with_args_from_a_file_or_stdin(
    jobs: Path, tmp_path: Path
) -> None:
    path = tmp_path / "args.json"
    path.write_text('{"name": "from-file"}')
    by_file = run(jobs, "hello", "--args", f"@{path}")
    assert by_file.returncode == 0, by_file.stderr
    assert re.search(r"INFO\s+hello\s+who=\"from-file\"", by_file.stdout), by_file.stdout
    assert "hello, from-file" in by_file.stdout
    piped = run(jobs, "hello", "--args", "-", stdin='{"name": "from-stdin"}')
    assert piped.returncode == 0 and 'who="from-stdin"' in piped.stdout, piped.stdout
    missing = run(jobs, "hello", "--args", "@/nonexistent.json")
    assert missing.returncode == 2 and "cannot read the file" in missing.stderr


@pytest.mark.parametrize(
    ("sig", "to_group", "stubborn"),
    [
        (signal.SIGINT, True, False),  # Ctrl-C: the terminal signals the foreground group
        (signal.SIGINT, True, True),  # the task ignores SIGTERM: a second Ctrl-C kills it
        (signal.SIGTERM, False, False),  # kill PID
        (signal.SIGTERM, True, False),  # a service manager stopping the whole group
    ],
)
def test_a_stop_signal_to_run_kills_the_tasks_group(
    jobs: Path, sig: signal.Signals, to_group: bool, stubborn: bool
) -> None:
    args = '{"stubborn": true}' if stubborn else "{}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "perseid_jobs", "run", "spawn_and_wait", "--jobs", str(jobs),
         "--args", args, "--kill-grace", "30s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # a group of its own, as a terminal's foreground job has
    )  # fmt: skip

    def send() -> None:
        os.killpg(proc.pid, sig) if to_group else proc.send_signal(sig)

    leaders: list[int] = []  # the task's, once known
    with proc, contextlib.ExitStack() as cleanup:
        cleanup.callback(_kill_groups, proc, leaders)
        assert proc.stdout is not None and proc.stderr is not None
        line = _line_with(proc.stdout, "spawned")
        child = int(re.search(r"child_pid=(\d+)", line)[1])  # type: ignore[index]
        task = int(re.search(r"task_pid=(\d+)", line)[1])  # type: ignore[index]
        leaders.append(task)
        assert os.getpgid(child) == task  # the task leads its own group
        send()
        if stubborn:  # SIGTERM ignored: still there; a second signal kills it now, not in 30 s
            _line_with(proc.stderr, "stopping the task")
            assert _alive(task)
            send()
        rc = proc.wait(timeout=10)
        stderr = proc.stderr.read()
        assert rc == 128 + sig, stderr
        assert f"interrupted by {sig.name}" in stderr.splitlines()[-1], stderr
        wait_until(lambda: not _alive(task) and not _alive(child), 5, "the task's group gone")


def _kill_groups(proc: subprocess.Popen[str], leaders: list[int]) -> None:
    """At the end of a test that failed half-way: nothing of it left running.

    The task's group first: with the zygote SIGKILLed, a grandchild that
    ignores SIGTERM would live on. Only while ``run`` lives, so each of
    ``leaders`` is still the id of that group.
    """
    if proc.poll() is None:
        for leader in leaders:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(leader, signal.SIGKILL)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _line_with(stream: IO[str], text: str) -> str:
    """The first line read from ``stream`` that contains ``text``."""
    while True:
        line = stream.readline()
        assert line, f"ended before a line with {text!r}"
        if text in line:
            return line


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
