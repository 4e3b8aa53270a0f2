"""Whose turn it is to be claimed from, among a namespace's partitions.

Each partition's last claim reply says when its next task is due; a partition is asked
again only when that time came, when a wake-up named it, when its last claim stopped at
the count or at the free slots (more may be due there), or when it has not been asked
for a poll interval (the safety net that the heartbeat-interval claim is with one
partition). Those that may have work are asked in a rotating order that starts after the
last one served, so a partition with an endless backlog cannot starve the others.

A finish refills in place: the tasks that ended in a partition with work due there are
replaced from that partition, in the finish's own call (a claim elsewhere would be a
second script call for each task). So that the partitions holding this worker's slots
cannot keep them, every ``ROTATE_EVERY``-th finish claims in turn instead: a partition
with work due, and none of this worker's slots, gets one within ``ROTATE_EVERY`` x P
finishes.

Pure logic on the monotonic clock: the times are passed in, so it is unit-tested alone.
"""

from __future__ import annotations

import math
import time

from ..store.script_io import Claimed

_INF = math.inf

ROTATE_EVERY = 4
"""One finish in this many claims in turn rather than in place (see the module's doc)."""


class ClaimTurns:
    """The claim schedule of ``count`` partitions."""

    def __init__(self, count: int, poll_every_s: float) -> None:
        self.count = count
        self.poll_every_s = poll_every_s
        self._turn = 0
        self._maybe_due = [True] * count  # may have due work now
        self._next_at = [_INF] * count  # when its next future task is due (monotonic)
        self._asked_at = [-_INF] * count
        self._last: Claimed | None = None
        self._last_sent = 0.0
        self._finishes = 0

    def reset(self) -> None:
        """Every partition may have work (a new registration)."""
        self._maybe_due = [True] * self.count
        self._asked_at = [-_INF] * self.count

    def order(self, now: float | None = None) -> list[int]:
        """The partitions to claim from now, in turn."""
        now = time.monotonic() if now is None else now
        rotated = [(self._turn + k) % self.count for k in range(self.count)]
        return [i for i in rotated if self._due(i, now)]

    def _due(self, i: int, now: float) -> bool:
        return (
            self._maybe_due[i]
            or self._next_at[i] <= now
            or now - self._asked_at[i] >= self.poll_every_s
        )

    def saw(self, index: int, claim: Claimed, *, asked: int, free: int, sent: float) -> None:
        """Partition ``index`` answered a claim sent at ``sent`` that asked for ``asked``.

        A reply that asked for nothing (a finish out of its partition's turn) tells the
        next future due time only: its next due skips what is due now, so it says nothing
        of whether work waits there (taking it as "nothing due" left a backlog to the poll).
        """
        if asked > 0:
            used = sum(int(t.slots) for t in claim.tasks)
            stopped_at_count = len(claim.tasks) >= asked
            out_of_slots = free >= 0 and used >= free
            self._maybe_due[index] = stopped_at_count or out_of_slots
            self._asked_at[index] = sent
        if claim.next_due < 0:
            self._next_at[index] = _INF
        else:
            wait_us = (claim.next_due - claim.now) * 1000 - claim.now_us_past_ms
            self._next_at[index] = sent + max(0, wait_us) / 1e6
        self._last, self._last_sent = claim, sent

    def refills(self) -> bool:
        """For the next finish: True to refill in place, False to claim in turn."""
        self._finishes += 1
        return self._finishes % ROTATE_EVERY != 0

    def due_now(self, index: int, now: float | None = None) -> bool:
        """True if partition ``index`` may have work due now (not only a poll's look)."""
        now = time.monotonic() if now is None else now
        return self._maybe_due[index] or self._next_at[index] <= now

    def only_polled(self, index: int, now: float | None = None) -> bool:
        """True if ``index`` is asked only because its poll interval passed."""
        now = time.monotonic() if now is None else now
        return not self._maybe_due[index] and self._next_at[index] > now

    def looked(self, index: int, claim: Claimed, due_now: bool, sent: float) -> None:
        """Partition ``index`` answered a look (nothing claimed): is anything due now?"""
        self.saw(index, claim, asked=0, free=-1, sent=sent)
        self._maybe_due[index] = due_now
        self._asked_at[index] = sent

    def served(self, index: int) -> None:
        """A claim went to ``index``: the next round starts after it."""
        self._turn = (index + 1) % self.count

    def wake(self, index: int) -> None:
        """A wake-up named partition ``index``."""
        self._maybe_due[index] = True

    def next_look(self) -> float:
        """When a partition next needs a claim (monotonic): a due time, or a poll."""
        due = min(self._next_at, default=_INF)
        # A partition never asked yet is maybe due: the next claim round asks it (on a
        # finish, or at once if the last round stopped at the count), not a timer.
        asked = [t for t in self._asked_at if t > -_INF]
        poll = min(asked, default=_INF) + self.poll_every_s
        return min(due, poll)

    def merged(self, replies: list[Claimed]) -> Claimed:
        """One claim reply for the worker: every task and cancel, and the next look as the
        next due time, in the clock of the last reply."""
        base = replies[-1] if replies else self._last
        if base is None:
            return Claimed(0, -1, [], [], 0)
        now, past_us, ref = base.now, base.now_us_past_ms, self._last_sent
        if not replies:  # nothing asked: the last reply's clock, moved on to this moment
            ref = time.monotonic()
            now, past_us = base.now + int((ref - self._last_sent) * 1000), 0
        look = self.next_look()
        next_due = -1
        if not math.isinf(look):
            next_due = now + max(0, math.ceil((look - ref) * 1000 + past_us / 1000))
        cancels = list(dict.fromkeys(c for r in replies for c in r.cancels))
        tasks = [t for r in replies for t in r.tasks]
        return Claimed(now, next_due, cancels, tasks, past_us)
