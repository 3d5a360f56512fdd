"""Local dates and instants: every campaign speaks in the member's own time zone."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time
from functools import lru_cache
from zoneinfo import ZoneInfo


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_datetime(at: datetime, zone_name: str) -> datetime:
    return at.astimezone(zone(zone_name))


def local_instant(day: date, at_time: time, zone_name: str) -> datetime:
    """The UTC instant of ``at_time`` on ``day`` in the zone (DST gaps resolve forward)."""
    naive = datetime.combine(day, at_time)
    aware = naive.replace(tzinfo=zone(zone_name))
    # A wall time inside a spring-forward gap does not exist; the round trip through UTC moves it
    # forward by the gap, which is what a person expects ("02:30" becomes 03:30).
    return aware.astimezone(UTC)


def celebrated_birthdays(local_day: date, leap_rule: str) -> list[tuple[int, int]]:
    """The (month, day) birthdays celebrated on ``local_day``.

    Feb 29 birthdays are celebrated on Feb 28 (``feb28``) or Mar 1 (``mar1``) in common years.
    """
    days = [(local_day.month, local_day.day)]
    if not calendar.isleap(local_day.year):
        if leap_rule == "feb28" and (local_day.month, local_day.day) == (2, 28):
            days.append((2, 29))
        elif leap_rule == "mar1" and (local_day.month, local_day.day) == (3, 1):
            days.append((2, 29))
    return days


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant; a value without an offset is taken as UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def iso_utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
