"""The job body of the connection scenarios: write one record to Redis over the job's own client.

Most real jobs talk to a database or an API; this is the smallest such job.
The client is the job's, not the job system's (never the broker's connection):
made the first time a process runs the job and kept in a module global, as a
job file would keep it. So a process that runs many jobs (Celery's pool
processes, perseid-jobs' reused mode) connects once, and a process per job
(RQ's work horse, perseid-jobs' fresh mode) connects in every job: the price
the benchmark shows. Every peer's environment has redis-py (its transport).
"""

from __future__ import annotations

import os
import time

import redis

from bench.peers.bench_record import append_line

RECORDS_KEY = "bench-records"
"""The list every job appends its record to (the scenario checks its length)."""

_client: redis.Redis | None = None
_client_pid = 0


def client(url: str) -> redis.Redis:
    """This process's client of ``url`` (a forked child makes its own, as redis-py would)."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        _client, _client_pid = redis.Redis.from_url(url), os.getpid()
    return _client


def record_write(out: str, due: float, sleep: float, url: str) -> None:
    """Write one record to Redis at ``url``, sleep ``sleep`` s, then append the marker line."""
    start = time.time()
    client(url).rpush(RECORDS_KEY, b"%.6f" % start)
    if sleep > 0:
        time.sleep(sleep)
    append_line(out, start, time.time(), due)
