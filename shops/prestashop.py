"""PrestaShop's Webservice resources (``output_format=JSON``, ``display=full``) and what each means here.

PrestaShop has no webhooks of its own: the clock polls ``customers``, ``orders`` and ``order_slip``
(credit slips, its refunds) changed since the last poll (``filter[date_upd]``), and a shop module may
post the same events to our JSON API. The Webservice writes every value as a string, dates as the
shop's local ``YYYY-MM-DD HH:MM:SS`` (so the shop's time zone reads them), a customer's language
and an order's currency as ids of other resources (so the shop's configuration maps them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from shops.common import ShopMapping, amount, flag, iso, money_text, resource_id, text_or_empty
from shops.events import EventKind, OrderState, PayloadProblem, ShopEvent

PLATFORM = "prestashop"


@dataclass(frozen=True)
class ShopFacts:
    """What a PrestaShop shop's own tables say, read once from the Webservice (currencies, languages)."""

    timezone: str = "UTC"  # PS_TIMEZONE: the zone of every date the Webservice writes
    currencies: Mapping[str, str] = field(default_factory=dict)  # id_currency -> ISO code
    languages: Mapping[str, str] = field(default_factory=dict)  # id_lang -> iso_code (en, fr)
    cancelled_states: frozenset[str] = frozenset({"6"})  # a fresh install's "Canceled"
    refunded_states: frozenset[str] = frozenset({"7"})  # "Refunded"
    failed_states: frozenset[str] = frozenset({"8"})  # "Payment error"


def local_instant(value: Any, what: str, facts: ShopFacts) -> datetime | None:
    """``2027-01-05 14:30:00`` in the shop's zone; PrestaShop's empty date ``0000-00-00 00:00:00`` is None."""
    text = text_or_empty(value)
    if not text or text.startswith("0000-00-00"):
        return None
    try:
        naive = datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise PayloadProblem(f"{what} is not a date like 2027-01-05 14:30:00") from None
    return naive.replace(tzinfo=ZoneInfo(facts.timezone))


def _required_local(value: Any, what: str, facts: ShopFacts) -> datetime:
    moment = local_instant(value, what, facts)
    if moment is None:
        raise PayloadProblem(f"{what} is missing")
    return moment


def member_event(customer: Mapping[str, Any], mapping: ShopMapping, facts: ShopFacts) -> ShopEvent:
    external_id = resource_id(customer.get("id"), "the customer's id")
    version = _required_local(customer.get("date_upd"), "the customer's date_upd", facts)
    fields: dict[str, str] = {
        "external_id": external_id,
        "email": text_or_empty(customer.get("email")),
        "first_name": text_or_empty(customer.get("firstname")),
        "last_name": text_or_empty(customer.get("lastname")),
        "timezone": mapping.default_timezone,
    }
    if language := facts.languages.get(str(customer.get("id_lang") or "")):
        fields["locale"] = language
    if birthday := text_or_empty(customer.get("birthday")):
        if not birthday.startswith("0000"):
            fields["birthday"] = birthday
    if joined := local_instant(customer.get("date_add"), "the customer's date_add", facts):
        fields["joined_at"] = iso(joined)
    if customer.get("newsletter") is not None:
        subscribed = str(customer.get("newsletter")) == "1"
        fields["email_opt_in"] = flag(subscribed)
        at = local_instant(customer.get("newsletter_date_add"), "newsletter_date_add", facts) if subscribed else None
        fields["email_consent_at"] = iso(at or version)
    if str(customer.get("deleted") or "0") == "1":
        return ShopEvent(PLATFORM, EventKind.MEMBER_DELETED, f"{PLATFORM}:customer:{external_id}:{iso(version)}",
                         f"customer:{external_id}", version, {"external_id": external_id}, member_id=external_id)
    return ShopEvent(PLATFORM, EventKind.MEMBER, f"{PLATFORM}:customer:{external_id}:{iso(version)}",
                     f"customer:{external_id}", version, fields, member_id=external_id)


def order_state(order: Mapping[str, Any], facts: ShopFacts) -> OrderState:
    state = str(order.get("current_state") or "")
    if state in facts.cancelled_states:
        return OrderState.CANCELLED
    if state in facts.refunded_states:
        return OrderState.REFUNDED
    if state in facts.failed_states:
        return OrderState.VOIDED
    return OrderState.PAID if str(order.get("valid") or "0") == "1" else OrderState.PENDING


def earning_amount(order: Mapping[str, Any], mapping: ShopMapping) -> Decimal:
    """Products without taxes, less the discounts without taxes (no shipping, no wrapping), or the total paid."""
    if mapping.points_on == "total":
        return amount(order.get("total_paid_tax_incl") or order.get("total_paid"), "the order's total_paid")
    products = amount(order.get("total_products"), "the order's total_products")
    discounts = amount(order.get("total_discounts_tax_excl") or "0", "the order's total_discounts_tax_excl")
    return max(products - discounts, Decimal(0))


def order_event(order: Mapping[str, Any], mapping: ShopMapping, facts: ShopFacts) -> ShopEvent:
    order_id = resource_id(order.get("id"), "the order's id")
    member_id = resource_id(order.get("id_customer"), "the order's id_customer")
    version = _required_local(order.get("date_upd"), "the order's date_upd", facts)
    currency = facts.currencies.get(str(order.get("id_currency") or ""))
    if not currency:
        raise PayloadProblem(f"the order's id_currency {order.get('id_currency')!r} is not a currency of the shop")
    fields = {
        "order_id": order_id,
        "member_id": member_id,
        "placed_at": iso(_required_local(order.get("date_add"), "the order's date_add", facts)),
        "total": money_text(earning_amount(order, mapping)),
        "currency": currency,
        "state": order_state(order, facts).value,
    }
    return ShopEvent(PLATFORM, EventKind.ORDER, f"{PLATFORM}:order:{order_id}:{iso(version)}",
                     f"order:{order_id}", version, fields, member_id=member_id)


def refund_event(slip: Mapping[str, Any], facts: ShopFacts) -> ShopEvent:
    """A credit slip (``order_slip``): the products it gives back, without taxes or shipping."""
    slip_id = resource_id(slip.get("id"), "the credit slip's id")
    order_id = resource_id(slip.get("id_order"), "the credit slip's id_order")
    at = _required_local(slip.get("date_add"), "the credit slip's date_add", facts)
    refunded = amount(slip.get("total_products_tax_excl") or slip.get("amount"), "the credit slip's total_products_tax_excl")
    fields = {"refund_id": slip_id, "order_id": order_id, "refunded_at": iso(at), "amount": money_text(refunded),
              "currency": ""}
    member_id = str(slip["id_customer"]) if slip.get("id_customer") else None
    return ShopEvent(PLATFORM, EventKind.REFUND, f"{PLATFORM}:order_slip:{slip_id}", f"order:{order_id}", at, fields,
                     member_id=member_id)
