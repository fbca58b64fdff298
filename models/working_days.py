"""Chinese working days: statutory holidays off, adjusted weekend workdays (调休) on.

The maintained ``chinese_calendar`` library knows the State Council's arrangements for the
years it ships; a cycle policy may add or correct years through ``CalendarOverride``. When
neither knows a year we refuse with ``CALENDAR_YEAR_UNKNOWN`` instead of guessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import chinese_calendar
from pydantic import BaseModel, Field

from models.errors import CalendarYearUnknown


class CalendarOverride(BaseModel):
    """One year's holiday arrangement, for years the library does not cover (or gets wrong)."""

    year: int
    holidays: list[date] = Field(default_factory=list, description="weekdays that are off")
    workdays: list[date] = Field(default_factory=list, description="weekend days that are on")


def is_working_day(day: date, overrides: Sequence[CalendarOverride] = ()) -> bool:
    """Whether ``day`` is a working day in mainland China."""
    for override in overrides:
        if override.year == day.year:
            if day in override.holidays:
                return False
            if day in override.workdays:
                return True
            return day.weekday() < 5
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        raise CalendarYearUnknown(day.year) from None


def count_working_days(first: date, last: date, overrides: Sequence[CalendarOverride] = ()) -> int:
    """Working days in the closed range ``first``..``last``."""
    days = 0
    day = first
    while day <= last:
        days += is_working_day(day, overrides)
        day += timedelta(days=1)
    return days


def add_working_days(start: date, count: int, overrides: Sequence[CalendarOverride] = ()) -> date:
    """The ``count``-th working day after ``start`` (``start`` itself not counted)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    day = start
    while count:
        day += timedelta(days=1)
        count -= is_working_day(day, overrides)
    return day


__all__ = ["CalendarOverride", "add_working_days", "count_working_days", "is_working_day"]
