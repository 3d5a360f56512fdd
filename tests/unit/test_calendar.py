from datetime import UTC, date, datetime, time

from core import calendar


def test_feb_29_is_celebrated_on_feb_28_or_mar_1_in_common_years_only():
    assert calendar.celebrated_birthdays(date(2027, 2, 28), "feb28") == [(2, 28), (2, 29)]
    assert calendar.celebrated_birthdays(date(2028, 2, 28), "feb28") == [(2, 28)]
    assert calendar.celebrated_birthdays(date(2028, 2, 29), "feb28") == [(2, 29)]
    assert calendar.celebrated_birthdays(date(2027, 3, 1), "mar1") == [(3, 1), (2, 29)]
    assert calendar.celebrated_birthdays(date(2027, 2, 28), "mar1") == [(2, 28)]


def test_local_instants_follow_daylight_saving():
    assert calendar.local_instant(date(2027, 3, 27), time(9), "Europe/Paris") == datetime(2027, 3, 27, 8, tzinfo=UTC)
    assert calendar.local_instant(date(2027, 3, 28), time(9), "Europe/Paris") == datetime(2027, 3, 28, 7, tzinfo=UTC)
    # 02:30 does not exist on the spring-forward night: it resolves to 03:30 local (01:30 UTC).
    assert calendar.local_instant(date(2027, 3, 28), time(2, 30), "Europe/Paris") == datetime(2027, 3, 28, 1, 30, tzinfo=UTC)


def test_instants_without_offset_are_utc():
    assert calendar.parse_instant("2027-02-28T09:30:00") == datetime(2027, 2, 28, 9, 30, tzinfo=UTC)
    assert calendar.parse_instant("2027-02-28T09:30:00Z") == datetime(2027, 2, 28, 9, 30, tzinfo=UTC)
    assert calendar.iso_utc(calendar.parse_instant("2027-02-28T10:30:00+01:00")) == "2027-02-28T09:30:00Z"
