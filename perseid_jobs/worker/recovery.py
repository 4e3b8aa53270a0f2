"""How a worker recovers and leaves: reconcile with Redis, fence, drain, reap, deregister.

These are the worker's paths for when something went wrong (a lost reply, a
lapsed lease, a dead instance) or when it stops. Reconcile, adopt, the drain's
steps and deregister take the parts they read and change (the running tasks,
the outcomes to report, the claim clock); fence and reap, which touch most of
the worker's parts, take the :class:`~perseid_jobs.worker.worker.Worker`.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..core.models import TaskStatus
from . import orphan_logs
from .outcome import TASK_FIELDS, ClaimedTask, Outcome, given_next_starts, run_key

if TYPE_CHECKING:
    from ..store.partitions import Partitions
    from .claim_clock import ClaimClock
    from .fanout import PartitionedScripts as Scripts
    from .reports import Reports
    from .running_set import RunningSet
    from .worker import Worker

log = logging.getLogger("perseid_jobs.worker")

ADOPT_MARGIN_S = 5.0
"""An adopted task ends this long before the reaper's hard deadline for it."""


def new_instance_id() -> str:
    """A fresh instance id: host name and a random suffix."""
    host = socket.gethostname().split(".")[0][:24]
    return f"{host}-{uuid.uuid4().hex[:8]}"


def deregister(scripts: Scripts, instance: str, clock: ClaimClock) -> None:
    """Leave the instance set; series runs still held get their next run first."""
    reply = scripts.deregister(instance, "worker shutdown")
    if reply.needs:
        given = given_next_starts(reply.needs, clock.redis_now())
        scripts.deregister(instance, "worker shutdown", given)


def reconcile(
    redis: Any, parts: Partitions, inst: str, running: RunningSet, reports: Reports
) -> list[str]:
    """Make local state agree with the instance's task set in Redis (the truth).

    Kills the ghosts (run here, no longer ``inst``'s in Redis); returns the tasks Redis
    gives ``inst`` that it neither runs nor has to report: :func:`adopt` them.
    """
    pipe = redis.pipeline(transaction=False)
    for keys in parts:
        pipe.smembers(keys.instance_tasks(inst))
    held: set[str] = set().union(*pipe.execute())
    for task_id in running.not_held(held, inst):
        log.warning("task %s is no longer this instance's in Redis: killing it", task_id)
        running.drop_ghost(task_id)
    return sorted(held - running.ids() - reports.ids_of(inst))


def adopt(
    redis: Any,
    parts: Partitions,
    inst: str,
    ids: list[str],
    reports: Reports,
    start: Callable[[ClaimedTask, float], None],
    now_ms: int,
) -> None:
    """Run (or report again) tasks Redis says ``inst`` runs and it does not.

    ``start(task, max_s)`` starts one; ``now_ms``: Redis time now.
    """
    pipe = redis.pipeline(transaction=False)
    for task_id in ids:
        pipe.hmget((parts.of_id(task_id) or parts.keys[0]).task(task_id), TASK_FIELDS)
    rows = [dict(zip(TASK_FIELDS, row, strict=True)) for row in pipe.execute()]
    for task_id, h in zip(ids, rows, strict=True):
        if not runs_under(h, inst):
            continue
        spec: Any = ""
        origin: Any = ""
        if h["series"]:
            keys = parts.of_id(h["series"]) or parts.keys[0]
            spec, origin = redis.hmget(keys.series(h["series"]), ["spec", "origin"])
        # The id is the key, not a field; then the record's fields, as claim returns them.
        record = {f: h[f] or "" for f in TASK_FIELDS[:10]}
        task = ClaimedTask(id=task_id, spec=spec or "", origin=origin or "", **record)
        if reports.again(run_key(task)):
            log.warning("reporting %s again: Redis lost the earlier report", task_id)
            continue
        # Claimed by a call whose reply never came back: nobody runs it, so we do,
        # within what is left before the reaper's hard deadline.
        log.warning("task %s was claimed by a call whose reply was lost: starting it", task_id)
        start(task, adopted_limit_s(int(task.max_ms), int(h["deadline"] or 0), now_ms))


def runs_under(h: Mapping[str, Any], inst: str) -> bool:
    """True if a task's hash (the TASK_FIELDS) says it is running under ``inst``."""
    return bool(h["status"] == "running" and h["instance"] == inst)


def adopted_limit_s(max_ms: int, deadline_ms: int, now_ms: int) -> float:
    """How long an adopted task may run: its max duration, ended before the hard deadline."""
    left_s = (deadline_ms - now_ms) / 1000 - ADOPT_MARGIN_S
    return max(0.0, min(max_ms / 1000, left_s))


def fence(w: Worker) -> None:
    """The lease lapsed: kill every task; serve again under a new id once Redis answers."""
    old = w.instance_id
    w.fenced = False
    w.lease.drop(new_instance_id())
    w.running.kill_all(f"instance {old} lost its lease")
    w.jobs.collect(w, timeout=5.0)
    w.cancels.clear()
    w.clock.forget_due()
    if w.wake:
        w.wake.close()
    log.warning(
        "instance %s fenced: its tasks are killed and reported under it (the"
        " fencing token decides); serving again as %s",
        old,
        w.instance_id,
    )


def go_cold(drain_deadline: float | None, running: int) -> float | None:
    """A second SIGTERM/SIGINT: end the drain now (its timeout's path: kill, report failed).

    ``running``: how many tasks run. Returns the drain deadline from here.
    """
    if drain_deadline is not None and drain_deadline > time.monotonic():
        log.warning("second signal: cold shutdown, killing %d running tasks now", running)
        return time.monotonic()
    return drain_deadline


def begin_drain(running: int, drain_timeout_s: float) -> float:
    """Stop claiming; running tasks get --drain-timeout to finish. Returns the drain deadline."""
    log.info("draining: %d running, up to %gs", running, drain_timeout_s)
    return time.monotonic() + drain_timeout_s


def drain_step(
    running: RunningSet,
    reports: Reports,
    deadline: float,
    redis_down: bool,
    collect: Callable[[float], None],
) -> bool:
    """True once nothing runs and everything is reported (or Redis stayed away too long).

    Past ``deadline`` the tasks still running are killed; ``collect(timeout)`` waits
    (bounded) for their exits; those whose exit never came are reported failed.
    ``redis_down``: Redis calls are failing now.
    """
    if not running and not reports:
        return True
    past = time.monotonic() >= deadline
    if running and past:
        running.kill_all("worker shutdown")
        collect(10.0)
        for run in running.give_up():  # never reported their exit: give up on them
            outcome = Outcome(
                run.task.id, run.task.attempt, TaskStatus.FAILED, "", "worker shutdown"
            )
            reports.queue(run.instance, outcome)
    if not running and past and redis_down:
        log.error(
            "Redis unreachable at shutdown: %d outcomes unreported; the reaper fails"
            " those tasks once the lease lapses",
            len(reports),
        )
        return True
    return False


def reap(w: Worker) -> None:
    """Fail dead instances' tasks and tasks past their hard deadline (idempotent).

    Also the periodic reconcile: cheap (one SMEMBERS) and it heals what no error told of.
    """
    w.next_reap = time.monotonic() + w.s.reap_interval_s
    if w.registered:
        w.reconcile_due = True
    reply = w.scripts.reap()
    if reply.needs:
        reply = w.scripts.reap(given_next_starts(reply.needs, reply.now))
    for task_id in reply.reaped:
        log.warning("reaped task %s", task_id)
    w.orphans.reaped(reply.reaped)
    due = w.orphans.take_due()
    if due and w.shipper is not None and w.spool is not None:
        keys_of = lambda t: w.parts.of_id(t) or w.keys  # noqa: E731
        written = orphan_logs.write_missing(due, w.redis, keys_of, w.log_path, w.shipper)
        if written:
            log.info("wrote the one-line log of %d reaped task(s) that never started", written)
    if w.metrics and reply.reaped:
        jobs = (w.redis.hget((w.parts.of_id(t) or w.keys).task(t), "job") for t in reply.reaped)
        w.metrics.reaped(str(job) for job in jobs)
