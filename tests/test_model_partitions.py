"""A model of a namespace of several partitions and the outbox between them.

Hypothesis drives a namespace of 3 partitions on the session's ``redis-server`` through
the product's own calls: schedule (routed by :func:`perseid_jobs.api.routing.route`:
spread, after a task in its partition, or under an idempotency key, which with
``--after`` a task in another partition waits in the key's partition through the
outbox), claim (within the free slots over all partitions, as the worker passes them),
finish (completed, failed, cancelled), cancel, the death of an instance and the reap of
every partition, and the outbox: deliver (``deliver.lua``) with or without the ack that
follows (a deliverer that dies between the two leaves the delivery to be applied again),
a late ack, a delivery applied once more (a second deliverer that read it before the
ack), and the full drain (:func:`perseid_jobs.store.outbox.drain`). A finisher, a
scheduler and a canceller each deliver at once or die first, at random. One fresh
namespace per example; the invariants, checked after every step, are listed in
:mod:`tests.model_partitions_checks`. Once every outbox is drained none holds anything
and every task whose parent ended is settled as that end says.

``PERSEID_MODEL_EXAMPLES`` sets the number of examples (default 100).
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest
import redis
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from perseid_jobs.api.client import Client
from perseid_jobs.api.routing import route
from perseid_jobs.api.scheduling import fingerprint
from perseid_jobs.core.errors import Code
from perseid_jobs.core.models import JobDefinition, TaskStatus
from perseid_jobs.store import outbox
from perseid_jobs.store.partitions import partition_of_id
from perseid_jobs.store.redisproc import RedisServer
from perseid_jobs.store.script_io import (
    AlreadyEnded,
    Cancelled,
    Claimed,
    ClaimReply,
    KeyHeld,
    ScheduleArgs,
    Scheduled,
)
from perseid_jobs.worker.outcome import Outcome

from . import model_partitions_checks as checks
from .model_partitions_checks import TERMINAL, Recorded
from .model_support import run_model

P = 3
JOBS = {"a": 1, "b": 2}  # job name -> slots
TTL_MS = 600_000  # nothing lapses by itself; a death moves the lease into the past
KEYS = [f"key{n}" for n in range(12)]
pick = st.integers(min_value=0, max_value=10**6)
ENDS = ["completed", "completed", "failed", "cancelled"]  # a completed parent releases
# Who made a delivery applies it at once, or dies first and leaves it to the others.
at_once = st.sampled_from([False, False, False, True])


class PartitionsModel(RuleBasedStateMachine, checks.Checks):
    """The namespace's partitions; Redis holds the state, the model what it did to it."""

    url = ""

    def __init__(self) -> None:
        super().__init__()
        self.r: Any = redis.Redis.from_url(self.url, decode_responses=True)
        self.ns = f"mp{uuid.uuid4().hex[:10]}"
        self.c = Client(self.r, namespace=self.ns, partitions=P)
        self.parts = self.c.partitions(record=True)
        self.history: list[tuple[int, tuple[str, str, str, str]]] = []  # (target, applied)
        self.s = [Recorded(self.r, keys, i, self.history) for i, keys in enumerate(self.parts)]
        self.instances: list[str] = []
        self.slots: dict[str, int] = {}  # instance -> slots_total
        self.tasks: list[str] = []  # every task made, in order
        self.running: list[str] = []  # claimed and neither reported nor reaped
        self.held: dict[str, tuple[str, str, int]] = {}  # running -> instance, attempt, slots
        self.applied: set[str] = set()  # delivery ids applied at least once
        self.unacked: dict[int, list[str]] = {i: [] for i in range(P)}  # applied, not acked
        self.serial = 0
        self.deaths = self.cancels = 0
        self.init_checks()
        for slots in (3, 2):
            self.register(slots)

    def teardown(self) -> None:
        found = list(self.r.scan_iter(match="{" + self.ns + "*", count=1000))
        if found:
            self.r.delete(*found)
        self.r.close()

    # -- helpers ---------------------------------------------------------------------------
    def register(self, slots: int) -> None:
        """Register in every partition, as the worker does."""
        self.serial += 1
        name = f"i{self.serial}"
        jobs = {
            job: msgspec.json.encode(JobDefinition(slots=n, max_duration_ms=60_000)).decode()
            for job, n in JOBS.items()
        }
        for s in self.s:
            s.register(name, ttl_ms=TTL_MS, slots=slots, host="h", pid=1, version="t", jobs=jobs)
        self.instances.append(name)
        self.slots[name] = slots

    @staticmethod
    def choose(items: list[Any], i: int) -> Any:
        return items[i % len(items)] if items else None

    def key_for(self, i: int, parent: str | None, elsewhere: bool) -> str:
        """A key; with ``elsewhere``, one whose partition is not the parent's."""
        keys = KEYS
        if parent and elsewhere:
            home = partition_of_id(parent)
            keys = [k for k in KEYS if self.parts.for_idempotency_key(k) != home]
        return str(self.choose(keys, i))

    def drain(self, sources: list[int]) -> None:
        """What a finisher, scheduler or canceller does next: deliver, and ack (with one
        partition's scripts per index, as Client.drain_outboxes and the worker call it)."""
        outbox.drain(self.r, sources, self.s.__getitem__)

    def forget(self, task_id: str) -> None:
        self.running.remove(task_id)
        del self.held[task_id]

    # -- rules -----------------------------------------------------------------------------
    @initialize(jobs=st.lists(st.sampled_from(sorted(JOBS)), min_size=1, max_size=3))
    def roots(self, jobs: list[str]) -> None:
        """A few tasks due now, spread, for the others to wait on."""
        for job in jobs:
            self.submit(job, None, "", False, 0, False)

    @rule(
        job=st.sampled_from(sorted(JOBS)),
        later=st.sampled_from([False, False, False, True]),
        after=st.one_of(st.none(), st.none(), pick),
        key=st.one_of(st.none(), pick),
        retries=st.sampled_from([0, 0, 1]),
        deliver_now=at_once,
    )
    def schedule(
        self, job: str, later: bool, after: int | None, key: int | None, retries: int,
        deliver_now: bool,
    ) -> None:  # fmt: skip
        """A task: spread, or after any task, with or without a key."""
        parent = self.choose(self.tasks, after) if after is not None else None
        keyname = self.key_for(key, parent, elsewhere=False) if key is not None else ""
        self.submit(job, parent, keyname, later and not parent, retries, deliver_now)

    @precondition(lambda self: bool(self.tasks))
    @rule(
        job=st.sampled_from(sorted(JOBS)),
        after=pick,
        key=pick,
        retries=st.sampled_from([0, 0, 1]),
        deliver_now=at_once,
    )
    def schedule_elsewhere(
        self, job: str, after: int, key: int, retries: int, deliver_now: bool
    ) -> None:
        """A keyed task after one of the last tasks made (the likeliest to be still live),
        its key's partition not that task's: it waits there through the outbox."""
        parent = self.choose(self.tasks[-4:], after)
        keyname = self.key_for(key, parent, elsewhere=True)
        self.submit(job, parent, keyname, False, retries, deliver_now)

    def submit(
        self, job: str, parent: str | None, keyname: str, later: bool, retries: int,
        deliver_now: bool,
    ) -> None:  # fmt: skip
        """Route and schedule as Client.schedule does; the reply and the task as they must be."""
        self.serial += 1
        request = f"req{self.serial}"
        where = route(self.c, key=keyname, after=parent or "", request=request)
        home = self.parts.keys.index(where.keys)
        pstatus = self.task(parent)["status"] if parent else ""
        fp = fingerprint((job, "{}", "", "+3600000" if later else "", parent or ""))
        reply = self.s[home].schedule(
            ScheduleArgs(
                job=job, args="{}", slots=JOBS[job], max_ms=60_000,
                delay_ms=3_600_000 if later else 0, key=keyname, after=parent or "",
                retries=retries, backoff_ms=0, request_id=request,
                fingerprint=fp if keyname else "", parent_partition=where.parent_partition,
            )
        )  # fmt: skip
        if isinstance(reply, KeyHeld) or (isinstance(reply, Scheduled) and reply.existed):
            holder = reply.holder if isinstance(reply, KeyHeld) else reply.task_id
            assert keyname and holder in self.tasks
            assert self.task(holder)["status"] not in TERMINAL
            return
        assert isinstance(reply, Scheduled)
        task_id = reply.task_id
        self.tasks.append(task_id)
        assert partition_of_id(task_id) == home
        h = self.task(task_id)
        if where.parent_partition is not None:
            # Whatever its parent's state, it waits here and learns it through the outbox.
            assert where.parent_partition == partition_of_id(parent or "") != home
            assert where.parent_status == (pstatus if pstatus in TERMINAL else "")
            assert (h["status"], h["start_after"]) == ("pending", parent), h
            assert self.r.zscore(where.keys.blocked, task_id) is not None
            if deliver_now:
                self.drain([home])  # what Client._settle_remote does
        elif pstatus == "completed":
            assert h["status"] == "pending" and self.r.zscore(where.keys.due, task_id), h
        elif pstatus in TERMINAL:
            assert (h["status"], h["reason"]) == ("cancelled", f"dependency {parent} {pstatus}")
        else:
            assert h["status"] == "pending", h

    @precondition(lambda self: bool(self.instances))
    @rule(inst=pick, first=st.integers(0, P - 1), n=st.integers(1, 4))
    def claim(self, inst: int, first: int, n: int) -> None:
        """Claim in each partition in turn, within the slots free over all of them."""
        name = self.choose(self.instances, inst)
        for turn in range(P):
            part = (first + turn) % P
            free = self.free(name)
            n -= self.took(name, part, self.s[part].claim(name, n, free), n, free)
            if n <= 0:
                return

    def free(self, name: str) -> int:
        """What the worker passes: its slots free over all partitions."""
        return self.slots[name] - sum(slots for i, _, slots in self.held.values() if i == name)

    def took(self, name: str, part: int, reply: ClaimReply, most: int, free: int) -> int:
        """Record what a claim took; how many."""
        assert isinstance(reply, Claimed), reply
        assert len(reply.tasks) <= most and sum(int(t.slots) for t in reply.tasks) <= free
        for t in reply.tasks:
            assert partition_of_id(t.id) == part and t.id not in self.held
            self.running.append(t.id)
            self.held[t.id] = (name, t.attempt, int(t.slots))
        return len(reply.tasks)

    @precondition(lambda self: bool(self.running))
    @rule(which=pick, status=st.sampled_from(ENDS), refill=st.integers(0, 2), deliver_now=at_once)
    def finish(self, which: int, status: str, refill: int, deliver_now: bool) -> None:
        """Report a task's end, and claim up to ``refill`` more there, as a worker does."""
        task_id = self.choose(self.running, which)
        name, attempt, _ = self.held[task_id]
        part = partition_of_id(task_id) or 0
        h = self.task(task_id)
        retried = (
            status == "failed"
            and int(attempt) <= int(h.get("retries") or 0)
            and not h.get("cancel_requested")
        )
        waiters = self.r.scard(self.remote_waiting(part, task_id))
        outcome = Outcome(task_id, attempt, TaskStatus(status), "0", "")
        free = self.free(name) + self.held[task_id][2]
        reply = self.s[part].finish(name, [outcome], refill, free)
        assert reply.codes == [Code.OK]
        self.forget(task_id)
        self.took(name, part, reply.claim, refill, free)
        again = "running" if task_id in self.held else "pending"  # retried, and claimed back
        assert self.task(task_id)["status"] == (again if retried else status)
        if status == "completed":
            assert reply.outbox == waiters  # one settle per task waiting elsewhere
        if deliver_now and reply.outbox:
            self.drain([part])  # as the worker's finish does (fanout.PartitionedScripts)

    # A few per example: more would end most tasks before anything else happened to them.
    @precondition(lambda self: bool(self.tasks) and self.cancels < 3)
    @rule(which=pick, deliver_now=at_once)
    def cancel(self, which: int, deliver_now: bool) -> None:
        task_id = self.choose(self.tasks, which)
        part = partition_of_id(task_id) or 0
        before = self.task(task_id)["status"]
        reply = self.s[part].cancel(task_id, whole_series=False, reason="cancelled by user")
        self.cancels += 1
        if before in TERMINAL:
            assert isinstance(reply, AlreadyEnded)
        else:
            assert isinstance(reply, Cancelled)
            after = self.task(task_id)["status"]
            assert after == ("running" if before == "running" else "cancelled")
        if deliver_now:
            self.drain([part])  # as Client.cancel does

    @precondition(lambda self: self.deaths < 2)  # as for cancel
    @rule(inst=pick)
    def instance_dies(self, inst: int) -> None:
        """Its lease lapses (its expiry moves into the past); every partition reaps it."""
        name = self.choose(self.instances, inst)
        held = sorted(t for t in self.running if self.held[t][0] == name)
        now = self.now_ms()
        for keys in self.parts:
            self.r.zadd(keys.instances, {name: now - 1})
        reaped = [t for s in self.s for t in s.reap().reaped]
        assert sorted(reaped) == held
        for task_id in held:
            self.forget(task_id)
            assert self.task(task_id)["status"] in ("failed", "pending")
        assert not any(self.r.exists(keys.instance(name)) for keys in self.parts)
        self.instances.remove(name)
        self.deaths += 1
        self.register(self.slots[name])

    @rule(
        source=st.integers(0, P - 1),
        which=pick,
        how=st.sampled_from(["first", "first", "one", "one", "all"]),
        ack=st.booleans(),
    )
    def deliver(self, source: int, which: int, how: str, ack: bool) -> None:
        """Apply the first few of a partition's deliveries, or one of them, or drain every
        outbox; without ``ack`` the deliverer dies before acknowledging what it applied,
        which stays to be applied again."""
        if how == "all":
            self.deliver_everything()
            return
        entries = outbox.pending(self.r, self.parts.keys[source])
        if not entries:
            return
        i = which % len(entries)
        entries = entries[i : i + 1] if how == "one" else entries[: i + 1]
        by_target: dict[int, list[tuple[str, str, str, str]]] = {}
        for _, target, item in entries:
            by_target.setdefault(target, []).append(item)
        for target, items in by_target.items():
            assert self.s[target].deliver(items).applied == len(items)
        ids = [delivery_id for delivery_id, _, _ in entries]
        self.applied.update(ids)
        if ack:
            assert self.s[source].outbox_ack(ids).removed == len(ids)
            self.unacked[source] = [i for i in self.unacked[source] if i not in ids]
        else:
            self.unacked[source] += [i for i in ids if i not in self.unacked[source]]

    def deliver_everything(self) -> None:
        """Every outbox drained and acknowledged: nothing left, every waiter settled."""
        for _ in range(8):
            self.drain(list(range(P)))
            if not any(self.r.zcard(keys.outbox_at) for keys in self.parts):
                break
        for keys in self.parts:
            assert self.r.hlen(keys.outbox) == self.r.zcard(keys.outbox_at) == 0, keys.tag
        self.unacked = {i: [] for i in range(P)}
        self.every_waiter_settled()

    @precondition(lambda self: any(self.unacked.values()))
    @rule(which=pick)
    def ack(self, which: int) -> None:
        """A deliverer acknowledges late what it applied (another may have meanwhile)."""
        source = self.choose([i for i in range(P) if self.unacked[i]], which)
        ids, self.unacked[source] = self.unacked[source], []
        there = sum(1 for i in ids if self.r.hexists(self.parts.keys[source].outbox, i))
        assert self.s[source].outbox_ack(ids).removed == there

    @precondition(lambda self: bool(self.history))
    @rule(which=pick, settle=st.booleans())
    def redeliver(self, which: int, settle: bool) -> None:
        """A delivery applied once more (a second deliverer read it before the ack)."""
        kinds = [h for h in self.history if (h[1][0] == "settle") == settle]
        target, item = self.choose(kinds or self.history, which)
        # A settle again leaves its task as it was; a follow again may send a settle again.
        before = self.snapshot(item[1]) if item[0] == "settle" else None
        assert self.s[target].deliver([item]).applied == 1
        assert before is None or self.snapshot(item[1]) == before, item

    # -- invariants ------------------------------------------------------------------------
    @invariant()
    def check_everything(self) -> None:
        self.check_all()


@pytest.mark.timeout(900)  # as the flow model's: a timeout inside Hypothesis reads as flaky
def test_partitions_and_the_outbox_keep_their_invariants(redis_server: RedisServer) -> None:
    run_model(PartitionsModel, redis_server.url, steps=60)
