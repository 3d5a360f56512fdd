"""A local stand-in for a WooCommerce shop: its webhooks and its REST API v3 (docs/shop-platforms.md §3).

The store (Python methods, each returns the resource as ``GET /wp-json/wc/v3/...`` shows it)::

    shop = WooCommerceServer(webhook_url="http://127.0.0.1:8000/webhooks/woocommerce").start()
    ana = shop.add_customer("ana@example.org", "Ana", "Martin", meta={"loyalty_email_opt_in": "yes"})
    order = shop.place_order(ana["id"], [("Tea tin", 2, "50.00")], discount="10.00", shipping="7.00")
    shop.refund(order["id"], amount="57.50", reason="one tin dented")   # partial; None: the rest
    shop.set_status(order["id"], "completed"); shop.update_customer(ana["id"], phone="06 12 34 56 78")

Webhooks: one webhook per topic (``subscribe(url, topic)``; ``webhook_url`` subscribes to all six:
``order.created|updated|deleted``, ``customer.created|updated|deleted``), each answered first by the
unsigned creation ping (body ``webhook_id=N``, form-encoded; only 200 counts). A change fires its
topic; the body is built **when sent**, from the resource's state then (``{"id": N}`` for a deletion),
as PHP's ``wp_json_encode`` writes it (``\\/``, ``\\uXXXX``), signed over those bytes
(``X-WC-Webhook-Signature``, base64 HMAC-SHA256 with the webhook's secret), with ``X-WC-Webhook-Source``,
``-Topic``, ``-Resource``, ``-Event``, ``-ID`` and a ``-Delivery-ID`` new on every send. Success is
2xx, 301 or 302 (60 s time-out); **never retried**; a webhook whose failure count is already above
``max_failures`` (5) is disabled by the next failure (the 7th in a row; ``webhook.status``), a success
resets the count. Inside ``held()``, changes to one resource are coalesced into one delivery, as
Action Scheduler does. Faults: ``webhook_faults`` (``drop`` is a missed webhook the poll must catch).

REST API (Basic auth ``consumer_key``:``consumer_secret``, accepted over plain HTTP here, a deliberate
deviation: the real one demands OAuth 1.0a without TLS; ``?consumer_key=&consumer_secret=`` also works):
``GET /wp-json/wc/v3/orders`` (``page``, ``per_page`` <= 100, ``modified_after``/``modified_before``/
``after``/``before`` read in the site's zone unless ``dates_are_gmt=true``, ``status``, ``customer``,
``orderby`` date|id, ``order``), ``GET .../orders/{id}``, ``GET .../orders/{id}/refunds``,
``GET .../customers`` (``page``, ``per_page``, ``email``, ``orderby`` id|registered_date, ``order``; no
date filter, as in WooCommerce), ``GET .../customers/{id}``. Lists carry ``X-WP-Total``,
``X-WP-TotalPages`` and a ``Link`` header. ``POST .../customers/batch`` with ``update`` (at most 100 items:
``meta_data`` merged by key, an unknown id an error item; :meth:`meta` reads a customer's).
Errors: ``{"code", "message", "data": {"status"}}``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from loyalty.standins.shop_common import ApiError, Delivery, ShopServer, basic_credentials, paginate, php_json
from loyalty.standins.shop_discounts import DiscountBook, WooCommerceDiscountsMixin
from shops.signatures import body_signature

TOPICS = ("order.created", "order.updated", "order.deleted", "customer.created", "customer.updated",
          "customer.deleted")
PREFIX = "/wp-json/wc/v3/"
CENT = Decimal("0.01")
JSON = [(b"content-type", b"application/json; charset=UTF-8")]


def money(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass
class Webhook:
    id: int
    topic: str
    url: str
    secret: str
    status: str = "active"  # "disabled" after too many consecutive failures
    failure_count: int = 0
    ping_status: int | None = None

    def inactive(self) -> bool:
        return self.status != "active"


def error(status: int, code: str, message: str) -> ApiError:
    return ApiError(status, php_json({"code": code, "message": message, "data": {"status": status}}), JSON)


class WooCommerceServer(WooCommerceDiscountsMixin, ShopServer):
    name = "woocommerce"

    def __init__(self, webhook_url: str | None = None, *, secret: str = "wc_webhook_secret",
                 consumer_key: str = "ck_test_key", consumer_secret: str = "cs_test_secret",
                 site_url: str = "https://shop.example/", timezone: str = "Europe/Paris", currency: str = "EUR",
                 max_failures: int = 5, webhook_timeout: float = 60.0, **base: Any):
        self.secret, self.consumer_key, self.consumer_secret = secret, consumer_key, consumer_secret
        self.site_url, self.zone, self.currency = site_url, ZoneInfo(timezone), currency
        self.max_failures, self.webhook_timeout = max_failures, webhook_timeout
        self.webhooks: list[Webhook] = []
        self.customers: dict[int, dict[str, Any]] = {}
        self.orders: dict[int, dict[str, Any]] = {}
        self.order_refunds: dict[int, list[dict[str, Any]]] = {}
        self.batches: list[dict[str, Any]] = []  # the body of each POST /customers/batch
        self._ids = {"customer": 25, "post": 726, "line": 314, "meta": 8, "webhook": 11}
        self.discounts = DiscountBook(first_id=900)  # coupons (issue 14)
        super().__init__(**base)
        if webhook_url:
            for topic in TOPICS:
                self.subscribe(webhook_url, topic)

    def _next(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind]

    def _dates(self, name: str, moment: datetime) -> dict[str, str]:
        return {name: moment.astimezone(self.zone).strftime("%Y-%m-%dT%H:%M:%S"),
                f"{name}_gmt": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")}

    # -- webhooks ------------------------------------------------------------------------------------
    def subscribe(self, url: str, topic: str, secret: str | None = None) -> Webhook:
        """A new active webhook for ``topic``; WooCommerce pings ``url`` when it is saved."""
        import httpx

        hook = Webhook(self._next("webhook"), topic, url, secret or self.secret)
        self.webhooks.append(hook)
        try:
            hook.ping_status = httpx.post(url, content=f"webhook_id={hook.id}".encode(), timeout=self.webhook_timeout,
                                          headers={"Content-Type": "application/x-www-form-urlencoded",
                                                   "User-Agent": "WooCommerce Hookshot"}).status_code
        except httpx.HTTPError:
            hook.ping_status = None
        return hook

    def _fire(self, topic: str, rid: int) -> None:
        resource, _, event = topic.partition(".")
        for hook in [h for h in self.webhooks if h.topic == topic]:
            def build(attempt: int, hook: Webhook = hook) -> tuple[bytes, dict[str, str]]:
                with self._lock:
                    table = self.orders if resource == "order" else self.customers
                    body = php_json({"id": rid} if event == "deleted" or rid not in table else table[rid])
                secret = self.webhook_faults.wrong_secret or hook.secret
                return body, {
                    "Content-Type": "application/json", "User-Agent": "WooCommerce/9.4.0 Hookshot (WordPress/6.7)",
                    "X-WC-Webhook-Source": self.site_url, "X-WC-Webhook-Topic": topic,
                    "X-WC-Webhook-Resource": resource, "X-WC-Webhook-Event": event,
                    "X-WC-Webhook-Signature": body_signature(body, secret), "X-WC-Webhook-ID": str(hook.id),
                    "X-WC-Webhook-Delivery-ID": hashlib.md5(f"{hook.id}{int(time.time())}".encode()).hexdigest(),
                }

            def after(ok: bool, hook: Webhook = hook) -> None:
                with self._lock:
                    if ok:
                        hook.failure_count = 0
                    elif hook.failure_count > self.max_failures:
                        hook.status = "disabled"
                    else:
                        hook.failure_count += 1

            self.emit(Delivery(topic, hook.url, f"{resource}:{rid}", build,
                               success=lambda s: s is not None and (200 <= s < 300 or s in (301, 302)),
                               timeout=self.webhook_timeout, after=after,
                               skip=hook.inactive, coalesce_key=f"{hook.id}:{rid}"))

    # -- the store -----------------------------------------------------------------------------------
    def add_customer(self, email: str, first_name: str = "", last_name: str = "", *, phone: str = "",
                     country: str = "FR", meta: dict[str, Any] | None = None, at: datetime | None = None) -> dict:
        """A registered customer (``customer.created``); ``meta`` becomes ``meta_data`` entries."""
        with self._lock:
            moment, cid = self.clock.tick(at), self._next("customer")
            billing = {"first_name": first_name, "last_name": last_name, "company": "", "address_1": "",
                       "city": "", "postcode": "", "country": country, "email": email, "phone": phone}
            self.customers[cid] = {
                "id": cid, **self._dates("date_created", moment), **self._dates("date_modified", moment),
                "email": email, "first_name": first_name, "last_name": last_name, "role": "customer",
                "username": email.split("@")[0], "billing": billing,
                "shipping": {k: billing[k] for k in ("first_name", "last_name", "country")},
                "is_paying_customer": False, "avatar_url": "https://secure.gravatar.com/avatar/?s=96&d=mm",
                "meta_data": [{"id": self._next("meta"), "key": k, "value": v} for k, v in (meta or {}).items()],
            }
        self._fire("customer.created", cid)
        return self.customer(cid)

    def update_customer(self, customer_id: int, *, at: datetime | None = None, **changes: Any) -> dict:
        """Change ``email``, ``first_name``, ``last_name``, ``phone``, ``country`` or ``meta`` (merged by key)."""
        with self._lock:
            c = self.customers[customer_id]
            for name, value in changes.items():
                if name == "meta":
                    for key, val in value.items():
                        entry = next((m for m in c["meta_data"] if m["key"] == key), None)
                        if entry:
                            entry["value"] = val
                        else:
                            c["meta_data"].append({"id": self._next("meta"), "key": key, "value": val})
                elif name in ("phone", "country"):
                    c["billing"][name] = value
                elif name in ("email", "first_name", "last_name"):
                    c[name] = c["billing"][name] = value
                else:
                    raise ValueError(f"update_customer does not know the field {name!r}")
            c.update(self._dates("date_modified", self.clock.tick(at)))
        self._fire("customer.updated", customer_id)
        return self.customer(customer_id)

    def delete_customer(self, customer_id: int) -> None:
        with self._lock:
            del self.customers[customer_id]
        self._fire("customer.deleted", customer_id)

    def place_order(self, customer_id: int | None, items: Iterable[tuple[str, int, Any]] = (("Tea tin", 2, "50.00"),),
                    *, email: str | None = None, discount: Any = "0.00", shipping: Any = "0.00",
                    tax_rate: Any = "0.20", status: str = "processing", coupon: str | None = None,
                    at: datetime | None = None) -> dict:
        """An order of ``(name, quantity, unit price before tax)`` lines; ``customer_id`` None is a guest
        (``email`` is then its billing email). ``discount`` (before tax) is spread over the lines."""
        with self._lock:
            moment, oid = self.clock.tick(at), self._next("post")
            rate, discount = Decimal(str(tax_rate)), money(discount)
            lines = [(name, int(qty), money(price)) for name, qty, price in items]
            gross = sum((q * p for _, q, p in lines), Decimal(0))
            line_items: list[dict[str, Any]] = []
            left = discount
            for index, (name, qty, price) in enumerate(lines):
                share = (left if index == len(lines) - 1
                         else money(discount * qty * price / gross) if gross else Decimal(0))
                left -= share
                total = qty * price - share
                line_items.append({"id": self._next("line"), "name": name, "product_id": 90 + index,
                                   "quantity": qty, "subtotal": str(money(qty * price)),
                                   "subtotal_tax": str(money(qty * price * rate)), "total": str(money(total)),
                                   "total_tax": str(money(total * rate)), "price": float(price), "taxes": [],
                                   "meta_data": []})
            customer = self.customers[customer_id] if customer_id else None
            billing = dict(customer["billing"]) if customer else {"first_name": "", "last_name": "", "country": "",
                                                                   "email": email or "", "phone": ""}
            line_tax = sum((Decimal(li["total_tax"]) for li in line_items), Decimal(0))
            net = sum((Decimal(li["total"]) for li in line_items), Decimal(0))
            paid = status in ("processing", "completed")
            self.orders[oid] = {
                "id": oid, "parent_id": 0, "number": str(oid), "status": status, "currency": self.currency,
                "prices_include_tax": False, "customer_id": customer_id or 0, "customer_note": "",
                **self._dates("date_created", moment), **self._dates("date_modified", moment),
                **(self._dates("date_paid", moment) if paid else {"date_paid": None, "date_paid_gmt": None}),
                "date_completed": None, "date_completed_gmt": None,
                "discount_total": str(discount), "discount_tax": str(money(discount * rate)),
                "shipping_total": str(money(shipping)), "shipping_tax": "0.00", "cart_tax": str(money(line_tax)),
                "total_tax": str(money(line_tax)), "total": str(money(net + line_tax + money(shipping))),
                "billing": billing, "shipping": {k: billing.get(k, "") for k in ("first_name", "last_name", "country")},
                "payment_method": "stripe", "payment_method_title": "Credit card", "transaction_id": f"pi_{oid}",
                "line_items": line_items,
                "shipping_lines": [{"id": self._next("line"), "method_id": "flat_rate", "total": str(money(shipping)),
                                    "total_tax": "0.00"}] if money(shipping) else [],
                "fee_lines": [], "coupon_lines": [{"id": self._next("line"), "code": coupon.lower(),
                                                   "discount": str(discount)}] if coupon else [],
                "refunds": [], "meta_data": [],
            }
            self.order_refunds[oid] = []
        self._fire("order.created", oid)
        return self.order(oid)

    def set_status(self, order_id: int, status: str, *, at: datetime | None = None) -> dict:
        """``pending``, ``processing``, ``on-hold``, ``completed``, ``cancelled``, ``refunded``, ``failed``."""
        with self._lock:
            o = self.orders[order_id]
            moment = self.clock.tick(at)
            o.update(status=status, **self._dates("date_modified", moment))
            if status in ("processing", "completed") and not o["date_paid_gmt"]:
                o.update(self._dates("date_paid", moment))
            if status == "completed":
                o.update(self._dates("date_completed", moment))
        self._fire("order.updated", order_id)
        return self.order(order_id)

    def refund(self, order_id: int, amount: Any = None, *, reason: str = "", at: datetime | None = None) -> dict:
        """Refund ``amount`` (tax and shipping included, as WooCommerce's refund total); None: what is left.
        The order shows it in ``refunds`` (a negative ``total``) and becomes ``refunded`` when nothing is left."""
        with self._lock:
            o = self.orders[order_id]
            moment, rid = self.clock.tick(at), self._next("post")
            done = sum((-Decimal(r["total"]) for r in o["refunds"]), Decimal(0))
            value = money(amount) if amount is not None else Decimal(o["total"]) - done
            if not 0 < value <= Decimal(o["total"]) - done:
                raise ValueError(f"order {order_id} has {Decimal(o['total']) - done} left to refund, not {value}")
            o["refunds"].insert(0, {"id": rid, "reason": reason, "total": f"-{money(value)}"})
            self.order_refunds[order_id].insert(0, {
                "id": rid, **self._dates("date_created", moment), "amount": str(money(value)), "reason": reason,
                "refunded_by": 1, "refunded_payment": True, "meta_data": [], "line_items": []})
            if done + value >= Decimal(o["total"]):
                o["status"] = "refunded"
            o.update(self._dates("date_modified", moment))
        self._fire("order.updated", order_id)
        return self.order(order_id)

    def delete_order(self, order_id: int, *, at: datetime | None = None) -> None:
        """To the trash: ``order.deleted`` with ``{"id": N}``; the REST API lists it with status ``trash``."""
        with self._lock:
            self.orders[order_id].update(status="trash", **self._dates("date_modified", self.clock.tick(at)))
        self._fire("order.deleted", order_id)

    def order(self, order_id: int) -> dict:
        with self._lock:
            return php_json_roundtrip(self.orders[order_id])

    def customer(self, customer_id: int) -> dict:
        with self._lock:
            return php_json_roundtrip(self.customers[customer_id])

    # -- REST API v3 ---------------------------------------------------------------------------------
    def endpoint_name(self, method: str, path: str) -> str | None:
        return path[len(PREFIX):].split("/")[0] if path.startswith(PREFIX) else None

    def error_response(self, status: int) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        err = error(status, "internal_server_error", "There has been a critical error on this website.")
        return err.status, err.headers, err.body

    def handle(self, method, path, query, headers, body):  # noqa: ANN001, ANN201 - see ShopServer.handle
        if not path.startswith(PREFIX):
            raise error(404, "rest_no_route", "No route was found matching the URL and request method.")
        params = dict(query)
        given = basic_credentials(headers) or (params.get("consumer_key"), params.get("consumer_secret"))
        if given[0] is None:
            raise error(401, "woocommerce_rest_cannot_view", "Sorry, you cannot list resources.")
        if given != (self.consumer_key, self.consumer_secret):
            raise error(401, "woocommerce_rest_authentication_error", "Consumer key is invalid.")
        if method == "POST" and path.rstrip("/") == PREFIX + "customers/batch":
            return self._customers_batch(body)
        parts = path[len(PREFIX):].strip("/").split("/")
        if parts[0] == "coupons":  # issue 14: loyalty.standins.shop_discounts
            with self._lock:
                return self.coupons_api(method, parts, params, body)
        if method != "GET":
            raise error(404, "rest_no_route", "No route was found matching the URL and request method.")
        with self._lock:
            table = {"orders": self.orders, "customers": self.customers}.get(parts[0])
            if table is None:
                raise error(404, "rest_no_route", "No route was found matching the URL and request method.")
            if len(parts) > 1:
                record = table.get(int(parts[1])) if parts[1].isdigit() else None
                if record is None:
                    raise error(404, f"woocommerce_rest_{parts[0][:-1]}_invalid_id", "Invalid ID.")
                return 200, JSON, php_json(self.order_refunds[record["id"]] if parts[2:] == ["refunds"] else record)
            return self._list(path, parts[0], list(table.values()), params)

    def _customers_batch(self, body: bytes):  # noqa: ANN202
        """``POST /customers/batch`` with ``update``: at most 100 items (413 beyond, as
        ``check_batch_limit``); each item's ``meta_data`` entries without an ``id`` update the value of
        their key (or add it); an unknown id is an error item in the answer, the others are saved. Each
        saved customer moves ``date_modified`` and fires ``customer.updated``. Logged in :attr:`batches`."""
        import json

        try:
            request = json.loads(body)
        except ValueError:
            raise error(400, "rest_invalid_json", "Invalid JSON body passed.") from None
        if not isinstance(request, dict):
            raise error(400, "rest_invalid_json", "Invalid JSON body passed.")
        items = [*(request.get("create") or []), *(request.get("update") or []), *(request.get("delete") or [])]
        if len(items) > 100:
            raise error(413, "woocommerce_rest_request_entity_too_large",
                        "Unable to accept more than 100 items for this request.")
        if request.get("create") or request.get("delete"):
            raise error(400, "rest_invalid_param", "This stand-in only updates customers in a batch.")
        answers, saved = [], []
        with self._lock:
            self.batches.append(request)
            for item in request.get("update") or []:
                wanted = item.get("id") if isinstance(item, dict) else None
                customer = self.customers.get(wanted) if isinstance(wanted, int) else None
                if customer is None:
                    answers.append({"id": item.get("id") if isinstance(item, dict) else None, "error": {
                        "code": "woocommerce_rest_invalid_id", "message": "Invalid ID.", "data": {"status": 400}}})
                    continue
                for entry in item.get("meta_data") or []:
                    found = next((m for m in customer["meta_data"] if m["key"] == entry["key"]), None)
                    if found:
                        found["value"] = entry["value"]
                    else:
                        customer["meta_data"].append({"id": self._next("meta"), "key": entry["key"],
                                                      "value": entry["value"]})
                customer.update(self._dates("date_modified", self.clock.tick()))
                saved.append(customer["id"])
                answers.append(php_json_roundtrip(customer))
        for customer_id in saved:
            self._fire("customer.updated", customer_id)
        return 200, JSON, php_json({"update": answers})

    def meta(self, customer_id: int) -> dict[str, Any]:
        """A customer's ``meta_data`` as key → value."""
        with self._lock:
            return {m["key"]: m["value"] for m in self.customers[customer_id]["meta_data"]}

    def _list(self, path: str, kind: str, records: list[dict], params: dict[str, str]):  # noqa: ANN202
        try:
            page, per_page = int(params.get("page", 1)), int(params.get("per_page", 10))
        except ValueError:
            raise error(400, "rest_invalid_param", "Invalid parameter(s): page, per_page") from None
        if not 1 <= per_page <= 100 or page < 1:
            raise error(400, "rest_invalid_param", "Invalid parameter(s): per_page")
        gmt = params.get("dates_are_gmt") in ("true", "1")
        if kind == "orders":
            for name, field, newer in (("modified_after", "date_modified", True), ("modified_before", "date_modified",
                                       False), ("after", "date_created", True), ("before", "date_created", False)):
                if params.get(name):
                    bound, key = params[name][:19], field + ("_gmt" if gmt else "")
                    records = [r for r in records if (r[key] > bound if newer else r[key] < bound)]
            if params.get("status", "any") != "any":
                records = [r for r in records if r["status"] in params["status"].split(",")]
            elif "status" not in params:
                records = [r for r in records if r["status"] != "trash"]
            if params.get("customer"):
                records = [r for r in records if str(r["customer_id"]) == params["customer"]]
        elif params.get("email"):
            records = [r for r in records if r["email"].lower() == params["email"].lower()]
        orderby = params.get("orderby", "date" if kind == "orders" else "name")
        sort_field = {"id": "id", "date": "date_created_gmt", "registered_date": "date_created_gmt",
                      "name": "last_name"}.get(orderby, "id")
        descending = params.get("order", "desc" if kind == "orders" else "asc") == "desc"
        records.sort(key=lambda r: (r[sort_field], r["id"]), reverse=descending)
        result = paginate(records, page, per_page)
        base = f"{self.site_url.rstrip('/')}{path}"
        links = [f'<{base}?{urlencode({**params, "page": p})}>; rel="{rel}"' for p, rel in
                 ((page - 1, "prev"), (page + 1, "next")) if 1 <= p <= result.total_pages]
        headers = [*JSON, (b"x-wp-total", str(result.total).encode()),
                   (b"x-wp-totalpages", str(result.total_pages).encode())]
        if links:
            headers.append((b"link", ", ".join(links).encode()))
        return 200, headers, php_json(result.items)

    def state(self) -> dict[str, Any]:
        return {"customers": list(self.customers.values()), "orders": list(self.orders.values()),
                "webhooks": [vars(h) for h in self.webhooks]}


def php_json_roundtrip(obj: Any) -> Any:
    import json

    return json.loads(php_json(obj))
