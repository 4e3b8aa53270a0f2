"""Where a new task goes: the routing rules of :mod:`perseid_jobs.store.partitions`, applied.

The one case that crosses partitions at schedule time: an idempotency key (whose
partition is its hash's) with ``--after`` a task in another partition. The task is then
made blocked in the key's partition and learns of its parent's end through the outbox
(:mod:`perseid_jobs.store.outbox`); its parent is checked here first, since the script in
the key's partition cannot read it.
"""

from __future__ import annotations

from typing import NamedTuple

from ..core.errors import ConfigError, ParentNotFound
from ..core.models import JobDefinition, TaskStatus
from ..store.keys import Keys
from ..store.partitions import partition_of_id
from .calls import Op, cmd
from .partitioned import Partitioned, SyncPartitioned

_TERMINAL = {s.value for s in TaskStatus if s.terminal}


class Route(NamedTuple):
    """A new task's partition, and its parent's when that one lives in another."""

    keys: Keys
    parent_partition: int | None = None
    parent_status: str = ""  # the remote parent's status if it had already ended
    more_parents: str = ""  # a fan-in's parents after the first, "id:partition" each
    fan_in_crosses: bool = False  # a fan-in with a parent in another partition

    @property
    def crosses(self) -> bool:
        """Whether a parent lives in another partition: its end comes through the outbox."""
        return self.parent_partition is not None or self.fan_in_crosses


def limit_of(job: str, group: str, definition: JobDefinition) -> str:
    """The name of the limit a task shares with others ("" for none): tasks that share a
    limit share a partition, so the claim checks it atomically (docs/flow.md)."""
    if definition.concurrency or definition.rate:
        return f"job:{job}"
    if (definition.group_concurrency or definition.group_rate) and group:
        return f"group:{job}\t{group}"
    return ""


def route(
    client: SyncPartitioned, *, key: str, after: str | list[str], request: str, limit: str = ""
) -> Route:
    """:func:`route_op` on a sync client (for callers outside an operation)."""
    return client._run(route_op(client, key=key, after=after, request=request, limit=limit))


def route_op(
    client: Partitioned, *, key: str, after: str | list[str], request: str, limit: str = ""
) -> Op[Route]:
    """The partition for a schedule request; raises ParentNotFound or ConfigError first,
    so a refused request records nothing. ``after``: one parent, or a fan-in's list."""
    parents = [after] if isinstance(after, str) else list(after)
    if len(parents) > 1:
        return (yield from _route_fan_in(client, parents, key=key, limit=limit))
    after = parents[0] if parents else ""
    if after and (yield from client._partitions()).of_id(after) is None:
        raise ParentNotFound(after)
    parts = yield from client._partitions(record=True)
    if limit or key:
        home = parts.for_limit(limit) if limit else parts.for_idempotency_key(key)
        parent = partition_of_id(after) if after else None
        if parent is not None and parent != home:
            why = f"a task of a limited job ({limit})" if limit else f"--key {key!r}"
            status = yield from _remote_parent(parts.keys[parent], after, why, len(parts))
            return Route(parts.keys[home], parent, status)
        return Route(parts.keys[home])
    if after:
        found = parts.of_id(after)
        assert found is not None  # checked above
        return Route(found)
    return Route(parts.keys[parts.spread(request)])


def _route_fan_in(client: Partitioned, parents: list[str], *, key: str, limit: str) -> Op[Route]:
    """A task after several parents: in the first parent's partition (its key's or limit's,
    if it has one); each parent elsewhere is checked here (the script cannot read it) and
    tells the task of its end through the outbox."""
    for parent in parents:
        if (yield from client._partitions()).of_id(parent) is None:
            raise ParentNotFound(parent)
    parts = yield from client._partitions(record=True)
    first = partition_of_id(parents[0])
    assert first is not None  # checked above
    if limit or key:
        home = parts.for_limit(limit) if limit else parts.for_idempotency_key(key)
    else:
        home = first
    where = [partition_of_id(p) for p in parents]
    for parent, index in zip(parents, where, strict=True):
        assert index is not None  # checked above
        if index != home and not (yield cmd("hexists", parts.keys[index].task(parent), "status")):
            raise ParentNotFound(parent)
    more = ",".join(f"{p}:{i}" for p, i in zip(parents[1:], where[1:], strict=True))
    crosses = any(i != home for i in where)
    return Route(parts.keys[home], first if first != home else None, "", more, crosses)


def _remote_parent(keys: Keys, after: str, why: str, count: int) -> Op[str]:
    """Check a parent in another partition; its status if it already ended, else ""."""
    status, series = yield cmd("hmget", keys.task(after), ["status", "series"])
    if status is None:
        raise ParentNotFound(after)
    if series and (yield cmd("hget", keys.series(series), "status")) == "active":
        raise ConfigError(
            f"{why} with --after {after}, a run of an active series: in a namespace"
            f" of {count} partitions the follower series cannot live in its own partition;"
            " schedule it without --key, or for a job without a limit (a retried request is"
            " still made once)"
        )
    return str(status) if status in _TERMINAL else ""
