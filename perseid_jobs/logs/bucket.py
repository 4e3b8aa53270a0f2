"""Where finished task logs are kept: a directory or an S3 bucket.

Retention is the bucket's business (lifecycle rules), not the scheduler's.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import shutil
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import unquote, urlsplit

from ..core.errors import PerseidError

__all__ = [
    "LOG_CONTENT_TYPE",
    "Bucket",
    "BucketError",
    "FileBucket",
    "S3Bucket",
    "object_key",
    "open_bucket",
    "upload_many",
]

LOG_CONTENT_TYPE = "application/x-ndjson"
"""Content type of uploaded logs: one JSON document per line."""

MULTIPART_THRESHOLD = 8 * 1024 * 1024
"""Logs at least this large are uploaded in parts, several at a time."""


class BucketError(PerseidError):
    """A log could not be stored in or read from the bucket; the message says why."""


def object_key(job: str, task_id: str, started_at_ms: int) -> str:
    """Key of a task's log: ``<job>/<YYYY>/<MM>/<DD>/<task id>.log``, by UTC start date.

    Grouping by job then day lets lifecycle rules and listings work per job and
    keeps any one prefix small.
    """
    day = datetime.fromtimestamp(started_at_ms / 1000, tz=UTC)
    return f"{job}/{day:%Y/%m/%d}/{task_id}.log"


class Bucket(Protocol):
    """A place logs are uploaded to and read back from."""

    url: str
    """The bucket's own URL, e.g. ``file:///var/log/perseid`` or ``s3://bucket/prefix``."""

    def upload(self, local_path: Path, key: str) -> str:
        """Store the file under ``key``; return the object's URL. Raises BucketError."""
        ...

    def read(self, key_or_url: str) -> bytes:
        """Return an object's bytes, by key or by the URL ``upload`` returned.

        Raises BucketError, e.g. when there is no such object.
        """
        ...


class FileBucket:
    """A directory used as a bucket (a local disk or a shared mount)."""

    def __init__(self, root: Path) -> None:
        """Use directory ``root`` (created on first upload) as the bucket."""
        # Resolved once, so URLs handed out and URLs read back compare equal.
        self.root = root.resolve()
        self.url = self.root.as_uri()
        self._made: set[Path] = set()  # directories known to exist

    def upload(self, local_path: Path, key: str) -> str:
        """Put the file in place atomically: readers see the whole log or nothing."""
        [result] = self.upload_many([(local_path, key)])
        if isinstance(result, BucketError):
            raise result
        return result

    def upload_many(self, items: list[tuple[Path, str]]) -> list[str | BucketError]:
        """Put each file in place atomically, then make the whole batch durable at once.

        Returns, in order, each object's URL or the BucketError that says why it
        was not stored. A URL is returned only once the file and its name are on
        disk: one ``syncfs`` per filesystem for the batch where Linux offers it,
        else an ``fsync`` of each file and of each directory.
        """
        results: list[str | BucketError] = []
        placed: dict[Path, list[tuple[int, str]]] = {}  # directory -> (index, name) put there
        for index, (local_path, key) in enumerate(items):
            try:
                dest = self._place(local_path, key)
            except BucketError as exc:
                results.append(exc)
                continue
            results.append(dest.as_uri())
            placed.setdefault(dest.parent, []).append((index, dest.name))
        for error, indexes in _make_durable(placed):
            for index in indexes:
                results[index] = BucketError(f"cannot store {items[index][0]}: {error}")
        return results

    def _place(self, local_path: Path, key: str) -> Path:
        """Link (or, across filesystems, copy) one file to a temporary; rename it to its key.

        The log is complete when it is uploaded and never written again (a new
        attempt of the task writes a new file), so a second name for the same
        inode is as good as a copy, and costs no data copy.
        """
        dest = self._path(key)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        try:
            if dest.parent not in self._made:
                dest.parent.mkdir(parents=True, exist_ok=True)
                self._made.add(dest.parent)
            try:
                os.link(local_path, tmp)
            except OSError as exc:
                if exc.errno not in _NO_LINK:
                    raise
                shutil.copyfile(local_path, tmp)
            os.replace(tmp, dest)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise BucketError(f"cannot store {local_path} in {self.url}: {exc}") from exc
        return dest

    def read(self, key_or_url: str) -> bytes:
        """Return a stored log's bytes."""
        path = self._path(self._key(key_or_url))
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise BucketError(f"log not found: {path.as_uri()}") from None
        except OSError as exc:
            raise BucketError(f"cannot read {path.as_uri()}: {exc}") from exc

    def _key(self, key_or_url: str) -> str:
        if not key_or_url.startswith("file:"):
            return key_or_url
        path = Path(unquote(urlsplit(key_or_url).path)).resolve()
        if not path.is_relative_to(self.root):
            raise BucketError(f"{key_or_url} is not in bucket {self.url}")
        return path.relative_to(self.root).as_posix()

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        # Keys come from job names and the command line; neither may escape the root.
        if not key or any(part in ("", ".", "..") for part in parts):
            raise BucketError(f"invalid log key {key!r}: it must name a file inside {self.url}")
        return self.root.joinpath(*parts)


# Reasons os.link cannot give a file a second name there: copy it instead.
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP})


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    """Linux's ``syncfs(fd)`` (flush one filesystem), or None where there is none."""
    try:
        func = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    return cast("Callable[[int], int]", func)


def _make_durable(
    placed: dict[Path, list[tuple[int, str]]],
) -> list[tuple[OSError, list[int]]]:
    """Flush the files put in these directories, and their names, to disk.

    One ``syncfs`` per filesystem where Linux offers it; else an ``fsync`` of
    each file and each directory. Returns the errors, each with the indexes it
    concerns.
    """
    errors: list[tuple[OSError, list[int]]] = []
    synced: dict[int, OSError | None] = {}  # filesystem (st_dev) -> its syncfs error
    syncfs = _syncfs()
    for directory, entries in placed.items():
        indexes = [index for index, _ in entries]
        try:
            fd = os.open(directory, os.O_RDONLY)
        except OSError as exc:
            errors.append((exc, indexes))
            continue
        try:
            if syncfs is None:
                for _, name in entries:
                    _fsync_at(fd, name)
                os.fsync(fd)
                continue
            device = os.fstat(fd).st_dev
            if device not in synced:
                failed = syncfs(fd) != 0
                synced[device] = OSError(ctypes.get_errno(), "syncfs failed") if failed else None
            if (error := synced[device]) is not None:
                errors.append((error, indexes))
        except OSError as exc:
            errors.append((exc, indexes))
        finally:
            os.close(fd)
    return errors


def _fsync_at(dir_fd: int, name: str) -> None:
    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3Bucket:
    """An S3 (or S3-compatible) bucket, optionally under a key prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        multipart_threshold: int = MULTIPART_THRESHOLD,
    ) -> None:
        """Connect with boto3's standard credential chain.

        With ``endpoint_url`` None, boto3 still honours ``AWS_ENDPOINT_URL`` /
        ``AWS_ENDPOINT_URL_S3`` (MinIO, Ceph, a local test server).
        """
        import boto3  # deferred: a worker with a file bucket never pays for it
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        # Few quick retries here: the shipper already retries with its own backoff.
        config = Config(
            retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60
        )
        self._client: Any = boto3.client("s3", endpoint_url=endpoint_url, config=config)
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=multipart_threshold
        )

    def upload(self, local_path: Path, key: str) -> str:
        """Upload through boto3's transfer manager (parts in parallel for large logs)."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        full_key = self._full_key(key)
        try:
            self._client.upload_file(
                str(local_path),
                self.bucket,
                full_key,
                ExtraArgs={"ContentType": LOG_CONTENT_TYPE},
                Config=self._transfer,
            )
        except (Boto3Error, BotoCoreError, ClientError, OSError) as exc:
            raise BucketError(f"cannot upload {local_path} to {self.url}: {exc}") from exc
        return f"s3://{self.bucket}/{full_key}"

    def read(self, key_or_url: str) -> bytes:
        """Download a stored log."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = self._locate(key_or_url)
        url = f"s3://{bucket}/{key}"
        try:
            body = self._client.get_object(Bucket=bucket, Key=key)["Body"]
            with body:
                data: bytes = body.read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise BucketError(f"log not found: {url}") from None
            raise BucketError(f"cannot read {url}: {exc}") from exc
        except BotoCoreError as exc:
            raise BucketError(f"cannot read {url}: {exc}") from exc
        return data

    def _full_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _locate(self, key_or_url: str) -> tuple[str, str]:
        if not key_or_url.startswith("s3://"):
            return self.bucket, self._full_key(key_or_url)
        parts = urlsplit(key_or_url)
        return parts.netloc, parts.path.lstrip("/")


def upload_many(bucket: Bucket, items: list[tuple[Path, str]]) -> list[str | BucketError]:
    """Upload several files; each one's URL or BucketError, in order.

    A directory bucket syncs each directory once for the whole batch; other
    buckets upload one file at a time.
    """
    if isinstance(bucket, FileBucket):
        return bucket.upload_many(items)
    results: list[str | BucketError] = []
    for local_path, key in items:
        try:
            results.append(bucket.upload(local_path, key))
        except BucketError as exc:
            results.append(exc)
        except Exception as exc:  # a bucket's unexpected failure fails that log, not the batch
            error = BucketError(f"cannot upload {local_path} to {bucket.url}: {exc!r}")
            error.__cause__ = exc
            results.append(error)
    return results


def read_url(url: str, *, s3_endpoint_url: str | None = None) -> bytes:
    """A stored log's bytes, by the absolute URL recorded on its task (whatever the bucket).

    Raises BucketError.
    """
    parts = urlsplit(url)
    if parts.scheme == "s3" and parts.netloc:
        return S3Bucket(parts.netloc, endpoint_url=s3_endpoint_url).read(url)
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path:
        return FileBucket(Path(unquote(parts.path)).parent).read(url)
    raise BucketError(f"unsupported log URL {url!r}: expected file:///path or s3://bucket/key")


def open_bucket(url: str, *, s3_endpoint_url: str | None = None) -> Bucket:
    """The bucket for ``file:///abs/path``, a plain directory path, or ``s3://bucket/prefix``.

    ``file://relative/path`` is accepted too, as a directory relative to the
    working directory.
    """
    parts = urlsplit(url)
    if parts.scheme == "s3" and parts.netloc:
        return S3Bucket(parts.netloc, unquote(parts.path), endpoint_url=s3_endpoint_url)
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path:
        return FileBucket(Path(unquote(parts.path)))
    if parts.scheme == "file" and parts.netloc:
        # "file://var/bucket" names no host here: read it as a path relative to the cwd.
        return FileBucket(Path(unquote(parts.netloc + parts.path)).absolute())
    if not parts.scheme and url:
        return FileBucket(Path(url).absolute())
    raise BucketError(f"unsupported bucket URL {url!r}: use file:///path or s3://bucket/prefix")
