"""Single-use discount codes for one customer, created in the shop (docs/shop-platforms.md §2.5, §3.4, §4.5).

:func:`ensure` makes sure the shop has the code and answers its id there. It is idempotent by the
code: it looks the code up first, creates it only when absent, and after a create that got no
answer (a time-out, a dropped connection, a 5xx: the shop may have made it) it looks it up again
rather than sending a second create. A create is never retried blindly, so a code is made at most
once; PrestaShop, which does not refuse a duplicate code, relies on that lookup.

Errors: :class:`workers.shop_api.http.ShopApiError`, one sentence without personal data, when the
shop refuses the code or cannot be reached; nothing the caller sends may carry the code then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

import httpx

from core.shop_settings import PrestaShopAdmin, ShopifyAdmin, ShopSettings, WooCommerceAdmin
from shops.common import iso
from workers.shop_api.http import Api, ShopApiError
from workers.shop_api.shopify import _code

# A create is asked once; after a failure the code is looked up, never created a second time blindly.
NO_RETRY: tuple[float, ...] = ()


@dataclass(frozen=True)
class Discount:
    code: str
    customer_id: str  # the shop's customer id (the member's external id)
    email: str | None  # WooCommerce restricts by billing email
    percent_off: Decimal | None  # 15 for 15 %, or
    amount_off: Decimal | None  # a fixed amount in ``currency``
    currency: str
    starts_at: datetime
    ends_at: datetime
    title: str


class NotShopCustomer(ShopApiError):
    """The member cannot get a code in this shop (not one of its customers, no email): asking again
    will not help."""


class DiscountShop(Protocol):
    platform: str

    def ensure(self, discount: Discount) -> str: ...

    def close(self) -> None: ...


REFUSALS = tuple(status for status in range(400, 500) if status not in (401, 403, 429))


def _send(api: Api, method: str, path: str, **options: Any) -> httpx.Response | None:
    """The shop's answer to a create (a 4xx refusal included), or None when it gave none that can be
    trusted (a time-out, a dropped connection, a 5xx: the shop may have made the code). A refused key
    is then met again by the lookup that follows, which says so."""
    try:
        return api.request(method, path, accept=REFUSALS, **options)
    except ShopApiError:
        return None


def _json(response: httpx.Response | None) -> Any:
    if response is None:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _customer_number(discount: Discount, shop: str) -> str:
    if not discount.customer_id.isdigit():
        raise NotShopCustomer(f"The member is not a {shop} customer (their id is not the shop's); "
                              "a code restricted to them cannot be made there.")
    return discount.customer_id


class ShopifyDiscounts:
    platform = "shopify"
    CREATE = ("mutation Create($input: DiscountCodeBasicInput!) { discountCodeBasicCreate(basicCodeDiscount: $input) "
              "{ codeDiscountNode { id } userErrors { field code message } } }")
    FIND = "query Find($code: String!) { codeDiscountNodeByCode(code: $code) { id } }"

    def __init__(self, admin: ShopifyAdmin, **api: Any):
        self.path = f"/admin/api/{admin.api_version}/graphql.json"
        # 2025-10 replaced customerSelection (same shape) by context; older versions know only the former.
        self.eligibility = "customerSelection" if admin.api_version < "2025-10" else "context"
        self.api = Api("Shopify", admin.base_url, "SHOPIFY_ADMIN_TOKEN (an Admin API access token with "
                       "read_discounts and write_discounts)", headers={"X-Shopify-Access-Token": admin.token},
                       **{"waits": NO_RETRY, **api})

    def close(self) -> None:
        self.api.close()

    def _find(self, code: str) -> str | None:
        answer = self.api.json("POST", self.path, json={"query": self.FIND, "variables": {"code": code}})
        node = ((answer or {}).get("data") or {}).get("codeDiscountNodeByCode") if isinstance(answer, dict) else None
        if isinstance(answer, dict) and answer.get("errors"):
            if _code(answer["errors"]) == "THROTTLED":
                raise ShopApiError("Shopify throttled the discount lookup; it will be tried again.")
            raise ShopApiError("Shopify refused the discount lookup; check the token's read_discounts scope.")
        return node.get("id") if isinstance(node, dict) else None

    def ensure(self, discount: Discount) -> str:
        if (found := self._find(discount.code)) is not None:
            return found
        value: dict[str, Any] = ({"percentage": float(discount.percent_off / 100)} if discount.percent_off is not None
                                 else {"discountAmount": {"amount": str(discount.amount_off), "appliesOnEachItem": False}})
        payload = {"title": discount.title, "code": discount.code, "startsAt": iso(discount.starts_at),
                   "endsAt": iso(discount.ends_at), "usageLimit": 1, "appliesOncePerCustomer": True,
                   self.eligibility: {"customers": {"add": [
                       f"gid://shopify/Customer/{_customer_number(discount, 'Shopify')}"]}},
                   "customerGets": {"value": value, "items": {"all": True}},
                   "combinesWith": {"orderDiscounts": False, "productDiscounts": False, "shippingDiscounts": True}}
        answer = _json(_send(self.api, "POST", self.path, json={"query": self.CREATE, "variables": {"input": payload}}))
        result = ((answer or {}).get("data") or {}).get("discountCodeBasicCreate") if isinstance(answer, dict) else None
        if isinstance(result, dict):
            node, errors = result.get("codeDiscountNode"), result.get("userErrors") or []
            if isinstance(node, dict) and node.get("id"):
                return node["id"]
            if not any(isinstance(e, dict) and e.get("code") == "TAKEN" for e in errors):
                codes = ", ".join(sorted({str(e.get("code")) for e in errors if isinstance(e, dict)})) or "no reason"
                raise ShopApiError(f"Shopify refused the discount code ({codes}); check the token's write_discounts "
                                   "scope and the campaign's coupon.")
        if (found := self._find(discount.code)) is not None:  # made by the unanswered request, or TAKEN
            return found
        raise ShopApiError("Shopify did not confirm the discount code; it will be tried again.")


class WooCommerceDiscounts:
    platform = "woocommerce"
    PATH = "/wp-json/wc/v3/coupons"

    def __init__(self, admin: WooCommerceAdmin, timezone: str, **api: Any):
        self.zone = ZoneInfo(timezone)
        self.api = Api("WooCommerce", admin.url, "WOOCOMMERCE_CONSUMER_KEY and WOOCOMMERCE_CONSUMER_SECRET "
                       "(a REST API key with Read/Write access)",
                       auth=(admin.consumer_key, admin.consumer_secret), **{"waits": NO_RETRY, **api})

    def close(self) -> None:
        self.api.close()

    def _find(self, code: str) -> str | None:
        found = self.api.json("GET", self.PATH, params={"code": code})
        for coupon in found if isinstance(found, list) else []:
            if isinstance(coupon, dict) and str(coupon.get("code", "")).lower() == code.lower():
                return str(coupon.get("id"))
        return None

    def ensure(self, discount: Discount) -> str:
        if (found := self._find(discount.code)) is not None:
            return found
        percent = discount.percent_off is not None
        body = {"code": discount.code, "discount_type": "percent" if percent else "fixed_cart",
                "amount": str(discount.percent_off if percent else discount.amount_off),
                "individual_use": True, "usage_limit": 1, "usage_limit_per_user": 1,
                "email_restrictions": [discount.email] if discount.email else [],
                "date_expires": discount.ends_at.astimezone(self.zone).strftime("%Y-%m-%dT%H:%M:%S"),
                "description": discount.title}
        if not discount.email:
            raise NotShopCustomer("The member has no email address; WooCommerce cannot restrict a code to them.")
        response = _send(self.api, "POST", self.PATH, json=body)
        if response is not None and response.status_code < 300:
            try:
                return str(response.json()["id"])
            except (ValueError, KeyError, TypeError):
                pass
        elif response is not None:
            reason = (_json(response) or {}).get("code") if isinstance(_json(response), dict) else None
            if reason != "woocommerce_rest_coupon_code_already_exists":
                raise ShopApiError(f"WooCommerce refused the coupon ({reason or response.status_code}); check the "
                                   "campaign's coupon and the key's Write access.")
        if (found := self._find(discount.code)) is not None:
            return found
        raise ShopApiError("WooCommerce did not confirm the coupon; it will be tried again.")


class PrestaShopDiscounts:
    platform = "prestashop"
    PATH = "/api/cart_rules"

    def __init__(self, admin: PrestaShopAdmin, timezone: str, **api: Any):
        self.zone = ZoneInfo(timezone)
        self.api = Api("PrestaShop", admin.url, "PRESTASHOP_WEBSERVICE_KEY (a Webservice key allowed GET and POST "
                       "on cart_rules)", auth=(admin.key, ""), **{"waits": NO_RETRY, **api})

    def close(self) -> None:
        self.api.close()

    def _find(self, code: str) -> str | None:
        answer = self.api.json("GET", self.PATH, params={"output_format": "JSON", "filter[code]": f"[{code}]",
                                                         "display": "[id,code]"})
        rules = answer.get("cart_rules") if isinstance(answer, dict) else None
        for rule in rules if isinstance(rules, list) else []:
            if isinstance(rule, dict) and str(rule.get("code", "")).lower() == code.lower():
                return str(rule.get("id"))
        return None

    def ensure(self, discount: Discount) -> str:
        if (found := self._find(discount.code)) is not None:
            return found
        local = lambda moment: moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S")  # noqa: E731
        reduction = (f"<reduction_percent>{discount.percent_off}</reduction_percent>"
                     if discount.percent_off is not None else
                     f"<reduction_amount>{discount.amount_off}</reduction_amount><reduction_tax>1</reduction_tax>")
        xml = ("<prestashop><cart_rule>"
               f"<id_customer>{_customer_number(discount, 'PrestaShop')}</id_customer>"
               f"<date_from>{local(discount.starts_at)}</date_from><date_to>{local(discount.ends_at)}</date_to>"
               f"<name><language id=\"1\">{escape(discount.title)}</language></name>"
               f"<code>{escape(discount.code)}</code><quantity>1</quantity><quantity_per_user>1</quantity_per_user>"
               f"{reduction}<active>1</active></cart_rule></prestashop>")
        response = _send(self.api, "POST", self.PATH, params={"output_format": "JSON"}, content=xml.encode(),
                         headers={"Content-Type": "application/xml"})
        if response is not None and response.status_code >= 400:
            raise ShopApiError(f"PrestaShop refused the cart rule ({response.status_code}); check the campaign's "
                               "coupon and that the Webservice key may POST cart_rules.")
        answer = _json(response)
        rule = answer.get("cart_rule") if isinstance(answer, dict) else None
        if isinstance(rule, dict) and rule.get("id"):
            return str(rule["id"])
        if (found := self._find(discount.code)) is not None:
            return found
        raise ShopApiError("PrestaShop did not confirm the cart rule; it will be tried again.")


def shop_for(shop: ShopSettings, timezone: str, **api: Any) -> DiscountShop | None:
    """The configured shop's discounts (Shopify first, then WooCommerce, then PrestaShop), or None
    when no shop's admin API is set: codes are then recorded for ``loyalty coupons export``."""
    if shop.shopify is not None:
        return ShopifyDiscounts(shop.shopify, **api)
    if shop.woocommerce is not None:
        return WooCommerceDiscounts(shop.woocommerce, timezone, **api)
    if shop.prestashop is not None:
        return PrestaShopDiscounts(shop.prestashop, timezone, **api)
    return None
