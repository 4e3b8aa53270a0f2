"""Where uploaded logs went, until Redis has it: the one owner of the URLs to record.

The shipper's thread adds to it (``deque.extend`` is atomic); the loop records
them, up to a batch per script call, and only then deletes the spooled files.

URLs wait up to ``LINGER_S`` for company before they are recorded: one call records
a whole batch, and with several partitions a batch is one call per partition, so
recording each upload's few URLs at once cost a script call for every few tasks.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..logs.shipper import Shipped

if TYPE_CHECKING:
    from ..logs.shipper import LogShipper
    from .fanout import PartitionedScripts as Scripts


LINGER_S = 0.25
"""How long an uploaded log's URL may wait to be recorded with others."""
BATCH = 200
"""URLs recorded in one round (a call per partition they are in)."""


class LogUrls:
    """Uploaded task logs whose URL is not yet recorded in Redis."""

    def __init__(self) -> None:
        self._waiting: deque[Shipped] = deque()
        self._since = 0.0  # monotonic: when the oldest waiting URL arrived

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, shipped: Iterable[Shipped]) -> None:
        """Uploads that ended (from the shipper's thread)."""
        if not self._waiting:
            self._since = time.monotonic()
        self._waiting.extend(shipped)

    def due_at(self) -> float:
        """When the waiting URLs are to be recorded (monotonic; inf if none wait)."""
        if not self._waiting:
            return float("inf")
        return self._since if len(self._waiting) >= BATCH else self._since + LINGER_S

    def due(self, now: float | None = None) -> bool:
        """True if URLs wait and their time to be recorded came."""
        return self.due_at() <= (time.monotonic() if now is None else now)

    def record(self, scripts: Scripts, shipper: LogShipper | None, most: int = BATCH) -> None:
        """Record where uploaded logs went (up to ``most`` in one call), then delete them here.

        Deleted only once recorded: a crash in between leaves the log in the
        spool, and the next worker uploads it again and records its URL.
        """
        batch = [self._waiting[i] for i in range(min(most, len(self._waiting)))]
        scripts.set_log_url((s.task_id, s.url) for s in batch)
        for _ in batch:
            self._waiting.popleft()
        self._since = time.monotonic()  # what is left waits on from now: it was not taken
        if shipper:
            shipper.remove(batch)
