"""The instance's lease: what this process knows of it, and the thread that renews it.

The heartbeat runs on its own thread and connection, independent of task load.
Each renewal that succeeds moves the local lease deadline to *the moment the
request was sent* plus the TTL. Redis computed the real expiry from its own
``TIME`` when it ran the script, which is later, so the local deadline is never
later than the one every other instance goes by: when it passes, the worker may
already be dead for everyone, and it fences (see :mod:`perseid_jobs.worker.worker`).

A renewal that Redis refuses (the lease lapsed, or the instance is unknown) is
reported at once. A renewal that fails on a connection error is retried at the
next beat; the deadline simply stops moving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..store.connection import REDIS_ERRORS
from ..store.script_io import LeaseLapsed
from .fanout import PartitionedScripts as Scripts

log = logging.getLogger("perseid_jobs.worker")


class Lease:
    """The current instance id and its conservative lease deadline (monotonic seconds)."""

    def __init__(self, instance_id: str, ttl: float) -> None:
        self._lock = threading.Lock()
        self.ttl = ttl
        self._id = instance_id
        self._deadline: float | None = None

    @property
    def instance_id(self) -> str:
        """The id this process serves under now."""
        with self._lock:
            return self._id

    @property
    def deadline(self) -> float | None:
        """When the lease may lapse, on this host's monotonic clock (None: not registered)."""
        with self._lock:
            return self._deadline

    def start(self, instance_id: str, sent_at: float) -> float:
        """A registration of ``instance_id`` sent at ``sent_at`` succeeded."""
        with self._lock:
            self._id = instance_id
            self._deadline = sent_at + self.ttl
            return self._deadline

    def renewed(self, instance_id: str, sent_at: float) -> float | None:
        """A renewal sent at ``sent_at`` succeeded; None if the id changed meanwhile."""
        with self._lock:
            if instance_id != self._id or self._deadline is None:
                return None
            self._deadline = max(self._deadline, sent_at + self.ttl)
            return self._deadline

    def drop(self, new_id: str) -> None:
        """Forget the lease (fenced); serve next under ``new_id`` once registered."""
        with self._lock:
            self._id = new_id
            self._deadline = None

    def lapsed(self, now: float | None = None) -> bool:
        """True once the deadline passed without a renewal."""
        deadline = self.deadline
        return deadline is not None and (time.monotonic() if now is None else now) >= deadline


class Heartbeat(threading.Thread):
    """Renews ``lease`` every ``interval`` seconds."""

    def __init__(
        self,
        scripts: Scripts,
        lease: Lease,
        *,
        interval: float,
        on_renewed: Callable[[float], None],
        on_lost: Callable[[str], None],
        on_cancels: Callable[[list[str]], None],
    ) -> None:
        super().__init__(name="perseid-heartbeat", daemon=True)
        self.scripts = scripts
        self.lease = lease
        self.interval = interval
        self.on_renewed = on_renewed
        self.on_lost = on_lost
        self.on_cancels = on_cancels
        self.failures = 0
        self._stop_event = threading.Event()
        self._failing = False

    def stop(self) -> None:
        """End the thread after its current beat."""
        self._stop_event.set()

    def beat(self) -> None:
        """One renewal."""
        inst = self.lease.instance_id
        if self.lease.deadline is None:
            return  # not registered (yet, or again): nothing to renew
        sent_at = time.monotonic()
        try:
            reply = self.scripts.heartbeat(inst, int(self.lease.ttl * 1000))
        except REDIS_ERRORS as exc:
            self.failures += 1
            if not self._failing:
                log.warning("heartbeat failed, retrying every %gs: %s", self.interval, exc)
            self._failing = True
            return
        if self._failing:
            log.info("heartbeat renewed again after %d failures", self.failures)
        self._failing = False
        if isinstance(reply, LeaseLapsed):
            self.on_lost(inst)
            return
        deadline = self.lease.renewed(inst, sent_at)
        if deadline is not None:
            self.on_renewed(deadline)
        if reply.cancels:
            self.on_cancels(reply.cancels)

    def run(self) -> None:
        """Beat until stopped."""
        while not self._stop_event.wait(self.interval):
            self.beat()
