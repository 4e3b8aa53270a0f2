"""The invariants of tests/test_model_partitions.py, read from Redis after every step.

- each task is in exactly one state and in the one index of it, in its own partition
  (the one its id names) and in no other;
- every delivery takes effect exactly once: a task waiting on a parent in another
  partition is released at most once, and only if its parent completed; it is cancelled
  naming its parent only with the status that parent ended with; never both; a task
  ends at most once;
- a delivery is never lost: a task waiting on a parent elsewhere has its follow not yet
  applied, or is in its parent's remote waiters while the parent is live, or has a
  settle not yet applied in the parent's outbox; each delivery names partitions and a
  status that are so; the outbox's two keys agree;
- per instance and partition, ``slots_used`` is the sum of the slots of its tasks; over
  all partitions it stays within ``slots_total``; the running tasks are those the
  model's instances claimed and have not reported;
- a terminal task never changes.

Also the scripts of one partition as the model calls them, keeping what they deliver.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from perseid_jobs.store.keys import Keys
from perseid_jobs.store.partitions import Partitions, partition_of_id
from perseid_jobs.store.script_io import Delivered
from perseid_jobs.store.scripts import Scripts

TERMINAL = ("completed", "failed", "cancelled")
INDEXES = ("due", "blocked", "running", "finished")
BY_USER = "cancelled by user"
# Where a task of each status is indexed.
WHERE = {"pending": ("due", "blocked"), "running": ("running",)} | {
    s: ("finished",) for s in TERMINAL
}


def part(some_id: str) -> int:
    index = partition_of_id(some_id)
    assert index is not None, some_id
    return index


class Recorded(Scripts):
    """One partition's scripts, keeping each delivery they apply, to apply it again."""

    def __init__(self, client: Any, keys: Keys, index: int, log: list[Any]) -> None:
        super().__init__(client, keys)
        self.index, self.log = index, log

    def deliver(self, items: Sequence[tuple[str, str, str, str]]) -> Delivered:
        reply = super().deliver(items)
        self.log += [(self.index, item) for item in items]
        return reply


class Checks:
    """The invariants, over the model's Redis client, partitions and bookkeeping."""

    r: Any
    parts: Partitions
    tasks: list[str]
    running: list[str]
    held: dict[str, tuple[str, str, int]]
    slots: dict[str, int]
    applied: set[str]

    def init_checks(self) -> None:
        self.ended: dict[str, tuple[str, ...]] = {}  # terminal task -> what must not change
        self.events: dict[str, Counter[str]] = {}  # task -> event kind -> how many
        self.stream_from = ["-"] * len(self.parts)

    # -- reads -----------------------------------------------------------------------------
    def keys(self, some_id: str) -> Keys:
        return self.parts.keys[part(some_id)]

    def task(self, task_id: str) -> dict[str, str]:
        return dict(self.r.hgetall(self.keys(task_id).task(task_id)))

    def remote_waiting(self, index: int, task_id: str) -> str:
        # The set of "<partition>\t<task>" waiting on a task from other partitions.
        return self.parts.keys[index].prefix + "remote_waiting:" + task_id

    def now_ms(self) -> int:
        sec, usec = self.r.time()
        return int(sec) * 1000 + int(usec) // 1000

    def snapshot(self, task_id: str) -> tuple[Any, ...]:
        """A task and what its partition's indexes, stream and outbox say of it."""
        keys = self.keys(task_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(keys.task(task_id))
        for name in INDEXES:
            pipe.zscore(getattr(keys, name), task_id)
        pipe.xlen(keys.events)
        pipe.zcard(keys.outbox_at)
        return tuple(str(x) for x in pipe.execute())

    def read(self) -> tuple[list[dict[str, set[str]]], dict[str, dict[str, str]]]:
        """Every partition's indexes, and every task's hash, in one pipeline."""
        pipe = self.r.pipeline(transaction=False)
        for keys in self.parts:
            for name in INDEXES:
                pipe.zrange(getattr(keys, name), 0, -1)
        for task_id in self.tasks:
            pipe.hgetall(self.keys(task_id).task(task_id))
        replies = pipe.execute()
        n = len(INDEXES)
        indexes = [
            {name: set(replies[i * n + j]) for j, name in enumerate(INDEXES)}
            for i in range(len(self.parts))
        ]
        hashes = dict(zip(self.tasks, replies[len(self.parts) * n :], strict=True))
        return indexes, hashes

    def read_events(self) -> None:
        """Count each task's events, reading each stream from where the last read ended."""
        for i, keys in enumerate(self.parts):
            start = self.stream_from[i]
            for entry_id, f in self.r.xrange(keys.events, min=start, max="+"):
                self.events.setdefault(f["id"], Counter())[f["event"]] += 1
                self.stream_from[i] = "(" + entry_id

    def outboxes(self) -> list[dict[str, list[str]]]:
        """Each partition's deliveries, id -> [kind, target, a, b, c]; its two keys agree."""
        pipe = self.r.pipeline(transaction=False)
        for keys in self.parts:
            pipe.hgetall(keys.outbox)
            pipe.zrange(keys.outbox_at, 0, -1)
        replies = pipe.execute()
        out = []
        for i in range(len(self.parts)):
            entries, ids = replies[2 * i], replies[2 * i + 1]
            assert set(entries) == set(ids), (i, entries, ids)
            out.append({d: payload.split("\t") for d, payload in entries.items()})
        return out

    # -- invariants ------------------------------------------------------------------------
    def check_all(self) -> None:
        indexes, hashes = self.read()
        self.read_events()
        self.one_state_one_index(indexes, hashes)
        self.slots_add_up(hashes)
        self.terminal_never_changes(hashes)
        for task_id, h in hashes.items():
            self.settled_once(task_id, h, hashes)
        self.no_delivery_lost(indexes, hashes, self.outboxes())

    def one_state_one_index(
        self, indexes: list[dict[str, set[str]]], hashes: dict[str, dict[str, str]]
    ) -> None:
        """Each task in one state, in the one index of it, in its own partition only."""
        for task_id, h in hashes.items():
            home = part(task_id)
            assert h, task_id
            for i, sets in enumerate(indexes):
                where = tuple(name for name in INDEXES if task_id in sets[name])
                if i != home:
                    assert where == (), (task_id, i, where)
                elif h["status"] == "pending":
                    assert where in (("due",), ("blocked",)), (h, where)
                    assert where != ("blocked",) or h.get("start_after"), h
                else:
                    assert where == WHERE[h["status"]], (h, where)
        known = set(self.tasks)
        for sets in indexes:
            assert set().union(*sets.values()) <= known  # nothing made behind the model

    def slots_add_up(self, hashes: dict[str, dict[str, str]]) -> None:
        """Per instance and partition, slots_used is its tasks'; over all, within its total."""
        running = {t for t, h in hashes.items() if h["status"] == "running"}
        assert running == set(self.running), (running, self.running)
        for task_id in self.running:
            name, attempt, _ = self.held[task_id]
            assert (hashes[task_id]["instance"], hashes[task_id]["attempt"]) == (name, attempt)
        for name, total in self.slots.items():
            pipe = self.r.pipeline(transaction=False)
            for keys in self.parts:
                pipe.hgetall(keys.instance(name))
                pipe.smembers(keys.instance_tasks(name))
            replies = pipe.execute()
            used_all = 0
            for i in range(len(self.parts)):
                h, members = replies[2 * i], replies[2 * i + 1]
                if not h:  # reaped (everywhere: checked where it dies)
                    assert not members, (name, members)
                    continue
                mine = {t for t in self.running if self.held[t][0] == name and part(t) == i}
                assert members == mine, (name, i, members, mine)
                used = int(h["slots_used"])
                assert used == sum(self.held[t][2] for t in mine), (name, i, h)
                assert 0 <= used <= int(h["slots_total"]) == total, h
                used_all += used
            assert used_all <= total, (name, used_all, total)

    def terminal_never_changes(self, hashes: dict[str, dict[str, str]]) -> None:
        for task_id, h in hashes.items():
            if h["status"] in TERMINAL:
                now = (h["status"], h["ended_at"], h["reason"], h["exit_code"])
                assert self.ended.setdefault(task_id, now) == now, task_id
            else:
                assert task_id not in self.ended, task_id

    def settled_once(
        self, task_id: str, h: dict[str, str], hashes: dict[str, dict[str, str]]
    ) -> None:
        """Released at most once and only after a completed parent; cancelled naming the
        parent only with the status it ended with; never both; ended at most once."""
        seen = self.events.get(task_id, Counter())
        released = seen["released"]
        assert sum(seen[s] for s in TERMINAL) == (h["status"] in TERMINAL), (task_id, seen)
        parent = h.get("start_after") or ""
        assert released <= (1 if parent else 0), (task_id, seen)
        if not parent:
            return
        pstatus = hashes[parent]["status"]
        by_parent = h.get("reason", "").startswith("dependency ")
        if released:
            assert pstatus == "completed", (task_id, parent, pstatus)
        if by_parent:
            assert pstatus in ("failed", "cancelled"), (h, pstatus)
            assert h["reason"] == f"dependency {parent} {pstatus}", (h, pstatus)
            assert not released, (task_id, seen)
        if pstatus not in TERMINAL:
            assert released == 0 and not by_parent, (task_id, seen)
            assert h["status"] == "pending" or h["reason"] == BY_USER, h

    def no_delivery_lost(
        self,
        indexes: list[dict[str, set[str]]],
        hashes: dict[str, dict[str, str]],
        boxes: list[dict[str, list[str]]],
    ) -> None:
        """Each delivery well formed; each blocked task on its way to being settled."""
        for src, box in enumerate(boxes):
            for kind, target, a, b, c in box.values():
                assert kind in ("follow", "settle") and int(target) != src, (src, kind, target)
                parent, child = (a, b) if kind == "follow" else (b, a)
                assert (part(parent), part(child)) == (
                    (int(target), src) if kind == "follow" else (src, int(target))
                ), (src, kind, a, b)
                want = str(src) if kind == "follow" else hashes[parent]["status"]
                assert c == want, (src, kind, a, b, c)
        for q, sets in enumerate(indexes):
            for task_id in sorted(sets["blocked"]):
                self.on_its_way(q, task_id, hashes, boxes)

    def on_its_way(
        self,
        q: int,
        task_id: str,
        hashes: dict[str, dict[str, str]],
        boxes: list[dict[str, list[str]]],
    ) -> None:
        parent = hashes[task_id]["start_after"]
        p, live = part(parent), hashes[parent]["status"] not in TERMINAL
        if p == q:
            assert live and self.r.sismember(self.keys(parent).waiting(parent), task_id)
            return

        def unapplied(box: dict[str, list[str]], entry: list[str]) -> bool:
            return any(e == entry and d not in self.applied for d, e in box.items())

        follow = unapplied(boxes[q], ["follow", str(p), parent, task_id, str(q)])
        waiting = live and self.r.sismember(self.remote_waiting(p, parent), f"{q}\t{task_id}")
        settle = not live and unapplied(
            boxes[p], ["settle", str(q), task_id, parent, hashes[parent]["status"]]
        )
        assert follow or waiting or settle, (task_id, parent, hashes[parent]["status"])

    def every_waiter_settled(self) -> None:
        """Once everything is delivered: a task whose parent ended is settled as it says."""
        indexes, hashes = self.read()
        self.read_events()
        for task_id, h in hashes.items():
            parent = h.get("start_after")
            if not parent or hashes[parent]["status"] not in TERMINAL:
                continue
            pstatus = hashes[parent]["status"]
            assert task_id not in indexes[part(task_id)]["blocked"], (task_id, pstatus)
            released = self.events.get(task_id, Counter())["released"]
            if pstatus == "completed":
                # Released, unless cancelled while it waited.
                cancelled = (h["status"], h.get("reason")) == ("cancelled", BY_USER)
                assert released == 1 or (released == 0 and cancelled), (released, h)
            else:
                reasons = (f"dependency {parent} {pstatus}", BY_USER)
                assert h["status"] == "cancelled" and h["reason"] in reasons, (h, pstatus)
