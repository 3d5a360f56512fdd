"""What a shop's payloads mean here: the pure mappings of shops/, on payloads shaped like the platforms'.

The fixtures in tests/data/shops/ are ours, written after the platforms' documented shapes
(docs/shop-platforms.md). Each mapped member or order must also be a valid row of the matching
`loyalty import`, since events go through the same parsing.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from services.imports.rows import parse_member, parse_order
from shops import prestashop, shopify, woocommerce
from shops.common import ShopMapping, country_timezone, refunded_merchandise
from shops.events import PAID_FIRST, EventKind, OrderState, PayloadProblem, import_status
from shops.signatures import body_signature, valid_bearer, valid_body_signature

DATA = Path(__file__).resolve().parent.parent / "data" / "shops"
MAPPING = ShopMapping(default_timezone="America/New_York", birthday_key="facts.birth_date")
TRIGGERED = datetime(2026, 11, 1, 15, 16, 31, tzinfo=UTC)


def load(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


# --- signatures ------------------------------------------------------------------------------------

def test_a_body_signed_with_the_secret_is_valid_and_any_change_is_not():
    body = b'{"id": 820982911946154508, "email": "ada@example.com"}'
    header = body_signature(body, "shpss_secret")
    assert valid_body_signature(body, header, ["shpss_secret"])
    assert valid_body_signature(body, header, ["new-secret", "shpss_secret"])  # rotation
    assert not valid_body_signature(body + b" ", header, ["shpss_secret"])
    assert not valid_body_signature(body, header, ["another"])
    assert not valid_body_signature(body, None, ["shpss_secret"])
    assert not valid_body_signature(body, "", ["shpss_secret"])
    assert not valid_body_signature(body, header, [""])  # no secret configured is never valid


def test_the_signature_is_the_base64_hmac_sha256_of_the_raw_bytes():
    # Computed independently: printf '%s' 'hello' | openssl dgst -sha256 -hmac key -binary | base64
    assert body_signature(b"hello", "key") == "kwezuRXvtRcf8U2MtV+8x5jGwO8UVtZt7RpqpyOli3s="


def test_only_a_configured_bearer_key_is_accepted():
    assert valid_bearer("Bearer k-live-1", ["k-live-2", "k-live-1"])
    assert valid_bearer("bearer   k-live-1 ", ["k-live-1"])
    assert not valid_bearer("Bearer k-live-3", ["k-live-1"])
    assert not valid_bearer("Basic k-live-1", ["k-live-1"])
    assert not valid_bearer("Bearer", ["k-live-1"])
    assert not valid_bearer(None, ["k-live-1"])


# --- Shopify ---------------------------------------------------------------------------------------

def test_a_shopify_customer_becomes_a_member_row_with_dated_consent():
    [event] = shopify.parse("customers/update", "evt-1", TRIGGERED, load("shopify_customer"), MAPPING)
    assert event.kind is EventKind.MEMBER
    assert event.dedup_key == "shopify:customers/update:evt-1"
    assert event.version_at == datetime(2026, 11, 1, 15, 16, tzinfo=UTC)  # the customer's updated_at
    fields = event.fields
    assert fields["external_id"] == "115310627314723954"
    assert fields["timezone"] == "Europe/Paris"  # France has one zone
    assert fields["email_opt_in"] == "true" and fields["email_consent_at"] == "2026-05-01T12:00:00Z"
    assert fields["sms_opt_in"] == "false" and "sms_consent_at" not in fields
    assert fields["birthday"] == "1990-12-10"
    row = parse_member(fields, default_timezone="UTC", default_locale="en", today=date(2026, 11, 1))
    assert row.email_opt_in and not row.sms_opt_in
    assert row.phone == "+33612345678" and row.timezone == "Europe/Paris"


def test_a_shopify_customer_without_a_consent_object_leaves_consent_unsaid():
    customer = load("shopify_customer")
    del customer["email_marketing_consent"], customer["sms_marketing_consent"]
    [event] = shopify.parse("customers/create", "evt-2", TRIGGERED, customer, MAPPING)
    assert not {"email_opt_in", "sms_opt_in"} & set(event.fields)


def test_pending_double_opt_in_is_not_consent():
    customer = load("shopify_customer")
    customer["email_marketing_consent"]["state"] = "pending"
    [event] = shopify.parse("customers/update", "evt-3", TRIGGERED, customer, MAPPING)
    assert event.fields["email_opt_in"] == "false"


def test_a_shopify_order_earns_on_its_subtotal_in_the_shops_currency():
    [event] = shopify.parse("orders/paid", "evt-4", TRIGGERED, load("shopify_order"), MAPPING)
    assert event.kind is EventKind.ORDER and event.member_id == "115310627314723954"
    fields = event.fields
    # 90.00 after the discount; shipping (7) and taxes (18) left out; EUR, not the buyer's USD.
    assert (fields["total"], fields["currency"]) == ("90.00", "EUR")
    assert fields["placed_at"] == "2026-11-01T15:14:58Z"
    assert OrderState(fields["state"]) is OrderState.PAID
    row = parse_order({**fields, "status": import_status(OrderState.PAID)})
    assert row.total == Decimal("90.00")


def test_in_a_tax_inclusive_shop_the_items_taxes_come_off_the_subtotal():
    order = load("shopify_order")
    order["taxes_included"] = True
    order["subtotal_price_set"]["shop_money"]["amount"] = "108.00"
    order["line_items"][0]["tax_lines"] = [{"price": "18.00", "price_set": {"shop_money": {"amount": "18.00"}}}]
    [event] = shopify.parse("orders/create", "evt-5", TRIGGERED, order, MAPPING)
    assert event.fields["total"] == "90.00"


def test_the_program_may_earn_on_the_total():
    [event] = shopify.parse("orders/paid", "evt-6", TRIGGERED, load("shopify_order"),
                            ShopMapping(points_on="total"))
    assert event.fields["total"] == "115.00"


@pytest.mark.parametrize(("financial_status", "cancelled", "state", "status"), [
    ("pending", False, OrderState.PENDING, None),
    ("authorized", False, OrderState.PENDING, None),
    ("paid", False, OrderState.PAID, "placed"),
    ("partially_refunded", False, OrderState.PARTIALLY_REFUNDED, "placed"),
    ("refunded", False, OrderState.REFUNDED, "refunded"),
    ("voided", False, OrderState.VOIDED, "cancelled"),
    ("paid", True, OrderState.CANCELLED, "cancelled"),
])
def test_shopify_statuses_map_to_ours(financial_status, cancelled, state, status):
    order = load("shopify_order")
    order["financial_status"] = financial_status
    order["cancelled_at"] = "2026-11-02T10:00:00-05:00" if cancelled else None
    event = shopify.parse("orders/updated", "evt-7", TRIGGERED, order, MAPPING)[-1]  # its state comes last
    assert OrderState(event.fields["state"]) is state and PAID_FIRST not in event.fields
    assert import_status(state) == status


@pytest.mark.parametrize(("financial_status", "cancelled", "paid_first"), [
    ("refunded", False, True), ("paid", True, True), ("partially_refunded", True, True),
    ("pending", True, False), ("voided", False, False), ("paid", False, False), ("partially_refunded", False, False),
])
def test_an_order_refunded_or_cancelled_after_payment_is_told_paid_then_refunded(financial_status, cancelled,
                                                                                  paid_first):
    """As its webhooks told it: paid (to an order not stored yet), its refunds, then its state."""
    order = load("shopify_order")
    order.update(financial_status=financial_status, refunds=[load("shopify_refund")],
                 cancelled_at="2026-11-02T10:00:00-05:00" if cancelled else None)
    events = shopify.parse("orders/updated", "evt-7", TRIGGERED, order, MAPPING)
    if paid_first:
        assert [e.kind for e in events] == [EventKind.ORDER, EventKind.REFUND, EventKind.ORDER]
        assert events[0].fields == {**events[2].fields, PAID_FIRST: "true"}
    else:
        assert [e.kind for e in events] == [EventKind.ORDER, EventKind.REFUND]
        assert PAID_FIRST not in events[0].fields


def test_a_guest_order_is_matched_by_email():
    order = load("shopify_order")
    order["customer"] = None
    [event] = shopify.parse("orders/create", "evt-8", TRIGGERED, order, MAPPING)
    assert event.member_id is None and event.member_email == "ada@example.com"


def test_a_refund_gives_back_its_merchandise_not_shipping_nor_taxes():
    [event] = shopify.parse("refunds/create", "evt-9", TRIGGERED, load("shopify_refund"), MAPPING)
    assert event.kind is EventKind.REFUND and event.resource == "order:820982911946154508"
    assert event.fields["amount"] == "45.00" and event.fields["currency"] == "EUR"
    assert event.fields["tax"] == "9.00"  # taken off only if the order's prices include taxes
    assert event.fields["refund_id"] == "929361462"


def test_a_tax_inclusive_refund_gives_back_its_lines_without_their_taxes_and_nothing_for_shipping():
    """``subtotal_set`` includes the taxes when the order's prices do (``taxes_included``, which a
    refund does not carry: the stored order says it); shipping refunds have no line item."""
    refund = load("shopify_refund")
    refund["refund_line_items"] = [
        {"id": 1, "line_item_id": 11, "quantity": 1, "subtotal_set": {"shop_money": {"amount": "60.00"}},
         "total_tax_set": {"shop_money": {"amount": "10.00"}}},
        {"id": 2, "line_item_id": 12, "quantity": 2, "subtotal": 24.0, "total_tax": 4.0}]  # numbers, REST-style
    refund["refund_shipping_lines"] = [{"id": 3, "subtotal_amount_set": {"shop_money": {"amount": "6.00"}}}]
    [event] = shopify.parse("refunds/create", "evt-11", TRIGGERED, refund, MAPPING)
    assert (event.fields["amount"], event.fields["tax"]) == ("84.00", "14.00")
    assert refunded_merchandise(event.fields["amount"], event.fields["tax"], prices_include_tax=True) == 70
    assert refunded_merchandise(event.fields["amount"], event.fields["tax"], prices_include_tax=False) == 84
    refund["refund_line_items"] = []  # the shipping alone
    [shipping] = shopify.parse("refunds/create", "evt-12", TRIGGERED, refund, MAPPING)
    assert (shipping.fields["amount"], shipping.fields["tax"]) == ("0.00", "0.00")
    # Earning on the total, the taxes earned too: nothing comes off.
    [total] = shopify.parse("refunds/create", "evt-13", TRIGGERED, load("shopify_refund"), ShopMapping(points_on="total"))
    assert "tax" not in total.fields


def test_a_refunds_merchandise_is_never_below_zero_and_a_bad_amount_is_one_sentence():
    assert refunded_merchandise("0.00", "0.40", prices_include_tax=True) == 0
    assert refunded_merchandise("12.5", "", prices_include_tax=True) == Decimal("12.50")
    with pytest.raises(PayloadProblem, match="^the refund's tax is not an amount$"):
        refunded_merchandise("10.00", "ten", prices_include_tax=True)


def test_a_refund_riding_on_an_order_update_is_the_same_refund():
    order = load("shopify_order")
    order["financial_status"] = "partially_refunded"
    order["refunds"] = [load("shopify_refund")]
    events = shopify.parse("orders/updated", "evt-10", TRIGGERED, order, MAPPING)
    assert [e.kind for e in events] == [EventKind.ORDER, EventKind.REFUND]
    assert events[1].fields["refund_id"] == "929361462" and events[1].fields["amount"] == "45.00"
    assert events[1].member_id == "115310627314723954"


def test_the_privacy_topics_name_the_customer_or_the_shop():
    [erase] = shopify.parse("customers/redact", "evt-11", TRIGGERED, load("shopify_customers_redact"), MAPPING)
    assert (erase.kind, erase.member_id) == (EventKind.ERASE_MEMBER, "115310627314723954")
    assert "email" not in erase.fields  # the request's personal data is not carried further
    [shop] = shopify.parse("shop/redact", "evt-12", TRIGGERED,
                           {"shop_id": 954889, "shop_domain": "tea-club.myshopify.com"}, MAPPING)
    assert shop.kind is EventKind.ERASE_SHOP


@pytest.mark.parametrize(("topic", "payload", "says"), [
    ("products/create", {}, "the topic 'products/create' is not one we subscribe to"),
    ("orders/create", [], "a orders/create payload must be a JSON object"),
    ("orders/create", {"id": None}, "the order's id is missing"),
    ("customers/update", {"id": 0}, "the customer's id is missing"),
])
def test_a_payload_that_means_nothing_is_one_sentence(topic, payload, says):
    with pytest.raises(PayloadProblem) as problem:
        shopify.parse(topic, "evt", TRIGGERED, payload, MAPPING)
    assert str(problem.value) == says


def test_an_unknown_financial_status_is_refused_not_guessed():
    order = load("shopify_order")
    order["financial_status"] = "something_new"
    with pytest.raises(PayloadProblem, match="financial_status 'something_new' is unknown"):
        shopify.parse("orders/paid", "evt", TRIGGERED, order, MAPPING)


# --- WooCommerce -----------------------------------------------------------------------------------

def test_a_woocommerce_order_earns_on_its_line_totals_and_carries_its_refunds():
    events = woocommerce.parse("order.updated", load("woocommerce_order"), MAPPING)
    order, refund = events
    assert order.dedup_key == "woocommerce:order:727:2026-11-06T08:00:00Z"  # resource, id, modification
    assert order.fields["total"] == "90.00" and order.fields["member_id"] == "26"
    assert OrderState(order.fields["state"]) is OrderState.PARTIALLY_REFUNDED
    # 57.50 of 115.00 refunded: half of the 90.00 the order earned on.
    assert refund.kind is EventKind.REFUND and refund.fields["amount"] == "45.00"
    assert refund.dedup_key == "woocommerce:refund:730"


def test_the_same_woocommerce_version_twice_has_one_key_and_a_new_version_another():
    first = woocommerce.parse("order.updated", load("woocommerce_order"), MAPPING)[0]
    again = woocommerce.parse("order.updated", copy.deepcopy(load("woocommerce_order")), MAPPING)[0]
    later = load("woocommerce_order")
    later["date_modified_gmt"] = "2026-11-07T08:00:00"
    assert first.dedup_key == again.dedup_key != woocommerce.parse("order.updated", later, MAPPING)[0].dedup_key


def test_a_woocommerce_customer_reads_birthday_and_consent_from_meta_data():
    [event] = woocommerce.parse("customer.updated", load("woocommerce_customer"),
                                ShopMapping(birthday_key="birthday"))
    assert event.fields["birthday"] == "--12-10" and event.fields["email_opt_in"] == "yes"
    assert "sms_opt_in" not in event.fields
    row = parse_member(event.fields, default_timezone="UTC", default_locale="en", today=date(2026, 11, 1))
    assert row.phone == "+33612345678"  # the French number, read in France's region
    assert row.email_opt_in


def test_a_woocommerce_guest_order_and_a_deletion():
    order = load("woocommerce_order")
    order["customer_id"] = 0
    [guest, _] = woocommerce.parse("order.created", order, MAPPING)
    assert guest.member_id is None and guest.member_email == "ada@example.com"
    [deleted] = woocommerce.parse("customer.deleted", {"id": 26}, MAPPING)
    assert deleted.kind is EventKind.MEMBER_DELETED and deleted.member_id == "26"


# --- PrestaShop ------------------------------------------------------------------------------------

FACTS = prestashop.ShopFacts(timezone="Europe/Paris", currencies={"1": "EUR"}, languages={"2": "fr"})


def test_a_prestashop_customer_reads_dates_in_the_shops_zone():
    event = prestashop.member_event(load("prestashop_customer"), MAPPING, FACTS)
    assert event.version_at == datetime(2026, 11, 1, 15, 10, tzinfo=UTC)  # 16:10 in Paris
    assert event.fields["locale"] == "fr" and event.fields["birthday"] == "1990-12-10"
    assert event.fields["email_opt_in"] == "true" and event.fields["email_consent_at"] == "2026-05-01T12:00:00Z"


def test_a_prestashop_order_earns_on_products_less_discounts_without_taxes():
    event = prestashop.order_event(load("prestashop_order"), MAPPING, FACTS)
    assert (event.fields["total"], event.fields["currency"]) == ("90.00", "EUR")
    assert OrderState(event.fields["state"]) is OrderState.PAID
    unknown = {**load("prestashop_order"), "id_currency": "9"}
    with pytest.raises(PayloadProblem, match="id_currency '9' is not a currency of the shop"):
        prestashop.order_event(unknown, MAPPING, FACTS)


def test_prestashops_empty_date_is_no_date():
    customer = {**load("prestashop_customer"), "birthday": "0000-00-00", "newsletter": "0",
                "newsletter_date_add": "0000-00-00 00:00:00"}
    event = prestashop.member_event(customer, MAPPING, FACTS)
    assert "birthday" not in event.fields and event.fields["email_opt_in"] == "false"


def test_a_country_with_several_zones_takes_the_stores():
    assert country_timezone("US", "America/New_York") == "America/New_York"
    assert country_timezone("fr", "UTC") == "Europe/Paris"
    assert country_timezone(None, "UTC") == "UTC"
