"""Shopify's webhooks (REST-shaped JSON, one topic per delivery) and what each means here.

Every delivery carries ``X-Shopify-Topic``, ``X-Shopify-Event-Id`` (the event: Shopify's documented
way to recognise a duplicate, so with the topic our de-duplication key; ``X-Shopify-Webhook-Id`` when
it is absent) and ``X-Shopify-Triggered-At``; a retry carries the payload of when the event happened,
so the resource's own ``updated_at`` orders versions of one order or customer (see
docs/shop-platforms.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from shops.common import (
    ShopMapping,
    amount,
    country_timezone,
    flag,
    instant,
    iso,
    locale_code,
    money_text,
    optional_instant,
    phone_in_country,
    resource_id,
    text_or_empty,
    used_codes,
)
from shops.events import EventKind, OrderState, PayloadProblem, ShopEvent, paid_first

PLATFORM = "shopify"

MEMBER_TOPICS = frozenset({"customers/create", "customers/update"})
ORDER_TOPICS = frozenset({"orders/create", "orders/paid", "orders/updated", "orders/cancelled"})
TOPICS = MEMBER_TOPICS | ORDER_TOPICS | {
    "customers/delete", "orders/delete", "refunds/create",
    "customers/data_request", "customers/redact", "shop/redact",
}

_FINANCIAL = {
    "pending": OrderState.PENDING, "authorized": OrderState.PENDING, "partially_paid": OrderState.PENDING,
    "paid": OrderState.PAID, "partially_refunded": OrderState.PARTIALLY_REFUNDED,
    "refunded": OrderState.REFUNDED, "voided": OrderState.VOIDED, "expired": OrderState.VOIDED,
}


def parse(topic: str, event_id: str, triggered_at: datetime | None, payload: Any,
          mapping: ShopMapping) -> list[ShopEvent]:
    """The events one delivery means; :class:`PayloadProblem` when it cannot mean anything."""
    if topic not in TOPICS:
        raise PayloadProblem(f"the topic {topic!r} is not one we subscribe to")
    if not isinstance(payload, dict):
        raise PayloadProblem(f"a {topic} payload must be a JSON object")
    key = f"{PLATFORM}:{topic}:{event_id}"
    if topic in MEMBER_TOPICS:
        return [member_event(payload, key, triggered_at, mapping)]
    if topic == "customers/delete":
        customer = resource_id(payload.get("id"), "the customer's id")
        return [ShopEvent(PLATFORM, EventKind.MEMBER_DELETED, key, f"customer:{customer}", triggered_at,
                          member_id=customer)]
    if topic in ORDER_TOPICS:
        return order_events(payload, key, triggered_at, mapping)
    if topic == "orders/delete":
        order = resource_id(payload.get("id"), "the order's id")
        return [ShopEvent(PLATFORM, EventKind.ORDER_DELETED, key, f"order:{order}", triggered_at,
                          fields={"order_id": order})]
    if topic == "refunds/create":
        return [refund_event(payload, key, triggered_at, mapping)]
    return [privacy_event(topic, payload, key, triggered_at)]


def member_event(customer: Mapping[str, Any], key: str, triggered_at: datetime | None,
                 mapping: ShopMapping) -> ShopEvent:
    external_id = resource_id(customer.get("id"), "the customer's id")
    address = customer.get("default_address") or {}
    fields: dict[str, str] = {
        "external_id": external_id,
        "email": text_or_empty(customer.get("email")),
        "phone": phone_in_country(customer.get("phone") or address.get("phone"), address.get("country_code")),
        "first_name": text_or_empty(customer.get("first_name")),
        "last_name": text_or_empty(customer.get("last_name")),
        "timezone": country_timezone(address.get("country_code"), mapping.default_timezone),
    }
    if locale := locale_code(customer.get("locale")):
        fields["locale"] = locale
    if created := optional_instant(customer.get("created_at"), "the customer's created_at"):
        fields["joined_at"] = iso(created)
    fields.update(_consent(customer, "email_marketing_consent", "email"))
    fields.update(_consent(customer, "sms_marketing_consent", "sms"))
    if birthday := _metafield(customer, mapping.birthday_key):
        fields["birthday"] = birthday
    version = optional_instant(customer.get("updated_at"), "the customer's updated_at") or triggered_at
    return ShopEvent(PLATFORM, EventKind.MEMBER, key, f"customer:{external_id}", version, fields,
                     member_id=external_id)


def _consent(customer: Mapping[str, Any], name: str, channel: str) -> dict[str, str]:
    """Shopify's ``{state, opt_in_level, consent_updated_at}``: subscribed is consent, anything else is not.

    Absent means "not said": the member's consent is left as it is. ``pending`` (a confirmation email
    not yet clicked) is not consent.
    """
    consent = customer.get(name)
    if not isinstance(consent, dict) or not consent.get("state"):
        if channel == "email" and isinstance(customer.get("accepts_marketing"), bool):  # before API 2022-04
            at = optional_instant(customer.get("accepts_marketing_updated_at"), "accepts_marketing_updated_at")
            return {"email_opt_in": flag(customer["accepts_marketing"]), **({"email_consent_at": iso(at)} if at else {})}
        return {}
    fields = {f"{channel}_opt_in": flag(consent["state"] == "subscribed")}
    if at := optional_instant(consent.get("consent_updated_at"), f"{name}.consent_updated_at"):
        fields[f"{channel}_consent_at"] = iso(at)
    return fields


def _metafield(customer: Mapping[str, Any], key: str) -> str | None:
    """A metafield's value when the webhook carries metafields (subscribed with metafield namespaces)."""
    namespace, _, name = key.partition(".")
    for field in customer.get("metafields") or ():
        if isinstance(field, dict) and field.get("namespace") == namespace and field.get("key") == name:
            value = field.get("value")
            return value.strip() if isinstance(value, str) and value.strip() else None
    return None


def order_state(order: Mapping[str, Any]) -> OrderState:
    if order.get("cancelled_at"):
        return OrderState.CANCELLED
    state = _FINANCIAL.get(str(order.get("financial_status") or "pending"))
    if state is None:
        raise PayloadProblem(f"the order's financial_status {order.get('financial_status')!r} is unknown")
    return state


def _shop_money(order: Mapping[str, Any], name: str) -> Decimal:
    """``{name}_set.shop_money.amount`` (the shop's currency), else the plain field."""
    money = (order.get(f"{name}_set") or {}).get("shop_money") or {}
    return amount(money.get("amount", order.get(name)), f"the order's {name}")


def earning_amount(order: Mapping[str, Any], mapping: ShopMapping) -> Decimal:
    """The merchandise after discounts, without shipping, taxes or tips (or the total, if chosen)."""
    if mapping.points_on == "total":
        return _shop_money(order, "total_price")
    subtotal = _shop_money(order, "subtotal_price")  # after discounts, before shipping, duties, taxes, tips
    if order.get("taxes_included"):  # then the subtotal includes the items' taxes (VAT shops)
        subtotal -= _line_taxes(order)
    return subtotal


def _line_taxes(order: Mapping[str, Any]) -> Decimal:
    """The taxes of the line items (not of shipping): their ``tax_lines``, else the order's total_tax."""
    lines = order.get("line_items") or ()
    taxes = [tax for line in lines if isinstance(line, dict) for tax in line.get("tax_lines") or ()]
    if not taxes:
        return _shop_money(order, "total_tax")
    total = Decimal(0)
    for tax in taxes:
        money = ((tax.get("price_set") or {}).get("shop_money") or {})
        total += amount(money.get("amount", tax.get("price")), "a line's tax")
    return total


def order_events(order: Mapping[str, Any], key: str, triggered_at: datetime | None,
                 mapping: ShopMapping) -> list[ShopEvent]:
    order_id = resource_id(order.get("id"), "the order's id")
    customer = order.get("customer") or {}
    member_id = resource_id(customer["id"], "the order's customer id") if customer.get("id") else None
    email = text_or_empty(order.get("email")) or text_or_empty(customer.get("email")) or None
    placed = instant(order.get("processed_at") or order.get("created_at"), "the order's processed_at")
    currency = ((order.get("subtotal_price_set") or {}).get("shop_money") or {}).get("currency_code") \
        or order.get("currency")
    state = order_state(order)
    fields = {
        "order_id": order_id,
        "member_id": member_id or "",
        "placed_at": iso(placed),
        "total": money_text(earning_amount(order, mapping)),
        "currency": text_or_empty(currency).upper(),
        "state": state.value,
        "taxes_included": flag(bool(order.get("taxes_included"))),
    }
    if order.get("test"):
        fields["test"] = "true"
    if codes := used_codes(order.get("discount_codes"), "code"):
        fields["coupon_codes"] = codes
    version = optional_instant(order.get("updated_at"), "the order's updated_at") or triggered_at
    placed_event = ShopEvent(PLATFORM, EventKind.ORDER, key, f"order:{order_id}", version, fields,
                             member_id=member_id, member_email=None if member_id else email)
    # Refunds also ride on the order (orders/updated): the same refund from refunds/create is the same
    # refund id, applied once, so a lost refunds/create delivery is caught up here.
    refunds = [refund_event({**refund, "order_id": order_id}, f"{key}:refund:{refund['id']}", version, mapping,
                            member_id=member_id, member_email=None if member_id else email)
               for refund in order.get("refunds") or () if isinstance(refund, dict) and refund.get("id")]
    if state in (OrderState.REFUNDED, OrderState.CANCELLED) and order.get("financial_status") in _PAID:
        return paid_first(placed_event, refunds)
    return [placed_event, *refunds]


_PAID = frozenset({"paid", "partially_refunded", "refunded"})  # money was taken (and maybe given back)


def refund_event(refund: Mapping[str, Any], key: str, triggered_at: datetime | None, mapping: ShopMapping,
                 member_id: str | None = None, member_email: str | None = None) -> ShopEvent:
    """The merchandise a refund gives back: its line items' subtotals, and their taxes, which come off
    when the order's prices include them (the refund does not say: the order does). Shipping (its
    ``refund_shipping_lines``, or ``order_adjustments``), duties and amounts refunded without a line
    earned nothing and take nothing back. Earning on the total, the taxes are not set apart."""
    refund_id = resource_id(refund.get("id"), "the refund's id")
    order_id = resource_id(refund.get("order_id"), "the refund's order_id")
    refunded, taxes = Decimal(0), Decimal(0)
    currency = ""
    for line in refund.get("refund_line_items") or ():
        money = ((line.get("subtotal_set") or {}).get("shop_money") or {})
        refunded += amount(money.get("amount", line.get("subtotal")), "a refund line's subtotal")
        tax = ((line.get("total_tax_set") or {}).get("shop_money") or {}).get("amount", line.get("total_tax"))
        taxes += amount(tax, "a refund line's total_tax") if tax not in (None, "") else Decimal(0)
        currency = currency or text_or_empty(money.get("currency_code"))
    at = instant(refund.get("processed_at") or refund.get("created_at"), "the refund's created_at")
    fields = {"refund_id": refund_id, "order_id": order_id, "refunded_at": iso(at),
              "amount": money_text(refunded), "currency": currency.upper()}
    if mapping.points_on != "total":
        fields["tax"] = money_text(taxes)
    return ShopEvent(PLATFORM, EventKind.REFUND, key, f"order:{order_id}", triggered_at or at, fields,
                     member_id=member_id, member_email=member_email)


def privacy_event(topic: str, payload: Mapping[str, Any], key: str, triggered_at: datetime | None) -> ShopEvent:
    """The mandatory privacy topics: ``customers/redact``, ``customers/data_request``, ``shop/redact``."""
    if topic == "shop/redact":
        shop = text_or_empty(payload.get("shop_domain")) or str(payload.get("shop_id") or "")
        return ShopEvent(PLATFORM, EventKind.ERASE_SHOP, key, f"shop:{shop}", triggered_at, {"shop": shop})
    customer = payload.get("customer") or {}
    external_id = resource_id(customer.get("id"), "the customer's id")
    kind = EventKind.ERASE_MEMBER if topic == "customers/redact" else EventKind.EXPORT_MEMBER
    fields = {"external_id": external_id}
    if topic == "customers/data_request":
        fields["request_id"] = str((payload.get("data_request") or {}).get("id") or "")
    return ShopEvent(PLATFORM, kind, key, f"customer:{external_id}", triggered_at, fields, member_id=external_id)
