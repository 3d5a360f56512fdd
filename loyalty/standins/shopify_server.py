"""A local stand-in for a Shopify store: its webhooks and its GraphQL Admin API (docs/shop-platforms.md §2).

The store (Python methods, each returns the REST resource as a webhook carries it)::

    shop = ShopifyServer(webhook_url="http://127.0.0.1:8000/webhooks/shopify").start()
    ana = shop.add_customer("ana@example.org", "Ana", "Martin", phone="+33612345678")
    order = shop.place_order(ana["id"], [("Tea tin", 2, "50.00")], discount="10.00", shipping="7.00")
    shop.refund(order["id"], {order["line_items"][0]["id"]: 1})      # partial: one tin of two
    shop.update_customer(ana["id"], email_consent="unsubscribed")

Webhooks: each change fires its topics to every subscription that has them (``orders/create`` and
``orders/paid`` for a paid order; ``refunds/create`` and ``orders/updated`` for a refund;
``customers/create|update``; ``orders/paid`` and ``orders/updated`` through :meth:`mark_paid`;
``orders/cancelled``; privacy topics through :meth:`request_redact`,
:meth:`request_data`, :meth:`redact_shop`). Body: compact JSON of the REST resource, frozen when the
event fired (retries carry it unchanged). Headers: ``X-Shopify-Topic``, ``-Hmac-Sha256`` (base64
HMAC-SHA256 of those bytes with ``secret``), ``-Shop-Domain``, ``-API-Version``, ``-Webhook-Id`` (one
per subscription and event, kept by retries and duplicates), ``-Event-Id`` (one per event, same on
every subscription), ``-Triggered-At``, ``-Name`` (if the subscription has one). Client: 1 s to
connect, ``webhook_timeout`` (5 s) to answer; any non-2xx, time-out or connection error is retried
after each of ``retry_delays`` (8 of them, compressed from Shopify's 4 hours: default 10 ms doubling).
Faults: see :mod:`loyalty.standins.shop_common` (``webhook_faults``, ``held()``).

Admin API: ``POST /admin/api/{version}/graphql.json`` with ``X-Shopify-Access-Token: access_token``;
queries understood: :mod:`loyalty.standins.shopify_graphql`. Every answer has ``extensions.cost`` from a
leaky bucket (``bucket_size`` 2000, ``restore_rate`` 100/s); a query costing more than is available,
or one of the next N after :meth:`throttle_next`, answers ``errors[0].extensions.code == "THROTTLED"``
(HTTP 200). ``read_all_orders=False``: orders created more than 60 days ago are invisible, as without
that scope. Several aliased mutations in one request (``tagsAdd``, ``tagsRemove``, ``metafieldsSet`` at
most 25 and atomic, ``metafieldsDelete``) run in order, 10 points each, each logged in :attr:`mutations`;
a tag change moves the customer's ``updated_at`` and fires ``customers/update``. A wrong token: 401
``{"errors": "[API] Invalid API key or access token ..."}``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from loyalty.standins import shopify_graphql as gql
from loyalty.standins.shop_common import ApiError, Delivery, ShopServer
from loyalty.standins.shop_discounts import DiscountBook, ShopifyDiscountsMixin
from shops.signatures import body_signature

API_VERSION = "2026-01"
ORDER_TOPICS = ("orders/create", "orders/paid", "orders/updated", "orders/cancelled", "refunds/create")
CUSTOMER_TOPICS = ("customers/create", "customers/update")
PRIVACY_TOPICS = ("customers/data_request", "customers/redact", "shop/redact")
DEFAULT_TOPICS = ORDER_TOPICS + CUSTOMER_TOPICS + PRIVACY_TOPICS
CENT = Decimal("0.01")
JSON = [(b"content-type", b"application/json; charset=utf-8")]


def money(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass
class Subscription:
    url: str
    topics: frozenset[str]
    name: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


_RETRY_DELAYS = tuple(0.01 * 2 ** i for i in range(8))


class ShopifyServer(ShopifyDiscountsMixin, ShopServer):
    name = "shopify"

    def __init__(self, webhook_url: str | None = None, *, secret: str = "shpss_test_secret",
                 access_token: str = "shpat_test_token", shop_domain: str = "loyalty-demo.myshopify.com",
                 shop_id: int = 81234567, api_version: str = API_VERSION, currency: str = "EUR",
                 timezone: str = "Europe/Paris", retry_delays: Sequence[float] = _RETRY_DELAYS,
                 webhook_timeout: float = 5.0, bucket_size: float = 2000.0, restore_rate: float = 100.0,
                 birthday_metafield: str = "facts.birth_date", read_all_orders: bool = True, **base: Any):
        self.secret, self.access_token, self.shop_domain, self.shop_id = secret, access_token, shop_domain, shop_id
        self.api_version, self.currency, self.zone = api_version, currency, ZoneInfo(timezone)
        self.retry_delays, self.webhook_timeout = tuple(retry_delays), webhook_timeout
        self.bucket = gql.CostBucket(bucket_size, restore_rate)
        self.birthday_metafield, self.read_all_orders = birthday_metafield, read_all_orders
        self.subscriptions: list[Subscription] = []
        self.customers: dict[int, dict[str, Any]] = {}
        self.orders: dict[int, dict[str, Any]] = {}
        self._throttle_next = 0
        self.discounts = DiscountBook(first_id=1180000000000)  # issue 14: codes made through the admin API
        self.mutations: list[tuple[str, dict[str, Any]]] = []  # (root field, arguments) of each one run
        self._ids = {"customer": 7300000000000, "order": 6100000000000, "line": 15000000000000, "refund": 930000000000}
        super().__init__(**base)
        if webhook_url:
            self.subscribe(webhook_url)

    # -- the store ---------------------------------------------------------------------------------
    def subscribe(self, url: str, topics: Iterable[str] = DEFAULT_TOPICS, name: str | None = None) -> Subscription:
        sub = Subscription(url, frozenset(topics), name)
        self.subscriptions.append(sub)
        return sub

    def _next(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind]

    def _time(self, moment: datetime) -> str:
        return moment.astimezone(self.zone).isoformat(timespec="seconds")

    def _consent(self, state: str, at: str, sms: bool = False) -> dict[str, Any]:
        consent = {"state": state, "opt_in_level": "single_opt_in",
                   "consent_updated_at": None if state == "not_subscribed" else at}
        return {**consent, "consent_collected_from": "OTHER"} if sms else consent

    def add_customer(self, email: str | None, first_name: str = "", last_name: str = "", *, phone: str | None = None,
                     country: str | None = "FR", email_consent: str = "subscribed",
                     sms_consent: str = "not_subscribed", tags: Iterable[str] = (), birthday: str | None = None,
                     locale: str | None = None, at: datetime | None = None) -> dict[str, Any]:
        """A new customer (``customers/create``). Consent states: subscribed, not_subscribed, unsubscribed, pending."""
        with self._lock:
            when = self._time(self.clock.tick(at))
            cid = self._next("customer")
            customer = {
                "id": cid, "admin_graphql_api_id": gql.gid("Customer", cid), "email": email,
                "first_name": first_name, "last_name": last_name, "phone": phone, "state": "enabled",
                "verified_email": True, "tags": ", ".join(tags), "currency": self.currency, "note": None,
                "locale": locale, "created_at": when, "updated_at": when,
                "email_marketing_consent": self._consent(email_consent, when),
                "sms_marketing_consent": self._consent(sms_consent, when, sms=True),
                "default_address": {"id": cid + 1, "country_code": country, "city": "Lyon", "phone": phone,
                                    "default": True} if country else None,
                "metafields": [],
            }
            self._set_birthday(customer, birthday)
            self.customers[cid] = customer
        self._publish("customers/create", customer, when)
        return json.loads(json.dumps(customer))

    def _set_birthday(self, customer: dict[str, Any], birthday: str | None) -> None:
        if birthday is not None:
            namespace, _, key = self.birthday_metafield.partition(".")
            kept = [m for m in customer["metafields"] if (m["namespace"], m["key"]) != (namespace, key)]
            customer["metafields"] = kept
            customer["metafields"].append({"namespace": namespace, "key": key, "value": birthday, "type": "date"})

    def update_customer(self, customer_id: int, *, at: datetime | None = None, **changes: Any) -> dict[str, Any]:
        """Change fields (``email``, ``first_name``, ``last_name``, ``phone``, ``country``, ``email_consent``,
        ``sms_consent``, ``tags``, ``birthday``, ``locale``); fires ``customers/update``."""
        with self._lock:
            customer = self.customers[customer_id]
            when = self._time(self.clock.tick(at))
            for name, value in changes.items():
                if name in ("email_consent", "sms_consent"):
                    channel = name.split("_")[0]
                    customer[f"{channel}_marketing_consent"] = self._consent(value, when, sms=channel == "sms")
                elif name == "country":
                    customer["default_address"] = {**(customer["default_address"] or {}), "country_code": value}
                elif name == "tags":
                    customer["tags"] = ", ".join(value)
                elif name == "birthday":
                    self._set_birthday(customer, value)
                elif name in ("email", "first_name", "last_name", "phone", "locale"):
                    customer[name] = value
                else:
                    raise ValueError(f"update_customer does not know the field {name!r}")
            customer["updated_at"] = when
        self._publish("customers/update", customer, when)
        return json.loads(json.dumps(customer))

    def _set(self, amount: Decimal) -> dict[str, Any]:
        text = str(money(amount))
        return {"shop_money": {"amount": text, "currency_code": self.currency},
                "presentment_money": {"amount": text, "currency_code": self.currency}}

    def place_order(self, customer_id: int | None, items: Iterable[tuple[str, int, Any]] = (("Tea tin", 2, "50.00"),),
                    *, email: str | None = None, discount: Any = "0.00", shipping: Any = "0.00",
                    tax_rate: Any = "0.20", taxes_included: bool = False, financial_status: str = "paid",
                    discount_code: str | None = None, test: bool = False, locale: str | None = None,
                    at: datetime | None = None) -> dict[str, Any]:
        """An order of ``(title, quantity, unit price)`` lines; ``customer_id`` None is a guest (give ``email``).
        ``discount`` is spread over the lines by value; taxes at ``tax_rate`` on each line after discount,
        included in the prices when ``taxes_included``. Fires ``orders/create`` (and ``orders/paid`` if paid)."""
        with self._lock:
            moment = self.clock.tick(at)
            when, oid = self._time(moment), self._next("order")
            rate, discount = Decimal(str(tax_rate)), money(discount)
            lines = [(title, int(qty), money(price)) for title, qty, price in items]
            gross = sum((qty * price for _, qty, price in lines), Decimal(0))
            line_items: list[dict[str, Any]] = []
            left = discount
            for index, (title, qty, price) in enumerate(lines):
                share = (left if index == len(lines) - 1
                         else money(discount * qty * price / gross) if gross else Decimal(0))
                left -= share
                after = qty * price - share
                tax = money(after * rate / (1 + rate) if taxes_included else after * rate)
                line_items.append({
                    "id": self._next("line"), "title": title, "quantity": qty, "price": str(price),
                    "total_discount": "0.00",
                    "discount_allocations": [{"amount": str(money(share)), "discount_application_index": 0,
                                              "amount_set": self._set(share)}] if share else [],
                    "tax_lines": [{"title": "VAT", "rate": float(rate), "price": str(tax),
                                   "price_set": self._set(tax)}],
                })
            customer = self.customers[customer_id] if customer_id is not None else None
            subtotal, taxes, ship = gross - discount, sum((Decimal(li["tax_lines"][0]["price"]) for li in line_items),
                                                          Decimal(0)), money(shipping)
            total = subtotal + ship + (0 if taxes_included else taxes)
            order = {
                "id": oid, "admin_graphql_api_id": gql.gid("Order", oid), "name": f"#{oid % 100000}",
                "order_number": oid % 100000, "email": email or (customer or {}).get("email"),
                "created_at": when, "processed_at": when, "updated_at": when, "cancelled_at": None,
                "cancel_reason": None, "financial_status": financial_status, "currency": self.currency,
                "presentment_currency": self.currency, "taxes_included": taxes_included, "test": test,
                "customer_locale": locale, "total_line_items_price": str(money(gross)),
                "total_discounts": str(discount), "subtotal_price": str(money(subtotal)),
                "current_subtotal_price": str(money(subtotal)), "total_tax": str(money(taxes)),
                "total_price": str(money(total)), "current_total_price": str(money(total)),
                "subtotal_price_set": self._set(subtotal), "current_subtotal_price_set": self._set(subtotal),
                "total_price_set": self._set(total), "total_tax_set": self._set(taxes),
                "total_shipping_price_set": self._set(ship), "total_discounts_set": self._set(discount),
                "discount_codes": [{"code": discount_code, "amount": str(discount), "type": "fixed_amount"}]
                if discount_code else [],
                "customer": {k: customer[k] for k in ("id", "email", "first_name", "last_name", "phone", "tags",
                                                      "email_marketing_consent")} if customer else None,
                "line_items": line_items, "refunds": [],
            }
            self.orders[oid] = order
        self._publish("orders/create", order, when)
        if financial_status == "paid":
            self._publish("orders/paid", order, when)
        return json.loads(json.dumps(order))

    def refund(self, order_id: int, lines: dict[int, int] | None = None, *, shipping: bool = False,
               note: str = "", at: datetime | None = None) -> dict[str, Any]:
        """Refund ``{line_item_id: quantity}`` (default: everything not yet refunded; ``{}``: no line) at each
        line's price after discount, and with ``shipping`` the order's shipping not yet refunded (its
        ``refund_shipping_lines``, API 2024-10 on). Each refund line's ``subtotal`` is that price, taxes
        included when the order's prices include them (``taxes_included``), its taxes in ``total_tax``; the
        transaction is the money paid back. The order is ``refunded`` once its lines and its shipping are all
        given back. Fires ``refunds/create`` (the Refund) then ``orders/updated``."""
        with self._lock:
            order = self.orders[order_id]
            when = self._time(self.clock.tick(at))
            done = {li["id"]: 0 for li in order["line_items"]}
            for old in order["refunds"]:
                for rli in old["refund_line_items"]:
                    done[rli["line_item_id"]] += rli["quantity"]
            if lines is None:
                lines = {li["id"]: li["quantity"] - done[li["id"]] for li in order["line_items"]}
            if unknown := set(lines) - set(done):
                raise ValueError(f"order {order_id} has no line item {sorted(unknown)}")
            refund_lines, subtotal, taxes = [], Decimal(0), Decimal(0)
            for li in order["line_items"]:
                qty = lines.get(li["id"], 0)
                if not qty:
                    continue
                if qty + done[li["id"]] > li["quantity"]:
                    raise ValueError(f"line {li['id']} has only {li['quantity'] - done[li['id']]} left to refund")
                share = sum((Decimal(a["amount"]) for a in li["discount_allocations"]), Decimal(0))
                part = money((li["quantity"] * Decimal(li["price"]) - share) * qty / li["quantity"])
                tax = money(Decimal(li["tax_lines"][0]["price"]) * qty / li["quantity"])
                subtotal, taxes = subtotal + part, taxes + tax
                refund_lines.append({"id": self._next("line"), "line_item_id": li["id"], "quantity": qty,
                                     "restock_type": "return", "subtotal": str(part), "total_tax": str(tax),
                                     "subtotal_set": self._set(part), "total_tax_set": self._set(tax), "line_item": li})
            shipped = Decimal(order["total_shipping_price_set"]["shop_money"]["amount"])
            ship_back = shipped - self._shipping_refunded(order) if shipping else Decimal(0)
            shipping_lines = [{"id": self._next("line"), "subtotal_amount_set": self._set(ship_back),
                               "tax_amount_set": self._set(Decimal(0))}] if ship_back else []
            paid_back = subtotal + (0 if order["taxes_included"] else taxes) + ship_back
            rid = self._next("refund")
            refund = {"id": rid, "order_id": order_id, "admin_graphql_api_id": gql.gid("Refund", rid),
                      "created_at": when, "processed_at": when, "note": note, "restock": True,
                      "refund_line_items": refund_lines, "refund_shipping_lines": shipping_lines,
                      "total_refunded_set": self._set(paid_back),
                      "transactions": [{"id": rid + 1, "kind": "refund", "status": "success",
                                        "amount": str(money(paid_back)), "currency": self.currency,
                                        "gateway": "shopify_payments"}],
                      "order_adjustments": []}
            order["refunds"].append(refund)
            everything = (all(done[li["id"]] + lines.get(li["id"], 0) >= li["quantity"] for li in order["line_items"])
                          and self._shipping_refunded(order) >= shipped)
            order["financial_status"] = "refunded" if everything else "partially_refunded"
            current = Decimal(order["current_subtotal_price"]) - subtotal
            order.update(current_subtotal_price=str(money(current)), current_subtotal_price_set=self._set(current),
                         updated_at=when)
        self._publish("refunds/create", refund, when)
        self._publish("orders/updated", order, when)
        return json.loads(json.dumps(refund))

    @staticmethod
    def _shipping_refunded(order: dict[str, Any]) -> Decimal:
        return sum((Decimal(line["subtotal_amount_set"]["shop_money"]["amount"]) for refund in order["refunds"]
                    for line in refund.get("refund_shipping_lines") or ()), Decimal(0))

    def mark_paid(self, order_id: int, *, at: datetime | None = None) -> dict[str, Any]:
        """A pending order gets paid: ``orders/paid`` then ``orders/updated``."""
        with self._lock:
            order = self.orders[order_id]
            when = self._time(self.clock.tick(at))
            order.update(financial_status="paid", updated_at=when)
        self._publish("orders/paid", order, when)
        self._publish("orders/updated", order, when)
        return json.loads(json.dumps(order))

    def cancel_order(self, order_id: int, reason: str = "customer", *, at: datetime | None = None) -> dict[str, Any]:
        """Cancel (``orders/cancelled`` then ``orders/updated``); the financial status is left as it is."""
        with self._lock:
            order = self.orders[order_id]
            when = self._time(self.clock.tick(at))
            order.update(cancelled_at=when, cancel_reason=reason, updated_at=when)
        self._publish("orders/cancelled", order, when)
        self._publish("orders/updated", order, when)
        return json.loads(json.dumps(order))

    def request_redact(self, customer_id: int) -> None:
        c = self.customers[customer_id]
        orders = [o["id"] for o in self.orders.values() if (o["customer"] or {}).get("id") == customer_id]
        self._publish("customers/redact", {"shop_id": self.shop_id, "shop_domain": self.shop_domain, "customer": {
            "id": c["id"], "email": c["email"], "phone": c["phone"]}, "orders_to_redact": orders})

    def request_data(self, customer_id: int, request_id: int = 9991) -> None:
        c = self.customers[customer_id]
        orders = [o["id"] for o in self.orders.values() if (o["customer"] or {}).get("id") == customer_id]
        self._publish("customers/data_request", {"shop_id": self.shop_id, "shop_domain": self.shop_domain,
                      "orders_requested": orders, "customer": {"id": c["id"], "email": c["email"], "phone": c["phone"]},
                      "data_request": {"id": request_id}})

    def redact_shop(self) -> None:
        self._publish("shop/redact", {"shop_id": self.shop_id, "shop_domain": self.shop_domain})

    # -- webhooks ------------------------------------------------------------------------------------
    def _publish(self, topic: str, payload: dict[str, Any], when: str | None = None) -> str:
        """Fire ``topic`` with ``payload`` frozen now, to every subscription that has it; the event id."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        event_id = str(uuid.uuid4())
        moment = datetime.fromisoformat(when) if when else self.clock.now()
        triggered = moment.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        for sub in [s for s in self.subscriptions if topic in s.topics]:
            webhook_id = str(uuid.uuid4())

            def build(attempt: int, sub: Subscription = sub, webhook_id: str = webhook_id) -> tuple[bytes, dict]:
                secret = self.webhook_faults.wrong_secret or self.secret
                headers = {"Content-Type": "application/json", "User-Agent": "Shopify-Captain-Hook",
                           "X-Shopify-Topic": topic,
                           "X-Shopify-Hmac-Sha256": body_signature(body, secret),
                           "X-Shopify-Shop-Domain": self.shop_domain, "X-Shopify-API-Version": self.api_version,
                           "X-Shopify-Webhook-Id": webhook_id, "X-Shopify-Event-Id": event_id,
                           "X-Shopify-Triggered-At": triggered}
                if sub.name:
                    headers["X-Shopify-Name"] = sub.name
                return body, headers

            self.emit(Delivery(topic, sub.url, event_id, build, retry_delays=self.retry_delays,
                               timeout=self.webhook_timeout))
        return event_id

    # -- GraphQL Admin API ---------------------------------------------------------------------------
    def throttle_next(self, n: int = 1) -> None:
        """The next ``n`` GraphQL requests answer THROTTLED whatever the bucket holds."""
        with self._lock:
            self._throttle_next += n

    def endpoint_name(self, method: str, path: str) -> str | None:
        return "graphql" if path.endswith("/graphql.json") else None

    def error_response(self, status: int) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        return status, JSON, json.dumps({"errors": "Internal Server Error" if status >= 500 else "Throttled"}).encode()

    def handle(self, method, path, query, headers, body):  # noqa: ANN001, ANN201 - see ShopServer.handle
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["admin", "api"] or parts[3] != "graphql.json":
            raise ApiError(404, json.dumps({"errors": "Not Found"}).encode(), JSON)
        if method != "POST":
            raise ApiError(405, json.dumps({"errors": "Method Not Allowed"}).encode(), JSON)
        if headers.get("x-shopify-access-token") != self.access_token:
            raise ApiError(401, json.dumps({"errors": "[API] Invalid API key or access token "
                                            "(unrecognized login or wrong password)"}).encode(), JSON)
        out = [*JSON, (b"x-shopify-api-version", parts[2].encode())]
        try:
            request = json.loads(body)
            text, variables = request["query"], request.get("variables") or {}
        except (ValueError, KeyError, TypeError):
            return 400, out, json.dumps({"errors": {"query": "Required parameter missing or invalid"}}).encode()
        try:
            answer = self._query(text, variables)
        except gql.GraphQLError as err:
            answer = {"errors": [{"message": err.message, "extensions": {"code": err.code}}]}
        return 200, out, json.dumps(answer).encode()

    def _query(self, text: str, variables: dict[str, Any]) -> dict[str, Any]:
        """Dispatch on the root field to ``graphql_<field>(args) -> (data, actual cost)``: issue 14 adds
        its mutations (``graphql_discountCodeBasicCreate``...) as more such methods."""
        aliased = gql.aliased_fields(text, variables)
        if aliased is not None:
            return self._aliased(aliased)
        root = gql.root_field(text)
        resolver = getattr(self, f"graphql_{root}", None)
        if resolver is None:
            raise gql.GraphQLError(f"Field '{root}' doesn't exist on type 'QueryRoot'", "undefinedField")
        args = gql.arguments(text, root, variables)
        first = args.get("first")
        requested = 2 + (first if isinstance(first, int) else 8)
        with self._lock:
            throttled = self._throttle_next > 0
            self._throttle_next -= throttled
            if throttled or not self.bucket.take(requested, None):
                return {"errors": [{"message": "Throttled", "extensions": {
                    "code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                    "extensions": self.bucket.extension(requested, None)}
            data, actual = resolver(args)
            self.bucket.available += requested - actual  # charged the actual cost
            return {"data": {root: data}, "extensions": self.bucket.extension(requested, actual)}

    def graphql_customers(self, args: dict[str, Any]) -> tuple[dict[str, Any], int]:
        data, count = gql.connection(list(self.customers.values()), args, gql.customer_node)
        return data, 2 + count

    def graphql_orders(self, args: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Without ``read_all_orders`` only the last 60 days of orders are visible, as on Shopify."""
        orders = list(self.orders.values())
        if not self.read_all_orders:
            since = self.clock.now() - timedelta(days=60)
            orders = [o for o in orders if datetime.fromisoformat(o["created_at"]) >= since]
        data, count = gql.connection(orders, args, gql.order_node)
        return data, 2 + count

    # -- the loyalty fields: several aliased mutations per request, tags and metafields ----------------
    def _aliased(self, fields: list[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
        """Each aliased root field in order, 10 points per mutation (Shopify's flat mutation cost); the
        customers whose tags changed then fire ``customers/update``, as in Shopify."""
        requested = 10 * len(fields)
        with self._lock:
            throttled = self._throttle_next > 0
            self._throttle_next -= throttled
            if throttled or not self.bucket.take(requested, None):
                return {"errors": [{"message": "Throttled", "extensions": {
                    "code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                    "extensions": self.bucket.extension(requested, None)}
            data, retagged = {}, []
            for alias, name, args in fields:
                resolver = getattr(self, f"graphql_{name}", None)
                if resolver is None:
                    raise gql.GraphQLError(f"Field '{name}' doesn't exist on type 'Mutation'", "undefinedField")
                data[alias], _ = resolver(args)
                self.mutations.append((name, args))
                if name in ("tagsAdd", "tagsRemove") and data[alias].get("changed"):
                    retagged.append(data[alias].pop("changed"))
                else:
                    data[alias].pop("changed", None)
            published = [json.loads(json.dumps(self.customers[cid])) for cid in dict.fromkeys(retagged)]
            extension = self.bucket.extension(requested, requested)
        for customer in published:
            self._publish("customers/update", customer, customer["updated_at"])
        return {"data": data, "extensions": extension}

    def _customer_of(self, owner: Any) -> dict[str, Any] | None:
        prefix = "gid://shopify/Customer/"
        if not isinstance(owner, str) or not owner.startswith(prefix) or not owner[len(prefix):].isdigit():
            return None
        return self.customers.get(int(owner[len(prefix):]))

    def _retag(self, args: dict[str, Any], add: bool) -> tuple[dict[str, Any], int]:
        """``tagsAdd``/``tagsRemove(id:, tags:)``: tags a list or a comma-separated string; the customer's
        ``updated_at`` moves when its tags change (``changed``: its id, for the webhook)."""
        customer = self._customer_of(args.get("id"))
        if customer is None:
            return {"node": None, "userErrors": [{"field": ["id"], "message": "Customer does not exist"}]}, 10
        given = args.get("tags") or []
        tags = [t.strip() for t in (given.split(",") if isinstance(given, str) else given) if t.strip()]
        if not tags:
            return {"node": None, "userErrors": [{"field": ["tags"], "message": "Tags can't be blank"}]}, 10
        before = [t for t in (customer.get("tags") or "").split(", ") if t]
        after = (before + [t for t in tags if t not in before]) if add else [t for t in before if t not in tags]
        answer: dict[str, Any] = {"node": {"id": gql.gid("Customer", customer["id"])}, "userErrors": []}
        if after != before:
            customer["tags"] = ", ".join(after)
            customer["updated_at"] = self._time(self.clock.tick())
            answer["changed"] = customer["id"]
        return answer, 10

    def graphql_tagsAdd(self, args: dict[str, Any]) -> tuple[dict[str, Any], int]:
        return self._retag(args, add=True)

    def graphql_tagsRemove(self, args: dict[str, Any]) -> tuple[dict[str, Any], int]:
        return self._retag(args, add=False)

    METAFIELD_TYPES = {"single_line_text_field": r".+", "number_integer": r"-?\d+",
                       "number_decimal": r"-?\d+(\.\d+)?", "date": r"\d{4}-\d{2}-\d{2}"}

    def graphql_metafieldsSet(self, args: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """At most 25 metafields (else a top-level MAX_INPUT_SIZE_EXCEEDED error), atomic: one bad input
        (unknown owner, unknown type, a value that is not of its type) and none is written."""
        inputs = args.get("metafields") or []
        if len(inputs) > 25:
            raise gql.GraphQLError(f"The input array size of {len(inputs)} is greater than the maximum allowed "
                                   "of 25.", "MAX_INPUT_SIZE_EXCEEDED")
        errors = []
        for index, item in enumerate(inputs):
            where = ["metafields", str(index)]
            pattern = self.METAFIELD_TYPES.get(item.get("type"))
            if self._customer_of(item.get("ownerId")) is None:
                errors.append({"field": [*where, "ownerId"], "message": "Owner does not exist.", "code": "INVALID"})
            elif pattern is None:
                errors.append({"field": [*where, "type"], "message": "Type is invalid.", "code": "INVALID_TYPE"})
            elif not item.get("namespace") or not item.get("key"):
                errors.append({"field": [*where, "key"], "message": "Key can't be blank.", "code": "BLANK"})
            elif not isinstance(item.get("value"), str) or not re.fullmatch(pattern, item["value"]):
                errors.append({"field": [*where, "value"], "message": f"Value must be a {item.get('type')}.",
                               "code": "INVALID_VALUE"})
        if errors:
            return {"metafields": None, "userErrors": errors}, 10
        written = []
        for item in inputs:
            customer = self._customer_of(item["ownerId"])
            assert customer is not None  # every owner was checked above
            field_ = {"namespace": item["namespace"], "key": item["key"], "value": item["value"], "type": item["type"]}
            customer["metafields"] = [m for m in customer.get("metafields") or ()
                                      if (m["namespace"], m["key"]) != (item["namespace"], item["key"])] + [field_]
            written.append({"ownerId": item["ownerId"], "namespace": item["namespace"], "key": item["key"],
                            "value": item["value"]})
        return {"metafields": written, "userErrors": []}, 10

    def graphql_metafieldsDelete(self, args: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """``metafieldsDelete(metafields: [{ownerId, namespace, key}])``: null for one that did not exist."""
        deleted = []
        for item in args.get("metafields") or []:
            customer = self._customer_of(item.get("ownerId"))
            name = (item.get("namespace"), item.get("key"))
            found = customer is not None and any((m["namespace"], m["key"]) == name for m in customer["metafields"])
            if customer is not None and found:
                customer["metafields"] = [m for m in customer["metafields"] if (m["namespace"], m["key"]) != name]
            deleted.append({"ownerId": item["ownerId"], "namespace": name[0], "key": name[1]} if found else None)
        return {"deletedMetafields": deleted, "userErrors": []}, 10

    def loyalty_fields(self, customer_id: int, namespace: str = "loyalty") -> dict[str, str]:
        """A customer's metafields in ``namespace``, by key (what the shop's pages would read)."""
        with self._lock:
            return {m["key"]: m["value"] for m in self.customers[customer_id]["metafields"]
                    if m["namespace"] == namespace}

    def tags(self, customer_id: int) -> list[str]:
        with self._lock:
            return [t for t in (self.customers[customer_id].get("tags") or "").split(", ") if t]

    def state(self) -> dict[str, Any]:
        return {"customers": list(self.customers.values()), "orders": list(self.orders.values())}
