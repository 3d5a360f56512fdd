"""The per-message writes of a delivery batch (``workers.delivery_link``), on PostgreSQL (one
statement each, in autocommit) and on SQLite (the embedded default: transactions).

What a member and the ledger see: a claim is won once; an outcome and its reward are written
together or not at all; a row the sweeper already marked ``unknown`` keeps that state and gets no
reward; the connection is left usable (and, back in the pool, not in autocommit)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from models import ledger
from models.db import make_engine, make_sessionmaker, migrate
from models.delivery import Delivery, DeliveryState
from models.member import Member
from models.points import EntryKind, PointEntry
from tests.support.members import add_members, make_member
from workers.delivery_link import Link

NOW = datetime(2027, 3, 1, 9, tzinfo=timezone.utc)


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request, tmp_path):
    if request.param == "postgresql":
        yield request.getfixturevalue("pg_engine")
        return
    engine = make_engine(f"sqlite:///{tmp_path / 'loyalty.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


def _planned(sessions, count: int) -> list[Delivery]:
    add_members(sessions, *(make_member(f"L{n}") for n in range(count)))
    with sessions() as session, session.begin():
        members = session.scalars(select(Member.id).order_by(Member.id)).all()
        rows = [Delivery(occurrence_key=f"birthday:L{n}:2027", campaign="birthday", member_id=member_id, channel="email",
                         send_at=NOW - timedelta(minutes=1), reward_points=250, occurrence_date="2027-03-01")
                for n, member_id in enumerate(members)]
        session.add_all(rows)
    with sessions() as session:
        return session.scalars(select(Delivery).order_by(Delivery.id)).all()


def _reward(delivery: Delivery) -> dict:
    return ledger.lot_values(member_id=delivery.member_id, entry_key=f"reward:{delivery.occurrence_key}",
                             kind=EntryKind.EARN, points=250, occurred_at=NOW, expires_at=None, source="campaign:birthday")


def _sent() -> dict:
    return {"state": DeliveryState.SENT, "reason": None, "detail": None, "updated_at": NOW, "finished_at": NOW,
            "provider_message_id": "<id@shop.example>"}


def test_a_claim_is_won_once_and_an_outcome_carries_its_reward_exactly_once(engine):
    sessions = make_sessionmaker(engine)
    first, second = _planned(sessions, 2)
    link = Link(engine)
    try:
        assert link.claim(first.id, NOW, NOW) is True
        assert link.claim(first.id, NOW, NOW) is False  # already sending: nobody sends it twice
        assert link.claim(second.id, NOW - timedelta(hours=1), NOW) is False  # not due at that instant

        link.move(first.id, DeliveryState.SENDING, _sent(), credit=_reward(first))
        link.move(first.id, DeliveryState.SENDING, _sent(), credit=_reward(first))  # a repeat writes nothing
        link.defer(second.id, NOW + timedelta(hours=8))
    finally:
        link.drop()

    with sessions() as session:
        rows = {d.id: d for d in session.scalars(select(Delivery))}
        rewards = session.scalars(select(PointEntry).where(PointEntry.entry_key.like("reward:%"))).all()
    assert (rows[first.id].state, rows[first.id].attempts, rows[first.id].provider_message_id) == ("sent", 1, "<id@shop.example>")
    assert [(r.member_id, r.points, r.remaining, r.kind) for r in rewards] == [(first.member_id, 250, 250, "earn")]
    assert rewards[0].created_at is not None
    assert (rows[second.id].state, rows[second.id].send_at) == ("planned", NOW + timedelta(hours=8))


def test_an_outcome_for_a_row_marked_unknown_meanwhile_changes_nothing_and_grants_nothing(engine):
    sessions = make_sessionmaker(engine)
    (delivery,) = _planned(sessions, 1)
    link = Link(engine)
    try:
        assert link.claim(delivery.id, NOW, NOW)
        with engine.begin() as connection:  # the sweeper gave up on it
            connection.execute(Delivery.__table__.update().where(Delivery.id == delivery.id).values(state="unknown"))
        link.move(delivery.id, DeliveryState.SENDING, _sent(), credit=_reward(delivery))
    finally:
        link.drop()
    with sessions() as session:
        assert session.scalar(select(Delivery.state).where(Delivery.id == delivery.id)) == "unknown"
        assert session.scalars(select(PointEntry).where(PointEntry.entry_key.like("reward:%"))).all() == []


def test_a_transaction_on_the_link_is_atomic_and_the_pooled_connection_is_handed_back_as_it_came(engine):
    sessions = make_sessionmaker(engine)
    (delivery,) = _planned(sessions, 1)
    link = Link(engine)

    def fails_after_the_claim(connection) -> bool:
        raise RuntimeError("a fault after the claim, in its transaction")

    try:
        with pytest.raises(RuntimeError):
            link.claim(delivery.id, NOW, NOW, gate=fails_after_the_claim)
        assert link.claim(delivery.id, NOW, NOW) is True  # the failed claim was rolled back whole
    finally:
        link.drop()
    with sessions() as session:
        assert session.scalar(select(Delivery.attempts).where(Delivery.id == delivery.id)) == 1
    with engine.connect() as connection:  # the pool's connection is not left in autocommit
        assert getattr(connection.connection.driver_connection, "autocommit", False) is False
