"""A three-primary Redis Cluster runs the core scenario unchanged."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from perseid_jobs import Client, TaskStatus
from perseid_jobs.store.partitions import partition_of_id

from ..conftest import JOBS, wait_until, wait_workers
from ..test_cli import cli
from .conftest import Fleet, read_attempts, slots_left, task_rows
from .servers import ClusterSetup

pytestmark = pytest.mark.chaos


def test_three_primary_cluster_runs_the_core_scenario(
    tmp_path: Path, fleets: list[Fleet], report: Any
) -> None:
    cluster = ClusterSetup(tmp_path / "cluster").start()
    try:
        run_core(cluster, tmp_path, fleets, report)
    finally:
        for f in fleets:
            f.stop()
        cluster.stop()


def run_core(cluster: ClusterSetup, tmp_path: Path, fleets: list[Fleet], report: Any) -> None:
    client = Client.from_url(cluster.url, namespace="core", jobs_dir=JOBS)
    assert isinstance(client.redis, RedisCluster)  # a plain redis:// URL, detected
    records = tmp_path / "records"
    records.mkdir()
    plain = Fleet(cluster.url, "core", tmp_path)
    named = Fleet(cluster.cluster_url, "core", tmp_path)  # redis+cluster://h:p,h:p,h:p
    fleets += [plain, named]
    victim = plain.start(4)
    plain.start(4)
    named.start(4)
    wait_workers(client, 3)

    ids, throughput = each_task_runs_once(client, records)
    dependents_and_series_run(client)
    sleeper = client.schedule("sleep", {"seconds": 60})
    wait_until(lambda: client.get(sleeper.id).status is TaskStatus.RUNNING, 10, "running")
    client.cancel(sleeper.id)
    assert client.wait(sleeper.id, 10).status is TaskStatus.CANCELLED
    detection = a_killed_instances_tasks_fail(client, victim)

    # The namespace's 12 partitions (4 per primary, the default) spread its keys over
    # every node; each script still runs on one node, its partition's.
    assert len(client.partitions()) == 12
    owners = [redis.Redis(port=s.port).dbsize() for s in cluster.servers]
    assert min(owners) > 0
    report(
        "3-primary cluster, core scenario",
        tasks=len(ids),
        once=True,
        instances=3,
        scheduled_and_done_per_s=f"{throughput:.0f}",
        kill_detection_ms=f"{detection:.0f}",
        keys_per_node=owners,
    )


def each_task_runs_once(client: Client, records: Path) -> tuple[list[str], float]:
    """300 short tasks over the three instances: (their ids, scheduled and done per second)."""
    started = time.monotonic()
    ids = [
        client.schedule("chaos_record", {"dir": str(records), "seconds": 0.01}).id
        for _ in range(300)
    ]
    done = [client.wait(i, 30) for i in ids]
    throughput = len(ids) / (time.monotonic() - started)
    assert all(t.status is TaskStatus.COMPLETED and t.attempt == 1 for t in done)
    attempts = read_attempts(records)
    assert all(len(attempts[i]) == 1 for i in ids)
    assert len({t.instance for t in done}) == 3
    return ids, throughput


def dependents_and_series_run(client: Client) -> None:
    # Due in a second, so it cannot have ended before the child names it.
    parent = client.schedule("hello", {"name": "parent"}, at="+1s")
    child = client.schedule("hello", {"name": "child"}, after=parent.id)
    series = client.schedule("hello", every="1s")
    assert client.wait(child.id, 15).status is TaskStatus.COMPLETED
    assert client.get(parent.id).ended_at <= client.get(child.id).started_at  # type: ignore[operator]
    wait_until(
        lambda: next(s for s in client.series() if s.id == series.series).runs >= 2, 10, "runs"
    )
    client.cancel(series.id, series=True)


def a_killed_instances_tasks_fail(client: Client, victim: Any) -> float:
    """SIGKILL one instance while every slot is held: how long (ms) until its tasks failed."""
    victim_id = next(w.id for w in client.workers() if w.pid == victim.proc.pid)
    # As many sleepers as slots: every instance, the victim too, holds four.
    held = [client.schedule("sleep", {"seconds": 60}).id for _ in range(12)]
    wait_until(
        lambda: all(r["status"] == "running" for r in task_rows(client, held, "status")),
        10,
        "the sleepers to run",
    )
    victims = [
        i
        for i, r in zip(held, task_rows(client, held, "instance"), strict=True)
        if r["instance"] == victim_id
    ]
    assert victims
    victim.kill9()
    killed_at = client.now_ms()
    lost = [client.wait(i, 10) for i in victims]
    assert all(
        t.status is TaskStatus.FAILED and t.reason == f"instance {victim_id} lost" for t in lost
    )
    detection = max(t.ended_at.timestamp() * 1000 - killed_at for t in lost)  # type: ignore[union-attr]
    for i in set(held) - set(victims):
        client.cancel(i)
    wait_until(lambda: slots_left(client) == (0, 0), 10, "every slot back")
    return detection


def test_a_durable_schedule_on_a_cluster_waits_for_its_partitions_replica(
    tmp_path: Path,
) -> None:
    bare = ClusterSetup(tmp_path / "bare").start()  # no replicas: nothing can confirm
    try:
        done = cli(
            "schedule", "hello", "--at", "+1h", "--durable", "--jobs", str(JOBS),
            "--redis", bare.url, "--namespace", "durable", check=False,
        )  # fmt: skip
        assert done.returncode == 4, done.stderr
        assert "is stored on the primary, but no replica confirmed it" in done.stderr
    finally:
        bare.stop()
    cluster = ClusterSetup(tmp_path / "cluster", nodes=6, replicas=1).start()
    client = Client.from_url(cluster.url, namespace="durable", jobs_dir=JOBS)
    try:
        assert isinstance(client.redis, RedisCluster)
        # Keys route deterministically: these 40 reach every partition, so every primary.
        tasks = [client.schedule("hello", at="+1h", key=f"k{n}", durable=True) for n in range(40)]
        assert {partition_of_id(t.id) for t in tasks} == set(range(len(client.partitions())))
        assert all(client.get(t.id).status is TaskStatus.PENDING for t in tasks)
    finally:
        client.close()
        cluster.stop()
