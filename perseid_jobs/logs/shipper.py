"""Uploads finished task logs from the worker's local spool to the bucket.

A log stays in the spool, under its task id, until the bucket has confirmed
the upload (and, when the worker asks for it, until its URL is recorded in
Redis). Logs that a worker which is gone left behind are found again by the
next worker to start on the same logs directory (see :mod:`perseid_jobs.logs.spool`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import msgspec

from perseid_jobs.logs.bucket import Bucket, BucketError, object_key, upload_many
from perseid_jobs.logs.pino import append_last, closing_line
from perseid_jobs.logs.spool import DeadSpools

__all__ = ["LogShipper", "Shipped"]

log = logging.getLogger(__name__)

BATCH_SIZE = 64
"""Most logs uploaded (and reported in one call of ``on_shipped``) in one go."""

LINGER_S = 0.02
"""How long a log waits for others to share its batch (one sync and one report for all)."""

ADOPT_EVERY_S = 2.0
"""How often spools are looked at again for a worker gone since (its logs are adopted)."""

UNKNOWN_JOB = "_unknown"
"""Job name used for a leftover log whose first line is unreadable, so it is still kept."""


class _Pending(msgspec.Struct):
    path: Path
    job: str
    started_at_ms: int
    queued_at: float = 0.0  # monotonic; a leftover from an earlier run is due at once

    @property
    def task_id(self) -> str:
        return self.path.stem


class Shipped(NamedTuple):
    """One log stored in the bucket: its task, its URL, and its file in the spool."""

    task_id: str
    url: str
    path: Path


class _FirstLine(msgspec.Struct, rename="camel"):
    job: str
    started_at: int


EMPTY_LEFTOVER = "killed: the worker process exited before the task wrote its log"


def _read_leftover(path: Path) -> _Pending:
    """Job and start time of a log left in the spool, from its first line.

    An empty one (its zygote died between making the file and the task's first line)
    gets that one line first, so no log is stored empty.
    """
    with contextlib.suppress(OSError):
        if path.stat().st_size == 0:
            line = closing_line(
                50, EMPTY_LEFTOVER, pid=os.getpid(), task=path.stem, job=UNKNOWN_JOB
            )
            append_last(path, line)
    try:
        with path.open("rb") as file:
            # Bounded: a damaged file may hold no newline at all.
            first = msgspec.json.decode(file.readline(64 * 1024), type=_FirstLine)
        return _Pending(path, first.job, first.started_at)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        # Never drop a log: file it under a placeholder job at its last write.
        log.warning("log %s has no readable first line (%s); uploading it anyway", path, exc)
        mtime_ms = int(path.stat().st_mtime * 1000) if path.exists() else int(time.time() * 1000)
        return _Pending(path, UNKNOWN_JOB, mtime_ms)


class LogShipper:
    """Uploads finished task logs from a local spool dir to a bucket, in a background thread.

    A log is deleted locally only once the bucket has confirmed it, so none is
    ever lost: failed uploads wait in the spool and are retried with
    exponential backoff (with jitter) until the bucket is reachable again.

    Logs are taken from the queue in batches of up to ``batch_size``, a
    partial batch once its first log has waited ``linger`` seconds since it
    was queued (not since the last batch was taken): a
    directory bucket syncs once per batch, and the URLs are reported in one
    call of ``on_shipped`` when it is given.
    """

    def __init__(
        self,
        logs_dir: Path,
        bucket: Bucket,
        *,
        on_uploaded: Callable[[str, str], None] | None = None,
        on_shipped: Callable[[list[Shipped]], None] | None = None,
        dead: DeadSpools | None = None,
        batch_size: int = BATCH_SIZE,
        linger: float = LINGER_S,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        """Ship ``logs_dir/<task id>.log`` files to ``bucket``.

        After each batch, ``on_shipped([Shipped, …])`` is called once with the
        logs it stored, in queue order, on the shipper's thread. It leaves the
        files in the spool: the caller deletes them with :meth:`remove` once it
        has recorded the URLs (so a crash in between leaves a log to be uploaded
        again, never lost). Without it, ``on_uploaded(task id, url)`` is called
        once per log, and the file is deleted once it returns.

        ``dead``: at :meth:`start`, the logs of gone workers' spools are adopted
        from it (else the ``*.log`` files of ``logs_dir`` are the leftovers).
        """
        self.logs_dir = logs_dir
        self.bucket = bucket
        self._on_uploaded = on_uploaded
        self._on_shipped = on_shipped
        self._dead = dead
        self._batch_size = max(1, batch_size)
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._cond = threading.Condition()
        self._queue: deque[_Pending] = deque()
        self._in_flight: list[_Pending] = []
        self._failures = 0
        self._consecutive_failures = 0
        self._resume_at = 0.0  # monotonic time before which no upload is attempted
        self._linger = linger
        self._stop_at: float | None = None
        self._adopt_at = math.inf  # monotonic time of the next look for gone workers' spools
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Queue every log left in the spool (ahead of anything submitted), then start."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._queue_leftovers(list(self.logs_dir.glob("*.log")))
        self._thread = threading.Thread(target=self._run, name="log-shipper", daemon=True)
        self._thread.start()

    def submit(self, task_id: str, job: str, started_at_ms: int) -> None:
        """Queue ``logs_dir/<task_id>.log`` for upload; returns at once."""
        path = self.logs_dir / f"{task_id}.log"
        with self._cond:
            waiting = [*self._queue, *self._in_flight]
            if any(entry.path == path for entry in waiting):
                return
            self._queue.append(_Pending(path, job, started_at_ms, time.monotonic()))
            self._cond.notify()

    def remove(self, shipped: list[Shipped]) -> None:
        """Delete logs whose upload was recorded (see ``on_shipped``); empty dead spools go."""
        for entry in shipped:
            try:
                entry.path.unlink(missing_ok=True)
            except OSError as exc:
                # Harmless: a later start uploads it again under the same key.
                log.error("cannot remove uploaded log %s: %s", entry.path, exc)
            if self._dead is not None and entry.path.parent != self.logs_dir:
                self._dead.release(entry.path.parent)

    def pending(self) -> int:
        """Number of logs waiting: queued, being uploaded, or waiting to be retried."""
        with self._cond:
            return len(self._queue) + len(self._in_flight)

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

    def _queue_leftovers(self, leftovers: list[Path]) -> None:
        """Queue logs left by workers that are gone, ahead of the rest (oldest first)."""
        if self._dead is not None:
            leftovers += self._dead.adopt()
            # Again later: a worker may die (or its zygote end) after this one started.
            self._adopt_at = time.monotonic() + ADOPT_EVERY_S
        found = [_read_leftover(path) for path in sorted(leftovers, key=_mtime)]
        with self._cond:
            queued = {entry.path for entry in [*self._queue, *self._in_flight]}
            self._queue.extendleft(reversed([e for e in found if e.path not in queued]))
        if found:
            log.info("found %d log(s) not yet uploaded in %s", len(found), self.logs_dir)

    def _run(self) -> None:
        while batch := self._next():
            self._ship(batch)

    def _next(self) -> list[_Pending]:
        """Wait for logs and take up to a batch; [] once stopping and out of work or time."""
        with self._cond:
            while True:
                now = time.monotonic()
                if self._stop_at is not None and (not self._queue or now >= self._stop_at):
                    return []
                if now >= self._adopt_at and self._stop_at is None:
                    self._cond.release()  # the look at the disk must not hold up submit()
                    try:
                        self._queue_leftovers([])
                    finally:
                        self._cond.acquire()
                    continue
                # A partial batch waits for company until the log at its head has
                # waited `linger` since it was queued, unless stopping.
                ready_at = self._resume_at
                if self._queue and len(self._queue) < self._batch_size and self._stop_at is None:
                    ready_at = max(ready_at, self._queue[0].queued_at + self._linger)
                if self._queue and now >= ready_at:
                    count = min(self._batch_size, len(self._queue))
                    self._in_flight = [self._queue.popleft() for _ in range(count)]
                    return self._in_flight
                waits = [self._stop_at - now] if self._stop_at is not None else []
                if self._stop_at is None and self._adopt_at < math.inf:
                    waits.append(self._adopt_at - now)
                if self._queue:
                    waits.append(ready_at - now)
                self._cond.wait(min(waits) if waits else None)

    def _ship(self, batch: list[_Pending]) -> None:
        items: list[tuple[Path, str]] = []
        present: list[_Pending] = []
        for entry in batch:
            path = entry.path
            if path.exists():
                present.append(entry)
                items.append((path, object_key(entry.job, entry.task_id, entry.started_at_ms)))
            else:
                log.error("log of task %s vanished from %s before upload", entry.task_id, path)
        try:
            results = upload_many(self.bucket, items)
        except Exception as exc:  # any failure, expected or not, must keep the thread alive
            results = [BucketError(str(exc))] * len(items)
        uploaded: list[Shipped] = []
        failed: list[_Pending] = []
        for entry, result in zip(present, results, strict=True):
            if isinstance(result, BucketError):
                failed.append(entry)
            else:
                uploaded.append(Shipped(entry.task_id, result, entry.path))
        backoff = self._settle(len(batch) - len(failed), failed)
        for entry, result in zip(present, results, strict=True):
            if isinstance(result, BucketError):
                log.warning(
                    "upload of task %s log failed (%s); retrying in %.1fs",
                    entry.task_id,
                    result,
                    backoff,
                )
        if uploaded:
            self._report(uploaded)

    def _report(self, uploaded: list[Shipped]) -> None:
        if self._on_shipped is not None:
            try:
                self._on_shipped(uploaded)
            except Exception:
                log.exception("handing over the log URLs of %d task(s) failed", len(uploaded))
            return  # the receiver removes the files once it recorded their URLs
        if self._on_uploaded is not None:
            for task_id, url, _ in uploaded:
                try:
                    self._on_uploaded(task_id, url)
                except Exception:
                    log.exception("recording the log URL of task %s failed", task_id)
        self.remove(uploaded)

    def _settle(self, succeeded: int, failed: list[_Pending]) -> float:
        """Account for one batch; failed logs go to the back of the queue. Returns the backoff."""
        with self._cond:
            self._in_flight = []
            if not failed:
                self._consecutive_failures = 0
                return 0.0
            self._failures += len(failed)
            # One backoff for the whole shipper: when the bucket is down every upload
            # fails, and hammering it once per log helps nobody. A batch where some
            # logs went through starts the backoff over.
            self._consecutive_failures = 1 if succeeded else self._consecutive_failures + 1
            self._queue.extend(failed)
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
