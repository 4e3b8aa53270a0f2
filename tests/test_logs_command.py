"""`perseid-jobs logs` reads the URL the task recorded, from any directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from perseid_jobs import Client
from perseid_jobs.store.redisproc import RedisServer

from .conftest import wait_until, wait_workers


def logs(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "perseid_jobs", "logs", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_logs_reads_the_recorded_url_from_another_directory(
    redis_server: RedisServer, namespace: str, client: Client, start_worker, tmp_path: Path
) -> None:
    start_worker(2)  # its bucket is an absolute directory under tmp_path
    wait_workers(client, 1)
    done = client.wait(client.schedule("hello", {"name": "elsewhere"}).id, 15)
    wait_until(lambda: client.get(done.id).log_url, 10, "upload")
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    # No --bucket: the default (var/bucket) would be resolved against this directory.
    proc = logs(elsewhere, done.id, "--raw", "--redis", redis_server.url, "--namespace", namespace)
    assert proc.returncode == 0, proc.stderr
    assert '"msg":"task started"' in proc.stdout and "hello, elsewhere" in proc.stdout


def test_logs_of_a_pending_task_says_it_has_no_log_yet(
    redis_server: RedisServer, namespace: str, client: Client, tmp_path: Path
) -> None:
    task = client.schedule("hello", at="+1h")
    proc = logs(tmp_path, task.id, "--redis", redis_server.url, "--namespace", namespace)
    assert proc.returncode == 1
    assert proc.stderr == f"error: task {task.id} is pending: it has no log yet\n"
