"""Scrub personal data from free text (provider error messages, log events) before it is logged or stored.

Providers echo what they were given: an SMTP server names the refused address, Twilio quotes the
number it rejects. Those texts are useful to support, the address and number in them are not.

A phone number is masked as it is usually written: with its country code (``+33 6 12 34 56 78``,
``+1 (415) 555-0100``, ``+14155550100``) or in national groups (``(415) 555-0123``,
``415-555-0123``, ``06 12 34 56 78``), 8 digits or more. A bare run of digits (``10023456789``) is
left alone: it is how the shop's ids and order numbers look, and the numbers we send to are E.164.
Dates, times and IP addresses are left alone too.
"""

from __future__ import annotations

import re

# Letters and digits of any script (\w), since addresses may be internationalised (inès.x@exemple.fr).
_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(
    r"(?:(?<![\w+])\+\d[\d ().-]{6,}\d"  # with a country code, grouped any way (also in tel:+33...)
    r"|(?<![\w/.:+-])"  # a national number is not the tail of a word, a path, a number, a time or an id
    r"(?:\(\d{2,4}\)[ .-]?\d{2,4}(?:[ .-]?\d{2,5})+"  # (415) 555-0123
    r"|\d{2,4}(?:[ .-]\d{2,4}){2,4}))"  # 415-555-0123, 06 12 34 56 78, 020 7946 0958
    r"(?![\w/]|[.:-]\d)"
)
_NOT_A_PHONE = re.compile(
    r"\d{4}([./-])\d{1,2}\1\d{1,2}"  # 2027-06-15
    r"|\d{1,2}([./-])\d{1,2}\2\d{4}"  # 15.06.2027
    r"|\d{1,3}(?:\.\d{1,3}){3}"  # 192.168.100.200
)


def redact(text: str | None, *, email: str = "[email]", phone: str = "[phone]") -> str | None:
    """``text`` with email addresses and phone numbers replaced by the placeholders."""
    if not text:
        return text
    return _PHONE.sub(lambda match: _phone(match, phone), _EMAIL.sub(email, text))


def _phone(match: re.Match, placeholder: str) -> str:
    """Phone numbers have 8 digits or more; status codes such as "550 5.1.1" do not."""
    text = match.group()
    if _NOT_A_PHONE.search(text):
        return text
    return placeholder if sum(ch.isdigit() for ch in text) >= 8 else text
