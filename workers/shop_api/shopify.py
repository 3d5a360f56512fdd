"""Shopify's GraphQL Admin API: customers and orders, cursor paging, the query cost's throttling.

``POST {base}/admin/api/{version}/graphql.json`` with ``X-Shopify-Access-Token``; pages ordered by
id (stable while the shop changes), filtered by ``updated_at:>='...'``. Every answer says what the
bucket holds (``extensions.cost.throttleStatus``); a THROTTLED answer waits until the bucket has
refilled what the query costs, then asks again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.shop_settings import ShopifyAdmin
from shops.common import iso
from workers.shop_api.http import Api, Page, ShopApiError

MAX_THROTTLED = 10  # THROTTLED answers in a row before giving up

_MONEY = "{ shopMoney { amount currencyCode } }"
_CONSENT = "{ marketingState marketingOptInLevel consentUpdatedAt }"
FIELDS = {
    "customers": (
        "id legacyResourceId email firstName lastName phone locale state createdAt updatedAt "
        "defaultAddress { countryCodeV2 phone } "
        f"emailMarketingConsent {_CONSENT} smsMarketingConsent {_CONSENT} "
        "metafields(first: 50) { nodes { namespace key value } }"
    ),
    "orders": (
        "id legacyResourceId name email createdAt processedAt updatedAt cancelledAt displayFinancialStatus "
        "currencyCode taxesIncluded test customerLocale "
        f"subtotalPriceSet {_MONEY} currentSubtotalPriceSet {_MONEY} totalPriceSet {_MONEY} "
        f"totalTaxSet {_MONEY} totalShippingPriceSet {_MONEY} totalDiscountsSet {_MONEY} "
        "customer { id legacyResourceId } "
        f"refunds {{ id legacyResourceId createdAt totalRefundedSet {_MONEY} "
        f"refundLineItems(first: 100) {{ nodes {{ subtotalSet {_MONEY} totalTaxSet {_MONEY} }} }} }}"
    ),
}


def query(resource: str) -> str:
    return (f"query Page($first: Int!, $after: String, $q: String) {{ "
            f"{resource}(first: $first, after: $after, query: $q, sortKey: ID) {{ "
            f"edges {{ cursor node {{ {FIELDS[resource]} }} }} pageInfo {{ hasNextPage endCursor }} }} }}")


class ShopifyClient:
    name = "Shopify"
    resources = ("customers", "orders")

    def __init__(self, admin: ShopifyAdmin, page_size: int = 100, **api: Any):
        self.page_size = max(1, min(page_size, 250))
        self.path = f"/admin/api/{admin.api_version}/graphql.json"
        self.api = Api("Shopify", admin.base_url, "SHOPIFY_ADMIN_TOKEN (an Admin API access token with "
                       "read_customers and read_orders)", headers={"X-Shopify-Access-Token": admin.token}, **api)

    def close(self) -> None:
        self.api.close()

    def page(self, resource: str, position: str | None, since: datetime | None) -> Page:
        variables = {"first": self.page_size, "after": position,
                     "q": f"updated_at:>='{iso(since)}'" if since else None}
        for _ in range(MAX_THROTTLED):
            answer = self.api.json("POST", self.path, json={"query": query(resource), "variables": variables})
            errors = answer.get("errors") if isinstance(answer, dict) else None
            if errors and _code(errors) == "THROTTLED":
                self.api.sleep(throttle_wait(answer, 2 + self.page_size))
                continue
            if errors:
                raise ShopApiError(f"Shopify refused the {resource} query ({_code(errors) or 'error'}); "
                                   "check SHOPIFY_API_VERSION and the token's scopes.")
            try:
                connection = answer["data"][resource]
                nodes = [edge["node"] for edge in connection["edges"]]
                info = connection["pageInfo"]
            except (KeyError, TypeError):
                raise ShopApiError(f"Shopify's answer to the {resource} query is not a page of {resource}; "
                                   "check SHOPIFY_API_BASE_URL.") from None
            return Page(nodes, info.get("endCursor") if info.get("hasNextPage") else None)
        raise ShopApiError(f"Shopify throttled every {resource} query {MAX_THROTTLED} times in a row; "
                           "run the same command again later, it resumes where it stopped.")


def _code(errors: Any) -> str | None:
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return (errors[0].get("extensions") or {}).get("code")
    return None


def throttle_wait(answer: dict[str, Any], requested: float) -> float:
    """Seconds until the bucket holds what the query costs: (cost - available) / restore rate, at least
    a tenth of a second, at most a minute."""
    cost = (answer.get("extensions") or {}).get("cost") or {}
    status = cost.get("throttleStatus") or {}
    needed = float(cost.get("requestedQueryCost") or requested)
    available = float(status.get("currentlyAvailable") or 0)
    rate = float(status.get("restoreRate") or 50)
    return min(max((needed - available) / rate, 0.1), 60.0)
