"""The transactional outbox: how a change crosses from one partition to another.

A script cannot touch two partitions (two Cluster slots). When a change in one partition
must reach another (a parent ended; its dependent lives elsewhere), the script records a
delivery in its own partition's outbox, atomically with the change itself
(``lua/includes/outbox_put.lua``). Then a caller reads it, applies it to the target
partition with ``deliver.lua``, whose every kind is idempotent, and only then removes it
with ``outbox_ack.lua``. A crash between any two steps leaves the delivery in the outbox,
to be applied again, to the same effect: exactly once in effect.

Who delivers: the caller whose script made the delivery, at once (a worker after its
finish, a client after its schedule or cancel); and every worker's reaper, for deliveries
older than :data:`STALE_MS` (their maker died before delivering, or a cancel or reap made
them), so a dead instance's deliveries are applied by the living.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .keys import Keys
from .scripts import Scripts

STALE_MS = 1000
"""A delivery this old is applied by any worker's reaper: its maker had its chance."""

BATCH = 100
"""Deliveries read, applied and removed per round."""

# (delivery id, target partition index, (kind, a, b, c))
Entry = tuple[str, int, tuple[str, str, str, str]]


def _until(before_ms: float) -> str:
    return "+inf" if before_ms == float("inf") else f"({int(before_ms)}"


def nonempty(
    redis: Any, sources: list[int], keys_of: Callable[[int], Keys], before_ms: float
) -> set[int]:
    """Which of the ``sources`` partitions hold deliveries made before ``before_ms``: one
    pipelined read (a reaper looks at every partition each reap interval)."""
    pipe = redis.pipeline(transaction=False)
    for source in sources:
        pipe.zrangebyscore(keys_of(source).outbox_at, "-inf", _until(before_ms), start=0, num=1)
    return {s for s, ids in zip(sources, pipe.execute(), strict=True) if ids}


def pending(redis: Any, keys: Keys, before_ms: float = float("inf")) -> list[Entry]:
    """Up to :data:`BATCH` deliveries of one partition's outbox, made before ``before_ms``."""
    ids = redis.zrangebyscore(keys.outbox_at, "-inf", _until(before_ms), start=0, num=BATCH)
    if not ids:
        return []
    return entries(ids, redis.hmget(keys.outbox, ids))


def entries(ids: list[str], payloads: list[str | None]) -> list[Entry]:
    """Deliveries from their ids and payloads (HMGET of the outbox hash), as entries."""
    out: list[Entry] = []
    for delivery_id, payload in zip(ids, payloads, strict=True):
        if payload is None:
            continue  # acked meanwhile by another deliverer
        kind, target, a, b, c = payload.split("\t")
        out.append((delivery_id, int(target), (kind, a, b, c)))
    return out


def deliver_round(
    redis: Any, source: int, scripts_of: Callable[[int], Scripts], before_ms: float
) -> set[int]:
    """Apply and remove one batch of partition ``source``'s deliveries; the partitions
    whose outbox the deliveries added to (deliver them next)."""
    source_scripts = scripts_of(source)
    entries = pending(redis, source_scripts.keys, before_ms)
    if not entries:
        return set()
    by_target: dict[int, list[tuple[str, str, str, str]]] = {}
    for _, target, item in entries:
        by_target.setdefault(target, []).append(item)
    grew = set()
    for target, items in by_target.items():
        if scripts_of(target).deliver(items).outbox:
            grew.add(target)
    source_scripts.outbox_ack([delivery_id for delivery_id, _, _ in entries])
    if len(entries) == BATCH:
        grew.add(source)  # more may be waiting
    return grew


def drain(
    redis: Any,
    sources: Iterable[int],
    scripts_of: Callable[[int], Scripts],
    before_ms: float = float("inf"),
    rounds: int = 16,
) -> None:
    """Deliver what the ``sources`` partitions' outboxes hold, and what that delivery makes
    in turn (a follow answered by a settle), for at most ``rounds`` rounds."""
    todo = nonempty(redis, list(sources), lambda i: scripts_of(i).keys, before_ms)
    for _ in range(rounds):
        if not todo:
            return
        grew: set[int] = set()
        for source in sorted(todo):
            grew |= deliver_round(redis, source, scripts_of, before_ms)
        todo, before_ms = grew, float("inf")  # what this round made is fresh: take it all
