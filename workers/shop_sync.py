"""Catching up with a shop through its admin API: ``loyalty shop backfill`` and the clock's poll.

Both read pages of customers, then orders (then PrestaShop's credit slips), and store each record in
the inbox exactly as a webhook would (``models.inbox.receive``, the envelope of
:func:`workers.inbox.envelope`), under a key that makes one version of a resource one entry: the same
version seen by a webhook, a poll and a backfill is stored once, and what was already applied (resource
versions, refund ids) changes nothing. Entries are then applied by :func:`workers.inbox.apply_entry`.

The backfill commits each page's entries with its position (``shop_cursors``) in one transaction, so
a run killed halfway resumes after the last page it stored; entries it stored but had not applied yet
are applied first. ``--since`` limits the orders (and credit slips); customers are always read whole,
since the orders need them.

The poll (WooCommerce, PrestaShop: no retried webhooks, or none at all) reads what changed since its
last run minus :data:`OVERLAP`, one poll at a time (a PostgreSQL advisory lock), and hands the new
entries to the queue. WooCommerce cannot list customers by date: the poll reads the customers of the
orders it found that are not members yet.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import dramatiq
import structlog
from sqlalchemy import select

from core.errors import LoyaltyError
from core.settings import Settings
from models.base import utcnow
from models.db import only_one, transaction
from models.inbox import InboxEntry, InboxState, receive
from models.member import Member
from models.shop_cursors import ShopCursor, save_cursor
from shops import prestashop, shopify, shopify_graphql, woocommerce
from shops.common import instant, iso
from shops.events import PayloadProblem
from workers.actors import _placeholder
from workers.inbox import INBOX_QUEUE, apply_entry, apply_inbox_entry, envelope
from workers.runtime import Runtime, get_runtime
from workers.shop_api.http import Page, ShopApiError
from workers.shop_api.prestashop import PrestaShopClient
from workers.shop_api.shopify import ShopifyClient
from workers.shop_api.woocommerce import WooCommerceClient

log = structlog.get_logger("loyalty.shop_sync")

PLATFORMS = ("shopify", "woocommerce", "prestashop")
POLLED = ("woocommerce", "prestashop")
OVERLAP = timedelta(minutes=10)
_LOCK_KEY = 0x5348_504C  # "SHPL": the advisory lock of the poll
Progress = Callable[[str, int, int | None], None]  # (resource, records read, total when known)
ShopClient = ShopifyClient | WooCommerceClient | PrestaShopClient  # a shop's admin API, read by pages


class ShopSyncError(LoyaltyError):
    """The backfill cannot go on: one sentence (not configured, the key refused, the shop unreachable)."""


@dataclass
class Report:
    read: dict[str, int] = field(default_factory=dict)  # records read, per resource
    stored: int = 0  # new inbox entries (the others were already there)
    skipped: int = 0  # records that mean nothing (no id...): logged, not stored
    applied: int = 0  # entries applied, settled or woken
    resumed: bool = False


def open_client(settings: Settings, platform: str, page_size: int = 100, **api: Any) -> ShopClient:
    """The platform's admin-API client from the settings; :class:`ShopSyncError` when not configured."""
    shop = settings.shop
    if platform == "shopify" and shop.shopify is not None:
        return ShopifyClient(shop.shopify, page_size, **api)
    if platform == "woocommerce" and shop.woocommerce is not None:
        return WooCommerceClient(shop.woocommerce, page_size, **api)
    if platform == "prestashop" and shop.prestashop is not None:
        return PrestaShopClient(shop.prestashop, shop.mapping.default_timezone, page_size, **api)
    names = {"shopify": "SHOPIFY_SHOP_DOMAIN and SHOPIFY_ADMIN_TOKEN",
             "woocommerce": "WOOCOMMERCE_URL, WOOCOMMERCE_CONSUMER_KEY and WOOCOMMERCE_CONSUMER_SECRET",
             "prestashop": "PRESTASHOP_URL and PRESTASHOP_WEBSERVICE_KEY"}
    raise ShopSyncError(f"{platform} is not configured; set {names[platform]} (see the README's \"Catching up\").")


# -- what one record becomes in the inbox -----------------------------------------------------------
def inbox_entry(platform: str, resource: str, record: dict[str, Any],
                facts: prestashop.ShopFacts | None = None) -> tuple[str, str, str]:
    """``(dedup_key, topic, body)`` of one record read from the admin API; PayloadProblem if unusable."""
    if platform == shopify.PLATFORM:
        if resource == "customers":
            payload, topic = shopify_graphql.customer_payload(record), shopify_graphql.MEMBER_TOPIC
        else:
            payload, topic = shopify_graphql.order_payload(record), shopify_graphql.ORDER_TOPIC
        if not payload.get("id") or not payload.get("updated_at"):
            raise PayloadProblem(f"a Shopify {resource[:-1]} without id or updatedAt")
        updated = iso(instant(payload["updated_at"], "updatedAt"))
        key = f"shopify:backfill:{resource}:{payload['id']}:{updated}"
        return key, topic, envelope(json.dumps(payload), event_id=key, triggered_at=updated)
    if platform == woocommerce.PLATFORM:
        topic = "customer.updated" if resource == "customers" else "order.updated"
        return woocommerce.delivery_key(topic, record), topic, envelope(json.dumps(record))
    if platform == prestashop.PLATFORM:
        if not record.get("id") or not record.get("date_upd"):
            raise PayloadProblem(f"a PrestaShop {resource} record without id or date_upd")
        key = f"prestashop:{resource}:{record['id']}:{record['date_upd']}"
        meta = {k: v for k, v in asdict(facts or prestashop.ShopFacts()).items()
                if k in ("timezone", "currencies", "languages")}
        return key, resource, envelope(json.dumps(record), facts=meta)
    raise PayloadProblem(f"the platform {platform!r} is unknown")


def _store(runtime: Runtime, platform: str, resource: str, records: list[dict[str, Any]],
           facts: prestashop.ShopFacts | None, report: Report,
           cursor: tuple[str, str | None, datetime | None, bool] | None = None) -> list[int]:
    """Store one page's records (and the cursor after it) in one transaction; the new entries' ids."""
    ids: list[int] = []
    with transaction(runtime.sessions) as session:
        for record in records:
            try:
                key, topic, body = inbox_entry(platform, resource, record, facts)
            except PayloadProblem as problem:
                report.skipped += 1
                log.warning("shop_sync.skipped", platform=platform, resource=resource, reason=str(problem))
                continue
            if (entry_id := receive(session, dedup_key=key, platform=platform, topic=topic, body=body)) is not None:
                ids.append(entry_id)
        if cursor is not None:
            name, position, since, finished = cursor
            save_cursor(session, platform, name, position=position, since=since, finished=finished)
    report.stored += len(ids)
    report.read[resource] = report.read.get(resource, 0) + len(records)
    return ids


def apply_now(runtime: Runtime, ids: list[int]) -> int:
    """Apply entries in this process, and those they wake; how many were handled."""
    pending, done = list(ids), 0
    while pending:
        pending.extend(apply_entry(pending.pop(0), runtime))
        done += 1
    return done


def _received(runtime: Runtime, platform: str) -> list[int]:
    with runtime.sessions() as session:
        return list(session.scalars(select(InboxEntry.id).where(
            InboxEntry.platform == platform, InboxEntry.state == InboxState.RECEIVED).order_by(InboxEntry.id)))


def _facts(client: ShopClient) -> prestashop.ShopFacts | None:
    return client.facts() if isinstance(client, PrestaShopClient) else None


# -- the backfill -----------------------------------------------------------------------------------
def backfill(runtime: Runtime, platform: str, since: datetime | None = None, *, page_size: int = 100,
             progress: Progress | None = None, client: ShopClient | None = None) -> Report:
    """Read the shop's customers and orders into the inbox and apply them (see the module)."""
    client = client or open_client(runtime.settings, platform, page_size)
    report = Report()
    try:
        report.applied += apply_now(runtime, _received(runtime, platform))  # stored by a run that was killed
        facts = _facts(client)
        with runtime.sessions() as session:
            cursors = {c.resource: c for c in session.scalars(
                select(ShopCursor).where(ShopCursor.platform == platform, ShopCursor.resource.like("backfill:%")))}
            session.expunge_all()
        unfinished = [c for c in cursors.values() if c.finished_at is None]
        report.resumed = bool(unfinished) and (since is None or all(c.since == since for c in unfinished))
        run_since = unfinished[0].since if report.resumed else since
        for resource in client.resources:
            name = f"backfill:{resource}"
            cursor = cursors.get(name)
            if report.resumed and cursor is not None and cursor.finished_at is not None:
                continue
            position = cursor.position if report.resumed and cursor is not None else None
            window = None if resource == "customers" else run_since
            if not (report.resumed and cursor is not None):
                with transaction(runtime.sessions) as session:
                    save_cursor(session, platform, name, position=None, since=run_since, restart=True)
            for page in _pages(client, resource, position, window):
                ids = _store(runtime, platform, resource, page.records, facts, report,
                             cursor=(name, page.position, run_since, page.position is None))
                report.applied += apply_now(runtime, ids)
                if progress is not None:
                    progress(resource, report.read.get(resource, 0), page.total)
        report.applied += apply_now(runtime, _received(runtime, platform))  # woken late, or left by a race
    except ShopApiError as error:
        raise ShopSyncError(str(error)) from None
    finally:
        client.close()
    log.info("shop_sync.backfill", platform=platform, read=report.read, stored=report.stored,
             skipped=report.skipped, resumed=report.resumed)
    return report


def _pages(client: ShopClient, resource: str, position: str | None, since: datetime | None) -> Iterator[Page]:
    while True:
        page = client.page(resource, position, since)
        yield page
        if page.position is None:
            return
        position = page.position


# -- the poll ---------------------------------------------------------------------------------------
def poll(runtime: Runtime, platform: str, hand_on: Callable[[list[int]], None], *, now: datetime | None = None,
         page_size: int = 100, client: ShopClient | None = None) -> Report | None:
    """What changed since the last poll (minus the overlap) into the inbox, the new entries handed on
    after each commit; None when another poll holds the lock. The cursor moves only when it went through."""
    started = now or utcnow()
    with only_one(runtime.engine, _LOCK_KEY) as ours:
        if not ours:
            return None
        client = client or open_client(runtime.settings, platform, page_size)
        report = Report()
        try:
            with runtime.sessions() as session:
                cursor = session.get(ShopCursor, (platform, "poll"))
                last = instant(cursor.position, "the poll's cursor") if cursor and cursor.position else None
            interval = timedelta(minutes=runtime.settings.shop.poll_minutes)
            since = (last or started - interval) - OVERLAP
            facts = _facts(client)
            for resource in client.resources:
                if platform == woocommerce.PLATFORM and resource == "customers":
                    continue  # no date filter: the customers of the orders read are fetched below
                for page in _pages(client, resource, None, since):
                    if isinstance(client, WooCommerceClient) and resource == "orders":
                        customers = _missing_customers(runtime, client, page.records)
                        hand_on(_store(runtime, platform, "customers", customers, facts, report))
                    hand_on(_store(runtime, platform, resource, page.records, facts, report))
            with transaction(runtime.sessions) as session:
                save_cursor(session, platform, "poll", position=iso(started), finished=True)
        finally:
            client.close()
    log.info("shop_sync.poll", platform=platform, since=iso(since), read=report.read, stored=report.stored)
    return report


def _missing_customers(runtime: Runtime, client: WooCommerceClient, orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    wanted = {str(o.get("customer_id")) for o in orders if str(o.get("customer_id") or "0") not in ("0", "")}
    if not wanted:
        return []
    with runtime.sessions() as session:
        known = set(session.scalars(select(Member.external_id).where(Member.external_id.in_(wanted))))
    found = (client.customer(customer_id) for customer_id in sorted(wanted - known))
    return [customer for customer in found if customer is not None]


def configured_polls(settings: Settings) -> list[str]:
    return [p for p in POLLED if getattr(settings.shop, p) is not None]


@dramatiq.actor(broker=_placeholder, queue_name=INBOX_QUEUE, max_retries=0, time_limit=1_800_000)
def poll_shops() -> None:
    """The clock's poll of each configured WooCommerce or PrestaShop; a failed one is left to the next."""
    runtime = get_runtime()

    def enqueue(ids: list[int]) -> None:
        for entry_id in ids:
            apply_inbox_entry.send(entry_id)

    for platform in configured_polls(runtime.settings):
        try:
            if poll(runtime, platform, enqueue) is None:
                log.info("shop_sync.poll_skipped", platform=platform, reason="another poll is running")
        except (ShopApiError, ShopSyncError) as error:
            log.warning("shop_sync.poll_failed", platform=platform, error=str(error))


ACTORS: list[dramatiq.Actor[Any, Any]] = [poll_shops]
