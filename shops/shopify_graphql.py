"""Shopify's GraphQL Admin API nodes as the REST-shaped payloads :mod:`shops.shopify` reads.

The backfill reads customers and orders through GraphQL (camelCase fields, ``gid://shopify/Order/1``
ids, enum values in capitals, money as ``{shopMoney: {amount, currencyCode}}``); a webhook carries the
REST shape. Mapping one to the other here keeps one reading of what an order or a customer means.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from shops.common import CENT, amount
from shops.events import PayloadProblem

MEMBER_TOPIC = "customers/update"
ORDER_TOPIC = "orders/updated"


def legacy_id(node: Mapping[str, Any] | None, what: str) -> int | str | None:
    """``legacyResourceId``, else the number at the end of the ``gid://shopify/Kind/N`` id."""
    if not node:
        return None
    value = node.get("legacyResourceId") or str(node.get("id") or "").rpartition("/")[2].partition("?")[0]
    if not value:
        raise PayloadProblem(f"{what} has no id")
    return int(value) if str(value).isdigit() else str(value)


def _money_set(node: Mapping[str, Any] | None) -> dict[str, Any] | None:
    money = (node or {}).get("shopMoney")
    if not money:
        return None
    return {"shop_money": {"amount": str(money.get("amount")), "currency_code": money.get("currencyCode")}}


def _consent(node: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not node or not node.get("marketingState"):
        return None
    return {"state": str(node["marketingState"]).lower(),
            "opt_in_level": str(node.get("marketingOptInLevel") or "").lower() or None,
            "consent_updated_at": node.get("consentUpdatedAt")}


def _nodes(value: Any) -> list[Any]:
    """A connection (``{nodes: [...]}`` or ``{edges: [{node}]}``) or a plain list, as a list."""
    if isinstance(value, list):
        return value
    if isinstance(value, Mapping):
        if isinstance(value.get("nodes"), list):
            return value["nodes"]
        return [edge.get("node") for edge in value.get("edges") or () if isinstance(edge, Mapping)]
    return []


def customer_payload(node: Mapping[str, Any]) -> dict[str, Any]:
    """A GraphQL ``Customer`` as the ``customers/update`` webhook's body."""
    address = node.get("defaultAddress") or {}
    payload: dict[str, Any] = {
        "id": legacy_id(node, "a customer"), "email": node.get("email"), "first_name": node.get("firstName"),
        "last_name": node.get("lastName"), "phone": node.get("phone"), "locale": node.get("locale"),
        "state": str(node.get("state") or "").lower() or None,
        "created_at": node.get("createdAt"), "updated_at": node.get("updatedAt"),
        "default_address": {"country_code": address.get("countryCodeV2") or address.get("countryCode"),
                            "phone": address.get("phone")} if address else None,
        "metafields": [{"namespace": m.get("namespace"), "key": m.get("key"), "value": m.get("value")}
                       for m in _nodes(node.get("metafields")) if isinstance(m, Mapping)],
    }
    for name, rest in (("emailMarketingConsent", "email_marketing_consent"),
                       ("smsMarketingConsent", "sms_marketing_consent")):
        if consent := _consent(node.get(name)):
            payload[rest] = consent
    return payload


def _refund(refund: Mapping[str, Any], order: Mapping[str, Any], earning_share: Decimal | None,
            currency: str) -> dict[str, Any]:
    """A refund, with the merchandise it gave back as ``refund_line_items`` (``subtotal_set`` and
    ``total_tax_set``, as a webhook has them). A refund without line items (shipping, an amount) gives
    back no merchandise; only a node read without its line items (a query that did not select them)
    gives back its share of what was paid, applied to the merchandise (taxes out)."""
    lines = []
    for line in _nodes(refund.get("refundLineItems")):
        if isinstance(line, Mapping) and (money := _money_set(line.get("subtotalSet"))):
            lines.append({"subtotal_set": money, "total_tax_set": _money_set(line.get("totalTaxSet"))})
    if "refundLineItems" not in refund and earning_share is not None:
        refunded = amount(((refund.get("totalRefundedSet") or {}).get("shopMoney") or {}).get("amount"),
                          "the refund's totalRefundedSet")
        lines.append({"subtotal_set": {"shop_money": {
            "amount": str((refunded * earning_share).quantize(CENT)), "currency_code": currency}}})
    return {"id": legacy_id(refund, "a refund"), "order_id": legacy_id(order, "an order"),
            "created_at": refund.get("createdAt"), "processed_at": refund.get("createdAt"),
            "refund_line_items": lines}


def order_payload(node: Mapping[str, Any]) -> dict[str, Any]:
    """A GraphQL ``Order`` as the ``orders/updated`` webhook's body (refunds included)."""
    sets = {rest: _money_set(node.get(camel)) for camel, rest in (
        ("subtotalPriceSet", "subtotal_price_set"), ("currentSubtotalPriceSet", "current_subtotal_price_set"),
        ("totalPriceSet", "total_price_set"), ("totalTaxSet", "total_tax_set"),
        ("totalShippingPriceSet", "total_shipping_price_set"), ("totalDiscountsSet", "total_discounts_set"))}
    customer = node.get("customer")
    status = node.get("displayFinancialStatus")
    payload: dict[str, Any] = {
        "id": legacy_id(node, "an order"), "name": node.get("name"), "email": node.get("email"),
        "created_at": node.get("createdAt"), "processed_at": node.get("processedAt"),
        "updated_at": node.get("updatedAt"), "cancelled_at": node.get("cancelledAt"),
        "financial_status": str(status).lower() if status else None, "currency": node.get("currencyCode"),
        "taxes_included": bool(node.get("taxesIncluded")), "test": bool(node.get("test")),
        "customer_locale": node.get("customerLocale"),
        **{name: value for name, value in sets.items() if value is not None},
        "customer": {"id": legacy_id(customer, "the order's customer")} if customer else None,
    }
    share = _earning_share(payload)
    currency = str(((payload.get("subtotal_price_set") or {}).get("shop_money") or {}).get("currency_code")
                   or node.get("currencyCode") or "")
    payload["refunds"] = [_refund(r, node, share, currency) for r in _nodes(node.get("refunds"))
                          if isinstance(r, Mapping)]
    return payload


def _earning_share(payload: Mapping[str, Any]) -> Decimal | None:
    """What part of the money paid was merchandise after discounts (before taxes): a refund without its
    line items gives back that part of itself. None when the order says too little to tell."""
    def shop(name: str) -> Decimal | None:
        money = (payload.get(name) or {}).get("shop_money") or {}
        return Decimal(str(money["amount"])) if money.get("amount") not in (None, "") else None

    total, subtotal, tax = shop("total_price_set"), shop("subtotal_price_set"), shop("total_tax_set") or Decimal(0)
    if not total or subtotal is None:
        return None
    merchandise = subtotal - tax if payload.get("taxes_included") else subtotal
    return min(max(merchandise / total, Decimal(0)), Decimal(1))
