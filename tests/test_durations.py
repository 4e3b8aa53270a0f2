"""Durations: what users type, in milliseconds, and back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perseid_jobs.core.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("value", "expected_ms"),
    [
        (30, 30_000),
        (0.25, 250),
        (1.5, 1_500),
        ("30", 30_000),
        ("2.5", 2_500),
        ("250ms", 250),
        ("90s", 90_000),
        ("10m", 600_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        ("1w", 604_800_000),
        ("1h30m", 5_400_000),
        ("1h 30m", 5_400_000),
        ("1d2h3m4s5ms", 93_784_005),
        ("1.5h", 5_400_000),
        ("  45s  ", 45_000),
        ("PT30S", 30_000),
        ("PT1M", 60_000),
        ("PT1.5S", 1_500),
        ("P1D", 86_400_000),
        ("P1DT2H", 93_600_000),
        ("P2W", 1_209_600_000),
        ("pt10m", 600_000),
    ],
)
def test_accepted_forms_parse_to_milliseconds(value: str | int | float, expected_ms: int) -> None:
    assert parse_duration(value) == expected_ms


@pytest.mark.parametrize("value", [0, 0.0, "0", "0s", "0ms", "PT0S", -5, -0.5, 0.0001])
def test_zero_and_negative_numbers_are_refused(value: str | int | float) -> None:
    with pytest.raises(DurationError, match=r"must be greater than zero: use seconds"):
        parse_duration(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "  ",
        "abc",
        "10x",
        "-5s",
        "1h-30m",
        "30m1h",
        "1h1h",
        "h",
        "1.2.3s",
        "P",
        "PT",
        "P1DT",
        "P1H",
        "1 hour",
        "5s!",
    ],
)
def test_malformed_text_is_refused_with_the_accepted_forms(value: str) -> None:
    with pytest.raises(DurationError) as raised:
        parse_duration(value)
    message = str(raised.value)
    assert repr(value) in message
    assert "250ms" in message and "PT30S" in message
    assert "\n" not in message


@pytest.mark.parametrize("value", ["1y", "2mo", "3M", "1 month", "P1M", "P1Y", "P1Y2M3D"])
def test_months_and_years_are_refused_as_not_fixed_durations(value: str) -> None:
    with pytest.raises(DurationError, match="months and years have no fixed length"):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, None, [1], float("nan"), float("inf")])
def test_values_that_are_not_numbers_or_text_are_refused(value: object) -> None:
    with pytest.raises(DurationError, match="invalid duration"):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (250, "250ms"),
        (1_500, "1s500ms"),
        (90_000, "1m30s"),
        (3_600_000, "1h"),
        (5_400_000, "1h30m"),
        (86_400_000, "1d"),
        (604_800_000, "7d"),
        (93_784_005, "1d2h3m4s5ms"),
    ],
)
def test_format_uses_the_largest_units(ms: int, text: str) -> None:
    assert format_duration(ms) == text


@pytest.mark.parametrize("ms", [0, -1, True, 1.5])
def test_format_refuses_what_is_not_a_positive_int(ms: object) -> None:
    with pytest.raises(DurationError, match="expected a positive int of ms"):
        format_duration(ms)  # type: ignore[arg-type]


@given(st.integers(min_value=1, max_value=10**13))
def test_format_round_trips_through_parse(ms: int) -> None:
    assert parse_duration(format_duration(ms)) == ms
