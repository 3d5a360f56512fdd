"""Scrub personal data from free text (provider error messages) before it is logged or stored.

Providers echo what they were given: an SMTP server names the refused address, Twilio quotes the
number it rejects. Those texts are useful to support, the address and number in them are not.
"""

from __future__ import annotations

import re

_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_PHONE = re.compile(r"(?<![\w/])\+?\d[\d ().-]{6,}\d(?![\w/])")


def redact(text: str | None) -> str | None:
    """``text`` with email addresses and phone-number-like digit runs replaced by placeholders."""
    if not text:
        return text
    return _PHONE.sub(_phone_if_long_enough, _EMAIL.sub("[email]", text))


def _phone_if_long_enough(match: re.Match) -> str:
    """Phone numbers have 8 digits or more; status codes such as "550 5.1.1" do not."""
    text = match.group()
    if _DATE.fullmatch(text.strip()):
        return text
    return "[phone]" if sum(ch.isdigit() for ch in text) >= 8 else text
