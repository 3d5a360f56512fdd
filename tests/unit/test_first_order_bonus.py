"""The first-order bonus goes with the member's first order that stands (services/program_ops.py): an
order refunded or cancelled whole gives it back, and the next order placed earns it; while the member
holds a bonus (spent points are not recoverable) no other is given. On the embedded default's SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from campaigns.program import PointsRules, Program, TierLevel, TierRules
from models import ledger
from models.member import Member
from models.order import Order, OrderStatus
from models.points import EntryKind, PointEntry
from services.program_ops import apply_pending_orders, reverse_refund
from tests.support.members import make_member

PROGRAM = Program(points=PointsRules(first_order_bonus=50),
                  tiers=TierRules(levels=[TierLevel(name="bronze", min_spend=Decimal(0))]))
START = datetime(2027, 3, 1, 10, tzinfo=UTC)


@pytest.fixture
def member(sqlite_session: Session) -> Member:
    ada = make_member("M1")
    sqlite_session.add(ada)
    sqlite_session.flush()
    return ada


def place(session: Session, member: Member, order_id: str, total: int, day: int) -> Order:
    order = Order(order_id=order_id, member_id=member.id, placed_at=START + timedelta(days=day), total=Decimal(total),
                  currency="EUR", status=OrderStatus.PLACED)
    session.add(order)
    session.flush()
    apply_pending_orders(session, PROGRAM, now=order.placed_at)
    return order


def settle(session: Session, order: Order, status: str) -> None:
    order.status = status
    apply_pending_orders(session, PROGRAM, now=order.placed_at + timedelta(hours=1))


def entries(session: Session, member: Member) -> list[tuple[str, int]]:
    return sorted((key, points) for key, points in session.execute(
        select(PointEntry.entry_key, PointEntry.points).where(PointEntry.member_id == member.id)))


def redeem(session: Session, member: Member, points: int) -> None:
    ledger.debit(session, member_id=member.id, entry_key=f"redeem:{points}", kind=EntryKind.REDEEM, points=points,
                 occurred_at=START + timedelta(days=1), source="test")


@pytest.mark.parametrize("status", [OrderStatus.REFUNDED, OrderStatus.CANCELLED])
def test_a_first_order_given_back_whole_gives_its_bonus_back_and_the_next_order_earns_it(sqlite_session, member,
                                                                                       status):
    first = place(sqlite_session, member, "O1", 30, day=0)
    assert entries(sqlite_session, member) == [("first_order:M1", 50), ("order:O1", 30)]
    settle(sqlite_session, first, status)
    place(sqlite_session, member, "O2", 20, day=2)
    place(sqlite_session, member, "O3", 10, day=3)
    assert entries(sqlite_session, member) == [
        ("first_order:M1", 50), ("first_order:M1:O2", 50), ("first_order_back:M1", -50),
        ("order:O1", 30), ("order:O2", 20), ("order:O3", 10), ("refund:O1", -30)]
    assert ledger.balance(sqlite_session, member.id) == 20 + 10 + 50


def test_a_first_order_refunded_after_a_second_was_placed_hands_its_bonus_to_the_second(sqlite_session, member):
    first = place(sqlite_session, member, "O1", 100, day=0)
    reverse_refund(sqlite_session, member, first, refund_id="R1", amount=Decimal(40), now=START + timedelta(days=1))
    second = place(sqlite_session, member, "O2", 20, day=2)
    assert ledger.balance(sqlite_session, member.id) == 100 - 40 + 50 + 20  # one bonus: the first order stands
    settle(sqlite_session, first, OrderStatus.REFUNDED)  # now it does not: O2 is the first order that stands
    place(sqlite_session, member, "O3", 10, day=3)
    assert [e for e in entries(sqlite_session, member) if "first_order" in e[0]] == [
        ("first_order:M1", 50), ("first_order:M1:O2", 50), ("first_order_back:M1", -50)]
    settle(sqlite_session, second, OrderStatus.CANCELLED)  # and again: to O3
    assert [e for e in entries(sqlite_session, member) if "first_order" in e[0]] == [
        ("first_order:M1", 50), ("first_order:M1:O2", 50), ("first_order:M1:O3", 50),
        ("first_order_back:M1", -50), ("first_order_back:M1:O2", -50)]
    assert ledger.balance(sqlite_session, member.id) == 10 + 50


def test_a_bonus_spent_before_its_order_was_refunded_is_still_held_and_no_second_one_is_given(sqlite_session, member):
    first = place(sqlite_session, member, "O1", 10, day=0)  # 10 + the bonus 50
    redeem(sqlite_session, member, 30)  # 30 left
    settle(sqlite_session, first, OrderStatus.REFUNDED)  # takes back the 10, then 20 of the bonus's 50
    back = sqlite_session.scalars(select(PointEntry).where(PointEntry.entry_key == "first_order_back:M1")).one()
    assert back.points == -20 and back.source == "first_order_back:O1 (30 points already spent, not recoverable)"
    place(sqlite_session, member, "O2", 20, day=2)
    assert ("first_order:M1:O2", 50) not in entries(sqlite_session, member)
    assert ledger.balance(sqlite_session, member.id) == 20
