"""The ``number`` filter's cache of whole numbers writes what Babel writes, in each locale."""

from __future__ import annotations

from decimal import Decimal

from babel.numbers import format_decimal
from jinja2.sandbox import SandboxedEnvironment

from campaigns.rendering import FORMAT_LOCALE, _number


def test_whole_numbers_cached_and_others_formatted_as_babel_does():
    env = SandboxedEnvironment()
    env.filters["number"] = _number
    template = env.from_string("{{ value | number }}")
    for locale in ("en", "fr", "de_CH", "en_IN", "ar"):
        for value in (0, 7, -1500, 1234567, 10**12, 2.5, Decimal("1234.50")):
            expected = format_decimal(value, locale=locale)
            assert template.render(value=value, **{FORMAT_LOCALE: locale}) == expected
            assert template.render(value=value, **{FORMAT_LOCALE: locale}) == expected  # from the cache
