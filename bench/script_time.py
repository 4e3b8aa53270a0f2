"""Redis-side time per call of each Lua script, on a private redis-server.

What a script costs inside Redis beyond its own commands includes running the
source sent with it: every helper it carries is defined (a closure made) on each
call. This measures that cost per script, from Redis's own accounting: for each
script, ``CONFIG RESETSTAT``, ``N`` calls, then ``usec_per_call`` of
``cmdstat_evalsha`` in ``INFO commandstats``. Only the raw ``Scripts.call`` is
used, so the same file measures any version of the scripts.

    .venv/bin/python -m bench.script_time [N] [ROUNDS]

Prints one line per script: the least and the median over ROUNDS of the per-call
microseconds (the least is the steadiest on a shared machine).
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable
from typing import Any

import redis

from perseid_jobs.store.keys import Keys
from perseid_jobs.store.redisproc import RedisServer
from perseid_jobs.store.scripts import Scripts

INSTANCE = "timer"
FAR_MS = 4_102_444_800_000  # 2100: scheduled tasks never come due, so claims find none


def evalsha_usec(client: redis.Redis, calls: Callable[[], Any], n: int) -> float:
    """Redis's microseconds per EVALSHA over ``n`` runs of ``calls``."""
    client.config_resetstat()
    for _ in range(n):
        calls()
    stats: dict[str, Any] = client.info("commandstats")
    return float(stats["cmdstat_evalsha"]["usec_per_call"])


def cases(s: Scripts) -> dict[str, Callable[[], Any]]:
    """One call of each script that leaves the state as it found it (or close enough)."""
    job_def = '{"name": "j", "slots": 1}'
    return {
        "claim": lambda: s.call("claim", INSTANCE, 10),
        "finish": lambda: s.call("finish", INSTANCE, 10, -1, 0),
        "heartbeat": lambda: s.call("heartbeat", INSTANCE, 3_600_000),
        "served": lambda: s.call("served", "j"),
        "reap": lambda: s.call("reap", 0),
        "republish": lambda: s.call("republish", INSTANCE, 1, "j", job_def),
        "set_log_url": lambda: s.call("set_log_url", "nosuchtask", "file:///x"),
        "cancel": lambda: s.call("cancel", "nosuchtask", "0", "timing"),
        "schedule": lambda: s.call(
            "schedule", "j", "{}", 1, 60_000, FAR_MS, 0, "", "", "", "", 0, 1000, "", "0", ""
        ),
        "drain": lambda: s.call("drain", "other"),
    }


def main() -> None:
    """Measure every script ROUNDS times and print the medians."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    server = RedisServer().start()
    try:
        client = redis.Redis(port=server.port, decode_responses=True)
        s = Scripts(client, Keys("timing"))
        s.call(
            "register", INSTANCE, 3_600_000, 4, "bench", os.getpid(), "0", 1, "j",
            '{"name": "j", "slots": 1}',
        )  # fmt: skip
        for _ in range(100):  # a backlog that is never due, as a worker's idle claims see
            cases(s)["schedule"]()
        table = cases(s)
        results: dict[str, list[float]] = {name: [] for name in table}
        for _ in range(rounds):  # alternate the scripts, so drift in the machine is shared
            for name, call in table.items():
                results[name].append(evalsha_usec(client, call, n))
        for name, values in results.items():
            low, mid = min(values), statistics.median(values)
            print(f"{name:12s} min {low:7.2f}  median {mid:7.2f} us/call")
        client.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
