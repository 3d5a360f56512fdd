"""Live events from the shop, through a real dramatiq worker on the real Redis."""

from __future__ import annotations

import time
from datetime import UTC

import pytest
from sqlalchemy import select

from models import ledger
from models.member import Member
from models.tier import TierChange
from tests.support.queue import worker_on_redis
from workers.event_actors import member_updated, order_placed, order_refunded, points_redeemed


@pytest.fixture
def worker(env, runtime, redis_namespace):
    with worker_on_redis(env, redis_namespace) as broker:
        yield broker


def settle(broker) -> None:
    broker.join("events", timeout=30_000)
    time.sleep(0.1)


def member_state(sessions, external_id: str):
    with sessions() as session:
        member = session.scalar(select(Member).where(Member.external_id == external_id))
        if member is None:
            return None
        changes = session.scalars(select(TierChange.to_tier).where(TierChange.member_id == member.id)).all()
        return member, ledger.balance(session, member.id), changes


def test_a_member_their_orders_a_refund_and_a_redemption_arrive_as_events(worker, pg_sessions):
    member_updated.send({"external_id": "E1", "email": "e1@members.example", "timezone": "Europe/Paris",
                         "locale": "fr_FR", "email_opt_in": "true", "birthday": "--03-14"})
    settle(worker)
    order_placed.send({"order_id": "EO1", "member_id": "E1", "placed_at": "2027-05-01T10:00:00Z", "total": "420.50",
                       "currency": "eur"})
    order_placed.send({"order_id": "EO2", "member_id": "E1", "placed_at": "2027-05-02T10:00:00Z", "total": "99.99",
                       "currency": "EUR"})
    order_placed.send({"order_id": "EO2", "member_id": "E1", "placed_at": "2027-05-02T10:00:00Z", "total": "99.99",
                       "currency": "EUR"})  # the same event twice: applied once
    settle(worker)
    member, balance, changes = member_state(pg_sessions, "E1")
    assert (member.birth_month, member.birth_day, member.locale) == (3, 14, "fr_FR")
    assert balance == 420 + 99 + 50  # a point per whole euro, and the first-order bonus
    assert member.tier == "silver" and changes == ["silver"]  # 520.49 of spend over 365 days
    assert member.last_order_local_date == "2027-05-02"

    points_redeemed.send({"entry_id": "ER1", "member_id": "E1", "points": "500", "occurred_at": "2027-05-03T09:00:00Z"})
    settle(worker)
    order_refunded.send("EO1", "2027-05-04T09:00:00Z")
    settle(worker)
    member, balance, _ = member_state(pg_sessions, "E1")
    assert balance == 0  # 69 were left, the refund took them back and recorded the 351 already spent
    assert member.last_order_local_date == "2027-05-02"


def test_an_event_that_cannot_apply_is_dropped_with_its_reason_and_changes_nothing(worker, pg_sessions, capsys):
    order_placed.send({"order_id": "X1", "member_id": "NOBODY", "placed_at": "2027-05-01T10:00:00Z", "total": "10",
                       "currency": "EUR"})
    member_updated.send({"external_id": "E2", "email": "not-an-email", "timezone": "Mars/Base"})
    settle(worker)
    assert member_state(pg_sessions, "E2") is None
    output = capsys.readouterr().out
    assert output.count("event.rejected") == 2
    assert "not-an-email" not in output


def test_two_first_orders_of_one_member_applied_at_once_neither_deadlock_nor_double_the_bonus(runtime, pg_sessions):
    """Each transaction stores its order (the foreign key takes a key-share lock on the member) before
    applying it under the member's row lock; a lock that conflicted with key-share made the two wait
    for each other (PostgreSQL's deadlock detector killed one)."""
    import threading
    from datetime import datetime
    from decimal import Decimal

    from models.db import transaction
    from models.order import Order
    from services.program_ops import apply_pending_orders
    from tests.support.members import add_members, make_member

    add_members(pg_sessions, make_member("RACE"))
    with pg_sessions() as session:
        member_pk = session.scalar(select(Member.id).where(Member.external_id == "RACE"))
    both_stored = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def place(order_id: str) -> None:
        try:
            with transaction(pg_sessions) as session:
                session.add(Order(order_id=order_id, member_id=member_pk, total=Decimal("30"), currency="EUR",
                                  placed_at=datetime(2027, 5, 1, 10, tzinfo=UTC), status="placed"))
                session.flush()
                both_stored.wait()  # each holds its key-share lock on the member before applying
                apply_pending_orders(session, runtime.program, now=datetime(2027, 5, 1, 11, tzinfo=UTC))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=place, args=(f"R{i}",)) for i in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    with pg_sessions() as session:
        assert ledger.balance(session, member_pk) == 30 + 30 + 50  # the first-order bonus once


def test_an_earlier_order_applied_after_a_later_one_still_counts_toward_its_tier(runtime, pg_sessions):
    """Webhooks out of order, with the shop's clock a little ahead of ours: the later order (99.99) is
    applied first, then the earlier one (420.50); together they reach silver (500), and the upgrade
    must not be lost because the earlier order's own instant does not see the later one."""
    from datetime import datetime
    from decimal import Decimal

    from models.db import transaction
    from models.order import Order
    from services.program_ops import apply_pending_orders
    from tests.support.members import add_members, make_member

    add_members(pg_sessions, make_member("LATE"))
    with pg_sessions() as session:
        member_pk = session.scalar(select(Member.id).where(Member.external_id == "LATE"))
    now = datetime(2027, 5, 1, 9, 59, 58, tzinfo=UTC)  # our clock, two seconds behind the shop's
    for order_id, placed, total in (("L2", datetime(2027, 5, 1, 10, 0, 5, tzinfo=UTC), "99.99"),
                                    ("L1", datetime(2027, 5, 1, 10, 0, 0, tzinfo=UTC), "420.50")):
        with transaction(pg_sessions) as session:
            session.add(Order(order_id=order_id, member_id=member_pk, total=Decimal(total), currency="EUR",
                              placed_at=placed, status="placed"))
            session.flush()
            apply_pending_orders(session, runtime.program, now=now)
    member, _, changes = member_state(pg_sessions, "LATE")
    assert member.tier == "silver" and changes == ["silver"]
