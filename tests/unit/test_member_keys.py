"""How `--member` reads a phone number (pure): E.164 with its country code, or in the default country."""

from __future__ import annotations

import pytest

from services.history import e164


@pytest.mark.parametrize(("typed", "region_locale", "expected"), [
    ("+33 6 12 34 56 78", None, "+33612345678"),
    ("+33612345678", "en_US", "+33612345678"),  # a country code wins over the default country
    ("(415) 555-0123", "en_US", "+14155550123"),
    ("06 12 34 56 78", "fr_FR", "+33612345678"),
    ("06 12 34 56 78", None, None),  # no country code and no default country: not a number
    ("06 12", "fr_FR", None),  # too short for any number
    ("12345", None, None),
])
def test_a_typed_phone_number_is_read_as_e164(typed, region_locale, expected):
    from services.imports.rows import locale_region

    assert e164(typed, locale_region(region_locale) if region_locale else None) == expected
