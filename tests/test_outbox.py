"""Crossing partitions through the outbox: a keyed task after a parent in another
partition, settled exactly once, whoever delivers and however often."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import msgspec
import pytest

from perseid_jobs import Client, TaskStatus
from perseid_jobs.api.scheduling import DependencyEndedWarning
from perseid_jobs.core.errors import ConfigError
from perseid_jobs.core.models import JobDefinition
from perseid_jobs.store import outbox
from perseid_jobs.store.partitions import partition_of_id
from perseid_jobs.store.redisproc import RedisServer
from perseid_jobs.worker.outcome import Outcome

from .conftest import JOBS, WorkerProc, namespace_keys, wait_until, wait_workers


@pytest.fixture
def pc(redis_server: RedisServer, namespace: str) -> Client:
    return Client.from_url(redis_server.url, namespace=namespace, jobs_dir=JOBS, partitions=4)


def key_elsewhere(c: Client, task_id: str) -> str:
    """An idempotency key whose partition is not the task's."""
    parts = c.partitions()
    return next(
        k for n in range(100)
        if parts.for_idempotency_key(k := f"key-{n}") != partition_of_id(task_id)
    )  # fmt: skip


def outbox_size(c: Client) -> int:
    return sum(int(c.redis.zcard(k.outbox_at)) for k in c.partitions())


def released_events(c: Client, task_id: str) -> int:
    keys = c.keys_of(task_id)
    assert keys is not None
    entries = c.redis.xrange(keys.events)
    return sum(1 for _, f in entries if f.get("id") == task_id and f.get("event") == "released")


def test_a_keyed_child_in_another_partition_runs_after_its_parent(
    pc: Client, start_worker: Callable[..., WorkerProc]
) -> None:
    start_worker(4, "--partitions", "4")
    wait_workers(pc, 1)
    parent = pc.schedule("hello", {"name": "parent"}, at="+1s")
    key = key_elsewhere(pc, parent.id)
    child = pc.schedule("hello", {"name": "child"}, after=parent.id, key=key)
    assert partition_of_id(child.id) != partition_of_id(parent.id)
    assert child.status is TaskStatus.PENDING and child.start_at is None
    assert pc.wait(child.id, 15).status is TaskStatus.COMPLETED
    assert pc.get(parent.id).ended_at <= pc.get(child.id).started_at  # type: ignore[operator]
    assert released_events(pc, child.id) == 1
    again = pc.schedule("hello", {"name": "child"}, after=parent.id, key=key)
    assert not again.existed and again.id != child.id  # an ended task frees its key
    assert outbox_size(pc) == 0


def test_a_parent_that_fails_cancels_its_child_elsewhere_and_an_ended_one_settles_at_once(
    pc: Client,
) -> None:
    parent = pc.schedule("hello", at="+1h")
    child = pc.schedule("hello", after=parent.id, key=key_elsewhere(pc, parent.id))
    pc.cancel(parent.id)  # the cancel delivers what it made
    ended = pc.get(child.id)
    assert ended.status is TaskStatus.CANCELLED
    assert ended.reason == f"dependency {parent.id} cancelled"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        late = pc.schedule("hello", after=parent.id, key=key_elsewhere(pc, parent.id) + "x")
    assert late.status is TaskStatus.CANCELLED  # settled through the outbox, before returning
    assert [w.category for w in caught] == [DependencyEndedWarning]
    assert outbox_size(pc) == 0


def test_a_delivery_left_by_a_dead_finisher_is_applied_once_by_any_reaper(
    pc: Client, start_worker: Callable[..., WorkerProc]
) -> None:
    # A stand-in instance claims and finishes the parent and dies before delivering: its
    # finish put the settle in the outbox, atomically, and nothing applied it yet.
    parent = pc.schedule("chaos_record", {"dir": "/nonexistent"})
    child = pc.schedule("hello", after=parent.id, key=key_elsewhere(pc, parent.id))
    home = pc.keys_of(parent.id)
    assert home is not None
    s = pc.scripts_in(home)
    one = msgspec.json.encode(JobDefinition(slots=1, max_duration_ms=60_000)).decode()
    s.register("gone", ttl_ms=600_000, slots=1, host="h", pid=1, version="t",
               jobs={"chaos_record": one})  # fmt: skip
    claimed = s.claim("gone", 1)
    assert [t.id for t in claimed.tasks] == [parent.id]  # type: ignore[union-attr]
    finished = s.finish("gone", [Outcome(parent.id, "1", TaskStatus.COMPLETED, "0", "")], 0)
    assert finished.outbox == 1 and outbox_size(pc) == 1
    assert pc.get(child.id).status is TaskStatus.PENDING  # still blocked: not delivered
    left = outbox.pending(pc.redis, home)
    assert [item[0] for _, _, item in left] == ["settle"]
    # A live worker's reaper applies what is left in the outbox, and acknowledges it.
    start_worker(2, "--partitions", "4")
    wait_until(lambda: any(w.id != "gone" for w in pc.workers()), 15, "the worker")
    assert pc.wait(child.id, 15).status is TaskStatus.COMPLETED
    wait_until(lambda: outbox_size(pc) == 0, 10, "the outbox acknowledged")
    # Delivered again, twice (a retry, or two reapers at once): nothing more happens.
    for _ in range(2):
        for _, target, item in left:
            assert pc.scripts_in(pc.partitions().keys[target]).deliver([item]).applied == 1
    assert released_events(pc, child.id) == 1
    assert pc.get(child.id).status is TaskStatus.COMPLETED and pc.get(child.id).attempt == 1


def test_a_follower_series_with_a_key_elsewhere_is_refused_and_writes_nothing(
    pc: Client,
) -> None:
    series = pc.schedule("hello", every="1h")
    key = key_elsewhere(pc, series.id)
    before = namespace_keys(pc)
    with pytest.raises(ConfigError, match=r"a run of an active series: in a namespace of 4"):
        pc.schedule("hello", after=series.id, key=key)
    assert namespace_keys(pc) == before
