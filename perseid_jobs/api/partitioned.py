"""The client's view of a namespace's partitions: which to read, where to send a script.

The count is read from Redis (see :mod:`perseid_jobs.store.partitions`) and kept once it
is recorded; before that (a namespace nothing has written to yet) each read takes the
count asked for, or the default, and the first write records it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any, TypeVar

from ..store import outbox
from ..store.keys import Keys
from ..store.partitions import _LEGACY_KEYS, Partitions, _mismatch, record_key
from ..store.script_io import Delivered
from ..store.scripts import Scripts, decode, deliver_argv
from .calls import Batch, Eval, Op, Topology, cmd, run_sync

T = TypeVar("T")


class Partitioned:
    """Partition lookup for both clients, as operations (see ``calls.py``).

    Needs ``namespace``, ``requested_partitions``, ``_parts`` and ``_scripts_by_tag``;
    each client adds ``scripts_in`` (its own kind of :class:`Scripts`).
    """

    namespace: str
    requested_partitions: int | None
    _parts: Partitions | None

    def _partitions(self, *, record: bool = False) -> Op[Partitions]:
        """The namespace's partitions (``record``: record the count if it is not yet)."""
        if self._parts is not None:
            return self._parts
        default = yield Topology()
        parts = yield from resolve_op(
            self.namespace, self.requested_partitions, default, record=record
        )
        if record or (yield cmd("exists", record_key(self.namespace))):
            self._parts = parts
        return parts

    def _keys_of(self, some_id: str) -> Op[Keys | None]:
        """The partition a task or series id names (None: not an id of this namespace)."""
        parts = self._parts  # known once recorded: no generator on the hot path
        return (parts if parts is not None else (yield from self._partitions())).of_id(some_id)

    def _first_keys(self) -> Op[Keys]:
        """The keys of the first partition (the only one when the namespace has one)."""
        return (yield from self._partitions()).keys[0]

    def _drain_outboxes(self, sources: list[int]) -> Op[None]:
        """Deliver what these partitions' outboxes hold (nothing to do with one partition)."""
        parts = yield from self._partitions()
        if len(parts) > 1:
            yield from drain_op(parts, sources)

    def _merged_range(self, key_name: str, count: int, *, newest_first: bool) -> Op[list[str]]:
        """The first ``count`` members of one sorted set over every partition, by score."""
        return (yield from self._merged_ranges([(key_name, newest_first)], count))[0]

    def _merged_ranges(self, sets: list[tuple[str, bool]], count: int) -> Op[list[list[str]]]:
        """:meth:`_merged_range` of several sorted sets ((name, newest first) each), read in
        one pipeline: a task moving from one set to the next between two separate reads
        would be in neither."""
        parts = yield from self._partitions()
        cmds = []
        for key_name, newest_first in sets:
            for keys in parts:
                key = getattr(keys, key_name)
                name = "zrevrange" if newest_first else "zrange"
                cmds.append(cmd(name, key, 0, count - 1, withscores=True))
        replies, n = (yield Batch(cmds)), len(parts)
        return [
            _merge(replies[i * n : (i + 1) * n], count, newest_first=newest_first)
            for i, (_, newest_first) in enumerate(sets)
        ]


class SyncPartitioned(Partitioned):
    """The partition lookups of the sync client, driven on its ``redis``."""

    redis: Any
    _scripts_by_tag: dict[str, Scripts]

    def _run(self, op: Op[T]) -> T:
        return run_sync(self.redis, self.scripts_in, op)

    def partitions(self, *, record: bool = False) -> Partitions:
        """The namespace's partitions (``record``: record the count if it is not yet)."""
        return self._run(self._partitions(record=record))

    @property
    def keys(self) -> Keys:
        """The keys of the first partition (the only one when the namespace has one)."""
        return self.partitions().keys[0]

    @property
    def scripts(self) -> Scripts:
        """The scripts bound to the first partition."""
        return self.scripts_in(self.keys)

    def scripts_in(self, keys: Keys) -> Scripts:
        """The scripts bound to one partition."""
        found = self._scripts_by_tag.get(keys.tag)
        if found is None:
            found = self._scripts_by_tag[keys.tag] = Scripts(self.redis, keys)
        return found

    def drain_outboxes(self, sources: list[int]) -> None:
        """Deliver what these partitions' outboxes hold (nothing to do with one partition)."""
        self._run(self._drain_outboxes(sources))

    def keys_of(self, some_id: str) -> Keys | None:
        """The partition a task or series id names (None: not an id of this namespace)."""
        return self._run(self._keys_of(some_id))

    def merged_range(self, key_name: str, count: int, *, newest_first: bool) -> list[str]:
        """The first ``count`` members of one sorted set over every partition, by score."""
        return self._run(self._merged_range(key_name, count, newest_first=newest_first))

    def merged_ranges(self, sets: list[tuple[str, bool]], count: int) -> list[list[str]]:
        """:meth:`merged_range` of several sorted sets ((name, newest first) each), in one
        pipeline."""
        return self._run(self._merged_ranges(sets, count))


def resolve_op(
    namespace: str, requested: int | None, default: int, *, record: bool
) -> Op[Partitions]:
    """:func:`perseid_jobs.store.partitions.resolve` as an operation (the same rules)."""
    raw = yield cmd("get", record_key(namespace))
    if raw is None and record:
        legacy = Keys(namespace)
        found = yield Batch([cmd("exists", legacy.prefix + name) for name in _LEGACY_KEYS])
        want = 1 if any(found) else (requested or default)
        yield cmd("set", record_key(namespace), want, nx=True)
        raw = yield cmd("get", record_key(namespace))
    recorded = int(raw) if raw else None
    if recorded is not None and requested is not None and requested != recorded:
        raise _mismatch(namespace, recorded, requested)
    return Partitions(namespace, recorded or requested or default)


def drain_op(parts: Partitions, sources: list[int], rounds: int = 16) -> Op[None]:
    """:func:`perseid_jobs.store.outbox.drain` (every delivery, now) as an operation."""
    heads = yield Batch(
        [cmd("zrangebyscore", parts.keys[s].outbox_at, "-inf", "+inf", start=0, num=1)
         for s in sources]
    )  # fmt: skip
    todo = {s for s, ids in zip(sources, heads, strict=True) if ids}
    for _ in range(rounds):
        if not todo:
            return
        grew: set[int] = set()
        for source in sorted(todo):
            grew |= yield from _deliver_round(parts, source)
        todo = grew


def _deliver_round(parts: Partitions, source: int) -> Op[set[int]]:
    """:func:`perseid_jobs.store.outbox.deliver_round` as an operation."""
    keys = parts.keys[source]
    ids = yield cmd("zrangebyscore", keys.outbox_at, "-inf", "+inf", start=0, num=outbox.BATCH)
    if not ids:
        return set()
    payloads = yield cmd("hmget", keys.outbox, ids)
    entries = outbox.entries(ids, payloads)
    by_target: dict[int, list[tuple[str, str, str, str]]] = {}
    for _, target, item in entries:
        by_target.setdefault(target, []).append(item)
    grew = set()
    for target, items in by_target.items():
        raw = yield Eval(parts.keys[target], "deliver", deliver_argv(items))
        if decode(raw, Delivered).outbox:
            grew.add(target)
    yield Eval(keys, "outbox_ack", [delivery_id for delivery_id, _, _ in entries])
    if len(entries) == outbox.BATCH:
        grew.add(source)  # more may be waiting
    return grew


def _merge(
    ranges: Iterable[list[tuple[str, float]]], count: int, *, newest_first: bool
) -> list[str]:
    # Each partition's range is already sorted; a heap merge keeps the global order.
    sign = -1.0 if newest_first else 1.0
    merged = heapq.merge(*ranges, key=lambda pair: sign * pair[1])
    return [member for member, _ in list(merged)[:count]]
