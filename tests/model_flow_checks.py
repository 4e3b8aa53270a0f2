"""The invariants of tests/test_model_flow.py, read from Redis after every step.

- running tasks per job stay within its published ``concurrency``, per (job, group)
  within its ``group_concurrency`` (a lowered limit lets what already ran go on: the
  bound is never below what ran when it was published, and comes down as those end);
- ``flow_running`` counts exactly the running laned tasks, per job and per job\tgroup;
- per instance ``slots_used`` is the sum of the slots of its tasks;
- a pending laned task is in its lane's zset and in no other index (a paused series'
  run: in none); a plain pending task is in ``due``; every lane's tasks are pending tasks
  of it; a lane with tasks is in exactly one place, its priority's open set or one gate's
  set (which ``lane_gate`` names), an empty one in none; a priority with open lanes is
  listed in ``prios``;
- of each claim reply: no task of a paused job, group or series; priorities in
  non-increasing order; no task of a higher priority than the lowest claimed left due,
  claimable and unclaimed; the starts of the rate-limited job never closer than its rate.

And at the end of each example, liveness: with everything resumed, every running task
finished and claims repeated, every due task runs.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import msgspec

from perseid_jobs.api.flow import PARKED
from perseid_jobs.core.models import JobDefinition, TaskStatus
from perseid_jobs.store.keys import Keys
from perseid_jobs.store.script_io import AlreadyEnded, Claimed, ClaimedTask, Paused
from perseid_jobs.store.scripts import Scripts
from perseid_jobs.worker.outcome import Outcome

TERMINAL = ("completed", "failed", "cancelled")
GROUPS = ["", "A", "B", "C"]
PRIOS = [0, -5, 7]
RATE_JOB, RATE_MS = "r", 10  # "100/s": one start per 10 ms of Redis time
SLOTS = {"c1": 1, "c2": 2, "g2": 1, "free": 2, "r": 1}
# Each job's limit variants, as a worker's job file may declare them; variant 0 first.
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "c1": [{"concurrency": 1}, {"concurrency": 2}],
    "c2": [{"concurrency": 2}, {"concurrency": 1}],
    "g2": [{"group_concurrency": 2}, {"group_concurrency": 1, "concurrency": 3}],
    "free": [{}, {"concurrency": 1}],  # a job that gets a limit, and loses it again
    "r": [{"rate": "100/s"}],
}


def definition(job: str, variant: int) -> str:
    d = JobDefinition(slots=SLOTS[job], max_duration_ms=60_000, **VARIANTS[job][variant])
    return msgspec.json.encode(d).decode()


def limits(job: str, variant: int) -> tuple[int, int]:
    v = VARIANTS[job][variant]
    return int(v.get("concurrency", 0)), int(v.get("group_concurrency", 0))


def lane_name(job: str, group: str, prio: int) -> str:
    return f"{job}\t{group}" + (f"\t{prio}" if prio else "")


def lane_prio(lane: str) -> int:
    parts = lane.split("\t")
    return int(parts[2]) if len(parts) > 2 else 0


def open_key(k: Keys, prio: int) -> str:
    return k.lanes if prio == 0 else k.plane(prio)


def prio_of(h: dict[str, str]) -> int:
    return int(h.get("priority") or 0)


class FlowChecks:
    """The invariants, over the model's Redis client, keys and bookkeeping."""

    r: Any
    k: Keys
    s: Scripts
    tasks: list[str]
    published: dict[str, int]  # job -> the variant last published
    paused: set[str]  # "job\t<J>", "group\t<G>"
    paused_series: set[str]

    def init_checks(self) -> None:
        self.allowance: Counter[str] = Counter()  # what ran when a lower limit came
        self.raised: set[str] = set()  # job\tgroup: held when its limit was raised
        self.rate_starts: list[int] = []
        self.stream_from = "-"

    # -- reads -----------------------------------------------------------------------------
    def now_ms(self) -> int:
        sec, usec = self.r.time()
        return int(sec) * 1000 + int(usec) // 1000

    def task(self, task_id: str) -> dict[str, str]:
        return dict(self.r.hgetall(self.k.task(task_id)))

    def discover(self) -> None:
        """Every task the scripts made (next runs of series too), from the events stream."""
        seen = set(self.tasks)
        start = "-" if self.stream_from == "-" else "(" + self.stream_from
        for entry_id, f in self.r.xrange(self.k.events, start):
            self.stream_from = entry_id
            if f["event"] == "scheduled" and f["id"] not in seen:
                seen.add(f["id"])
                self.tasks.append(f["id"])

    def hashes(self) -> dict[str, dict[str, str]]:
        self.discover()
        pipe = self.r.pipeline(transaction=False)
        for task_id in self.tasks:
            pipe.hgetall(self.k.task(task_id))
        return dict(zip(self.tasks, pipe.execute(), strict=True))

    def scan(self, pattern: str) -> list[str]:
        return sorted(self.r.scan_iter(match=self.k.prefix + pattern, count=1000))

    def running_counts(self, hashes: dict[str, dict[str, str]], laned: bool) -> Counter[str]:
        """Running tasks per job and per job\tgroup (only laned ones, if ``laned``)."""
        n: Counter[str] = Counter()
        for h in hashes.values():
            if h["status"] == "running" and (h.get("lane") or not laned):
                n[h["job"]] += 1
                n[h["job"] + "\t" + h.get("group", "")] += 1
        return n

    def published_limit(self, name: str) -> int:
        job, _, group = name.partition("\t")
        c, g = limits(job, self.published[job])
        return c if "\t" not in name else (g if group else 0)

    def note_publish(self, before: dict[str, int]) -> None:
        """A publish: what runs now may run on under a lower limit, and the lanes a group's
        limit holds go as its running tasks end, not at once, under a raised one."""
        self.allowance = self.running_counts(self.hashes(), laned=False)
        for job, variant in self.published.items():
            if job in before and limits(job, variant)[1] > limits(job, before[job])[1]:
                held = self.scan(f"gate:g\t{job}\t*")
                self.raised |= {key[len(self.k.gate("g\t")) :] for key in held}

    # -- invariants ------------------------------------------------------------------------
    def check_all(self) -> None:
        hashes = self.hashes()
        self.check_limits(hashes)
        self.check_slots(hashes)
        self.check_tasks_in_lanes(hashes)
        self.check_lanes_placed()
        self.check_units_used()

    def check_limits(self, hashes: dict[str, dict[str, str]]) -> None:
        running = self.running_counts(hashes, laned=False)
        for name, n in running.items():
            self.allowance[name] = min(self.allowance[name], n)
            limit = self.published_limit(name)
            assert not limit or n <= max(limit, self.allowance[name]), (name, n, limit)
        for name in list(self.allowance):
            if name not in running:
                del self.allowance[name]
        # A count at 0 may stay (flow.lua keeps it: one call less per end).
        counted = {f: int(v) for f, v in self.r.hgetall(self.k.flow_running).items() if v != "0"}
        # Counted is only what a limit reads: per job with a concurrency, per (job, group)
        # with a group limit.
        expected = {
            name: n
            for name, n in self.running_counts(hashes, laned=True).items()
            if self.published_limit(name)
        }
        assert counted == expected, (counted, expected)

    def check_slots(self, hashes: dict[str, dict[str, str]]) -> None:
        holder: dict[str, str] = {}
        for inst in self.r.zrange(self.k.instances, 0, -1):
            h = self.r.hgetall(self.k.instance(inst))
            held = self.r.smembers(self.k.instance_tasks(inst))
            for task_id in held:
                t = hashes[task_id]
                assert (t["status"], t["instance"]) == ("running", inst), t
                holder[task_id] = inst
            total = sum(int(hashes[t]["slots"]) for t in held)
            assert int(h["slots_used"]) == total <= int(h["slots_total"]), (inst, h, held)
        for task_id, t in hashes.items():
            if t["status"] == "running":
                assert holder.get(task_id) == t["instance"], (task_id, t)

    def check_tasks_in_lanes(self, hashes: dict[str, dict[str, str]]) -> None:
        lanes = {key[len(self.k.lane("")) :]: self.r.zrange(key, 0, -1)
                 for key in self.scan("lane:*")}  # fmt: skip
        members = Counter(t for ids in lanes.values() for t in ids)
        due = set(self.r.zrange(self.k.due, 0, -1))
        for task_id, h in hashes.items():
            lane = h.get("lane", "")
            # Not pending, or a paused series' run (held): in no index.
            if h["status"] != "pending" or h.get("series") in self.paused_series:
                assert members[task_id] == 0 and task_id not in due, (task_id, h)
            elif lane:
                assert task_id not in due and members[task_id] == 1, (task_id, h)
                assert task_id in lanes.get(lane, []), (task_id, h)
                assert lane == lane_name(h["job"], h.get("group", ""), prio_of(h)), h
            else:
                assert task_id in due and members[task_id] == 0, (task_id, h)

    def check_lanes_placed(self) -> None:
        gates = {key[len(self.k.gate("")) :]: set(self.r.zrange(key, 0, -1))
                 for key in self.scan("gate:*")}  # fmt: skip
        opens = {key: set(self.r.zrange(key, 0, -1)) for key in self.scan("lanes*")}
        lane_gate = self.r.hgetall(self.k.lane_gate)
        prios = {int(p) for p in self.r.zrange(self.k.prios, 0, -1)}
        for key in opens:
            if key != self.k.lanes:  # a priority with open lanes is read by the claim
                assert int(key.rsplit(":", 1)[1]) in prios, (key, prios)
        names = {key[len(self.k.lane("")) :] for key in self.scan("lane:*")}
        for lane in names | set(lane_gate) | {x for s in opens.values() for x in s}:
            places = [("open", key) for key, s in opens.items() if lane in s]
            places += [("gate", g) for g, s in gates.items() if lane in s]
            if lane not in names:  # an empty lane is nowhere
                assert places == [] and lane not in lane_gate, (lane, places)
                continue
            assert len(places) == 1, (lane, places)
            kind, where = places[0]
            if kind == "open":
                assert where == open_key(self.k, lane_prio(lane)) and lane not in lane_gate
            else:
                assert lane_gate.get(lane) == where, (lane, where, lane_gate.get(lane))

    def check_units_used(self) -> None:
        """A unit that a running task frees goes to a lane that can start now: while a job
        (or a job's group) has room, a lane its gate holds means one of its lanes is open
        and due, else that lane waits with room to spare (with nothing running, forever)."""
        now = self.now_ms()
        counted = Counter({f: int(v) for f, v in self.r.hgetall(self.k.flow_running).items()})
        due: Counter[str] = Counter()
        for key in self.scan("lanes*"):
            for lane in self.r.zrangebyscore(key, "-inf", now):
                job, group = lane.split("\t")[:2]
                due[job] += 1
                due[job + "\t" + group] += 1
        for job, lim in self.r.hgetall(self.k.flow).items():
            c, g = (int(x) for x in lim.split("\t")[:2])
            room = not c or counted[job] < c
            held = self.r.zcard(self.k.gate("c\t" + job))
            assert not (c and room and held and not due[job]), (job, counted, held)
            for key in self.scan(f"gate:g\t{job}\t*") if g and room else []:
                name = key[len(self.k.gate("g\t")) :]
                ok = counted[name] >= g or due[name] or name in self.raised
                assert ok, (name, counted, self.r.zrange(key, 0, -1))
        self.raised = {n for n in self.raised if self.r.exists(self.k.gate("g\t" + n))}
        self.check_parked_in_place(counted)

    def check_parked_in_place(self, counted: Counter[str]) -> None:
        """A lane parked in place (its group's limit full) has a task of its group running,
        whose end brings it back, under a group limit still published."""
        for key in self.scan("lanes*"):  # every priority's open set
            for lane in self.r.zrangebyscore(key, PARKED, "+inf"):
                job, group = lane.split("\t")[:2]
                name = job + "\t" + group
                assert limits(job, self.published[job])[1] and counted[name] >= 1, (lane, counted)

    # -- claims ----------------------------------------------------------------------------
    def before_claim(self, inst: str, cap: int) -> tuple[int, dict[str, str]]:
        """What a claim's checks compare with: the free slots, and the lanes held back."""
        h = self.r.hmget(self.k.instance(inst), "slots_total", "slots_used")
        free = int(h[0]) - int(h[1])
        return (free if cap < 0 else min(free, cap)), self.r.hgetall(self.k.lane_gate)

    def check_claim(
        self, inst: str, most: int, free: int, held: dict[str, str], reply: Claimed
    ) -> None:
        """A claim reply as a strict-priority claim of the due tasks must be."""
        got = [(t, self.task(t.id)) for t in reply.tasks]
        assert len(got) <= most and sum(int(t.slots) for t in reply.tasks) <= free
        for t, h in got:
            assert (h["status"], h["instance"]) == ("running", inst), h
            assert f"job\t{t.job}" not in self.paused, (t.id, self.paused)
            assert f"group\t{h.get('group', '')}" not in self.paused, (t.id, h)
            assert h.get("series", "") not in self.paused_series, (t.id, h)
            if t.job == RATE_JOB:
                self.check_rate(int(t.started_at))
        prios = [prio_of(h) for _, h in got]
        assert prios == sorted(prios, reverse=True), [(t.id, prio_of(h)) for t, h in got]
        lowest = min(prios, default=-1000)
        for task_id in self.claimable(inst, reply.now, held):
            h = self.task(task_id)
            p = prio_of(h)
            if p <= lowest:
                continue
            ahead = [(t, th) for t, th in got if prio_of(th) >= p]
            room = free - sum(int(t.slots) for t, _ in ahead)
            if len(ahead) < most and int(h["slots"]) <= room and self.has_room(h, got):
                raise AssertionError(f"left {task_id} {h} while claiming {prios}")

    def check_rate(self, started: int) -> None:
        for other in self.rate_starts:
            assert abs(started - other) >= RATE_MS, (started, self.rate_starts)
        self.rate_starts.append(started)

    def claimable(self, inst: str, now: int, held: dict[str, str]) -> list[str]:
        """Pending tasks due at ``now`` that the instance offers, not paused, at the head of
        a lane no gate held back before the claim (or plain), of no rate-limited job."""
        jobs = self.r.smembers(self.k.instance_jobs(inst))
        heads = list(self.r.zrangebyscore(self.k.due, "-inf", now))
        for key in self.scan("lane:*"):
            lane = key[len(self.k.lane("")) :]
            head = self.r.zrange(key, 0, 0, withscores=True)
            if lane not in held and head and head[0][1] <= now:
                heads.append(head[0][0])
        out = []
        for task_id in heads:
            h = self.task(task_id)
            if (
                h["job"] in jobs
                and h["job"] != RATE_JOB
                and f"job\t{h['job']}" not in self.paused
                and f"group\t{h.get('group', '')}" not in self.paused
                and (h.get("lane") or not self.r.hexists(self.k.flow, h["job"]))
            ):
                out.append(task_id)
        return out

    def has_room(self, h: dict[str, str], got: list[tuple[ClaimedTask, dict[str, str]]]) -> bool:
        """Whether the task's limits had room, but for the lower priorities claimed."""
        counted = self.r.hgetall(self.k.flow_running)
        job, group = h["job"], h.get("group", "")
        for name, limit in ((job, 0), (job + "\t" + group, 1)):
            bound = limits(job, self.published[job])[limit]
            if not bound or (limit and not group):
                continue
            lower = sum(
                1
                for _, th in got
                if th.get("lane") and prio_of(th) < prio_of(h) and th["job"] == job
                and (not limit or th.get("group", "") == group)
            )  # fmt: skip
            if int(counted.get(name, 0)) - lower >= bound:
                return False
        return True

    # -- liveness --------------------------------------------------------------------------
    def resume_all(self) -> None:
        for field in sorted(self.paused):
            kind, name = field.split("\t")
            reply = self.s.pause(kind, name, pause=False)
            assert isinstance(reply, Paused) and reply.held == 0, (field, reply)
        for sid in sorted(self.paused_series):
            ended = self.r.hget(self.k.series(sid), "status") != "active"
            reply = self.s.pause("series", sid, pause=False)
            assert isinstance(reply, AlreadyEnded if ended else Paused), (sid, reply)
        self.paused, self.paused_series = set(), set()

    def run_to_end(self, instances: list[str]) -> None:
        """Resume everything, then finish and claim until no due task is left."""
        self.resume_all()
        stalls = 0
        for _ in range(100):
            for task_id, h in self.hashes().items():
                if h["status"] == "running":
                    out = Outcome(task_id, h["attempt"], TaskStatus.COMPLETED, "0", "")
                    self.s.finish(h["instance"], [out], claim_most=0)
            took = 0
            for inst in instances:
                free, held = self.before_claim(inst, -1)
                reply = self.s.claim(inst, 8)
                assert isinstance(reply, Claimed), (inst, reply)
                self.check_claim(inst, 8, free, held, reply)
                took += len(reply.tasks)
            self.check_all()
            now = self.now_ms()
            left = [t for t, h in self.hashes().items()
                    if h["status"] == "pending" and int(h["start_at"]) <= now]  # fmt: skip
            if not left:
                return
            stalls = 0 if took else stalls + 1
            assert stalls < 4, [(t, self.task(t), self.where(t)) for t in left]
            time.sleep(RATE_MS / 1000 + 0.002)  # the rate's next start
        raise AssertionError("due tasks keep coming")

    def where(self, task_id: str) -> list[str]:
        """The lane a stuck task is in and where that lane is."""
        lane = self.r.hget(self.k.task(task_id), "lane") or ""
        if not lane:
            return ["due" if self.r.zscore(self.k.due, task_id) is not None else "nowhere"]
        gate = self.r.hget(self.k.lane_gate, lane)
        score = self.r.zscore(open_key(self.k, lane_prio(lane)), lane)
        return [lane, f"gate {gate}", f"open at {score}"]
