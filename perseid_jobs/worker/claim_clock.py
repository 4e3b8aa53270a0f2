"""When a worker claims next: the one owner of its due time, warm-up and Redis-time estimate.

Redis decides what is due; the worker only learns, from each claim's reply,
Redis's clock (to the microsecond) and when the next task is due. It counts
the wait from when that claim went out, so the next claim reaches Redis about
when the task is due, not a reply's trip later (were it early, Redis would
only say "not yet"). Shortly before a due time that follows a quiet while,
the start path is warmed up (see :func:`perseid_jobs.worker.claiming.warm_up`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

WARM_AHEAD_S = 0.002
"""How long before a due time the start path is warmed up."""
WARM_AFTER_IDLE_S = 0.01
"""Only a due time at least this much later than the claim that told of it is warmed up for."""


class ClaimClock:
    """Whether a claim is wanted now, when the next one is due, and Redis's time.

    ``now``: the clock it reads (``time.monotonic``; tests give their own).
    """

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self.asked = True  # claim at the next turn of the loop
        self.due_at: float | None = None  # the next due time, on ``now``'s clock
        self._due_ms = -1  # the same in Redis time, as the last claim said
        self._warm = False  # warm the start path up before that due time
        self._sent = now()  # when the last claim went out
        self._redis = (0, now())  # (Redis time in ms, ``now()`` when it was seen)

    def ask(self) -> None:
        """Claim at the next turn (a wake-up, a registration, new jobs, a full batch)."""
        self.asked = True

    def settle(self) -> None:
        """The asked-for claim was made (or there was nothing to claim nor report)."""
        self.asked = False

    def sending(self) -> None:
        """A claim goes out now: its reply's due time is counted from here."""
        self._sent = self._now()

    def on_reply(self, now_ms: int, now_us_past_ms: int, next_due_ms: int) -> None:
        """A claim's reply: Redis's time (ms, and µs past it) and the next due time (-1: none)."""
        self.saw_now(now_ms)
        wait_us = (next_due_ms - now_ms) * 1000 - now_us_past_ms
        self.due_at = None if next_due_ms < 0 else self._sent + max(0, wait_us) / 1e6
        if next_due_ms != self._due_ms:  # a new due time (idle claims repeat the same one)
            self._due_ms = next_due_ms
            # Warmed up for only if nothing else is due before it for a while.
            self._warm = next_due_ms >= 0 and wait_us >= (WARM_AFTER_IDLE_S + WARM_AHEAD_S) * 1e6

    def forget_due(self) -> None:
        """Drop the due time (a fence: the next registration's claim tells it again)."""
        self.due_at = None

    def tick(self) -> None:
        """Ask for a claim once the due time has come."""
        if self.due_at is not None and self._now() >= self.due_at:
            self.due_at = None
            self.asked = True

    def take_warm_up(self) -> bool:
        """True once per due time, when it is time to warm the start path up for it."""
        due = self.due_at
        if not self._warm or due is None or self._now() < due - WARM_AHEAD_S:
            return False
        self._warm = False
        return True

    def wake_times(self, not_before: float) -> list[float]:
        """When the loop must act for a claim or a warm-up (none before ``not_before``)."""
        if self.due_at is None:
            return []
        when = [max(self.due_at, not_before)]
        if self._warm:
            when.append(max(self.due_at - WARM_AHEAD_S, not_before))
        return when

    # -- Redis time ------------------------------------------------------------------------
    def saw_now(self, now_ms: int) -> None:
        """A reply said Redis's time is ``now_ms``."""
        self._redis = (int(now_ms), self._now())

    def redis_now(self) -> int:
        """Redis time now: the last Redis time seen plus the time since on ``now``'s clock."""
        base, seen = self._redis
        return base + int((self._now() - seen) * 1000)
