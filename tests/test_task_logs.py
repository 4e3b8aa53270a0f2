"""Task logs end to end: real worker, real task processes, file and S3 (moto) buckets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from perseid_jobs import Client, TaskStatus
from perseid_jobs.core.models import dt_to_ms
from perseid_jobs.logs.bucket import object_key
from perseid_jobs.logs.spool import find_log

from .conftest import wait_until, wait_workers
from .s3_fixtures import S3Server

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "NO_PROXY": "127.0.0.1",
}


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    server = S3Server()
    server.start()
    yield server
    server.stop()


def lines_of(data: bytes) -> list[dict]:
    return [orjson.loads(x) for x in data.splitlines()]


def key_of(client: Client, task_id: str) -> str:
    t = client.get(task_id)
    assert t.started_at is not None
    return object_key(t.job, t.id, dt_to_ms(t.started_at))


@pytest.mark.parametrize(
    ("job", "args", "status", "evidence"),
    [
        ("output", {}, TaskStatus.COMPLETED, "from a subprocess"),
        ("fail", {"message": "boom"}, TaskStatus.FAILED, "ValueError: boom"),
        ("timeout", {}, TaskStatus.FAILED, "spawned"),
        ("cancel_self", {}, TaskStatus.CANCELLED, "nothing to do; cancelling"),
    ],
)
def test_every_ending_puts_the_log_in_the_file_bucket(
    client: Client, start_worker, job: str, args: dict, status: TaskStatus, evidence: str
) -> None:
    w = start_worker(2)
    done = client.wait(client.schedule(job, args).id, 20)
    assert done.status is status
    target = w.bucket / key_of(client, done.id)
    wait_until(lambda: client.get(done.id).log_url, 10, "log_url")
    assert client.get(done.id).log_url == target.resolve().as_uri()
    # Removed from the spool once its URL is recorded: a moment after log_url shows.
    wait_until(lambda: find_log(w.logs_dir, done.id) is None, 10, "the spooled log removed")
    lines = lines_of(target.read_bytes())
    assert lines[0]["msg"] == "task started" and lines[0]["task"] == done.id
    assert evidence in target.read_text()
    if job == "fail":
        err = next(x["err"] for x in lines if "err" in x)
        assert err["type"] == "ValueError" and "Traceback" in err["stack"]
    if job == "output":
        by_msg = {x["msg"]: x for x in lines}
        assert by_msg["printed line"]["level"] == 30
        assert by_msg["raw stderr bytes"]["level"] == 50
        assert by_msg["structured"]["answer"] == 42


def test_flooding_job_is_capped_and_the_worker_keeps_serving(client: Client, start_worker) -> None:
    w = start_worker(2, "--max-log-bytes", "65536")
    wait_workers(client, 1)
    flood = client.schedule("output", {"flood_bytes": 30_000_000})
    hello = client.schedule("hello")
    assert client.wait(hello.id, 20).status is TaskStatus.COMPLETED
    assert client.wait(flood.id, 60).status is TaskStatus.COMPLETED
    target = w.bucket / key_of(client, flood.id)
    wait_until(target.exists, 10, "upload")
    size = target.stat().st_size
    assert size <= 65536 + 4096
    assert "truncated" in lines_of(target.read_bytes())[-1]["msg"]


def test_logs_wait_in_the_spool_while_s3_is_down_and_arrive_without_a_restart(
    client: Client, start_worker, s3: S3Server
) -> None:
    bucket = s3.new_bucket()
    w = start_worker(
        2, "--bucket", f"s3://{bucket}/logs", "--s3-endpoint-url", s3.endpoint, env=S3_ENV
    )
    wait_workers(client, 1)
    s3.stop()
    done = client.wait(client.schedule("hello", {"name": "spooled"}).id, 20)
    assert done.status is TaskStatus.COMPLETED
    assert find_log(w.logs_dir, done.id) is not None
    assert client.get(done.id).log_url is None
    s3.start()
    wait_until(lambda: client.get(done.id).log_url, 30, "upload after S3 came back")
    key = f"logs/{key_of(client, done.id)}"
    assert client.get(done.id).log_url == f"s3://{bucket}/{key}"
    obj = s3.client().get_object(Bucket=bucket, Key=key)
    assert obj["ContentType"] == "application/x-ndjson"
    assert b"spooled" in obj["Body"].read()
    wait_until(lambda: find_log(w.logs_dir, done.id) is None, 5, "spool cleared")


def test_worker_restarted_on_the_same_logs_dir_uploads_what_was_left(
    client: Client, start_worker, s3: S3Server, tmp_path: Path
) -> None:
    bucket = s3.new_bucket()
    logs = tmp_path / "spool"
    args = ("--bucket", f"s3://{bucket}", "--s3-endpoint-url", s3.endpoint, "--logs-dir", str(logs))
    first = start_worker(2, *args, env=S3_ENV)
    wait_workers(client, 1)
    s3.stop()
    done = client.wait(client.schedule("hello").id, 20)
    assert first.terminate() == 0
    assert find_log(logs, done.id) is not None
    s3.start()
    start_worker(2, *args, env=S3_ENV)
    wait_until(lambda: client.get(done.id).log_url, 30, "leftover upload")
    assert s3.client().get_object(Bucket=bucket, Key=key_of(client, done.id))["Body"].read()
    wait_until(lambda: find_log(logs, done.id) is None, 10, "the adopted log removed")
