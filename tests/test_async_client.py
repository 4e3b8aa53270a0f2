"""perseid_jobs.AsyncClient against real Redis: each method, a 3-partition namespace for the
merging reads, ``wait`` with a real worker, and the same answers as the sync Client.

Each test runs its coroutine with ``asyncio.run`` (no asyncio plugin in the dev extras).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis

from perseid_jobs import AsyncClient, Client, PastStartWarning, WaitTimeout
from perseid_jobs.api.aio_connection import connect_async
from perseid_jobs.core.errors import (
    InvalidArgs,
    InvalidTag,
    InvalidTime,
    KeyConflict,
    NotDurable,
    RedisUnavailable,
    SeriesAlreadyEnded,
    SeriesEnded,
    SeriesNotFound,
    TaskAlreadyEnded,
    TaskNotEnded,
    TaskNotFound,
    TriggerEnded,
    UnknownId,
    UnknownJob,
)
from perseid_jobs.core.models import TaskStatus
from perseid_jobs.store.partitions import partition_of_id
from perseid_jobs.store.redisproc import RedisServer

from .chaos.servers import ClusterSetup, SentinelSetup
from .conftest import JOBS, WorkerProc, wait_workers
from .test_controls import Snapshot, fail_pending
from .test_controls import snapshot as snapshot  # the fixture, shared

T = TypeVar("T")

# Sync on both clients: they build objects and do no I/O.
NO_IO = {"from_url", "scripts_in"}


def run(make: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await make()

    return asyncio.run(main())


@pytest.fixture
def aclient(redis_server: RedisServer, namespace: str) -> Iterator[Callable[..., AsyncClient]]:
    """A maker of async clients on the session's Redis and the test's namespace."""

    def make(**kw: Any) -> AsyncClient:
        kw.setdefault("namespace", namespace)
        return AsyncClient.from_url(redis_server.url, jobs_dir=JOBS, **kw)

    yield make


def public_methods(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and (inspect.isfunction(member) or inspect.ismethod(member))
    }


def test_async_client_has_every_public_method_of_client_as_a_coroutine() -> None:
    sync, aio = public_methods(Client), public_methods(AsyncClient)
    assert len(sync) >= 25  # the test sees the methods (schedule, get, wait, pause, ...)
    assert sorted(set(sync) - set(aio)) == []
    not_coroutines = {n for n in sync if n not in NO_IO and not inspect.iscoroutinefunction(aio[n])}
    assert not_coroutines == set()
    differ = {
        n
        for n in sync
        if n not in NO_IO
        and inspect.signature(sync[n]).parameters.keys()
        != inspect.signature(aio[n]).parameters.keys()
    }
    assert differ == set()  # the same arguments, by the same names


def test_schedule_get_kind_of_tasks_and_cancel(aclient: Callable[..., AsyncClient]) -> None:
    async def main() -> None:
        async with aclient() as c:
            one = await c.schedule("hello", {"name": "Ada"}, at="+1h", key="k1", group="g")
            assert one.status is TaskStatus.PENDING and one.args == {"name": "Ada"}
            again = await c.schedule("hello", {"name": "Ada"}, at="+1h", key="k1", group="g")
            assert again.existed and again.id == one.id
            with pytest.raises(KeyConflict):
                await c.schedule("hello", {"name": "Bob"}, at="+1h", key="k1")
            assert (await c.get(one.id)).id == one.id
            assert await c.kind_of(one.id) == "task"
            assert [t.id for t in await c.tasks(status="pending")] == [one.id]
            assert [t.id for t in await c.tasks(job="hello")] == [one.id]
            assert (await c.cancel(one.id)).status is TaskStatus.CANCELLED
            with pytest.raises(TaskAlreadyEnded):
                await c.cancel(one.id)
            assert [t.id for t in await c.tasks(status="cancelled")] == [one.id]
            with pytest.raises(UnknownId):
                await c.kind_of("0" * 26)
            with pytest.raises(TaskNotFound):
                await c.get("0" * 26)

    run(main)


def test_series_get_series_series_runs_and_cancel_series(
    aclient: Callable[..., AsyncClient], client: Client
) -> None:
    async def main() -> None:
        async with aclient() as c:
            first = await c.schedule("hello", every="1h", key="hourly")
            assert first.series is not None
            assert await c.kind_of(first.series) == "series"
            listed = await c.series()
            assert [s.id for s in listed] == [first.series] and listed[0].every == "3600s"
            assert (await c.get_series(first.series)).current == first.id
            assert await c.series_runs(first.series) == []
            ended = await c.cancel_series(first.series)
            assert ended.status != "active"
            with pytest.raises(SeriesAlreadyEnded):
                await c.cancel_series(first.series)
            runs = await c.series_runs(first.series)
            assert [t.id for t in runs] == [first.id] and runs[0].status is TaskStatus.CANCELLED
            with pytest.raises(SeriesNotFound):
                await c.get_series("0" * 26)
            # The sync client reads the same.
            assert client.get_series(first.series) == await c.get_series(first.series)

    run(main)


def test_wait_workers_jobs_and_now_ms_with_a_real_worker(
    aclient: Callable[..., AsyncClient],
    client: Client,
    start_worker: Callable[..., WorkerProc],
) -> None:
    start_worker(4)
    wait_workers(client, 1)

    async def main() -> None:
        async with aclient() as c:
            assert abs(await c.now_ms() - time.time() * 1000) < 5000
            [w] = await c.workers()
            assert w.slots_total == 4
            hello = next(j for j in await c.jobs() if j.name == "hello")
            assert hello.instances == [w.id]
            assert (await c.job_definition("hello")).slots == hello.slots
            # Several waits at once on one client: each wakes on its own task's end.
            tasks = [await c.schedule("hello", {"name": f"n{i}"}) for i in range(5)]
            done = await asyncio.gather(*(c.wait(t.id, timeout=20) for t in tasks))
            assert {t.status for t in done} == {TaskStatus.COMPLETED}
            slow = await c.schedule("sleep", {"seconds": 30})
            with pytest.raises(WaitTimeout):
                await c.wait(slow.id, timeout=0.3)
            await c.cancel(slow.id)
            assert (await c.wait(slow.id, timeout=20)).status is TaskStatus.CANCELLED

    run(main)


def test_pause_resume_paused_and_waiting(
    aclient: Callable[..., AsyncClient],
    client: Client,
    start_worker: Callable[..., WorkerProc],
) -> None:
    start_worker(4)
    wait_workers(client, 1)

    async def main() -> None:
        async with aclient() as c:
            assert await c.pause(group="acme") is True
            assert await c.pause(group="acme") is False
            assert list(await c.paused()) == ["group acme"]
            task = await c.schedule("hello", group="acme")
            # The worker's claim meets the paused lane and gates it.
            await until(lambda: c.waiting(task), "paused (group acme)")
            assert [t.id for t in await c.tasks(waiting="paused")] == [task.id]
            assert client.waiting(client.get(task.id)) == "paused (group acme)"
            assert await c.resume(group="acme") is True
            assert await c.paused() == {}
            assert (await c.wait(task.id, timeout=20)).status is TaskStatus.COMPLETED
            assert await c.waiting(await c.get(task.id)) is None  # not pending
            with pytest.raises(UnknownJob):
                await c.pause(job="no_such_job")
            ended = await c.schedule("hello", every="1h", at="+1h")
            assert ended.series is not None
            await c.cancel_series(ended.series)
            with pytest.raises(SeriesEnded):
                await c.pause(series=ended.series)

    run(main)


async def until(read: Callable[[], Awaitable[object]], want: object, timeout: float = 10) -> None:
    """Await ``read()`` until it returns ``want`` (a state with no event to await)."""
    deadline = time.monotonic() + timeout
    while (got := await read()) != want:
        assert time.monotonic() < deadline, f"still {got!r}, not {want!r}"
        await asyncio.sleep(0.02)


def test_three_partitions_merge_as_the_sync_client_does(
    aclient: Callable[..., AsyncClient], namespace: str, redis_server: RedisServer
) -> None:
    sync = Client.from_url(redis_server.url, namespace=namespace, jobs_dir=JOBS, partitions=3)

    async def main() -> None:
        async with aclient(partitions=3) as c:
            made = [  # fixed request ids: the same spread (a hash of each) at every run
                await c.schedule("hello", {"n": i}, at=f"+{i + 1}m", request_id=f"spread-{i}")
                for i in range(12)
            ]
            parts = await c.partitions()
            assert len(parts) == 3
            homes = {parts.keys.index(k) for t in made if (k := await c.keys_of(t.id))}
            assert homes == {0, 1, 2}  # spread over every partition
            # Pending tasks, oldest first over the partitions: the order they were made in.
            assert [t.id for t in await c.tasks(status="pending")] == [t.id for t in made]
            assert await c.tasks() == sync.tasks()
            assert await c.merged_range("due", 5, newest_first=True) == sync.merged_range(
                "due", 5, newest_first=True
            )
            for t in made[:6]:
                await c.cancel(t.id)
            ended = await c.tasks(status="cancelled")
            assert {t.id for t in ended} == {t.id for t in made[:6]}
            assert ended == sync.tasks(status="cancelled")
            series = [await c.schedule("hello", every="1h") for _ in range(4)]
            assert [s.id for s in await c.series()] == [s.id for s in sync.series()]
            assert len(await c.series()) == len(series)

    try:
        run(main)
    finally:
        sync.close()


def test_a_key_in_another_partition_than_its_parent_settles_through_the_outbox(
    aclient: Callable[..., AsyncClient],
) -> None:
    async def main() -> None:
        async with aclient(partitions=3) as c:
            parent = await c.schedule("hello", at="+1h")
            parts = await c.partitions()
            home = parts.keys.index(await c.keys_of(parent.id))  # type: ignore[arg-type]
            key = next(k for n in range(100) if parts.for_idempotency_key(k := f"k{n}") != home)
            child = await c.schedule("hello", after=parent.id, key=key)
            assert parts.keys.index(await c.keys_of(child.id)) != home  # type: ignore[arg-type]
            await c.cancel(parent.id)  # its dependent in the other partition learns at once
            assert (await c.get(child.id)).status is TaskStatus.CANCELLED
            await c.drain_outboxes(list(range(3)))  # nothing left: a no-op

    run(main)


def test_bad_input_raises_the_sync_errors_and_writes_nothing(
    aclient: Callable[..., AsyncClient], raw_redis: Any, namespace: str
) -> None:
    async def main() -> None:
        async with aclient() as c:
            with pytest.raises(UnknownJob, match="unknown job 'no_such_job'"):
                await c.schedule("no_such_job")
            with pytest.raises(InvalidArgs, match="--priority 500"):
                await c.schedule("hello", priority=500)
            with pytest.raises(InvalidArgs, match="JSON object"):
                await c.schedule("hello", [1, 2])  # type: ignore[arg-type]

    run(main)
    assert raw_redis.keys(f"*{namespace}*") == []


def test_warnings_point_at_the_caller_of_schedule(aclient: Callable[..., AsyncClient]) -> None:
    async def main() -> None:
        async with aclient() as c:
            past = (await c.now_ms()) - 90_000
            with pytest.warns(PastStartWarning, match="1m30s ago by Redis time") as w:
                await c.schedule("hello", at=datetime.fromtimestamp(past / 1000, UTC))
            assert len(w) == 1 and w[0].filename == __file__

    run(main)


def test_durable_on_a_redis_without_a_replica_raises_not_durable(
    aclient: Callable[..., AsyncClient],
) -> None:
    async def main() -> None:
        async with aclient() as c:
            with pytest.raises(NotDurable):
                await c.schedule("hello", at="+1h", durable=True, durable_timeout=0.1)
            [task] = await c.tasks()  # stored on the primary all the same
            assert task.status is TaskStatus.PENDING

    run(main)


def test_a_redis_that_does_not_answer_is_a_one_line_error() -> None:
    async def main() -> None:
        async with AsyncClient.from_url("redis://127.0.0.1:1/0"):
            pass  # pragma: no cover

    with pytest.raises(RedisUnavailable, match=r"cannot reach Redis at redis://127.0.0.1:1/0"):
        run(main)


def test_an_async_client_on_a_connection_of_its_own(
    redis_server: RedisServer, namespace: str
) -> None:
    async def main() -> None:
        r = await connect_async(redis_server.url)
        c = AsyncClient(r, namespace=namespace, jobs_dir=JOBS)
        task = await c.schedule("hello", at="+1h")
        assert (await c.get(task.id)).id == task.id
        await c.close()

    run(main)


# -- operator controls, tags and fan-in (docs/controls.md, docs/dataflow.md) ---------------
def test_trigger_starts_a_run_now_and_refuses_an_ended_series(
    aclient: Callable[..., AsyncClient], client: Client
) -> None:
    async def main() -> None:
        async with aclient() as c:
            first = await c.schedule("hello", every="1h", at="+1h", tags={"kind": "report"})
            assert first.series is not None
            now = await c.trigger(first.series)
            assert now.metadata["triggered"] is True and now.series == first.series
            assert now.status is TaskStatus.PENDING and now.tags == {"kind": "report"}
            assert client.get(now.id) == await c.get(now.id)  # the sync client reads the same
            series = await c.get_series(first.series)
            assert series.current == first.id and series.skipped == 0  # the grid did not move
            with pytest.raises(SeriesNotFound):
                await c.trigger("0" * 26)
            await c.cancel_series(first.series)
            with pytest.raises(TriggerEnded, match="nothing to trigger"):
                await c.trigger(first.series)

    run(main)


def test_retry_links_the_new_task_and_refuses_a_pending_one(
    aclient: Callable[..., AsyncClient], client: Client
) -> None:
    failed = client.schedule("hello", {"n": 1}, tags={"team": "ops"})
    assert fail_pending(client) == 1  # reported failed by the real finish script

    async def main() -> None:
        async with aclient() as c:
            again = await c.retry(failed.id)
            assert again.retry_of == failed.id and again.args == {"n": 1}
            assert again.tags == {"team": "ops"} and again.status is TaskStatus.PENDING
            assert not again.existed
            old = await c.get(failed.id)
            assert old.status is TaskStatus.FAILED and old.retried_by == again.id
            same = await c.retry(failed.id)  # retried already: that retry, nothing new
            assert same.id == again.id and same.existed
            with pytest.raises(TaskNotEnded, match="is pending, not ended"):
                await c.retry(again.id)
            with pytest.raises(TaskNotFound):
                await c.retry("0" * 26)

    run(main)
    assert len(client.tasks(status="pending")) == 1


def test_retry_many_and_cancel_many_over_three_partitions(
    aclient: Callable[..., AsyncClient], namespace: str, redis_server: RedisServer
) -> None:
    sync = Client.from_url(redis_server.url, namespace=namespace, jobs_dir=JOBS, partitions=3)
    made = [sync.schedule("hello", {"n": n}) for n in range(40)]
    assert {partition_of_id(t.id) for t in made} == {0, 1, 2}
    assert fail_pending(sync) == 40

    async def main() -> None:
        async with aclient(partitions=3) as c:
            assert await c.retry_many(job="hello", dry_run=True) == 40
            assert await c.tasks(status="pending") == []  # a dry run writes nothing
            assert await c.retry_many(job="hello", since=3600) == 40
            assert await c.retry_many(job="hello") == 0  # each was retried once
            pending = await c.tasks(status="pending", limit=100)
            assert {t.retry_of for t in pending} == {t.id for t in made}
            held = [await c.schedule("hello", {"g": n}, group="acme", at="+1h") for n in range(7)]
            assert await c.cancel_many(group="acme", dry_run=True) == 7
            assert await c.cancel_many(job="hello", group="acme") == 7
            assert await c.cancel_many(job="hello", group="acme") == 0
            assert {(await c.get(t.id)).status for t in held} == {TaskStatus.CANCELLED}
            assert len(await c.tasks(status="pending", limit=100)) == 40  # the others stay
            with pytest.raises(InvalidArgs, match="--status 'failed'"):
                await c.cancel_many(job="hello", status="failed")
            with pytest.raises(InvalidArgs, match="--status 'pending'"):
                await c.retry_many(job="hello", status="pending")

    try:
        run(main)
    finally:
        sync.close()


def test_bulk_bad_input_writes_nothing(
    aclient: Callable[..., AsyncClient], client: Client, snapshot: Snapshot
) -> None:
    client.schedule("hello")
    before = snapshot(client.namespace)

    async def main() -> None:
        async with aclient() as c:
            with pytest.raises(InvalidTime, match="--since 0"):
                await c.retry_many(job="hello", since=0)
            with pytest.raises(InvalidTag, match="the key is not a name"):
                await c.schedule("hello", tags={"bad key": "x"})

    run(main)
    assert snapshot(client.namespace) == before


def test_tasks_by_tag_and_args_contains_over_three_partitions(
    aclient: Callable[..., AsyncClient], namespace: str, redis_server: RedisServer
) -> None:
    sync = Client.from_url(redis_server.url, namespace=namespace, jobs_dir=JOBS, partitions=3)

    async def main() -> None:
        async with aclient(partitions=3) as c:
            tags = {"customer": "acme"}
            # Fixed request ids: the spread (a hash of each) is the same at every run.
            acme = [
                await c.schedule("hello", {"order": f"A-{n}"}, tags=tags, request_id=f"acme-{n}")
                for n in range(9)
            ]
            prod = await c.schedule("hello", {"order": "B-1"}, tags={**tags, "env": "prod"})
            await c.schedule("hello", {"order": "C-1"}, tags={"customer": "zeta"})
            assert {partition_of_id(t.id) for t in acme} == {0, 1, 2}
            found = await c.tasks(tag="customer=acme")
            assert {t.id for t in found} == {t.id for t in [*acme, prod]}
            assert found == sync.tasks(tag="customer=acme")  # newest first, as the sync one
            assert [t.id for t in await c.tasks(tag=["customer=acme", "env=prod"])] == [prod.id]
            assert await c.tasks(tag="customer=nobody") == []
            assert [t.id for t in await c.tasks(args_contains="B-1")] == [prod.id]
            assert [t.id for t in await c.tasks(tag="customer=acme", args_contains="A-3")] == [
                acme[3].id
            ]
            assert len(await c.tasks(tag="customer=acme", limit=3)) == 3
            assert (await c.get(prod.id)).tags == {"customer": "acme", "env": "prod"}

    try:
        run(main)
    finally:
        sync.close()


def test_a_fan_in_child_runs_after_both_parents_and_returns_its_result(
    aclient: Callable[..., AsyncClient],
    namespace: str,
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProc],
) -> None:
    sync = Client.from_url(redis_server.url, namespace=namespace, jobs_dir=JOBS, partitions=3)

    async def main() -> None:
        async with aclient(partitions=3) as c:
            # No worker yet: the parents stay pending while the child is made.
            a = await c.schedule("total", {"numbers": [1, 2]})
            b = await c.schedule("total", {"numbers": [0]})
            for n in range(1, 50):  # a second parent in another partition than the first
                if partition_of_id(b.id) != partition_of_id(a.id):
                    break
                b = await c.schedule("total", {"numbers": [n]})
            child = await c.schedule("total", {"numbers": [100]}, after=[a.id, b.id])
            assert child.waiting_on == [a.id, b.id] and child.parents == [a.id, b.id]
            assert await c.waiting(child) == f"after {a.id}, {b.id}"
            start_worker(4, "--partitions", "3")
            done = await c.wait(child.id, timeout=20)
            assert done.status is TaskStatus.COMPLETED
            b_total = sum((await c.get(b.id)).args["numbers"])
            # The job adds its parents' results (task.parent_results) to its own numbers.
            assert done.result == {"total": 100 + 3 + b_total}
            assert [(await c.get(p.id)).result for p in (a, b)] == [
                {"total": 3},
                {"total": b_total},
            ]
            ended = [await c.get(p.id) for p in (a, b)]
            assert all(p.ended_at and done.started_at and p.ended_at <= done.started_at
                       for p in ended)  # fmt: skip

    try:
        run(main)
    finally:
        sync.close()


# -- a 3-primary Cluster and Sentinel ------------------------------------------------------
def test_on_a_three_primary_cluster(tmp_path: Path) -> None:
    cluster = ClusterSetup(tmp_path / "cluster").start()
    worker = WorkerProc(cluster.url, "acl", tmp_path, 4)
    sync = Client.from_url(cluster.url, namespace="acl", jobs_dir=JOBS)
    try:
        wait_workers(sync, 1)
        run(lambda: on_a_cluster(cluster, sync))
    finally:
        worker.kill9()
        worker._stderr.close()
        sync.close()
        cluster.stop()


async def on_a_cluster(cluster: ClusterSetup, sync: Client) -> None:
    # A plain URL naming one node is detected as a cluster, as by the sync client.
    async with AsyncClient.from_url(cluster.url, namespace="acl", jobs_dir=JOBS) as c:
        assert isinstance(c.redis, aioredis.RedisCluster)
        parts = await c.partitions()
        assert len(parts) == 12  # 4 per primary
        made = [await c.schedule("hello", {"n": n}, at="+1h", key=f"k{n}") for n in range(40)]
        assert {parts.keys.index(await c.keys_of(t.id)) for t in made} == set(range(12))  # type: ignore[arg-type]
        assert {t.id for t in await c.tasks(status="pending")} == {t.id for t in made}
        assert await c.tasks() == sync.tasks()
        quick = [await c.schedule("hello") for _ in range(6)]
        done = await asyncio.gather(*(c.wait(t.id, 20) for t in quick))
        assert {t.status for t in done} == {TaskStatus.COMPLETED}
        [w] = await c.workers()
        assert w.slots_total == 4
        # The durable WAIT goes to the partition's primary, which has no replica here.
        with pytest.raises(NotDurable):
            await c.schedule("hello", at="+1h", durable=True, durable_timeout=0.1)
        assert await c.pause(job="hello") is True
        assert list(await c.paused()) == ["job hello"] == list(sync.paused())
        assert await c.resume(job="hello") is True
        parent = made[0]
        home = parts.keys.index(await c.keys_of(parent.id))  # type: ignore[arg-type]
        key = next(k for n in range(100) if parts.for_idempotency_key(k := f"c{n}") != home)
        child = await c.schedule("hello", after=parent.id, key=key)
        await c.cancel(parent.id)  # the child, in another primary's partition, learns at once
        assert (await c.get(child.id)).status is TaskStatus.CANCELLED
        async with AsyncClient.from_url(cluster.cluster_url, namespace="acl") as named:
            assert await named.get(child.id) == await c.get(child.id)  # the URL naming all


def test_behind_sentinel_a_durable_schedule_is_confirmed(tmp_path: Path) -> None:
    setup = SentinelSetup(tmp_path / "sentinel").start()

    async def main() -> None:
        async with AsyncClient.from_url(setup.url, namespace="asn", jobs_dir=JOBS) as c:
            task = await c.schedule("hello", at="+1h", durable=True)  # the replica has it
            assert (await c.get(task.id)).status is TaskStatus.PENDING
            assert [t.id for t in await c.tasks()] == [task.id]

    try:
        run(main)
    finally:
        setup.stop()
