"""A model of flow control: limits, groups, priorities, pauses, over random sequences.

Hypothesis drives one partition on the session's ``redis-server`` through
:class:`perseid_jobs.store.scripts.Scripts`: two instances (one offers every job, the
other three of them) publish jobs with limits (``c1``: concurrency 1, ``c2``:
concurrency 2 and retried once, ``g2``: group concurrency 2, ``free``: none, ``r``: a
rate); schedule (a group of three or none, a priority of -5, 0 or 7, due now or in an
hour, or a series every hour from a past start), claim (each instance, 1 to 8 tasks,
within its free slots or a smaller cap), finish (completed, failed: a ``c2`` task comes
back pending, cancelled; with a claim in the same call or not), cancel (pending or
running), pause and resume of a job, a group or a series, a lease that lapses and the
reap, a republish with changed limits, and time passing (a task due in an hour made due
now). One fresh namespace per example; the invariants, checked after every step and of
every claim reply, are listed in :mod:`tests.model_flow_checks`. Each example ends with
everything resumed and run: every due task must run.

``PERSEID_MODEL_EXAMPLES`` sets the number of examples (default 100).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import redis
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from perseid_jobs.core.errors import Code
from perseid_jobs.core.models import TaskStatus
from perseid_jobs.core.recurrence import make_recurrence
from perseid_jobs.store.keys import Keys
from perseid_jobs.store.redisproc import RedisServer
from perseid_jobs.store.script_io import (
    AlreadyEnded,
    Cancelled,
    Claimed,
    LeaseLapsed,
    Paused,
    ScheduleArgs,
    Scheduled,
)
from perseid_jobs.store.scripts import Scripts
from perseid_jobs.worker.outcome import Outcome, given_next_starts, next_from_spec

from . import model_flow_checks as checks
from .model_flow_checks import GROUPS, PRIOS, SLOTS, TERMINAL, VARIANTS, definition
from .model_support import run_model

TTL_MS = 600_000  # nothing lapses by itself; a lapse moves the lease into the past
HOURLY = msgspec.json.encode(make_recurrence(every="1h")).decode()
ROLE_JOBS = [sorted(SLOTS), ["c1", "free", "g2"]]  # what each instance offers
ROLE_SLOTS = [4, 3]
pick = st.integers(min_value=0, max_value=10**6)
# Plain tasks (no group, priority 0) as often as laned ones: a job may gain a limit later.
groups = st.sampled_from(["", *GROUPS])
prios = st.sampled_from([0, *PRIOS])


class FlowModel(RuleBasedStateMachine, checks.FlowChecks):
    """One partition under flow control; Redis holds the state, the model what it did."""

    url = ""

    def __init__(self) -> None:
        super().__init__()
        self.r: Any = redis.Redis.from_url(self.url, decode_responses=True)
        self.k = Keys(f"mf{uuid.uuid4().hex[:10]}")
        self.s = Scripts(self.r, self.k)
        self.tasks: list[str] = []
        self.series: list[str] = []
        self.instances: list[str] = []
        self.role: dict[str, int] = {}  # instance -> which of ROLE_JOBS it offers
        self.local = [{job: 0 for job in jobs} for jobs in ROLE_JOBS]  # its job files
        self.published: dict[str, int] = {}
        self.paused: set[str] = set()
        self.paused_series: set[str] = set()
        self.serial = self.cancels = 0
        self.unchecked = False  # a step ran and its invariants did not pass (yet)
        self.init_checks()
        for role in range(len(ROLE_JOBS)):
            self.register(role)

    def teardown(self) -> None:
        try:
            if not self.unchecked:  # a failed step is the failure; liveness would mask it
                self.run_to_end(self.instances)
        finally:
            found = list(self.r.scan_iter(match=self.k.prefix + "*", count=1000))
            if found:
                self.r.delete(*found)
            self.r.close()

    # -- helpers ---------------------------------------------------------------------------
    def register(self, role: int) -> None:
        self.serial += 1
        name = f"i{self.serial}"
        self.s.register(name, ttl_ms=TTL_MS, slots=ROLE_SLOTS[role], host="h", pid=1,
                        version="t", jobs=self.defs(role))  # fmt: skip
        self.instances.append(name)
        self.role[name] = role
        before = dict(self.published)
        self.published.update(self.local[role])
        self.note_publish(before)

    def defs(self, role: int) -> dict[str, str]:
        return {job: definition(job, v) for job, v in self.local[role].items()}

    @staticmethod
    def choose(items: list[Any], i: int) -> Any:
        return items[i % len(items)] if items else None

    def running(self) -> list[str]:
        return sorted(self.r.zrange(self.k.running, 0, -1))

    def outcome(self, task_id: str, status: str) -> Outcome:
        """What the worker reports: a series run carries its series' next start."""
        h = self.task(task_id)
        nxt, skipped = "", 0
        if h.get("series"):
            origin = self.r.hget(self.k.series(h["series"]), "origin") or h["start_at"]
            nxt, skipped = next_from_spec(HOURLY, origin, h["start_at"], self.now_ms())
        return Outcome(task_id, h["attempt"], TaskStatus(status), "0", "", nxt, skipped)

    # -- rules -----------------------------------------------------------------------------
    @rule(
        job=st.sampled_from(sorted(SLOTS)),
        group=groups,
        prio=prios,
        when=st.sampled_from(["now", "now", "now", "later", "series"]),
    )
    def schedule(self, job: str, group: str, prio: int, when: str) -> None:
        self.unchecked = True
        series = when == "series"
        reply = self.s.schedule(
            ScheduleArgs(
                job=job, args="{}", slots=SLOTS[job], max_ms=60_000,
                delay_ms=3_600_000 if when == "later" else 0,
                at_ms=self.now_ms() - 7_200_000 if series else None,  # runs due at once
                spec=HOURLY if series else "", retries=int(job == "c2" and not series),
                backoff_ms=0, group=group, priority=prio,
            )
        )  # fmt: skip
        assert isinstance(reply, Scheduled) and not reply.existed, reply
        self.tasks.append(reply.task_id)
        h = self.task(reply.task_id)
        assert h["status"] == "pending" and checks.prio_of(h) == prio, h
        if series:
            self.series.append(h["series"])

    @rule(
        items=st.lists(
            st.tuples(st.sampled_from(sorted(SLOTS)), groups, prios), min_size=2, max_size=6
        )
    )  # fmt: skip
    def schedule_many(self, items: list[tuple[str, str, int]]) -> None:
        """A backlog at once, so that claims meet several lanes and several heads of one."""
        for job, group, prio in items:
            self.schedule(job=job, group=group, prio=prio, when="now")

    @rule(
        job=st.sampled_from(sorted(SLOTS)),
        group=st.sampled_from(GROUPS[1:]),
        prio=prios,
        n=st.integers(2, 5),
    )
    def schedule_backlog(self, job: str, group: str, prio: int, n: int) -> None:
        """Several tasks of one lane, so that limits fill and a lane has heads to spare."""
        for _ in range(n):
            self.schedule(job=job, group=group, prio=prio, when="now")

    @precondition(lambda self: bool(self.instances))
    @rule(inst=pick, n=st.integers(1, 8), cap=st.sampled_from([-1, -1, -1, 1, 2]))
    def claim(self, inst: int, n: int, cap: int) -> None:
        self.unchecked = True
        name = self.choose(self.instances, inst)
        free, held = self.before_claim(name, cap)
        reply = self.s.claim(name, n, cap)
        assert isinstance(reply, Claimed), reply
        self.check_claim(name, n, free, held, reply)

    @precondition(lambda self: self.r.zcard(self.k.running) > 0)
    @rule(which=pick, status=st.sampled_from(TERMINAL), refill=st.sampled_from([0, 0, 3, 8]))
    def finish(self, which: int, status: str, refill: int) -> None:
        """Report a task's end, and claim up to ``refill`` more in the same call."""
        self.unchecked = True
        task_id = self.choose(self.running(), which)
        h = self.task(task_id)
        name = h["instance"]
        live = name in self.instances
        free, held = self.before_claim(name, -1) if live else (0, {})
        reply = self.s.finish(name, [self.outcome(task_id, status)], claim_most=refill)
        assert reply.codes == [Code.OK]
        retried = (
            status == "failed"
            and int(h["attempt"]) <= int(h.get("retries") or 0)
            and not h.get("cancel_requested")
        )
        again = self.task(task_id)["status"]
        assert again == ("pending" if retried else status) or (retried and again == "running")
        if not live:
            assert reply.claim == LeaseLapsed()
            return
        assert isinstance(reply.claim, Claimed)
        # Lanes held back both before the end and after the claim were so at the claim.
        still = self.r.hgetall(self.k.lane_gate)
        held = {lane: g for lane, g in held.items() if still.get(lane) == g}
        self.check_claim(name, refill, free + int(h["slots"]), held, reply.claim)

    @precondition(lambda self: bool(self.tasks) and self.cancels < 4)
    @rule(which=pick)
    def cancel(self, which: int) -> None:
        self.unchecked = True
        task_id = self.choose(self.tasks, which)
        before = self.task(task_id)["status"]
        reply = self.s.cancel(task_id, whole_series=False, reason="cancelled by user")
        self.cancels += 1
        if before in TERMINAL:
            assert isinstance(reply, AlreadyEnded)
        else:
            assert isinstance(reply, Cancelled)
            want = "running" if before == "running" else "cancelled"
            assert reply.status == self.task(task_id)["status"] == want

    @rule(
        kind=st.sampled_from(["job", "group"]),
        which=pick,
        pause=st.booleans(),
        batch=st.sampled_from([1, 1000]),
    )
    def pause(self, kind: str, which: int, pause: bool, batch: int) -> None:
        """Pause or resume, a few lanes a call (the client repeats while any are held)."""
        self.unchecked = True
        name = self.choose(sorted(SLOTS) if kind == "job" else GROUPS[1:], which)
        field = f"{kind}\t{name}"
        reply = self.s.pause(kind, name, pause=pause, batch=batch)
        assert isinstance(reply, Paused)
        assert reply.changed == int((field in self.paused) != pause), (field, reply)
        while not pause and reply.held:
            reply = self.s.pause(kind, name, pause=False, batch=batch)
            assert isinstance(reply, Paused) and reply.changed == 0
        if pause:
            self.paused.add(field)
        else:
            self.paused.discard(field)

    @precondition(lambda self: bool(self.series))
    @rule(which=pick, pause=st.booleans())
    def pause_series(self, which: int, pause: bool) -> None:
        self.unchecked = True
        sid = self.choose(self.series, which)
        reply = self.s.pause("series", sid, pause=pause)
        if self.r.hget(self.k.series(sid), "status") != "active":
            # An ended series is paused no more, and cannot be paused again.
            assert isinstance(reply, AlreadyEnded), (sid, reply)
            assert not self.r.hexists(self.k.paused_series, sid), sid
            self.paused_series.discard(sid)
            return
        assert isinstance(reply, Paused)
        assert reply.changed == int((sid in self.paused_series) != pause), (sid, reply)
        if pause:
            self.paused_series.add(sid)
        else:
            self.paused_series.discard(sid)

    @precondition(lambda self: self.serial < 6)
    @rule(inst=pick)
    def lease_lapses(self, inst: int) -> None:
        """The instance stops renewing; a new one takes its place (and publishes)."""
        self.unchecked = True
        name = self.choose(self.instances, inst)
        self.r.zadd(self.k.instances, {name: self.now_ms() - 1})
        assert self.s.claim(name, 1) == LeaseLapsed()
        self.instances.remove(name)
        self.register(self.role[name])

    @rule()
    def reap(self) -> None:
        self.unchecked = True
        reply = self.s.reap()
        if reply.needs:
            assert self.s.reap(given_next_starts(reply.needs, reply.now)).needs == []

    @rule(inst=pick, job=pick, variant=pick)
    def republish(self, inst: int, job: int, variant: int) -> None:
        """An instance's job file changed a limit: it publishes all its jobs again."""
        self.unchecked = True
        name = self.choose(self.instances, inst)
        role = self.role[name]
        chosen = self.choose(ROLE_JOBS[role], job)
        self.local[role][chosen] = variant % len(VARIANTS[chosen])
        assert self.s.republish(name, self.defs(role)).dropped == []  # type: ignore[union-attr]
        before = dict(self.published)
        self.published.update(self.local[role])
        self.note_publish(before)

    @rule(which=pick)
    def time_passes(self, which: int) -> None:
        """A task due in an hour becomes due now (its start moves, as an hour passing
        does for it), wherever it waits: its lane, or the due set."""
        self.unchecked = True
        now = self.now_ms()
        later = [t for t, h in self.hashes().items()
                 if h["status"] == "pending" and int(h["start_at"]) > now]  # fmt: skip
        task_id = self.choose(later, which)
        if task_id is None:
            return
        lane = self.task(task_id).get("lane", "")
        self.r.hset(self.k.task(task_id), "start_at", now)
        if not lane:
            self.r.zadd(self.k.due, {task_id: now}, xx=True)
            return
        self.r.zadd(self.k.lane(lane), {task_id: now}, xx=True)
        self.r.zadd(checks.open_key(self.k, checks.lane_prio(lane)), {lane: now}, xx=True, lt=True)

    # -- invariants ------------------------------------------------------------------------
    @invariant()
    def check_everything(self) -> None:
        self.check_all()
        self.unchecked = False


# 100 examples take 60-100 s alone; a loaded CI machine took more than the suite's 120 s, and
# a timeout inside Hypothesis reads as a flaky failure, not as slowness.
@pytest.mark.timeout(900)
def test_flow_control_keeps_its_invariants(redis_server: RedisServer) -> None:
    run_model(FlowModel, redis_server.url, steps=40)


# -- Defects the model found (all fixed), kept as regression tests ----------------------------
@pytest.fixture
def m(redis_server: RedisServer) -> Iterator[FlowModel]:
    """The model, its end-of-example run included in the teardown."""
    FlowModel.url = redis_server.url
    model = FlowModel()
    yield model
    model.teardown()


def test_a_claim_takes_every_head_of_a_higher_priority_lane_first(m: FlowModel) -> None:
    m.schedule(job="g2", group="", prio=7, when="now")
    m.schedule(job="g2", group="", prio=7, when="now")
    m.schedule(job="free", group="", prio=0, when="now")
    m.claim(inst=0, n=2, cap=-1)  # takes one of the 7s and the 0, leaving a 7


def test_a_task_running_when_its_job_gets_a_limit_counts_against_it(m: FlowModel) -> None:
    m.schedule(job="free", group="", prio=0, when="now")
    m.claim(inst=0, n=1, cap=-1)
    m.republish(inst=0, job=sorted(SLOTS).index("free"), variant=1)  # concurrency 1
    m.schedule(job="free", group="", prio=0, when="now")
    m.claim(inst=0, n=1, cap=-1)
    m.check_everything()  # two running under concurrency 1


def test_cancelling_the_task_a_freed_unit_went_to_passes_the_unit_on(m: FlowModel) -> None:
    for group in ("", "A", "B"):
        m.schedule(job="c1", group=group, prio=0, when="now")
    m.claim(inst=0, n=8, cap=-1)  # one runs; the two other lanes wait in the job's gate
    m.finish(which=0, status="completed", refill=0)  # one of them reopens
    reopened = m.r.zrange(m.k.lanes, 0, -1)[0]
    m.cancel(which=m.tasks.index(m.r.zrange(m.k.lane(reopened), 0, 0)[0]))
    m.check_everything()  # the last lane waits in the gate, nothing of c1 running


def test_a_unit_a_group_limit_turns_down_goes_to_the_next_lane(m: FlowModel) -> None:
    m.republish(inst=0, job=sorted(SLOTS).index("g2"), variant=1)  # group 1, concurrency 3
    for group in ("B", "C", ""):
        m.schedule(job="g2", group=group, prio=0, when="now")
    m.claim(inst=0, n=3, cap=-1)  # the job is full
    for group, prio in (("A", 0), ("A", 0), ("A", 7), ("", -5)):
        m.schedule(job="g2", group=group, prio=prio, when="now")
    m.claim(inst=0, n=8, cap=-1)  # A7, A, and the -5 lane wait in the job's gate
    for group in ("C", "B"):  # a unit to A7, which runs; one to A, which A7 holds back
        m.finish(which=[m.task(t).get("group", "") for t in m.running()].index(group),
                 status="completed", refill=0)  # fmt: skip
        m.claim(inst=0, n=1, cap=-1)
    m.check_everything()  # the -5 lane waits in the job's gate, the job at 2 of 3
