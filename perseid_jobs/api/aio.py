"""``perseid_jobs.AsyncClient``: the client's methods as coroutines, on ``redis.asyncio``.

It has no logic of its own: each method drives the operation the sync
:class:`~perseid_jobs.api.client.Client` (and so the command line) drives, from
:class:`~perseid_jobs.api.client.ClientOps`, with :func:`run_async` in place of
:func:`~perseid_jobs.api.calls.run_sync` (see ``calls.py``). docs/async.md has examples.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import redis.asyncio as aioredis

from ..core.models import Instance, JobDefinition, JobInfo, Series, Task, TaskStatus
from ..store.connection import DEFAULT_REDIS_URL
from ..store.keys import DEFAULT_NAMESPACE, Keys, validate_namespace
from ..store.partitions import Partitions, check_count, default_count
from ..store.scripts import AsyncScripts
from .aio_connection import close_async, connect_async
from .calls import Batch, Call, Cmd, Eval, EvalWait, Op, queue
from .client import ClientOps

T = TypeVar("T")


async def run_async(client: AsyncClient, op: Op[T]) -> T:
    """Drive ``op`` on the client's ``redis.asyncio`` connection: each call, then its reply."""
    reply: Any = None
    while True:
        try:
            call = op.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        reply = await client._answer(call)


class AsyncClient(ClientOps):
    """Schedule, inspect and cancel tasks of one deployment, from asyncio code.

    The methods of :class:`perseid_jobs.Client`, with the same arguments, results and
    errors, as coroutines. Use it as ``async with AsyncClient.from_url(url) as client:``
    (or call :meth:`close`); one client serves any number of concurrent calls.
    """

    def __init__(
        self,
        redis_client: Any = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        jobs_dir: Path | str | None = None,
        partitions: int | None = None,
        url: str = DEFAULT_REDIS_URL,
    ) -> None:
        # A redis.asyncio client (Redis or RedisCluster, decoded replies); None: connect to
        # ``url`` at the first call (or at ``async with``).
        self.redis: Any = redis_client
        self.url = url
        self.namespace = validate_namespace(namespace)
        self.requested_partitions = check_count(partitions)
        self._parts: Partitions | None = None
        self._scripts_by_tag: dict[str, AsyncScripts] = {}
        self._nodes: dict[str, Any] = {}  # cluster primaries' own clients, for WAIT
        self._connecting = asyncio.Lock()
        self.jobs_dir = Path(jobs_dir) if jobs_dir is not None else None

    @classmethod
    def from_url(
        cls,
        url: str = DEFAULT_REDIS_URL,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        jobs_dir: Path | str | None = None,
        partitions: int | None = None,
    ) -> AsyncClient:
        """A client for the Redis at ``url`` (any URL form of ``--redis``).

        It connects at ``async with`` or at its first call, raising RedisUnavailable
        then if Redis does not answer (as ``redis.asyncio``'s own ``from_url`` defers).
        """
        return cls(namespace=namespace, jobs_dir=jobs_dir, partitions=partitions, url=url)

    async def __aenter__(self) -> AsyncClient:
        await self._connected()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Release the connections."""
        for node in self._nodes.values():
            await node.aclose()
        self._nodes.clear()
        if self.redis is not None:
            await close_async(self.redis)

    async def _connected(self) -> Any:
        async with self._connecting:  # concurrent first calls make one connection
            if self.redis is None:
                self.redis = await connect_async(self.url)
        return self.redis

    async def _run(self, op: Op[T]) -> T:
        if self.redis is None:
            await self._connected()
        return await run_async(self, op)

    async def _answer(self, call: Call) -> Any:
        """One call's reply (the asyncio twin of ``calls._answer``)."""
        if isinstance(call, Cmd):
            return await getattr(self.redis, call.name)(*call.args, **call.kwargs)
        if isinstance(call, Eval):
            return await self.scripts_in(call.keys).call(call.name, *call.argv)
        if isinstance(call, Batch):
            if not call.cmds:
                return []
            pipe = self.redis.pipeline(transaction=False)
            for c in call.cmds:
                queue(pipe, c)
            return await pipe.execute()
        if isinstance(call, EvalWait):
            scripts = await self._primary_scripts(call.keys)
            return await scripts.call_then_wait(call.name, call.argv, call.timeout_ms)
        return default_count(self.redis)

    async def _primary_scripts(self, keys: Keys) -> AsyncScripts:
        """The partition's scripts on a connection to the primary that owns it: a Cluster
        pipeline may spread over connections, and ``WAIT`` counts one connection's writes."""
        if not isinstance(self.redis, aioredis.RedisCluster):
            return self.scripts_in(keys)
        node = self.redis.get_node_from_key(keys.prefix)
        assert node is not None  # a cluster client serves every slot, or raises
        own = self._nodes.get(node.name)
        if own is None:
            # A pool of the node's own connection class and options (TLS, credentials).
            pool = aioredis.ConnectionPool(
                connection_class=node.connection_class, **node.connection_kwargs
            )
            own = self._nodes[node.name] = aioredis.Redis.from_pool(pool)  # closes the pool
        return AsyncScripts(own, keys)

    def scripts_in(self, keys: Keys) -> AsyncScripts:
        """The scripts bound to one partition."""
        found = self._scripts_by_tag.get(keys.tag)
        if found is None:
            found = self._scripts_by_tag[keys.tag] = AsyncScripts(self.redis, keys)
        return found

    # -- partitions ------------------------------------------------------------------------
    async def partitions(self, *, record: bool = False) -> Partitions:
        """As :meth:`perseid_jobs.Client.partitions`."""
        return await self._run(self._partitions(record=record))

    async def keys_of(self, some_id: str) -> Keys | None:
        """As :meth:`perseid_jobs.Client.keys_of`."""
        return await self._run(self._keys_of(some_id))

    async def drain_outboxes(self, sources: list[int]) -> None:
        """As :meth:`perseid_jobs.Client.drain_outboxes`."""
        await self._run(self._drain_outboxes(sources))

    async def merged_range(self, key_name: str, count: int, *, newest_first: bool) -> list[str]:
        """As :meth:`perseid_jobs.Client.merged_range`."""
        return await self._run(self._merged_range(key_name, count, newest_first=newest_first))

    async def merged_ranges(self, sets: list[tuple[str, bool]], count: int) -> list[list[str]]:
        """As :meth:`perseid_jobs.Client.merged_ranges`."""
        return await self._run(self._merged_ranges(sets, count))

    # -- scheduling and cancelling ---------------------------------------------------------
    async def job_definition(self, job: str) -> JobDefinition:
        """As :meth:`perseid_jobs.Client.job_definition`."""
        return await self._run(self._job_definition(job))

    async def schedule(
        self,
        job: str,
        args: dict[str, Any] | None = None,
        *,
        at: datetime | str | None = None,
        every: str | int | None = None,
        cron: str | None = None,
        tz: str | None = None,
        after: str | list[str] | None = None,
        key: str | None = None,
        catch_up: str = "skip",
        catch_up_window: str | int | None = None,
        request_id: str | None = None,
        durable: bool = False,
        durable_timeout: float = 1.0,
        group: str | None = None,
        priority: int = 0,
        tags: Mapping[str, str] | None = None,
    ) -> Task:
        """As :meth:`perseid_jobs.Client.schedule` (the same arguments, warnings and errors)."""
        return await self._run(self._schedule(
            job, args, at=at, every=every, cron=cron, tz=tz, after=after, key=key,
            catch_up=catch_up, catch_up_window=catch_up_window, request_id=request_id,
            durable=durable, durable_timeout=durable_timeout, group=group, priority=priority,
            tags=tags,
        ))  # fmt: skip

    async def cancel(self, task_id: str, *, series: bool = False) -> Task:
        """As :meth:`perseid_jobs.Client.cancel`."""
        return await self._run(self._cancel(task_id, series=series))

    async def cancel_series(self, series_id: str) -> Series:
        """As :meth:`perseid_jobs.Client.cancel_series`."""
        return await self._run(self._cancel_series(series_id))

    # -- operator controls ----------------------------------------------------------------
    async def trigger(self, series_id: str) -> Task:
        """As :meth:`perseid_jobs.Client.trigger`."""
        return await self._run(self._trigger(series_id))

    async def retry(self, task_id: str) -> Task:
        """As :meth:`perseid_jobs.Client.retry`."""
        return await self._run(self._retry(task_id))

    async def retry_many(
        self,
        *,
        job: str | None = None,
        status: str = "failed",
        since: float | None = None,
        dry_run: bool = False,
    ) -> int:
        """As :meth:`perseid_jobs.Client.retry_many`."""
        return await self._run(
            self._retry_many(job=job, status=status, since=since, dry_run=dry_run)
        )

    async def cancel_many(
        self,
        *,
        job: str | None = None,
        status: str = "pending",
        group: str | None = None,
        dry_run: bool = False,
    ) -> int:
        """As :meth:`perseid_jobs.Client.cancel_many`."""
        return await self._run(
            self._cancel_many(job=job, status=status, group=group, dry_run=dry_run)
        )

    # -- reads -----------------------------------------------------------------------------
    async def now_ms(self) -> int:
        """As :meth:`perseid_jobs.Client.now_ms`: Redis server time in epoch ms."""
        return await self._run(self._now_ms())

    async def get(self, task_id: str) -> Task:
        """As :meth:`perseid_jobs.Client.get`."""
        return await self._run(self._get(task_id))

    async def kind_of(self, some_id: str) -> Literal["task", "series"]:
        """As :meth:`perseid_jobs.Client.kind_of`."""
        return await self._run(self._kind_of(some_id))

    async def tasks(
        self,
        status: TaskStatus | str | None = None,
        job: str | None = None,
        limit: int = 100,
        waiting: str | None = None,
        tag: str | Iterable[str] | None = None,
        args_contains: str | None = None,
    ) -> list[Task]:
        """As :meth:`perseid_jobs.Client.tasks`."""
        return await self._run(self._tasks(status, job, limit, waiting, tag, args_contains))

    async def wait(self, task_id: str, timeout: float | None = 30.0) -> Task:
        """As :meth:`perseid_jobs.Client.wait`: awaits the task's end (the event loop runs
        on meanwhile: the blocking read of the events stream is a coroutine here)."""
        return await self._run(self._wait(task_id, timeout))

    async def series(self, limit: int = 100) -> list[Series]:
        """As :meth:`perseid_jobs.Client.series`."""
        return await self._run(self._series(limit))

    async def get_series(self, series_id: str) -> Series:
        """As :meth:`perseid_jobs.Client.get_series`."""
        return await self._run(self._get_series(series_id))

    async def series_runs(self, series_id: str, limit: int = 5) -> list[Task]:
        """As :meth:`perseid_jobs.Client.series_runs`."""
        return await self._run(self._series_runs(series_id, limit))

    async def workers(self) -> list[Instance]:
        """As :meth:`perseid_jobs.Client.workers`."""
        return await self._run(self._workers())

    async def jobs(self) -> list[JobInfo]:
        """As :meth:`perseid_jobs.Client.jobs`."""
        return await self._run(self._jobs())

    # -- flow controls ---------------------------------------------------------------------
    async def pause(
        self, *, job: str | None = None, group: str | None = None, series: str | None = None
    ) -> bool:
        """As :meth:`perseid_jobs.Client.pause`."""
        return await self._run(self._pause(job=job, group=group, series=series))

    async def resume(
        self, *, job: str | None = None, group: str | None = None, series: str | None = None
    ) -> bool:
        """As :meth:`perseid_jobs.Client.resume`."""
        return await self._run(self._resume(job=job, group=group, series=series))

    async def paused(self) -> dict[str, datetime]:
        """As :meth:`perseid_jobs.Client.paused`."""
        return await self._run(self._paused())

    async def waiting(self, task: Task, live: list[Instance] | None = None) -> str | None:
        """As :meth:`perseid_jobs.Client.waiting`."""
        return await self._run(self._waiting(task, live))
