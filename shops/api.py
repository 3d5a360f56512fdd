"""Our own signed JSON API for any other shop (or a PrestaShop module): ``POST /api/events``.

A body is one event or a JSON list of them, each shaped
``{"event": "order_placed", "idempotency_key": "...", "order": {...}}``: the object is named after
what it carries (``member``, ``order``, ``refund``, ``entry``) and holds the fields of the matching
``loyalty import``. An optional ``occurred_at`` orders versions of one member or order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from shops.common import optional_instant
from shops.events import EventKind, OrderState, PayloadProblem, ShopEvent

PLATFORM = "api"

#: event name -> (the object it carries, the kind of event it is)
EVENTS: Mapping[str, tuple[str, EventKind]] = {
    "member_updated": ("member", EventKind.MEMBER),
    "order_placed": ("order", EventKind.ORDER),
    "order_refunded": ("refund", EventKind.REFUND),
    "points_redeemed": ("entry", EventKind.REDEMPTION),
}
MAX_EVENTS = 500  # in one request
_KEY = re.compile(r"^[\x21-\x7e]{1,120}$")  # printable ASCII, no spaces


def envelopes(document: Any) -> list[Mapping[str, Any]]:
    """The events of a request body (one object or a list); :class:`PayloadProblem` says which is wrong."""
    items = document if isinstance(document, list) else [document]
    if not items:
        raise PayloadProblem("the body is an empty list; send one event or a list of events")
    if len(items) > MAX_EVENTS:
        raise PayloadProblem(f"the body holds {len(items):,} events; send at most {MAX_EVENTS} at once")
    for position, item in enumerate(items, start=1):
        where = f"event {position}" if isinstance(document, list) else "the event"
        if not isinstance(item, dict):
            raise PayloadProblem(f"{where} is not a JSON object")
        name = item.get("event")
        if not isinstance(name, str) or name not in EVENTS:
            raise PayloadProblem(f"{where} has the event {name!r}; use one of {', '.join(EVENTS)}")
        key = item.get("idempotency_key")
        if not isinstance(key, str) or not _KEY.match(key):
            raise PayloadProblem(f"{where} needs an idempotency_key of 1 to 120 printable characters without spaces")
        carried, _ = EVENTS[name]
        if not isinstance(item.get(carried), dict):
            raise PayloadProblem(f"{where} ({name}) needs a {carried!r} object with the fields of the matching import")
    return items


def dedup_key(envelope: Mapping[str, Any]) -> str:
    return f"{PLATFORM}:{envelope['idempotency_key']}"


def parse(envelope: Mapping[str, Any]) -> ShopEvent:
    """One checked envelope as the event it means."""
    name = envelope["event"]
    carried, kind = EVENTS[name]
    raw = envelope[carried]
    fields = {str(k): "" if v is None else str(v) for k, v in raw.items()}
    version = optional_instant(envelope.get("occurred_at"), "occurred_at")
    key = dedup_key(envelope)
    if kind is EventKind.MEMBER:
        external_id = fields.get("external_id", "").strip()
        if not external_id:
            raise PayloadProblem("member.external_id is missing")
        return ShopEvent(PLATFORM, kind, key, f"customer:{external_id}", version, fields, member_id=external_id)
    if kind is EventKind.ORDER:
        order_id, member_id = fields.get("order_id", "").strip(), fields.get("member_id", "").strip()
        if not order_id or not member_id:
            raise PayloadProblem(f"order.{'order_id' if not order_id else 'member_id'} is missing")
        status = fields.pop("status", "").strip().lower()
        state = {"": OrderState.PAID, "placed": OrderState.PAID, "paid": OrderState.PAID,
                 "pending": OrderState.PENDING, "refunded": OrderState.REFUNDED,
                 "cancelled": OrderState.CANCELLED}.get(status)
        if state is None:
            raise PayloadProblem(f"order.status {status!r} is not one of placed, pending, refunded, cancelled")
        fields["state"] = state.value
        return ShopEvent(PLATFORM, kind, key, f"order:{order_id}", version, fields, member_id=member_id)
    if kind is EventKind.REFUND:
        order_id = fields.get("order_id", "").strip()
        if not order_id:
            raise PayloadProblem("refund.order_id is missing")
        fields.setdefault("refund_id", envelope["idempotency_key"])
        fields.setdefault("amount", "")  # empty: the whole order
        if not fields.get("refunded_at"):
            fields["refunded_at"] = envelope.get("occurred_at") or ""
        return ShopEvent(PLATFORM, kind, key, f"order:{order_id}", version, fields)
    member_id = fields.get("member_id", "").strip()
    if not member_id:
        raise PayloadProblem("entry.member_id is missing")
    fields["kind"] = "redeem"
    fields.setdefault("entry_id", envelope["idempotency_key"])
    return ShopEvent(PLATFORM, kind, key, f"customer:{member_id}", version, fields, member_id=member_id)
