"""Two workers applying inbox entries at once, against the real PostgreSQL: an order applied while its
customer is being applied in another transaction is not left waiting for ever.

The interleaving is forced with a row lock the test holds: the customer's transaction has stored the
member and is held in its wake (on an earlier order's waiting entry) while the next order is applied.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from sqlalchemy import select, text

from models.db import transaction
from models.inbox import InboxEntry, InboxState, receive
from workers.inbox import apply_entry, envelope

DATA = Path(__file__).resolve().parent.parent / "data" / "shops"


def load(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def deliver(runtime, topic: str, payload: dict, event_id: str) -> int:
    body = envelope(json.dumps(payload), event_id=event_id, triggered_at="2026-11-01T15:20:00Z")
    with transaction(runtime.sessions) as session:
        return receive(session, dedup_key=f"shopify:{topic}:{event_id}", platform="shopify", topic=topic, body=body)


def lock_waits(runtime) -> int:
    """Backends of this database waiting on a lock (a row or an advisory lock)."""
    with runtime.sessions() as session:
        return session.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                   "AND wait_event_type = 'Lock'"))


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_an_order_applied_while_its_customer_is_being_applied_is_woken(runtime):
    first_order, second_order = load("shopify_order"), load("shopify_order")
    second_order["id"] = 820982911946154509
    earlier = deliver(runtime, "orders/paid", first_order, "e-order-1")
    assert apply_entry(earlier) == []  # no customer yet: it waits, committed
    customer = deliver(runtime, "customers/create", load("shopify_customer"), "e-customer")
    later = deliver(runtime, "orders/paid", second_order, "e-order-2")

    woken: list[int] = []
    with runtime.sessions() as holder:
        # Hold the earlier order's entry: the customer's wake stops on it, its member stored, uncommitted.
        holder.scalars(select(InboxEntry).where(InboxEntry.id == earlier).with_for_update()).one()
        member_thread = threading.Thread(target=lambda: woken.extend(apply_entry(customer)))
        member_thread.start()
        assert wait_until(lambda: lock_waits(runtime) >= 1), "the customer's transaction never reached its wake"
        order_thread = threading.Thread(target=lambda: woken.extend(apply_entry(later)))
        order_thread.start()
        # The order either finishes (it saw no customer) or waits for the customer's transaction.
        wait_until(lambda: not order_thread.is_alive() or lock_waits(runtime) >= 2)
        holder.rollback()
    member_thread.join(10)
    order_thread.join(10)
    assert not member_thread.is_alive() and not order_thread.is_alive()
    pending = list(woken)
    while pending:  # what the actor enqueues after each commit
        pending.extend(apply_entry(pending.pop(0)))

    with runtime.sessions() as session:
        states = dict(session.execute(select(InboxEntry.id, InboxEntry.state)).all())
    assert states == {earlier: InboxState.APPLIED, customer: InboxState.APPLIED, later: InboxState.APPLIED}
