"""A local stand-in for a PrestaShop shop's Webservice (docs/shop-platforms.md §4). No webhooks: PrestaShop
has none; we poll it (a shop module posting to our ``/api/events`` is our own API, not the shop's).

The store (Python methods, each returns the resource as ``display=full&output_format=JSON`` shows it)::

    shop = PrestaShopServer().start()
    ada = shop.add_customer("ada@example.com", "Ada", "Lovelace", birthday="1990-12-10", newsletter=True)
    order = shop.place_order(ada["id"], [("Tea tin", 2, "50.00")], discount="10.00", shipping="7.00")
    shop.refund(order["id"], "45.00")            # a credit slip (order_slip) of 45.00 products tax excl.
    shop.set_state(order["id"], 6)               # cancelled; shop.update_customer(ada["id"], newsletter=False)

Webservice (key as Basic-auth user with an empty password, or ``?ws_key=``; else 401 with PrestaShop's
``WWW-Authenticate``): ``GET /api/{resource}`` and ``GET /api/{resource}/{id}`` for ``customers``,
``orders``, ``order_slip``, ``order_histories``, ``order_states``, ``currencies``, ``languages``.
Only ``output_format=JSON`` is served (406 otherwise). Lists: without ``display`` only ids;
``display=full`` or ``display=[id,date_upd]``; ``filter[field]=[a,b]`` (interval, inclusive),
``[1|5]`` (any of), ``[x]`` (equal, case-insensitive), ``[Jo]%`` / ``%[hn]`` / ``%[oh]%``; a filter on a
date field needs ``date=1`` (without it, it matches nothing here: the real shop ignores it or matches
nothing, docs §4.2); ``sort=[date_upd_ASC,id_ASC]``; ``limit=count`` or ``limit=offset,count``. Dates
are the shop's local time (``timezone``) without offset; values are strings, ids integers. A list is
``{"orders": [...]}`` (credit slips: ``{"order_slips": [...]}``), an empty list ``[]``, one resource
``{"order": {...}}`` (wrappers and the empty ``[]``: PrestaShop 1.7/8 behaviour from memory, unverified).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from loyalty.standins.shop_common import ApiError, ShopServer, basic_credentials
from loyalty.standins.shop_discounts import DiscountBook, PrestaShopDiscountsMixin

CENT = Decimal("0.01")
JSON = [(b"content-type", b"application/json;charset=utf-8"), (b"psws-version", b"8.1.0")]
DATE_FIELDS = frozenset({"date_add", "date_upd", "newsletter_date_add", "invoice_date", "delivery_date"})
PLURAL = {"customers": "customer", "orders": "order", "order_slip": "order_slip", "order_histories": "order_history",
          "order_states": "order_state", "currencies": "currency", "languages": "language"}
LIST_KEY = {"order_slip": "order_slips"}
# A fresh install's states: id -> (name, paid, logable); 6 cancelled, 7 refunded, 8 payment error.
STATES = {1: ("Awaiting check payment", 0, 0), 2: ("Payment accepted", 1, 1), 3: ("Processing in progress", 1, 1),
          4: ("Shipped", 1, 1), 5: ("Delivered", 1, 1), 6: ("Canceled", 0, 0), 7: ("Refunded", 1, 0),
          8: ("Payment error", 0, 0), 10: ("Awaiting bank wire payment", 0, 0), 11: ("Remote payment accepted", 1, 1)}


def amount(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def ps_money(value: Decimal) -> str:
    return f"{value:.6f}"


def error(status: int, code: int, message: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> ApiError:
    return ApiError(status, json.dumps({"errors": [{"code": code, "message": message}]}).encode(), [*JSON, *headers])


class PrestaShopServer(PrestaShopDiscountsMixin, ShopServer):
    name = "prestashop"

    def __init__(self, *, key: str = "PSWSKEY0123456789ABCDEFGHIJKLMNO", timezone: str = "Europe/Paris",
                 currencies: dict[int, str] | None = None, languages: dict[int, str] | None = None, **base: Any):
        self.key, self.zone = key, ZoneInfo(timezone)
        self.tables: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in PLURAL}
        for cid, iso in (currencies or {1: "EUR", 2: "USD"}).items():
            self.tables["currencies"][cid] = {"id": cid, "name": iso, "iso_code": iso, "conversion_rate": "1.000000",
                                              "deleted": "0", "active": "1"}
        for lid, iso in (languages or {1: "en", 2: "fr"}).items():
            self.tables["languages"][lid] = {"id": lid, "name": iso, "iso_code": iso, "locale": iso, "active": "1"}
        for sid, (label, paid, logable) in STATES.items():
            self.tables["order_states"][sid] = {"id": sid, "paid": str(paid), "logable": str(logable),
                                                "deleted": "0", "name": [{"id": "1", "value": label}]}
        self.discounts = DiscountBook()
        self.cart_rules: list[dict[str, Any]] = []  # issue 14: cart rules, duplicates allowed
        super().__init__(**base)

    def _local(self, moment: datetime) -> str:
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S")

    def _add(self, table: str, record: dict[str, Any]) -> dict[str, Any]:
        record = {"id": max(self.tables[table], default=0) + 1, **record}
        self.tables[table][record["id"]] = record
        return json.loads(json.dumps(record))

    # -- the store -----------------------------------------------------------------------------------
    def add_customer(self, email: str, firstname: str = "", lastname: str = "", *, birthday: str | None = None,
                     newsletter: bool = False, id_lang: int = 1, is_guest: bool = False,
                     at: datetime | None = None) -> dict[str, Any]:
        with self._lock:
            when = self._local(self.clock.tick(at))
            return self._add("customers", {
                "id_default_group": "3", "id_lang": str(id_lang), "newsletter_date_add": when if newsletter else
                "0000-00-00 00:00:00", "ip_registration_newsletter": "", "deleted": "0", "lastname": lastname,
                "firstname": firstname, "email": email, "id_gender": "0", "birthday": birthday or "0000-00-00",
                "newsletter": "1" if newsletter else "0", "optin": "0", "active": "1", "note": "",
                "is_guest": "1" if is_guest else "0", "id_shop": "1", "id_shop_group": "1", "date_add": when,
                "date_upd": when, "associations": {"groups": [{"id": "3"}]}})

    def update_customer(self, customer_id: int, *, at: datetime | None = None, **changes: Any) -> dict[str, Any]:
        """Change ``email``, ``firstname``, ``lastname``, ``birthday``, ``newsletter`` (bool), ``id_lang``,
        ``deleted`` (bool); ``date_upd`` moves."""
        with self._lock:
            c = self.tables["customers"][customer_id]
            when = self._local(self.clock.tick(at))
            for name, value in changes.items():
                if name not in ("email", "firstname", "lastname", "birthday", "newsletter", "id_lang", "deleted"):
                    raise ValueError(f"update_customer does not know the field {name!r}")
                if name == "newsletter" and value and c["newsletter"] != "1":
                    c["newsletter_date_add"] = when
                c[name] = ("1" if value else "0") if isinstance(value, bool) else str(value)
            c["date_upd"] = when
            return json.loads(json.dumps(c))

    def place_order(self, customer_id: int, items: Iterable[tuple[str, int, Any]] = (("Tea tin", 2, "50.00"),), *,
                    discount: Any = "0.00", shipping: Any = "0.00", tax_rate: Any = "0.20", state: int = 2,
                    id_currency: int = 1, at: datetime | None = None) -> dict[str, Any]:
        """``(name, quantity, unit price tax excluded)`` lines; ``discount`` and ``shipping`` tax excluded."""
        with self._lock:
            when = self._local(self.clock.tick(at))
            rate, discount, ship = Decimal(str(tax_rate)), amount(discount), amount(shipping)
            rows = [(name, int(qty), amount(price)) for name, qty, price in items]
            products = sum((qty * price for _, qty, price in rows), Decimal(0))
            paid_excl = products - discount + ship
            paid_incl = amount(paid_excl * (1 + rate))
            customer = self.tables["customers"][customer_id]
            order = self._add("orders", {
                "id_address_delivery": "1", "id_address_invoice": "1", "id_cart": str(len(self.tables["orders"]) + 1),
                "id_currency": str(id_currency), "id_lang": customer["id_lang"], "id_customer": str(customer_id),
                "id_carrier": "1", "current_state": str(state), "module": "ps_checkout", "invoice_number": "0",
                "invoice_date": "0000-00-00 00:00:00", "delivery_number": "0", "delivery_date": "0000-00-00 00:00:00",
                "valid": str(STATES.get(state, ("", 0, 0))[2]), "date_add": when, "date_upd": when,
                "shipping_number": "", "id_shop_group": "1", "id_shop": "1", "secure_key": "0" * 32, "payment": "Card",
                "recyclable": "0", "gift": "0", "gift_message": "", "mobile_theme": "0",
                "total_discounts": ps_money(amount(discount * (1 + rate))),
                "total_discounts_tax_incl": ps_money(amount(discount * (1 + rate))),
                "total_discounts_tax_excl": ps_money(discount), "total_paid": ps_money(paid_incl),
                "total_paid_tax_incl": ps_money(paid_incl), "total_paid_tax_excl": ps_money(paid_excl),
                "total_paid_real": ps_money(paid_incl), "total_products": ps_money(products),
                "total_products_wt": ps_money(amount(products * (1 + rate))),
                "total_shipping": ps_money(amount(ship * (1 + rate))),
                "total_shipping_tax_incl": ps_money(amount(ship * (1 + rate))),
                "total_shipping_tax_excl": ps_money(ship), "carrier_tax_rate": ps_money(rate * 100),
                "total_wrapping": ps_money(Decimal(0)), "total_wrapping_tax_incl": ps_money(Decimal(0)),
                "total_wrapping_tax_excl": ps_money(Decimal(0)), "round_mode": "2", "round_type": "2",
                "conversion_rate": "1.000000", "reference": f"REF{len(self.tables['orders']) + 1:06d}",
                "associations": {"order_rows": [
                    {"id": str(900 + i), "product_id": str(10 + i), "product_attribute_id": "0",
                     "product_quantity": str(qty), "product_name": name, "product_reference": "",
                     "product_price": ps_money(price), "unit_price_tax_incl": ps_money(amount(price * (1 + rate))),
                     "unit_price_tax_excl": ps_money(price)} for i, (name, qty, price) in enumerate(rows)]},
            })
            self._add("order_histories", {"id_employee": "0", "id_order_state": str(state),
                                          "id_order": str(order["id"]), "date_add": when})
            return order

    def set_state(self, order_id: int, state: int, *, at: datetime | None = None) -> dict[str, Any]:
        """A new order state (an ``order_histories`` row); ``valid`` follows the state's ``logable`` flag."""
        with self._lock:
            o = self.tables["orders"][order_id]
            when = self._local(self.clock.tick(at))
            o.update(current_state=str(state), date_upd=when, valid=str(STATES.get(state, ("", 0, 0))[2]))
            self._add("order_histories", {"id_employee": "1", "id_order_state": str(state), "id_order": str(order_id),
                                          "date_add": when})
            return json.loads(json.dumps(o))

    def refund(self, order_id: int, products_tax_excl: Any = None, *, shipping: bool = False,
               at: datetime | None = None) -> dict[str, Any]:
        """A credit slip for ``products_tax_excl`` of merchandise (default: all of it, after discounts); a full
        one also moves the order to state 7 (Refunded). Returns the ``order_slip``."""
        with self._lock:
            o = self.tables["orders"][order_id]
            rate = Decimal(o["carrier_tax_rate"]) / 100
            whole = Decimal(o["total_products"]) - Decimal(o["total_discounts_tax_excl"])
            part = amount(products_tax_excl) if products_tax_excl is not None else amount(whole)
            ship = Decimal(o["total_shipping_tax_excl"]) if shipping else Decimal(0)
            when = self._local(self.clock.tick(at))
            slip = self._add("order_slip", {
                "id_customer": o["id_customer"], "id_order": str(order_id), "conversion_rate": "1.000000",
                "total_products_tax_excl": ps_money(part),
                "total_products_tax_incl": ps_money(amount(part * (1 + rate))),
                "total_shipping_tax_excl": ps_money(ship),
                "total_shipping_tax_incl": ps_money(amount(ship * (1 + rate))),
                "amount": ps_money(amount(part * (1 + rate))), "shipping_cost": "1" if shipping else "0",
                "shipping_cost_amount": ps_money(amount(ship * (1 + rate))), "partial": "0" if part >= whole else "1",
                "order_slip_type": "0", "date_add": when, "date_upd": when,
                "associations": {"order_slip_details": []}})
        if part >= whole:
            self.set_state(order_id, 7, at=at)
        return slip

    # -- Webservice ----------------------------------------------------------------------------------
    def endpoint_name(self, method: str, path: str) -> str | None:
        parts = path.strip("/").split("/")
        return parts[1] if len(parts) > 1 and parts[0] == "api" else None

    def error_response(self, status: int) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        err = error(status, 0, "Internal Server Error")
        return err.status, err.headers, err.body

    def handle(self, method, path, query, headers, body):  # noqa: ANN001, ANN201 - see ShopServer.handle
        params = dict(query)
        given = (basic_credentials(headers) or (params.get("ws_key"), ""))[0]
        if not given or given != self.key:
            realm = (b"www-authenticate", b'Basic realm="Welcome to PrestaShop Webservice, please enter the '
                                          b'authentication key as the login. No password required."')
            raise error(401, 17 if not given else 18,
                        "Authentication key is empty" if not given else "Invalid authentication key", [realm])
        if params.get("output_format", params.get("io_format", "XML")).upper() != "JSON":
            raise ApiError(406, b"This stand-in serves only output_format=JSON", [(b"content-type", b"text/plain")])
        parts = path.strip("/").split("/")
        if parts[0] == "api" and parts[1:] == ["cart_rules"]:  # issue 14: loyalty.standins.shop_discounts
            with self._lock:
                return self.cart_rules_api(method, params, body)
        if parts[0] != "api" or len(parts) < 2 or parts[1] not in PLURAL or method != "GET":
            what = "/".join(parts[1:])
            raise error(404 if method == "GET" else 405, 22, f'Resource of type "{what}" does not exist')
        resource = parts[1]
        with self._lock:
            table = self.tables[resource]
            if len(parts) > 2:
                record = table.get(int(parts[2])) if parts[2].isdigit() else None
                if record is None:
                    raise error(404, 87, f"Id(s) not exists: {parts[2]}")
                return 200, JSON, json.dumps({PLURAL[resource]: record}).encode()
            records = [r for r in table.values() if self._matches(r, params)]
        for spec in reversed(_brackets(params.get("sort", "[id_ASC]"))):
            name, _, direction = spec.rpartition("_")
            records.sort(key=lambda r, n=name: _sort_key(r.get(n)), reverse=direction.upper() == "DESC")
        if "limit" in params:
            offset, _, count = params["limit"].rpartition(",")
            if not (offset or "0").isdigit() or not count.isdigit():
                raise error(400, 34, "The limit parameter is not valid: use limit=count or limit=offset,count")
            records = records[int(offset or 0): int(offset or 0) + int(count)]
        display = params.get("display")
        if display != "full":
            names = _brackets(display) if display else ["id"]
            records = [{k: r[k] for k in ["id", *names] if k in r} for r in records]
        if not records:
            return 200, JSON, b"[]"
        return 200, JSON, json.dumps({LIST_KEY.get(resource, resource): records}).encode()

    @staticmethod
    def _matches(record: dict[str, Any], params: dict[str, str]) -> bool:
        for key, spec in params.items():
            match = re.fullmatch(r"filter\[(\w+)\]", key)
            if not match:
                continue
            field = match.group(1)
            if field in DATE_FIELDS and params.get("date") != "1":
                return False
            value = str(record.get(field, ""))
            inner = re.fullmatch(r"(%?)\[(.*)\](%?)", spec)
            if not inner:
                return False
            before, text, after = inner.groups()
            if before or after:
                pattern = ("" if before else "^") + re.escape(text.lower()) + ("" if after else "$")
                if not re.search(pattern, value.lower()):
                    return False
            elif "," in text:
                low, high = text.split(",", 1)
                if not _sort_key(low) <= _sort_key(value) <= _sort_key(high):
                    return False
            elif value.lower() not in [v.lower() for v in text.split("|")]:
                return False
        return True

    def state(self) -> dict[str, Any]:
        return {name: list(table.values()) for name, table in self.tables.items()}


def _brackets(spec: str) -> list[str]:
    return [part.strip() for part in spec.strip().lstrip("[").rstrip("]").split(",") if part.strip()]


def _sort_key(value: Any) -> tuple[int, Decimal, str]:
    """Numbers as numbers, dates and text as text (``2026-11-01`` sorts before ``2026-11-01 10:00:00``)."""
    text = str(value if value is not None else "")
    try:
        return 0, Decimal(text), ""
    except ArithmeticError:
        return 1, Decimal(0), text
