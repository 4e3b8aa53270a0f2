"""The zygote on its own: starts through the spare process and without one, real processes."""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from perseid_jobs.launch.protocol import Event, Exited, Started, StartRequest
from perseid_jobs.worker import zygote_client as procs
from perseid_jobs.worker.zygote_client import ZygoteClient

from .conftest import JOBS, wait_until


def children(pid: int) -> set[int]:
    """The live child processes of ``pid``."""
    found: set[int] = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            found |= {int(p) for p in f.read().split()}
    return found


def woken(pid: int) -> int:
    """How many times ``pid`` went to sleep and was woken (voluntary context switches)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt"))


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie is not running)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def request(task_id: str, logs: Path, job: str = "hello", args: bytes = b"{}") -> StartRequest:
    return StartRequest(
        id=task_id,
        job=job,
        args=args.decode(),
        attempt=1,
        started_at_ms=1_700_000_000_000,
        last_completed_at="",
        skipped_runs="",
        log_path=str(logs / f"{task_id}.log"),
        max_log_bytes=1 << 20,
    )


def events_until_exit(zygote: ZygoteClient, task_id: str, timeout: float = 20.0) -> list[Event]:
    """Read the zygote's events until ``task_id`` exits."""
    seen: list[Event] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        select.select([zygote.fileno()], [], [], 0.5)
        seen += zygote.read_events()
        if any(isinstance(e, Exited) and e.id == task_id for e in seen):
            return seen
    raise AssertionError(f"{task_id} did not exit within {timeout}s; events: {seen}")


def log_lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def zygote(logs: Path) -> Iterator[ZygoteClient]:
    z = ZygoteClient(JOBS, spare_dir=logs / ".spare")
    yield z
    z.close()


def spare_of(zygote: ZygoteClient) -> int:
    """The pid of the zygote's spare process, once it has forked one."""
    found = wait_until(lambda: children(zygote.proc.pid), what="a spare task process")
    assert isinstance(found, set) and len(found) == 1
    return found.pop()


def test_a_start_goes_to_the_spare_forked_ahead_and_logs_as_that_task(
    zygote: ZygoteClient, logs: Path
) -> None:
    spare = spare_of(zygote)
    spare_file = logs / ".spare" / f"{zygote.proc.pid}.log"
    assert spare_file.exists()
    zygote.start(request("01TASKA", logs, args=b'{"name": "spare"}'))
    events = events_until_exit(zygote, "01TASKA")
    started = [e for e in events if isinstance(e, Started)]
    exited = [e for e in events if isinstance(e, Exited)]
    assert [(e.id, e.pid) for e in started] == [("01TASKA", spare)]
    assert [(e.id, e.pid, os.waitstatus_to_exitcode(e.status)) for e in exited] == [
        ("01TASKA", spare, 0)
    ]
    lines = log_lines(logs / "01TASKA.log")
    assert lines[0]["msg"] == "task started"
    assert {(line["task"], line["job"], line["pid"]) for line in lines} == {
        ("01TASKA", "hello", spare)
    }
    assert any(line["msg"] == "hello, spare" for line in lines)  # its stdout, captured
    # The next spare has its own, new file; the task's log is not it.
    next_spare = spare_of(zygote)
    assert next_spare != spare
    assert os.stat(spare_file).st_ino != os.stat(logs / "01TASKA.log").st_ino


def test_a_killed_spare_is_replaced_and_starts_still_run(zygote: ZygoteClient, logs: Path) -> None:
    spare = spare_of(zygote)
    os.kill(spare, signal.SIGKILL)
    wait_until(lambda: spare not in children(zygote.proc.pid), what="the spare reaped")
    zygote.start(request("01TASKB", logs, job="fail"))
    events = events_until_exit(zygote, "01TASKB")
    [exited] = [e for e in events if isinstance(e, Exited)]
    assert os.waitstatus_to_exitcode(exited.status) == 1
    assert exited.reason == "ValueError: this job always fails"
    assert log_lines(logs / "01TASKB.log")[0]["task"] == "01TASKB"
    assert spare_of(zygote) != spare


def test_starts_in_a_burst_run_each_once_with_or_without_the_spare(
    zygote: ZygoteClient, logs: Path
) -> None:
    spare_of(zygote)
    ids = [f"01BURST{i}" for i in range(6)]
    for task_id in ids:
        zygote.start(request(task_id, logs))
    seen: list[Event] = []
    for task_id in ids:
        if not any(isinstance(e, Exited) and e.id == task_id for e in seen):
            seen += events_until_exit(zygote, task_id)
    exits = sorted(e.id for e in seen if isinstance(e, Exited))
    assert exits == sorted(ids)
    assert len({e.pid for e in seen if isinstance(e, Started)}) == len(ids)
    for task_id in ids:
        assert log_lines(logs / f"{task_id}.log")[0]["task"] == task_id


def test_stopping_kills_the_spare_and_removes_its_file(logs: Path) -> None:
    zygote = ZygoteClient(JOBS, spare_dir=logs / ".spare")
    spare = spare_of(zygote)
    zygote.close()
    assert not (logs / ".spare" / f"{zygote.proc.pid}.log").exists()
    wait_until(lambda: not alive(spare), what="the spare killed")


def test_leftover_spare_files_are_removed_at_start(logs: Path) -> None:
    leftover = logs / ".spare" / "12345.log"
    leftover.parent.mkdir()
    leftover.write_bytes(b"")
    zygote = ZygoteClient(JOBS, spare_dir=logs / ".spare")
    try:
        spare_of(zygote)
        assert not leftover.exists()
        assert [p.name for p in (logs / ".spare").iterdir()] == [f"{zygote.proc.pid}.log"]
    finally:
        zygote.close()


def test_without_a_spare_dir_every_start_forks(logs: Path) -> None:
    zygote = ZygoteClient(JOBS)
    try:
        time.sleep(0.05)  # longer than the idle time after which a spare would be forked
        assert children(zygote.proc.pid) == set()
        zygote.start(request("01TASKC", logs))
        events = events_until_exit(zygote, "01TASKC")
        assert [e.id for e in events if isinstance(e, Exited)] == ["01TASKC"]
    finally:
        zygote.close()


@pytest.mark.parametrize("pause", [0.0, 0.05], ids=["start-right-after", "start-later"])
def test_a_spare_warmed_ahead_of_its_start_runs_the_task_once(
    zygote: ZygoteClient, logs: Path, pause: float
) -> None:
    spare = spare_of(zygote)
    wakes = woken(spare)
    zygote.warm()  # the spare gets a nudge on its request pipe, then (or with it) the request
    zygote.warm()
    if pause:
        wait_until(lambda: woken(spare) > wakes, what="the spare woken by the nudge")
        time.sleep(pause)  # and asleep again
    zygote.start(request("01WARM", logs, args=b'{"name": "warm"}'))
    events = events_until_exit(zygote, "01WARM")
    [exited] = [e for e in events if isinstance(e, Exited)]
    assert (exited.pid, os.waitstatus_to_exitcode(exited.status), exited.reason) == (spare, 0, "")
    lines = log_lines(logs / "01WARM.log")
    assert [line["msg"] for line in lines].count("task started") == 1
    assert any(line["msg"] == "hello, warm" for line in lines)


def test_a_warm_up_without_a_spare_changes_nothing(logs: Path) -> None:
    zygote = ZygoteClient(JOBS)
    try:
        zygote.warm()
        zygote.start(request("01NOSPARE", logs))
        events = events_until_exit(zygote, "01NOSPARE")
        [exited] = [e for e in events if isinstance(e, Exited)]
        assert os.waitstatus_to_exitcode(exited.status) == 0
    finally:
        zygote.close()


def test_a_zygote_started_before_the_command_line_is_parsed_serves_the_worker_if_it_agrees(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    procs.start_zygote_early(["--slots", "2", f"--jobs={JOBS}", "--logs-dir", str(logs)])
    early = procs._early
    assert early is not None
    zygote = procs.start_zygote(JOBS, logs, wait=True)
    try:
        assert zygote is early
        assert "hello" in zygote.ready.jobs
    finally:
        zygote.close()


def test_a_zygote_started_early_for_other_directories_is_closed_and_a_right_one_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other-jobs"
    other.mkdir()
    (other / "only_here.py").write_text(
        "from perseid_jobs import job\n\n\n@job(max_duration='1m')\ndef run(task):\n    pass\n"
    )
    logs = tmp_path / "logs"
    monkeypatch.setenv("PERSEID_JOBS_DIR", str(JOBS))  # what the early start reads
    procs.start_zygote_early(["--slots", "1", "--logs-dir", str(logs)])
    early = procs._early
    assert early is not None
    zygote = procs.start_zygote(other, logs, wait=True)  # what the parsed command said
    try:
        assert zygote is not early
        assert list(zygote.ready.jobs) == ["only_here"]
        assert early.proc.wait(10) is not None  # closed
    finally:
        zygote.close()


def test_nothing_is_started_early_for_help_or_a_command_without_slots(tmp_path: Path) -> None:
    for args in (
        ["--help"],
        ["--jobs", str(JOBS)],
        ["--slots", "1", "--jobs", str(tmp_path / "no")],
    ):
        procs.start_zygote_early([*args, "--logs-dir", str(tmp_path / "logs")])
        assert procs._early is None
    assert not (tmp_path / "logs").exists()


def test_a_start_left_unread_when_the_worker_dies_gets_a_log_saying_so(
    zygote: ZygoteClient, logs: Path
) -> None:
    # The worker claimed the task and sent its start, then died before the zygote read
    # it: the zygote's SIGTERM (its parent-death signal) comes first.
    pid = zygote.proc.pid
    spare_of(zygote)  # settled: serving requests
    os.kill(pid, signal.SIGSTOP)
    zygote.start(request("01UNREAD", logs))
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGCONT)
    assert zygote.proc.wait(10) == 0
    lines = log_lines(logs / "01UNREAD.log")
    assert [(x["task"], x["job"], x["level"], x["msg"]) for x in lines] == [
        ("01UNREAD", "hello", 50, "killed: the worker process exited before the task started")
    ]
