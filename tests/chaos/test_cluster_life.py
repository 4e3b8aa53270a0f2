"""Cluster life under a running namespace: a partition's slot moves to another primary."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from perseid_jobs import Client, TaskStatus

from ..conftest import JOBS, wait_until, wait_workers
from .conftest import AckedScheduler, Fleet, read_attempts, slots_left
from .servers import ClusterSetup

pytestmark = pytest.mark.chaos

TASKS = 400


def node_ids(cluster: ClusterSetup) -> list[str]:
    """Each server's cluster node id, in the order of ``cluster.servers``."""
    return [
        str(redis.Redis(port=s.port).execute_command("CLUSTER", "MYID"), "ascii")
        for s in cluster.servers
    ]


def owner_port(cluster: ClusterSetup, slot: int) -> int:
    """The port of the primary that serves ``slot`` now."""
    c = redis.Redis(port=cluster.servers[0].port, decode_responses=True)
    for start, end, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
        if start <= slot <= end:
            return int(primary[1])
    raise AssertionError(f"slot {slot} is not served")


def rejected(cluster: ClusterSetup, kind: str) -> int:
    """How many commands the nodes answered with error ``kind`` (TRYAGAIN, ASK)."""
    total = 0
    for s in cluster.servers:
        stats = redis.Redis(port=s.port).info("errorstats")
        total += int(stats.get(f"errorstat_{kind}", {}).get("count", 0))
    return total


def reshard(cluster: ClusterSetup, source: str, target: str, count: int) -> None:
    """``redis-cli --cluster reshard``: ``count`` slots from ``source`` to ``target``.

    One key per MIGRATE, so a slot that holds a partition takes long to move and the
    scripts meet it half moved.
    """
    cli = shutil.which("redis-cli")
    assert cli is not None
    done = subprocess.run(
        [
            cli, "--cluster", "reshard", f"127.0.0.1:{cluster.servers[0].port}",
            "--cluster-from", source, "--cluster-to", target,
            "--cluster-slots", str(count), "--cluster-pipeline", "1", "--cluster-yes",
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # A script run on the node taking the slot, on the keys moved so far, makes keys
    # that MIGRATE then finds there, different ("Value check failed"): the reshard stops
    # half done.
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]


def test_a_reshard_during_a_run_loses_and_doubles_nothing(
    tmp_path: Path, fleets: list[Fleet], report: Any
) -> None:
    cluster = ClusterSetup(tmp_path / "cluster").start()
    try:
        run_reshard(cluster, tmp_path, fleets, report)
    finally:
        for f in fleets:
            f.stop()
        cluster.stop()


def run_reshard(cluster: ClusterSetup, tmp_path: Path, fleets: list[Fleet], report: Any) -> None:
    client = Client.from_url(cluster.url, namespace="life", jobs_dir=JOBS)
    assert isinstance(client.redis, RedisCluster)
    records = tmp_path / "records"
    records.mkdir()
    fleet = Fleet(cluster.url, "life", tmp_path)
    fleets.append(fleet)
    workers = [fleet.start(4), fleet.start(4)]
    wait_workers(client, 2)
    first = cluster.servers[0].port
    slots = [client.redis.keyslot(k.prefix) for k in client.partitions()]
    moving = [s for s in slots if owner_port(cluster, s) == first]
    assert moving, "the first primary holds partitions (4 of the 12, by default)"

    # Pending tasks for later: keys enough in each partition's slot that its move takes
    # a while, and what a move must keep.
    ballast = [client.schedule("hello", at="+1h").id for _ in range(3000)]
    scheduler = AckedScheduler(client, records, TASKS, pause_s=0.005)
    feeding = threading.Thread(target=scheduler.run)
    feeding.start()
    wait_until(lambda: len(scheduler.acked) >= TASKS // 4, 30, "a quarter scheduled")
    ids = node_ids(cluster)
    # All of the first primary's slots (0-5460), its partitions with them, mid-run.
    reshard(cluster, ids[0], ids[1], 5461)
    feeding.join(120)
    assert not feeding.is_alive()

    assert all(owner_port(cluster, s) == cluster.servers[1].port for s in moving)
    done = [client.wait(i, 60) for i in scheduler.acked]
    assert len(set(scheduler.acked)) == TASKS
    assert [t.id for t in done if t.status is not TaskStatus.COMPLETED] == []
    attempts = read_attempts(records)
    assert sorted(attempts) == sorted(scheduler.acked), "each acknowledged task ran"
    assert [i for i, a in attempts.items() if len(a) != 1] == [], "none ran twice"
    wait_until(lambda: slots_left(client) == (0, 0), 10, "every slot back")
    r = client.redis
    assert sum(r.zcard(k.running) + r.zcard(k.blocked) for k in client.partitions()) == 0
    assert sum(r.zcard(k.due) for k in client.partitions()) == len(ballast), "pending kept"
    held_off = rejected(cluster, "TRYAGAIN")
    assert held_off > 0, "scripts met a slot being moved, and were held off"
    for w in workers:
        assert w.proc.poll() is None, w.output()
        assert "non local key" not in w.output(), w.output()
    report(
        "reshard during a run (3 primaries, 12 partitions)",
        tasks=TASKS,
        partitions_moved=len(moving),
        completed_once=TASKS,
        schedule_retries=scheduler.failures,
        pending_kept=len(ballast),
        tryagain_replies=held_off,
    )
