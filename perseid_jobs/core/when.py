"""Parsing when a task starts (``--at``): absolute times, or relative to Redis time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import msgspec

from .durations import DurationError, parse_duration
from .errors import InvalidTime


class When(msgspec.Struct, frozen=True):
    """An absolute start (epoch ms) or a delay after Redis now (both unset: now)."""

    at_ms: int | None = None
    delay_ms: int = 0

    def absolute_ms(self, now_ms: Callable[[], int]) -> int:
        """The start as epoch ms, reading Redis time only when relative."""
        return self.at_ms if self.at_ms is not None else now_ms() + self.delay_ms


def parse_when(value: datetime | str | None) -> When:
    """``None``/``"now"``, ``"+90s"``/``"+10m"``, ISO-8601 with offset, or an aware datetime."""
    if value is None:
        return When()
    if isinstance(value, datetime):
        return When(at_ms=_aware_ms(value, repr(value)))
    text = value.strip()
    if text in ("", "now"):
        return When()
    if text.startswith("+"):
        try:
            return When(delay_ms=parse_duration(text[1:]))
        except DurationError as exc:
            raise InvalidTime(f"--at {value!r}: {exc}") from None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidTime(
            f"--at {value!r} is not a time: use ISO-8601 with an offset"
            " (2026-12-01T09:00+01:00, ...Z) or a delay like +90s, +10m"
        ) from None
    return When(at_ms=_aware_ms(parsed, repr(value)))


def _aware_ms(value: datetime, shown: str) -> int:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidTime(
            f"--at {shown} has no time zone offset: add one (e.g. +01:00 or Z) so it means"
            " the same instant on every machine"
        )
    return int(value.timestamp() * 1000)
