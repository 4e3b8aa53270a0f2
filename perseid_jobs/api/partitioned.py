"""The client's view of a namespace's partitions: which to read, where to send a script.

The count is read from Redis (see :mod:`perseid_jobs.store.partitions`) and kept once it
is recorded; before that (a namespace nothing has written to yet) each read takes the
count asked for, or the default, and the first write records it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

from ..store import outbox
from ..store.keys import Keys
from ..store.partitions import Partitions, default_count, record_key, resolve
from ..store.scripts import Scripts


class Partitioned:
    """Partition lookup for :class:`~perseid_jobs.api.client.Client`; needs ``redis``."""

    redis: Any
    namespace: str
    requested_partitions: int | None
    _parts: Partitions | None
    _scripts_by_tag: dict[str, Scripts]

    def partitions(self, *, record: bool = False) -> Partitions:
        """The namespace's partitions (``record``: record the count if it is not yet)."""
        if self._parts is not None:
            return self._parts
        default = default_count(self.redis)
        parts = resolve(
            self.redis, self.namespace, self.requested_partitions, default, record=record
        )
        if record or self._is_recorded():
            self._parts = parts
        return parts

    def _is_recorded(self) -> bool:
        return bool(self.redis.exists(record_key(self.namespace)))

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
        parts = self.partitions()
        if len(parts) > 1:
            outbox.drain(self.redis, sources, lambda i: self.scripts_in(parts.keys[i]))

    def keys_of(self, some_id: str) -> Keys | None:
        """The partition a task or series id names (None: not an id of this namespace)."""
        return self.partitions().of_id(some_id)

    def merged_range(self, key_name: str, count: int, *, newest_first: bool) -> list[str]:
        """The first ``count`` members of one sorted set over every partition, by score."""
        return self.merged_ranges([(key_name, newest_first)], count)[0]

    def merged_ranges(self, sets: list[tuple[str, bool]], count: int) -> list[list[str]]:
        """:meth:`merged_range` of several sorted sets ((name, newest first) each), read in
        one pipeline: a task moving from one set to the next between two separate reads
        would be in neither."""
        parts = self.partitions()
        pipe = self.redis.pipeline(transaction=False)
        for key_name, newest_first in sets:
            for keys in parts:
                key = getattr(keys, key_name)
                if newest_first:
                    pipe.zrevrange(key, 0, count - 1, withscores=True)
                else:
                    pipe.zrange(key, 0, count - 1, withscores=True)
        replies, n = pipe.execute(), len(parts)
        return [
            _merge(replies[i * n : (i + 1) * n], count, newest_first=newest_first)
            for i, (_, newest_first) in enumerate(sets)
        ]


def _merge(
    ranges: Iterable[list[tuple[str, float]]], count: int, *, newest_first: bool
) -> list[str]:
    # Each partition's range is already sorted; a heap merge keeps the global order.
    sign = -1.0 if newest_first else 1.0
    merged = heapq.merge(*ranges, key=lambda pair: sign * pair[1])
    return [member for member, _ in list(merged)[:count]]
