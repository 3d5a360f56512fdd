"""The shop's admin-API settings: all or none per platform, each malformed one a sentence naming it."""

from __future__ import annotations

import pytest

from core.errors import ConfigurationError
from core.shop_settings import parse_shop_settings


def parse(**env: str):
    return parse_shop_settings(env, "Europe/Paris")


def test_none_set_means_no_admin_api_and_a_ten_minute_poll():
    shop = parse()
    assert (shop.shopify, shop.woocommerce, shop.prestashop, shop.poll_minutes) == (None, None, None, 10)


def test_each_platform_read_with_its_defaults():
    shop = parse(SHOPIFY_SHOP_DOMAIN="Tea-Shop.myshopify.com", SHOPIFY_ADMIN_TOKEN="shpat_x",
                 WOOCOMMERCE_URL="https://shop.example/", WOOCOMMERCE_CONSUMER_KEY="ck", WOOCOMMERCE_CONSUMER_SECRET="cs",
                 PRESTASHOP_URL="https://ps.example", PRESTASHOP_WEBSERVICE_KEY="K" * 32, LOYALTY_SHOP_POLL_MINUTES="5")
    assert (shop.shopify.domain, shop.shopify.api_version, shop.shopify.base_url) == (
        "tea-shop.myshopify.com", "2026-01", "https://tea-shop.myshopify.com")
    assert shop.woocommerce.url == "https://shop.example" and shop.prestashop.key == "K" * 32
    assert shop.poll_minutes == 5
    assert "shpat_x" not in repr(shop) and "K" * 32 not in repr(shop)


@pytest.mark.parametrize("env, named", [
    ({"SHOPIFY_SHOP_DOMAIN": "tea.myshopify.com"}, "SHOPIFY_ADMIN_TOKEN"),
    ({"WOOCOMMERCE_URL": "https://shop.example", "WOOCOMMERCE_CONSUMER_KEY": "ck"}, "WOOCOMMERCE_CONSUMER_SECRET"),
    ({"PRESTASHOP_WEBSERVICE_KEY": "k"}, "PRESTASHOP_URL"),
    ({"SHOPIFY_SHOP_DOMAIN": "tea.com", "SHOPIFY_ADMIN_TOKEN": "t"}, "SHOPIFY_SHOP_DOMAIN 'tea.com'"),
    ({"SHOPIFY_SHOP_DOMAIN": "tea.myshopify.com", "SHOPIFY_ADMIN_TOKEN": "t", "SHOPIFY_API_VERSION": "v2"},
     "SHOPIFY_API_VERSION 'v2'"),
    ({"WOOCOMMERCE_URL": "shop.example", "WOOCOMMERCE_CONSUMER_KEY": "k", "WOOCOMMERCE_CONSUMER_SECRET": "s"},
     "WOOCOMMERCE_URL 'shop.example' is not a web address"),
    ({"LOYALTY_SHOP_POLL_MINUTES": "0"}, "LOYALTY_SHOP_POLL_MINUTES '0'"),
])
def test_a_malformed_or_partial_setting_is_one_sentence_naming_it(env, named):
    with pytest.raises(ConfigurationError) as error:
        parse(**env)
    message = str(error.value)
    assert named in message and message.endswith(".") and message.count(". ") == 0
