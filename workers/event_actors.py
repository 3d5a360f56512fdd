"""Live events from the shop's integration: members, orders, refunds and redemptions.

Each event carries the same fields as a row of the matching import (see the README), goes through
the same parsing and upsert, and is therefore idempotent: a retried or duplicated event changes
nothing twice. An event that cannot be applied is logged with the reason (never with personal data)
and dropped rather than retried, since retrying cannot fix it.
"""

from __future__ import annotations

from typing import Any

import dramatiq
import structlog
from sqlalchemy import update

from core.calendar import parse_instant
from models.base import utcnow
from models.db import rows_changed, transaction
from models.order import Order, OrderStatus
from services.imports import apply_record
from services.imports.rows import RowProblem
from services.program_ops import apply_pending_orders
from workers.actors import _placeholder
from workers.runtime import get_runtime

log = structlog.get_logger("loyalty.events")

EVENT_QUEUE = "events"
_options: dict[str, Any] = {"broker": _placeholder, "queue_name": EVENT_QUEUE, "max_retries": 10, "min_backoff": 1_000,
                           "max_backoff": 60_000}


def _apply(kind: str, event: str, fields: dict[str, Any]) -> None:
    runtime = get_runtime()
    settings = runtime.settings
    try:
        with transaction(runtime.sessions) as session:
            outcome = apply_record(session, kind, fields, source=f"event:{event}", program=runtime.program,
                                   default_timezone=settings.default_timezone, default_locale=settings.default_locale)
            if kind == "orders":
                apply_pending_orders(session, runtime.program, now=utcnow())
    except RowProblem as problem:
        log.error("event.rejected", kind=event, reason=str(problem))
        return
    log.info("event.applied", kind=event, outcome=outcome)


@dramatiq.actor(**_options)
def member_updated(member: dict[str, Any]) -> None:
    """A member was created or changed in the shop (fields as in ``loyalty import members``)."""
    _apply("members", "member_updated", member)


@dramatiq.actor(**_options)
def order_placed(order: dict[str, Any]) -> None:
    """An order was placed (fields as in ``loyalty import orders``): points, last order, tier."""
    _apply("orders", "order_placed", {**order, "status": order.get("status") or OrderStatus.PLACED})


@dramatiq.actor(**_options)
def order_refunded(order_id: str, refunded_at: str | None = None) -> None:
    """An order was refunded: its points are taken back (never below zero), last order and tier move."""
    runtime = get_runtime()
    now = parse_instant(refunded_at) if refunded_at else utcnow()
    with transaction(runtime.sessions) as session:
        found = rows_changed(session.execute(
            update(Order).where(Order.order_id == order_id).values(status=OrderStatus.REFUNDED, updated_at=now)
        ))
        if found:
            apply_pending_orders(session, runtime.program, now=now)
    if not found:
        log.error("event.rejected", kind="order_refunded", reason="unknown order id")


@dramatiq.actor(**_options)
def points_redeemed(entry: dict[str, Any]) -> None:
    """Points were spent (fields as in ``loyalty import points``, kind redeem): oldest lots first."""
    _apply("points", "points_redeemed", {**entry, "kind": "redeem"})


ACTORS = [member_updated, order_placed, order_refunded, points_redeemed]
