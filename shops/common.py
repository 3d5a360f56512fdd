"""Small readings shared by the platform mappings: amounts, instants, locales, a country's time zone."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

import phonenumbers
from babel.core import get_global

from core.shop_settings import ShopMapping  # noqa: F401  (re-exported: the shop modules read it from here)
from shops.events import PayloadProblem

CENT = Decimal("0.01")


def amount(value: Any, what: str) -> Decimal:
    """A money amount as the platforms write it (a string, sometimes a number), to the cent."""
    if value is None or value == "":
        raise PayloadProblem(f"{what} is missing")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise PayloadProblem(f"{what} is not an amount") from None
    if not number.is_finite():
        raise PayloadProblem(f"{what} is not an amount")
    return number.quantize(CENT, rounding=ROUND_HALF_UP)


def refunded_merchandise(given: str, tax: str, prices_include_tax: bool) -> Decimal:
    """What a refund gave back of the merchandise that earned: the amount ``given``, less its ``tax``
    when the order's prices include taxes (they earned nothing); never below zero."""
    merchandise, taxes = amount(given, "the refund's amount"), amount(tax or "0", "the refund's tax")
    return max(merchandise - taxes if prices_include_tax else merchandise, Decimal(0))


def money_text(number: Decimal) -> str:
    return str(max(number, Decimal(0)).quantize(CENT, rounding=ROUND_HALF_UP))


def instant(value: Any, what: str) -> datetime:
    """An ISO 8601 instant; one without an offset is UTC (WooCommerce's ``*_gmt`` fields)."""
    if not isinstance(value, str) or not value:
        raise PayloadProblem(f"{what} is missing")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise PayloadProblem(f"{what} is not an ISO 8601 instant") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def optional_instant(value: Any, what: str) -> datetime | None:
    return instant(value, what) if value else None


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def resource_id(value: Any, what: str) -> str:
    """A platform id (an integer in JSON, a string in XML-born JSON) as our external id text."""
    if isinstance(value, bool) or value is None or value == "" or value == 0 or value == "0":
        raise PayloadProblem(f"{what} is missing")
    text = str(value).strip()
    if len(text) > 64 or not text.isprintable():
        raise PayloadProblem(f"{what} is not a usable id")
    return text


def locale_code(value: Any) -> str | None:
    """``fr-CA`` (Shopify's customer_locale) or ``fr_CA`` as the import writes it; None when absent."""
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip().replace("-", "_")


@lru_cache(maxsize=1)
def _territory_zones() -> Mapping[str, list[str]]:
    return get_global("territory_zones")


def country_timezone(country_code: Any, default: str) -> str:
    """The country's zone when it has exactly one (FR: Europe/Paris), else the store's."""
    if isinstance(country_code, str):
        zones = _territory_zones().get(country_code.strip().upper(), [])
        if len(zones) == 1:
            return zones[0]
    return default


def text_or_empty(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def flag(value: bool) -> str:
    return "true" if value else "false"


def phone_in_country(value: Any, country_code: Any) -> str:
    """A shop's phone as the customer typed it (``06 12 34 56 78``), in E.164 read in the address's
    country when it has no ``+``; left as it is when that does not make a valid number (the import's
    parsing then says what is wrong)."""
    text = text_or_empty(value)
    if not text or text.startswith("+") or not isinstance(country_code, str) or not country_code.strip():
        return text
    try:
        number = phonenumbers.parse(text, country_code.strip().upper())
    except phonenumbers.NumberParseException:
        return text
    if not phonenumbers.is_valid_number(number):
        return text
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def used_codes(entries: Any, key: str) -> str:
    """The discount codes an order used (``discount_codes[].code``, ``coupon_lines[].code``), comma-joined."""
    codes = [str(e.get(key)).strip() for e in entries or () if isinstance(e, dict) and e.get(key)]
    return ",".join(code for code in codes if code and "," not in code)
