"""Workers killed with SIGKILL while 2,000 tasks flow: nothing lost, nothing run twice."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from perseid_jobs import Client

from ..conftest import JOBS, wait_until, wait_workers
from .conftest import Fleet, all_settled, overlapping, read_attempts, slots_left, spread, task_rows

pytestmark = pytest.mark.chaos

TASKS = 2000
KILLS = 20


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

    ids: list[str] = []
    rng = random.Random(2000)

    def schedule_all() -> None:
        for _ in range(TASKS):
            args = {"dir": str(records), "seconds": round(rng.uniform(0.02, 0.1), 3)}
            ids.append(client.schedule("chaos_record", args).id)

    scheduler = threading.Thread(target=schedule_all)
    started = time.monotonic()
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
    wait_until(lambda: all_settled(client), 120, "every task to end")
    took = time.monotonic() - started

    rows = task_rows(client, ids, "status", "reason", "ended_at", "attempt")
    attempts = read_attempts(records)
    lost = [
        i
        for i, r in zip(ids, rows, strict=True)
        if r["status"] not in ("completed", "failed", "cancelled")
    ]
    doubled = [i for i in ids if len(attempts.get(i, [])) > 1]
    reasons = {r["reason"] for r in rows if r["status"] != "completed"}
    detection = []
    for r in rows:
        reason = r["reason"] or ""
        if reason.startswith("instance ") and reason.endswith(" lost"):
            inst = reason.split()[1]
            if inst in killed_at:
                detection.append(int(r["ended_at"] or 0) - killed_at[inst])
    used, held = slots_left(client)
    completed = sum(r["status"] == "completed" for r in rows)
    report(
        "2000 tasks / 20 SIGKILLs",
        tasks=len(ids),
        kills=KILLS,
        completed=completed,
        failed_by_kill=len(detection),
        lost=len(lost),
        doubled=len(doubled),
        overlapping=overlapping(attempts),
        slots_left=used,
        tasks_held=held,
        detection=spread(detection),
        seconds=f"{took:.1f}",
    )
    assert len(ids) == TASKS
    assert lost == [] and doubled == [] and overlapping(attempts) == 0
    assert (used, held) == (0, 0)
    assert all(r["attempt"] == "1" for r in rows)
    # Only the killed instances' tasks fail; nothing else goes wrong under the churn.
    assert all(reason and reason.startswith("instance ") for reason in reasons), reasons
    assert detection and max(detection) <= 1000 + 300 + 1200  # lease + reap + a loaded box
