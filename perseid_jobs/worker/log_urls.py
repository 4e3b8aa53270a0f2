"""Where uploaded logs went, until Redis has it: the one owner of the URLs to record.

The shipper's thread adds to it (``deque.extend`` is atomic); the loop records
them, up to a batch per script call, and only then deletes the spooled files.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..logs.shipper import Shipped

if TYPE_CHECKING:
    from ..logs.shipper import LogShipper
    from .fanout import PartitionedScripts as Scripts


class LogUrls:
    """Uploaded task logs whose URL is not yet recorded in Redis."""

    def __init__(self) -> None:
        self._waiting: deque[Shipped] = deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, shipped: Iterable[Shipped]) -> None:
        """Uploads that ended (from the shipper's thread)."""
        self._waiting.extend(shipped)

    def record(self, scripts: Scripts, shipper: LogShipper | None, most: int = 200) -> None:
        """Record where uploaded logs went (up to ``most`` in one call), then delete them here.

        Deleted only once recorded: a crash in between leaves the log in the
        spool, and the next worker uploads it again and records its URL.
        """
        batch = [self._waiting[i] for i in range(min(most, len(self._waiting)))]
        scripts.set_log_url((s.task_id, s.url) for s in batch)
        for _ in batch:
            self._waiting.popleft()
        if shipper:
            shipper.remove(batch)
