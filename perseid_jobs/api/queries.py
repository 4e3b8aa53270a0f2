"""The client's read side: tasks, series, instances, the catalog, and waiting for an end.

:class:`QueryOps` holds each read once, as an operation (``calls.py``); :class:`Queries`,
a mixin of :class:`perseid_jobs.api.client.Client`, drives them on a sync Redis, and
:class:`perseid_jobs.api.aio.AsyncClient` on an asyncio one. It only reads (the write
side, scheduling and cancelling, is in ``client.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Literal

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
from .calls import Batch, Op, cmd
from .partitioned import Partitioned, SyncPartitioned
from .tags import filter_tags, tagged_ids

definition_decoder = msgspec.json.Decoder(JobDefinition)

_TERMINAL = {s.value for s in TaskStatus if s.terminal}

SERIES_RUNS_SCAN = 2000
"""How many of the newest ended tasks ``series_runs`` looks through (runs are not indexed
by series; older runs than these are not listed)."""


class QueryOps(Partitioned):
    """Reads of one deployment over all its partitions, as operations (see ``calls.py``)."""

    def _now_ms(self) -> Op[int]:
        """Redis server time in epoch milliseconds: the one clock."""
        sec, usec = yield cmd("time")
        return int(sec) * 1000 + int(usec) // 1000

    # -- tasks -----------------------------------------------------------------------------
    def _get(self, task_id: str) -> Op[Task]:
        """The task with this id; raises TaskNotFound."""
        keys = yield from self._keys_of(task_id)
        h = (yield cmd("hgetall", keys.task(task_id))) if keys is not None else None
        if not h:
            raise TaskNotFound(task_id)
        return task_from_hash(task_id, h)

    def _kind_of(self, some_id: str) -> Op[Literal["task", "series"]]:
        """Whether ``some_id`` names a task or a series (ids never name both); raises UnknownId."""
        keys = yield from self._keys_of(some_id)
        if keys is None:
            raise UnknownId(some_id)
        is_task, is_series = yield Batch(
            [cmd("exists", keys.task(some_id)), cmd("exists", keys.series(some_id))]
        )
        if is_task:
            return "task"
        if is_series:
            return "series"
        raise UnknownId(some_id)

    def _tasks_by_id(self, ids: list[str]) -> Op[list[Task]]:
        parts = yield from self._partitions()
        found = [(i, k) for i in ids if (k := parts.of_id(i)) is not None]
        replies = yield Batch([cmd("hgetall", keys.task(task_id)) for task_id, keys in found])
        return [task_from_hash(i, h) for (i, _), h in zip(found, replies, strict=True) if h]

    def _tasks(
        self,
        status: TaskStatus | str | None = None,
        job: str | None = None,
        limit: int = 100,
        waiting: str | None = None,
        tag: str | Iterable[str] | None = None,
        args_contains: str | None = None,
    ) -> Op[list[Task]]:
        """Tasks by status (pending/running: oldest first; ended: newest first); the filters
        of :meth:`Queries.tasks`."""
        st = TaskStatus(status) if status is not None else None
        if waiting is not None:
            st = TaskStatus.PENDING
        tags = filter_tags(tag)
        filtered = job is not None or waiting is not None or args_contains is not None
        scan = scan_bound(limit) if filtered or tags else limit
        if tags:
            ids = yield from tagged_ids((yield from self._partitions()), tags[0], scan)
        else:
            ids = yield from self._ids_by_state(st, scan)
        out = _matching((yield from self._tasks_by_id(ids)), st, job, tags, args_contains)
        if waiting is not None:
            live = yield from self._workers()
            for t in out:
                # FlowOps (flow.py), the clients' other mixin, says why a task waits.
                t.waiting = yield from self._waiting(t, live)  # type: ignore[attr-defined]
            out = [t for t in out if waiting in (t.waiting or "")]
        return out[:limit]

    def _ids_by_state(self, st: TaskStatus | None, scan: int) -> Op[list[str]]:
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
        ranges = yield from self._merged_ranges(sets, scan)
        found = dict(zip((name for name, _ in sets), ranges, strict=True))
        shown = ("running", "due", "held", "blocked", "finished")  # running, pending, ended
        return list(dict.fromkeys(i for name in shown for i in found.get(name, [])))

    def _wait(self, task_id: str, timeout: float | None = 30.0) -> Op[Task]:
        """Until the task reaches a terminal state: it (WaitTimeout past ``timeout`` s)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        keys = yield from self._keys_of(task_id)
        if keys is None:
            raise TaskNotFound(task_id)
        # Follow from the stream's end as it is before the first look at the task, so an
        # ending between that look and the first read is not missed.
        newest = yield cmd("xrevrange", keys.events, count=1)
        last = newest[0][0] if newest else "0-0"
        while True:
            task = yield from self._get(task_id)
            if task.status.terminal:
                return task
            remaining = 1.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(task, timeout or 0.0)
            block_ms = max(1, int(min(remaining, 1.0) * 1000))
            for _, entries in (yield cmd("xread", {keys.events: last}, block=block_ms)) or []:
                for entry_id, fields in entries:
                    last = entry_id
                    if fields.get("id") == task_id and fields.get("event") in _TERMINAL:
                        return (yield from self._get(task_id))

    # -- series ----------------------------------------------------------------------------
    def _series(self, limit: int = 100) -> Op[list[Series]]:
        """Recurring schedules, newest first."""
        ids = yield from self._merged_range("series_index", limit, newest_first=True)
        parts = yield from self._partitions()
        found = [(i, k) for i in ids if (k := parts.of_id(i)) is not None]
        replies = yield Batch([cmd("hgetall", keys.series(sid)) for sid, keys in found])
        return [series_from_hash(h) for h in replies if h]

    def _get_series(self, series_id: str) -> Op[Series]:
        """The series with this id; raises SeriesNotFound."""
        keys = yield from self._keys_of(series_id)
        h = (yield cmd("hgetall", keys.series(series_id))) if keys is not None else None
        if not h:
            raise SeriesNotFound(series_id)
        return series_from_hash(h)

    def _series_runs(self, series_id: str, limit: int = 5) -> Op[list[Task]]:
        """The series' last ended runs, newest first (among the newest ended tasks)."""
        keys = yield from self._keys_of(series_id)
        if keys is None:
            return []
        # A series' runs all live in the series' partition.
        ids = yield cmd("zrevrange", keys.finished, 0, SERIES_RUNS_SCAN - 1)
        of_series = yield Batch([cmd("hget", keys.task(task_id), "series") for task_id in ids])
        mine = [i for i, s in zip(ids, of_series, strict=True) if s == series_id]
        return (yield from self._tasks_by_id(mine[:limit]))

    # -- instances and the catalog ---------------------------------------------------------
    def _workers(self) -> Op[list[Instance]]:
        """Live instances (lease not lapsed), by id, summed over the partitions."""
        now = yield from self._now_ms()
        parts = yield from self._partitions()
        entries = yield cmd("zrangebyscore", parts.keys[0].instances, now, "+inf", withscores=True)
        cmds = []
        for inst, _ in entries:
            for keys in parts:
                cmds.append(cmd("hgetall", keys.instance(inst)))
                cmds.append(cmd("scard", keys.instance_tasks(inst)))
        replies = yield Batch(cmds)
        width = 2 * len(parts)
        out = []
        for n, (inst, expiry) in enumerate(entries):
            mine = replies[n * width : (n + 1) * width]
            hashes, counts = mine[0::2], mine[1::2]
            if not hashes[0]:
                continue
            out.append(_instance(inst, int(expiry), hashes, counts))
        return sorted(out, key=lambda i: i.id)

    def _jobs(self) -> Op[list[JobInfo]]:
        """The job catalog and the live instances that can run each job."""
        first = yield from self._first_keys()
        catalog = yield cmd("hgetall", first.jobs)
        live = yield from self._workers()
        jobs_of = yield Batch([cmd("smembers", first.instance_jobs(inst.id)) for inst in live])
        offered = dict(zip((i.id for i in live), jobs_of, strict=True))
        running = yield from self._limited_running(sorted(catalog))
        paused = yield cmd("hgetall", first.paused)  # a pause is in every partition
        return [
            _job_info(name, definition_decoder.decode(catalog[name]), live, offered, running,
                      paused)
            for name in sorted(catalog)
        ]  # fmt: skip

    def _limited_running(self, names: list[str]) -> Op[dict[str, int]]:
        """Per job, its laned tasks running now, over all partitions (see docs/flow.md)."""
        counts: dict[str, int] = {}
        if not names:
            return counts
        for keys in (yield from self._partitions()):
            for name, n in zip(names, (yield cmd("hmget", keys.flow_running, names)), strict=True):
                counts[name] = counts.get(name, 0) + int(n or 0)
        return counts


class Queries(QueryOps, SyncPartitioned):
    """The read side of :class:`~perseid_jobs.api.client.Client`, on its sync ``redis``."""

    def now_ms(self) -> int:
        """Redis server time in epoch milliseconds: the one clock."""
        return self._run(self._now_ms())

    def get(self, task_id: str) -> Task:
        """The task with this id; raises TaskNotFound."""
        return self._run(self._get(task_id))

    def kind_of(self, some_id: str) -> Literal["task", "series"]:
        """Whether ``some_id`` names a task or a series (ids never name both); raises UnknownId."""
        return self._run(self._kind_of(some_id))

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
        return self._run(self._tasks(status, job, limit, waiting, tag, args_contains))

    def wait(self, task_id: str, timeout: float | None = 30.0) -> Task:
        """Block until the task reaches a terminal state; return it.

        Raises :class:`WaitTimeout` (a ``TimeoutError``) if it has not ended
        within ``timeout`` seconds (None: no limit). Follows the events stream,
        so it wakes on the state change itself.
        """
        return self._run(self._wait(task_id, timeout))

    def series(self, limit: int = 100) -> list[Series]:
        """Recurring schedules, newest first."""
        return self._run(self._series(limit))

    def get_series(self, series_id: str) -> Series:
        """The series with this id; raises SeriesNotFound."""
        return self._run(self._get_series(series_id))

    def series_runs(self, series_id: str, limit: int = 5) -> list[Task]:
        """The series' last ended runs, newest first (among the newest ended tasks)."""
        return self._run(self._series_runs(series_id, limit))

    def workers(self) -> list[Instance]:
        """Live instances (lease not lapsed), by id.

        An instance is registered in every partition; it is listed from the first, and
        its slots in use and running tasks are summed over all of them.
        """
        return self._run(self._workers())

    def jobs(self) -> list[JobInfo]:
        """The job catalog and the live instances that can run each job.

        An instance counts only if it has the job and offers at least the job's
        slots: a smaller one never claims it.
        """
        return self._run(self._jobs())


def _job_info(
    name: str,
    d: JobDefinition,
    live: list[Instance],
    offered: dict[str, set[str]],
    running: dict[str, int],
    paused: dict[str, str],
) -> JobInfo:
    return JobInfo(
        name=name,
        slots=d.slots,
        max_duration=d.max_duration_ms / 1000,
        instances=[i.id for i in live if name in offered[i.id] and i.slots_total >= d.slots],
        max_tasks_per_process=d.max_tasks_per_process,
        max_memory_per_process=d.max_memory_bytes or None,
        concurrency=d.concurrency or None,
        group_concurrency=d.group_concurrency or None,
        rate=d.rate or None,
        group_rate=d.group_rate or None,
        running=running.get(name, 0),
        paused=f"job\t{name}" in paused,
    )


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
