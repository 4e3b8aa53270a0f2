"""The worker instance: register, claim what fits, run each task in its own process.

One thread runs the loop below; the heartbeat has its own thread and connection; the log shipper
uploads in the background. The loop waits on three things at once: the zygote's event pipe (a task
started or ended), the instance's wake-up list in Redis (a ``BLPOP`` left outstanding on its own
connection), and a self-pipe (signals, heartbeat news). Its timeout is the nearest of: the next
due task, a kill deadline, the next reap, log URLs to record, the lease deadline, a Redis retry.

Faults (see docs/faults.md):

- Every Redis call of the loop is retried with backoff (:class:`Backoff`); redis-py does not retry
  on its own here, so the loop knows when a script may have run without its reply reaching us.
  Tasks keep running meanwhile, and their outcomes wait in ``reports`` until Redis answers.
- After such a doubt the loop *reconciles*: the instance's task set in Redis is the truth. A task
  Redis gives us that we do not run was claimed by a call whose reply was lost: we start it. One we
  already reported (a failover lost the report) is reported again. One we run that Redis no longer
  gives us is a ghost: killed, never reported.
- The lease deadline is tracked locally and conservatively (:class:`Lease`). Once it passes, the
  worker fences: kills its tasks, reports them under the old id (where the fencing token makes late
  reports change nothing), and registers again under a new id. The zygote enforces the same
  deadline on its own, so a stopped or hung worker's tasks die too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..launch.protocol import Exited, Started, drain_pipe
from ..logs.shipper import LogShipper, Shipped
from ..logs.spool import Spool
from ..store.connection import REDIS_ERRORS, Backoff, connect
from ..store.keys import Keys
from ..store.partitions import Partitions
from . import claiming, lifecycle, recovery
from .claim_clock import ClaimClock
from .dataflow import DataFlow
from .fanout import PartitionedScripts
from .heartbeat import Heartbeat, Lease
from .jobscan import JobsWatch
from .log_urls import LogUrls
from .orphan_logs import OrphanLogs
from .outcome import ClaimedTask
from .reports import Reports
from .running_set import RunningSet
from .settings import WorkerSettings
from .wake import WakeChannel
from .wake_pubsub import WakeSubscription
from .zygote_client import ZygoteClient

if TYPE_CHECKING:
    from .metrics import WorkerMetrics

log = logging.getLogger("perseid_jobs.worker")


class Worker:
    """One ``perseid-jobs worker`` process."""

    def __init__(self, settings: WorkerSettings, zygote: ZygoteClient | None = None) -> None:
        """``zygote``: one already started for these settings (else :meth:`run` starts it)."""
        self.s = settings
        # One partition until the count is read from Redis (lifecycle.bind_partitions).
        self.parts = Partitions(settings.namespace, 1)
        self.keys: Keys = self.parts.keys[0]
        # No retries inside redis-py: the loop retries, knowing a reply may have been lost.
        self.redis = connect(
            settings.redis_url,
            retries=0,
            socket_timeout=max(1.0, min(10.0, settings.lease_ttl_s / 2)),
        )
        self.scripts = PartitionedScripts(self.redis, self.parts, poll_every_s=settings.heartbeat_s)
        self.partitions_bound = False
        self.lease = Lease(settings.instance_id or recovery.new_instance_id(), settings.lease_ttl_s)
        self.backoff = Backoff(cap=max(0.5, min(2.0, settings.heartbeat_s)))
        # The state's owners: what runs, what waits to be reported, when to claim next.
        self.running = RunningSet()
        self.reports = Reports()
        self.clock = ClaimClock()
        self.log_urls = LogUrls()
        self.flow = DataFlow(settings.max_result_bytes)  # progress; results of parents
        self.orphans = OrphanLogs()  # reaped tasks that may never get a log (orphan_logs)
        self.reconcile_due = False
        self.drain_marked = False
        self.next_reap = 0.0
        self.stop_requested = False
        self.cold = False  # a second SIGTERM/SIGINT: kill the tasks now (recovery.go_cold)
        self.fenced = False
        self.drain_deadline: float | None = None
        self.cancels: set[str] = set()
        self._poke_r, self._poke_w = os.pipe()
        for fd in (self._poke_r, self._poke_w):
            os.set_blocking(fd, False)
        self.zygote: ZygoteClient | None = zygote
        self.jobs = JobsWatch(settings.jobs_dir, settings.jobs_rescan_s)
        self.shipper: LogShipper | None = None
        self.spool: Spool | None = None
        self.metrics: WorkerMetrics | None = None
        self.last_loop = time.monotonic()
        self.heart: Heartbeat | None = None
        self.wake: WakeChannel | WakeSubscription | None = None
        self.wake_client: Any = None  # the wake-up and heartbeat have their own connections
        self.heart_client: Any = None

    @property
    def instance_id(self) -> str:
        """The id this process serves under now (a new one after fencing)."""
        return self.lease.instance_id

    @property
    def redis_down(self) -> bool:
        """True while the loop's Redis calls fail (and it backs off)."""
        return self.backoff.down_since is not None

    @property
    def registered(self) -> bool:
        """True while the current id is registered and its lease believed alive."""
        return self.lease.deadline is not None

    # -- lifecycle -------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; return the process exit code."""
        # First: a signal's default action is to exit, and a stop asked for while this
        # starts (even before it registers) must still drain and deregister.
        signal.signal(signal.SIGHUP, self._on_hup)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        lifecycle.start_parts(self)
        try:
            self.loop()
        finally:
            self.shutdown()
        return 0

    def loop(self) -> None:
        """The main loop; returns once drained."""
        while True:
            self.last_loop = time.monotonic()
            if self.registered and self.lease.lapsed():
                log.error(
                    "instance %s: no lease renewal for %gs", self.instance_id, self.s.lease_ttl_s
                )
                self.fenced = True
            if self.fenced:
                recovery.fence(self)
            if self.stop_requested and self.drain_deadline is None:
                self.drain_deadline = recovery.begin_drain(
                    len(self.running), self.s.drain_timeout_s
                )
            if self.cold:
                self.drain_deadline = recovery.go_cold(self.drain_deadline, len(self.running))
            if self.drain_deadline is not None and recovery.drain_step(
                self.running, self.reports, self.drain_deadline, self.redis_down, self.collect
            ):
                return
            if self.backoff.ready():
                self.talk_to_redis()
                assert self.zygote is not None
                claiming.warm_up(self.clock, self.zygote, self.redis)
            self.enforce_deadlines()
            if self.drain_deadline is None:
                self.jobs.step(self)
            self.wait(self.next_timeout())

    def talk_to_redis(self) -> None:
        """Every Redis call of the loop: one failure backs them all off."""
        try:
            if not self.registered and self.drain_deadline is None:
                lifecycle.register(self)
                log.info("instance %s registered", self.instance_id)
            if self.drain_deadline is not None and not self.drain_marked and self.registered:
                self.scripts.drain(self.instance_id)
                self.drain_marked = True
            if self.reconcile_due and self.registered:
                self.reconcile()
            if self.jobs.publish_due and self.registered:
                self.jobs.publish(self)
            self.flow.write(self)  # the tasks' progress, before a finish
            if self.reports or (self.clock.asked and self.drain_deadline is None):
                self.claim()
            while self.log_urls.due():
                self.log_urls.record(self.scripts, self.shipper)
            if time.monotonic() >= self.next_reap:
                recovery.reap(self)
        except REDIS_ERRORS as exc:
            self.reconcile_due = True
            delay = self.backoff.failed()
            if self.backoff.failures == 1:
                log.warning("Redis call failed (%s); retrying with backoff, tasks run on", exc)
            else:
                log.debug("Redis still failing (%s); next try in %.2fs", exc, delay)
            return
        down = self.backoff.succeeded()
        if down is not None:
            log.warning("Redis answers again after %.1fs", down)

    def shutdown(self) -> None:
        """Stop everything this instance started."""
        lifecycle.stop_parts(self)

    # -- the parts joined: claiming and recovery -------------------------------------------
    def claim(self) -> None:
        """Report what ended and claim what fits, in one call; start what it gave (or fence)."""
        may_claim = self.drain_deadline is None and self.registered
        want = claiming.claim_size(self.running.free(self.s.slots), self.s.claim_batch, may_claim)
        # Each partition's instance hash counts its own tasks only: bound by the free slots.
        cap = self.running.free(self.s.slots) if len(self.parts) > 1 else -1
        reply = claiming.finish_and_claim(
            self.scripts, self.reports, self.clock, self.instance_id, want, cap
        )
        if reply is None:
            return
        claim = claiming.on_claim(reply, want, self.clock)
        if claim is None:  # the lease lapsed
            self.fenced = True
            return
        self.on_cancels(claim.cancels)
        self.flow.read_inputs(self.scripts, claim.tasks)  # the parents' results of dependents
        for task in claim.tasks:
            if self.metrics:
                lag_s = (int(task.started_at) - int(task.start_at)) / 1000
                self.metrics.claimed(task.job, lag_s)
            self.start(task)
        self.apply_cancels()

    def start(self, task: ClaimedTask, max_s: float | None = None) -> None:
        """Start a task claimed for the current id (for at most ``max_s``)."""
        assert self.zygote is not None
        log_path, limit = self.log_path(task.id), self.s.max_log_bytes
        claiming.start_task(
            self.running, self.zygote, task, self.instance_id, log_path, limit, max_s,
            self.flow.start_data(self.scripts, task),
        )  # fmt: skip

    def on_exit(self, event: Exited) -> None:
        """A task's process ended: its outcome waits to be reported, its log to be shipped."""
        ended = claiming.on_exit(self.running, self.reports, event, self.clock.redis_now())
        if ended is None:
            return
        run, outcome = ended
        claiming.note_kill(run, event.pid, self.log_path(run.task.id))
        if self.metrics:
            took_s = time.monotonic() - run.started_mono
            self.metrics.finished(run.task.job, outcome.status.value, took_s)
        if self.shipper:
            self.shipper.submit(run.task.id, run.task.job, int(run.task.started_at))

    def reconcile(self) -> None:
        """Agree with Redis on what this instance runs (after a doubt, and every reap)."""
        inst = self.instance_id
        unknown = recovery.reconcile(self.redis, self.parts, inst, self.running, self.reports)
        self.reconcile_due = False
        if unknown:
            now_ms = self.clock.redis_now()
            recovery.adopt(self.redis, self.parts, inst, unknown, self.reports, self.start, now_ms)

    def collect(self, timeout: float) -> None:
        """Wait (bounded) until every running task, on any zygote, reported its exit."""
        self.jobs.collect(self, timeout)

    # -- where tasks' logs go -------------------------------------------------------------
    def log_path(self, task_id: str) -> Path:
        """Where a task's log file is written: this instance's spool."""
        assert self.spool is not None
        return self.spool.log_path(task_id)

    # -- deadlines, cancels ----------------------------------------------------------------
    def enforce_deadlines(self) -> None:
        """Time out tasks past their max duration; SIGKILL those past their grace."""
        now = time.monotonic()
        if self.running.kill_due(now):
            self.read_exits_first()
        self.running.enforce_deadlines(now, self.s.kill_grace_s)

    def read_exits_first(self) -> None:
        """Before signalling tasks: read the exits the zygotes already reported.

        A reused process (``max_tasks_per_process``) may have ended the task and
        taken the next one: its pid must not be killed for the task that ended.
        The zygote writes a task's exit before it hands that process another task.
        """
        zygotes = self.jobs.zygotes(self.zygote)
        r, _, _ = select.select(list(zygotes), [], [], 0)
        if self.zygote in r:
            self.handle_zygote()
        self.jobs.on_readable(self, r)

    def apply_cancels(self) -> None:
        """Stop the running tasks a user cancelled (once their pid is known)."""
        if self.cancels and any(t in self.running for t in self.cancels):
            self.read_exits_first()
        self.running.cancel(self.cancels, self.s.kill_grace_s)

    # -- waiting ---------------------------------------------------------------------------
    def next_timeout(self) -> float:
        """Seconds until the loop must act without an event."""
        if self.fenced or (self.stop_requested and self.drain_deadline is None):
            return 0.0
        now = time.monotonic()
        redis_ready = self.backoff.ready(now)
        if redis_ready and self.redis_work_waiting():
            return 0.0
        # What needs Redis (a reap, a due claim) waits out a backoff: a time it passed
        # must not turn the wait into a spin while Redis is away.
        redis_from = now if redis_ready else self.backoff.retry_at
        when = [max(self.next_reap, redis_from), *self.clock.wake_times(redis_from)]
        when.append(max(self.log_urls.due_at(), redis_from))
        if not redis_ready:
            when.append(self.backoff.retry_at)  # the next try
        when += self.running.wake_times()
        if self.drain_deadline is not None:
            when.append(self.drain_deadline)
        if self.lease.deadline is not None:
            when.append(self.lease.deadline)
        if self.drain_deadline is None:
            when += self.jobs.wake_times()  # the next rescan, a reload's deadline
        return max(0.0, min(when) - now)

    def redis_work_waiting(self) -> bool:
        """True if the next :meth:`talk_to_redis` has something to do right away."""
        claiming = self.clock.asked and self.drain_deadline is None
        return bool(
            self.reports
            or self.reconcile_due
            or self.log_urls.due()
            or (self.jobs.publish_due and self.registered)
            or claiming
            or (not self.registered and self.drain_deadline is None)
        )

    def wait(self, timeout: float) -> None:
        """Block until an event or ``timeout``."""
        assert self.zygote is not None and self.wake is not None
        fds: list[Any] = [self.zygote, self._poke_r, *self.jobs.fds()]
        listening = self.drain_deadline is None and self.registered and self.backoff.ready()
        wake_keys = [keys.wake(self.instance_id) for keys in self.parts]  # list or channels
        if listening and self.wake.arm(wake_keys, self.s.heartbeat_s):
            fds.append(self.wake)
        r, _, _ = select.select(fds, [], [], timeout)
        if self.zygote in r:
            self.handle_zygote()
        if self._poke_r in r:
            drain_pipe(self._poke_r)
        self.jobs.on_readable(self, r)
        if (self.wake in r and self.wake.consume()) or self.wake.overdue():
            self.clock.ask()
        self.clock.tick()
        self.apply_cancels()

    def handle_zygote(self, zygote: ZygoteClient | None = None) -> None:
        """Act on the events of the zygote (or of ``zygote``, one retired)."""
        zygote = zygote or self.zygote
        assert zygote is not None
        for event in zygote.read_events():
            if isinstance(event, Started):
                self.running.started(event.id, event.pid)
            elif isinstance(event, Exited):
                self.on_exit(event)

    # -- callbacks from other threads and signals ------------------------------------------
    def _poke(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._poke_w, b"x")

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.stop_requested:
            self.cold = True  # a second one: do not wait for the tasks (as Celery does)
        self.stop_requested = True
        self._poke()

    def _on_hup(self, signum: int, _frame: Any) -> None:
        self.jobs.hup = True  # load the jobs again now (see jobscan)
        self._poke()

    def on_renewed(self, deadline: float) -> None:
        """From the heartbeat's thread: every zygote whose tasks run enforces the lease."""
        for zygote in self.jobs.zygotes(self.zygote):
            zygote.lease_until(deadline)

    def on_lost(self, instance_id: str) -> None:
        if instance_id == self.instance_id:
            log.error("instance %s: Redis says its lease lapsed", instance_id)
            self.fenced = True
            self._poke()

    def on_cancels(self, ids: list[str]) -> None:
        if ids:
            self.cancels.update(ids)
            self._poke()

    def on_shipped(self, shipped: list[Shipped]) -> None:
        """From the shipper's thread: the loop records them, in one call per batch."""
        self.log_urls.add(shipped)
        self._poke()
