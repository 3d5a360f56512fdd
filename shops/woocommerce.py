"""WooCommerce's webhooks and REST v3 resources (the same JSON shapes), and what each means here.

A delivery carries ``X-WC-Webhook-Topic`` (``order.updated``), ``X-WC-Webhook-Resource``,
``X-WC-Webhook-Event`` and ``X-WC-Webhook-Delivery-ID``, which is new on every delivery: WooCommerce
does not retry, so the same change can only come again from our poll. The key is therefore the
resource, its id and its ``date_modified_gmt``: a webhook and a poll that see the same version make
one inbox row. Refunds arrive inside order updates (``refunds: [{id, total}]``).
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

PLATFORM = "woocommerce"

TOPICS = frozenset({
    "order.created", "order.updated", "order.deleted", "order.restored",
    "customer.created", "customer.updated", "customer.deleted",
})

_STATUS = {
    "pending": OrderState.PENDING, "on-hold": OrderState.PENDING, "checkout-draft": OrderState.PENDING,
    "processing": OrderState.PAID, "completed": OrderState.PAID,
    "refunded": OrderState.REFUNDED, "cancelled": OrderState.CANCELLED,
    "failed": OrderState.VOIDED, "trash": OrderState.CANCELLED,
}


def parse(topic: str, payload: Any, mapping: ShopMapping) -> list[ShopEvent]:
    """The events one webhook (or one polled resource, topic ``order.updated``) means."""
    if topic not in TOPICS:
        raise PayloadProblem(f"the topic {topic!r} is not one we subscribe to")
    if not isinstance(payload, dict):
        raise PayloadProblem(f"a {topic} payload must be a JSON object")
    resource, _, action = topic.partition(".")
    if action == "deleted":
        # WooCommerce sends only {"id": N} for a deletion.
        rid = resource_id(payload.get("id"), f"the {resource}'s id")
        kind = EventKind.MEMBER_DELETED if resource == "customer" else EventKind.ORDER_DELETED
        fields = {"external_id": rid} if resource == "customer" else {"order_id": rid}
        return [ShopEvent(PLATFORM, kind, f"{PLATFORM}:{resource}:{rid}:deleted", f"{resource}:{rid}", None,
                          fields, member_id=rid if resource == "customer" else None)]
    if resource == "customer":
        return [member_event(payload, mapping)]
    return order_events(payload, mapping)


def _version(payload: Mapping[str, Any], what: str) -> datetime:
    return instant(payload.get("date_modified_gmt") or payload.get("date_created_gmt"), f"the {what}'s date_modified_gmt")


def _meta(payload: Mapping[str, Any], key: str) -> str | None:
    for item in payload.get("meta_data") or ():
        if isinstance(item, dict) and item.get("key") == key and isinstance(item.get("value"), str | int):
            value = str(item["value"]).strip()
            return value or None
    return None


def member_event(customer: Mapping[str, Any], mapping: ShopMapping) -> ShopEvent:
    external_id = resource_id(customer.get("id"), "the customer's id")
    billing = customer.get("billing") or {}
    version = _version(customer, "customer")
    fields: dict[str, str] = {
        "external_id": external_id,
        "email": text_or_empty(customer.get("email")) or text_or_empty(billing.get("email")),
        "phone": phone_in_country(billing.get("phone"), billing.get("country")),
        "first_name": text_or_empty(customer.get("first_name")) or text_or_empty(billing.get("first_name")),
        "last_name": text_or_empty(customer.get("last_name")) or text_or_empty(billing.get("last_name")),
        "timezone": country_timezone(billing.get("country"), mapping.default_timezone),
    }
    if created := optional_instant(customer.get("date_created_gmt"), "the customer's date_created_gmt"):
        fields["joined_at"] = iso(created)
    if locale := locale_code(_meta(customer, "locale")):
        fields["locale"] = locale
    if birthday := _meta(customer, mapping.birthday_key):
        fields["birthday"] = birthday
    # WooCommerce has no marketing consent of its own: a plugin keeps it in meta_data, if at all.
    for channel in ("email", "sms"):
        if (given := _meta(customer, f"loyalty_{channel}_opt_in")) is not None:
            fields[f"{channel}_opt_in"] = given
            fields[f"{channel}_consent_at"] = iso(version)
    return ShopEvent(PLATFORM, EventKind.MEMBER, f"{PLATFORM}:customer:{external_id}:{iso(version)}",
                     f"customer:{external_id}", version, fields, member_id=external_id)


def order_state(order: Mapping[str, Any]) -> OrderState:
    status = str(order.get("status") or "")
    if status not in _STATUS:
        raise PayloadProblem(f"the order's status {status!r} is unknown")
    state = _STATUS[status]
    if state is OrderState.PAID and order.get("refunds"):
        return OrderState.PARTIALLY_REFUNDED
    return state


def earning_amount(order: Mapping[str, Any], mapping: ShopMapping) -> Decimal:
    """The line items' totals (after discounts, before taxes), without shipping and fees, or the total."""
    if mapping.points_on == "total":
        return amount(order.get("total"), "the order's total")
    lines = order.get("line_items")
    if not isinstance(lines, list):
        raise PayloadProblem("the order has no line_items")
    return sum((amount(line.get("total"), "a line item's total") for line in lines if isinstance(line, dict)),
               Decimal(0))


def order_events(order: Mapping[str, Any], mapping: ShopMapping) -> list[ShopEvent]:
    order_id = resource_id(order.get("id"), "the order's id")
    customer = order.get("customer_id")
    member_id = resource_id(customer, "the order's customer_id") if customer not in (None, 0, "0", "") else None
    email = text_or_empty((order.get("billing") or {}).get("email")) or None
    version = _version(order, "order")
    earning = earning_amount(order, mapping)
    fields = {
        "order_id": order_id,
        "member_id": member_id or "",
        "placed_at": iso(instant(order.get("date_paid_gmt") or order.get("date_created_gmt"),
                                 "the order's date_created_gmt")),
        "total": money_text(earning),
        "currency": text_or_empty(order.get("currency")).upper(),
        "state": order_state(order).value,
    }
    if codes := used_codes(order.get("coupon_lines"), "code"):
        fields["coupon_codes"] = codes
    guest = None if member_id else email
    placed = ShopEvent(PLATFORM, EventKind.ORDER, f"{PLATFORM}:order:{order_id}:{iso(version)}",
                       f"order:{order_id}", version, fields, member_id=member_id, member_email=guest)
    # A refund's total is negative and includes its share of shipping and taxes: what it gives back of
    # the merchandise is that share of the order's earning amount.
    order_total = amount(order.get("total"), "the order's total")
    refunds = []
    for refund in order.get("refunds") or ():
        if not isinstance(refund, dict) or not refund.get("id"):
            continue
        refund_id = resource_id(refund["id"], "a refund's id")
        refunded = abs(amount(refund.get("total"), "a refund's total"))
        share = min(refunded / order_total, Decimal(1)) if order_total > 0 else Decimal(1)
        refunds.append(ShopEvent(
            PLATFORM, EventKind.REFUND, f"{PLATFORM}:refund:{refund_id}", f"order:{order_id}", version,
            {"refund_id": refund_id, "order_id": order_id, "refunded_at": iso(version),
             "amount": money_text(earning * share), "currency": fields["currency"]},
            member_id=member_id, member_email=guest,
        ))
    state = OrderState(fields["state"])
    if state in (OrderState.REFUNDED, OrderState.CANCELLED) and order.get("date_paid_gmt"):
        return paid_first(placed, refunds)  # refunded or cancelled after it was paid
    return [placed, *refunds]


def delivery_key(topic: str, payload: Any) -> str:
    """The inbox key of a webhook or a polled resource: the resource, its id and its modification time,
    so the same version seen twice (a webhook and the poll) is one entry. WooCommerce's own delivery
    id is new on every delivery and cannot serve."""
    resource, _, action = topic.partition(".")
    if not isinstance(payload, dict):
        raise PayloadProblem(f"a {topic} payload must be a JSON object")
    rid = resource_id(payload.get("id"), f"the {resource}'s id")
    if action == "deleted":
        return f"{PLATFORM}:{resource}:{rid}:deleted"
    return f"{PLATFORM}:{resource}:{rid}:{iso(_version(payload, resource))}"
