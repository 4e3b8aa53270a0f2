"""How a worker reports what ended and takes what is due: the hot path.

One script call reports the finished tasks and claims what now fits
(``finish_and_claim``); each claimed task goes to the zygote
(``start_task``); each ended process becomes an outcome queued for the next
call (``on_exit``). Each takes the :class:`~perseid_jobs.worker.worker.Worker` whose
state it reads and changes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import Code
from ..core.models import TaskStatus
from ..launch.protocol import Exited, StartRequest
from ..launch.runtime import MAX_REASON_CHARS
from ..logs.pino import append_last, closing_line
from ..store.connection import REDIS_ERRORS
from ..store.script_io import ClaimReply, LeaseLapsed
from .outcome import ClaimedTask, Outcome, Running, run_key, series_next

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("perseid_jobs.worker")

WARM_AHEAD_S = 0.002
"""How long before a due time the start path is warmed up (see :func:`warm_up`)."""
WARM_AFTER_IDLE_S = 0.01
"""Only a due time at least this much later than the claim that told of it is warmed up for."""

REPORTED_MEMORY = 4096  # outcomes remembered, to report again if a failover lost them


def finish_and_claim(w: Worker) -> None:
    """Report finished tasks and claim what fits, in one script call per instance id."""
    mine = w.instance_id
    left = list(w.pending)
    w.pending = []
    try:
        for inst in dict.fromkeys(i for i, _ in left if i != mine):
            # Tasks of an id this process no longer serves under (it fenced): the
            # fencing token decides; whatever the claim part says is not for us.
            _finish(w, inst, [o for i, o in left if i == inst], 0)
            left = [(i, o) for i, o in left if i != inst]
        outcomes = [o for _, o in left]
        free = w.s.slots - w.slots_used
        claiming = free > 0 and w.drain_deadline is None and w.registered
        want = w.s.claim_batch if claiming else 0
        if not outcomes and want == 0:
            w.need_claim = False
            return
        sent = time.monotonic()
        claim = _finish(w, mine, outcomes, want) if outcomes else w.scripts.claim(mine, want)
        left = []
    finally:
        w.pending = left + w.pending
    w.need_claim = False
    on_claim(w, claim, want, sent)


def _finish(w: Worker, inst: str, outcomes: list[Outcome], want: int) -> ClaimReply:
    reply = w.scripts.finish(inst, outcomes, want)
    for o, code in zip(outcomes, reply.codes, strict=True):
        if code == Code.STALE:
            log.warning(
                "finish of %s under %s was stale: already recorded, or the task was"
                " reaped meanwhile (this report changed nothing)",
                o.id,
                inst,
            )
    return reply.claim


def on_claim(w: Worker, claim: ClaimReply, wanted: int, sent: float) -> None:
    """Act on a claim reply (see lua/claim.lua) that asked for ``wanted`` tasks.

    ``sent`` is when the call went out (``time.monotonic()``).
    """
    if isinstance(claim, LeaseLapsed):
        w.fenced = True
        return
    w.saw_now(claim.now)
    next_due = claim.next_due
    # To the microsecond: Redis's clock at the claim was `now` ms plus now_us_past_ms. Counted
    # from when the call went out, so the next claim reaches Redis about when the task
    # is due, not a reply's trip later; were it early, Redis would only say "not yet".
    wait_us = (next_due - claim.now) * 1000 - claim.now_us_past_ms
    w.next_due_mono = None if next_due < 0 else sent + max(0, wait_us) / 1e6
    if next_due != w.next_due_ms:  # a new due time (idle claims repeat the same one)
        w.next_due_ms = next_due
        # Warmed up for only if nothing else is due before it for a while (see warm_up).
        w.warm_pending = next_due >= 0 and wait_us >= (WARM_AFTER_IDLE_S + WARM_AHEAD_S) * 1e6
    w.on_cancels(claim.cancels)
    for task in claim.tasks:
        if w.metrics:
            w.metrics.claimed(task.job, (int(task.started_at) - int(task.start_at)) / 1000)
        start_task(w, task)
    if wanted and len(claim.tasks) >= wanted:
        # It stopped at the count, not for want of due tasks or free slots: look again.
        w.need_claim = True
    w.apply_cancels()


def start_task(w: Worker, task: ClaimedTask, max_s: float | None = None) -> None:
    """Hand a claimed task to the zygote."""
    assert w.zygote is not None
    run = w.running[task.id] = Running.begin(task, w.instance_id, max_s)
    w.slots_used += int(task.slots)
    request = start_request(task, w.log_path(task.id), w.s.max_log_bytes, run.deadline_mono)
    w.zygote.start(request)


def start_request(
    task: ClaimedTask, log_path: Path, max_log_bytes: int, deadline: float = 0.0
) -> StartRequest:
    """What the zygote needs to start ``task``'s process (also ``perseid-jobs run``'s)."""
    return StartRequest(
        id=task.id,
        job=task.job,
        args=task.args,
        attempt=int(task.attempt),
        started_at_ms=int(task.started_at),
        last_completed_at=task.last_completed_at or "",
        skipped_runs=task.skipped_runs or "",
        log_path=str(log_path),
        max_log_bytes=max_log_bytes,
        deadline=deadline,
    )


def on_exit(w: Worker, event: Exited) -> None:
    """A task's process ended: queue its outcome."""
    if event.pid in w.ghosts:
        w.ghosts.discard(event.pid)
        return
    run = w.running.get(event.id)
    if run is None or (run.pid is not None and run.pid != event.pid):
        return
    del w.running[event.id]
    w.slots_used -= int(run.task.slots)
    status, code, reason = run.verdict(event.status, event.reason)
    note_kill(run, event.pid, w.log_path(run.task.id))
    next_start, skipped = series_next(run.task, w.estimated_redis_now())
    if w.metrics:
        w.metrics.finished(run.task.job, status.value, time.monotonic() - run.started_mono)
    outcome = Outcome(
        id=run.task.id,
        token=run.task.attempt,
        status=status,
        exit_code=code,
        reason=reason[:MAX_REASON_CHARS],
        next_start=next_start,
        skipped=skipped,
    )
    w.pending.append((run.instance, outcome))
    w.reported[run_key(run.task)] = (run.instance, outcome)
    while len(w.reported) > REPORTED_MEMORY:
        w.reported.popitem(last=False)
    if w.shipper:
        w.shipper.submit(run.task.id, run.task.job, int(run.task.started_at))


def note_kill(run: Running, pid: int, log_path: Path) -> None:
    """If it was killed (timeout, cancel, shutdown), its log says so and why, as its last line.

    Written before the upload; also by ``perseid-jobs run``.
    """
    if run.forced is None:
        return
    status, reason = run.forced
    level = 40 if status is TaskStatus.CANCELLED else 50
    line = closing_line(level, f"killed: {reason}", pid=pid, task=run.task.id, job=run.task.job)
    append_last(log_path, line)


def warm_up(w: Worker) -> None:
    """Shortly before the next due time, with nothing else to do, go through the start path.

    A Redis round trip on the claim's connection (``TIME``) and a message through the
    zygote's loop, so the claim and the start at the due time run warm (see
    :class:`~perseid_jobs.launch.protocol.Warm`). Once per due time, and only if the
    worker has nothing to do for a while before it: a busy path is warm.
    """
    due = w.next_due_mono
    if not w.warm_pending or due is None or time.monotonic() < due - WARM_AHEAD_S:
        return
    w.warm_pending = False
    assert w.zygote is not None
    w.zygote.warm()
    with contextlib.suppress(*REDIS_ERRORS):
        sec, usec = w.redis.time()  # any round trip warms; this one also sets the clock
        w.saw_now(sec * 1000 + usec // 1000)
