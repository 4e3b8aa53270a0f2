"""Workers killed with SIGKILL while 2,000 tasks flow: nothing lost, no attempts overlap.

The job (``tests/jobs/chaos_retry.py``) opts into retries, so each task a kill takes down
runs again as its next attempt, usually on another instance: the test proves from
the job's own records that no attempt started before the previous one was gone.

Retries make delivery at-least-once: a worker killed after its task's process ended
but before the outcome reached Redis loses that outcome, and the task runs again.
The test counts those (``ran_to_end_twice``); it allows no attempt number twice.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from perseid_jobs import Client

from ..conftest import JOBS, wait_until, wait_workers
from .conftest import Fleet, all_settled, overlapping, read_attempts, slots_left, spread, task_rows

pytestmark = pytest.mark.chaos

TASKS = 2000
KILLS = 20


class LostEvents(threading.Thread):
    """Follows the events stream (it is capped) for 'instance … lost' retries and failures."""

    def __init__(self, client: Client) -> None:
        super().__init__(daemon=True)
        self.r = redis.Redis.from_url(
            f"redis://127.0.0.1:{client.redis.connection_pool.connection_kwargs['port']}/0",
            decode_responses=True,
        )
        self.key = client.keys.events
        self.seen: list[tuple[int, str]] = []  # (Redis ms of the event, instance id)
        self.stop = threading.Event()

    def run(self) -> None:
        last = "0"
        while not self.stop.is_set():
            for _, entries in self.r.xread({self.key: last}, count=1000, block=200) or []:
                for entry_id, f in entries:
                    last = entry_id
                    reason = f.get("reason", "")
                    if f["event"] in ("retry", "failed") and reason.endswith(" lost"):
                        self.seen.append((int(entry_id.split("-")[0]), reason.split()[1]))


def test_2000_tasks_survive_20_worker_kills_without_loss_or_overlap(
    tmp_path: Path, fleets: list[Fleet], redis_servers: Any, report: Any
) -> None:
    server = redis_servers()
    client = Client.from_url(server.url, namespace="chaos", jobs_dir=JOBS)
    records = tmp_path / "records"
    records.mkdir()
    fleet = Fleet(server.url, "chaos", tmp_path)
    fleets.append(fleet)
    live = [fleet.start(4) for _ in range(3)]
    wait_workers(client, 3)
    events = LostEvents(client)
    events.start()

    started = time.monotonic()
    ids, killed_at = schedule_while_killing(client, fleet, live, records)
    wait_until(lambda: all_settled(client), 120, "every task to end")
    took = time.monotonic() - started
    events.stop.set()
    events.join()

    rows = task_rows(client, ids, "status", "reason", "attempt")
    attempts = read_attempts(records)
    lost = [i for i, r in zip(ids, rows, strict=True)
            if r["status"] not in ("completed", "failed", "cancelled")]  # fmt: skip
    # One attempt run twice: the fencing token (attempt number) reused.
    doubled = [i for i, runs in attempts.items() if len({a.attempt for a in runs}) < len(runs)]
    # Two attempts that both ran to their end: the first one's report died with its worker.
    twice = [i for i, runs in attempts.items() if sum(a.end is not None for a in runs) > 1]
    gaps = [
        (b.start - a.alive) / 1e6
        for runs in attempts.values() for a, b in itertools.pairwise(runs)
    ]  # fmt: skip
    detection = [when - killed_at[inst] for when, inst in events.seen if inst in killed_at]
    used, held = slots_left(client)
    completed = sum(r["status"] == "completed" for r in rows)
    retried = sum(int(r["attempt"] or 0) > 1 for r in rows)
    overlaps = overlapping(attempts, killed_end_unknown=False)
    report(
        "2000 tasks / 20 SIGKILLs",
        tasks=len(ids), kills=KILLS, completed=completed, retried=retried, lost=len(lost),
        doubled=len(doubled), ran_to_end_twice=len(twice), overlapping=overlaps,
        slots_left=used, tasks_held=held,
        detection=spread(detection), min_gap_before_next_attempt=spread(gaps).split("/")[0],
        seconds=f"{took:.1f}",
    )  # fmt: skip
    assert len(ids) == TASKS
    assert lost == [] and doubled == [] and overlaps == 0
    assert (used, held) == (0, 0)
    # A kill costs an attempt, never the task: every task ends completed.
    assert completed == TASKS, {r["reason"] for r in rows if r["status"] != "completed"}
    assert retried > 0 and detection
    assert len(twice) <= KILLS * 4  # at most the tasks in flight at each kill
    assert max(detection) <= 1000 + 300 + 1200  # lease + reap + a loaded 2-core box


def schedule_while_killing(
    client: Client, fleet: Fleet, live: list[Any], records: Path
) -> tuple[list[str], dict[str, int]]:
    """Schedule TASKS while SIGKILLing a random worker KILLS times (each replaced at once).

    Returns the task ids and, per killed instance id, the Redis time of its SIGKILL (ms).
    """
    ids: list[str] = []
    rng = random.Random(2000)

    def schedule_all() -> None:
        for _ in range(TASKS):
            args = {"dir": str(records), "seconds": round(rng.uniform(0.02, 0.1), 3)}
            ids.append(client.schedule("chaos_retry", args).id)

    scheduler = threading.Thread(target=schedule_all)
    scheduler.start()
    killed_at: dict[str, int] = {}  # instance id -> Redis time of its SIGKILL (ms)
    for _ in range(KILLS):
        time.sleep(0.5)
        victim = rng.choice(live)
        by_pid = {w.pid: w.id for w in client.workers()}
        victim.kill9()
        now = client.now_ms()
        if victim.proc.pid in by_pid:
            killed_at[by_pid[victim.proc.pid]] = now
        live[live.index(victim)] = fleet.start(4)
    scheduler.join()
    return ids, killed_at
