"""Issue 13 items 7, 9, 10, 12: series ids, instances that fit, waiting, one time format."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import orjson
import pytest

from perseid_jobs import Client, TaskStatus, WaitTimeout
from perseid_jobs.core.errors import PerseidError
from perseid_jobs.store.redisproc import RedisServer

from .conftest import wait_until, wait_workers

ISO_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
ISO_KOLKATA = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+05:30"  # a zone with no DST, never UTC


def cli(
    *args: str, env: dict[str, str] | None = None, code: int = 0
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "perseid_jobs", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    return proc


@pytest.fixture
def common(redis_server: RedisServer, namespace: str) -> tuple[str, ...]:
    return ("--redis", redis_server.url, "--namespace", namespace)


# -- item 7: series ids ----------------------------------------------------------------------
def test_show_and_cancel_accept_a_series_id(
    client: Client, common: tuple[str, ...], start_worker
) -> None:
    start_worker(2)
    wait_workers(client, 1)
    first = client.schedule("hello", every="1s")
    sid = first.series
    assert sid
    wait_until(lambda: client.get_series(sid).runs >= 2, 15, "two ended runs")
    shown = cli("show", sid, *common).stdout
    assert sid in shown and "every 1s" in shown and "last runs" in shown
    assert first.id in shown and "completed" in shown
    doc = orjson.loads(cli("show", sid, "--json", *common).stdout)
    assert doc["series"]["id"] == sid and doc["series"]["status"] == "active"
    assert len(doc["recent_runs"]) >= 2
    assert all(r["series"] == sid and r["status"] == "completed" for r in doc["recent_runs"])
    assert doc["current_run"] is None or doc["current_run"]["series"] == sid

    out = cli("cancel", sid, *common).stdout.strip()
    assert out.startswith(f"series {sid} cancelled: no further runs")
    ended = client.get_series(sid)
    assert ended.status == "cancelled"
    # Its pending run (if it had not started when the cancel came) is cancelled with it.
    if "pending run" in out:
        assert client.get(ended.current or "").status is TaskStatus.CANCELLED
    again = cli("cancel", sid, *common, code=1)
    assert f"series {sid} already ended (cancelled)" in again.stderr
    unknown = cli("show", "no-such-id", *common, code=1)
    assert "no task or series with id 'no-such-id'" in unknown.stderr


def test_cancel_of_a_run_says_what_it_did_to_the_series(
    client: Client, common: tuple[str, ...]
) -> None:
    run = client.schedule("hello", every="1h", at="+1h")
    out = cli("cancel", run.id, "--series", *common).stdout.strip()
    assert out == f"{run.id} cancelled; series {run.series} cancelled: no further runs"
    again = cli("cancel", run.id, "--series", *common).stdout.strip()
    assert again == (
        f"{run.id} had already ended (cancelled); series {run.series} had already ended (cancelled)"
    )
    lone = client.schedule("hello", at="+1h")
    refused = cli("cancel", lone.id, "--series", *common, code=2)
    assert f"task {lone.id} belongs to no series" in refused.stderr
    assert client.get(lone.id).status is TaskStatus.PENDING  # nothing done


def test_cancel_of_a_running_run_says_the_series_continues(
    client: Client, common: tuple[str, ...], start_worker
) -> None:
    start_worker(2)
    wait_workers(client, 1)
    run = client.schedule("sleep", {"seconds": 30}, every="1h")
    wait_until(lambda: client.get(run.id).status is TaskStatus.RUNNING, 15, "running")
    out = cli("cancel", run.id, *common).stdout.strip()
    # The state as read after the call: its worker may have killed it already.
    assert out in {
        f"{run.id} {state}; series {run.series} continues (cancel --series ends it)"
        for state in ("cancel requested (running)", "cancelled")
    }, out
    assert client.wait(run.id, 15).status is TaskStatus.CANCELLED
    assert client.get_series(run.series or "").status == "active"


# -- item 9: instances that fit ---------------------------------------------------------------
def test_jobs_lists_only_instances_whose_slots_fit(
    client: Client, common: tuple[str, ...], start_worker
) -> None:
    start_worker(64)
    wait_workers(client, 1)
    (w,) = client.workers()
    jobs = {j["name"]: j for j in orjson.loads(cli("jobs", "--json", *common).stdout)}
    assert jobs["heavy"]["slots"] == 512 and jobs["heavy"]["instances"] == []
    assert jobs["hello"]["instances"] == [w.id]
    table = cli("jobs", *common).stdout
    (heavy,) = [line for line in table.splitlines() if " heavy " in line]
    assert w.id not in heavy
    assert "none: needs 512 slots, the largest live instance offers 64" in heavy


# -- item 10: waiting ------------------------------------------------------------------------
def test_wait_raises_a_named_timeout_while_the_task_is_pending(client: Client) -> None:
    task = client.schedule("hello", at="+1h")
    with pytest.raises(WaitTimeout) as caught:
        client.wait(task.id, timeout=0.3)
    assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, PerseidError)
    assert caught.value.task.status is TaskStatus.PENDING and caught.value.task.id == task.id
    with pytest.raises(TimeoutError):  # what generic timeout handling catches
        client.wait(task.id, timeout=0.1)


def test_wait_command_exits_by_outcome(
    client: Client, common: tuple[str, ...], start_worker
) -> None:
    pending = client.schedule("hello", at="+1h")
    timed_out = cli("wait", pending.id, "--timeout", "0.5", *common, code=124)
    assert f"task {pending.id} is still pending after 0.5s" in timed_out.stderr
    cli("wait", "no-such-task", "--timeout", "1", *common, code=1)
    cli("wait", pending.id, "--timeout", "soon", *common, code=2)
    start_worker(2)
    ok, failed, cancelled = (client.schedule(j).id for j in ("hello", "fail", "cancel_self"))
    assert cli("wait", ok, "--timeout", "30s", *common).stdout.strip() == f"{ok} completed"
    assert cli("wait", failed, *common, code=10).stdout.startswith(f"{failed} failed: ")
    cli("wait", cancelled, *common, code=100)
    doc = orjson.loads(cli("wait", ok, "--json", *common).stdout)
    assert doc["status"] == "completed"
    helptext = cli("wait", "--help").stdout
    assert all(c in helptext for c in ("10   failed", "100  cancelled", "124  timed out"))


# -- item 12: one time format ----------------------------------------------------------------
def test_every_time_printed_is_iso8601_with_date_and_zone(
    client: Client, common: tuple[str, ...], start_worker
) -> None:
    w = start_worker(2)
    done = client.wait(client.schedule("hello", {"name": "Ada"}).id, 15)
    wait_until(lambda: client.get(done.id).log_url, 10, "upload")
    client.schedule("hello", every="1h", at="+1h")
    logs_opts = ("--bucket", f"file://{w.bucket}", "--logs-dir", str(w.logs_dir))
    kolkata = {"TZ": "Asia/Kolkata"}
    for zone, env, extra in ((ISO_UTC, None, ()), (ISO_KOLKATA, kolkata, ("--local",))):
        shown = cli("show", done.id, *extra, *common, env=env).stdout
        for field in ("start at", "started at", "ended at"):
            (line,) = [x for x in shown.splitlines() if x.strip().startswith(field)]
            assert re.search(rf"{field}\s+{zone}\s*$", line), line
        for command in ("tasks", "series", "workers"):
            out = cli(command, *extra, *common, env=env).stdout
            assert re.search(zone, out), (command, out)
            assert not re.search(r"\d\d:\d\d:\d\d\.\d{3}(?![\dZ+])", out), (command, out)
        lines = cli("logs", done.id, *extra, *logs_opts, *common, env=env).stdout.splitlines()
        assert lines and all(re.match(rf"{zone} ", x) for x in lines), lines
        (started,) = [x for x in lines if "task started" in x]
        assert re.search(rf"startedAt={zone}", started), started
    # --json stays machine time: UTC whatever --local says.
    doc = orjson.loads(cli("show", done.id, "--json", "--local", *common, env=kolkata).stdout)
    assert doc["ended_at"].endswith("Z")


def test_the_log_formatter_for_stderr_follows_the_same_convention() -> None:
    import logging

    from perseid_jobs.core.timefmt import IsoFormatter

    record = logging.makeLogRecord({"msg": "hi", "created": 1_796_192_007.619})
    assert IsoFormatter("%(asctime)s %(message)s").format(record) == "2026-12-02T06:13:27.619Z hi"


def test_the_workers_own_log_lines_start_with_an_iso8601_time(client: Client, start_worker) -> None:
    w = start_worker(2)
    wait_workers(client, 1)
    assert w.terminate() == 0
    lines = [line for line in w.output().splitlines() if line.strip()]
    assert lines, "the worker logged nothing"
    iso = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
    assert all(iso.match(line) for line in lines if not line.startswith((" ", "Traceback"))), lines
