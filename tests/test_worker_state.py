"""The worker's state owners and the decisions of claiming and recovery, without Redis.

The running-task set (and the slots it derives), the outcomes to report, the
claim clock (fed a clock the test moves), and the pure choices claiming and
recovery make from them. Signals go to real processes of the test's own.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from perseid_jobs.core.models import TaskStatus
from perseid_jobs.launch.protocol import Exited
from perseid_jobs.launch.runtime import MAX_REASON_CHARS
from perseid_jobs.logs.shipper import Shipped
from perseid_jobs.store.script_io import Claimed, LeaseLapsed
from perseid_jobs.worker import claiming, recovery
from perseid_jobs.worker.claim_clock import WARM_AHEAD_S, ClaimClock
from perseid_jobs.worker.log_urls import BATCH, LINGER_S, LogUrls
from perseid_jobs.worker.outcome import ClaimedTask, Outcome, Running, run_key
from perseid_jobs.worker.reports import Reports
from perseid_jobs.worker.running_set import RunningSet

EXIT_0 = 0  # a waitpid status: exited with code 0
KILLED = signal.SIGKILL  # a waitpid status: killed by SIGKILL


def task(task_id: str, slots: int = 1, max_ms: int = 60_000, started_at: int = 1000) -> ClaimedTask:
    return ClaimedTask(
        task_id, "job", "{}", "1", str(started_at), "1000", str(max_ms), str(slots),
        None, None, None, "", "",
    )  # fmt: skip


def running(task_id: str, slots: int = 1, instance: str = "i1", pid: int | None = None) -> Running:
    run = Running.begin(task(task_id, slots), instance)
    run.pid = pid
    return run


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real process in its own group, as a task process is."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    yield proc
    proc.kill()
    proc.wait()


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- the running set ------------------------------------------------------------------------
def test_the_slot_total_is_the_sum_of_the_running_tasks_slots_on_every_path() -> None:
    s = RunningSet()
    s.add(running("a", 2, pid=11))
    s.add(running("b", 3))
    s.add(running("c", 4))
    assert (s.slots, s.free(16), len(s)) == (9, 7, 3)
    assert s.ended("a", 11) is not None  # an exit
    assert s.slots == 7
    s.kill_all("worker shutdown")  # no pid known: nothing to signal, each is marked
    assert [r.task.id for r in s.give_up()] == ["b", "c"]  # a drain out of time
    assert (s.slots, s.free(16), len(s)) == (0, 16, 0)


def test_an_exit_ends_the_task_only_if_it_is_of_the_tasks_own_process() -> None:
    s = RunningSet()
    s.add(running("a", pid=None))
    s.add(running("b"))
    s.started("b", 21)
    s.started("b", 99)  # a later report does not replace the first
    assert s.ended("b", 99) is None  # a reused process: the exit of the task before
    assert "b" in s and s.slots == 2
    assert s.ended("x", 21) is None  # not ours
    ended = s.ended("a", 5)  # exited before its Started was read: still its end
    assert ended is not None and ended.task.id == "a"
    assert s.ended("b", 21) is not None and len(s) == 0


def test_a_ghost_is_killed_dropped_and_its_exit_ignored_once(
    sleeper: subprocess.Popen[bytes],
) -> None:
    s = RunningSet()
    s.add(running("a", 2, instance="i1", pid=sleeper.pid))
    s.add(running("b", 1, instance="i1", pid=None))  # not started: cannot be killed yet
    s.add(running("c", 1, instance="i0", pid=7))  # of an id fenced away: not reconciled
    s.add(running("d", 1, instance="i1", pid=8))
    assert s.not_held({"d"}, "i1") == ["a"]
    s.drop_ghost("a")
    assert sleeper.wait(timeout=10) == -signal.SIGKILL
    assert "a" not in s and s.slots == 3
    assert s.ended("a", sleeper.pid) is None  # the ghost's exit, swallowed
    s.add(running("a", 2, pid=sleeper.pid))  # the pid's next exit counts again
    assert s.ended("a", sleeper.pid) is not None


def test_cancels_stop_known_pids_keep_unstarted_tasks_and_drop_unknown_ids(
    sleeper: subprocess.Popen[bytes],
) -> None:
    s = RunningSet()
    s.add(running("a", pid=sleeper.pid))
    s.add(running("b", pid=None))
    ids = {"a", "b", "gone"}
    s.cancel(ids, grace_s=30)
    assert ids == {"b"}
    assert sleeper.wait(timeout=10) == -signal.SIGTERM
    a = s.get("a")
    assert a is not None and a.forced == (TaskStatus.CANCELLED, "cancelled by user")
    assert a.kill_at is not None and a.kill_at in s.wake_times()


def test_deadlines_time_tasks_out_and_name_the_next_wake_up() -> None:
    s = RunningSet()
    late, fine = running("late"), running("fine")
    late.deadline_mono = time.monotonic() - 1
    s.add(late)
    s.add(fine)
    now = time.monotonic()
    assert s.kill_due(now)
    s.enforce_deadlines(now, grace_s=5)
    assert late.forced == (TaskStatus.FAILED, "timeout after 1m")
    assert late.kill_at == pytest.approx(now + 5)
    assert sorted(s.wake_times()) == [late.kill_at, fine.deadline_mono]
    assert not s.kill_due(now)


# -- the outcomes to report -----------------------------------------------------------------
def outcome(task_id: str) -> Outcome:
    return Outcome(task_id, "1", TaskStatus.COMPLETED, "0", "")


def test_a_failed_call_puts_back_what_it_took_before_what_came_since() -> None:
    r = Reports()
    r.queue("i1", outcome("a"))
    r.queue("i0", outcome("b"))
    taken = r.take()
    assert len(r) == 0
    r.queue("i1", outcome("c"))
    r.put_back(taken)
    assert [o.id for _, o in r.take()] == ["a", "b", "c"]


def test_reports_remember_the_last_outcomes_to_report_them_again() -> None:
    r = Reports(memory=2)
    for name in "abc":
        r.queue("i1", outcome(name), (name, "1", "1000"))
    r.take()
    assert not r.again(("a", "1", "1000"))  # forgotten: the oldest beyond the memory
    assert r.again(("c", "1", "1000")) and r.again(("b", "1", "1000"))
    r.queue("i2", outcome("d"))
    assert (r.ids_of("i1"), r.ids_of("i2")) == ({"b", "c"}, {"d"})


# -- the claim clock ------------------------------------------------------------------------
def test_the_due_time_counts_from_when_the_claim_went_out() -> None:
    now = Clock()
    c = ClaimClock(now)
    c.sending()
    now.t += 0.030  # the reply's trip
    c.on_reply(now_ms=5000, now_us_past_ms=250, next_due_ms=5050)
    assert c.due_at == pytest.approx(100 + (50_000 - 250) / 1e6)
    c.sending()
    c.on_reply(now_ms=5100, now_us_past_ms=0, next_due_ms=5050)  # due already
    assert c.due_at == now.t
    c.on_reply(now_ms=5100, now_us_past_ms=0, next_due_ms=-1)  # nothing pending
    assert c.due_at is None and c.wake_times(0.0) == []


def test_a_claim_is_asked_for_once_the_due_time_came() -> None:
    now = Clock()
    c = ClaimClock(now)
    assert c.asked  # the first turn claims
    c.settle()
    c.sending()
    c.on_reply(now_ms=0, now_us_past_ms=0, next_due_ms=1000)
    now.t += 0.999
    c.tick()
    assert not c.asked
    now.t += 0.001
    c.tick()
    assert c.asked and c.due_at is None
    c.settle()
    c.ask()
    assert c.asked


def test_the_start_path_is_warmed_once_per_due_time_after_a_quiet_while() -> None:
    now = Clock()
    c = ClaimClock(now)
    c.sending()
    c.on_reply(now_ms=0, now_us_past_ms=0, next_due_ms=100)
    due = 100.1
    assert c.wake_times(0.0) == [pytest.approx(due), pytest.approx(due - WARM_AHEAD_S)]
    assert c.wake_times(200.0) == [200.0, 200.0]  # never before ``not_before``
    now.t = due - WARM_AHEAD_S - 0.001
    assert not c.take_warm_up()
    now.t = due - WARM_AHEAD_S
    assert c.take_warm_up()
    assert not c.take_warm_up()
    c.sending()
    c.on_reply(now_ms=1, now_us_past_ms=0, next_due_ms=100)  # the same due time again
    assert not c.take_warm_up()
    c.sending()
    c.on_reply(now_ms=100, now_us_past_ms=0, next_due_ms=105)  # soon: a busy path is warm
    now.t += 0.005
    assert not c.take_warm_up() and len(c.wake_times(0.0)) == 1


def test_redis_time_is_the_last_seen_plus_the_time_since() -> None:
    now = Clock(10.0)
    c = ClaimClock(now)
    c.saw_now(5000)
    now.t = 10.25
    assert c.redis_now() == 5250
    c.sending()
    c.on_reply(now_ms=9000, now_us_past_ms=0, next_due_ms=-1)
    now.t = 10.5
    assert c.redis_now() == 9250


# -- claiming's and recovery's decisions -----------------------------------------------------
def test_a_batch_is_claimed_while_a_slot_is_free_and_claiming_is_allowed() -> None:
    assert claiming.claim_size(1, 16, True) == 16
    assert claiming.claim_size(0, 16, True) == 0
    assert claiming.claim_size(-2, 16, True) == 0  # after a fence, the old id's tasks
    assert claiming.claim_size(8, 16, False) == 0  # draining or not registered


def test_a_full_batch_asks_for_another_claim_and_a_lapsed_lease_fences() -> None:
    c = ClaimClock(Clock())
    c.settle()
    two = [task("a"), task("b")]
    assert claiming.on_claim(Claimed(0, -1, [], two, 0), 2, c) is not None and c.asked
    c.settle()
    assert claiming.on_claim(Claimed(0, -1, [], two[:1], 0), 2, c) is not None
    assert not c.asked
    assert claiming.on_claim(LeaseLapsed(), 2, c) is None


def test_an_exit_becomes_an_outcome_remembered_under_its_run() -> None:
    s, r = RunningSet(), Reports()
    s.add(running("a", 3, pid=31))
    assert claiming.on_exit(s, r, Exited("a", 32, EXIT_0, ""), 0) is None
    assert len(r) == 0 and s.slots == 3
    ended = claiming.on_exit(s, r, Exited("a", 31, EXIT_0, ""), 0)
    assert ended is not None and s.slots == 0
    run, got = ended
    assert got == Outcome("a", "1", TaskStatus.COMPLETED, "0", "")
    r.take()
    assert r.again(run_key(run.task))


def test_a_forced_stop_decides_the_outcome_and_long_reasons_are_cut() -> None:
    run = running("a", pid=41)
    said = claiming.outcome_of(run, Exited("a", 41, 1 << 8, "x" * 10_000), 0)
    assert (said.status, said.exit_code, len(said.reason)) == (
        TaskStatus.FAILED, "1", MAX_REASON_CHARS,
    )  # fmt: skip
    run.forced = (TaskStatus.CANCELLED, "cancelled by user")
    said = claiming.outcome_of(run, Exited("a", 41, KILLED, ""), 0)
    assert (said.status, said.exit_code, said.reason) == (
        TaskStatus.CANCELLED, "-9", "cancelled by user",
    )  # fmt: skip


def test_an_adopted_task_ends_before_the_reapers_hard_deadline() -> None:
    assert recovery.adopted_limit_s(60_000, deadline_ms=200_000, now_ms=100_000) == 60.0
    assert recovery.adopted_limit_s(60_000, deadline_ms=130_000, now_ms=100_000) == 25.0
    assert recovery.adopted_limit_s(60_000, deadline_ms=101_000, now_ms=100_000) == 0.0
    assert recovery.runs_under({"status": "running", "instance": "i1"}, "i1")
    assert not recovery.runs_under({"status": "completed", "instance": "i1"}, "i1")
    assert not recovery.runs_under({"status": "running", "instance": "i2"}, "i1")


def test_a_drain_out_of_time_kills_collects_and_reports_the_rest_failed() -> None:
    s, r = RunningSet(), Reports()
    assert recovery.drain_step(s, r, deadline=0.0, redis_down=False, collect=print)
    s.add(running("a", 2, instance="i0"))
    waited: list[float] = []
    later = time.monotonic() + 60
    assert not recovery.drain_step(s, r, later, redis_down=False, collect=waited.append)
    assert waited == [] and len(s) == 1
    assert not recovery.drain_step(s, r, 0.0, redis_down=False, collect=waited.append)
    assert waited == [10.0] and len(s) == 0 and s.slots == 0
    [(inst, failed)] = r.take()
    assert (inst, failed.status, failed.reason) == ("i0", TaskStatus.FAILED, "worker shutdown")
    r.queue(inst, failed)
    assert recovery.drain_step(s, r, 0.0, redis_down=True, collect=waited.append)  # gives up


def test_log_urls_wait_for_company_unless_a_batch_is_full() -> None:
    urls = LogUrls()
    assert not urls.due() and urls.due_at() == float("inf")
    urls.add([Shipped("t1", "file:///t1", Path("/spool/t1.log"))])
    came = urls.due_at() - LINGER_S
    assert not urls.due(came + LINGER_S / 2)
    assert urls.due(came + LINGER_S)
    urls.add(Shipped(f"t{i}", f"file:///t{i}", Path(f"/spool/t{i}.log")) for i in range(BATCH))
    assert urls.due(came)  # a full batch goes at once
