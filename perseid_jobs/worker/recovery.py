"""How a worker recovers and leaves: reconcile with Redis, fence, drain, reap, deregister.

These are the worker's paths for when something went wrong (a lost reply, a
lapsed lease, a dead instance) or when it stops. Each takes the
:class:`~perseid_jobs.worker.worker.Worker` whose state it reads and changes.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

from ..core.models import TaskStatus
from . import claiming
from .outcome import TASK_FIELDS, ClaimedTask, Outcome, given_next_starts, run_key

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("perseid_jobs.worker")


def new_instance_id() -> str:
    """A fresh instance id: host name and a random suffix."""
    host = socket.gethostname().split(".")[0][:24]
    return f"{host}-{uuid.uuid4().hex[:8]}"


def deregister(w: Worker) -> None:
    """Leave the instance set; series runs still held get their next run first."""
    reply = w.scripts.deregister(w.instance_id, "worker shutdown")
    if reply.needs:
        given = given_next_starts(reply.needs, w.estimated_redis_now())
        w.scripts.deregister(w.instance_id, "worker shutdown", given)


def reconcile(w: Worker) -> None:
    """Make local state agree with the instance's task set in Redis (the truth)."""
    inst = w.instance_id
    theirs: set[str] = set(w.redis.smembers(w.keys.instance_tasks(inst)))  # type: ignore[arg-type]
    w.reconcile_due = False
    for task_id, run in list(w.running.items()):
        if task_id not in theirs and run.instance == inst and run.pid is not None:
            log.warning("task %s is no longer this instance's in Redis: killing it", task_id)
            run.kill(signal.SIGKILL)
            w.ghosts.add(run.pid)
            del w.running[task_id]
            w.slots_used -= int(run.task.slots)
    reporting = {o.id for i, o in w.pending if i == inst}
    unknown = sorted(theirs - set(w.running) - reporting)
    if unknown:
        adopt(w, inst, unknown)


def adopt(w: Worker, inst: str, ids: list[str]) -> None:
    """Run (or report again) tasks Redis says this instance runs and it does not."""
    pipe = w.redis.pipeline(transaction=False)
    for task_id in ids:
        pipe.hmget(w.keys.task(task_id), TASK_FIELDS)
    rows = [dict(zip(TASK_FIELDS, row, strict=True)) for row in pipe.execute()]
    now_ms = w.estimated_redis_now()
    for task_id, h in zip(ids, rows, strict=True):
        if h["status"] != "running" or h["instance"] != inst:
            continue
        spec: Any = ""
        origin: Any = ""
        if h["series"]:
            spec, origin = w.redis.hmget(w.keys.series(h["series"]), ["spec", "origin"])
        # The id is the key, not a field; then the record's fields, as claim returns them.
        record = {f: h[f] or "" for f in TASK_FIELDS[:10]}
        task = ClaimedTask(id=task_id, spec=spec or "", origin=origin or "", **record)
        again = w.reported.get(run_key(task))
        if again is not None:
            log.warning("reporting %s again: Redis lost the earlier report", task_id)
            w.pending.append(again)
            continue
        # Claimed by a call whose reply never came back: nobody runs it, so we do,
        # within what is left before the reaper's hard deadline.
        left_s = (int(h["deadline"] or 0) - now_ms) / 1000 - 5.0
        log.warning("task %s was claimed by a call whose reply was lost: starting it", task_id)
        claiming.start_task(w, task, max_s=max(0.0, min(int(task.max_ms) / 1000, left_s)))


def fence(w: Worker) -> None:
    """The lease lapsed: kill every task; serve again under a new id once Redis answers."""
    old = w.instance_id
    w.fenced = False
    w.lease.drop(new_instance_id())
    for run in w.running.values():
        run.forced = (TaskStatus.FAILED, f"instance {old} lost its lease")
        run.kill(signal.SIGKILL)
    collect_exits(w, timeout=5.0)
    w.cancels.clear()
    w.next_due_mono = None
    if w.wake:
        w.wake.close()
    log.warning(
        "instance %s fenced: its tasks are killed and reported under it (the"
        " fencing token decides); serving again as %s",
        old,
        w.instance_id,
    )


def go_cold(w: Worker) -> None:
    """A second SIGTERM/SIGINT: end the drain now (its timeout's path: kill, report failed)."""
    if w.drain_deadline is not None and w.drain_deadline > time.monotonic():
        log.warning("second signal: cold shutdown, killing %d running tasks now", len(w.running))
        w.drain_deadline = time.monotonic()


def begin_drain(w: Worker) -> None:
    """Stop claiming; running tasks get --drain-timeout to finish."""
    log.info("draining: %d running, up to %gs", len(w.running), w.s.drain_timeout_s)
    w.drain_deadline = time.monotonic() + w.s.drain_timeout_s


def drain_step(w: Worker) -> bool:
    """True once nothing runs and everything is reported (or Redis stayed away too long)."""
    assert w.drain_deadline is not None
    if not w.running and not w.pending:
        return True
    past = time.monotonic() >= w.drain_deadline
    if w.running and past:
        for run in w.running.values():
            run.forced = (TaskStatus.FAILED, "worker shutdown")
            run.kill(signal.SIGKILL)
        collect_exits(w, timeout=10.0)
        for task_id in list(w.running):  # never reported their exit: give up on them
            run = w.running.pop(task_id)
            outcome = Outcome(
                run.task.id, run.task.attempt, TaskStatus.FAILED, "", "worker shutdown"
            )
            w.pending.append((run.instance, outcome))
    if not w.running and past and w.backoff.down_since is not None:
        log.error(
            "Redis unreachable at shutdown: %d outcomes unreported; the reaper fails"
            " those tasks once the lease lapses",
            len(w.pending),
        )
        return True
    return False


def collect_exits(w: Worker, timeout: float) -> None:
    """Wait (bounded) until every running task reported its exit (from any zygote)."""
    w.jobs.collect(w, timeout)


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
    if w.metrics and reply.reaped:
        w.metrics.reaped(str(w.redis.hget(w.keys.task(t), "job")) for t in reply.reaped)
