"""The client's read side: tasks, series, instances, the catalog, and waiting for an end.

:class:`Queries` is a mixin of :class:`perseid_jobs.api.client.Client`; it only
reads (the write side, scheduling and cancelling, is in ``client.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Literal

import msgspec
import orjson

from ..core.errors import SeriesNotFound, TaskNotFound, UnknownId, WaitTimeout
from ..core.models import (
    Instance,
    JobDefinition,
    JobInfo,
    Series,
    Task,
    TaskStatus,
    ms_to_dt,
    task_from_hash,
)
from .partitioned import Partitioned
from .tags import filter_tags, tagged_ids

definition_decoder = msgspec.json.Decoder(JobDefinition)

_TERMINAL = {s.value for s in TaskStatus if s.terminal}

SERIES_RUNS_SCAN = 2000
"""How many of the newest ended tasks ``series_runs`` looks through (runs are not indexed
by series; older runs than these are not listed)."""


class Queries(Partitioned):
    """Reads of one deployment over all its partitions; needs ``redis`` (decoded replies)."""

    redis: Any

    def now_ms(self) -> int:
        """Redis server time in epoch milliseconds: the one clock."""
        sec, usec = self.redis.time()
        return int(sec) * 1000 + int(usec) // 1000

    # -- tasks -----------------------------------------------------------------------------
    def get(self, task_id: str) -> Task:
        """The task with this id; raises TaskNotFound."""
        keys = self.keys_of(task_id)
        h = self.redis.hgetall(keys.task(task_id)) if keys is not None else None
        if not h:
            raise TaskNotFound(task_id)
        return task_from_hash(task_id, h)

    def kind_of(self, some_id: str) -> Literal["task", "series"]:
        """Whether ``some_id`` names a task or a series (ids never name both); raises UnknownId."""
        keys = self.keys_of(some_id)
        if keys is None:
            raise UnknownId(some_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.exists(keys.task(some_id))
        pipe.exists(keys.series(some_id))
        is_task, is_series = pipe.execute()
        if is_task:
            return "task"
        if is_series:
            return "series"
        raise UnknownId(some_id)

    def _tasks_by_id(self, ids: list[str]) -> list[Task]:
        pipe = self.redis.pipeline(transaction=False)
        found = [(i, k) for i in ids if (k := self.keys_of(i)) is not None]
        for task_id, keys in found:
            pipe.hgetall(keys.task(task_id))
        replies = pipe.execute() if found else []
        return [task_from_hash(i, h) for (i, _), h in zip(found, replies, strict=True) if h]

    def tasks(
        self,
        status: TaskStatus | str | None = None,
        job: str | None = None,
        limit: int = 100,
        waiting: str | None = None,
        tag: str | Iterable[str] | None = None,
        args_contains: str | None = None,
    ) -> list[Task]:
        """Tasks by status (pending/running: oldest first; ended: newest first).

        ``waiting``: only pending tasks whose reason to wait (see ``Client.waiting``)
        contains this text, e.g. ``"paused"`` or ``"concurrency"``; each is filled in.
        ``tag``: ``"key=value"`` (or several, all required): tasks with the tag, newest
        first, from its index. ``args_contains``: tasks whose args (JSON text) contain the
        text. A filtered listing looks at no more than :func:`scan_bound` tasks per state
        (per tag, with ``tag``) and partition: a bounded scan (docs/controls.md).
        """
        st = TaskStatus(status) if status is not None else None
        if waiting is not None:
            st = TaskStatus.PENDING
        tags = filter_tags(tag)
        filtered = job is not None or waiting is not None or args_contains is not None
        scan = scan_bound(limit) if filtered or tags else limit
        if tags:
            ids = tagged_ids(self.redis, self.partitions(), tags[0], scan)
        else:
            ids = self._ids_by_state(st, scan)
        out = _matching(self._tasks_by_id(ids), st, job, tags, args_contains)
        if waiting is not None:
            live = self.workers()
            for t in out:
                t.waiting = self.waiting(t, live)  # type: ignore[attr-defined]
            out = [t for t in out if waiting in (t.waiting or "")]
        return out[:limit]

    def _ids_by_state(self, st: TaskStatus | None, scan: int) -> list[str]:
        """The first ``scan`` ids of each state's index (all states for None), per partition."""
        # Read in the order tasks move through the sets (blocked -> held -> due -> running
        # -> finished), so one that moves meanwhile is seen twice rather than not at all.
        sets: list[tuple[str, bool]] = []
        if st in (None, TaskStatus.PENDING):
            sets += [("blocked", False), ("held", False), ("due", False)]
        if st in (None, TaskStatus.RUNNING):
            sets.append(("running", False))
        if st is None or st.terminal:
            sets.append(("finished", True))
        found = dict(zip((name for name, _ in sets), self.merged_ranges(sets, scan), strict=True))
        shown = ("running", "due", "held", "blocked", "finished")  # running, pending, ended
        return list(dict.fromkeys(i for name in shown for i in found.get(name, [])))

    def wait(self, task_id: str, timeout: float | None = 30.0) -> Task:
        """Block until the task reaches a terminal state; return it.

        Raises :class:`WaitTimeout` (a ``TimeoutError``) if it has not ended
        within ``timeout`` seconds (None: no limit). Follows the events stream,
        so it wakes on the state change itself.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        keys = self.keys_of(task_id)
        if keys is None:
            raise TaskNotFound(task_id)
        # Follow from the stream's end as it is before the first look at the task, so an
        # ending between that look and the first read is not missed.
        newest = self.redis.xrevrange(keys.events, count=1)
        last = newest[0][0] if newest else "0-0"
        while True:
            task = self.get(task_id)
            if task.status.terminal:
                return task
            remaining = 1.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(task, timeout or 0.0)
            block_ms = max(1, int(min(remaining, 1.0) * 1000))
            for _, entries in self.redis.xread({keys.events: last}, block=block_ms) or []:
                for entry_id, fields in entries:
                    last = entry_id
                    if fields.get("id") == task_id and fields.get("event") in _TERMINAL:
                        return self.get(task_id)

    # -- series ----------------------------------------------------------------------------
    def series(self, limit: int = 100) -> list[Series]:
        """Recurring schedules, newest first."""
        ids = self.merged_range("series_index", limit, newest_first=True)
        found = [(i, k) for i in ids if (k := self.keys_of(i)) is not None]
        pipe = self.redis.pipeline(transaction=False)
        for sid, keys in found:
            pipe.hgetall(keys.series(sid))
        return [series_from_hash(h) for h in (pipe.execute() if found else []) if h]

    def get_series(self, series_id: str) -> Series:
        """The series with this id; raises SeriesNotFound."""
        keys = self.keys_of(series_id)
        h = self.redis.hgetall(keys.series(series_id)) if keys is not None else None
        if not h:
            raise SeriesNotFound(series_id)
        return series_from_hash(h)

    def series_runs(self, series_id: str, limit: int = 5) -> list[Task]:
        """The series' last ended runs, newest first (among the newest ended tasks)."""
        keys = self.keys_of(series_id)
        if keys is None:
            return []
        # A series' runs all live in the series' partition.
        ids = self.redis.zrevrange(keys.finished, 0, SERIES_RUNS_SCAN - 1)
        pipe = self.redis.pipeline(transaction=False)
        for task_id in ids:
            pipe.hget(keys.task(task_id), "series")
        mine = [i for i, s in zip(ids, pipe.execute(), strict=True) if s == series_id]
        return self._tasks_by_id(mine[:limit])

    # -- instances and the catalog ---------------------------------------------------------
    def workers(self) -> list[Instance]:
        """Live instances (lease not lapsed), by id.

        An instance is registered in every partition; it is listed from the first, and
        its slots in use and running tasks are summed over all of them.
        """
        now = self.now_ms()
        parts = self.partitions()
        entries = self.redis.zrangebyscore(parts.keys[0].instances, now, "+inf", withscores=True)
        pipe = self.redis.pipeline(transaction=False)
        for inst, _ in entries:
            for keys in parts:
                pipe.hgetall(keys.instance(inst))
                pipe.scard(keys.instance_tasks(inst))
        replies = pipe.execute() if entries else []
        width = 2 * len(parts)
        out = []
        for n, (inst, expiry) in enumerate(entries):
            mine = replies[n * width : (n + 1) * width]
            hashes, counts = mine[0::2], mine[1::2]
            if not hashes[0]:
                continue
            out.append(_instance(inst, int(expiry), hashes, counts))
        return sorted(out, key=lambda i: i.id)

    def jobs(self) -> list[JobInfo]:
        """The job catalog and the live instances that can run each job.

        An instance counts only if it has the job and offers at least the job's
        slots: a smaller one never claims it.
        """
        catalog = self.redis.hgetall(self.keys.jobs)
        live = self.workers()
        pipe = self.redis.pipeline(transaction=False)
        for inst in live:
            pipe.smembers(self.keys.instance_jobs(inst.id))
        offered = dict(zip((i.id for i in live), pipe.execute(), strict=True))
        running = self._limited_running(sorted(catalog))
        paused = self.redis.hgetall(self.keys.paused)  # a pause is in every partition
        out = []
        for name in sorted(catalog):
            d = definition_decoder.decode(catalog[name])
            out.append(
                JobInfo(
                    name=name,
                    slots=d.slots,
                    max_duration=d.max_duration_ms / 1000,
                    instances=[
                        i.id for i in live if name in offered[i.id] and i.slots_total >= d.slots
                    ],
                    max_tasks_per_process=d.max_tasks_per_process,
                    max_memory_per_process=d.max_memory_bytes or None,
                    concurrency=d.concurrency or None,
                    group_concurrency=d.group_concurrency or None,
                    rate=d.rate or None,
                    group_rate=d.group_rate or None,
                    running=running.get(name, 0),
                    paused=f"job\t{name}" in paused,
                )
            )
        return out

    def _limited_running(self, names: list[str]) -> dict[str, int]:
        """Per job, its laned tasks running now, over all partitions (see docs/flow.md)."""
        counts: dict[str, int] = {}
        if not names:
            return counts
        for keys in self.partitions():
            for name, n in zip(names, self.redis.hmget(keys.flow_running, names), strict=True):
                counts[name] = counts.get(name, 0) + int(n or 0)
        return counts


def scan_bound(limit: int) -> int:
    """How many tasks of each state (or tag) and partition a filtered ``tasks`` looks at."""
    return max(limit * 20, 1000)


def _matching(
    found: list[Task],
    st: TaskStatus | None,
    job: str | None,
    tags: list[str],
    args_contains: str | None,
) -> list[Task]:
    """The tasks that pass every filter given (tags: "key=value" texts)."""
    pairs = [tuple(t.split("=", 1)) for t in tags]
    return [
        t
        for t in found
        if (st is None or t.status == st)
        and (job is None or t.job == job)
        and all(t.tags.get(k) == v for k, v in pairs)
        and (args_contains is None or args_contains in orjson.dumps(t.args).decode())
    ]


def _instance(inst: str, expiry: int, hashes: list[dict[str, str]], counts: list[int]) -> Instance:
    h = hashes[0]
    return Instance(
        id=inst,
        host=h.get("host", ""),
        pid=int(h.get("pid", 0)),
        slots_total=int(h.get("slots_total", 0)),
        slots_used=sum(int(x.get("slots_used", 0)) for x in hashes if x),
        running=sum(int(c) for c in counts),
        lease_expires_at=ms_to_dt(expiry),
        version=h.get("version", ""),
    )


def series_from_hash(h: dict[str, str]) -> Series:
    """Build a :class:`Series` from its Redis hash."""
    spec = orjson.loads(h.get("spec") or "{}")
    every_ms = spec.get("every_ms")
    return Series(
        id=h["id"],
        job=h["job"],
        status=h.get("status", ""),
        every=f"{every_ms / 1000:g}s" if every_ms else None,
        cron=spec.get("cron"),
        tz=spec.get("tz") if spec.get("cron") else None,
        follows=h.get("follows") or None,
        key=h.get("key") or None,
        current=h.get("current") or None,
        next_start=ms_to_dt(h.get("next_start")) if h.get("status") == "active" else None,
        last_run=h.get("last_run") or None,
        last_outcome=h.get("last_outcome") or None,
        last_completed_at=ms_to_dt(h.get("last_completed_at")),
        runs=int(h.get("runs", 0)),
        skipped=int(h.get("skipped", 0)),
        paused=bool(h.get("paused")),
    )
