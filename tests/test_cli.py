"""The command line as a user drives it: real subprocesses, real Redis, --json documents."""

from __future__ import annotations

import subprocess
import sys

import orjson

from perseid_jobs import Client, TaskStatus
from perseid_jobs.store.redisproc import RedisServer

from .conftest import JOBS, wait_until, wait_workers

TASK_FIELDS = {
    "id", "job", "status", "args", "metadata", "start_at", "started_at", "ended_at",
    "exit_code", "reason", "instance", "attempt", "series", "start_after", "log_url",
}  # fmt: skip


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "perseid_jobs", *args], capture_output=True, text=True, timeout=60
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_schedule_show_tasks_and_cancel_speak_stable_json(
    redis_server: RedisServer, namespace: str, client: Client
) -> None:
    common = ("--redis", redis_server.url, "--namespace", namespace)
    out = cli("schedule", "hello", "--args", '{"name": "Ada"}', "--at", "+1h", "--json",
              "--jobs", str(JOBS), *common)  # fmt: skip
    doc = orjson.loads(out.stdout)
    assert set(doc) >= TASK_FIELDS
    assert (doc["status"], doc["args"], doc["attempt"]) == ("pending", {"name": "Ada"}, 0)
    assert doc["start_at"].endswith("Z") and doc["metadata"] == {"lastCompletedAt": None}
    shown = orjson.loads(cli("show", doc["id"], "--json", *common).stdout)
    assert shown["id"] == doc["id"]
    listed = orjson.loads(cli("tasks", "--status", "pending", "--json", *common).stdout)
    assert [t["id"] for t in listed] == [doc["id"]]
    plain = cli("schedule", "hello", "--key", "k1", "--at", "+1h", "--jobs", str(JOBS), *common)
    again = cli("schedule", "hello", "--key", "k1", "--at", "+1h", "--jobs", str(JOBS), *common)
    assert again.stdout.strip() == f"{plain.stdout.strip()} (already existed)"
    assert cli("cancel", doc["id"], *common).stdout.strip() == f"{doc['id']} cancelled"
    assert client.get(doc["id"]).status is TaskStatus.CANCELLED


def test_workers_jobs_and_series_list_what_the_workers_published(
    redis_server: RedisServer, namespace: str, client: Client, start_worker
) -> None:
    start_worker(64)
    wait_workers(client, 1)
    common = ("--redis", redis_server.url, "--namespace", namespace)
    (w,) = orjson.loads(cli("workers", "--json", *common).stdout)
    assert set(w) == {"id", "host", "pid", "slots_total", "slots_used", "running",
                      "lease_expires_at", "version"}  # fmt: skip
    assert w["slots_total"] == 64
    jobs = {j["name"]: j for j in orjson.loads(cli("jobs", "--json", *common).stdout)}
    assert jobs["heavy"] == {
        "name": "heavy",
        "slots": 512,
        "max_duration": 60.0,
        "instances": [],
        "max_tasks_per_process": 1,
        "max_memory_per_process": None,
        "concurrency": None,
        "group_concurrency": None,
        "rate": None,
        "group_rate": None,
        "running": 0,
        "paused": False,
    }  # fmt: skip (64 slots never run a 512-slot job)
    assert jobs["hello"]["instances"] == [w["id"]]
    leak = jobs["reuse_leak"]  # @job(max_tasks_per_process=50, max_memory_per_process="150MB")
    assert (leak["max_tasks_per_process"], leak["max_memory_per_process"]) == (50, 150_000_000)
    table = cli("jobs", *common).stdout
    (row,) = [line for line in table.splitlines() if " reuse_leak " in line]
    assert "reused, 50 tasks, retired past 150 MB" in row
    (row,) = [line for line in table.splitlines() if " heavy " in line]
    assert " fresh " in row
    client.schedule("hello", every="1h", at="+1h", key="hourly")
    (s,) = orjson.loads(cli("series", "--json", *common).stdout)
    assert (s["every"], s["key"], s["status"]) == ("3600s", "hourly", "active")
    assert "every 3600s" in cli("series", *common).stdout


def test_logs_prints_the_task_log_readable_and_raw(
    redis_server: RedisServer, namespace: str, client: Client, start_worker
) -> None:
    w = start_worker(2)
    done = client.wait(client.schedule("fail", {"message": "kaput"}).id, 15)
    wait_until(lambda: client.get(done.id).log_url, 10, "upload")
    common = ("--redis", redis_server.url, "--namespace", namespace,
              "--bucket", f"file://{w.bucket}", "--logs-dir", str(w.logs_dir))  # fmt: skip
    readable = cli("logs", done.id, *common).stdout
    assert "INFO  task started" in readable
    assert "ERROR task raised ValueError" in readable and "Traceback" in readable
    raw = cli("logs", done.id, "--raw", *common).stdout.splitlines()
    assert all(isinstance(orjson.loads(line), dict) for line in raw)


def test_run_executes_one_task_locally_without_redis() -> None:
    ok = cli("run", "hello", "--args", '{"name": "local"}', "--jobs", str(JOBS))
    assert "hello, local" in ok.stdout and ok.stderr.splitlines()[-1].startswith("completed")
    failed = cli("run", "fail", "--jobs", str(JOBS), check=False)
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[-1].endswith("ValueError: this job always fails")
    cancelled = cli("run", "cancel_self", "--jobs", str(JOBS), check=False)
    assert cancelled.returncode == 100


def test_args_come_from_a_file_or_stdin(
    redis_server: RedisServer, namespace: str, client: Client, tmp_path
) -> None:
    common = ("--redis", redis_server.url, "--namespace", namespace, "--jobs", str(JOBS))
    path = tmp_path / "args.json"
    path.write_text('{"from": "file"}')
    by_file = cli("schedule", "hello", "--args", f"@{path}", "--at", "+1h", *common)
    piped = subprocess.run(
        [sys.executable, "-m", "perseid_jobs", "schedule", "hello", "--args", "-",
         "--at", "+1h", *common],
        input='{"from": "stdin"}', capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert client.get(by_file.stdout.strip()).args == {"from": "file"}
    assert client.get(piped.stdout.strip()).args == {"from": "stdin"}
    missing = cli("schedule", "hello", "--args", "@/nonexistent.json", *common, check=False)
    assert missing.returncode == 2 and "cannot read the file" in missing.stderr
