"""The shop's inbox against the real PostgreSQL: deliveries stored once, applied once, in any order.

Entries are written as the web process writes them (``models.inbox.receive`` with the envelope of
``workers.inbox``) and applied by the worker's own function; the payloads are our fixtures shaped
like the platforms' (tests/data/shops/).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import func, select, text

from models.audit import AuditEntry
from models.db import transaction
from models.inbox import InboxEntry, InboxState, receive
from models.member import Member
from models.order import Order
from models.points import PointEntry
from tests.support.members import add_members, make_member
from workers.inbox import apply_entry, envelope

DATA = Path(__file__).resolve().parent.parent / "data" / "shops"
CUSTOMER_ID = "115310627314723954"
ORDER_ID = "820982911946154508"


def load(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def deliver(runtime, topic: str, payload: dict, *, event_id: str, platform: str = "shopify",
            triggered_at: str = "2026-11-01T15:20:00Z") -> int | None:
    """Store a delivery as the web process does; the entry's id, or None for a duplicate."""
    body = envelope(json.dumps(payload), event_id=event_id, triggered_at=triggered_at)
    with transaction(runtime.sessions) as session:
        return receive(session, dedup_key=f"{platform}:{topic}:{event_id}", platform=platform, topic=topic, body=body)


def apply_all(entry_ids) -> None:
    pending = [entry for entry in entry_ids if entry is not None]
    while pending:
        pending.extend(apply_entry(pending.pop(0)))


def entry(runtime, entry_id: int) -> InboxEntry:
    with runtime.sessions() as session:
        found = session.get(InboxEntry, entry_id)
        session.expunge(found)
        return found


def balance(runtime, external_id: str) -> int:
    with runtime.sessions() as session:
        return session.scalar(
            select(func.coalesce(func.sum(PointEntry.points), 0))
            .join(Member, Member.id == PointEntry.member_id).where(Member.external_id == external_id))


def test_the_same_delivery_three_times_is_stored_and_applied_once(runtime):
    first = deliver(runtime, "customers/create", load("shopify_customer"), event_id="e-1")
    assert deliver(runtime, "customers/create", load("shopify_customer"), event_id="e-1") is None
    assert deliver(runtime, "customers/create", load("shopify_customer"), event_id="e-1") is None
    apply_all([first])
    apply_all([first])  # a redelivered queue message changes nothing
    with runtime.sessions() as session:
        assert session.scalar(select(text("count(*)")).select_from(InboxEntry)) == 1
        member = session.scalars(select(Member).where(Member.external_id == CUSTOMER_ID)).one()
        assert (member.first_name, member.email, member.timezone) == ("Ada", "ada@example.com", "Europe/Paris")
        assert member.email_opt_in and member.email_consent_source == "shop:shopify"
        assert (member.birth_month, member.birth_day) == (12, 10)
    assert entry(runtime, first).state == InboxState.APPLIED


def test_an_order_before_its_customer_waits_then_earns_when_the_customer_arrives(runtime):
    order = deliver(runtime, "orders/paid", load("shopify_order"), event_id="e-order")
    apply_all([order])
    waiting = entry(runtime, order)
    assert waiting.state == InboxState.WAITING and waiting.reason == f"waits for customer {CUSTOMER_ID}"
    assert balance(runtime, CUSTOMER_ID) == 0

    customer = deliver(runtime, "customers/create", load("shopify_customer"), event_id="e-customer")
    apply_all([customer])  # wakes the order
    assert entry(runtime, order).state == InboxState.APPLIED
    assert balance(runtime, CUSTOMER_ID) == 90 + 50  # 90.00 EUR of merchandise, the first-order bonus


def test_a_partial_refund_takes_back_its_share_once_whichever_way_it_comes(runtime):
    apply_all([deliver(runtime, "customers/create", load("shopify_customer"), event_id="c")])
    apply_all([deliver(runtime, "orders/paid", load("shopify_order"), event_id="o")])
    assert balance(runtime, CUSTOMER_ID) == 140

    apply_all([deliver(runtime, "refunds/create", load("shopify_refund"), event_id="r")])
    assert balance(runtime, CUSTOMER_ID) == 140 - 45  # 45.00 of 90.00: half of the 90 points
    # The same refund riding on the order's update (financial_status partially_refunded) is the same refund.
    updated = {**load("shopify_order"), "financial_status": "partially_refunded",
               "updated_at": "2026-11-05T09:01:00-05:00", "refunds": [load("shopify_refund")]}
    apply_all([deliver(runtime, "orders/updated", updated, event_id="u")])
    assert balance(runtime, CUSTOMER_ID) == 95
    with runtime.sessions() as session:
        order = session.scalars(select(Order).where(Order.order_id == ORDER_ID)).one()
        assert order.refunded_amount == Decimal("45.00") and order.status == "placed"

    # Then the rest is refunded: only what is left of the order's 90 points goes.
    refunded = {**updated, "financial_status": "refunded", "updated_at": "2026-11-06T09:00:00-05:00"}
    apply_all([deliver(runtime, "orders/updated", refunded, event_id="u2")])
    # 90 earned, 45 + 45 taken back; the first order no longer stands, so its bonus goes back too.
    assert balance(runtime, CUSTOMER_ID) == 0


def test_an_older_version_never_overwrites_a_newer_one(runtime):
    newer = {**load("shopify_customer"), "first_name": "Augusta", "updated_at": "2026-11-02T10:00:00-05:00"}
    apply_all([deliver(runtime, "customers/update", newer, event_id="new")])
    older = {**load("shopify_customer"), "first_name": "Ada", "updated_at": "2026-11-01T10:00:00-05:00"}
    late = deliver(runtime, "customers/update", older, event_id="old")
    apply_all([late])
    assert entry(runtime, late).reason == "older than the version already applied"
    with runtime.sessions() as session:
        assert session.scalars(select(Member.first_name).where(Member.external_id == CUSTOMER_ID)).one() == "Augusta"


def test_an_opt_out_made_here_is_not_undone_by_an_older_shop_statement(runtime):
    apply_all([deliver(runtime, "customers/create", load("shopify_customer"), event_id="c")])
    unsubscribed_at = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    with transaction(runtime.sessions) as session:
        member = session.scalars(select(Member).where(Member.external_id == CUSTOMER_ID)).one()
        member.email_opt_in, member.email_consent_at, member.email_consent_source = False, unsubscribed_at, "link"

    # A name change in the shop carries the consent given in May: older than the opt-out.
    renamed = {**load("shopify_customer"), "first_name": "Augusta", "updated_at": "2026-11-03T10:00:00-05:00"}
    apply_all([deliver(runtime, "customers/update", renamed, event_id="rename")])
    with runtime.sessions() as session:
        member = session.scalars(select(Member).where(Member.external_id == CUSTOMER_ID)).one()
        assert member.first_name == "Augusta" and not member.email_opt_in

    # The member subscribes again in the shop, after the opt-out: the shop's later statement wins.
    again = {**renamed, "updated_at": "2026-11-04T10:00:00-05:00",
             "email_marketing_consent": {"state": "subscribed", "opt_in_level": "single_opt_in",
                                         "consent_updated_at": "2026-11-04T10:00:00-05:00"}}
    apply_all([deliver(runtime, "customers/update", again, event_id="again")])
    with runtime.sessions() as session:
        member = session.scalars(select(Member).where(Member.external_id == CUSTOMER_ID)).one()
        assert member.email_opt_in and member.email_consent_source == "shop:shopify"
        actions = session.scalars(select(AuditEntry.action).where(AuditEntry.member_id == member.id)).all()
        assert "optin.email" in actions


def test_a_guest_order_is_credited_to_the_member_with_that_email_else_not_applicable(runtime):
    add_members(runtime.sessions, make_member("M1", email="ada@example.com"))
    guest = {**load("shopify_order"), "customer": None}
    apply_all([deliver(runtime, "orders/paid", guest, event_id="g")])
    assert balance(runtime, "M1") == 140
    stranger = {**guest, "id": 5, "email": "nobody@example.com"}
    other = deliver(runtime, "orders/paid", stranger, event_id="g2")
    apply_all([other])
    assert entry(runtime, other).state == InboxState.APPLIED
    assert entry(runtime, other).reason == "a guest order whose email is no member's: not applicable"


def test_a_payload_that_cannot_apply_is_rejected_with_its_reason_and_can_be_retried(runtime):
    bad = {**load("shopify_order"), "financial_status": "something_new"}
    rejected = deliver(runtime, "orders/paid", bad, event_id="bad")
    apply_all([rejected])
    stored = entry(runtime, rejected)
    assert stored.state == InboxState.REJECTED
    assert stored.reason == "the order's financial_status 'something_new' is unknown"


def test_an_erased_member_leaves_no_trace_of_their_personal_data_in_any_table(runtime, pg_engine):
    apply_all([deliver(runtime, "customers/create", load("shopify_customer"), event_id="c")])
    apply_all([deliver(runtime, "orders/paid", load("shopify_order"), event_id="o")])
    apply_all([deliver(runtime, "customers/redact", load("shopify_customers_redact"), event_id="x")])

    dump = _every_text_value(pg_engine)
    for secret in ("ada@example.com", "+33612345678", "Lovelace", "Ada"):
        assert not [where for where, value in dump if secret in value], secret
    assert balance(runtime, CUSTOMER_ID) == 140  # the anonymous ledger stays for the accounts
    with runtime.sessions() as session:
        member = session.scalars(select(Member).where(Member.external_id == CUSTOMER_ID)).one()
        assert member.erased_at is not None and member.email is None and member.email_lookup is None


def _every_text_value(engine) -> list[tuple[str, str]]:
    """Every text value of every table, decrypted where our columns encrypt (what an attacker with the
    database and the keys would read)."""
    from models.personal_data import installed

    ring = installed()
    found = []
    with engine.connect() as connection:
        tables = connection.execute(text(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND data_type IN ('text', 'character varying', 'json', 'jsonb')")).all()
        for table, column in tables:
            for (value,) in connection.execute(text(f'SELECT "{column}"::text FROM "{table}" WHERE "{column}" IS NOT NULL')):
                found.append((f"{table}.{column}", value))
                if value.startswith("enc1:"):
                    found.append((f"{table}.{column} (decrypted)", ring.decrypt(value)))
    return found
