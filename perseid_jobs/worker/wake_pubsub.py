"""The wake-up signal of a namespace with several partitions: one subscription.

With one partition the instance blocks on its wake list (:mod:`.wake`). With several, one
``BLPOP`` cannot wait on lists of different partitions (different Cluster slots), and one
per partition would cost an idle instance P calls per heartbeat interval. So the scripts of
a partitioned namespace ``PUBLISH`` on the wake key's name instead of pushing to it, and
the instance keeps one connection subscribed to its wake channel of every partition:
nothing to send while idle. On a Cluster a ``PUBLISH`` reaches subscribers on every node,
so the connection may be to any node.

A message sent while the subscription is down (a reconnect) is lost; the claim the worker
makes at every heartbeat interval is the safety net, as it is for a lost ``BLPOP`` reply.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

# How often a silent subscription is checked with a PING (its reply proves the socket is up).
_PING_EVERY_S = 5.0
# How long a PING may stay unanswered before the subscription is dropped and made anew.
_PONG_WITHIN_S = 2.0


class WakeSubscription:
    """One connection subscribed to the instance's wake channels."""

    def __init__(self, client: redis.Redis, on_wake: Callable[[str], None]) -> None:
        """``on_wake(channel)`` is told which channel each wake-up came on."""
        self._client: Any = client
        self._on_wake = on_wake
        self._fresh = False
        self._pubsub: Any = None
        self._channels: tuple[str, ...] = ()
        self._ping_at = 0.0
        self._pong_by: float | None = None

    def arm(self, channels: Sequence[str], timeout_s: float) -> bool:
        """Make sure the subscription is up; False if Redis cannot be reached."""
        del timeout_s  # a subscription has no timeout; the loop's own timeout bounds the wait
        wanted = tuple(channels)
        if self._pubsub is not None and self._channels == wanted:
            self._maybe_ping()
            return self._pubsub is not None
        self.close()
        try:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(*wanted)
            pubsub.get_message(timeout=0)  # sends nothing; reads the subscribe confirmations
        except (redis.RedisError, OSError):
            return False
        self._pubsub, self._channels = pubsub, wanted
        self._ping_at = time.monotonic() + _PING_EVERY_S
        # What was published before this subscription is lost: a fresh one counts as a
        # wake-up of every partition (see overdue).
        self._fresh = True
        self._on_wake("")
        return True

    def _maybe_ping(self) -> None:
        now = time.monotonic()
        if self._pong_by is not None and now > self._pong_by:
            self.close()  # the socket went silent: make the subscription anew
            return
        if self._pong_by is None and now >= self._ping_at:
            try:
                self._pubsub.ping()
            except (redis.RedisError, OSError):
                self.close()
                return
            self._pong_by = now + _PONG_WITHIN_S

    def fileno(self) -> int:
        """The socket to select on, or -1 when not subscribed."""
        conn = None if self._pubsub is None else self._pubsub.connection
        if conn is None or conn._sock is None:
            return -1
        return int(conn._sock.fileno())

    def overdue(self) -> bool:
        """True if a PING went unanswered (the subscription is then dropped), or once after
        a new subscription (what was published before it is lost: look everywhere)."""
        if self._fresh:
            self._fresh = False
            return True
        if self._pubsub is None or self._pong_by is None:
            return False
        if time.monotonic() <= self._pong_by:
            return False
        self.close()
        return True

    def consume(self) -> bool:
        """Read what arrived; True if it held a wake-up (or the connection broke)."""
        if self._pubsub is None:
            return False
        woken = False
        try:
            while (msg := self._pubsub.get_message(timeout=0)) is not None:
                if msg.get("type") == "pong" or msg.get("data") in ("PONG", b"PONG"):
                    self._pong_by, self._ping_at = None, time.monotonic() + _PING_EVERY_S
                else:
                    woken = True
                    self._on_wake(str(msg.get("channel", "")))
        except (redis.RedisError, OSError):
            self.close()
            return True  # the next call finds out whether Redis is back
        return woken

    def close(self) -> None:
        """Drop the subscription, if any."""
        if self._pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                self._pubsub.close()
            self._pubsub, self._channels, self._pong_by = None, (), None
