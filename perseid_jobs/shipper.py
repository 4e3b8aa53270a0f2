"""Uploads finished task logs from the worker's local spool to the bucket.

The spool is the logs directory itself: a log stays there, under its task id,
until the bucket has confirmed the upload. A worker that dies with logs not yet
shipped finds them again at its next start.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import msgspec

from perseid_jobs.bucket import Bucket, object_key

__all__ = ["LogShipper"]

log = logging.getLogger(__name__)

UNKNOWN_JOB = "_unknown"
"""Job name used for a leftover log whose first line is unreadable, so it is still kept."""


class _Pending(msgspec.Struct):
    task_id: str
    job: str
    started_at_ms: int


class _FirstLine(msgspec.Struct, rename="camel"):
    job: str
    started_at: int


def _read_leftover(path: Path) -> _Pending:
    """Job and start time of a log left in the spool, from its first line."""
    try:
        with path.open("rb") as file:
            # Bounded: a damaged file may hold no newline at all.
            first = msgspec.json.decode(file.readline(64 * 1024), type=_FirstLine)
        return _Pending(path.stem, first.job, first.started_at)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        # Never drop a log: file it under a placeholder job at its last write.
        log.warning("log %s has no readable first line (%s); uploading it anyway", path, exc)
        mtime_ms = int(path.stat().st_mtime * 1000) if path.exists() else int(time.time() * 1000)
        return _Pending(path.stem, UNKNOWN_JOB, mtime_ms)


class LogShipper:
    """Uploads finished task logs from a local spool dir to a bucket, in a background thread.

    A log is deleted locally only once the bucket has confirmed it, so none is
    ever lost: failed uploads wait in the spool and are retried with
    exponential backoff (with jitter) until the bucket is reachable again.
    """

    def __init__(
        self,
        logs_dir: Path,
        bucket: Bucket,
        *,
        on_uploaded: Callable[[str, str], None] | None = None,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        """Ship ``logs_dir/<task id>.log`` files to ``bucket``; call ``on_uploaded(task, url)``."""
        self.logs_dir = logs_dir
        self.bucket = bucket
        self._on_uploaded = on_uploaded
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._cond = threading.Condition()
        self._queue: deque[_Pending] = deque()
        self._in_flight: _Pending | None = None
        self._failures = 0
        self._consecutive_failures = 0
        self._resume_at = 0.0  # monotonic time before which no upload is attempted
        self._stop_at: float | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Queue every log left in the spool (ahead of anything submitted), then start."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        leftovers = sorted(self.logs_dir.glob("*.log"), key=_mtime)
        found = [_read_leftover(path) for path in leftovers]
        with self._cond:
            queued = {entry.task_id for entry in self._queue}
            self._queue.extendleft(reversed([e for e in found if e.task_id not in queued]))
        if found:
            log.info("found %d log(s) not yet uploaded in %s", len(found), self.logs_dir)
        self._thread = threading.Thread(target=self._run, name="log-shipper", daemon=True)
        self._thread.start()

    def submit(self, task_id: str, job: str, started_at_ms: int) -> None:
        """Queue ``logs_dir/<task_id>.log`` for upload; returns at once."""
        with self._cond:
            waiting = [*self._queue, self._in_flight]
            if any(entry is not None and entry.task_id == task_id for entry in waiting):
                return
            self._queue.append(_Pending(task_id, job, started_at_ms))
            self._cond.notify()

    def pending(self) -> int:
        """Number of logs waiting: queued, being uploaded, or waiting to be retried."""
        with self._cond:
            return len(self._queue) + (self._in_flight is not None)

    def failures(self) -> int:
        """Number of upload attempts that have failed so far."""
        with self._cond:
            return self._failures

    def stop(self, timeout: float = 10.0) -> None:
        """Upload what is queued for up to ``timeout`` seconds, then stop.

        Logs not uploaded by then stay in the spool for the next start. An
        upload still running at the deadline is left to finish in the
        background rather than being cut off halfway.
        """
        with self._cond:
            self._stop_at = time.monotonic() + timeout
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        left = self.pending()
        if left:
            log.warning("%d log(s) not uploaded; they stay in %s", left, self.logs_dir)

    def _run(self) -> None:
        while (entry := self._next()) is not None:
            self._ship(entry)

    def _next(self) -> _Pending | None:
        """Wait for a log to upload; None once stopping and out of work or time."""
        with self._cond:
            while True:
                now = time.monotonic()
                if self._stop_at is not None and (not self._queue or now >= self._stop_at):
                    return None
                if self._queue and now >= self._resume_at:
                    self._in_flight = self._queue.popleft()
                    return self._in_flight
                waits = [self._stop_at - now] if self._stop_at is not None else []
                if self._queue:
                    waits.append(self._resume_at - now)
                self._cond.wait(min(waits) if waits else None)

    def _ship(self, entry: _Pending) -> None:
        path = self.logs_dir / f"{entry.task_id}.log"
        if not path.exists():
            log.error("log of task %s vanished from %s before upload", entry.task_id, path)
            self._settle(entry, failed=False)
            return
        try:
            url = self.bucket.upload(
                path, object_key(entry.job, entry.task_id, entry.started_at_ms)
            )
        except Exception as exc:  # any failure, expected or not, must keep the thread alive
            backoff = self._settle(entry, failed=True)
            log.warning(
                "upload of task %s log failed (%s); retrying in %.1fs", entry.task_id, exc, backoff
            )
            return
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            # Harmless: a later start uploads it again under the same key.
            log.error("cannot remove uploaded log %s: %s", path, exc)
        self._settle(entry, failed=False)
        if self._on_uploaded is not None:
            try:
                self._on_uploaded(entry.task_id, url)
            except Exception:
                log.exception("recording the log URL of task %s failed", entry.task_id)

    def _settle(self, entry: _Pending, *, failed: bool) -> float:
        """Account for one attempt; a failed log goes to the back of the queue."""
        with self._cond:
            self._in_flight = None
            if not failed:
                self._consecutive_failures = 0
                return 0.0
            self._failures += 1
            self._consecutive_failures += 1
            self._queue.append(entry)
            # One backoff for the whole shipper: when the bucket is down every upload
            # fails, and hammering it once per log helps nobody.
            # The exponent is capped so a days-long outage cannot overflow a float.
            delay = self._min_backoff * 2.0 ** min(self._consecutive_failures - 1, 30)
            delay = min(self._max_backoff, delay) * random.uniform(0.8, 1.2)
            self._resume_at = time.monotonic() + delay
            return delay


def _mtime(path: Path) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0
