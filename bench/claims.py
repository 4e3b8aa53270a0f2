"""perseid-jobs' own claim script, called directly: its rate, and at 1,000,000 pending tasks.

An instance is registered with more slots than any run can fill, so a claim is
never refused for want of room; tasks are created by the real ``schedule``
script, pipelined over two connections.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass

import msgspec
import redis

from bench.ceilings import ClaimRates, ServerTime
from bench.systems import BENCH, JOB
from perseid_jobs import __version__
from perseid_jobs.core.jobfile import load_job_file
from perseid_jobs.store.keys import Keys
from perseid_jobs.store.script_io import ClaimedTask, ClaimReply, LeaseLapsed, ScheduleArgs
from perseid_jobs.store.scripts import Scripts, decode

INSTANCE = "bench-claimer"
CHUNK = 1000
DAY_MS = 86_400_000


class Claimer:
    """A registered instance and the scripts, on a fresh namespace of the benchmark's Redis."""

    def __init__(self, url: str, namespace: str = "claimbench") -> None:
        self.url = url
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.client.flushall()
        self.keys = Keys(namespace)
        self.scripts = Scripts(self.client, self.keys)
        definition = load_job_file(BENCH / "jobs" / f"{JOB}.py").definition()
        self.definition = definition
        self.scripts.register(
            INSTANCE,
            ttl_ms=3_600_000,
            slots=10**9,
            host="bench",
            pid=os.getpid(),
            version=__version__,
            jobs={JOB: msgspec.json.encode(definition).decode()},
        )

    def schedule(self, n: int, start_ms: int | None) -> float:
        """Create ``n`` tasks due at ``start_ms`` (None: now); return tasks per second."""
        t0 = time.perf_counter()
        halves = [n // 2, n - n // 2]
        threads = [threading.Thread(target=self._schedule, args=(h, start_ms)) for h in halves]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return n / (time.perf_counter() - t0)

    def _schedule(self, n: int, start_ms: int | None) -> None:
        client = redis.Redis.from_url(self.url, decode_responses=True)
        scripts = Scripts(client, self.keys)
        d = self.definition
        argv = ScheduleArgs(
            job=JOB, args="{}", slots=d.slots, max_ms=d.max_duration_ms, at_ms=start_ms,
            retries=d.retries, backoff_ms=d.backoff_ms,
        ).argv()  # fmt: skip
        for first in range(0, n, CHUNK):
            pipe = client.pipeline(transaction=False)
            for _ in range(min(CHUNK, n - first)):
                scripts.call("schedule", *argv, client=pipe)  # pipelined: see Scripts.schedule
            pipe.execute()
        client.close()

    def claim_rate(self, n: int, *, per_call: int = 1, pipeline: int = 1) -> float:
        """Claim ``n`` due tasks, ``per_call`` per script call, ``pipeline`` calls a round trip."""
        calls = math.ceil(n / per_call)
        t0 = time.perf_counter()
        claimed = 0
        for first in range(0, calls, pipeline):
            batch = min(pipeline, calls - first)
            if pipeline == 1:
                replies = [self.scripts.claim(INSTANCE, per_call)]
            else:
                replies = self._claims_pipelined(per_call, batch)
            claimed += sum(len(claimed_tasks(reply)) for reply in replies)
        rate = claimed / (time.perf_counter() - t0)
        if claimed != n:
            raise RuntimeError(f"claimed {claimed} of {n} due tasks")
        return rate

    def _claims_pipelined(self, per_call: int, calls: int) -> list[ClaimReply]:
        """``calls`` claims of up to ``per_call`` tasks in one round trip, as typed replies.

        :meth:`Scripts.claim`'s call and decoding, queued on a pipeline (it calls at once).
        """
        pipe = self.client.pipeline(transaction=False)
        for _ in range(calls):
            self.scripts.call("claim", INSTANCE, per_call, client=pipe)
        return [decode(reply, ClaimReply) for reply in pipe.execute()]  # type: ignore[arg-type]

    def used_memory(self) -> int:
        """Redis ``used_memory`` in bytes."""
        return int(self.client.info("memory")["used_memory"])

    def close(self) -> None:
        """Drop the connection."""
        self.client.close()


def claimed_tasks(reply: ClaimReply) -> list[ClaimedTask]:
    """The tasks a claim took (the benchmark's instance never loses its lease)."""
    if isinstance(reply, LeaseLapsed):
        raise RuntimeError(f"{INSTANCE}: the claim says its lease lapsed")
    return reply.tasks


@dataclass(frozen=True)
class PerseidClaims:
    """The claim script's rates: one task per call, pipelined ×100, and 64 per call."""

    rates: ClaimRates
    batch64: float


def claim_rates(url: str, n: int) -> PerseidClaims:
    """The claim script's rate over ``n`` due tasks in each of three ways."""
    n = max(100, n - n % 100)
    claimer = Claimer(url)
    try:
        rates, server_us = [], math.nan
        for per_call, pipeline in ((1, 1), (1, 100), (64, 1)):
            claimer.schedule(n, None)
            server = ServerTime(claimer.client)
            rates.append(claimer.claim_rate(n, per_call=per_call, pipeline=pipeline))
            if per_call == 1 and pipeline == 1:
                server_us = server.per_call()
        return PerseidClaims(ClaimRates(rates[0], rates[1], server_us), rates[2])
    finally:
        claimer.close()


@dataclass(frozen=True)
class Scale:
    """Claiming among ``pending`` future tasks, and what each pending task costs in memory."""

    pending: int
    schedule_rate: float
    bytes_per_task: float
    task_hash_bytes: int
    claim_rate: float
    claim_rate_pipelined: float
    server_us: float = math.nan


def scale(url: str, pending: int, claims: int) -> Scale:
    """Create ``pending`` tasks due tomorrow, then claim ``claims`` due ones among them."""
    claims = max(100, claims - claims % 100)
    claimer = Claimer(url)
    try:
        before = claimer.used_memory()
        now_ms = int(claimer.client.time()[0]) * 1000
        rate = claimer.schedule(pending, now_ms + DAY_MS)
        per_task = (claimer.used_memory() - before) / pending
        sample = claimer.client.zrange(claimer.keys.due, 0, 0)[0]
        hash_bytes = int(claimer.client.memory_usage(claimer.keys.task(str(sample))) or 0)
        claimer.schedule(claims, None)
        server = ServerTime(claimer.client)
        single = claimer.claim_rate(claims)
        server_us = server.per_call()
        claimer.schedule(claims, None)
        piped = claimer.claim_rate(claims, pipeline=100)
        return Scale(pending, rate, per_task, hash_bytes, single, piped, server_us)
    finally:
        claimer.close()
