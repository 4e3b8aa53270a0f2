"""The tasks page's reads: filtered pages read from Redis a batch at a time.

A page walks the status sets (running, then the pending sets, then the ended set) in
the order ``perseid-jobs tasks`` lists them, merging each set over every partition by
score, and keeps only the tasks the filter matches. Nothing reads a whole set: a page
reads batches until it has its tasks or has looked through ``SCAN_CAP`` of them, and
its cursor (a set and an offset per partition) lets the next page go on from there.
"""

from __future__ import annotations

import base64
import heapq
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from ..api.client import Client
from ..core.errors import InvalidArgs
from ..core.models import Task, TaskStatus, task_from_hash

BATCH = 200
"""Ids read from each partition per round trip."""

SCAN_CAP = 20_000
"""Tasks one page looks through at most; past it the page ends with a cursor to go on."""

_PENDING = [("due", False), ("held", False), ("blocked", False)]
SOURCES: dict[str, list[tuple[str, bool]]] = {
    "any": [("running", False), *_PENDING, ("finished", True)],
    "running": [("running", False)],
    "pending": _PENDING,
    "ended": [("finished", True)],
    **{s.value: [("finished", True)] for s in TaskStatus if s.terminal},
}
"""Per status filter, the sorted sets to walk (name, newest first)."""
TAG_SOURCE = "tag:"  # a source naming a tag's index (``{ns}:tag:<key>=<value>``)


@dataclass
class TaskFilter:
    """What the tasks page keeps; empty fields keep everything."""

    status: str = "any"
    job: str = ""
    series: str = ""
    group: str = ""
    tag: str = ""
    text: str = ""  # a substring of the args' JSON
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, task: Task, raw_args: str) -> bool:
        """Whether the task passes every field of the filter."""
        if self.status == "ended":
            if not task.status.terminal:
                return False
        elif self.status != "any" and task.status.value != self.status:
            return False
        checks = ((self.job, task.job), (self.series, task.series), (self.group, task.group))
        if any(want and want != have for want, have in checks):
            return False
        if self.tag and self.tag not in _tags(task):
            return False
        if self.text and self.text not in raw_args:
            return False
        when = task.ended_at or task.started_at or task.start_at
        if self.since and (when is None or when < self.since):
            return False
        return not (self.until and (when is None or when > self.until))

    def query(self) -> dict[str, str]:
        """The filter as the tasks page's query string fields."""
        out = {
            "status": self.status,
            "job": self.job,
            "series": self.series,
            "group": self.group,
            "tag": self.tag,
            "q": self.text,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
        }
        return {k: v for k, v in out.items() if v and not (k == "status" and v == "any")}


def _tags(task: Task) -> list[str]:
    """A task's tags as ``key=value`` and as ``key`` (the filter takes either)."""
    tags: Any = getattr(task, "tags", None) or {}
    if isinstance(tags, dict):
        return [*(f"{k}={v}" for k, v in tags.items()), *tags]
    return [str(t) for t in tags]


@dataclass
class Cursor:
    """Where a page stopped: the index of the set in its sources, and per partition an offset."""

    source: int = 0
    offsets: list[int] = field(default_factory=list)

    def encode(self) -> str:
        return base64.urlsafe_b64encode(orjson.dumps([self.source, self.offsets])).decode()

    @classmethod
    def decode(cls, text: str) -> Cursor:
        if not text:
            return cls()
        try:
            source, offsets = orjson.loads(base64.urlsafe_b64decode(text.encode()))
            if not isinstance(source, int) or not all(isinstance(o, int) for o in offsets):
                raise ValueError(text)
        except (ValueError, TypeError, orjson.JSONDecodeError):
            raise InvalidArgs(
                f"cursor {text!r} is not one this dashboard gave: start over"
            ) from None
        return cls(source, list(offsets))


@dataclass
class Page:
    """One page of tasks, the cursor of the next (None: the last), and how many were read."""

    tasks: list[Task]
    next_cursor: str | None
    scanned: int


def task_page(client: Client, flt: TaskFilter, cursor: str = "", limit: int = 50) -> Page:
    """Up to ``limit`` tasks that match ``flt``, from ``cursor`` on."""
    sources = SOURCES.get(flt.status)
    if sources is None:
        raise InvalidArgs(f"status {flt.status!r}: use one of {', '.join(SOURCES)}")
    if "=" in flt.tag:  # the tag's own index holds fewer ids than any status set
        sources = [(TAG_SOURCE + flt.tag, True)]
    parts = client.partitions()
    at = Cursor.decode(cursor)
    found: list[Task] = []
    scanned = 0
    seen: set[str] = set()
    while at.source < len(sources) and len(found) < limit and scanned < SCAN_CAP:
        name, newest_first = sources[at.source]
        if len(at.offsets) != len(parts):
            at.offsets = [0] * len(parts)
        ids = _merged_batch(client, name, newest_first, at.offsets)
        if not ids:
            at = Cursor(at.source + 1, [])
            continue
        for index, (task, raw_args) in zip(ids, _load(client, [i for i, _ in ids]), strict=True):
            at.offsets[index[1]] += 1
            scanned += 1
            if task is not None and task.id not in seen and flt.matches(task, raw_args):
                seen.add(task.id)
                found.append(task)
                if len(found) >= limit:
                    break
    more = at.source < len(sources)
    return Page(found, at.encode() if more else None, scanned)


def _merged_batch(
    client: Client, name: str, newest_first: bool, offsets: list[int]
) -> list[tuple[str, int]]:
    """The next ``BATCH`` ids of one set over every partition, by score: (id, partition)."""
    parts = client.partitions()
    pipe = client.redis.pipeline(transaction=False)
    for keys, start in zip(parts, offsets, strict=True):
        key = keys.tagged(name[len(TAG_SOURCE) :]) if name.startswith(TAG_SOURCE) else None
        key = key or getattr(keys, name)
        if newest_first:
            pipe.zrevrange(key, start, start + BATCH - 1, withscores=True)
        else:
            pipe.zrange(key, start, start + BATCH - 1, withscores=True)
    sign = -1.0 if newest_first else 1.0
    tagged = [
        [(sign * score, member, n) for member, score in reply]
        for n, reply in enumerate(pipe.execute())
    ]
    merged = heapq.merge(*tagged)
    return [(member, n) for _, member, n in list(merged)[:BATCH]]


def _load(client: Client, ids: list[str]) -> list[tuple[Task | None, str]]:
    """Each id's task (None: gone since) and its args as stored, in one pipeline."""
    pipe = client.redis.pipeline(transaction=False)
    for task_id in ids:
        keys = client.keys_of(task_id)
        assert keys is not None  # ids come from the namespace's own sets
        pipe.hgetall(keys.task(task_id))
    out: list[tuple[Task | None, str]] = []
    for task_id, h in zip(ids, pipe.execute(), strict=True):
        out.append((task_from_hash(task_id, h), h.get("args", "")) if h else (None, ""))
    return out


def find_by_id(client: Client, text: str) -> Task | None:
    """The task whose id is ``text`` exactly (the tasks page's id search), else None."""
    keys = client.keys_of(text.strip())
    if keys is None:
        return None
    h = client.redis.hgetall(keys.task(text.strip()))
    return task_from_hash(text.strip(), h) if h else None
