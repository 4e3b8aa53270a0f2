"""What the metrics endpoint reads from a running worker, at scrape time."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import redis

from ..store.connection import connect
from . import flow_probe

if TYPE_CHECKING:
    from .worker import Worker


class WorkerProbe:
    """Reads a :class:`~perseid_jobs.worker.worker.Worker`'s state for metrics and health checks.

    It has its own Redis connection, so a scrape never waits behind the worker's loop.
    """

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self._redis: Any = connect(worker.s.redis_url, check=False, socket_timeout=2.0)

    def slots_total(self) -> int:
        """Slots this instance offers."""
        return self.w.s.slots

    def slots_in_use(self) -> int:
        """Slots of its running tasks."""
        return self.w.running.slots

    def tasks_running(self) -> int:
        """Tasks it runs."""
        return len(self.w.running)

    def logs_pending(self) -> int:
        """Logs in the local spool."""
        return self.w.shipper.pending() if self.w.shipper else 0

    def log_upload_failures(self) -> int:
        """Failed upload attempts."""
        return self.w.shipper.failures() if self.w.shipper else 0

    def heartbeat_failures(self) -> int:
        """Failed lease renewals."""
        return self.w.heart.failures if self.w.heart else 0

    def backlog(self) -> tuple[int, float]:
        """(tasks due now, age in seconds of the oldest due task), in Redis time."""
        try:
            sec, usec = self._redis.time()
            now = int(sec) * 1000 + int(usec) // 1000
            pipe = self._redis.pipeline(transaction=False)
            for keys in self.w.parts:
                pipe.zcount(keys.due, "-inf", now)
                pipe.zrange(keys.due, 0, 0, withscores=True)
            replies = pipe.execute()
            due = sum(int(n) for n in replies[0::2])
            head = sorted((h for r in replies[1::2] for h in r), key=lambda pair: pair[1])[:1]
        except redis.RedisError:
            return 0, 0.0
        oldest = (now - head[0][1]) / 1000 if head and head[0][1] <= now else 0.0
        return due, oldest

    def flow_limits(self) -> list[tuple[str, str, int, int]]:
        """(job, limit, configured, in use) for each limit (see flow_probe)."""
        try:
            return flow_probe.limits(self._redis, self.w.parts)
        except redis.RedisError:
            return []

    def held(self) -> dict[str, int]:
        """Pending tasks held back by each reason (see flow_probe)."""
        try:
            return flow_probe.held(self._redis, self.w.parts)
        except redis.RedisError:
            return {}

    def progress(self) -> list[tuple[str, str, float]]:
        """(job, task id, fraction) of the running tasks that reported progress."""
        runs = {run.task.id: run.task.job for run in list(self.w.running)}
        latest = dict(self.w.flow.latest)  # written by the loop's thread: copied first
        return [(runs[t], t, f) for t, f in latest.items() if t in runs]

    def loop_age(self) -> float:
        """Seconds since the worker's loop last turned."""
        return time.monotonic() - self.w.last_loop

    def readiness(self) -> tuple[bool, str]:
        """Registered, lease fresh, Redis reachable."""
        if not self.w.registered:
            return False, "not registered (or fencing)"
        if self.w.lease.lapsed():
            return False, "lease lapsed: fencing"
        if self.w.backoff.down_since is not None:
            return False, "Redis calls failing; retrying with backoff"
        try:
            self._redis.ping()
        except redis.RedisError as exc:
            return False, f"Redis unreachable: {exc}"
        return True, f"instance {self.w.instance_id}"
