"""The instance's heartbeat: renews its lease on its own thread and connection.

It runs independently of task load. When a renewal is refused (the lease
lapsed and the instance is dead for everyone) or no renewal succeeded for a
whole lease TTL, it tells the worker to fence.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from .errors import Code
from .scripts import Scripts

log = logging.getLogger("perseid_jobs.worker")


class Heartbeat(threading.Thread):
    """Renews the lease of ``instance_id()`` every ``interval`` seconds."""

    def __init__(
        self,
        scripts: Scripts,
        instance_id: Callable[[], str],
        *,
        interval: float,
        ttl: float,
        on_lost: Callable[[], None],
        on_cancels: Callable[[list[str]], None],
    ) -> None:
        super().__init__(name="perseid-heartbeat", daemon=True)
        self.scripts = scripts
        self.instance_id = instance_id
        self.interval = interval
        self.ttl = ttl
        self.on_lost = on_lost
        self.on_cancels = on_cancels
        self.failures = 0
        self._stop = threading.Event()
        self._last_ok = time.monotonic()
        self._lost_reported = False

    def reset(self) -> None:
        """Start counting afresh (after the worker registered under a new id)."""
        self._last_ok = time.monotonic()
        self._lost_reported = False

    def stop(self) -> None:
        """End the thread after its current beat."""
        self._stop.set()

    def beat(self) -> None:
        """One renewal."""
        try:
            reply = self.scripts.call("heartbeat", self.instance_id(), int(self.ttl * 1000))
        except redis.RedisError as exc:
            self.failures += 1
            log.warning("heartbeat failed: %s", exc)
            if time.monotonic() - self._last_ok >= self.ttl:
                self._lost(f"no renewal for {self.ttl:g}s")
            return
        if reply[0] == Code.LEASE_LOST:
            self._lost("the lease lapsed")
            return
        self._last_ok = time.monotonic()
        if reply[3]:
            self.on_cancels(list(reply[3]))

    def _lost(self, why: str) -> None:
        if not self._lost_reported:
            self._lost_reported = True
            log.error("instance %s lost its lease (%s): fencing", self.instance_id(), why)
            self.on_lost()

    def run(self) -> None:
        """Beat until stopped."""
        while not self._stop.wait(self.interval):
            self.beat()
