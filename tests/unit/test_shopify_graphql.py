"""Shopify's GraphQL nodes (what the backfill reads) mean what the same customer or order means in a
webhook (REST): the mapping feeds shops.shopify, so one reading of both."""

from __future__ import annotations

from shops import shopify, shopify_graphql
from shops.common import ShopMapping
from shops.events import EventKind

MAPPING = ShopMapping(default_timezone="Europe/Paris")


def money(amount: str, currency: str = "EUR") -> dict:
    return {"shopMoney": {"amount": amount, "currencyCode": currency}}


CUSTOMER = {
    "id": "gid://shopify/Customer/7300000000001", "legacyResourceId": "7300000000001", "email": "ada@example.com",
    "firstName": "Ada", "lastName": "Lovelace", "phone": None, "locale": "fr-CA", "state": "ENABLED",
    "createdAt": "2026-11-01T09:00:00Z", "updatedAt": "2026-11-02T10:00:00Z",
    "defaultAddress": {"countryCodeV2": "FR", "phone": "06 12 34 56 78"},
    "emailMarketingConsent": {"marketingState": "SUBSCRIBED", "marketingOptInLevel": "SINGLE_OPT_IN",
                              "consentUpdatedAt": "2026-11-01T09:00:00Z"},
    "smsMarketingConsent": {"marketingState": "NOT_SUBSCRIBED", "marketingOptInLevel": "SINGLE_OPT_IN",
                            "consentUpdatedAt": None},
    "metafields": {"nodes": [{"namespace": "facts", "key": "birth_date", "value": "1990-12-10"}]},
}


def order(**changes) -> dict:
    node = {
        "id": "gid://shopify/Order/6100000000001", "legacyResourceId": "6100000000001", "name": "#1001",
        "email": "ada@example.com", "createdAt": "2026-11-03T10:00:00Z", "processedAt": "2026-11-03T10:00:00Z",
        "updatedAt": "2026-11-04T10:00:00Z", "cancelledAt": None, "displayFinancialStatus": "PARTIALLY_REFUNDED",
        "currencyCode": "EUR", "taxesIncluded": False, "test": False, "customerLocale": "fr",
        "subtotalPriceSet": money("90.00"), "totalPriceSet": money("108.00"), "totalTaxSet": money("18.00"),
        "customer": {"id": "gid://shopify/Customer/7300000000001", "legacyResourceId": "7300000000001"},
        "refunds": [{"id": "gid://shopify/Refund/930000000001", "legacyResourceId": "930000000001",
                     "createdAt": "2026-11-04T10:00:00Z", "totalRefundedSet": money("54.00")}],
    }
    node.update(changes)
    return node


def test_a_graphql_customer_means_what_its_webhook_means():
    event = shopify.member_event(shopify_graphql.customer_payload(CUSTOMER), "k", None, MAPPING)
    assert event.kind is EventKind.MEMBER and event.member_id == "7300000000001"
    assert event.fields == {
        "external_id": "7300000000001", "email": "ada@example.com", "phone": "+33612345678", "first_name": "Ada",
        "last_name": "Lovelace", "timezone": "Europe/Paris", "locale": "fr_CA", "joined_at": "2026-11-01T09:00:00Z",
        "email_opt_in": "true", "email_consent_at": "2026-11-01T09:00:00Z", "sms_opt_in": "false",
        "birthday": "1990-12-10",
    }
    assert event.version_at.isoformat() == "2026-11-02T10:00:00+00:00"


def test_a_graphql_order_with_a_refund_without_line_items_gives_back_the_merchandise_share():
    events = shopify.order_events(shopify_graphql.order_payload(order()), "k", None, MAPPING)
    placed, refund = events
    assert placed.fields == {"order_id": "6100000000001", "member_id": "7300000000001",
                             "placed_at": "2026-11-03T10:00:00Z", "total": "90.00", "currency": "EUR",
                             "state": "partially_refunded", "taxes_included": "false"}
    # 54.00 paid back of 108.00 (taxes excluded from the 90.00 of merchandise): half, 45.00
    assert refund.kind is EventKind.REFUND and refund.fields["amount"] == "45.00"
    assert refund.fields["refund_id"] == "930000000001" and refund.fields["order_id"] == "6100000000001"


def test_a_refund_with_its_line_items_gives_back_their_subtotals():
    with_lines = order(refunds=[{"id": "gid://shopify/Refund/5", "createdAt": "2026-11-04T10:00:00Z",
                                 "totalRefundedSet": money("54.00"),
                                 "refundLineItems": {"nodes": [{"subtotalSet": money("40.00")}]}}])
    refund = shopify.order_events(shopify_graphql.order_payload(with_lines), "k", None, MAPPING)[1]
    assert refund.fields["amount"] == "40.00" and refund.fields["refund_id"] == "5"


def test_a_refunds_line_items_carry_their_taxes_and_a_refund_without_any_gives_back_no_merchandise():
    """As a webhook: ``subtotalSet`` (taxes included when the order's prices include them) and
    ``totalTaxSet``; a refund whose line items were read and are none (the shipping, an amount) gave
    back no merchandise, whatever it paid back."""
    vat = order(taxesIncluded=True, subtotalPriceSet=money("120.00"), totalPriceSet=money("126.00"),
                totalTaxSet=money("20.00"), refunds=[
                    {"id": "gid://shopify/Refund/7", "createdAt": "2026-11-04T10:00:00Z",
                     "totalRefundedSet": money("60.00"),
                     "refundLineItems": {"nodes": [{"subtotalSet": money("60.00"), "totalTaxSet": money("10.00")}]}},
                    {"id": "gid://shopify/Refund/8", "createdAt": "2026-11-04T11:00:00Z",
                     "totalRefundedSet": money("6.00"), "refundLineItems": {"nodes": []},
                     "refundShippingLines": {"nodes": [{"subtotalAmountSet": money("6.00")}]}}])
    placed, box, shipping = shopify.order_events(shopify_graphql.order_payload(vat), "k", None, MAPPING)
    assert placed.fields["total"] == "100.00" and placed.fields["taxes_included"] == "true"
    assert (box.fields["amount"], box.fields["tax"]) == ("60.00", "10.00")
    assert (shipping.fields["amount"], shipping.fields["tax"]) == ("0.00", "0.00")


def test_taxes_included_are_not_earned_on_nor_given_back():
    vat = order(taxesIncluded=True, subtotalPriceSet=money("120.00"), totalPriceSet=money("120.00"),
                totalTaxSet=money("20.00"), refunds=[{"id": "gid://shopify/Refund/6", "createdAt":
                "2026-11-04T10:00:00Z", "totalRefundedSet": money("60.00")}])
    placed, refund = shopify.order_events(shopify_graphql.order_payload(vat), "k", None, MAPPING)
    assert placed.fields["total"] == "100.00" and refund.fields["amount"] == "50.00"


def test_cancelled_pending_and_guest_orders():
    cancelled = shopify_graphql.order_payload(order(cancelledAt="2026-11-05T10:00:00Z", refunds=[]))
    assert shopify.order_events(cancelled, "k", None, MAPPING)[0].fields["state"] == "cancelled"
    pending = shopify_graphql.order_payload(order(displayFinancialStatus="PENDING", refunds=[]))
    assert shopify.order_events(pending, "k", None, MAPPING)[0].fields["state"] == "pending"
    guest = shopify.order_events(shopify_graphql.order_payload(order(customer=None, refunds=[])), "k", None, MAPPING)
    assert guest[0].member_id is None and guest[0].member_email == "ada@example.com"


def test_an_id_is_read_from_the_gid_when_there_is_no_legacy_id():
    assert shopify_graphql.legacy_id({"id": "gid://shopify/Order/42"}, "an order") == 42
    payload = shopify_graphql.customer_payload({**CUSTOMER, "legacyResourceId": None,
                                                "id": "gid://shopify/Customer/77"})
    assert payload["id"] == 77
