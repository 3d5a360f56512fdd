"""The shop's ways in, in the ``web`` process: Shopify's and WooCommerce's webhooks, and our JSON API.

Each request is checked in this order, before anything is stored: its size (the app's limit: 413),
its signature or key, computed off the event loop (401), its topic or events (400); then it is
written to the inbox (``models/inbox.py``) in the transaction that answers 2xx, and a worker is told
after the commit. The same delivery twice is one inbox row and answers 200 again. The answers are
JSON, one sentence each, and never repeat what the request carried.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import structlog
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.settings import Settings
from models.db import transaction
from models.inbox import receive
from shops import api, shopify, woocommerce
from shops.events import PayloadProblem
from shops.signatures import valid_bearer, valid_body_signature

log = structlog.get_logger("loyalty.web.shop")


def _error(status: int, sentence: str) -> JSONResponse:
    return JSONResponse({"error": sentence}, status_code=status)


def _json(body: bytes):
    """The parsed body, or None when it is not JSON (too deep included)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def shop_routes(settings: Settings, sessions: sessionmaker[Session], notify: Callable[[list[int]], None]) -> list[Route]:
    """The routes; ``notify`` is told the ids of new inbox entries once they are committed."""
    shop = settings.shop

    def store(items: list[tuple[str, str, str, str]]) -> tuple[int, int]:
        """Write (key, platform, topic, body) entries; (new, duplicates). Blocking: run in a thread."""
        with transaction(sessions) as session:
            ids = [receive(session, dedup_key=key, platform=platform, topic=topic, body=body)
                   for key, platform, topic, body in items]
        new = [entry for entry in ids if entry is not None]
        if new:
            notify(new)
        return len(new), len(ids) - len(new)

    def accepted(new: int, duplicates: int, status: int = 200) -> JSONResponse:
        return JSONResponse({"accepted": new, "duplicates": duplicates}, status_code=status)

    async def shopify_webhook(request: Request) -> Response:
        if not shop.shopify_secrets:
            return _error(404, "Shopify webhooks are not configured here: set SHOPIFY_WEBHOOK_SECRET.")
        body = await request.body()
        signature = request.headers.get("x-shopify-hmac-sha256")
        if not await run_in_threadpool(valid_body_signature, body, signature, shop.shopify_secrets):
            log.warning("shopify.forged", topic=(request.headers.get("x-shopify-topic") or "")[:64])
            return _error(401, "The X-Shopify-Hmac-Sha256 signature does not match the body; "
                               "check SHOPIFY_WEBHOOK_SECRET (the app's client secret).")
        topic = request.headers.get("x-shopify-topic") or ""
        if topic not in shopify.TOPICS:
            return _error(400, "This webhook topic is not one the loyalty program subscribes to; "
                               "remove that subscription.")
        event_id = request.headers.get("x-shopify-event-id") or request.headers.get("x-shopify-webhook-id")
        if not event_id or len(event_id) > 100:
            return _error(400, "The webhook has no X-Shopify-Event-Id (or X-Shopify-Webhook-Id) header.")
        try:
            raw = body.decode("utf-8")
        except UnicodeDecodeError:
            return _error(400, "The body is not UTF-8 JSON.")
        from workers.inbox import envelope

        stored = envelope(raw, event_id=event_id, triggered_at=request.headers.get("x-shopify-triggered-at"))
        new, duplicates = await run_in_threadpool(
            store, [(f"shopify:{topic}:{event_id}", shopify.PLATFORM, topic, stored)])
        return accepted(new, duplicates)

    async def woocommerce_webhook(request: Request) -> Response:
        body = await request.body()
        signature = request.headers.get("x-wc-webhook-signature")
        if signature is None and body.startswith(b"webhook_id="):
            return Response(status_code=200)  # the creation ping: unsigned, answered 200 and nothing else
        if not shop.woocommerce_secrets:
            return _error(404, "WooCommerce webhooks are not configured here: set WOOCOMMERCE_WEBHOOK_SECRET.")
        if not await run_in_threadpool(valid_body_signature, body, signature, shop.woocommerce_secrets):
            log.warning("woocommerce.forged", topic=(request.headers.get("x-wc-webhook-topic") or "")[:64])
            return _error(401, "The X-WC-Webhook-Signature signature does not match the body; "
                               "check WOOCOMMERCE_WEBHOOK_SECRET (the webhook's secret).")
        topic = request.headers.get("x-wc-webhook-topic") or ""
        if topic not in woocommerce.TOPICS:
            return _error(400, "This webhook topic is not one the loyalty program subscribes to; "
                               "use order.* and customer.* topics.")
        payload = await run_in_threadpool(_json, body)
        try:
            key = woocommerce.delivery_key(topic, payload)
        except PayloadProblem as problem:
            return _error(400, f"The webhook cannot be read: {problem}.")
        from workers.inbox import envelope

        new, duplicates = await run_in_threadpool(
            store, [(key, woocommerce.PLATFORM, topic, envelope(body.decode("utf-8", "replace")))])
        return accepted(new, duplicates)

    async def api_events(request: Request) -> Response:
        if not shop.api_keys:
            return _error(404, "The events API is not configured here: set LOYALTY_API_KEYS.")
        if not await run_in_threadpool(valid_bearer, request.headers.get("authorization"), shop.api_keys):
            return _error(401, "Send one of LOYALTY_API_KEYS as Authorization: Bearer KEY.")
        body = await request.body()
        document = await run_in_threadpool(_json, body)
        if document is None:
            return _error(400, "The body is not JSON; send one event object or a list of them.")
        try:
            items = api.envelopes(document)
            for item in items:
                api.parse(item)
        except PayloadProblem as problem:
            return _error(400, f"Nothing was accepted: {problem}.")
        from workers.inbox import envelope

        entries = [(api.dedup_key(item), api.PLATFORM, item["event"], envelope(json.dumps(item)))
                   for item in items]
        new, duplicates = await run_in_threadpool(store, entries)
        return accepted(new, duplicates, status=202)

    return [
        Route("/webhooks/shopify", shopify_webhook, methods=["POST"]),
        Route("/webhooks/woocommerce", woocommerce_webhook, methods=["POST"]),
        Route("/api/events", api_events, methods=["POST"]),
    ]
