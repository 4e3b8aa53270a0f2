"""Redis killed (SIGKILL) and restarted on the same port and files while work flows."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bench.processes import cpu_seconds
from perseid_jobs import Client, TaskStatus

from ..conftest import JOBS, wait_until, wait_workers
from .conftest import (
    AckedScheduler,
    Fleet,
    all_settled,
    overlapping,
    read_attempts,
    slots_left,
    task_rows,
)

pytestmark = pytest.mark.chaos

TASKS = 600
# A lease long enough to outlive the restart: a restart shorter than the lease costs
# nothing but a pause; a longer one fences every worker (docs/faults.md).
TIMING = ("--heartbeat", "0.5s", "--lease-ttl", "5s", "--reap-interval", "0.5s")


def test_redis_restart_loses_no_acknowledged_schedule_and_workers_carry_on(
    tmp_path: Path, fleets: list[Fleet], redis_servers: Any, report: Any
) -> None:
    server = redis_servers(appendonly=True)  # appendfsync always
    client = Client.from_url(server.url, namespace="restart", jobs_dir=JOBS)
    records = tmp_path / "records"
    records.mkdir()
    fleet = Fleet(server.url, "restart", tmp_path, *TIMING)
    fleets.append(fleet)
    workers = [fleet.start(4) for _ in range(3)]
    wait_workers(client, 3)
    before = {w.id for w in client.workers()}

    sched = AckedScheduler(client, records, TASKS, pause_s=0.004)
    acked = sched.acked
    scheduler = threading.Thread(target=sched.run)
    scheduler.start()
    wait_until(lambda: len(acked) >= TASKS // 3, 30, "a third of the schedules")
    server.kill()
    killed = time.monotonic()
    time.sleep(1.5)
    server.start()
    down_s = time.monotonic() - killed
    scheduler.join(60)
    wait_until(lambda: all_settled(client), 60, "every task to end")

    rows = task_rows(client, acked, "status")
    lost = [i for i, r in zip(acked, rows, strict=True) if r["status"] is None]
    unfinished = [r for r in rows if r["status"] not in ("completed", "failed", "cancelled")]
    attempts = read_attempts(records)
    doubled = [i for i in acked if len(attempts.get(i, [])) > 1]
    stored = client.redis.zcard(client.keys.finished)
    after = {w.id for w in client.workers()}
    used, held = slots_left(client)
    outputs = "".join(w.output() for w in workers)
    completed = sum(r["status"] == "completed" for r in rows)
    report(
        "Redis SIGKILL + restart (appendfsync always)",
        acknowledged=len(acked),
        stored=stored,
        lost=len(lost),
        completed=completed,
        doubled=len(doubled),
        overlapping=overlapping(attempts),
        slots_left=used,
        down_s=f"{down_s:.1f}",
        schedule_retries=sched.failures,
        workers_kept_their_ids=before == after,
        reconciled=outputs.count("reply was lost"),
        stale_reports=outputs.count("was stale"),
    )
    assert len(acked) == TASKS and lost == [] and unfinished == []
    assert stored == TASKS  # the idempotency keys absorbed every retried schedule
    assert doubled == [] and overlapping(attempts) == 0
    assert (used, held) == (0, 0)
    assert completed == TASKS
    assert before == after  # nobody fenced: the restart was shorter than the lease
    assert all(w.proc.poll() is None for w in workers)
    assert "Redis answers again" in outputs


def test_a_worker_waits_out_a_redis_outage_without_spinning(
    fleets: list[Fleet], redis_servers: Any, tmp_path: Path
) -> None:
    server = redis_servers(appendonly=True)
    client = Client.from_url(server.url, namespace="outage", jobs_dir=JOBS)
    fleet = Fleet(server.url, "outage", tmp_path, *TIMING)
    fleets.append(fleet)
    worker = fleet.start(2)
    wait_workers(client, 1)
    assert client.wait(client.schedule("hello").id, 15).status is TaskStatus.COMPLETED
    server.kill()
    # Past the first failed calls and into the backoff (capped at 0.5 s with this
    # heartbeat), with a reap and a lease renewal falling due while Redis is away.
    time.sleep(1.0)
    used_before, watched_from = cpu_seconds(worker.proc.pid), time.monotonic()
    time.sleep(3.0)
    share = (cpu_seconds(worker.proc.pid) - used_before) / (time.monotonic() - watched_from)
    server.start()
    # A loop that spins uses a whole core (share ~1.0); one that waits, almost none.
    assert share < 0.2, f"the worker used {share:.0%} of a core while Redis was down"
    assert client.wait(client.schedule("hello").id, 15).status is TaskStatus.COMPLETED
