"""The typed Python client; the command line is a thin layer over it."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import redis

from ..core.errors import (
    ConfigError,
    InvalidTime,
    JobDefinitionError,
    NotDurable,
    SeriesAlreadyEnded,
    SeriesNotFound,
    TaskAlreadyEnded,
    TaskNotFound,
    UnknownJob,
)
from ..core.jobfile import find_job_file, load_job_file, validate_job_name
from ..core.models import (
    JobDefinition,
    Series,
    Task,
    task_from_hash,
)
from ..store.connection import DEFAULT_REDIS_URL, connect
from ..store.keys import DEFAULT_NAMESPACE, validate_namespace
from ..store.partitions import check_count
from ..store.script_io import AlreadyEnded, NotFound, ScheduleArgs, Scheduled, ScheduleReply
from ..store.scripts import Scripts
from . import routing, scheduling
from .controls import Controls
from .flow import FlowControls
from .queries import Queries, definition_decoder
from .served import NotServedWarning as NotServedWarning
from .served import warn_if_not_served
from .tags import encode_tags


class CapacityWarning(UserWarning):
    """The task needs more slots than any live instance offers; it waits for one."""


def _check_durable_timeout(durable: bool, timeout: float) -> None:
    if durable and not 0 < timeout <= 3600:
        raise InvalidTime(
            f"--durable-timeout {timeout:g}: give the seconds to wait for a replica,"
            " more than 0 and at most 3600, e.g. 1"
        )


class Client(Queries, FlowControls, Controls):
    """Schedule, inspect and cancel tasks of one deployment (one Redis, one namespace).

    The read side (get, tasks, wait, series, workers, jobs) is in :mod:`perseid_jobs.api.queries`;
    trigger, retry and the bulk actions in :mod:`perseid_jobs.api.controls`.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        jobs_dir: Path | str | None = None,
        partitions: int | None = None,
    ) -> None:
        # redis-py types replies as unions of sync/async/bytes/str; with
        # decode_responses=True they are str, so reads go through an untyped alias.
        self.redis: Any = redis_client
        self.namespace = validate_namespace(namespace)
        # None: as recorded in Redis (or the default); a number that differs is refused.
        self.requested_partitions = check_count(partitions)
        self._parts = None
        self._scripts_by_tag = {}
        self.jobs_dir = Path(jobs_dir) if jobs_dir is not None else None

    @classmethod
    def from_url(
        cls,
        url: str = DEFAULT_REDIS_URL,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        jobs_dir: Path | str | None = None,
        partitions: int | None = None,
    ) -> Client:
        """A client for the Redis at ``url``; raises RedisUnavailable if it does not answer."""
        return cls(connect(url), namespace=namespace, jobs_dir=jobs_dir, partitions=partitions)

    def close(self) -> None:
        """Release the connections."""
        self.redis.close()

    # -- scheduling ------------------------------------------------------------------------
    def job_definition(self, job: str) -> JobDefinition:
        """The job's definition from the catalog, else from the local jobs directory."""
        validate_job_name(job)
        raw = self.redis.hget(self.keys.jobs, job)
        if raw:
            return definition_decoder.decode(raw)
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
        group: str | None = None,
        priority: int = 0,
        tags: Mapping[str, str] | None = None,
    ) -> Task:
        """Schedule a task (or a recurring series) and return it.

        ``at`` is an aware datetime, an ISO-8601 text with offset, ``+10m``
        (relative to Redis time) or None for now; one in the past runs now, with a
        :class:`~perseid_jobs.api.scheduling.PastStartWarning`. ``every``/``cron`` make
        a series (``every`` at least 1 s). ``after`` waits for another task; if that
        one already ended, the new task is settled as its end would have: due now
        after a completed one, created cancelled after a failed or cancelled one
        (with a :class:`~perseid_jobs.api.scheduling.DependencyEndedWarning`).
        ``key`` makes it idempotent: the same request (job, args, recurrence,
        ``at``, ``after``) under a key held by a live task or series returns that
        one (``existed=True``); a different one raises :class:`KeyConflict`.

        Each call carries a request id (``request_id``, else a new random one),
        so a call repeated after its reply was lost (the connection's own
        retries included) returns the task the first attempt made instead of
        making a second. Pass the same ``request_id`` to retry a call yourself
        within 2 minutes.

        ``durable``: return only once a replica has the task too (``WAIT 1`` on
        the same connection, up to ``durable_timeout`` seconds); raises
        :class:`NotDurable` if none confirmed it (the task is on the primary).
        On a Cluster the ``WAIT`` goes to the primary that owns the task's partition.

        ``group``: the task's group (a customer, a tenant), for the job's group limits
        and fairness between groups; ``priority``: -100 to 100, higher first among due
        tasks (docs/flow.md). ``tags``: ``{"key": "value"}`` labels (docs/controls.md).
        """
        _check_durable_timeout(durable, durable_timeout)
        group = scheduling.check_group(group)
        priority = scheduling.check_priority(priority)
        req = scheduling.prepare(
            job, args, at=at, every=every, cron=cron, tz=tz, after=after, catch_up=catch_up,
            catch_up_window=catch_up_window, now_ms=self.now_ms,
        )  # fmt: skip
        wait_s = durable_timeout if durable else None
        return self._submit(
            job, req, key=key or "", after=after or "", request=request_id, wait_s=wait_s,
            group=group, priority=priority, tags=encode_tags(tags),
        )  # fmt: skip

    def _submit(
        self,
        job: str,
        req: scheduling.Request,
        *,
        key: str,
        after: str,
        request: str | None,
        wait_s: float | None,
        group: str = "",
        priority: int = 0,
        tags: str = "",
    ) -> Task:
        """Run the schedule script for a checked request (``wait_s``: durably); the task made."""
        definition = self.job_definition(job)
        self._warn_capacity(job, definition.slots)
        warn_if_not_served(self, job)
        request = request or uuid.uuid4().hex
        limit = routing.limit_of(job, group, definition)
        where = routing.route(self, key=key, after=after, request=request, limit=limit)
        scripts = self.scripts_in(where.keys)
        call = ScheduleArgs(
            job=job,
            args=req.args,
            slots=definition.slots,
            max_ms=definition.max_duration_ms,
            at_ms=req.when.at_ms,
            delay_ms=req.when.delay_ms,
            key=key,
            after=after,
            spec=req.spec,
            origin=req.origin,
            retries=definition.retries,
            backoff_ms=definition.backoff_ms,
            request_id=request,
            with_hash=True,  # the task's hash in the reply: no second round trip to read it back
            # Kept with the key, to tell requests apart (a group is a part only when given,
            # so the fingerprints of keys held from before groups existed still match).
            fingerprint=scheduling.with_flow(req.fingerprint, group, priority) if key else "",
            parent_partition=where.parent_partition,
            group=group,
            priority=priority,
            tags=tags,
        )
        if wait_s is not None:
            reply, acked = self._schedule_durably(scripts, call, wait_s)
        else:
            reply, acked = scripts.schedule(call), None
        reply = scheduling.check_reply(reply, key=key, req=req, after=after)
        if where.parent_partition is not None and not reply.existed:
            reply = self._settle_remote(reply, where)
        scheduling.notify(reply, req=req, after=after)
        if acked is not None and acked < 1:
            raise NotDurable(reply.task_id, wait_s or 0.0)
        fields = reply.task_hash
        if not fields:  # a retried request whose task has since ended and been trimmed
            raise TaskNotFound(reply.task_id)
        task = task_from_hash(reply.task_id, dict(zip(fields[::2], fields[1::2], strict=True)))
        task.existed = bool(reply.existed)
        return task

    def _settle_remote(self, reply: Scheduled, where: routing.Route) -> Scheduled:
        """A task waiting on a parent in another partition: deliver its follow (and the
        settle it may bring back) now, then read the task as it is."""
        self.drain_outboxes([self.partitions().keys.index(where.keys)])
        raw = self.redis.hgetall(where.keys.task(reply.task_id))
        fields = [x for pair in raw.items() for x in pair]
        return msgspec.structs.replace(reply, task_hash=fields, parent_status=where.parent_status)

    def _schedule_durably(
        self, scripts: Scripts, call: ScheduleArgs, timeout: float
    ) -> tuple[ScheduleReply, int]:
        """The schedule script, then ``WAIT 1`` on the same connection: (reply, replicas).

        On a Cluster both go to the primary that owns the task's partition, on one
        connection of that node (``WAIT`` counts the replicas of the connection's writes).
        """
        timeout_ms = max(1, int(timeout * 1000))
        if not isinstance(self.redis, redis.RedisCluster):
            return scripts.schedule_then_wait(call, timeout_ms)
        node = self.redis.get_node_from_key(scripts.keys.prefix)  # type: ignore[no-untyped-call]
        return Scripts(node.redis_connection, scripts.keys).schedule_then_wait(call, timeout_ms)

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
                stacklevel=4,  # the caller of Client.schedule (via its _submit)
            )

    # -- cancelling -----------------------------------------------------------------------
    def cancel(self, task_id: str, *, series: bool = False) -> Task:
        """Cancel a task: pending ends at once, running is stopped by its instance.

        Cancelling a series' pending run ends the series; ``series=True`` ends
        the series whichever run is named (a task of no series: ConfigError,
        nothing cancelled).
        """
        if series and self.get(task_id).series is None:  # a task's series never changes
            raise ConfigError(f"task {task_id} belongs to no series: cancel it without --series")
        keys = self.keys_of(task_id)
        if keys is None:
            raise TaskNotFound(task_id)
        reply = self.scripts_in(keys).cancel(
            task_id, whole_series=series, reason="cancelled by user"
        )
        if isinstance(reply, AlreadyEnded):
            raise TaskAlreadyEnded(task_id, reply.status)
        if isinstance(reply, NotFound):
            raise TaskNotFound(task_id)
        self.drain_outboxes([self.partitions().keys.index(keys)])  # dependents elsewhere
        return self.get(task_id)

    def cancel_series(self, series_id: str) -> Series:
        """End an active series: no further runs; its pending run is cancelled, a running
        one finishes. Raises SeriesNotFound, or SeriesAlreadyEnded."""
        keys = self.keys_of(series_id)
        if keys is None:
            raise SeriesNotFound(series_id)
        reply = self.scripts_in(keys).cancel_series(series_id, reason="cancelled by user")
        if isinstance(reply, NotFound):
            raise SeriesNotFound(series_id)
        if isinstance(reply, AlreadyEnded):
            raise SeriesAlreadyEnded(series_id, reply.status)
        return self.get_series(series_id)
