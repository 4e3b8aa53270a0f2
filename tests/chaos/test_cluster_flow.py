"""Flow control on a three-primary Redis Cluster with 12 partitions: tasks that share a
limit share a partition, so the limit holds over all workers; a pause covers every
partition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from perseid_jobs import Client, TaskStatus
from perseid_jobs.store.partitions import partition_of_id

from ..conftest import JOBS, wait_workers
from ..test_flow import most_at_once, wait_all
from .conftest import Fleet
from .servers import ClusterSetup

pytestmark = pytest.mark.chaos


def test_limits_and_pauses_hold_over_a_cluster(
    tmp_path: Path, fleets: list[Fleet], report: Any
) -> None:
    cluster = ClusterSetup(tmp_path / "cluster").start()
    try:
        client = Client.from_url(cluster.url, namespace="flow", jobs_dir=JOBS)
        fleet = Fleet(cluster.url, "flow", tmp_path)
        fleets.append(fleet)
        for _ in range(3):
            fleet.start(4)
        wait_workers(client, 3)
        assert len(client.partitions()) == 12
        serial = wait_all(client, [client.schedule("flow_serial") for _ in range(100)], 120)
        assert {t.status for t in serial} == {TaskStatus.COMPLETED}
        assert len({partition_of_id(t.id) for t in serial}) == 1  # the limit's partition
        assert most_at_once(serial) == 1
        assert len({t.instance for t in serial}) > 1  # the workers took turns
        grouped = {g: [client.schedule("flow_grouped", {"seconds": 0.2}, group=g)
                       for _ in range(4)] for g in ("a", "b", "c")}  # fmt: skip
        for tasks in grouped.values():
            done = wait_all(client, tasks)
            assert {t.status for t in done} == {TaskStatus.COMPLETED}
            assert most_at_once(done) <= 2
        held = paused_group_waits(client)
        report(
            "flow control on a 3-primary cluster (12 partitions)",
            serial_tasks=len(serial),
            serial_instances=len({t.instance for t in serial}),
            overlapping=most_at_once(serial) - 1,
            paused_partitions=held,
        )
    finally:
        for f in fleets:
            f.stop()
        cluster.stop()


def paused_group_waits(client: Client) -> int:
    """Pause a group whose tasks spread over the partitions; they wait, then all run."""
    client.pause(group="tenant")
    held = [client.schedule("hello", group="tenant") for _ in range(24)]
    probe = [client.schedule("hello") for _ in range(24)]  # spread the same way
    assert {t.status for t in wait_all(client, probe)} == {TaskStatus.COMPLETED}
    assert {client.get(t.id).status for t in held} == {TaskStatus.PENDING}
    partitions = len({partition_of_id(t.id) for t in held})
    assert partitions > 1
    client.resume(group="tenant")
    assert {t.status for t in wait_all(client, held)} == {TaskStatus.COMPLETED}
    return partitions
