"""The ``date`` filter's cache of days writes what Babel writes, in each locale and format; a
datetime, a date subclass and a refused value take the same path as before."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from babel.dates import format_date, format_datetime
from jinja2.sandbox import SandboxedEnvironment

from campaigns.rendering import FORMAT_LOCALE, _date


class Day(date):
    pass


def template(source: str = "{{ value | date }}"):
    env = SandboxedEnvironment()
    env.filters["date"] = _date
    return env.from_string(source)


@pytest.mark.parametrize("locale", ["en", "en_AU", "fr", "fr_CA", "de_CH", "ja", "ar"])
def test_days_cached_and_formatted_as_babel_does(locale):
    for value in (date(2027, 2, 28), date(2028, 2, 29), date(1999, 12, 31), Day(2027, 3, 1)):
        for fmt in ("long", "short", "medium", "full", "d MMMM yyyy", "EEEE"):
            expected = format_date(value, format=fmt, locale=locale)
            for _ in range(2):  # the second from the cache
                assert template("{{ value | date(fmt) }}").render(value=value, fmt=fmt, **{FORMAT_LOCALE: locale}) \
                    == expected
        assert template().render(value=value, **{FORMAT_LOCALE: locale}) == format_date(value, format="long",
                                                                                        locale=locale)


def test_a_datetime_is_formatted_as_babel_does_and_not_as_its_day():
    value = datetime(2027, 2, 28, 18, 30, tzinfo=UTC)
    for locale in ("en", "fr"):
        assert template().render(value=value, **{FORMAT_LOCALE: locale}) == \
            format_datetime(value, format="long", locale=locale)


def test_a_value_that_is_not_a_date_or_an_unknown_format_is_still_refused():
    with pytest.raises(TypeError, match="needs a date"):
        template().render(value="2027-02-28", **{FORMAT_LOCALE: "en"})
    with pytest.raises(Exception) as first:
        template("{{ value | date('longest') }}").render(value=date(2027, 2, 28), **{FORMAT_LOCALE: "en"})
    with pytest.raises(type(first.value)):  # not cached: refused again
        template("{{ value | date('longest') }}").render(value=date(2027, 2, 28), **{FORMAT_LOCALE: "en"})
