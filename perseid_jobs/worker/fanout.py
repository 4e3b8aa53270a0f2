"""The worker's scripts over every partition of its namespace, behind one interface.

An instance is registered, leased and reaped in every partition, so each partition's
scripts decide alone (a reaper in one partition needs nothing from another). What a
worker asks of all partitions at once (register, heartbeat, reap, deregister) goes to
each in turn and the replies are merged. Claims go only where work may be due, and in
turn (see :class:`ClaimTurns`), so no partition starves; the free slots the worker
passes bound every claim, so ``--slots`` holds over all partitions together.

With one partition every call goes straight to its scripts: the same calls as before
partitions existed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

import redis

from ..store import outbox
from ..store.partitions import Partitions, partition_of_id
from ..store.script_io import (
    Claimed,
    ClaimReply,
    Deregistered,
    Drained,
    Finished,
    LeaseLapsed,
    LogUrlsSet,
    Looked,
    LookReply,
    NextStart,
    Reaped,
    Registered,
    Renewed,
    Republished,
)
from ..store.scripts import Scripts, decode, given_argv
from . import pernode
from .turns import ClaimTurns

if TYPE_CHECKING:
    from .outcome import Outcome

T = TypeVar("T")


class PartitionedScripts:
    """One instance's script calls over every partition."""

    def __init__(self, client: redis.Redis, parts: Partitions, *, poll_every_s: float) -> None:
        self.parts = parts
        self.client = client
        self.each = [Scripts(client, keys) for keys in parts]
        # One partition: every method is its script's call, unchanged.
        self.one: Scripts | None = self.each[0] if len(self.each) == 1 else None
        self.turns = ClaimTurns(len(self.each), poll_every_s)

    def index_of(self, task_id: str) -> int:
        """The partition of a task id (ids this worker holds always name one)."""
        index = partition_of_id(task_id)
        return index if index is not None and index < len(self.each) else 0

    def _grouped(self, items: Iterable[T], task_id: Callable[[T], str]) -> dict[int, list[T]]:
        groups: dict[int, list[T]] = {}
        for item in items:
            groups.setdefault(self.index_of(task_id(item)), []).append(item)
        return groups

    # -- an instance's life: every partition -----------------------------------------------
    def register(self, instance: str, **kw: object) -> Registered:
        """Register in every partition (the first partition's reply)."""
        if self.one:
            return self.one.register(instance, **kw)  # type: ignore[arg-type]
        replies = [s.register(instance, **kw) for s in self.each]  # type: ignore[arg-type]
        self.turns.reset()
        return replies[0]

    def republish(self, instance: str, jobs: Mapping[str, str]) -> Republished | LeaseLapsed:
        """Replace the offered jobs everywhere; lapsed if any partition says so."""
        if self.one:
            return self.one.republish(instance, jobs)
        replies = [s.republish(instance, jobs) for s in self.each]
        lapsed = [r for r in replies if isinstance(r, LeaseLapsed)]
        if lapsed:
            return lapsed[0]
        done = [r for r in replies if isinstance(r, Republished)]
        dropped = sorted(set.intersection(*(set(r.dropped) for r in done)))
        return Republished(done[0].now, dropped)

    def heartbeat(self, instance: str, ttl_ms: int) -> Renewed | LeaseLapsed:
        """Renew the lease in every partition; lapsed if any refuses (the worker fences)."""
        if self.one:
            return self.one.heartbeat(instance, ttl_ms)
        raw = pernode.call_each(
            self.client, self.each, "heartbeat", [[instance, ttl_ms]] * len(self.each)
        )
        replies = [decode(r, Renewed | LeaseLapsed) for r in raw]  # type: ignore[arg-type]
        for r in replies:
            if isinstance(r, LeaseLapsed):
                return r
        renewed = [r for r in replies if isinstance(r, Renewed)]
        expiry = min(r.lease_expiry for r in renewed)
        return Renewed(renewed[0].now, expiry, [c for r in renewed for c in r.cancels])

    def drain(self, instance: str) -> Drained:
        """Stop claiming in every partition."""
        for s in self.each:
            s.drain(instance)
        return Drained()

    def deregister(
        self, instance: str, reason: str, given: Sequence[NextStart] = ()
    ) -> Deregistered:
        """Leave every partition; the needs of all of them, merged."""
        if self.one:
            return self.one.deregister(instance, reason, given)
        by_part = self._grouped(given, lambda g: g.task_id)
        replies = [
            s.deregister(instance, reason, by_part.get(i, [])) for i, s in enumerate(self.each)
        ]
        return Deregistered(sum(r.failed for r in replies), [n for r in replies for n in r.needs])

    def reap(self, given: Sequence[NextStart] = ()) -> Reaped:
        """Reap every partition (``given``: the next starts of the runs the first call named)."""
        if self.one:
            return self.one.reap(given)
        by_part = self._grouped(given, lambda g: g.task_id)
        argvs = [given_argv(by_part.get(i, [])) for i in range(len(self.each))]
        replies = [
            decode(r, Reaped) for r in pernode.call_each(self.client, self.each, "reap", argvs)
        ]
        # Deliveries their makers did not apply (they died, or a cancel or reap made them).
        stale_before = min(r.now for r in replies) - outbox.STALE_MS
        outbox.drain(self.client, range(len(self.each)), self.each.__getitem__, stale_before)
        return Reaped(
            max(r.now for r in replies),
            [t for r in replies for t in r.reaped],
            [n for r in replies for n in r.needs],
        )

    def set_log_url(self, urls: Iterable[tuple[str, str]]) -> LogUrlsSet:
        """Record log URLs, each in its task's partition."""
        if self.one:
            return self.one.set_log_url(urls)
        groups = self._grouped(urls, lambda pair: pair[0])
        recorded = sum(self.each[i].set_log_url(pairs).recorded for i, pairs in groups.items())
        return LogUrlsSet(recorded)

    def progress(self, items: Iterable[tuple[str, str, float, str]]) -> int:
        """Record running tasks' progress, each in its task's partition; how many were."""
        if self.one:
            return self.one.progress(items).recorded
        groups = self._grouped(items, lambda item: item[0])
        return sum(self.each[i].progress(group).recorded for i, group in groups.items())

    # -- the hot path ----------------------------------------------------------------------
    def claim(self, instance: str, most: int, free: int = -1) -> ClaimReply:
        """Claim in the partitions where work may be due, in turn, within ``most`` and ``free``."""
        if self.one:
            return self.one.claim(instance, most, free)
        return self._claim_round(instance, most, free, [], skip=None)

    def finish(
        self, instance: str, outcomes: Sequence[Outcome], claim_most: int, free: int = -1
    ) -> Finished:
        """Report outcomes, each in its task's partition, then claim.

        A partition's finish refills in place, claiming there as many tasks as ended
        there if work is due there; one finish in ``ROTATE_EVERY`` claims only where
        it is that partition's turn (see :mod:`.turns`). What is left to claim goes to
        the partitions in turn, as :meth:`claim`.
        """
        if self.one:
            return self.one.finish(instance, outcomes, claim_most, free)
        groups = self._grouped(outcomes, lambda o: o.id)
        codes: dict[str, int] = {}
        made: list[int] = []  # partitions whose finish put deliveries in their outbox
        first = self.turns.order()[:1]
        refill = self.turns.refills()
        replies: list[Claimed] = []
        asked: list[int] = []
        lapsed = False
        taken = 0
        for index, group in groups.items():
            ask = _finish_ask(
                claim_most - taken,
                len(group) if refill and self.turns.due_now(index) else 0,
                [index] == first and not refill,
            )
            sent = time.monotonic()
            reply = self.each[index].finish(instance, group, ask, free)
            codes.update(zip((o.id for o in group), reply.codes, strict=True))
            if reply.outbox:
                made.append(index)
            claim = reply.claim
            if isinstance(claim, LeaseLapsed):
                lapsed = True
                continue
            self.turns.saw(index, claim, asked=ask, free=free, sent=sent)
            replies.append(claim)
            if ask:
                asked.append(index)
                taken, free = _took(claim, taken, free)
        ordered = [codes[o.id] for o in outcomes]
        if made:  # dependents in other partitions: settle them now (the reaper would, later)
            outbox.drain(self.client, made, self.each.__getitem__)
        if lapsed:
            return Finished(ordered, LeaseLapsed(), len(made))
        rest = self._claim_round(instance, claim_most - taken, free, replies, skip=asked)
        return Finished(ordered, rest, len(made))

    def _claim_round(
        self, instance: str, most: int, free: int, replies: list[Claimed], *, skip: list[int] | None
    ) -> ClaimReply:
        order = self.turns.order()
        polled = [i for i in order if self.turns.only_polled(i)]
        if len(polled) > 1 and most > 0 and free != 0:
            # The periodic poll: one look per partition, pipelined per node; claim only
            # where something is due (an idle worker: a round trip per node, not per partition).
            found = self._look(instance, polled, replies)
            if isinstance(found, LeaseLapsed):
                return found
            order = [i for i in order if i not in polled or i in found]
        for index in order:
            if most <= 0 or free == 0:
                break
            if skip and index in skip and replies:
                continue  # its finish just claimed there
            sent = time.monotonic()
            claim = self.each[index].claim(instance, most, free)
            if isinstance(claim, LeaseLapsed):
                return claim
            self.turns.saw(index, claim, asked=most, free=free, sent=sent)
            self.turns.served(index)
            replies.append(claim)
            taken, free = _took(claim, 0, free)
            most -= taken
        return self.turns.merged(replies)

    def _look(
        self, instance: str, polled: list[int], replies: list[Claimed]
    ) -> set[int] | LeaseLapsed:
        """Look in the ``polled`` partitions; those with something due now."""
        sent = time.monotonic()
        raw = pernode.call_each(
            self.client, [self.each[i] for i in polled], "look", [[instance]] * len(polled)
        )
        due: set[int] = set()
        for index, reply in zip(polled, raw, strict=True):
            looked: Looked | LeaseLapsed = decode(reply, LookReply)  # type: ignore[arg-type]
            if isinstance(looked, LeaseLapsed):
                return looked
            claim = Claimed(looked.now, looked.next_due, looked.cancels, [], looked.now_us_past_ms)
            self.turns.looked(index, claim, bool(looked.due_now), sent)
            replies.append(claim)
            if looked.due_now:
                due.add(index)
        return due

    def woken(self, channel: str) -> None:
        """A wake-up arrived on ``channel`` (a partition's wake key; "": every partition):
        look there next."""
        for index, scripts in enumerate(self.each):
            if not channel or channel.startswith(scripts.keys.prefix):
                self.turns.wake(index)


def _finish_ask(left: int, refill: int, its_turn: bool) -> int:
    """How many tasks a partition's finish claims: what ended there (a refill), or all
    that is left on its turn; never more than is left to claim."""
    if left <= 0:
        return 0
    return left if its_turn else min(left, refill)


def _took(claim: Claimed, taken: int, free: int) -> tuple[int, int]:
    """Tasks taken so far, and the free slots left (negative ``free``: not counted)."""
    used = sum(int(t.slots) for t in claim.tasks)
    return taken + len(claim.tasks), (free - used if free >= 0 else free)
