"""Partitions on the client's side: tags, the recorded count, ids, routing, merged reads."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from perseid_jobs import Client, TaskStatus
from perseid_jobs.core.errors import TaskNotFound
from perseid_jobs.store.partitions import (
    PartitionCountError,
    check_count,
    partition_of_id,
    partition_tag,
    record_key,
)
from perseid_jobs.store.redisproc import RedisServer

from .conftest import JOBS


def make(server: RedisServer, namespace: str, partitions: int | None = None) -> Client:
    return Client.from_url(server.url, namespace=namespace, jobs_dir=JOBS, partitions=partitions)


def test_one_partition_is_todays_layout(client: Client) -> None:
    task = client.schedule("hello")
    assert client.keys.prefix == "{" + client.namespace + "}:"
    assert client.redis.exists(client.keys.task(task.id))
    assert task.id[10:12] == "00" and partition_of_id(task.id) == 0
    assert client.redis.get(record_key(client.namespace)) == "1"


@pytest.mark.parametrize(("count", "primaries"), [(12, 3), (24, 6), (4, 1), (7, 7)])
def test_the_tags_spread_evenly_over_equal_slot_ranges(count: int, primaries: int) -> None:
    slots = [int(key_slot(partition_tag("ns", i, count).encode())) for i in range(count)]
    # redis-cli --cluster create gives primary j the j-th of `primaries` equal ranges.
    per_primary = [0] * primaries
    for s in slots:
        per_primary[s * primaries // 16384] += 1
    assert per_primary == [count // primaries] * primaries
    assert len(set(slots)) == count


def test_a_task_id_names_the_partition_that_holds_it(
    redis_server: RedisServer, namespace: str
) -> None:
    c = make(redis_server, namespace, 4)
    tasks = [c.schedule("hello", {"n": n}) for n in range(40)]
    seen = set()
    for t in tasks:
        index = partition_of_id(t.id)
        assert index is not None
        seen.add(index)
        assert c.redis.exists(c.partitions().keys[index].task(t.id))
        assert c.get(t.id).id == t.id
    assert seen == {0, 1, 2, 3}  # spread
    assert {t.id for t in c.tasks(limit=100)} == {t.id for t in tasks}


def test_routing_keeps_chains_series_and_keys_in_one_partition(
    redis_server: RedisServer, namespace: str
) -> None:
    c = make(redis_server, namespace, 8)
    parent = c.schedule("hello", at="+1h")
    children = [c.schedule("hello", after=parent.id) for _ in range(5)]
    assert {partition_of_id(t.id) for t in children} == {partition_of_id(parent.id)}
    keyed = [c.schedule("hello", key=f"k{n}") for n in range(8)]
    again = [c.schedule("hello", key=f"k{n}") for n in range(8)]
    assert [t.id for t in again] == [t.id for t in keyed] and all(t.existed for t in again)
    series = c.schedule("hello", every="1h")
    assert series.series is not None
    assert partition_of_id(series.series) == partition_of_id(series.id)
    assert c.get_series(series.series).current == series.id


def test_reads_merge_the_partitions_in_order(redis_server: RedisServer, namespace: str) -> None:
    c = make(redis_server, namespace, 4)
    ids = [c.schedule("hello", at=f"+{n + 1}h").id for n in range(12)]
    assert [t.id for t in c.tasks(status="pending", limit=5)] == ids[:5]
    cancelled = [c.cancel(i) for i in ids[:6]]
    assert all(t.status is TaskStatus.CANCELLED for t in cancelled)
    # Ended: newest first, over all partitions (tasks that ended in one millisecond tie).
    newest = c.tasks(status="cancelled", limit=3)
    ends = sorted((t.ended_at for t in cancelled if t.ended_at), reverse=True)
    assert [t.ended_at for t in newest] == ends[:3]
    runs = [c.schedule("hello", every=f"{n + 1}h") for n in range(3)]
    assert {s.id for s in c.series(limit=3)} == {r.series for r in runs}
    assert len(c.series(limit=2)) == 2


def test_the_count_is_recorded_at_first_write_and_read_from_redis(
    redis_server: RedisServer, namespace: str
) -> None:
    first = make(redis_server, namespace, 6)
    assert first.tasks() == []  # a read records nothing
    assert first.redis.get(record_key(namespace)) is None
    first.schedule("hello")
    assert first.redis.get(record_key(namespace)) == "6"
    later = make(redis_server, namespace)  # no count given: the recorded one
    assert len(later.partitions()) == 6
    with pytest.raises(PartitionCountError, match=r"has 6 partitions .* not 3: drop --partitions"):
        make(redis_server, namespace, 3).tasks()


def test_a_namespace_from_before_partitions_stays_one_partition(
    redis_server: RedisServer, namespace: str
) -> None:
    old = make(redis_server, namespace)
    task = old.schedule("hello")
    old.redis.delete(record_key(namespace))  # as a namespace made before the record existed
    later = make(redis_server, namespace)
    assert later.get(task.id).id == task.id
    later.schedule("hello")
    assert later.redis.get(record_key(namespace)) == "1"


@pytest.mark.parametrize("text", ["0", "-2", "abc", "1.5", "1025", "²"])
def test_a_bad_count_is_refused_with_the_fix(text: str) -> None:
    with pytest.raises(PartitionCountError, match=r"give a whole number from 1 to 1024"):
        check_count(text)


def test_an_id_of_a_partition_the_namespace_lacks_is_not_found(
    redis_server: RedisServer, namespace: str
) -> None:
    c = make(redis_server, namespace, 2)
    task = c.schedule("hello")
    foreign = task.id[:10] + "0Z" + task.id[12:]  # partition 31
    with pytest.raises(TaskNotFound):
        c.get(foreign)
    with pytest.raises(TaskNotFound):
        c.cancel(foreign)
