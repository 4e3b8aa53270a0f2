"""Cluster life: a primary that owns partitions dies mid-run and its replica takes over."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import RedisCluster

from perseid_jobs import Client, TaskStatus
from perseid_jobs.core.errors import NotDurable, RedisUnavailable
from perseid_jobs.store.connection import REDIS_ERRORS
from perseid_jobs.store.partitions import partition_of_id

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
from .servers import ClusterSetup
from .test_cluster_life import owner_port

pytestmark = pytest.mark.chaos

TASKS = 300
# The lease outlives the failover (node timeout 2 s, then the replica's election), so no
# worker fences on the way.
TIMING = ("--heartbeat", "0.5s", "--lease-ttl", "10s", "--reap-interval", "0.5s")


class MixedScheduler(AckedScheduler):
    """An :class:`AckedScheduler` whose every third schedule is durable (``WAIT 1``).

    A durable schedule counts as acknowledged only once it returned: one that raised
    (Redis away, or :class:`NotDurable`: no replica confirmed it) is sent again under
    its key, and the repeat waits for a replica again.
    """

    def __init__(self, client: Client, records: Path, count: int, pause_s: float) -> None:
        super().__init__(client, records, count, pause_s)
        self.durable: set[str] = set()

    def run(self) -> None:
        """Schedule them all (the body of a thread)."""
        for i in range(self.count):
            durable = i % 3 == 0
            args = {"dir": str(self.records), "seconds": 0.05}
            while True:
                try:
                    task = self.client.schedule("chaos_record", args, key=f"k{i}", durable=durable)
                    break
                except (*REDIS_ERRORS, RedisUnavailable, NotDurable):
                    self.failures += 1
                    time.sleep(0.05)
            self.acked.append(task.id)
            if durable:
                self.durable.add(task.id)
            time.sleep(self.pause_s)


def test_workers_carry_on_after_a_cluster_primary_fails_over(
    tmp_path: Path, fleets: list[Fleet], report: Any
) -> None:
    cluster = ClusterSetup(tmp_path / "cluster", nodes=6, replicas=1).start()
    try:
        run_failover(cluster, tmp_path, fleets, report)
    finally:
        for f in fleets:
            f.stop()
        cluster.stop()


def fail_over_while_scheduling(
    cluster: ClusterSetup, client: Client, sched: MixedScheduler, victim: Any, moving: list[int]
) -> tuple[float, float]:
    """Kill ``victim`` a third of the way into the schedules: (seconds until its partitions
    were served again, seconds until every task ended)."""
    slots = [client.redis.keyslot(k.prefix) for k in client.partitions()]
    feeding = threading.Thread(target=sched.run)
    feeding.start()
    wait_until(lambda: len(sched.acked) >= TASKS // 3, 30, "a third of the schedules")
    victim.kill()
    killed = time.monotonic()
    wait_until(
        lambda: all(owner_port(cluster, slots[i]) != victim.port for i in moving),
        30,
        "the victim's replica to be promoted",
    )
    failover_s = time.monotonic() - killed
    # The promoted primary has no replica, so no durable schedule of its partitions can be
    # confirmed (NotDurable, retried) until the old primary, restarted, rejoins as one.
    victim.start()
    feeding.join(120)
    assert not feeding.is_alive()
    wait_until(lambda: all_settled(client), 60, "every task to end")
    return failover_s, time.monotonic() - killed  # the second includes the backlog's end


def run_failover(cluster: ClusterSetup, tmp_path: Path, fleets: list[Fleet], report: Any) -> None:
    client = Client.from_url(cluster.url, namespace="flip", jobs_dir=JOBS)
    assert isinstance(client.redis, RedisCluster)
    records = tmp_path / "records"
    records.mkdir()
    fleet = Fleet(cluster.url, "flip", tmp_path, *TIMING)
    fleets.append(fleet)
    workers = [fleet.start(4) for _ in range(3)]
    wait_workers(client, 3)
    before = {w.id for w in client.workers()}
    slots = [client.redis.keyslot(k.prefix) for k in client.partitions()]
    # The second primary (servers[0] stays up: it is the node the URL names).
    victim = cluster.servers[1]
    moving = [i for i, s in enumerate(slots) if owner_port(cluster, s) == victim.port]
    assert moving, "the victim owns partitions (4 of the 12, by default)"

    sched = MixedScheduler(client, records, TASKS, pause_s=0.01)
    failover_s, downtime_s = fail_over_while_scheduling(cluster, client, sched, victim, moving)

    # Afterwards, every partition, the promoted node's too, still claims and finishes.
    later = [client.schedule("hello", key=f"after{n}", durable=n % 2 == 0) for n in range(40)]
    assert {partition_of_id(t.id) for t in later} == set(range(len(slots)))
    assert all(client.wait(t.id, 30).status is TaskStatus.COMPLETED for t in later)

    rows = task_rows(client, sched.acked, "status")
    lost = [i for i, r in zip(sched.acked, rows, strict=True) if r["status"] is None]
    attempts = read_attempts(records)
    outputs = "".join(w.output() for w in workers)
    used, held = slots_left(client)
    report(
        "Cluster primary failover (3 primaries + 3 replicas, 12 partitions)",
        acknowledged=len(sched.acked),
        durable=len(sched.durable),
        lost_by_async_replication=len(lost),
        lost_durable=len(set(lost) & sched.durable),
        completed=sum(r["status"] == "completed" for r in rows),
        ran_twice=sum(len(a) > 1 for a in attempts.values()),
        overlapping=overlapping(attempts),
        slots_left=used,
        failover_s=f"{failover_s:.1f}",
        until_settled_s=f"{downtime_s:.1f}",
        schedule_retries=sched.failures,
        reported_again=outputs.count("Redis lost the earlier report"),
        workers_kept_their_ids=before == {w.id for w in client.workers()},
    )
    assert len(set(sched.acked)) == TASKS
    # Every durable schedule a replica confirmed survives the failover and completes.
    assert [r["status"] for i, r in zip(sched.acked, rows, strict=True) if i in sched.durable] == [
        "completed"
    ] * len(sched.durable)
    # Async replication may lose a plain schedule the old primary acknowledged last: only
    # in the victim's partitions. Every task the new primaries have completes (a lost claim
    # runs again; a lost finish is reported again): no task chaos_record runs fails.
    assert {partition_of_id(i) for i in lost} <= set(moving)
    assert all(r["status"] == "completed" for r in rows if r["status"] is not None)
    assert overlapping(attempts) == 0
    assert (used, held) == (0, 0)
    assert all(w.proc.poll() is None for w in workers), outputs[-3000:]
    assert "Redis answers again" in outputs
