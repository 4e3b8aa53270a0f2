"""Buckets: a directory, and S3 through a real S3 API on loopback."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from perseid_jobs.logs.bucket import (
    LOG_CONTENT_TYPE,
    BucketError,
    FileBucket,
    S3Bucket,
    object_key,
    open_bucket,
)

from .s3_fixtures import S3Server, use_dummy_credentials

# 2024-03-31T23:59:59.500Z
LATE_ON_MARCH_31_MS = 1_711_929_599_500


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    use_dummy_credentials(monkeypatch)
    return server


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "spool" / "01HTASK.log"
    path.parent.mkdir()
    path.write_bytes(b'{"level":30,"msg":"task started"}\n{"level":30,"msg":"done"}\n')
    return path


def test_object_key_groups_by_job_and_utc_start_day() -> None:
    assert object_key("etl", "01HTASK", LATE_ON_MARCH_31_MS) == "etl/2024/03/31/01HTASK.log"
    assert object_key("etl", "01HTASK", LATE_ON_MARCH_31_MS + 500) == "etl/2024/04/01/01HTASK.log"


def test_file_bucket_stores_a_copy_atomically_and_reads_it_back(
    tmp_path: Path, log_file: Path
) -> None:
    bucket = open_bucket(f"file://{tmp_path}/bucket")
    assert isinstance(bucket, FileBucket)
    url = bucket.upload(log_file, "etl/2024/03/31/01HTASK.log")
    stored = tmp_path / "bucket" / "etl" / "2024" / "03" / "31" / "01HTASK.log"
    assert url == stored.as_uri()
    assert stored.read_bytes() == log_file.read_bytes()
    assert log_file.exists()
    assert [p.name for p in stored.parent.iterdir()] == ["01HTASK.log"]  # no temporary left
    assert bucket.read(url) == log_file.read_bytes()
    assert bucket.read("etl/2024/03/31/01HTASK.log") == log_file.read_bytes()


@pytest.mark.parametrize("url", ["var/logs", "file://var/logs", "file://localhost/var/logs"])
def test_plain_and_relative_paths_are_file_buckets_under_the_cwd(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    bucket = open_bucket(url.replace("localhost/", f"localhost{tmp_path}/"))
    assert bucket.url == (tmp_path / "var" / "logs").as_uri()


def test_file_bucket_missing_log_and_escaping_key_raise_bucket_error(tmp_path: Path) -> None:
    bucket = open_bucket(str(tmp_path))
    with pytest.raises(BucketError, match="log not found"):
        bucket.read("etl/2024/01/01/nope.log")
    with pytest.raises(BucketError, match="invalid log key"):
        bucket.read("../outside.log")
    with pytest.raises(BucketError, match="not in bucket"):
        bucket.read("file:///etc/passwd")


def test_file_bucket_upload_of_missing_file_raises_bucket_error(tmp_path: Path) -> None:
    bucket = open_bucket(str(tmp_path / "bucket"))
    with pytest.raises(BucketError, match="cannot store"):
        bucket.upload(tmp_path / "gone.log", "etl/x.log")
    assert list((tmp_path / "bucket" / "etl").iterdir()) == []


@pytest.mark.parametrize("url", ["http://example.com/logs", "gs://bucket/logs", "s3:///x", ""])
def test_unsupported_bucket_url_is_refused_with_the_accepted_forms(url: str) -> None:
    with pytest.raises(BucketError, match=r"use file:///path or s3://bucket/prefix"):
        open_bucket(url)


def test_s3_upload_uses_prefix_key_layout_and_ndjson_content_type(
    s3: S3Server, log_file: Path
) -> None:
    name = s3.new_bucket()
    bucket = open_bucket(f"s3://{name}/perseid/logs/", s3_endpoint_url=s3.endpoint)
    assert bucket.url == f"s3://{name}/perseid/logs"
    key = object_key("etl", "01HTASK", LATE_ON_MARCH_31_MS)
    url = bucket.upload(log_file, key)
    assert url == f"s3://{name}/perseid/logs/etl/2024/03/31/01HTASK.log"
    stored = s3.client().get_object(Bucket=name, Key="perseid/logs/etl/2024/03/31/01HTASK.log")
    assert stored["ContentType"] == LOG_CONTENT_TYPE
    assert stored["Body"].read() == log_file.read_bytes()
    assert bucket.read(url) == log_file.read_bytes()
    assert bucket.read(key) == log_file.read_bytes()


def test_s3_endpoint_comes_from_aws_endpoint_url(
    s3: S3Server, log_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = s3.new_bucket()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    bucket = open_bucket(f"s3://{name}")
    assert bucket.upload(log_file, "a.log") == f"s3://{name}/a.log"
    assert bucket.read("a.log") == log_file.read_bytes()


def test_large_s3_upload_goes_in_parts(s3: S3Server, tmp_path: Path) -> None:
    name = s3.new_bucket()
    bucket = S3Bucket(name, endpoint_url=s3.endpoint, multipart_threshold=5 * 1024 * 1024)
    big = tmp_path / "big.log"
    line = b'{"level":30,"msg":"' + b"x" * 200 + b'"}\n'
    big.write_bytes(line * 60_000)  # ~13 MB: 3 parts of 5 MiB
    bucket.upload(big, "big.log")
    head = s3.client().head_object(Bucket=name, Key="big.log")
    assert head["ETag"].strip('"').endswith("-3")
    assert head["ContentType"] == LOG_CONTENT_TYPE
    assert bucket.read("big.log") == big.read_bytes()


def test_s3_missing_object_or_bucket_raises_bucket_error(s3: S3Server, log_file: Path) -> None:
    name = s3.new_bucket()
    bucket = open_bucket(f"s3://{name}/logs", s3_endpoint_url=s3.endpoint)
    with pytest.raises(BucketError, match=f"log not found: s3://{name}/logs/etl/nope.log"):
        bucket.read("etl/nope.log")
    missing = open_bucket("s3://no-such-bucket/logs", s3_endpoint_url=s3.endpoint)
    with pytest.raises(BucketError, match="cannot upload"):
        missing.upload(log_file, "etl/x.log")


def test_documented_lifecycle_rules_are_accepted_by_the_s3_api(s3: S3Server) -> None:
    name = s3.new_bucket()
    rules = orjson.loads(
        Path(__file__).parent.parent.joinpath("docs/s3-lifecycle.json").read_bytes()
    )
    client = s3.client()
    client.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration=rules)
    stored = client.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
    assert [rule["ID"] for rule in stored] == [rule["ID"] for rule in rules["Rules"]]


def test_file_bucket_batch_syncs_each_filesystem_once_and_fails_only_bad_items(
    tmp_path: Path, log_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import perseid_jobs.logs.bucket as bucket_module

    real_syncfs = bucket_module._syncfs()
    if real_syncfs is None:
        pytest.skip("no syncfs on this system")
    synced: list[int] = []

    def counting_syncfs(fd: int) -> int:
        synced.append(os.fstat(fd).st_dev)
        return real_syncfs(fd)

    monkeypatch.setattr(bucket_module, "_syncfs", lambda: counting_syncfs)
    bucket = FileBucket(tmp_path / "bucket")
    keys = [f"etl/2024/03/{day}/01H{i}.log" for day in (30, 31) for i in range(3)]
    results = bucket.upload_many([(log_file, key) for key in keys] + [(log_file, "../outside.log")])
    assert results[:6] == [(tmp_path / "bucket" / key).as_uri() for key in keys]
    assert isinstance(results[6], BucketError)
    assert synced == [os.stat(tmp_path).st_dev]  # two directories, one filesystem, one flush
    assert all(bucket.read(key) == log_file.read_bytes() for key in keys)
    assert not list((tmp_path / "bucket").rglob(".*.tmp"))


def test_file_bucket_on_the_spool_filesystem_stores_a_second_name_not_a_copy(
    tmp_path: Path, log_file: Path
) -> None:
    bucket = FileBucket(tmp_path / "bucket")
    url = bucket.upload(log_file, "etl/2024/03/31/01HTASK.log")
    stored = tmp_path / "bucket" / "etl/2024/03/31/01HTASK.log"
    assert url == stored.as_uri()
    assert os.stat(stored).st_ino == os.stat(log_file).st_ino
    log_file.unlink()  # the spool's name goes after the upload; the bucket's stays
    assert stored.read_bytes().endswith(b'"done"}\n')


def test_file_bucket_across_filesystems_copies(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second filesystem at /dev/shm")
    with tempfile.TemporaryDirectory(dir=shm) as spool:
        log = Path(spool) / "01HTASK.log"
        log.write_bytes(b'{"level":30,"msg":"task started"}\n')
        bucket = FileBucket(tmp_path / "bucket")
        bucket.upload(log, "etl/2024/03/31/01HTASK.log")
        stored = tmp_path / "bucket" / "etl/2024/03/31/01HTASK.log"
        assert stored.read_bytes() == log.read_bytes()
        assert os.stat(stored).st_ino != os.stat(log).st_ino


def test_file_bucket_without_syncfs_fsyncs_and_stores_the_same(
    tmp_path: Path, log_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import perseid_jobs.logs.bucket as bucket_module

    monkeypatch.setattr(bucket_module, "_syncfs", lambda: None)
    bucket = FileBucket(tmp_path / "bucket")
    keys = [f"etl/2024/03/31/01H{i}.log" for i in range(3)]
    results = bucket.upload_many([(log_file, key) for key in keys])
    assert results == [(tmp_path / "bucket" / key).as_uri() for key in keys]
    assert all(bucket.read(key) == log_file.read_bytes() for key in keys)
