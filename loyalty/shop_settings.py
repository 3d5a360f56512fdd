"""The shop's part of the settings: webhook secrets, API keys, how its data is read, its admin API.

Read by :func:`loyalty.settings.load_settings` like every other variable (one sentence naming a
malformed one); see the README's "The shop" section for each variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from loyalty.errors import ConfigurationError
from shops.common import ShopMapping

MIN_SECRET = 16


@dataclass(frozen=True)
class ShopSettings:
    shopify_secrets: tuple[str, ...] = field(default=(), repr=False)  # SHOPIFY_WEBHOOK_SECRET (comma: rotation)
    woocommerce_secrets: tuple[str, ...] = field(default=(), repr=False)  # WOOCOMMERCE_WEBHOOK_SECRET
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # LOYALTY_API_KEYS
    mapping: ShopMapping = field(default_factory=ShopMapping)
    max_body_bytes: int = 1_000_000  # a webhook or API request larger than this is refused (413)


def _secrets(env: Mapping[str, str], name: str, what: str) -> tuple[str, ...]:
    raw = env.get(name) or ""
    values = tuple(part.strip() for part in raw.split(",") if part.strip())
    for value in values:
        if len(value) < MIN_SECRET:
            raise ConfigurationError(
                f"{name} holds a value shorter than {MIN_SECRET} characters; set it to {what}."
            )
    return values


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
    )
