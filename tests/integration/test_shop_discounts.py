"""Discount codes made in the three stand-ins through our admin-API clients (workers/shop_api/discounts.py):
made once whatever the faults, refused in one sentence, and honoured by the stand-ins' checkout only for
their customer, once, before their end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.shop_settings import PrestaShopAdmin, ShopifyAdmin, WooCommerceAdmin
from loyalty.standins.prestashop_server import PrestaShopServer
from loyalty.standins.shop_discounts import CheckoutRefused
from loyalty.standins.shopify_server import ShopifyServer
from loyalty.standins.woocommerce_server import WooCommerceServer
from workers.shop_api.discounts import Discount, PrestaShopDiscounts, ShopifyDiscounts, WooCommerceDiscounts
from workers.shop_api.http import ShopApiError

NOW = datetime.now(UTC).replace(microsecond=0)


def _discount(customer_id, email, code="BACK-M2G3SRVFIR", ends=NOW + timedelta(days=14)) -> Discount:
    return Discount(code=code, customer_id=str(customer_id), email=email, percent_off=Decimal("15"), amount_off=None,
                    currency="EUR", starts_at=NOW, ends_at=ends, title="Win-back 15%")


@pytest.fixture(params=["shopify", "woocommerce", "prestashop"])
def shop(request):
    if request.param == "shopify":
        server = ShopifyServer().start()
        admin = ShopifyAdmin("loyalty-demo.myshopify.com", server.access_token, "2026-01", server.url)
        client = ShopifyDiscounts(admin)
    elif request.param == "woocommerce":
        server = WooCommerceServer().start()
        client = WooCommerceDiscounts(WooCommerceAdmin(server.url, server.consumer_key, server.consumer_secret),
                                      "Europe/Paris")
    else:
        server = PrestaShopServer().start()
        client = PrestaShopDiscounts(PrestaShopAdmin(server.url, server.key), "Europe/Paris")
    try:
        ana = server.add_customer("ana@example.org", "Ana", "Martin")
        other = server.add_customer("bob@example.org", "Bob", "Durand")
        yield request.param, server, client, ana["id"], other["id"]
    finally:
        client.close()
        server.stop()


def _codes(server) -> int:
    return len(server.cart_rules) if hasattr(server, "cart_rules") else len(server.discounts.codes)


def test_a_code_is_made_once_and_works_once_for_its_customer_only(shop):
    name, server, client, ana, other = shop
    first = client.ensure(_discount(ana, "ana@example.org"))
    assert client.ensure(_discount(ana, "ana@example.org")) == first  # asked again: found, not made twice
    assert _codes(server) == 1
    with pytest.raises(CheckoutRefused):
        server.checkout(other, "BACK-M2G3SRVFIR")  # someone else's
    server.checkout(ana, "back-m2g3srvfir" if name == "woocommerce" else "BACK-M2G3SRVFIR")
    with pytest.raises(CheckoutRefused):
        server.checkout(ana, "BACK-M2G3SRVFIR")  # used
    with pytest.raises(CheckoutRefused):
        server.checkout(ana, "NOPE-0000000000")


def test_an_ended_code_is_refused_at_checkout(shop):
    _, server, client, ana, _ = shop
    client.ensure(_discount(ana, "ana@example.org", code="OLD-1", ends=NOW + timedelta(seconds=5)))
    with pytest.raises(CheckoutRefused, match="expired"):
        server.checkout(ana, "OLD-1", at=NOW + timedelta(days=1))


def test_a_create_whose_answer_is_lost_makes_one_code(shop):
    _, server, client, ana, _ = shop
    server.fail_request(2, "drop")  # the lookup answers; the create is made, then its connection closed
    found = client.ensure(_discount(ana, "ana@example.org"))
    assert _codes(server) == 1 and len(server.discounts.creates) == 1
    assert client.ensure(_discount(ana, "ana@example.org")) == found


def test_a_shop_that_fails_or_refuses_gives_one_sentence_and_no_code(shop):
    _, server, client, ana, _ = shop
    server.fail_request(2, "error:500")  # the create fails; the lookup after it finds nothing
    with pytest.raises(ShopApiError) as failed:
        client.ensure(_discount(ana, "ana@example.org"))
    assert "ana@" not in str(failed.value)
    server.discounts.refuse = True
    with pytest.raises(ShopApiError, match="refused"):
        client.ensure(_discount(ana, "ana@example.org", code="NEW-2"))
    assert _codes(server) == 0


@pytest.mark.parametrize(("version", "field"), [("2026-01", "context"), ("2025-07", "customerSelection")])
def test_shopify_versions_before_2025_10_name_the_customer_in_customer_selection(version, field):
    server = ShopifyServer().start()
    client = ShopifyDiscounts(ShopifyAdmin("loyalty-demo.myshopify.com", server.access_token, version, server.url))
    try:
        ana = server.add_customer("ana@example.org", "Ana", "Martin")
        client.ensure(_discount(ana["id"], "ana@example.org"))
        (entry,) = server.discounts.codes.values()
        assert entry.raw[field] == {"customers": {"add": [f"gid://shopify/Customer/{ana['id']}"]}}
        server.checkout(ana["id"], entry.code)
    finally:
        client.close()
        server.stop()


def test_a_throttled_shopify_says_so_and_a_later_try_makes_the_code_once():
    server = ShopifyServer().start()
    client = ShopifyDiscounts(ShopifyAdmin("loyalty-demo.myshopify.com", server.access_token, "2026-01", server.url))
    try:
        ana = server.add_customer("ana@example.org", "Ana", "Martin")
        server.throttle_next(1)
        with pytest.raises(ShopApiError, match="Shopify throttled the discount lookup; it will be tried again."):
            client.ensure(_discount(ana["id"], "ana@example.org"))
        client.ensure(_discount(ana["id"], "ana@example.org"))
        assert len(server.discounts.codes) == 1
    finally:
        client.close()
        server.stop()
