"""The stand-ins' discount codes (issue 14): what the three shops keep, and their checkout's rules.

Each stand-in holds a :class:`DiscountBook` (``shop.discounts``); its admin API writes to it
(Shopify ``discountCodeBasicCreate`` / ``codeDiscountNodeByCode``, WooCommerce ``POST``/``GET
/coupons``, PrestaShop ``POST``/``GET /api/cart_rules``) and its ``checkout(customer_id, code)``
accepts a code only if it exists (case-insensitively), is for that customer, is unused and has not
ended, then marks it used and places the order that carries it (whose webhook reports the code).

Faults: ``book.refuse = True`` makes the next creates a refusal (a validation error of the platform);
the admin API's ``fail_request(n, "drop")`` processes a create and closes the connection (the shop
has the code, the client never hears it), ``"timeout"`` holds it unanswered, ``"error:500"`` fails it.
Every create request is logged in ``book.creates`` with its wall-clock time (``time.time()``);
``book.after_create(entry)`` runs once a code is stored, before the answer (a test kills its client there).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus
from xml.etree import ElementTree

if TYPE_CHECKING:
    from loyalty.standins.shop_common import ShopClock


class CheckoutRefused(Exception):
    """The checkout rejected the code; the message says why, as the shop's cart would."""


@dataclass
class ShopCode:
    id: int
    code: str
    customer: str | None  # the shop's customer id, or the email it is restricted to
    percent_off: Decimal | None
    amount_off: Decimal | None
    ends_at: datetime | None
    usage_limit: int = 1
    used: int = 0
    created_at: float = field(default_factory=time.time)
    raw: dict[str, Any] = field(default_factory=dict)


class DiscountBook:
    def __init__(self, first_id: int = 1):
        self.codes: dict[str, ShopCode] = {}  # by lowercased code
        self.refuse = False
        self.creates: list[float] = []  # every create request's arrival (wall clock), refused ones included
        self.after_create: Any = None  # called with each new code, before the answer (e.g. to kill the client)
        self._next = first_id
        self._lock = threading.RLock()

    def find(self, code: str) -> ShopCode | None:
        with self._lock:
            return self.codes.get(code.lower())

    def add(self, code: str, **fields: Any) -> ShopCode | None:
        """The new code, or None if one with that code (any case) exists."""
        with self._lock:
            if code.lower() in self.codes:
                return None
            entry = ShopCode(self._next, code, **fields)
            self._next += 1
            self.codes[code.lower()] = entry
        if self.after_create is not None:
            self.after_create(entry)
        return entry

    def redeem(self, code: str, customer: str, now: datetime) -> ShopCode:
        """Check the code for ``customer`` at ``now`` and mark it used; :class:`CheckoutRefused` if not valid."""
        with self._lock:
            entry = self.codes.get(code.lower())
            if entry is None:
                raise CheckoutRefused(f'Coupon "{code}" does not exist!')
            if entry.customer is not None and entry.customer.lower() != customer.lower():
                raise CheckoutRefused("Sorry, this coupon is not applicable to your account.")
            if entry.used >= entry.usage_limit:
                raise CheckoutRefused("Coupon usage limit has been reached.")
            if entry.ends_at is not None and now >= entry.ends_at:
                raise CheckoutRefused("This coupon has expired.")
            entry.used += 1
            return entry

    def discount_on(self, entry: ShopCode, gross: Decimal) -> Decimal:
        if entry.percent_off is not None:
            return (gross * entry.percent_off / 100).quantize(Decimal("0.01"))
        return min(entry.amount_off or Decimal(0), gross)


def _money(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))


def gid(kind: str, number: int) -> str:
    return f"gid://shopify/{kind}/{number}"


class ShopifyDiscountsMixin:
    """The Shopify stand-in's discount mutations and queries (dispatched by root field) and checkout."""

    # what the stand-in it is mixed into has
    discounts: DiscountBook
    clock: ShopClock
    place_order: Callable[..., dict[str, Any]]

    def graphql_discountCodeBasicCreate(self, args: dict[str, Any]) -> tuple[dict[str, Any], int]:  # noqa: N802
        """TAKEN for an existing code (any case); ``discounts.refuse``: INVALID. The customer comes from
        ``context.customers.add`` (2025-10+) or ``customerSelection.customers.add``."""
        data = args.get("basicCodeDiscount") or {}
        self.discounts.creates.append(time.time())

        def refused(code: str, message: str, where: str = "code") -> tuple[dict[str, Any], int]:
            return {"codeDiscountNode": None, "userErrors": [
                {"field": ["basicCodeDiscount", where], "code": code, "message": message}]}, 10

        if self.discounts.refuse:
            return refused("INVALID", "Discount could not be created.", "base")
        selection = data.get("context") or data.get("customerSelection") or {}
        customers = (selection.get("customers") or {}).get("add") or []
        gets = (data.get("customerGets") or {}).get("value") or {}
        percent = gets.get("percentage")
        if not data.get("code") or len(customers) != 1 or (percent is None and not gets.get("discountAmount")):
            return refused("BLANK", "Code, one customer and a value are required.")
        if percent is not None and not 0 < float(percent) <= 1:
            return refused("VALUE_OUTSIDE_RANGE", "Value must be between 0.0 and 1.0")
        entry = self.discounts.add(
            data["code"], customer=customers[0],
            percent_off=_money(Decimal(str(percent)) * 100) if percent is not None else None,
            amount_off=_money(gets["discountAmount"]["amount"]) if percent is None else None,
            ends_at=datetime.fromisoformat(data["endsAt"]) if data.get("endsAt") else None,
            usage_limit=int(data.get("usageLimit") or 1), raw=data)
        if entry is None:
            return refused("TAKEN", "Code must be unique. Please try a different code.")
        return {"codeDiscountNode": {"id": gid("DiscountCodeNode", entry.id)}, "userErrors": []}, 10

    def graphql_codeDiscountNodeByCode(self, args: dict[str, Any]) -> tuple[dict[str, Any] | None, int]:  # noqa: N802
        entry = self.discounts.find(str(args.get("code") or ""))
        if entry is None:
            return None, 1
        return {"id": gid("DiscountCodeNode", entry.id), "codeDiscount": {
            "title": entry.raw.get("title"), "usageLimit": entry.usage_limit, "asyncUsageCount": entry.used,
            "endsAt": entry.raw.get("endsAt"), "codes": {"nodes": [{"code": entry.code}]}}}, 1

    def checkout(self, customer_id: int, code: str, items: Iterable[tuple[str, int, Any]] = (("Tea tin", 2, "50.00"),),
                 *, at: datetime | None = None) -> dict[str, Any]:
        """The storefront's checkout with a discount code: :class:`CheckoutRefused` unless the code exists,
        is this customer's, unused and not ended; else the code is used and the order placed (its
        ``discount_codes`` carry the code, as the orders webhooks report it)."""
        now = at or self.clock.now()
        entry = self.discounts.redeem(code, gid("Customer", customer_id), now)
        gross = sum((int(q) * _money(p) for _, q, p in items), Decimal(0))
        return self.place_order(customer_id, items, discount=self.discounts.discount_on(entry, gross),
                                discount_code=entry.code, at=at)



class WooCommerceDiscountsMixin:
    """``POST /coupons`` (400 ``woocommerce_rest_coupon_code_already_exists`` for an existing code, any
    case; codes stored lowercased, as ``wc_format_coupon_code`` does) and ``GET /coupons?code=``."""

    # what the stand-in it is mixed into has
    discounts: DiscountBook
    clock: ShopClock
    zone: tzinfo
    customers: dict[int, dict[str, Any]]
    place_order: Callable[..., dict[str, Any]]

    def coupons_api(self, method: str, parts: list[str], params: dict[str, str], body: bytes):  # noqa: ANN201
        from loyalty.standins.woocommerce_server import JSON, error, php_json

        if method == "GET" and len(parts) == 1:
            entry = self.discounts.find(params.get("code", "")) if params.get("code") else None
            found = [entry] if entry else ([] if params.get("code") else list(self.discounts.codes.values()))
            return 200, JSON, php_json([self._coupon(e) for e in found])
        if method != "POST" or len(parts) != 1:
            raise error(404, "rest_no_route", "No route was found matching the URL and request method.")
        self.discounts.creates.append(time.time())
        try:
            data = json.loads(body)
            code = str(data["code"]).strip().lower()
        except (ValueError, KeyError, TypeError):
            raise error(400, "woocommerce_rest_empty_coupon_code", "The coupon code cannot be empty.") from None
        if self.discounts.refuse:
            raise error(400, "rest_invalid_param", "Invalid parameter(s): discount_type")
        local = data.get("date_expires")
        ends = (datetime.fromisoformat(local).replace(tzinfo=self.zone).astimezone(UTC) if local else None)
        emails = [e.lower() for e in data.get("email_restrictions") or []]
        percent = data.get("discount_type") == "percent"
        entry = self.discounts.add(code, customer=emails[0] if len(emails) == 1 else None,
                                   percent_off=_money(data["amount"]) if percent else None,
                                   amount_off=None if percent else _money(data.get("amount") or 0), ends_at=ends,
                                   usage_limit=int(data.get("usage_limit") or 10**9), raw=data)
        if entry is None:
            raise error(400, "woocommerce_rest_coupon_code_already_exists", "The coupon code already exists")
        return 201, JSON, php_json(self._coupon(entry))

    def _coupon(self, entry: ShopCode) -> dict[str, Any]:
        return {**entry.raw, "id": entry.id, "code": entry.code, "usage_count": entry.used,
                "usage_limit": entry.usage_limit, "email_restrictions": [entry.customer] if entry.customer else []}

    def checkout(self, customer_id: int, code: str, items: Iterable[tuple[str, int, Any]] = (("Tea tin", 2, "50.00"),),
                 *, at: datetime | None = None) -> dict[str, Any]:
        """The cart with a coupon: :class:`CheckoutRefused` unless it exists, the customer's billing email is
        in its restrictions, it is under its usage limit and not expired; else the order is placed with the
        coupon in its ``coupon_lines``."""
        email = self.customers[customer_id]["billing"]["email"]
        entry = self.discounts.redeem(code, email, at or self.clock.now())
        gross = sum((int(q) * _money(p) for _, q, p in items), Decimal(0))
        return self.place_order(customer_id, items, discount=self.discounts.discount_on(entry, gross),
                                coupon=entry.code, at=at)


class PrestaShopDiscountsMixin:
    """``POST /api/cart_rules`` (XML, raw or as the ``xml=`` form field; a duplicate code is NOT refused,
    as in PrestaShop) and ``GET /api/cart_rules?filter[code]=[...]``."""

    # what the stand-in it is mixed into has
    discounts: DiscountBook
    clock: ShopClock
    zone: tzinfo
    cart_rules: list[dict[str, Any]]

    def cart_rules_api(self, method: str, params: dict[str, str], body: bytes):  # noqa: ANN201
        from loyalty.standins.prestashop_server import JSON, error

        if method == "GET":
            bracketed = re.fullmatch(r"\[(.*)\]", params.get("filter[code]", "[]"))
            if bracketed is None:
                raise error(400, 0, "Invalid filter: write it as filter[code]=[CODE]")
            wanted = bracketed.group(1).lower()
            rules = [r for r in self.cart_rules if not wanted or r["code"].lower() == wanted]
            return 200, JSON, (json.dumps({"cart_rules": rules}).encode() if rules else b"[]")
        self.discounts.creates.append(time.time())
        text = body.decode("utf-8")
        text = unquote_plus(text[4:]) if text.startswith("xml=") else text
        try:
            rule = ElementTree.fromstring(text).find("cart_rule")
        except ElementTree.ParseError:
            rule = None
        if rule is None:
            raise error(400, 127, "XML error: the body is not a prestashop document")
        fields = {child.tag: (child.text or "") for child in rule}
        if self.discounts.refuse or not fields.get("code") or not fields.get("date_to"):
            raise error(400, 93, "Validation error: \"code\" and \"date_to\" are required")
        ends = datetime.fromisoformat(fields["date_to"]).replace(tzinfo=self.zone).astimezone(UTC)
        percent = Decimal(fields.get("reduction_percent") or 0)
        record = {"id": len(self.cart_rules) + 1, **fields}
        self.cart_rules.append(record)
        self.discounts.add(f"{fields['code']}#{record['id']}", customer=fields.get("id_customer"),  # one per rule
                           percent_off=percent or None, amount_off=None if percent else
                           _money(fields.get("reduction_amount") or 0), ends_at=ends,
                           usage_limit=int(fields.get("quantity") or 1), raw=record)
        return 201, JSON, json.dumps({"cart_rule": record}).encode()

    def checkout(self, customer_id: int, code: str, *, at: datetime | None = None) -> dict[str, Any]:
        """The cart with a voucher: the first cart rule with that code (as ``CartRule::getIdByCode``) must be
        this customer's, have quantity left and not be past ``date_to``; its quantity is then used."""
        first = next((r for r in self.cart_rules if r["code"].lower() == code.lower()), None)
        if first is None:
            raise CheckoutRefused("This voucher does not exist.")
        entry = self.discounts.redeem(f"{first['code']}#{first['id']}", str(customer_id), at or self.clock.now())
        return entry.raw
