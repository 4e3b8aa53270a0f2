"""Durations: parse what users type (``90s``, ``1h30m``, ``PT30S``) into milliseconds and back.

Every duration in perseid-jobs is a positive whole number of milliseconds.
Months and years are refused: they have no fixed length, so a schedule built
on them would drift. Use a cron expression for calendar-based repetition.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

__all__ = ["DurationError", "format_duration", "parse_duration"]

ACCEPTED_FORMS = (
    "use seconds (30), units ms/s/m/h/d/w largest first (250ms, 90s, 1h30m) "
    "or ISO-8601 (PT30S, P1DT2H)"
)

_UNIT_MS: dict[str, int] = {
    "w": 7 * 86_400_000,
    "d": 86_400_000,
    "h": 3_600_000,
    "m": 60_000,
    "s": 1_000,
    "ms": 1,
}
_UNIT_ORDER = list(_UNIT_MS)  # largest first

_NUMBER = r"\d+(?:[.,]\d+)?"
_COMPACT_PART = re.compile(rf"\s*({_NUMBER})\s*(ms|[wdhms])\s*")
_ISO = re.compile(
    rf"P(?:(?P<w>{_NUMBER})W)?(?:(?P<d>{_NUMBER})D)?"
    rf"(?:T(?:(?P<h>{_NUMBER})H)?(?:(?P<m>{_NUMBER})M)?(?:(?P<s>{_NUMBER})S)?)?",
    re.IGNORECASE,
)
_ISO_CALENDAR = re.compile(r"^P[^T]*[YM]", re.IGNORECASE)
_COMPACT_CALENDAR = re.compile(rf"{_NUMBER}\s*(?:y|yr|yrs|years?|mo|mons?|months?|M)\b")


class DurationError(ValueError):
    """A duration that cannot be used; the message names the value and the accepted forms."""


def parse_duration(value: str | int | float) -> int:
    """Return ``value`` as a positive number of milliseconds.

    Accepts a number of seconds (``30``, ``0.25``, ``"30"``), units largest first
    (``"250ms"``, ``"90s"``, ``"10m"``, ``"2h"``, ``"1d"``, ``"1w"``, ``"1h30m"``)
    and ISO-8601 durations without months or years (``"PT30S"``, ``"P1D"``,
    ``"P1DT2H"``). Fractions are rounded to the nearest millisecond.

    Raises:
        DurationError: the value is zero, negative, malformed, or uses months/years.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DurationError(f"invalid duration {value!r}: {ACCEPTED_FORMS}")
    if isinstance(value, str):
        ms = _parse_text(value)
    else:
        if not math.isfinite(value):
            raise DurationError(f"invalid duration {value!r}: {ACCEPTED_FORMS}")
        ms = _to_ms(Decimal(value), 1000)
    if ms <= 0:
        raise DurationError(f"duration {value!r} must be greater than zero: {ACCEPTED_FORMS}")
    return ms


def format_duration(ms: int) -> str:
    """Return ``ms`` in the compact unit form, e.g. ``90000 -> "1m30s"``, ``3600000 -> "1h"``.

    Uses days, hours, minutes, seconds and milliseconds (never weeks), so
    ``parse_duration(format_duration(ms)) == ms`` for every positive ``ms``.

    Raises:
        DurationError: ``ms`` is not a positive integer.
    """
    if isinstance(ms, bool) or not isinstance(ms, int) or ms <= 0:
        raise DurationError(f"cannot format duration {ms!r}: expected a positive int of ms")
    parts: list[str] = []
    rest = ms
    for unit in ("d", "h", "m", "s", "ms"):
        count, rest = divmod(rest, _UNIT_MS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _parse_text(text: str) -> int:
    stripped = text.strip()
    if not stripped:
        raise DurationError(f"invalid duration {text!r}: {ACCEPTED_FORMS}")
    iso = stripped[:1] in "Pp"
    if (_ISO_CALENDAR if iso else _COMPACT_CALENDAR).search(stripped):
        raise DurationError(
            f"invalid duration {text!r}: months and years have no fixed length "
            f"(use a cron expression); {ACCEPTED_FORMS}"
        )
    if re.fullmatch(_NUMBER, stripped):
        return _to_ms(_decimal(stripped), 1000)
    return _parse_iso(text, stripped) if iso else _parse_compact(text, stripped)


def _parse_iso(text: str, stripped: str) -> int:
    match = _ISO.fullmatch(stripped)
    groups = match.groupdict() if match else {}
    if not match or not any(groups.values()) or stripped.upper().endswith("T"):
        raise DurationError(f"invalid duration {text!r}: {ACCEPTED_FORMS}")
    total = Decimal(0)
    for unit, amount in groups.items():
        if amount is not None:
            total += _decimal(amount) * _UNIT_MS[unit]
    return _to_ms(total, 1)


def _parse_compact(text: str, stripped: str) -> int:
    total = Decimal(0)
    position = 0
    last_rank = -1
    while position < len(stripped):
        match = _COMPACT_PART.match(stripped, position)
        rank = _UNIT_ORDER.index(match.group(2)) if match else -1
        if match is None or rank <= last_rank:
            # Unknown text, or units repeated / out of order ("30m1h"): likely a typo.
            raise DurationError(f"invalid duration {text!r}: {ACCEPTED_FORMS}")
        total += _decimal(match.group(1)) * _UNIT_MS[match.group(2)]
        last_rank = rank
        position = match.end()
    return _to_ms(total, 1)


def _decimal(number: str) -> Decimal:
    try:
        return Decimal(number.replace(",", "."))
    except InvalidOperation:  # pragma: no cover - the regexes only let digits through
        raise DurationError(f"invalid duration {number!r}: {ACCEPTED_FORMS}") from None


def _to_ms(amount: Decimal, scale: int) -> int:
    return int((amount * scale).to_integral_value())
