"""How a worker reports what ended and takes what is due: the hot path.

One script call reports the finished tasks and claims what now fits
(``finish_and_claim``); each claimed task goes to the zygote
(``start_task``); each ended process becomes an outcome queued for the next
call (``on_exit``). Each takes the parts it reads and changes, not the whole
worker: the running tasks (:class:`~perseid_jobs.worker.running_set.RunningSet`),
the outcomes to report (:class:`~perseid_jobs.worker.reports.Reports`) and the claim
clock (:class:`~perseid_jobs.worker.claim_clock.ClaimClock`). The worker's loop
(:meth:`~perseid_jobs.worker.worker.Worker.claim`) joins them.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import Code
from ..core.models import TaskStatus
from ..launch.protocol import DEFAULT_MAX_RESULT_BYTES, Exited, StartRequest
from ..launch.runtime import MAX_REASON_CHARS
from ..logs.pino import append_last, closing_line
from ..store.connection import REDIS_ERRORS
from ..store.script_io import Claimed, ClaimReply, LeaseLapsed
from .outcome import ClaimedTask, Outcome, Running, run_key, series_next

if TYPE_CHECKING:
    from .claim_clock import ClaimClock
    from .fanout import PartitionedScripts as Scripts
    from .reports import Reports
    from .running_set import RunningSet
    from .zygote_client import ZygoteClient

log = logging.getLogger("perseid_jobs.worker")


def claim_size(free_slots: int, batch: int, may_claim: bool) -> int:
    """How many tasks to ask for: a batch while a slot is free and claiming is allowed.

    Redis decides what fits the free slots; ``may_claim`` is False while draining or
    unregistered (outcomes are still reported then).
    """
    return batch if free_slots > 0 and may_claim else 0


def finish_and_claim(
    scripts: Scripts, reports: Reports, clock: ClaimClock, mine: str, want: int, free: int = -1
) -> ClaimReply | None:
    """Report finished tasks and claim up to ``want``, in one script call per instance id.

    ``mine``: the id this process serves under now; ``free``: the free slots that bound
    the claim (negative: the instance's hash decides). None if there was nothing to
    report nor to claim. On a Redis error, what was not recorded waits to be sent again.
    """
    left = reports.take()
    try:
        for inst in dict.fromkeys(i for i, _ in left if i != mine):
            # Tasks of an id this process no longer serves under (it fenced): the
            # fencing token decides; whatever the claim part says is not for us.
            _finish(scripts, inst, [o for i, o in left if i == inst], 0)
            left = [(i, o) for i, o in left if i != inst]
        outcomes = [o for _, o in left]
        if not outcomes and want == 0:
            clock.settle()
            return None
        clock.sending()
        if outcomes:
            claim = _finish(scripts, mine, outcomes, want, free)
        else:
            claim = scripts.claim(mine, want, free)
        left = []
    finally:
        reports.put_back(left)
    clock.settle()
    return claim


def _finish(
    scripts: Scripts, inst: str, outcomes: list[Outcome], want: int, free: int = -1
) -> ClaimReply:
    reply = scripts.finish(inst, outcomes, want, free)
    for o, code in zip(outcomes, reply.codes, strict=True):
        if code == Code.STALE:
            log.warning(
                "finish of %s under %s was stale: already recorded, or the task was"
                " reaped meanwhile (this report changed nothing)",
                o.id,
                inst,
            )
    return reply.claim


def on_claim(claim: ClaimReply, wanted: int, clock: ClaimClock) -> Claimed | None:
    """What a claim reply (see lua/claim.lua) that asked for ``wanted`` tasks tells the clock.

    None if the lease lapsed: the worker fences. Else the claim, whose tasks to start.
    """
    if isinstance(claim, LeaseLapsed):
        return None
    clock.on_reply(claim.now, claim.now_us_past_ms, claim.next_due)
    if wanted and len(claim.tasks) >= wanted:
        # It stopped at the count, not for want of due tasks or free slots: look again.
        clock.ask()
    return claim


def start_task(
    running: RunningSet,
    zygote: ZygoteClient,
    task: ClaimedTask,
    instance: str,
    log_path: Path,
    max_log_bytes: int,
    max_s: float | None = None,
    data: tuple[int, str] = (DEFAULT_MAX_RESULT_BYTES, ""),
) -> None:
    """Hand a claimed task (run under ``instance``, for at most ``max_s``) to the zygote;
    ``data``: the cap of its result, its parents' results (JSON; see worker.dataflow)."""
    run = Running.begin(task, instance, max_s)
    running.add(run)
    zygote.start(start_request(task, log_path, max_log_bytes, run.deadline_mono, data))


def start_request(
    task: ClaimedTask,
    log_path: Path,
    max_log_bytes: int,
    deadline: float = 0.0,
    data: tuple[int, str] = (DEFAULT_MAX_RESULT_BYTES, ""),
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
        max_result_bytes=data[0],
        parent_results=data[1],
    )


def on_exit(
    running: RunningSet, reports: Reports, event: Exited, now_ms: int
) -> tuple[Running, Outcome] | None:
    """A task's process ended (``now_ms``, Redis time): queue its outcome.

    Returns the run it ended and its outcome; None if the exit is none of ours (see
    :meth:`~perseid_jobs.worker.running_set.RunningSet.ended`).
    """
    run = running.ended(event.id, event.pid)
    if run is None:
        return None
    outcome = outcome_of(run, event, now_ms)
    reports.queue(run.instance, outcome, run_key(run.task))
    return run, outcome


def outcome_of(run: Running, event: Exited, now_ms: int) -> Outcome:
    """The outcome to report for ``run``, whose process ended as ``event`` says, at ``now_ms``."""
    status, code, reason = run.verdict(event.status, event.reason)
    next_start, skipped = series_next(run.task, now_ms)
    return Outcome(
        id=run.task.id,
        token=run.task.attempt,
        status=status,
        exit_code=code,
        reason=reason[:MAX_REASON_CHARS],
        next_start=next_start,
        skipped=skipped,
        result=event.result if status is TaskStatus.COMPLETED else "",
    )


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


def warm_up(clock: ClaimClock, zygote: ZygoteClient, redis: Any) -> None:
    """Shortly before the next due time, with nothing else to do, go through the start path.

    A Redis round trip on the claim's connection (``TIME``) and a message through the
    zygote's loop, so the claim and the start at the due time run warm (see
    :class:`~perseid_jobs.launch.protocol.Warm`). Once per due time, and only if the
    worker has nothing to do for a while before it (the clock decides): a busy path is warm.
    """
    if not clock.take_warm_up():
        return
    zygote.warm()
    with contextlib.suppress(*REDIS_ERRORS):
        sec, usec = redis.time()  # any round trip warms; this one also sets the clock
        clock.saw_now(sec * 1000 + usec // 1000)
