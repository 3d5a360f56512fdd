"""The Shopify stand-in's GraphQL Admin API: which queries it understands and the nodes it answers.

Not a GraphQL parser. A request body ``{"query": "...", "variables": {...}}`` is recognised by its
**root field**, the first of ``customers`` or ``orders`` followed by ``(`` or ``{`` in the text::

    query Page($first: Int!, $after: String, $q: String) {
      orders(first: $first, after: $after, query: $q, sortKey: UPDATED_AT) {
        edges { cursor node { id legacyResourceId updatedAt ... } }
        pageInfo { hasNextPage endCursor }
      }
    }

Its arguments are read from the parentheses after it: ``first`` (1-250, required), ``after`` (a cursor
from this server), ``query`` (search terms ``updated_at:>'2026-11-01T00:00:00Z'``, ``>=``, ``<``,
``<=``, also ``created_at``; joined by ``AND`` or spaces; other terms are ignored, as Shopify ignores
unknown search fields), ``sortKey`` (``ID`` default, ``UPDATED_AT``, ``CREATED_AT``) and ``reverse``;
each value either a literal (``50``, ``"..."``, ``UPDATED_AT``, ``true``) or a ``$variable``. The
selection set is NOT read: every node carries all the fields listed in :func:`order_node` and
:func:`customer_node` (the GraphQL names and shapes of docs/shop-platforms.md §2.4). Another root
field answers a GraphQL ``undefinedField`` error. Issue 14 adds mutations here (by root field too).
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Any, NoReturn

from shops.common import instant

MAX_FIRST = 250
ROOT = re.compile(r"\b(customers|orders|[A-Za-z_]\w*)\s*(?=[({])")
ARG = re.compile(r"(\w+)\s*:\s*(\$\w+|\"(?:[^\"\\]|\\.)*\"|-?\d+|true|false|null|[A-Z_]+)")
TERM = re.compile(r"(updated_at|created_at):(>=|<=|>|<)?['\"]?([^'\"\s]+)['\"]?")


class GraphQLError(Exception):
    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.message, self.code = message, code


def gid(kind: str, number: int) -> str:
    return f"gid://shopify/{kind}/{number}"


def utc(text: str | None) -> str | None:
    return instant(text, "a time").strftime("%Y-%m-%dT%H:%M:%SZ") if text else None


def money_set(rest_set: dict[str, Any] | None) -> dict[str, Any] | None:
    if not rest_set:
        return None
    return {("shopMoney" if name == "shop_money" else "presentmentMoney"):
            {"amount": money["amount"], "currencyCode": money["currency_code"]} for name, money in rest_set.items()}


def _consent(rest: dict[str, Any] | None) -> dict[str, Any] | None:
    if not rest:
        return None
    node = {"marketingState": rest["state"].upper(), "marketingOptInLevel": rest["opt_in_level"].upper(),
            "consentUpdatedAt": utc(rest.get("consent_updated_at"))}
    if "consent_collected_from" in rest:
        node["consentCollectedFrom"] = rest["consent_collected_from"]
    return node


def customer_node(c: dict[str, Any]) -> dict[str, Any]:
    address = c.get("default_address") or None
    return {
        "id": gid("Customer", c["id"]), "legacyResourceId": str(c["id"]), "email": c.get("email"),
        "firstName": c.get("first_name"), "lastName": c.get("last_name"), "phone": c.get("phone"),
        "locale": c.get("locale"), "tags": [t for t in (c.get("tags") or "").split(", ") if t],
        "state": c["state"].upper(), "verifiedEmail": c.get("verified_email"),
        "createdAt": utc(c["created_at"]), "updatedAt": utc(c["updated_at"]),
        "defaultAddress": {"countryCodeV2": address.get("country_code"), "city": address.get("city")}
        if address else None,
        "emailMarketingConsent": _consent(c.get("email_marketing_consent")),
        "smsMarketingConsent": _consent(c.get("sms_marketing_consent")),
        "metafields": {"nodes": [dict(m) for m in c.get("metafields") or ()]},
    }


def order_node(o: dict[str, Any]) -> dict[str, Any]:
    customer = o.get("customer")
    return {
        "id": gid("Order", o["id"]), "legacyResourceId": str(o["id"]), "name": o["name"], "email": o.get("email"),
        "createdAt": utc(o["created_at"]), "processedAt": utc(o["processed_at"]), "updatedAt": utc(o["updated_at"]),
        "cancelledAt": utc(o.get("cancelled_at")), "displayFinancialStatus": o["financial_status"].upper(),
        "currencyCode": o["currency"], "presentmentCurrencyCode": o["presentment_currency"],
        "taxesIncluded": o["taxes_included"], "test": o.get("test", False), "customerLocale": o.get("customer_locale"),
        **{camel: money_set(o.get(rest)) for camel, rest in (
            ("subtotalPriceSet", "subtotal_price_set"), ("currentSubtotalPriceSet", "current_subtotal_price_set"),
            ("totalPriceSet", "total_price_set"), ("totalTaxSet", "total_tax_set"),
            ("totalShippingPriceSet", "total_shipping_price_set"), ("totalDiscountsSet", "total_discounts_set"))},
        "customer": {"id": gid("Customer", customer["id"]), "legacyResourceId": str(customer["id"])}
        if customer else None,
        "refunds": [refund_node(r) for r in o.get("refunds") or ()],
    }


def refund_node(r: dict[str, Any]) -> dict[str, Any]:
    """A ``Refund``: what it paid back, its line items (``subtotalSet`` taxes included when the order's
    prices include them, ``totalTaxSet``) and its shipping lines."""
    return {
        "id": gid("Refund", r["id"]), "legacyResourceId": str(r["id"]), "createdAt": utc(r["created_at"]),
        "totalRefundedSet": money_set(r.get("total_refunded_set")),
        "refundLineItems": {"nodes": [
            {"quantity": line["quantity"], "lineItem": {"id": gid("LineItem", line["line_item_id"])},
             "subtotalSet": money_set(line["subtotal_set"]), "totalTaxSet": money_set(line["total_tax_set"])}
            for line in r.get("refund_line_items") or ()]},
        "refundShippingLines": {"nodes": [
            {"subtotalAmountSet": money_set(line["subtotal_amount_set"]),
             "taxAmountSet": money_set(line["tax_amount_set"])} for line in r.get("refund_shipping_lines") or ()]},
    }


def root_field(query: str) -> str:
    body = query[query.find("{") + 1:] if "{" in query else query
    match = ROOT.search(body)
    if not match:
        raise GraphQLError("The query has no field to select.", "parseError")
    return match.group(1)


def arguments(query: str, field: str, variables: dict[str, Any]) -> dict[str, Any]:
    body = query[query.find("{") + 1:]
    start = body.find(field)
    rest = body[start + len(field):].lstrip()
    if not rest.startswith("("):
        return {}
    args: dict[str, Any] = {}
    for name, raw in ARG.findall(rest[1:rest.find(")")]):
        if raw.startswith("$"):
            args[name] = variables.get(raw[1:])
        elif raw.startswith('"'):
            args[name] = json.loads(raw)
        elif raw in ("true", "false", "null"):
            args[name] = json.loads(raw)
        elif raw.lstrip("-").isdigit():
            args[name] = int(raw)
        else:
            args[name] = raw
    return args


def search_filter(search: str | None) -> list[tuple[str, str, datetime]]:
    """``updated_at:>'2026-11-01T00:00:00Z' AND updated_at:<=...`` as (field, operator, instant)."""
    return [(f, op or "=", instant(value, f"the search term {f}")) for f, op, value in TERM.findall(search or "")]


def _matches(rest: dict[str, Any], terms: list[tuple[str, str, datetime]]) -> bool:
    for name, op, bound in terms:
        value = instant(rest[name], name)
        if not {">": value > bound, ">=": value >= bound, "<": value < bound,
                "<=": value <= bound, "=": value == bound}[op]:
            return False
    return True


def _cursor(position: list[Any]) -> str:
    return base64.b64encode(json.dumps(position).encode()).decode()


def _position(cursor: str) -> list[Any]:
    try:
        return json.loads(base64.b64decode(cursor))
    except ValueError:
        raise GraphQLError("Invalid cursor for current pagination sort.", "argumentLiteralsIncompatible") from None


def connection(records: list[dict[str, Any]], args: dict[str, Any], to_node: Any) -> tuple[dict[str, Any], int]:
    """One page of ``records`` (REST dicts) as a connection, and the number of nodes in it."""
    first = args.get("first")
    if not isinstance(first, int) or not 1 <= first <= MAX_FIRST:
        raise GraphQLError(f"You must provide `first` between 1 and {MAX_FIRST}.", "argumentLiteralsIncompatible")
    sort = {"ID": None, "UPDATED_AT": "updated_at", "CREATED_AT": "created_at"}.get(args.get("sortKey") or "ID", None)

    def key(rest: dict[str, Any]) -> list[Any]:
        value = instant(rest[sort], sort).timestamp() if sort else 0
        return [value, rest["id"]]

    terms = search_filter(args.get("query"))
    chosen = sorted((r for r in records if _matches(r, terms)), key=key, reverse=bool(args.get("reverse")))
    if args.get("after"):
        after = _position(args["after"])
        chosen = [r for r in chosen if (key(r) < after if args.get("reverse") else key(r) > after)]
    page = chosen[:first]
    edges = [{"cursor": _cursor(key(r)), "node": to_node(r)} for r in page]
    info = {"hasNextPage": len(chosen) > first, "hasPreviousPage": bool(args.get("after")),
            "startCursor": edges[0]["cursor"] if edges else None, "endCursor": edges[-1]["cursor"] if edges else None}
    return {"edges": edges, "nodes": [e["node"] for e in edges], "pageInfo": info}, len(page)


class CostBucket:
    """Shopify's calculated query cost, a leaky bucket: ``maximumAvailable`` points, ``restoreRate`` per s."""

    def __init__(self, maximum: float = 2000.0, restore_rate: float = 100.0):
        self.maximum, self.restore_rate = maximum, restore_rate
        self.available, self._at = maximum, datetime.now(UTC)

    def _refill(self) -> None:
        now = datetime.now(UTC)
        self.available = min(self.maximum, self.available + (now - self._at).total_seconds() * self.restore_rate)
        self._at = now

    def take(self, requested: int, actual: int | None) -> bool:
        self._refill()
        if requested > self.available:
            return False
        self.available -= actual if actual is not None else requested
        return True

    def extension(self, requested: int, actual: int | None) -> dict[str, Any]:
        return {"cost": {"requestedQueryCost": requested, "actualQueryCost": actual,
                         "throttleStatus": {"maximumAvailable": self.maximum,
                                            "currentlyAvailable": int(self.available),
                                            "restoreRate": self.restore_rate}}}


# -- several aliased root fields in one document (the loyalty fields' batched mutations) -------------
ALIASED = re.compile(r"\s*(\w+)\s*:\s*(\w+)\s*")


def _closing(text: str, start: int, opening: str, closing: str) -> int:
    """The index just past the bracket that closes the one at ``start`` (strings skipped)."""
    depth, index, quoted = 0, start, False
    while index < len(text):
        char = text[index]
        if quoted:
            if char == "\\":
                index += 1
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == opening:
            depth += 1
        elif char == closing:
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    raise GraphQLError("The document's brackets do not match.", "parseError")


def aliased_fields(query: str, variables: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]] | None:
    """``(alias, field, arguments)`` of each top-level ``alias: field(...) { ... }`` of a document, in
    order; None when the document does not start with an aliased field (then :func:`root_field` reads it)."""
    head = query.find("(") if query.lstrip().startswith(("mutation", "query")) else -1
    brace = query.find("{")
    if brace == -1:
        return None
    if head != -1 and head < brace:  # variable definitions
        brace = query.find("{", _closing(query, head, "(", ")"))
    body = query[brace + 1:_closing(query, brace, "{", "}") - 1]
    fields: list[tuple[str, str, dict[str, Any]]] = []
    index = 0
    while body[index:].strip():
        match = ALIASED.match(body, index)
        if not match:
            return None if not fields else _bad()
        alias, name, index = match.group(1), match.group(2), match.end()
        args: dict[str, Any] = {}
        if body[index:index + 1] == "(":
            end = _closing(body, index, "(", ")")
            args = arguments("{" + name + body[index:end], name, variables)
            index = end
        while body[index:index + 1].isspace():
            index += 1
        if body[index:index + 1] == "{":
            index = _closing(body, index, "{", "}")
        fields.append((alias, name, args))
    return fields or None


def _bad() -> NoReturn:
    raise GraphQLError("Only aliased fields are understood after the first one.", "parseError")
