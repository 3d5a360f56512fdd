"""Helpers to give members orders and points the way the shop would, through the real code paths."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import select

from models import ledger
from models.db import transaction
from models.member import Member
from models.order import Order, OrderStatus
from models.points import EntryKind
from services.program_ops import apply_pending_orders


def member_id(sessions, external_id: str) -> int:
    with sessions() as session:
        return session.scalar(select(Member.id).where(Member.external_id == external_id))


def place_order(runtime, external_id: str, order_id: str, placed_at: datetime, total: str,
                status: str = OrderStatus.PLACED) -> None:
    """Store an order as an import or an event would, then apply it (points, last order, tier)."""
    with transaction(runtime.sessions) as session:
        mid = session.scalar(select(Member.id).where(Member.external_id == external_id))
        order = session.scalar(select(Order).where(Order.order_id == order_id))
        if order is None:
            session.add(Order(order_id=order_id, member_id=mid, placed_at=placed_at, total=Decimal(total),
                              currency="EUR", status=status))
        else:
            order.status = status
        session.flush()
        apply_pending_orders(session, runtime.program, now=placed_at)


def give_lot(runtime, external_id: str, key: str, points: int, earned_at: datetime, expires_at: datetime) -> None:
    with transaction(runtime.sessions) as session:
        mid = session.scalar(select(Member.id).where(Member.external_id == external_id))
        ledger.credit(session, member_id=mid, entry_key=key, kind=EntryKind.EARN, points=points,
                      occurred_at=earned_at, expires_at=expires_at, source="test")


def redeem(runtime, external_id: str, key: str, points: int, at: datetime) -> None:
    with transaction(runtime.sessions) as session:
        mid = session.scalar(select(Member.id).where(Member.external_id == external_id))
        ledger.debit(session, member_id=mid, entry_key=key, kind=EntryKind.REDEEM, points=points, occurred_at=at, source="test")
