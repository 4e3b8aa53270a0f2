"""The log shipper: spool to bucket, surviving an unreachable bucket."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from perseid_jobs.logs.bucket import BucketError, S3Bucket, object_key, open_bucket
from perseid_jobs.logs.shipper import LogShipper, Shipped

from .s3_fixtures import S3Server, use_dummy_credentials, wait_until

STARTED_AT_MS = 1_711_929_599_500  # 2024-03-31T23:59:59.500Z


def write_log(logs_dir: Path, task_id: str, job: str = "etl", age: float = 0.0) -> bytes:
    first = {"level": 30, "time": STARTED_AT_MS, "msg": "task started", "task": task_id}
    data = orjson.dumps({**first, "job": job, "startedAt": STARTED_AT_MS, "attempt": 1}) + b"\n"
    data += b'{"level":30,"msg":"work done"}\n'
    path = logs_dir / f"{task_id}.log"
    path.write_bytes(data)
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return data


class Recorder:
    """Collects on_uploaded calls, in order, from the shipper's thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, task_id: str, url: str) -> None:
        with self.lock:
            self.calls.append((task_id, url))

    def task_ids(self) -> list[str]:
        with self.lock:
            return [task_id for task_id, _ in self.calls]


class Batches:
    """An ``on_shipped`` receiver like the worker's: records each batch, then removes its files."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, str]]] = []
        self.shipper: LogShipper | None = None

    def __call__(self, shipped: list[Shipped]) -> None:
        self.batches.append([(entry.task_id, entry.url) for entry in shipped])
        assert self.shipper is not None
        self.shipper.remove(shipped)


class AlwaysDown:
    """A bucket that refuses every upload, remembering when it was asked."""

    url = "s3://down/logs"

    def __init__(self) -> None:
        self.attempts: list[float] = []

    def upload(self, local_path: Path, key: str) -> str:
        self.attempts.append(time.monotonic())
        raise BucketError("bucket unreachable")

    def read(self, key_or_url: str) -> bytes:
        raise BucketError("bucket unreachable")


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    use_dummy_credentials(monkeypatch)
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def logs_dir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


def test_submitted_logs_reach_the_bucket_then_leave_the_spool(s3: S3Server, logs_dir: Path) -> None:
    name = s3.new_bucket()
    recorder = Recorder()
    shipper = LogShipper(
        logs_dir, S3Bucket(name, "logs", endpoint_url=s3.endpoint), on_uploaded=recorder
    )
    shipper.start()
    contents = {task_id: write_log(logs_dir, task_id) for task_id in ("01HA", "01HB", "01HC")}
    for task_id in contents:
        shipper.submit(task_id, "etl", STARTED_AT_MS)
    shipper.submit("01HA", "etl", STARTED_AT_MS)  # a repeat is not uploaded twice
    wait_until(lambda: len(recorder.calls) == 3, what="three uploads")
    shipper.stop()
    assert shipper.pending() == 0 and shipper.failures() == 0
    assert list(logs_dir.iterdir()) == []
    client = s3.client()
    for task_id, data in contents.items():
        key = f"logs/etl/2024/03/31/{task_id}.log"
        assert (task_id, f"s3://{name}/{key}") in recorder.calls
        assert client.get_object(Bucket=name, Key=key)["Body"].read() == data


def test_logs_wait_in_the_spool_while_s3_is_down_and_arrive_when_it_is_back(
    s3: S3Server, logs_dir: Path
) -> None:
    name = s3.new_bucket()
    s3.stop()
    recorder = Recorder()
    bucket = S3Bucket(name, endpoint_url=s3.endpoint)
    shipper = LogShipper(logs_dir, bucket, on_uploaded=recorder, min_backoff=0.05, max_backoff=0.2)
    shipper.start()
    for task_id in ("01HA", "01HB"):
        write_log(logs_dir, task_id)
        shipper.submit(task_id, "etl", STARTED_AT_MS)
    wait_until(lambda: shipper.failures() >= 2, timeout=20, what="failed uploads")
    assert sorted(path.name for path in logs_dir.iterdir()) == ["01HA.log", "01HB.log"]
    assert shipper.pending() == 2 and recorder.calls == []

    s3.start()  # same port, same shipper: nothing is restarted on our side
    wait_until(lambda: shipper.pending() == 0, timeout=20, what="uploads after recovery")
    shipper.stop()
    assert sorted(recorder.task_ids()) == ["01HA", "01HB"]
    assert list(logs_dir.iterdir()) == []
    for task_id in ("01HA", "01HB"):
        assert bucket.read(object_key("etl", task_id, STARTED_AT_MS)).endswith(b'"work done"}\n')


def test_leftover_logs_are_uploaded_first_even_if_unreadable(
    tmp_path: Path, logs_dir: Path
) -> None:
    write_log(logs_dir, "01HOLD", job="report", age=120)
    write_log(logs_dir, "01HOLDER", job="etl", age=60)
    (logs_dir / "01HBROKEN.log").write_bytes(b"not json at all")
    os.utime(logs_dir / "01HBROKEN.log", (time.time() - 30, time.time() - 30))
    (logs_dir / "notes.txt").write_text("not a log")
    recorder = Recorder()
    bucket = open_bucket(str(tmp_path / "bucket"))
    shipper = LogShipper(logs_dir, bucket, on_uploaded=recorder)
    shipper.submit("01HNEW", "etl", STARTED_AT_MS)  # queued before start: still after leftovers
    write_log(logs_dir, "01HNEW")
    shipper.start()
    wait_until(lambda: shipper.pending() == 0, what="leftovers and the new log")
    shipper.stop()
    assert recorder.task_ids() == ["01HOLD", "01HOLDER", "01HBROKEN", "01HNEW"]
    assert [path.name for path in logs_dir.iterdir()] == ["notes.txt"]
    assert bucket.read("report/2024/03/31/01HOLD.log").startswith(b'{"level":30')
    broken = dict(recorder.calls)["01HBROKEN"]
    assert "/_unknown/" in broken and bucket.read(broken) == b"not json at all"


def test_an_empty_leftover_log_is_stored_with_a_line_saying_why(
    tmp_path: Path, logs_dir: Path
) -> None:
    (logs_dir / "01HEMPTY.log").write_bytes(b"")  # made, then its zygote died before a line
    recorder = Recorder()
    bucket = open_bucket(str(tmp_path / "bucket"))
    shipper = LogShipper(logs_dir, bucket, on_uploaded=recorder)
    shipper.start()
    wait_until(lambda: shipper.pending() == 0, what="the empty leftover")
    shipper.stop()
    (line,) = bucket.read(dict(recorder.calls)["01HEMPTY"]).splitlines()
    doc = orjson.loads(line)
    assert (doc["task"], doc["level"], doc["msg"]) == (
        "01HEMPTY",
        50,
        "killed: the worker process exited before the task wrote its log",
    )


def test_a_failing_callback_does_not_stop_the_shipper(tmp_path: Path, logs_dir: Path) -> None:
    uploaded: list[str] = []

    def record_then_fail(task_id: str, url: str) -> None:
        uploaded.append(task_id)
        raise RuntimeError("redis unavailable")

    shipper = LogShipper(
        logs_dir, open_bucket(str(tmp_path / "bucket")), on_uploaded=record_then_fail
    )
    shipper.start()
    for task_id in ("01HA", "01HB"):
        write_log(logs_dir, task_id)
        shipper.submit(task_id, "etl", STARTED_AT_MS)
    wait_until(lambda: len(uploaded) == 2, what="both uploads despite the callback")
    shipper.stop()
    assert list(logs_dir.iterdir()) == []


def test_failed_uploads_back_off_exponentially_up_to_the_maximum(logs_dir: Path) -> None:
    bucket = AlwaysDown()
    shipper = LogShipper(logs_dir, bucket, min_backoff=0.05, max_backoff=0.2)
    write_log(logs_dir, "01HA")
    shipper.submit("01HA", "etl", STARTED_AT_MS)
    shipper.start()
    wait_until(lambda: len(bucket.attempts) >= 6, what="six attempts")
    shipper.stop(timeout=0)
    gaps = [
        later - earlier
        for earlier, later in zip(bucket.attempts, bucket.attempts[1:], strict=False)
    ]
    assert 0.04 <= gaps[0] < 0.15
    assert gaps[1] >= 0.08 and gaps[2] >= 0.16
    assert all(gap < 0.5 for gap in gaps[3:5])  # capped near max_backoff, jitter included
    assert shipper.failures() == len(bucket.attempts)


def test_stop_gives_up_at_its_timeout_and_leaves_logs_in_the_spool(logs_dir: Path) -> None:
    shipper = LogShipper(logs_dir, AlwaysDown(), min_backoff=5, max_backoff=5)
    write_log(logs_dir, "01HA")
    shipper.start()
    wait_until(lambda: shipper.failures() == 1, what="first failure")
    started = time.monotonic()
    shipper.stop(timeout=0.3)
    assert time.monotonic() - started < 1.0
    assert shipper.pending() == 1
    assert [path.name for path in logs_dir.iterdir()] == ["01HA.log"]


def test_queued_logs_go_up_in_batches_reported_in_one_call_each(
    tmp_path: Path, logs_dir: Path
) -> None:
    receiver, singles = Batches(), Recorder()
    batches = receiver.batches
    bucket = open_bucket(str(tmp_path / "bucket"))
    shipper = LogShipper(logs_dir, bucket, on_uploaded=singles, on_shipped=receiver, batch_size=3)
    receiver.shipper = shipper
    task_ids = [f"01H{i:02d}" for i in range(7)]
    for task_id in task_ids:  # queued before start, so they are taken in full batches
        write_log(logs_dir, task_id)
        shipper.submit(task_id, "etl", STARTED_AT_MS)
    shipper.submit("01HGONE", "etl", STARTED_AT_MS)  # no file: reported in no batch
    shipper.start()
    wait_until(lambda: shipper.pending() == 0, what="every batch")
    shipper.stop()
    assert [len(batch) for batch in batches] == [3, 3, 1]
    assert [task_id for batch in batches for task_id, _ in batch] == task_ids
    assert singles.calls == []  # the batch callback replaces the per-log one
    for task_id, url in (pair for batch in batches for pair in batch):
        assert bucket.read(url) == bucket.read(object_key("etl", task_id, STARTED_AT_MS))
    assert list(logs_dir.iterdir()) == []


def test_a_failed_log_in_a_batch_is_retried_alone_and_the_rest_is_reported(
    tmp_path: Path, logs_dir: Path
) -> None:
    receiver = Batches()
    batches = receiver.batches
    bucket = open_bucket(str(tmp_path / "bucket"))
    shipper = LogShipper(logs_dir, bucket, on_shipped=receiver, min_backoff=0.05, max_backoff=0.1)
    receiver.shipper = shipper
    for task_id in ("01HA", "01HB"):
        write_log(logs_dir, task_id)
        shipper.submit(task_id, "etl", STARTED_AT_MS)
    shipper.submit("01HBAD", "../../escape", STARTED_AT_MS)  # a key outside the bucket
    write_log(logs_dir, "01HBAD")
    shipper.start()
    wait_until(lambda: shipper.failures() >= 2, what="the bad log failing again")
    shipper.stop(timeout=0)
    assert batches[0] == [(t, dict(batches[0])[t]) for t in ("01HA", "01HB")]
    assert [path.name for path in logs_dir.iterdir()] == ["01HBAD.log"]
    assert shipper.pending() == 1


def test_logs_finished_close_together_share_one_batch(tmp_path: Path) -> None:
    logs_dir = tmp_path / "logs"
    logs_dir.mkdir()
    receiver = Batches()
    batches = receiver.batches
    shipper = LogShipper(
        logs_dir, open_bucket((tmp_path / "bucket").as_uri()), on_shipped=receiver, linger=1.0
    )
    receiver.shipper = shipper
    shipper.start()
    try:
        ids = ["01HA", "01HB", "01HC"]
        for task_id in ids:
            write_log(logs_dir, task_id)
            shipper.submit(task_id, "etl", STARTED_AT_MS)
        wait_until(lambda: shipper.pending() == 0, timeout=10)
    finally:
        shipper.stop()
    assert [[task_id for task_id, _ in batch] for batch in batches] == [ids]


class HeldBucket:
    """A bucket whose first upload waits until released; records when each key arrived."""

    url = "s3://held/logs"

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.release = threading.Event()
        self.uploaded: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def upload(self, local_path: Path, key: str) -> str:
        with self.lock:
            first = not self.uploaded
        if first:
            self.asked.set()
            assert self.release.wait(10)
        with self.lock:
            self.uploaded.append((time.monotonic(), key))
        return f"{self.url}/{key}"


def test_a_log_left_over_from_a_full_batch_waits_its_linger_from_when_it_was_queued(
    logs_dir: Path,
) -> None:
    linger = 1.0
    bucket = HeldBucket()
    shipper = LogShipper(logs_dir, bucket, on_uploaded=Recorder(), batch_size=2, linger=linger)
    shipper.start()
    try:
        for task_id in ("01HX", "01HY"):  # a full batch: taken at once, held in its upload
            write_log(logs_dir, task_id)
            shipper.submit(task_id, "etl", STARTED_AT_MS)
        assert bucket.asked.wait(10)
        for task_id in ("01HA", "01HB", "01HC"):
            write_log(logs_dir, task_id)
            shipper.submit(task_id, "etl", STARTED_AT_MS)
        time.sleep(linger)  # C has now waited its linger, while the upload before it was held
        bucket.release.set()
        wait_until(lambda: shipper.pending() == 0, timeout=10, what="every log uploaded")
    finally:
        shipper.stop()
    at = {key.rsplit("/", 1)[-1].removesuffix(".log"): when for when, key in bucket.uploaded}
    assert set(at) == {"01HX", "01HY", "01HA", "01HB", "01HC"}
    # A and B went as a full batch; C, queued over `linger` ago, right after, not
    # after another `linger` counted from when A and B were taken.
    assert at["01HC"] - at["01HB"] < linger / 2
