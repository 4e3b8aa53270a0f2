"""How every time in human output reads: ISO-8601 with date, milliseconds and zone.

UTC (``2026-05-01T07:13:27.634Z``) unless ``--local`` asked for this machine's
zone (``2026-05-01T09:13:27.634+02:00``). ``--json`` documents are not
rendered here: they always carry UTC (``models``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

_local = False


def use_local_time(local: bool) -> None:
    """Render times in this machine's zone from now on (the command's ``--local``).

    A process-wide setting, not a parameter threaded through every table and log
    line: a command prints in one convention, and the option is parsed before it runs.
    """
    global _local
    _local = local


def format_time(value: datetime | int | float | None) -> str:
    """An aware datetime, or epoch milliseconds, as ISO-8601; ``-`` for None."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        when = datetime.fromtimestamp(value / 1000, tz=UTC)
    if _local:
        return when.astimezone().isoformat(timespec="milliseconds")
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class IsoFormatter(logging.Formatter):
    """A logging formatter whose ``%(asctime)s`` follows the same convention (for stderr logs)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return format_time(record.created * 1000)
