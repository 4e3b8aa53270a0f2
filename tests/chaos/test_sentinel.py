"""Sentinel failover mid-run: the primary dies, the replica is promoted, workers carry on."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

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
from .proxy import LossyProxy
from .servers import SentinelSetup

pytestmark = pytest.mark.chaos

TASKS = 400
# The lease outlives the failover (down-after 1 s + promotion), so no worker fences.
TIMING = ("--heartbeat", "0.5s", "--lease-ttl", "6s", "--reap-interval", "0.5s")


def test_workers_carry_on_after_a_sentinel_failover(
    tmp_path: Path, fleets: list[Fleet], report: Any
) -> None:
    setup = SentinelSetup(tmp_path / "sentinel").start()
    try:
        run_failover(setup, tmp_path, fleets, report)
    finally:
        for f in fleets:
            f.stop()
        setup.stop()


def run_failover(setup: SentinelSetup, tmp_path: Path, fleets: list[Fleet], report: Any) -> None:
    client = Client.from_url(setup.url, namespace="failover", jobs_dir=JOBS)
    records = tmp_path / "records"
    records.mkdir()
    fleet = Fleet(setup.url, "failover", tmp_path, *TIMING)
    fleets.append(fleet)
    workers = [fleet.start(4) for _ in range(3)]
    wait_workers(client, 3)
    before = {w.id for w in client.workers()}

    sched = AckedScheduler(client, records, TASKS, pause_s=0.005)
    acked = sched.acked
    scheduler = threading.Thread(target=sched.run)
    scheduler.start()
    wait_until(lambda: len(acked) >= TASKS // 3, 30, "a third of the schedules")
    old_port = setup.primary.port
    setup.primary.kill()
    killed = time.monotonic()
    wait_until(lambda: setup.master_port() != old_port, 30, "the sentinel to promote the replica")
    failover_s = time.monotonic() - killed
    scheduler.join(60)
    wait_until(lambda: all_settled(client), 60, "every task to end")

    rows = task_rows(client, acked, "status", "attempt")
    lost = [i for i, r in zip(acked, rows, strict=True) if r["status"] is None]
    attempts = read_attempts(records)
    doubled = [i for i in acked if len(attempts.get(i, [])) > 1]
    outputs = "".join(w.output() for w in workers)
    used, held = slots_left(client)
    after = {w.id for w in client.workers()}
    report(
        "Sentinel failover",
        acknowledged=len(acked),
        lost_by_async_replication=len(lost),
        completed=sum(r["status"] == "completed" for r in rows),
        doubled=len(doubled),
        overlapping=overlapping(attempts),
        slots_left=used,
        failover_s=f"{failover_s:.1f}",
        reported_again=outputs.count("Redis lost the earlier report"),
        adopted=outputs.count("reply was lost"),
        workers_kept_their_ids=before == after,
    )
    assert setup.master_port() == setup.replica.port
    assert len(acked) == TASKS
    # Async replication may lose what the primary acknowledged in its last moments;
    # everything the replica has must finish, run once, and free its slots.
    assert all(r["status"] in ("completed", "failed", "cancelled") for r in rows if r["status"])
    assert overlapping(attempts) == 0
    assert (used, held) == (0, 0)
    assert all(w.proc.poll() is None for w in workers)
    assert "Redis answers again" in outputs


def test_what_async_replication_loses_and_what_the_workers_repair(
    tmp_path: Path, fleets: list[Fleet], report: Any
) -> None:
    proxies: list[LossyProxy] = []

    def link(primary_port: int) -> int:
        proxies.append(LossyProxy(primary_port))
        return proxies[0].port

    setup = SentinelSetup(tmp_path / "sentinel", link=link).start()
    try:
        run_replication_loss(setup, proxies[0], tmp_path, fleets, report)
    finally:
        for f in fleets:
            f.stop()
        setup.stop()
        proxies[0].close()


def run_replication_loss(
    setup: SentinelSetup, link: LossyProxy, tmp_path: Path, fleets: list[Fleet], report: Any
) -> None:
    client = Client.from_url(setup.url, namespace="async", jobs_dir=JOBS)
    records = tmp_path / "records"
    records.mkdir()
    fleet = Fleet(setup.url, "async", tmp_path, "--heartbeat", "0.5s", "--lease-ttl", "10s")
    fleets.append(fleet)
    worker = fleet.start(4)
    wait_workers(client, 1)
    finishing = client.schedule("chaos_record", {"dir": str(records), "seconds": 1.0})
    wait_until(lambda: client.get(finishing.id).status is TaskStatus.RUNNING, 10, "running")
    claimed = client.schedule("chaos_record", {"dir": str(records), "seconds": 3.0}, at="+1s")
    replica = redis.Redis(port=setup.replica.port)
    keys = [client.keys.task(finishing.id), client.keys.task(claimed.id)]
    wait_until(lambda: replica.exists(*keys) == 2, 10, "both tasks on the replica")

    link.cut()  # from here on the primary acknowledges what the replica never gets
    scheduled = client.schedule("hello")
    replicas_acked = client.redis.wait(1, 300)  # what a durable schedule would check
    wait_until(lambda: client.get(finishing.id).status is TaskStatus.COMPLETED, 10, "finish")
    wait_until(lambda: client.get(claimed.id).status is TaskStatus.RUNNING, 10, "claim")
    old_port = setup.primary.port
    setup.primary.kill()
    wait_until(lambda: setup.master_port() != old_port, 30, "the sentinel to promote the replica")

    for task_id in (finishing.id, claimed.id):
        wait_until(lambda t=task_id: client.get(t).status is TaskStatus.COMPLETED, 20, "repair")
    lost_schedule = not client.redis.exists(client.keys.task(scheduled.id))
    attempts = read_attempts(records)
    out = worker.output()
    report(
        "async replication (link cut, then failover)",
        acknowledged_schedule_lost=lost_schedule,
        wait_replicas_acked=replicas_acked,
        finish_reported_again="Redis lost the earlier report" in out,
        lost_claim_ghost_killed="no longer this instance's" in out,
        lost_claim_runs=len(attempts[claimed.id]),
    )
    # An acknowledged schedule is gone: only WAIT (a durable schedule) would have said so.
    assert lost_schedule and replicas_acked == 0
    # A finish the primary acknowledged is gone too; the worker reports it again.
    assert "Redis lost the earlier report" in out
    # A claim is gone: the worker kills its run (Redis no longer gives it the task) and the
    # task runs again, once, under the same attempt number.
    assert "no longer this instance's" in out
    assert len(attempts[claimed.id]) == 2 and attempts[claimed.id][0].end is None
