"""WooCommerce's REST API v3: ``/wp-json/wc/v3/customers`` and ``/orders``, Basic auth with the consumer
key and secret, ``page``/``per_page`` ordered by id (new records go to the end, so a page number stays
a place to resume), orders filtered by ``modified_after`` in GMT; ``X-WP-Total`` gives the count.
WooCommerce cannot filter customers by date: a poll reads the customers of the orders it found."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from core.shop_settings import WooCommerceAdmin
from workers.shop_api.http import Api, Page, ShopApiError

PREFIX = "/wp-json/wc/v3"


class WooCommerceClient:
    name = "WooCommerce"
    resources = ("customers", "orders")

    def __init__(self, admin: WooCommerceAdmin, page_size: int = 100, **api: Any):
        self.page_size = max(1, min(page_size, 100))
        self.api = Api("WooCommerce", admin.url, "WOOCOMMERCE_CONSUMER_KEY and WOOCOMMERCE_CONSUMER_SECRET "
                       "(a REST API key with Read access)", auth=(admin.consumer_key, admin.consumer_secret), **api)

    def close(self) -> None:
        self.api.close()

    def page(self, resource: str, position: str | None, since: datetime | None) -> Page:
        number = int(position or 1)
        params: dict[str, Any] = {"page": number, "per_page": self.page_size, "orderby": "id", "order": "asc"}
        if resource == "customers":
            params["role"] = "all"  # not only the "customer" role: a subscriber who buys is a member too
        if resource == "orders" and since is not None:
            params.update(modified_after=since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"), dates_are_gmt="true")
        response = self.api.request("GET", f"{PREFIX}/{resource}", params=params)
        records = _list(response, resource)
        try:
            pages = int(response.headers.get("x-wp-totalpages") or 0)
            total = int(response.headers["x-wp-total"]) if response.headers.get("x-wp-total") else None
        except ValueError:
            pages, total = 0, None
        more = number < pages if pages else len(records) == self.page_size
        return Page(records, str(number + 1) if more and records else None, total)

    def customer(self, customer_id: str) -> dict[str, Any] | None:
        """One customer (the poll's way to the customers of changed orders); None when deleted."""
        response = self.api.request("GET", f"{PREFIX}/customers/{customer_id}", accept=(404,))
        if response.status_code == 404:
            return None
        try:
            record = response.json()
        except ValueError:
            return None
        return record if isinstance(record, dict) else None


def _list(response: httpx.Response, resource: str) -> list[dict[str, Any]]:
    try:
        records = response.json()
    except ValueError:
        records = None
    if not isinstance(records, list):
        raise ShopApiError(f"WooCommerce's answer to GET {resource} is not a list; check WOOCOMMERCE_URL "
                           "(the site's address, without /wp-json).")
    return [record for record in records if isinstance(record, dict)]
