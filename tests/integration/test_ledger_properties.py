"""The points ledger's promises under any sequence of events: never negative, always the sum."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from models import ledger
from models.db import transaction
from models.member import Member
from models.order import Order, OrderStatus
from models.points import PointEntry
from services.program_ops import apply_pending_orders, expire_due_lots
from tests.support.members import make_member

START = datetime(2027, 1, 1, tzinfo=UTC)
_ids = itertools.count()

events = st.lists(
    st.one_of(
        st.tuples(st.just("order"), st.integers(min_value=0, max_value=500)),
        st.tuples(st.just("redeem"), st.integers(min_value=1, max_value=400)),
        st.tuples(st.just("refund"), st.integers(min_value=0, max_value=10)),
        st.tuples(st.just("wait"), st.integers(min_value=1, max_value=200)),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=events)
def test_balance_is_never_negative_and_always_the_sum_of_the_ledger(runtime, sequence):
    sessions, program = runtime.sessions, runtime.program
    external_id = f"P{next(_ids)}"
    with transaction(sessions) as session:
        session.add(make_member(external_id))
    with sessions() as session:
        member_pk = session.scalar(select(Member.id).where(Member.external_id == external_id))

    now, orders = START, []
    for kind, amount in sequence:
        with transaction(sessions) as session:
            if kind == "order":
                order_id = f"{external_id}-O{len(orders)}"
                session.add(Order(order_id=order_id, member_id=member_pk, placed_at=now, total=amount, currency="EUR"))
                orders.append(order_id)
            elif kind == "redeem":
                try:
                    with session.begin_nested():
                        ledger.debit(session, member_id=member_pk, entry_key=f"{external_id}-R{now.timestamp()}",
                                     kind="redeem", points=amount, occurred_at=now, source="test")
                except ledger.InsufficientPoints:
                    pass  # refused as a whole: the balance stays as it was
            elif kind == "refund" and orders:
                order = session.scalar(select(Order).where(Order.order_id == orders[amount % len(orders)]))
                order.status = OrderStatus.REFUNDED
            else:
                now += timedelta(days=amount)
            session.flush()
            apply_pending_orders(session, program, now=now)
            expire_due_lots(session, now=now)
        now += timedelta(minutes=1)

        with sessions() as session:
            balance = ledger.balance(session, member_pk)
            open_points = session.scalar(select(func.coalesce(func.sum(PointEntry.remaining), 0))
                                         .where(PointEntry.member_id == member_pk, PointEntry.remaining > 0))
            lots_negative = session.scalar(select(func.count()).where(PointEntry.member_id == member_pk,
                                                                      PointEntry.remaining < 0))
        assert balance >= 0
        assert balance == open_points  # what can still be spent is exactly what the ledger says is left
        assert lots_negative == 0
