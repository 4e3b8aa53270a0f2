"""Fan-in (issue 18, item 1): a task after several parents, on one Redis; the cluster and
crash cases are in tests/test_fan_in_partitions.py."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest

from perseid_jobs import Client, TaskStatus
from perseid_jobs.api.scheduling import MAX_PARENTS, DependencyEndedWarning
from perseid_jobs.core.errors import InvalidParents
from perseid_jobs.store.partitions import partition_of_id
from perseid_jobs.store.redisproc import RedisServer

from .conftest import JOBS, WorkerProc, namespace_keys, wait_workers
from .test_cli import cli


def events_of(c: Client, task_id: str, event: str) -> int:
    keys = c.keys_of(task_id)
    assert keys is not None
    entries = c.redis.xrange(keys.events)
    return sum(1 for _, f in entries if f.get("id") == task_id and f.get("event") == event)


def test_a_child_runs_once_after_the_later_of_its_parents(
    client: Client, start_worker: Callable[..., WorkerProc]
) -> None:
    start_worker(4)
    wait_workers(client, 1)
    a = client.schedule("hello", {"name": "a"})
    b = client.schedule("sleep", {"seconds": 1})
    c = client.schedule("hello", {"name": "c"}, after=[a.id, b.id])
    assert c.parents == [a.id, b.id] and c.status is TaskStatus.PENDING
    done = client.wait(c.id, 20)
    assert done.status is TaskStatus.COMPLETED and done.attempt == 1
    a_end, b_end = client.get(a.id).ended_at, client.get(b.id).ended_at
    assert a_end is not None and b_end is not None and done.started_at is not None
    assert a_end < b_end <= done.started_at  # after the later one, B
    assert done.waiting_on == []
    assert events_of(client, c.id, "released") == 1 and events_of(client, c.id, "running") == 1


def test_a_failed_parent_cancels_the_child_naming_it(
    client: Client, start_worker: Callable[..., WorkerProc]
) -> None:
    start_worker(4)
    wait_workers(client, 1)
    a = client.schedule("sleep", {"seconds": 30})
    b = client.schedule("fail")
    c = client.schedule("hello", after=[a.id, b.id])
    ended = client.wait(c.id, 20)
    assert ended.status is TaskStatus.CANCELLED
    assert ended.reason == f"dependency {b.id} failed"
    assert client.get(a.id).status is not TaskStatus.COMPLETED  # it did not wait for A
    assert events_of(client, c.id, "running") == 0


def test_parents_that_ended_before_the_child_count_as_they_ended(
    client: Client, start_worker: Callable[..., WorkerProc]
) -> None:
    a = client.schedule("hello", at="+1h")
    b = client.schedule("hello", at="+1h")
    client.cancel(b.id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c = client.schedule("hello", after=[a.id, b.id])
    assert c.status is TaskStatus.CANCELLED and c.reason == f"dependency {b.id} cancelled"
    assert [w.category for w in caught] == [DependencyEndedWarning]
    assert b.id in str(caught[0].message)
    # Every parent completed already: due at once.
    start_worker(4)
    wait_workers(client, 1)
    done = [client.schedule("hello", {"n": n}) for n in range(2)]
    for t in done:
        client.wait(t.id, 15)
    now = client.schedule("hello", after=[t.id for t in done])
    assert now.status is TaskStatus.PENDING and now.start_at is not None
    assert now.waiting_on == []
    assert client.wait(now.id, 15).status is TaskStatus.COMPLETED


def test_one_pending_parent_of_two_that_ended_holds_the_child(
    client: Client, start_worker: Callable[..., WorkerProc]
) -> None:
    start_worker(4)
    wait_workers(client, 1)
    a = client.wait(client.schedule("hello").id, 15)
    b = client.schedule("hello", at="+1h")
    c = client.schedule("hello", after=[a.id, b.id])
    assert c.status is TaskStatus.PENDING and c.start_at is None and c.waiting_on == [b.id]
    client.cancel(b.id)
    assert client.get(c.id).reason == f"dependency {b.id} cancelled"


@pytest.mark.parametrize("how", ["twice", "too many"])
def test_bad_parents_are_refused_and_write_nothing(client: Client, how: str) -> None:
    a = client.schedule("hello", at="+1h")
    parents = [a.id, a.id] if how == "twice" else [a.id] * (MAX_PARENTS + 1)
    if how == "too many":
        parents = [f"{a.id[:-3]}{n:03d}" for n in range(MAX_PARENTS + 1)]
    before = namespace_keys(client)
    pattern = "given twice" if how == "twice" else f"at most {MAX_PARENTS} parents"
    with pytest.raises(InvalidParents, match=pattern):
        client.schedule("hello", after=parents)
    assert namespace_keys(client) == before


@pytest.mark.parametrize("how", ["twice", "too many"])
def test_the_command_refuses_bad_parents_in_one_line_writing_nothing(
    client: Client, redis_server: RedisServer, namespace: str, how: str
) -> None:
    a = client.schedule("hello", at="+1h")
    ids = [a.id, a.id] if how == "twice" else [a.id] * (MAX_PARENTS + 1)
    before = namespace_keys(client)
    argv = ["schedule", "hello", "--jobs", str(JOBS), "--redis", redis_server.url,
            "--namespace", namespace]  # fmt: skip
    for parent in ids:
        argv += ["--after", parent]
    proc = cli(*argv, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    cause = f"--after {a.id} given twice" if how == "twice" else "a task waits on at most 100"
    assert len(lines) == 1 and cause in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert namespace_keys(client) == before


def test_a_fan_in_after_runs_of_series_waits_for_those_runs(
    client: Client, start_worker: Callable[..., WorkerProc]
) -> None:
    first = client.schedule("hello", every="1h", at="+2s")  # a run of an active series
    other = client.schedule("hello", every="1h", at="+1h")
    c = client.schedule("hello", after=[first.id, other.id])
    assert c.series is None and c.waiting_on == [first.id, other.id]  # no follower series
    start_worker(4)
    wait_workers(client, 1)
    client.wait(first.id, 20)
    assert client.get(c.id).waiting_on == [other.id]
    client.cancel(other.id)  # its pending run: the series ends, the run is cancelled
    ended = client.get(c.id)
    assert ended.status is TaskStatus.CANCELLED
    assert ended.reason == f"dependency {other.id} cancelled"


def test_a_keyed_fan_in_whose_parents_all_live_elsewhere_settles_through_the_outbox(
    redis_server: RedisServer, namespace: str, start_worker: Callable[..., WorkerProc]
) -> None:
    pc = Client.from_url(redis_server.url, namespace=namespace, jobs_dir=JOBS, partitions=4)
    parts = pc.partitions()
    a = pc.schedule("hello", {"n": 1}, at="+1h")
    b = next(t for n in range(50) if partition_of_id(
        (t := pc.schedule("hello", {"n": n}, at="+1h")).id) != partition_of_id(a.id))  # fmt: skip
    homes = {partition_of_id(a.id), partition_of_id(b.id)}
    key = next(k for n in range(100) if parts.for_idempotency_key(k := f"k{n}") not in homes)
    c = pc.schedule("hello", after=[a.id, b.id], key=key)
    assert partition_of_id(c.id) not in homes and c.waiting_on == [a.id, b.id]
    again = pc.schedule("hello", after=[a.id, b.id], key=key)
    assert again.existed and again.id == c.id  # the same request under the key
    start_worker(4, "--partitions", "4")
    wait_workers(pc, 1)
    pc.cancel(a.id)
    ended = pc.wait(c.id, 15)
    assert ended.status is TaskStatus.CANCELLED and ended.reason == f"dependency {a.id} cancelled"
    pc.cancel(b.id)  # its settle reaches a child already cancelled: no change
    assert pc.get(c.id).reason == f"dependency {a.id} cancelled"
    # Both parents complete elsewhere: the child runs once, after both.
    d, e = pc.schedule("sleep", {"seconds": 0.5}), pc.schedule("hello", {"n": "e"})
    f = pc.schedule("hello", after=[d.id, e.id], key=key + "f")
    done = pc.wait(f.id, 15)
    assert done.status is TaskStatus.COMPLETED and done.attempt == 1
    d_end = pc.get(d.id).ended_at
    assert d_end is not None and done.started_at is not None and d_end <= done.started_at
    assert events_of(pc, f.id, "released") == 1
    pc.close()
