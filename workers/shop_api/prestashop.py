"""PrestaShop's Webservice: ``/api/customers``, ``/api/orders``, ``/api/order_slip`` (credit slips), with
the key as the Basic-auth user; ``output_format=JSON&display=full``, changed since a date with
``date=1&filter[date_upd]=[from,to]`` (the shop's local time), paged by id (``filter[id]=[next,...]``,
``sort=[id_ASC]``, ``limit``): the last id read is where to resume, whatever changes meanwhile.
``/api/currencies`` and ``/api/languages`` give the :class:`shops.prestashop.ShopFacts`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from core.shop_settings import PrestaShopAdmin
from models.base import utcnow
from shops.prestashop import ShopFacts
from workers.shop_api.http import Api, Page, ShopApiError

LAST_ID = 2_147_483_647
LIST_KEY = {"order_slip": "order_slips"}


class PrestaShopClient:
    name = "PrestaShop"
    resources = ("customers", "orders", "order_slip")

    def __init__(self, admin: PrestaShopAdmin, timezone: str, page_size: int = 100, **api: Any):
        self.page_size = max(1, min(page_size, 1000))
        self.zone = ZoneInfo(timezone)
        self.api = Api("PrestaShop", admin.url, "PRESTASHOP_WEBSERVICE_KEY (a Webservice key allowed GET on "
                       "customers, orders, order_slip, currencies and languages)", auth=(admin.key, ""), **api)

    def close(self) -> None:
        self.api.close()

    def _local(self, moment: datetime) -> str:
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S")

    def _get(self, resource: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        answer = self.api.json("GET", f"/api/{resource}", params={"output_format": "JSON", **params})
        if answer == [] or answer == {}:
            return []
        records = answer.get(LIST_KEY.get(resource, resource)) if isinstance(answer, dict) else None
        if not isinstance(records, list):
            raise ShopApiError(f"PrestaShop's answer to GET /api/{resource} is not a list of {resource}; "
                               "check PRESTASHOP_URL (the shop's address, without /api).")
        return [record for record in records if isinstance(record, dict)]

    def facts(self) -> ShopFacts:
        currencies = self._get("currencies", {"display": "full"})
        languages = self._get("languages", {"display": "full"})
        return ShopFacts(timezone=self.zone.key,
                         currencies={str(c.get("id")): str(c.get("iso_code") or "").upper() for c in currencies},
                         languages={str(lang.get("id")): str(lang.get("iso_code") or "") for lang in languages})

    def page(self, resource: str, position: str | None, since: datetime | None) -> Page:
        after = int(position or 0)
        params: dict[str, Any] = {"display": "full", "filter[id]": f"[{after + 1},{LAST_ID}]", "sort": "[id_ASC]",
                                  "limit": f"0,{self.page_size}"}
        if since is not None:
            params.update({"date": "1", "filter[date_upd]":
                           f"[{self._local(since)},{self._local(utcnow() + timedelta(days=1))}]"})
        records = self._get(resource, params)
        last = max((int(r["id"]) for r in records if str(r.get("id", "")).isdigit()), default=after)
        return Page(records, str(last) if len(records) == self.page_size else None)
