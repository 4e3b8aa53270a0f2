"""What the metrics read about flow control at scrape time: each limit, configured and in
use, and the pending tasks held back, by reason (see docs/flow.md).

Read over every partition on the metrics server's own connection. The held counts read
one entry per parked lane, so their cost grows with the lanes held back, not with the
tasks in them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..api.flow import PARKED
from ..store.keys import Keys

# What a gate's first letter (lua/includes/flow.lua) means, as the metric's reason label.
GATE_REASONS = {"p": "paused", "g": "group_concurrency", "c": "concurrency"}
REASONS = ("paused", "group_concurrency", "concurrency", "series_paused")


def limits(redis: Any, parts: Iterable[Keys]) -> list[tuple[str, str, int, int]]:
    """(job, "concurrency", configured, running) for every job with a concurrency limit."""
    configured: dict[str, int] = {}
    running: dict[str, int] = {}
    for keys in parts:
        for job, text in redis.hgetall(keys.flow).items():
            c = int(text.split("\t")[0] or 0)
            if c:
                configured[job] = c
        for name, n in redis.hgetall(keys.flow_running).items():
            if "\t" not in name:
                running[name] = running.get(name, 0) + int(n)
    return [(j, "concurrency", c, running.get(j, 0)) for j, c in sorted(configured.items())]


def held(redis: Any, parts: Iterable[Keys]) -> dict[str, int]:
    """Pending tasks held back now, by reason: each parked lane's tasks, and held series
    runs (rate limits hold a lane only until a time it is already scored at: not counted)."""
    counts = dict.fromkeys(REASONS, 0)
    for keys in parts:
        parked = redis.hgetall(keys.lane_gate)
        pipe = redis.pipeline(transaction=False)
        for lane in parked:
            pipe.zcard(keys.lane(lane))
        sizes = pipe.execute() if parked else []
        for gate, size in zip(parked.values(), sizes, strict=True):
            counts[GATE_REASONS.get(gate[:1], "paused")] += int(size)
        counts["group_concurrency"] += parked_in_place(redis, keys)
        counts["series_paused"] += int(redis.hlen(keys.paused_series))
    return counts


def parked_in_place(redis: Any, keys: Keys) -> int:
    """The tasks of the lanes parked in place in their open sets (a group's limit full)."""
    sets = [keys.lanes] + [keys.plane(int(p)) for p in redis.zrange(keys.prios, 0, -1)]
    lanes = [lane for key in sets for lane in redis.zrangebyscore(key, PARKED, "+inf")]
    pipe = redis.pipeline(transaction=False)
    for lane in lanes:
        pipe.zcard(keys.lane(lane))
    return sum(int(n) for n in pipe.execute()) if lanes else 0
