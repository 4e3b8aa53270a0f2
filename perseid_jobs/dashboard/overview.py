"""The overview page's reads: counts, plots over the recent events, slots, the oldest due task.

Everything here is bounded whatever the namespace's size: counts are ``ZCARD``s, the
plots read at most ``EVENTS_SCAN`` entries of each partition's events stream (itself
capped, see ``lua/includes/emit.lua``), and the lag plot looks up at most ``LAG_SAMPLE``
tasks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..api.client import Client
from ..core.models import Instance, Task, task_from_hash

EVENTS_SCAN = 10_000
LAG_SAMPLE = 300
BUCKET_MS = 60_000  # one point per minute
WINDOW_MS = 60 * 60_000  # the plots cover the last hour

_ENDED = ("completed", "failed", "cancelled")


@dataclass
class Overview:
    """What the overview page shows."""

    counts: dict[str, int]
    ended_last_hour: dict[str, int]
    plot: dict[str, list[float | None]]  # x (epoch s), throughput, failure %, lag s
    pools: list[dict[str, Any]]
    oldest_due: Task | None
    instances: list[Instance] = field(default_factory=list)


def counts(client: Client) -> dict[str, int]:
    """Tasks per state over every partition: pending (due, held, blocked), running, ended."""
    parts = client.partitions()
    pipe = client.redis.pipeline(transaction=False)
    names = ("due", "held", "blocked", "running", "finished")
    for keys in parts:
        for name in names:
            pipe.zcard(getattr(keys, name))
    replies = pipe.execute()
    total = Counter[str]()
    for n, reply in enumerate(replies):
        total[names[n % len(names)]] += int(reply)
    return {
        "pending": total["due"] + total["held"] + total["blocked"],
        "due": total["due"],
        "held": total["held"],
        "blocked": total["blocked"],
        "running": total["running"],
        "ended": total["finished"],
    }


def read_overview(client: Client) -> Overview:
    """The whole overview, in a few pipelines."""
    now = client.now_ms()
    events = recent_events(client, now - WINDOW_MS)
    live = client.workers()
    return Overview(
        counts=counts(client),
        ended_last_hour=dict(Counter(e["event"] for e in events if e["event"] in _ENDED)),
        plot=_plot(client, events, now),
        pools=pools(live),
        oldest_due=oldest_due(client),
        instances=live,
    )


def recent_events(client: Client, since_ms: int) -> list[dict[str, Any]]:
    """Every partition's events since ``since_ms`` (at most EVENTS_SCAN each), oldest first."""
    pipe = client.redis.pipeline(transaction=False)
    for keys in client.partitions():
        pipe.xrevrange(keys.events, "+", str(since_ms), count=EVENTS_SCAN)
    out = []
    for reply in pipe.execute():
        for entry_id, fields in reply:
            out.append({**fields, "at_ms": int(entry_id.split("-")[0])})
    return sorted(out, key=lambda e: int(e["at_ms"]))


def _plot(client: Client, events: list[dict[str, Any]], now: int) -> dict[str, list[float | None]]:
    start = (now - WINDOW_MS) // BUCKET_MS * BUCKET_MS
    n = (now - start) // BUCKET_MS + 1
    ended = [0] * n
    failed = [0] * n
    for e in events:
        b = (int(e["at_ms"]) - start) // BUCKET_MS
        if 0 <= b < n and e["event"] in _ENDED:
            ended[b] += 1
            failed[b] += e["event"] == "failed"
    lag_sum = [0.0] * n
    lag_n = [0] * n
    for at_ms, lag in _lags(client, [e for e in events if e["event"] == "running"]):
        b = (at_ms - start) // BUCKET_MS
        if 0 <= b < n:
            lag_sum[b] += lag
            lag_n[b] += 1
    return {
        "x": [(start + i * BUCKET_MS) / 1000 for i in range(n)],
        "throughput": [float(c) for c in ended],
        "failure_pct": [100.0 * f / c if c else None for f, c in zip(failed, ended, strict=True)],
        "lag_s": [s / c if c else None for s, c in zip(lag_sum, lag_n, strict=True)],
    }


def _lags(client: Client, starts: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """Due -> start lag of the newest LAG_SAMPLE starts: (when it started, seconds late)."""
    sample = starts[-LAG_SAMPLE:]
    pipe = client.redis.pipeline(transaction=False)
    for e in sample:
        keys = client.keys_of(e["id"])
        assert keys is not None
        pipe.hmget(keys.task(e["id"]), "start_at", "started_at")
    out = []
    for e, (start_at, started_at) in zip(sample, pipe.execute() if sample else [], strict=True):
        if start_at and started_at and int(start_at) >= 0:
            out.append((int(e["at_ms"]), max(0, int(started_at) - int(start_at)) / 1000))
    return out


def pools(live: list[Instance]) -> list[dict[str, Any]]:
    """Slots used and total per pool: the instances of one host (and all of them)."""
    by_host: dict[str, list[Instance]] = {}
    for inst in live:
        by_host.setdefault(inst.host or "-", []).append(inst)
    out = [
        {
            "pool": host,
            "instances": len(group),
            "used": sum(i.slots_used for i in group),
            "total": sum(i.slots_total for i in group),
        }
        for host, group in sorted(by_host.items())
    ]
    return out


def oldest_due(client: Client) -> Task | None:
    """The pending task due the longest (lowest start time in ``due``, if it is past, over
    every partition)."""
    pipe = client.redis.pipeline(transaction=False)
    for keys in client.partitions():
        pipe.zrange(keys.due, 0, 0, withscores=True)
    now = client.now_ms()
    heads = [r[0] for r in pipe.execute() if r and r[0][1] <= now]  # due by now, not later
    if not heads:
        return None
    task_id = min(heads, key=lambda pair: pair[1])[0]
    where = client.keys_of(task_id)
    h = client.redis.hgetall(where.task(task_id)) if where is not None else {}
    return task_from_hash(task_id, h) if h else None
