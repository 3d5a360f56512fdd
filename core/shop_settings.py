"""The shop's part of the settings: webhook secrets, API keys, how its data is read, its admin API.

Read by :func:`core.settings.load_settings` like every other variable (one sentence naming a
malformed one); see the README's "The shop" section for each variable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from core.errors import ConfigurationError

MIN_SECRET = 16


@dataclass(frozen=True)
class ShopMapping:
    """How a shop's data is read, from the shop's configuration (see the README's per-platform table)."""

    default_timezone: str = "UTC"  # the store's zone, for customers whose country has several
    birthday_key: str = "facts.birth_date"  # a Shopify metafield namespace.key, a meta_data key elsewhere
    points_on: str = "subtotal"  # "subtotal" (merchandise after discounts, no shipping nor taxes) or "total"


@dataclass(frozen=True)
class ShopSettings:
    shopify_secrets: tuple[str, ...] = field(default=(), repr=False)  # SHOPIFY_WEBHOOK_SECRET (comma: rotation)
    woocommerce_secrets: tuple[str, ...] = field(default=(), repr=False)  # WOOCOMMERCE_WEBHOOK_SECRET
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # LOYALTY_API_KEYS
    mapping: ShopMapping = field(default_factory=ShopMapping)
    max_body_bytes: int = 1_000_000  # a webhook or API request larger than this is refused (413)
    shopify: ShopifyAdmin | None = None  # the admin API, for `loyalty shop backfill shopify`
    woocommerce: WooCommerceAdmin | None = None  # REST v3: backfill and the clock's poll
    prestashop: PrestaShopAdmin | None = None  # Webservice: backfill and the clock's poll
    poll_minutes: int = 10  # LOYALTY_SHOP_POLL_MINUTES: the clock's poll of WooCommerce and PrestaShop


@dataclass(frozen=True)
class ShopifyAdmin:
    domain: str  # SHOPIFY_SHOP_DOMAIN: xxx.myshopify.com
    token: str = field(repr=False)  # SHOPIFY_ADMIN_TOKEN
    api_version: str = "2026-01"  # SHOPIFY_API_VERSION
    base_url: str = ""  # SHOPIFY_API_BASE_URL: https://{domain} unless set


@dataclass(frozen=True)
class WooCommerceAdmin:
    url: str  # WOOCOMMERCE_URL: the site, https://shop.example
    consumer_key: str = field(repr=False)
    consumer_secret: str = field(repr=False)


@dataclass(frozen=True)
class PrestaShopAdmin:
    url: str  # PRESTASHOP_URL: the shop, https://shop.example
    key: str = field(repr=False)  # PRESTASHOP_WEBSERVICE_KEY


def _secrets(env: Mapping[str, str], name: str, what: str) -> tuple[str, ...]:
    raw = env.get(name) or ""
    values = tuple(part.strip() for part in raw.split(",") if part.strip())
    for value in values:
        if len(value) < MIN_SECRET:
            raise ConfigurationError(
                f"{name} holds a value shorter than {MIN_SECRET} characters; set it to {what}."
            )
    return values


def _all_or_none(env: Mapping[str, str], names: tuple[str, ...], what: str) -> dict[str, str] | None:
    values = {name: (env.get(name) or "").strip() for name in names}
    given = [name for name, value in values.items() if value]
    if not given:
        return None
    if missing := [name for name in names if not values[name]]:
        raise ConfigurationError(f"{', '.join(given)} set without {', '.join(missing)}; {what} needs all of "
                                 f"{', '.join(names)} (or none of them).")
    return values


def _url(env_name: str, value: str, example: str) -> str:
    parsed = urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.query or parsed.fragment:
        raise ConfigurationError(f"{env_name} {value!r} is not a web address; set it to the shop's address, "
                                 f"like {example}.")
    return value.rstrip("/")


def _shopify(env: Mapping[str, str]) -> ShopifyAdmin | None:
    values = _all_or_none(env, ("SHOPIFY_SHOP_DOMAIN", "SHOPIFY_ADMIN_TOKEN"), "the Shopify backfill")
    if values is None:
        return None
    domain = values["SHOPIFY_SHOP_DOMAIN"].lower().removeprefix("https://").rstrip("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*\.myshopify\.com", domain):
        raise ConfigurationError(f"SHOPIFY_SHOP_DOMAIN {values['SHOPIFY_SHOP_DOMAIN']!r} is not a shop's "
                                 "myshopify.com domain; set it like your-shop.myshopify.com.")
    version = (env.get("SHOPIFY_API_VERSION") or "2026-01").strip()
    if not re.fullmatch(r"20\d\d-(01|04|07|10)|unstable", version):
        raise ConfigurationError(f"SHOPIFY_API_VERSION {version!r} is not a Shopify API version; set it like 2026-01.")
    base = (env.get("SHOPIFY_API_BASE_URL") or "").strip()
    base = _url("SHOPIFY_API_BASE_URL", base, "https://your-shop.myshopify.com") if base else f"https://{domain}"
    return ShopifyAdmin(domain, values["SHOPIFY_ADMIN_TOKEN"], version, base)


def _woocommerce(env: Mapping[str, str]) -> WooCommerceAdmin | None:
    names = ("WOOCOMMERCE_URL", "WOOCOMMERCE_CONSUMER_KEY", "WOOCOMMERCE_CONSUMER_SECRET")
    values = _all_or_none(env, names, "the WooCommerce backfill and poll")
    if values is None:
        return None
    return WooCommerceAdmin(_url("WOOCOMMERCE_URL", values["WOOCOMMERCE_URL"], "https://shop.example"),
                            values["WOOCOMMERCE_CONSUMER_KEY"], values["WOOCOMMERCE_CONSUMER_SECRET"])


def _prestashop(env: Mapping[str, str]) -> PrestaShopAdmin | None:
    values = _all_or_none(env, ("PRESTASHOP_URL", "PRESTASHOP_WEBSERVICE_KEY"), "the PrestaShop backfill and poll")
    if values is None:
        return None
    return PrestaShopAdmin(_url("PRESTASHOP_URL", values["PRESTASHOP_URL"], "https://shop.example"),
                           values["PRESTASHOP_WEBSERVICE_KEY"])


def _poll_minutes(env: Mapping[str, str]) -> int:
    raw = (env.get("LOYALTY_SHOP_POLL_MINUTES") or "10").strip()
    if not raw.isdigit() or not 1 <= int(raw) <= 1440:
        raise ConfigurationError(f"LOYALTY_SHOP_POLL_MINUTES {raw!r} is not a number of minutes from 1 to 1440.")
    return int(raw)


def parse_shop_settings(env: Mapping[str, str], default_timezone: str) -> ShopSettings:
    points_on = (env.get("LOYALTY_SHOP_POINTS_ON") or "subtotal").strip().lower()
    if points_on not in ("subtotal", "total"):
        raise ConfigurationError(
            f"LOYALTY_SHOP_POINTS_ON {points_on!r} is not subtotal or total; subtotal earns on the "
            "merchandise after discounts, without shipping and taxes."
        )
    birthday_key = (env.get("LOYALTY_SHOP_BIRTHDAY_KEY") or "facts.birth_date").strip()
    if not birthday_key or len(birthday_key) > 100:
        raise ConfigurationError("LOYALTY_SHOP_BIRTHDAY_KEY must name a metafield (namespace.key) or a meta_data key.")
    return ShopSettings(
        shopify_secrets=_secrets(env, "SHOPIFY_WEBHOOK_SECRET",
                                 "the app's client secret (Shopify signs webhooks with it)"),
        woocommerce_secrets=_secrets(env, "WOOCOMMERCE_WEBHOOK_SECRET",
                                     "the secret typed in WooCommerce > Settings > Advanced > Webhooks"),
        api_keys=_secrets(env, "LOYALTY_API_KEYS", "comma-separated random keys (openssl rand -hex 24)"),
        mapping=ShopMapping(default_timezone=default_timezone, birthday_key=birthday_key, points_on=points_on),
        shopify=_shopify(env), woocommerce=_woocommerce(env), prestashop=_prestashop(env),
        poll_minutes=_poll_minutes(env),
    )
