"""Ceilings no job system can beat on this machine: bare forks, a raw Lua claim, wake-ups."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from bench.systems import ROOT

# The least a claim can do: take the first due id, drop it from the due set, mark it.
RAW_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #ids == 0 then return false end
redis.call('ZREM', KEYS[1], ids[1])
redis.call('HSET', KEYS[2] .. ids[1], 'status', 'running', 'started_at', ARGV[1])
return ids[1]
"""


def fork_rate(n: int, launchers: int, *, warm: bool = False) -> float:
    """Forks per second of ``launchers`` processes running ``n`` fork cycles each, together.

    Each launcher waits for a common start time; the rate spans from the first
    loop's start to the last loop's end, so a launcher that starts late only
    lowers the parallel figure, never inflates it.
    """
    start = time.time() + 0.5  # time for the interpreters to start (and import, if warm)
    argv = [sys.executable, "-m", "bench.forkloop", str(n), f"{start:.6f}"]
    if warm:
        argv.append("--warm")
    procs = [
        subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(launchers)
    ]
    spans = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"fork launcher exited with {proc.returncode}")
        begin, end = (float(x) for x in out.split())
        spans.append((begin, end))
    return n * launchers / (max(e for _, e in spans) - min(b for b, _ in spans))


@dataclass(frozen=True)
class ClaimRates:
    """Claims per second: one call per claim, and 100 calls per pipeline; Redis µs per call."""

    single: float
    pipelined: float
    server_us: float = math.nan


class ServerTime:
    """Time Redis itself spent in ``EVALSHA`` calls between :meth:`start` and :meth:`per_call`."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.calls, self.usec = self._read()

    def _read(self) -> tuple[int, int]:
        stats = self.client.info("commandstats").get("cmdstat_evalsha", {})
        return int(stats.get("calls", 0)), int(stats.get("usec", 0))

    def per_call(self) -> float:
        """Microseconds per call since this object was made (scripts' inner commands included)."""
        calls, usec = self._read()
        return (usec - self.usec) / (calls - self.calls) if calls > self.calls else math.nan


def raw_claim_rates(url: str, n: int) -> ClaimRates:
    """The raw Lua claim (ZRANGEBYSCORE + ZREM + HSET) from redis-py over ``n`` due ids."""
    n = max(100, n - n % 100)
    client = redis.Redis.from_url(url)
    client.flushall()
    script = client.register_script(RAW_CLAIM)
    keys = ["{raw}:due", "{raw}:task:"]
    rates = []
    server = ServerTime(client)
    for pipelined in (False, True):
        _fill_due(client, keys[0], n)
        now = str(int(time.time() * 1000))
        t0 = time.perf_counter()
        if pipelined:
            for _ in range(n // 100):
                pipe = client.pipeline(transaction=False)
                for _ in range(100):
                    script(keys=keys, args=[now], client=pipe)
                pipe.execute()
        else:
            for _ in range(n):
                script(keys=keys, args=[now])
        rates.append(n / (time.perf_counter() - t0))
        if client.zcard(keys[0]) != 0:
            raise RuntimeError("the raw claim left due ids behind")
    per_call = server.per_call()
    client.close()
    return ClaimRates(rates[0], rates[1], per_call)


def _fill_due(client: redis.Redis, key: str, n: int) -> None:
    pipe = client.pipeline(transaction=False)
    for start in range(0, n, 1000):
        pipe.zadd(key, {f"t{i:09d}": i for i in range(start, min(n, start + 1000))})
    pipe.execute()


@dataclass(frozen=True)
class WakeTimes:
    """Round trips in µs (medians), back to back and after an idle gap: what one hop costs.

    A start crosses several processes (Redis, the worker, the zygote, the task's
    process), each asleep until its message arrives. On a VM, waking an idle
    CPU costs far more than the message itself; this shows how much, so the
    due → start latency can be read against it.
    """

    gap_ms: float
    redis_hot_us: float
    redis_idle_us: float
    pipe_hot_us: float
    pipe_idle_us: float


def wake_times(url: str, gap_s: float, n: int = 60) -> WakeTimes:
    """Redis ``PING`` and a pipe ping-pong with a child, back to back and ``gap_s`` apart."""
    client = redis.Redis.from_url(url)
    client.ping()
    redis_times = [_median_round_trip(client.ping, gap, n) for gap in (0.0, gap_s)]
    client.close()
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # echo every byte back until the pipe closes
        code = 1
        try:
            os.close(to_child_w)
            os.close(to_parent_r)
            while os.read(to_child_r, 1):
                os.write(to_parent_w, b".")
            code = 0
        finally:
            os._exit(code)
    os.close(to_child_r)
    os.close(to_parent_w)

    def pipe_round_trip() -> None:
        os.write(to_child_w, b".")
        os.read(to_parent_r, 1)

    try:
        pipe_times = [_median_round_trip(pipe_round_trip, gap, n) for gap in (0.0, gap_s)]
    finally:
        os.close(to_child_w)
        os.close(to_parent_r)
        os.waitpid(pid, 0)
    return WakeTimes(gap_s * 1000, *redis_times, *pipe_times)


def _median_round_trip(call: Callable[[], object], gap_s: float, n: int) -> float:
    times = []
    for _ in range(n):
        if gap_s:
            time.sleep(gap_s)
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)
