"""Fan-in on a three-primary Redis Cluster: parents in partitions of different primaries,
the child settled exactly once, also when its worker is SIGKILLed between a parent's finish
and the child's release (issue 18)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import redis

from perseid_jobs import Client, TaskStatus
from perseid_jobs.api.scheduling import DependencyEndedWarning
from perseid_jobs.store import outbox
from perseid_jobs.store.partitions import partition_of_id

from ..conftest import JOBS, wait_until, wait_workers
from .conftest import Fleet
from .servers import ClusterSetup

pytestmark = pytest.mark.chaos


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    setup = ClusterSetup(tmp_path / "cluster").start()
    yield setup
    setup.stop()


def node_port(client: Client, partition: int) -> int:
    """The port of the primary that holds a partition."""
    key = client.partitions().keys[partition].task("x")
    return int(client.redis.get_node_from_key(key).port)


def request_on_another_node(client: Client, port: int) -> str:
    """A request id whose spread partition lives on a primary other than ``port``'s."""
    parts = client.partitions()
    return next(r for n in range(1000)
                if node_port(client, parts.spread(r := f"req-{n}")) != port)  # fmt: skip


def events(client: Client, task_id: str, event: str) -> list[int]:
    keys = client.keys_of(task_id)
    assert keys is not None
    return [int(e.split("-")[0]) for e, f in client.redis.xrange(keys.events)
            if f.get("id") == task_id and f.get("event") == event]  # fmt: skip


def outbox_left(client: Client) -> int:
    return sum(int(client.redis.zcard(k.outbox_at)) for k in client.partitions())


def test_fan_in_over_primaries_runs_once_and_a_failed_parent_cancels(
    cluster: ClusterSetup, tmp_path: Path, fleets: list[Fleet]
) -> None:
    client = Client.from_url(cluster.url, namespace="fan", jobs_dir=JOBS)
    fleet = Fleet(cluster.url, "fan", tmp_path)
    fleets.append(fleet)
    fleet.start(4)
    fleet.start(4)
    wait_workers(client, 2)
    a = client.schedule("hello", {"name": "a"})
    home = node_port(client, partition_of_id(a.id) or 0)
    b = client.schedule("sleep", {"seconds": 1}, request_id=request_on_another_node(client, home))
    d = client.schedule("hello", request_id=request_on_another_node(client, home) + "d")
    assert len({node_port(client, partition_of_id(t.id) or 0) for t in (a, b)}) == 2
    c = client.schedule("hello", {"name": "c"}, after=[a.id, b.id, d.id])
    assert partition_of_id(c.id) == partition_of_id(a.id)  # the first parent's partition
    done = client.wait(c.id, 30)
    assert done.status is TaskStatus.COMPLETED and done.attempt == 1
    b_end = client.get(b.id).ended_at
    assert b_end is not None and done.started_at is not None and b_end <= done.started_at
    assert len(events(client, c.id, "released")) == 1
    # A failed parent in another primary's partition cancels the child, naming it.
    e = client.schedule("sleep", {"seconds": 30})
    f = client.schedule("fail", request_id=request_on_another_node(client, home) + "f")
    g = client.schedule("hello", after=[e.id, f.id])
    ended = client.wait(g.id, 30)
    assert ended.status is TaskStatus.CANCELLED and ended.reason == f"dependency {f.id} failed"
    # Parents that ended before the child was scheduled: settled before schedule returns.
    with pytest.warns(DependencyEndedWarning, match=f"--after {f.id}: that task already failed"):
        late = client.schedule("hello", after=[a.id, f.id])
    assert late.status is TaskStatus.CANCELLED and late.reason == f"dependency {f.id} failed"
    wait_until(lambda: outbox_left(client) == 0, 15, "every outbox emptied")


def test_a_worker_killed_between_a_parents_finish_and_the_release_is_settled_once(
    cluster: ClusterSetup, tmp_path: Path, fleets: list[Fleet]
) -> None:
    client = Client.from_url(cluster.url, namespace="fank", jobs_dir=JOBS)
    fleet = Fleet(cluster.url, "fank", tmp_path)
    fleets.append(fleet)
    # Its idle calls far apart, so that nothing but B's finish and its delivery runs while
    # C's primary is frozen below.
    first = fleet.start(4, "--lease-ttl", "60", "--heartbeat", "20", "--reap-interval", "30")
    wait_workers(client, 1)
    a = client.wait(client.schedule("hello", {"name": "a"}).id, 15)
    home_port = node_port(client, partition_of_id(a.id) or 0)
    b = client.schedule(
        "sleep", {"seconds": 1}, request_id=request_on_another_node(client, home_port)
    )
    c = client.schedule("hello", {"name": "c"}, after=[a.id, b.id])
    assert client.get(c.id).waiting_on == [b.id]
    wait_until(lambda: client.get(b.id).status is TaskStatus.RUNNING, 15, "B running")
    # Freeze scripts on C's primary: B's finish (on its own primary) records the settle in
    # its outbox; the worker's delivery to C's partition waits there. Kill it then.
    home = redis.Redis(port=home_port)
    home.execute_command("CLIENT", "PAUSE", 20000, "WRITE")
    try:
        b_keys = client.keys_of(b.id)
        assert b_keys is not None
        wait_until(lambda: client.redis.hget(b_keys.task(b.id), "status") == "completed",
                   15, "B's finish")  # fmt: skip
        assert client.redis.zcard(b_keys.outbox_at) == 1  # the settle, not yet acknowledged
        left = outbox.pending(client.redis, b_keys)
        held = client.get(c.id)  # a read: served while scripts wait
        assert held.status is TaskStatus.PENDING and held.waiting_on == [b.id]
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
    finally:
        home.execute_command("CLIENT", "UNPAUSE")
        home.close()
    fleet.start(4)
    done = client.wait(c.id, 30)
    assert done.status is TaskStatus.COMPLETED and done.attempt == 1
    b_end = client.get(b.id).ended_at
    assert b_end is not None and done.started_at is not None and b_end <= done.started_at
    assert len(events(client, c.id, "released")) == 1
    assert len(events(client, c.id, "running")) == 1
    wait_until(lambda: outbox_left(client) == 0, 15, "every outbox emptied")
    # The settle applied again, twice (a deliverer that died before its ack): no change.
    for _ in range(2):
        for _, target, item in left:
            client.scripts_in(client.partitions().keys[target]).deliver([item])
    assert len(events(client, c.id, "released")) == 1
    assert client.get(c.id).status is TaskStatus.COMPLETED
