"""The per-message writes of a delivery batch (``workers.delivery_link``), on PostgreSQL (one
statement each, in autocommit) and on SQLite (the embedded default: transactions).

What a member and the ledger see: a claim is won once; an outcome and its reward are written
together or not at all; a row the sweeper already marked ``unknown`` keeps that state and gets no
reward; the connection is left usable (and, back in the pool, not in autocommit)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from models import ledger
from models.db import make_engine, make_sessionmaker, migrate
from models.delivery import Delivery, DeliveryState
from models.member import Member
from models.points import EntryKind, PointEntry
from tests.support.members import add_members, make_member
from workers.delivery_link import RECENT_CAPPED, Link

NOW = datetime(2027, 3, 1, 9, tzinfo=UTC)


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


class _Counter:
    """Statements sent and commits made on an engine (SQLAlchemy's events)."""

    def __init__(self, engine):
        self.statements, self.commits = 0, 0
        self.engine = engine
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._commit)

    def _statement(self, *args) -> None:
        self.statements += 1

    def _commit(self, *args) -> None:
        self.commits += 1

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine, "commit", self._commit)


def _states(sessions) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(Delivery.state).order_by(Delivery.id)))


def test_an_outcome_is_committed_with_the_next_claim_one_commit_a_message_and_never_two_sending(engine):
    sessions = make_sessionmaker(engine)
    deliveries = _planned(sessions, 3)
    link = Link(engine)
    counter = _Counter(engine)
    seen = []
    try:
        for delivery in deliveries:
            assert link.claim(delivery.id, NOW, NOW) is True
            seen.append(_states(sessions))  # what a kill here would leave: the message being sent
            link.record(delivery.id, DeliveryState.SENDING, _sent(), credit=_reward(delivery))
            seen.append(_states(sessions))  # after its send, before the next claim: still that one
        link.drop()  # the last outcome, alone
    finally:
        counter.close()
        link.drop()

    assert seen == [
        ["sending", "planned", "planned"], ["sending", "planned", "planned"],
        ["sent", "sending", "planned"], ["sent", "sending", "planned"],
        ["sent", "sent", "sending"], ["sent", "sent", "sending"],
    ]
    assert _states(sessions) == ["sent", "sent", "sent"]
    assert counter.commits == 4  # three messages: three claims (two carrying an outcome) and the last outcome
    if engine.dialect.name == "postgresql":
        assert counter.statements == 4 + len(seen)  # one statement a commit (and the test's reads)
    with sessions() as session:
        rewards = session.scalars(select(PointEntry.member_id).where(PointEntry.entry_key.like("reward:%"))).all()
    assert sorted(rewards) == sorted(d.member_id for d in deliveries)


def test_an_outcome_waiting_for_a_claim_is_written_in_the_claims_transaction_even_when_the_claim_loses(engine):
    sessions = make_sessionmaker(engine)
    first, second = _planned(sessions, 2)
    link = Link(engine)
    try:
        assert link.claim(first.id, NOW, NOW)
        link.record(first.id, DeliveryState.SENDING, _sent(), credit=_reward(first))
        with engine.begin() as connection:  # another worker took the second meanwhile
            connection.execute(Delivery.__table__.update().where(Delivery.id == second.id).values(state="sending"))
        assert link.claim(second.id, NOW, NOW) is False
        assert _states(sessions) == ["sent", "sending"]  # written although the claim lost
        link.record(second.id, DeliveryState.PLANNED, {"state": "skipped", "updated_at": NOW})
        assert link.claim(first.id, NOW, NOW, gate=lambda connection: True) is False  # a gated claim: a transaction
        assert _states(sessions) == ["sent", "sending"]  # that outcome's guard (planned) did not hold
    finally:
        link.drop()
    with sessions() as session:
        assert len(session.scalars(select(PointEntry).where(PointEntry.entry_key.like("reward:%"))).all()) == 1


def test_a_database_lost_under_the_combined_statement_still_records_the_outcome_once(pg_engine):
    sessions = make_sessionmaker(pg_engine)
    first, second = _planned(sessions, 2)
    link = Link(pg_engine)
    try:
        assert link.claim(first.id, NOW, NOW)
        link.record(first.id, DeliveryState.SENDING, _sent(), credit=_reward(first))
        pid = link.connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        link.connection.commit()
        with pg_engine.connect() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        with pytest.raises(OperationalError):
            link.claim(second.id, NOW, NOW)  # the claim's error is the caller's, as before
        assert _states(sessions) == ["sent", "planned"]  # the outcome was written again, alone
    finally:
        link.drop()
    with sessions() as session:
        assert len(session.scalars(select(PointEntry).where(PointEntry.entry_key.like("reward:%"))).all()) == 1


def test_the_compiled_text_refuses_a_statement_rendered_at_execution_and_processes_values_like_execute(pg_engine):
    sessions = make_sessionmaker(pg_engine)
    (delivery,) = _planned(sessions, 1)
    link = Link(pg_engine)
    try:
        with pytest.raises(ValueError, match="capped, state_1 at execution"):  # expanding IN
            link._autocommit(RECENT_CAPPED, {"member_id": 1, "delivery_id": 1, "capped": ["a"], "since": NOW})
        with pytest.raises(ValueError, match="naive datetime"):  # UtcDateTime's processor ran
            link.claim(delivery.id, NOW, NOW.replace(tzinfo=None))
        paris = timezone(timedelta(hours=1))
        assert link.claim(delivery.id, NOW.astimezone(paris), NOW.astimezone(paris))
    finally:
        link.drop()
    with sessions() as session:
        assert session.scalar(select(Delivery.sending_at)) == NOW
