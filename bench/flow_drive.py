"""The flow-control benchmark's drivers: the real scripts called directly, no worker.

Each driver starts from an empty namespace on the benchmark's redis-server, registers
one instance with more slots than any run can fill (so only flow control ever holds a
task back), creates its tasks with the real ``schedule`` script (pipelined) and then
drives ``claim`` and ``finish`` as a worker would. Redis's own accounting (``INFO
commandstats``) says what the claims cost inside Redis, apart from the round trips.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis

from perseid_jobs import __version__
from perseid_jobs.core.models import JobDefinition, TaskStatus
from perseid_jobs.store.keys import Keys
from perseid_jobs.store.script_io import (
    ClaimedTask,
    ClaimReply,
    Finished,
    LeaseLapsed,
    ScheduleArgs,
)
from perseid_jobs.store.scripts import Scripts, decode
from perseid_jobs.worker.outcome import Outcome

INSTANCE = "flow-bench"
NAMESPACE = "flowbench"
CHUNK = 1000
MAX_MS = 60_000


def definition(concurrency: int = 0, group_concurrency: int = 0) -> str:
    """A job's definition JSON, as a worker publishes it (its limits included)."""
    d = JobDefinition(
        slots=1, max_duration_ms=MAX_MS, concurrency=concurrency,
        group_concurrency=group_concurrency,
    )  # fmt: skip
    return msgspec.json.encode(d).decode()


Profile = dict[str, tuple[int, int]]  # command -> (calls, usec), from INFO commandstats


def commandstats(client: redis.Redis) -> Profile:
    """Every command's calls and microseconds so far (a script's own commands included)."""
    stats: dict[str, Any] = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): (int(s["calls"]), int(s["usec"]))
        for name, s in stats.items()
    }


def delta(after: Profile, before: Profile) -> Profile:
    """What each command did between two snapshots (commands that did nothing left out)."""
    out = {}
    for name, (calls, usec) in after.items():
        c0, u0 = before.get(name, (0, 0))
        if calls > c0 and name not in ("info", "config|resetstat"):  # the bench's own
            out[name] = (calls - c0, usec - u0)
    return out


class Bench:
    """An empty namespace with one registered instance offering ``jobs`` (name -> JSON)."""

    def __init__(self, url: str, jobs: dict[str, str]) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.client.flushall()
        self.keys = Keys(NAMESPACE)
        self.scripts = Scripts(self.client, self.keys)
        self.scripts.register(
            INSTANCE, ttl_ms=3_600_000, slots=10**9, host="bench", pid=os.getpid(),
            version=__version__, jobs=jobs,
        )  # fmt: skip
        # Loaded (and compiled) here, so no measure counts a first call's SCRIPT LOAD.
        self.scripts.claim(INSTANCE, 0)
        self.scripts.finish(INSTANCE, [], 0)

    def schedule(self, job: str, n: int, groups: int = 0) -> None:
        """Create ``n`` tasks of ``job`` due now (round robin over ``groups`` groups, if any),
        pipelined over two connections."""
        halves = [(0, n // 2), (n // 2, n)]
        threads = [
            threading.Thread(target=self._schedule, args=(job, a, b, groups)) for a, b in halves
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _schedule(self, job: str, first: int, end: int, groups: int) -> None:
        client = redis.Redis.from_url(self.url, decode_responses=True)
        scripts = Scripts(client, self.keys)
        for chunk in range(first, end, CHUNK):
            pipe = client.pipeline(transaction=False)
            for i in range(chunk, min(chunk + CHUNK, end)):
                group = f"g{i % groups}" if groups else ""
                a = ScheduleArgs(job=job, args="{}", slots=1, max_ms=MAX_MS, group=group)
                scripts.call("schedule", *a.argv(), client=pipe)
            pipe.execute()
        client.close()

    def profile(self) -> Profile:
        """INFO commandstats now."""
        return commandstats(self.client)

    def close(self) -> None:
        """Drop the connection."""
        self.client.close()


def taken(reply: ClaimReply) -> list[ClaimedTask]:
    """The tasks a claim took (the bench's instance never loses its lease)."""
    if isinstance(reply, LeaseLapsed):
        raise RuntimeError(f"{INSTANCE}: the claim says its lease lapsed")
    return reply.tasks


def completed(tasks: list[ClaimedTask]) -> list[Outcome]:
    """Each task completed (its attempt is the fencing token)."""
    return [Outcome(t.id, t.attempt, TaskStatus.COMPLETED, "0", "") for t in tasks]


@dataclass
class Drain:
    """One run of claims to the end of a backlog: wall seconds and what Redis did."""

    tasks: int
    seconds: float
    calls: dict[str, int] = field(default_factory=dict)  # script calls by kind
    profile: Profile = field(default_factory=dict)

    @property
    def evalsha_usec(self) -> int:
        """Redis's microseconds in every script call of the run."""
        return self.profile.get("evalsha", (0, 0))[1]


def finish_loop(b: Bench, n: int, batch: int, depth: int) -> Drain:
    """Claim ``n`` due tasks ``batch`` at a time, up to ``depth`` batches running; each
    ``finish`` ends the oldest batch and claims the next in the same call, as a worker's
    end of a task does. Raises if the claims stop short of ``n``."""
    running: deque[list[ClaimedTask]] = deque()
    done, idle, calls, last = 0, 0, 0, batch
    before, t0 = b.profile(), time.perf_counter()
    while done < n:
        ending = running.popleft() if running and (len(running) >= depth or not last) else []
        reply = b.scripts.finish(INSTANCE, completed(ending), batch)
        calls += 1
        done += len(ending)
        new = taken(reply.claim)
        last = len(new)
        if new:
            running.append(new)
        idle = idle + 1 if not new and not ending else 0
        if idle > 100:
            raise RuntimeError(f"claims stopped at {done} of {n} tasks with none running")
    seconds = time.perf_counter() - t0
    return Drain(n, seconds, {"finish": calls}, delta(b.profile(), before))


@dataclass
class Serial:
    """A job at a concurrency limit, its backlog worked off one end at a time."""

    gaps_ms: list[int]  # next start minus previous end, on Redis's clock (task records)
    running: list[int]  # the running index's size after each end while a backlog was left
    counted: list[int]  # the limit's own count (flow_running) at the same points
    extra_claims: int  # claims the loop needed beyond the finish calls' own
    ends: int
    seconds: float


def end_one(b: Bench, job: str, t: ClaimedTask) -> tuple[list[ClaimedTask], list[int]]:
    """Finish ``t`` and claim in the same call; read right after it, on the same connection:
    t's ended_at, the running index's size, the limit's count and the backlog left."""
    pipe = b.client.pipeline(transaction=False)
    o = completed([t])[0]
    b.scripts.call(
        "finish",
        INSTANCE,
        16,
        -1,
        1,
        o.id,
        o.token,
        o.status.value,
        o.exit_code,
        o.reason,
        o.next_start,
        o.skipped,
        client=pipe,
    )  # fmt: skip  (Scripts.finish's argv, on a pipeline)
    pipe.hget(b.keys.task(t.id), "ended_at")
    pipe.zcard(b.keys.running)
    pipe.hget(b.keys.flow_running, job)
    pipe.zcard(b.keys.lane(job + "\t"))
    raw, ended, running, counted, backlog = pipe.execute()
    new = taken(decode(raw, Finished).claim)
    return new, [int(ended), int(running), int(counted or 0), int(backlog)]


def serial_loop(b: Bench, job: str) -> Serial:
    """End the oldest running task of ``job`` and claim in the same call, until none is
    left; if a call takes nothing while a backlog is left, claim again until one starts."""
    running = deque(taken(b.scripts.claim(INSTANCE, 16)))
    backlog = int(b.client.zcard(b.keys.lane(job + "\t")))
    out = Serial([], [], [], 0, 0, 0.0)
    t0 = time.perf_counter()
    while running:
        new, (ended, in_index, counted, left) = end_one(b, job, running.popleft())
        out.ends += 1
        while not new and backlog > 0 and out.extra_claims < 10_000:
            new = taken(b.scripts.claim(INSTANCE, 16))
            out.extra_claims += 1
        if backlog > 0:
            out.gaps_ms += [int(t.started_at) - ended for t in new]
            out.running.append(in_index)
            out.counted.append(counted)
        running.extend(new)
        backlog = left
    out.seconds = time.perf_counter() - t0
    return out


def claim_calls(b: Bench, n: int, batch: int) -> tuple[int, Profile]:
    """Claim ``n`` due tasks ``batch`` at a time (no finishes): (calls, commandstats delta)."""
    before, calls, done = b.profile(), 0, 0
    while done < n:
        got = len(taken(b.scripts.claim(INSTANCE, batch)))
        calls += 1
        done += got
        if not got and calls > 4 * n:
            raise RuntimeError(f"claims stopped at {done} of {n}")
    return calls, delta(b.profile(), before)


def claims_until_laned(b: Bench, job: str, n: int, batch: int) -> tuple[int, int]:
    """Claim until all ``n`` tasks of ``job`` are in their lane and a gate holds it (the
    one-time move of a backlog paused after it was scheduled, or the first claim's parking
    of a lane paused from the start): (claim calls, Redis µs in them)."""
    before, calls, name = b.profile(), 0, job + "\t"
    lane = b.keys.lane(name)
    while int(b.client.zcard(lane)) < n or not b.client.hexists(b.keys.lane_gate, name):
        b.scripts.claim(INSTANCE, batch)
        calls += 1
        if calls > n:
            raise RuntimeError(f"{job}: {b.client.zcard(lane)} of {n} tasks laned")
    return calls, delta(b.profile(), before).get("evalsha", (0, 0))[1]
