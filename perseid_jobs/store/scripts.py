"""Loading the Lua scripts and calling them: one typed method per script.

Each script in ``lua/`` is sent as: the prelude generated from Python (keys and
reply codes), the helpers of ``lua/includes/`` it names, then the script (see
:mod:`perseid_jobs.store.lua_source`). redis-py's :class:`~redis.commands.core.Script`
calls it by SHA (``EVALSHA``) and loads it again when the server answers
``NOSCRIPT`` (after a restart or a failover). The methods below build each
script's ARGV from named arguments and decode its reply into the Structs of
:mod:`perseid_jobs.store.script_io`, so no caller reads a reply by position.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import redis

from .keys import Keys
from .lua_source import LUA_DIR as LUA_DIR
from .lua_source import SCRIPT_NAMES as SCRIPT_NAMES
from .lua_source import script_source as script_source
from .script_io import (
    Acked,
    BulkDone,
    CancelReply,
    ClaimReply,
    Delivered,
    Deregistered,
    Drained,
    Finished,
    LeaseLapsed,
    LogUrlsSet,
    LookReply,
    NextStart,
    PauseReply,
    Reaped,
    Registered,
    Renewed,
    Republished,
    RetryReply,
    ScheduleArgs,
    ScheduleReply,
    SeriesCancelReply,
    Served,
    TriggerReply,
)

if TYPE_CHECKING:
    from ..worker.outcome import Outcome

T = TypeVar("T")


def decode(reply: Any, into: type[T]) -> T:
    """A raw script reply as ``into`` (a reply Struct or a union of them)."""
    return msgspec.convert(reply, into)


def _jobs_argv(jobs: Mapping[str, str]) -> list[str | int]:
    """n, then n pairs (name, definition JSON): register's and republish's job list."""
    argv: list[str | int] = [len(jobs)]
    for name, definition in jobs.items():
        argv += [name, definition]
    return argv


def given_argv(given: Sequence[NextStart]) -> list[str | int]:
    """n, then n triples (task id, next start, skipped): reap's and deregister's."""
    argv: list[str | int] = [len(given)]
    for g in given:
        argv += [g.task_id, g.start, g.skipped]
    return argv


class Scripts:
    """The scripts bound to one Redis client and one namespace."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.keys = keys
        self.client = client
        self._scripts = {name: client.register_script(script_source(name)) for name in SCRIPT_NAMES}

    def call(self, name: str, *args: Any, client: Any = None) -> Any:
        """Run script ``name`` with ARGV ``args`` (on ``client``, e.g. a pipeline, if given).

        The raw call under the typed methods (and what fault-injecting tests wrap). The
        second key, never written, holds scripts off a slot being moved (see keys.py).
        """
        keys = [self.keys.prefix, self.keys.moving]
        return self._scripts[name](keys=keys, args=list(args), client=client)

    def schedule(self, a: ScheduleArgs) -> ScheduleReply:
        """Store a task (and its series), index it, wake workers."""
        return decode(self.call("schedule", *a.argv()), ScheduleReply)  # type: ignore[arg-type]

    def schedule_then_wait(self, a: ScheduleArgs, timeout_ms: int) -> tuple[ScheduleReply, int]:
        """The schedule script, then ``WAIT 1`` on the same connection: (reply, replicas)."""
        pipe = self.client.pipeline(transaction=False)
        self.call("schedule", *a.argv(), client=pipe)
        pipe.execute_command("WAIT", 1, timeout_ms)  # type: ignore[no-untyped-call]
        reply, acked = pipe.execute()
        return decode(reply, ScheduleReply), int(acked)  # type: ignore[arg-type]

    def claim(self, instance: str, most: int, free: int = -1) -> ClaimReply:
        """Take up to ``most`` due tasks that fit the instance's free slots (at most ``free``,
        if not negative: the worker's count over all partitions)."""
        reply = self.call("claim", instance, most, free)
        return decode(reply, ClaimReply)  # type: ignore[arg-type]

    def look(self, instance: str) -> LookReply:
        """Whether anything is due for the instance here, claiming nothing."""
        return decode(self.call("look", instance), LookReply)  # type: ignore[arg-type]

    def finish(
        self, instance: str, outcomes: Sequence[Outcome], claim_most: int, free: int = -1
    ) -> Finished:
        """Record how tasks ended, then claim up to ``claim_most`` (0: none) within ``free``."""
        argv: list[str | int] = [instance, claim_most, free, len(outcomes)]
        for o in outcomes:
            argv += [o.id, o.token, o.status.value, o.exit_code, o.reason, o.next_start, o.skipped]
        return decode(self.call("finish", *argv), Finished)

    def heartbeat(self, instance: str, ttl_ms: int) -> Renewed | LeaseLapsed:
        """Renew the instance's lease."""
        return decode(self.call("heartbeat", instance, ttl_ms), Renewed | LeaseLapsed)  # type: ignore[arg-type]

    def register(
        self,
        instance: str,
        *,
        ttl_ms: int,
        slots: int,
        host: str,
        pid: int,
        version: str,
        jobs: Mapping[str, str],
    ) -> Registered:
        """Announce an instance and publish its jobs (name -> definition JSON)."""
        argv = [instance, ttl_ms, slots, host, pid, version, *_jobs_argv(jobs)]
        return decode(self.call("register", *argv), Registered)

    def republish(self, instance: str, jobs: Mapping[str, str]) -> Republished | LeaseLapsed:
        """Replace the jobs a registered instance offers."""
        reply = self.call("republish", instance, *_jobs_argv(jobs))
        return decode(reply, Republished | LeaseLapsed)  # type: ignore[arg-type]

    def deregister(
        self, instance: str, reason: str, given: Sequence[NextStart] = ()
    ) -> Deregistered:
        """Remove an instance that shut down; fail what it still held (``reason``)."""
        reply = self.call("deregister", instance, reason, *given_argv(given))
        return decode(reply, Deregistered)

    def drain(self, instance: str) -> Drained:
        """Stop an instance from claiming, keeping its lease."""
        return decode(self.call("drain", instance), Drained)

    def cancel(self, task_id: str, *, whole_series: bool, reason: str) -> CancelReply:
        """Cancel a task (pending: at once; running: flagged for its instance)."""
        reply = self.call("cancel", task_id, "1" if whole_series else "0", reason)
        return decode(reply, CancelReply)  # type: ignore[arg-type]

    def cancel_series(self, series_id: str, reason: str) -> SeriesCancelReply:
        """End a series and cancel its pending run."""
        return decode(self.call("cancel", series_id, "s", reason), SeriesCancelReply)  # type: ignore[arg-type]

    def reap(self, given: Sequence[NextStart] = ()) -> Reaped:
        """Fail the tasks of lapsed instances and those past their hard deadline."""
        return decode(self.call("reap", *given_argv(given)), Reaped)

    def set_log_url(self, urls: Iterable[tuple[str, str]]) -> LogUrlsSet:
        """Record (task id, log URL) pairs, for the tasks that still exist."""
        argv = [field for pair in urls for field in pair]
        return decode(self.call("set_log_url", *argv), LogUrlsSet)

    def deliver(self, items: Sequence[tuple[str, str, str, str]]) -> Delivered:
        """Apply deliveries (kind, a, b, c) from other partitions' outboxes to this one."""
        argv: list[str | int] = [len(items)]
        for item in items:
            argv += list(item)
        return decode(self.call("deliver", *argv), Delivered)

    def outbox_ack(self, ids: Sequence[str]) -> Acked:
        """Remove applied deliveries from this partition's outbox."""
        return decode(self.call("outbox_ack", *ids), Acked)

    def pause(self, kind: str, name: str, *, pause: bool, batch: int = 1000) -> PauseReply:
        """Pause (or resume) the tasks of a job or a group (``kind``: "job" or "group")."""
        reply = self.call("pause", kind, name, "1" if pause else "0", batch)
        return decode(reply, PauseReply)  # type: ignore[arg-type]

    def served(self, job: str) -> Served:
        """Live instances, and how many of them take tasks of ``job``."""
        return decode(self.call("served", job), Served)

    def trigger(self, series_id: str, request_id: str = "") -> TriggerReply:
        """One extra run of an active series, due now; its grid does not move."""
        reply = self.call("trigger", series_id, request_id)
        return decode(reply, TriggerReply)  # type: ignore[arg-type]

    def retry(self, task_id: str, request_id: str = "") -> RetryReply:
        """A new task like an ended one, linked by ``retry_of`` (its retry, if it had one)."""
        return decode(self.call("retry", task_id, request_id), RetryReply)  # type: ignore[arg-type]

    def bulk(
        self,
        action: str,
        ids: Sequence[str],
        *,
        status: str,
        job: str = "",
        group: str = "",
        since_ms: int | None = None,
        dry_run: bool = False,
        reason: str = "",
    ) -> BulkDone:
        """Retry or cancel those of ``ids`` that match (one bounded batch); how many did."""
        since = "" if since_ms is None else since_ms
        argv = [action, status, job, group, since, "1" if dry_run else "0", reason, *ids]
        return decode(self.call("bulk", *argv), BulkDone)
