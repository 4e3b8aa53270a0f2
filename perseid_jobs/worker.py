"""The worker instance: register, claim what fits, run each task in its own process.

One thread runs the loop below; the heartbeat has its own thread and
connection; the log shipper uploads in the background. The loop waits on
three things at once: the zygote's event pipe (a task started or ended), the
instance's wake-up list in Redis (a ``BLPOP`` left outstanding on its own
connection), and a self-pipe (signals, heartbeat news). Its timeout is the
nearest of: the next due task, a task's kill deadline, the next reap.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import redis

from . import __version__
from .connection import connect
from .errors import Code
from .keys import Keys
from .outcome import ClaimedTask, Outcome, next_from_spec, outcome_of_status, series_next
from .procs import ZygoteClient
from .runtime import MAX_REASON_CHARS
from .scripts import Scripts
from .settings import WorkerSettings
from .heartbeat import Heartbeat
from .models import TaskStatus
from .shipper import LogShipper
from .bucket import open_bucket
from .durations import format_duration
from .zygote import Exited, StartRequest, Started
from .wake import WakeChannel

log = logging.getLogger("perseid_jobs.worker")

class Running(msgspec.Struct):
    """A task this instance runs."""

    task: ClaimedTask
    started_mono: float
    deadline_mono: float
    pid: int | None = None
    kill_at: float | None = None
    forced: tuple[TaskStatus, str] | None = None


def new_instance_id() -> str:
    """A fresh instance id: host name and a random suffix."""
    host = socket.gethostname().split(".")[0][:24]
    return f"{host}-{uuid.uuid4().hex[:8]}"


class Worker:
    """One ``perseid-jobs worker`` process."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.s = settings
        self.keys = Keys(settings.namespace)
        self.redis = connect(settings.redis_url)
        self.scripts = Scripts(self.redis, self.keys)
        self.instance_id = settings.instance_id or new_instance_id()
        self.running: dict[str, Running] = {}
        self.pending: list[Outcome] = []
        self.need_claim = True
        self.next_due_mono: float | None = None
        self.next_reap = 0.0
        self.redis_now = (0, time.monotonic())
        self.stop_requested = False
        self.fenced = False
        self.drain_deadline: float | None = None
        self.cancels: set[str] = set()
        self._poke_r, self._poke_w = os.pipe()
        os.set_blocking(self._poke_r, False)
        os.set_blocking(self._poke_w, False)
        self.zygote: ZygoteClient | None = None
        self.shipper: LogShipper | None = None
        self.heart: Heartbeat | None = None
        self.wake: WakeChannel | None = None
        self.slots_used = 0

    # -- lifecycle -------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; return the process exit code."""
        self.s.logs_dir.mkdir(parents=True, exist_ok=True)
        self.zygote = ZygoteClient(self.s.jobs_dir)
        for line in self.zygote.ready.errors:
            log.error("job file skipped: %s", line)
        self.register()
        self.shipper = LogShipper(
            self.s.logs_dir,
            open_bucket(self.s.bucket_url, s3_endpoint_url=self.s.s3_endpoint_url),
            on_uploaded=self._record_log_url,
        )
        self.shipper.start()
        self.heart = Heartbeat(
            Scripts(connect(self.s.redis_url), self.keys),
            lambda: self.instance_id,
            interval=self.s.heartbeat_s,
            ttl=self.s.lease_ttl_s,
            on_lost=self._on_lost,
            on_cancels=self._on_cancels,
        )
        self.heart.start()
        self.wake = WakeChannel(self.s.redis_url)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        log.info(
            "instance %s serving %d jobs with %d slots",
            self.instance_id,
            len(self.zygote.ready.jobs),
            self.s.slots,
        )
        try:
            self.loop()
        finally:
            self.shutdown()
        return 0

    def register(self) -> None:
        """Announce this instance and publish its jobs."""
        assert self.zygote is not None
        jobs: list[str | int] = []
        for name, definition in self.zygote.ready.jobs.items():
            jobs += [name, msgspec.json.encode(definition).decode()]
        reply = self.scripts.call(
            "register",
            self.instance_id,
            int(self.s.lease_ttl_s * 1000),
            self.s.slots,
            socket.gethostname(),
            os.getpid(),
            __version__,
            len(self.zygote.ready.jobs),
            *jobs,
        )
        self._saw_now(reply[1])
        self.slots_used = 0
        self.need_claim = True

    def loop(self) -> None:
        """The main loop; returns once drained."""
        while True:
            if self.fenced:
                self.fence()
            if self.stop_requested and self.drain_deadline is None:
                self.begin_drain()
            if self.drain_deadline is not None and self.drain_step():
                return
            if self.pending or (self.need_claim and self.drain_deadline is None):
                self.finish_and_claim()
            self.enforce_deadlines()
            if time.monotonic() >= self.next_reap:
                self.reap()
            self.wait(self.next_timeout())

    def shutdown(self) -> None:
        """Stop everything this instance started."""
        if self.heart:
            self.heart.stop()
        if self.zygote:
            self.zygote.close()
        try:
            self.scripts.call("deregister", self.instance_id, "worker shutdown")
        except redis.RedisError as exc:
            log.warning("could not deregister: %s", exc)
        if self.shipper:
            self.shipper.stop(timeout=min(30.0, self.s.drain_timeout_s))
        if self.wake:
            self.wake.close()
        log.info("instance %s stopped", self.instance_id)

    # -- claiming and finishing ------------------------------------------------------------
    def finish_and_claim(self) -> None:
        """Report finished tasks and claim what fits, in one script call."""
        outcomes, self.pending = self.pending, []
        free = self.s.slots - self.slots_used
        want = self.s.claim_batch if free > 0 and self.drain_deadline is None else 0
        if not outcomes and want == 0:
            self.need_claim = False
            return
        try:
            if outcomes:
                argv: list[str | int] = [self.instance_id, want, len(outcomes)]
                for o in outcomes:
                    argv += o.argv()
                reply = self.scripts.call("finish", *argv)
                for o, code in zip(outcomes, reply[1], strict=True):
                    if code == Code.STALE:
                        log.warning("finish of %s was stale: the task was reaped meanwhile", o.id)
                claim = reply[2]
            else:
                claim = self.scripts.call("claim", self.instance_id, want)
        except redis.RedisError as exc:
            log.warning("Redis call failed, will retry: %s", exc)
            self.pending = outcomes + self.pending
            self.next_due_mono = time.monotonic() + 0.5
            return
        self.need_claim = False
        if claim[0] == Code.LEASE_LOST:
            self.fenced = True
            return
        self._saw_now(claim[1])
        next_due = int(claim[2])
        self.next_due_mono = (
            None if next_due < 0 else time.monotonic() + max(0, next_due - claim[1]) / 1000
        )
        self._on_cancels(list(claim[3]))
        for record in claim[4]:
            self.start_task(msgspec.convert(record, ClaimedTask))
        if claim[4]:
            self.need_claim = True  # more may fit
        self._apply_cancels()

    def start_task(self, task: ClaimedTask) -> None:
        """Hand a claimed task to the zygote."""
        assert self.zygote is not None
        now = time.monotonic()
        self.running[task.id] = Running(
            task=task, started_mono=now, deadline_mono=now + int(task.max_ms) / 1000
        )
        self.slots_used += int(task.slots)
        self.zygote.start(
            StartRequest(
                id=task.id,
                job=task.job,
                args=task.args,
                attempt=int(task.attempt),
                started_at_ms=int(task.started_at),
                last_completed_at=task.last_completed_at or "",
                skipped_runs=task.skipped_runs or "",
                log_path=str(self.log_path(task.id)),
                max_log_bytes=self.s.max_log_bytes,
            )
        )

    def log_path(self, task_id: str) -> Path:
        """Where a task's log file is written."""
        return self.s.logs_dir / f"{task_id}.log"

    def on_exit(self, event: Exited) -> None:
        """A task's process ended: queue its outcome."""
        run = self.running.pop(event.id, None)
        if run is None:
            return
        self.slots_used -= int(run.task.slots)
        status, code, reason = outcome_of_status(event.status)
        if event.reason:
            reason = f"{reason}: {event.reason}" if status is TaskStatus.FAILED else event.reason
        if run.forced is not None:
            status, reason = run.forced
        next_start, skipped = series_next(run.task, self.estimated_redis_now())
        self.pending.append(
            Outcome(
                id=run.task.id,
                token=run.task.attempt,
                status=status,
                exit_code=code,
                reason=reason[:MAX_REASON_CHARS],
                next_start=next_start,
                skipped=skipped,
            )
        )
        if self.shipper:
            self.shipper.submit(run.task.id, run.task.job, int(run.task.started_at))

    # -- deadlines, cancels, fencing, draining ---------------------------------------------
    def kill(self, run: Running, sig: int) -> None:
        """Signal a task's whole process group."""
        if run.pid is None:
            return
        try:
            os.killpg(run.pid, sig)
        except ProcessLookupError:
            try:
                os.kill(run.pid, sig)
            except ProcessLookupError:
                pass

    def stop_task(self, run: Running, status: TaskStatus, reason: str) -> None:
        """SIGTERM now, SIGKILL after the grace period; report ``status`` when it exits."""
        if run.forced is not None:
            return
        run.forced = (status, reason)
        run.kill_at = time.monotonic() + self.s.kill_grace_s
        self.kill(run, signal.SIGTERM)

    def enforce_deadlines(self) -> None:
        """Time out tasks past their max duration; SIGKILL those past their grace."""
        now = time.monotonic()
        for run in self.running.values():
            if run.forced is None and now >= run.deadline_mono:
                limit = format_duration(int(run.task.max_ms))
                self.stop_task(run, TaskStatus.FAILED, f"timeout after {limit}")
            elif run.kill_at is not None and now >= run.kill_at:
                self.kill(run, signal.SIGKILL)
                run.kill_at = None

    def _apply_cancels(self) -> None:
        for task_id in list(self.cancels):
            run = self.running.get(task_id)
            if run is not None and run.pid is not None:
                self.stop_task(run, TaskStatus.CANCELLED, "cancelled by user")
                self.cancels.discard(task_id)
            elif run is None:
                self.cancels.discard(task_id)

    def fence(self) -> None:
        """The lease lapsed: kill every task, then come back under a new id."""
        old = self.instance_id
        for run in self.running.values():
            run.forced = (TaskStatus.FAILED, f"instance {old} lost its lease")
            self.kill(run, signal.SIGKILL)
        self.collect_exits(timeout=5.0)
        self.instance_id = new_instance_id()
        self.fenced = False
        while True:
            try:
                self.register()
                break
            except redis.RedisError as exc:
                log.warning("re-register failed, retrying: %s", exc)
                time.sleep(1.0)
        if self.heart:
            self.heart.reset()
        log.warning("instance %s fenced; serving again as %s", old, self.instance_id)

    def begin_drain(self) -> None:
        """Stop claiming; running tasks get --drain-timeout to finish."""
        log.info("draining: %d running, up to %gs", len(self.running), self.s.drain_timeout_s)
        self.drain_deadline = time.monotonic() + self.s.drain_timeout_s
        try:
            self.scripts.call("drain", self.instance_id)
        except redis.RedisError as exc:
            log.warning("could not mark the instance draining: %s", exc)

    def drain_step(self) -> bool:
        """True once nothing runs and everything is reported."""
        assert self.drain_deadline is not None
        if not self.running and not self.pending:
            return True
        if self.running and time.monotonic() >= self.drain_deadline:
            for run in self.running.values():
                run.forced = (TaskStatus.FAILED, "worker shutdown")
                self.kill(run, signal.SIGKILL)
            self.collect_exits(timeout=10.0)
            for task_id in list(self.running):  # never reported: give up on them
                run = self.running.pop(task_id)
                self.pending.append(
                    Outcome(run.task.id, run.task.attempt, TaskStatus.FAILED, "", "worker shutdown")
                )
        return False

    def collect_exits(self, timeout: float) -> None:
        """Wait (bounded) until every running task reported its exit."""
        assert self.zygote is not None
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            r, _, _ = select.select([self.zygote], [], [], 0.1)
            if r:
                self.handle_zygote()

    # -- reaping ---------------------------------------------------------------------------
    def reap(self) -> None:
        """Fail dead instances' tasks and tasks past their hard deadline (idempotent)."""
        self.next_reap = time.monotonic() + self.s.reap_interval_s
        try:
            reply = self.scripts.call("reap", 0)
            if reply[3]:
                argv: list[str | int] = [len(reply[3])]
                for task_id, spec, origin, start_at in reply[3]:
                    nxt, skipped = next_from_spec(spec, origin, start_at, int(reply[1]))
                    argv += [task_id, nxt, skipped]
                reply = self.scripts.call("reap", *argv)
        except redis.RedisError as exc:
            log.warning("reap failed: %s", exc)
            return
        for task_id in reply[2]:
            log.warning("reaped task %s", task_id)

    # -- waiting ---------------------------------------------------------------------------
    def next_timeout(self) -> float:
        """Seconds until the loop must act without an event."""
        now = time.monotonic()
        when = [self.next_reap]
        if self.next_due_mono is not None:
            when.append(self.next_due_mono)
        for run in self.running.values():
            when.append(run.kill_at if run.kill_at is not None else run.deadline_mono)
        if self.drain_deadline is not None:
            when.append(self.drain_deadline)
        if self.pending or self.fenced or (self.stop_requested and self.drain_deadline is None):
            return 0.0
        return max(0.0, min(when) - now)

    def wait(self, timeout: float) -> None:
        """Block until an event or ``timeout``."""
        assert self.zygote is not None and self.wake is not None
        fds: list[Any] = [self.zygote, self._poke_r]
        if self.drain_deadline is None and not self.fenced:
            self.wake.arm(self.keys.wake(self.instance_id), self.s.heartbeat_s)
            if self.wake.fileno() >= 0:
                fds.append(self.wake)
        r, _, _ = select.select(fds, [], [], timeout)
        if self.zygote in r:
            self.handle_zygote()
        if self._poke_r in r:
            try:
                while os.read(self._poke_r, 512):
                    pass
            except BlockingIOError:
                pass
        if self.wake in r and self.wake.consume():
            self.need_claim = True
        if self.next_due_mono is not None and time.monotonic() >= self.next_due_mono:
            self.next_due_mono = None
            self.need_claim = True
        self._apply_cancels()

    def handle_zygote(self) -> None:
        """Act on the zygote's events."""
        assert self.zygote is not None
        for event in self.zygote.read_events():
            if isinstance(event, Started):
                run = self.running.get(event.id)
                if run is not None:
                    run.pid = event.pid
            elif isinstance(event, Exited):
                self.on_exit(event)

    # -- callbacks from other threads and signals ------------------------------------------
    def _poke(self) -> None:
        try:
            os.write(self._poke_w, b"x")
        except BlockingIOError:
            pass

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_requested = True
        self._poke()

    def _on_lost(self) -> None:
        self.fenced = True
        self._poke()

    def _on_cancels(self, ids: list[str]) -> None:
        if ids:
            self.cancels.update(ids)
            self._poke()

    def _record_log_url(self, task_id: str, url: str) -> None:
        self.scripts.call("set_log_url", task_id, url)

    # -- Redis time ------------------------------------------------------------------------
    def _saw_now(self, now_ms: Any) -> None:
        self.redis_now = (int(now_ms), time.monotonic())

    def estimated_redis_now(self) -> int:
        """Redis time now: the last Redis time seen plus the monotonic time since."""
        base, seen = self.redis_now
        return base + int((time.monotonic() - seen) * 1000)
