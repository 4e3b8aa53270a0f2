"""The typed Python client; the command line is a thin layer over it."""

from __future__ import annotations

import time
import uuid
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson
import redis

from .connection import DEFAULT_REDIS_URL, connect
from .errors import (
    ConfigError,
    InvalidArgs,
    InvalidTime,
    JobDefinitionError,
    NotDurable,
    TaskNotFound,
    UnknownJob,
    raise_for_code,
)
from .jobfile import find_job_file, load_job_file, validate_job_name
from .keys import DEFAULT_NAMESPACE, Keys
from .models import (
    Instance,
    JobDefinition,
    JobInfo,
    Series,
    Task,
    TaskStatus,
    ms_to_dt,
    task_from_hash,
)
from .recurrence import RecurrenceError, first_start, make_recurrence
from .scripts import Scripts
from .served import NotServedWarning as NotServedWarning
from .served import warn_if_not_served
from .when import When, parse_when

MAX_ARGS_BYTES = 1024 * 1024

_definition_decoder = msgspec.json.Decoder(JobDefinition)


_TERMINAL = {s.value for s in TaskStatus if s.terminal}


class CapacityWarning(UserWarning):
    """The task needs more slots than any live instance offers; it waits for one."""


class Client:
    """Schedule, inspect and cancel tasks of one deployment (one Redis, one namespace)."""

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        jobs_dir: Path | str | None = None,
    ) -> None:
        # redis-py types replies as unions of sync/async/bytes/str; with
        # decode_responses=True they are str, so reads go through an untyped alias.
        self.redis: Any = redis_client
        self.keys = Keys(namespace)
        self.scripts = Scripts(redis_client, self.keys)
        self.jobs_dir = Path(jobs_dir) if jobs_dir is not None else None

    @classmethod
    def from_url(
        cls,
        url: str = DEFAULT_REDIS_URL,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        jobs_dir: Path | str | None = None,
    ) -> Client:
        """A client for the Redis at ``url``; raises RedisUnavailable if it does not answer."""
        return cls(connect(url), namespace=namespace, jobs_dir=jobs_dir)

    def close(self) -> None:
        """Release the connections."""
        self.redis.close()

    # -- time ------------------------------------------------------------------------------
    def now_ms(self) -> int:
        """Redis server time in epoch milliseconds: the one clock."""
        sec, usec = self.redis.time()
        return int(sec) * 1000 + int(usec) // 1000

    # -- scheduling ------------------------------------------------------------------------
    def job_definition(self, job: str) -> JobDefinition:
        """The job's definition from the catalog, else from the local jobs directory."""
        validate_job_name(job)
        raw = self.redis.hget(self.keys.jobs, job)
        if raw:
            return _definition_decoder.decode(raw)
        path = find_job_file(self.jobs_dir, job) if self.jobs_dir else None
        if path is None:
            where = f" and no file {self.jobs_dir}/{job}.py" if self.jobs_dir else ""
            raise UnknownJob(
                f"unknown job {job!r}: no worker published it{where};"
                " check the name (`perseid-jobs jobs`) or pass --jobs DIR"
            )
        try:
            return load_job_file(path).definition()
        except JobDefinitionError as exc:
            raise UnknownJob(f"job {job!r} cannot be loaded: {exc}") from None

    def schedule(
        self,
        job: str,
        args: dict[str, Any] | None = None,
        *,
        at: datetime | str | None = None,
        every: str | int | None = None,
        cron: str | None = None,
        tz: str | None = None,
        after: str | None = None,
        key: str | None = None,
        catch_up: str = "skip",
        catch_up_window: str | int | None = None,
        request_id: str | None = None,
        durable: bool = False,
        durable_timeout: float = 1.0,
    ) -> Task:
        """Schedule a task (or a recurring series) and return it.

        ``at`` is an aware datetime, an ISO-8601 text with offset, ``+10m``
        (relative to Redis time) or None for now. ``every``/``cron`` make a
        series; ``after`` waits for another task; ``key`` makes it idempotent:
        a key naming a live task or series returns that one (``existed=True``).

        Each call carries a request id (``request_id``, else a new random one),
        so a call repeated after its reply was lost (the connection's own
        retries included) returns the task the first attempt made instead of
        making a second. Pass the same ``request_id`` to retry a call yourself
        within 2 minutes.

        ``durable``: return only once a replica has the task too (``WAIT 1`` on
        the same connection, up to ``durable_timeout`` seconds); raises
        :class:`NotDurable` if none confirmed it (the task is on the primary).
        Not available on Redis Cluster.
        """
        if durable and not 0 < durable_timeout <= 3600:
            raise InvalidTime(
                f"--durable-timeout {durable_timeout:g}: give the seconds to wait for a replica,"
                " more than 0 and at most 3600, e.g. 1"
            )
        encoded = encode_args(args)
        when = parse_when(at)
        if after is not None and (at is not None or every is not None or cron is not None):
            raise InvalidTime(
                "--after cannot be combined with --at, --every or --cron: a task after another"
                " starts when that one completes"
            )
        recurring = every is not None or cron is not None
        spec, origin = "", ""
        if recurring:
            try:
                rec = make_recurrence(
                    every=every,
                    cron=cron,
                    tz=tz,
                    catch_up=catch_up,
                    catch_up_window=catch_up_window,
                )
            except (RecurrenceError, ValueError) as exc:
                raise InvalidTime(str(exc)) from None
            spec = msgspec.json.encode(rec).decode()
            at_ms = when.absolute_ms(self.now_ms) if (cron or when.delay_ms) else when.at_ms
            if at_ms is not None:
                origin = str(at_ms)
                when = When(at_ms=first_start(rec, at_ms))
        elif tz is not None or catch_up != "skip" or catch_up_window is not None:
            raise InvalidTime("--tz and --catch-up apply to --every/--cron series only")
        definition = self.job_definition(job)
        self._warn_capacity(job, definition.slots)
        warn_if_not_served(self, job)
        argv = (
            job,
            encoded,
            definition.slots,
            definition.max_duration_ms,
            "" if when.at_ms is None else when.at_ms,
            when.delay_ms,
            key or "",
            after or "",
            spec,
            origin,
            definition.retries,
            definition.backoff_ms,
            request_id or uuid.uuid4().hex,
            "1",  # the task's hash in the reply: no second round trip to read it back
        )
        if durable:
            reply, acked = self._schedule_durably(argv, durable_timeout)
        else:
            reply, acked = self.scripts.call("schedule", *argv), None
        raise_for_code(
            reply[0], task_id=after or "", detail=str(reply[1]) if len(reply) > 1 else ""
        )
        if acked is not None and acked < 1:
            raise NotDurable(str(reply[1]), durable_timeout)
        fields = reply[5]
        if not fields:  # a retried request whose task has since ended and been trimmed
            raise TaskNotFound(reply[1])
        task = task_from_hash(reply[1], dict(zip(fields[::2], fields[1::2], strict=True)))
        task.existed = bool(reply[2])
        return task

    def _schedule_durably(self, argv: tuple[Any, ...], timeout: float) -> tuple[Any, int]:
        """The schedule script, then ``WAIT 1`` on the same connection: (reply, replicas)."""
        if isinstance(self.redis, redis.RedisCluster):
            raise ConfigError(
                "--durable is not available on Redis Cluster (WAIT must follow the write on"
                " its connection); schedule without --durable"
            )
        pipe = self.redis.pipeline(transaction=False)
        self.scripts.call("schedule", *argv, client=pipe)
        pipe.execute_command("WAIT", 1, max(1, int(timeout * 1000)))
        reply, acked = pipe.execute()
        return reply, int(acked)

    def _warn_capacity(self, job: str, slots: int) -> None:
        if slots <= 1:
            return  # every instance offers at least one slot: no need to list them
        # With no live instance at all (workers not started yet) there is nothing to compare.
        biggest = max((i.slots_total for i in self.workers()), default=0)
        if biggest and slots > biggest:
            warnings.warn(
                f"job {job!r} needs {slots} slots and the largest live instance offers {biggest}:"
                " the task waits for an instance"
                f" started with --slots {slots} or more",
                CapacityWarning,
                stacklevel=3,
            )

    # -- reading ---------------------------------------------------------------------------
    def get(self, task_id: str) -> Task:
        """The task with this id; raises TaskNotFound."""
        h = self.redis.hgetall(self.keys.task(task_id))
        if not h:
            raise TaskNotFound(task_id)
        return task_from_hash(task_id, h)

    def _tasks_by_id(self, ids: list[str]) -> list[Task]:
        pipe = self.redis.pipeline(transaction=False)
        for task_id in ids:
            pipe.hgetall(self.keys.task(task_id))
        return [task_from_hash(i, h) for i, h in zip(ids, pipe.execute(), strict=True) if h]

    def tasks(
        self, status: TaskStatus | str | None = None, job: str | None = None, limit: int = 100
    ) -> list[Task]:
        """Tasks by status (pending/running: oldest first; ended: newest first)."""
        st = TaskStatus(status) if status is not None else None
        scan = limit if job is None else max(limit * 20, 1000)
        ids: list[str] = []
        if st in (None, TaskStatus.RUNNING):
            ids += self.redis.zrange(self.keys.running, 0, scan - 1)
        if st in (None, TaskStatus.PENDING):
            ids += self.redis.zrange(self.keys.due, 0, scan - 1)
            ids += self.redis.zrange(self.keys.blocked, 0, scan - 1)
        if st is None or st.terminal:
            ids += self.redis.zrevrange(self.keys.finished, 0, scan - 1)
        out = [
            t
            for t in self._tasks_by_id(ids)
            if (st is None or t.status == st) and (job is None or t.job == job)
        ]
        return out[:limit]

    def wait(self, task_id: str, timeout: float = 30.0) -> Task:
        """Block until the task reaches a terminal state (or ``timeout``); return it.

        Follows the events stream, so it wakes on the state change itself.
        """
        deadline = time.monotonic() + timeout
        # Follow from the stream's end as it is before the first look at the task, so an
        # ending between that look and the first read is not missed.
        newest = self.redis.xrevrange(self.keys.events, count=1)
        last = newest[0][0] if newest else "0-0"
        while True:
            task = self.get(task_id)
            remaining = deadline - time.monotonic()
            if task.status.terminal or remaining <= 0:
                return task
            block_ms = max(1, int(min(remaining, 1.0) * 1000))
            for _, entries in self.redis.xread({self.keys.events: last}, block=block_ms) or []:
                for entry_id, fields in entries:
                    last = entry_id
                    if fields.get("id") == task_id and fields.get("event") in _TERMINAL:
                        return self.get(task_id)

    def cancel(self, task_id: str, *, series: bool = False) -> Task:
        """Cancel a task: pending ends at once, running is stopped by its instance.

        Cancelling a series' pending run ends the series; ``series=True`` ends
        the series whichever run is named.
        """
        reply = self.scripts.call("cancel", task_id, "1" if series else "0", "cancelled by user")
        raise_for_code(reply[0], task_id=task_id, detail=str(reply[1]) if len(reply) > 1 else "")
        return self.get(task_id)

    def workers(self) -> list[Instance]:
        """Live instances (lease not lapsed), by id."""
        now = self.now_ms()
        entries = self.redis.zrangebyscore(self.keys.instances, now, "+inf", withscores=True)
        pipe = self.redis.pipeline(transaction=False)
        for inst, _ in entries:
            pipe.hgetall(self.keys.instance(inst))
            pipe.scard(self.keys.instance_tasks(inst))
        replies = pipe.execute()
        out = []
        for (inst, expiry), h, running in zip(entries, replies[0::2], replies[1::2], strict=True):
            if not h:
                continue
            out.append(
                Instance(
                    id=inst,
                    host=h.get("host", ""),
                    pid=int(h.get("pid", 0)),
                    slots_total=int(h.get("slots_total", 0)),
                    slots_used=int(h.get("slots_used", 0)),
                    running=int(running),
                    lease_expires_at=ms_to_dt(int(expiry)),
                    version=h.get("version", ""),
                )
            )
        return sorted(out, key=lambda i: i.id)

    def jobs(self) -> list[JobInfo]:
        """The job catalog and which live instances offer each job."""
        catalog = self.redis.hgetall(self.keys.jobs)
        live = [w.id for w in self.workers()]
        pipe = self.redis.pipeline(transaction=False)
        for inst in live:
            pipe.smembers(self.keys.instance_jobs(inst))
        offered = dict(zip(live, pipe.execute(), strict=True))
        out = []
        for name in sorted(catalog):
            d = _definition_decoder.decode(catalog[name])
            out.append(
                JobInfo(
                    name=name,
                    slots=d.slots,
                    max_duration=d.max_duration_ms / 1000,
                    instances=[i for i in live if name in offered[i]],
                )
            )
        return out

    def series(self, limit: int = 100) -> list[Series]:
        """Recurring schedules, newest first."""
        ids = self.redis.zrevrange(self.keys.series_index, 0, limit - 1)
        pipe = self.redis.pipeline(transaction=False)
        for sid in ids:
            pipe.hgetall(self.keys.series(sid))
        out = []
        for h in pipe.execute():
            if h:
                out.append(series_from_hash(h))
        return out


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
    )


def encode_args(args: Any) -> str:
    """Task arguments as JSON text: a JSON object of at most 1 MiB."""
    if args is None:
        return "{}"
    if not isinstance(args, dict):
        raise InvalidArgs(
            f"task arguments must be a JSON object, got {type(args).__name__};"
            " e.g. --args '{\"n\": 1}'"
        )
    try:
        data = orjson.dumps(args)
    except TypeError as exc:
        raise InvalidArgs(f"task arguments are not JSON-serialisable: {exc}") from None
    if len(data) > MAX_ARGS_BYTES:
        raise InvalidArgs(
            f"task arguments are {len(data)} bytes; the limit is {MAX_ARGS_BYTES} (1 MiB):"
            " pass a reference (a path or URL) instead of the data"
        )
    return data.decode()
