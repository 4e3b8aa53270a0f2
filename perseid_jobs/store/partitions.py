"""Partitions: one namespace spread over several hash tags, so over a Redis Cluster's primaries.

A namespace has P partitions, each its own hash tag and so its own Cluster slot. Every
script runs inside one partition; nothing a script does crosses a partition. With P = 1
the only partition's tag is ``{<namespace>}``, today's layout, so namespaces made before
partitions existed keep working unchanged.

P is recorded in Redis (``{<namespace>}:partitions``) the first time the namespace is
written to; every later command and client reads it from there. The tags of P > 1 are
chosen so that the partitions' slots lie evenly over the 16,384 slots, near the centres
of P equal ranges; ``redis-cli --cluster create`` gives each primary an equal range, so
with P a multiple of the primaries each primary holds P / primaries partitions.

A task's partition is decided when it is scheduled (:class:`Partitions` routes it) and
written into its id: characters 11-12 of the 26 (base 32), the first two of what was
the counter, which are ``00`` for partition 0, so P = 1 ids are unchanged. ``show`` and
``cancel`` find a task's partition from its id, in one call.

Routing rules, in order (a later rule never overrides an earlier one):

1. an idempotency key: a hash of the key, so the key check stays atomic. With ``--after
   X`` in another partition the task waits there on X through the outbox
   (:mod:`~perseid_jobs.store.outbox`); a follower series (``--after`` a run of an
   active series) cannot, and is refused with a key in another partition.
2. ``--after X``: X's partition, so a chain stays inside one atomic script.
3. a series' runs: the series' partition (its first run's), decided as above or below.
4. otherwise: spread, by a hash of the request id (a retried request lands where the
   first attempt did, where its lost-reply record is).

0. before all of these, tasks that share a limit share a partition: a hash of the
   limit's name (a job's ``concurrency``: the job; its ``group_concurrency``: the job and
   group), so the claim checks the limit atomically (docs/flow.md). An idempotency key
   on such a task lives in the limit's partition, so the key is checked among that
   limit's tasks only.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from ..core.errors import ConfigError
from .keys import Keys, validate_namespace

# Two base-32 characters of the id hold the partition index.
MAX_PARTITIONS = 32 * 32
_B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Where the partition index sits in an id (after 10 characters of time).
_ID_PART = slice(10, 12)
# A namespace's data before partitions existed; if any of it is there, P is 1.
_LEGACY_KEYS = ("seq", "instances", "jobs", "series")


class PartitionCountError(ConfigError, ValueError):
    """A partition count that cannot be used, or that differs from the recorded one."""


def check_count(count: int | str | None) -> int | None:
    """``count`` as a valid partition count (None: not given), else raise with the fix."""
    if count is None or count == "":
        return None
    text = str(count).strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_PARTITIONS:
        raise PartitionCountError(
            f"--partitions {count}: give a whole number from 1 to {MAX_PARTITIONS}, e.g. 12"
        )
    return int(text)


def _slot(tag: str) -> int:
    return int(key_slot(tag.encode()))


def partition_tag(namespace: str, index: int, count: int) -> str:
    """The hash tag (without braces) of partition ``index`` of ``count``."""
    if count == 1:
        return namespace
    width = REDIS_CLUSTER_HASH_SLOTS / count
    centre = (index + 0.5) * width
    # A quarter of a range either side of its centre: inside the range, whatever P.
    near = max(width / 4, 0.5)
    n = 0
    while True:
        tag = f"{namespace}:{index}:{n}"
        if abs(_slot(tag) - centre) <= near:
            return tag
        n += 1


def partition_of_id(task_or_series_id: str) -> int | None:
    """The partition index an id names, or None if it is not an id."""
    chars = task_or_series_id[_ID_PART]
    if len(task_or_series_id) != 26 or any(c not in _B32 for c in chars):
        return None
    return _B32.index(chars[0]) * 32 + _B32.index(chars[1])


def _hash(text: str) -> int:
    return zlib.crc32(text.encode())


class Partitions:
    """The partitions of one namespace: their keys, and which one a task goes to."""

    def __init__(self, namespace: str, count: int) -> None:
        self.namespace = validate_namespace(namespace)
        self.count = count
        self.keys = [Keys(namespace, partition_tag(namespace, i, count)) for i in range(count)]

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Keys]:
        return iter(self.keys)

    def of_id(self, task_or_series_id: str) -> Keys | None:
        """The keys of the partition an id names (None: no such partition here)."""
        index = partition_of_id(task_or_series_id)
        if index is None or index >= self.count:
            return None
        return self.keys[index]

    def for_idempotency_key(self, key: str) -> int:
        """Rule 1: the partition that owns an idempotency key."""
        return _hash("key:" + key) % self.count

    def for_limit(self, limit: str) -> int:
        """Rule 0: the partition of the tasks that share a limit."""
        return _hash("limit:" + limit) % self.count

    def spread(self, request_id: str) -> int:
        """Rule 4: the partition of a task with nothing to follow, by its request id."""
        return _hash(request_id) % self.count


def record_key(namespace: str) -> str:
    """The key that holds a namespace's partition count (in the namespace's own tag)."""
    return "{" + validate_namespace(namespace) + "}:partitions"


def _recorded(client: Any, namespace: str) -> int | None:
    raw = client.get(record_key(namespace))
    return int(raw) if raw else None


def _mismatch(namespace: str, recorded: int, requested: int) -> PartitionCountError:
    return PartitionCountError(
        f"namespace {namespace!r} has {recorded} partitions (recorded in Redis), not"
        f" {requested}: drop --partitions / PERSEID_PARTITIONS or set it to {recorded}"
    )


def _has_legacy_data(client: Any, namespace: str) -> bool:
    keys = Keys(namespace)
    return any(client.exists(keys.prefix + name) for name in _LEGACY_KEYS)


def resolve(
    client: Any, namespace: str, requested: int | None, default: int, *, record: bool
) -> Partitions:
    """The namespace's partitions: as recorded, else ``requested`` or ``default``.

    With ``record`` (a command that writes), an unrecorded count is recorded, so every
    later command agrees; a namespace that already holds data from before partitions
    existed is recorded as 1. A ``requested`` count that differs from the recorded one
    raises :class:`PartitionCountError`.
    """
    recorded = _recorded(client, namespace)
    if recorded is None and record:
        want = 1 if _has_legacy_data(client, namespace) else (requested or default)
        client.set(record_key(namespace), want, nx=True)
        recorded = _recorded(client, namespace)
    if recorded is not None and requested is not None and requested != recorded:
        raise _mismatch(namespace, recorded, requested)
    return Partitions(namespace, recorded or requested or default)


def default_count(client: Any) -> int:
    """1 on one Redis or behind Sentinel; 4 per primary on a Cluster.

    Several per primary so that adding primaries later (``redis-cli --cluster
    reshard``) has partitions to move: up to 4x the primaries without changing P.
    """
    get_primaries = getattr(client, "get_primaries", None)
    if get_primaries is None:
        return 1
    return 4 * max(1, len(get_primaries()))
