"""How planning runs an audience statement on PostgreSQL: the zones it reads on every tick (a member
in a zone nobody had is planned at once), the frequency cap as a join (the same rows, states and
reasons as SQLite), and the kinds that are planned for each instant's values (never a prepared,
generic plan)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from campaigns.audience_sql import PlanContext
from campaigns.kinds import kind_of
from campaigns.loader import load_campaigns
from campaigns.program import load_program
from core.settings import DEFAULT_CAMPAIGNS_DIR, DEFAULT_PROGRAM_FILE
from models.delivery import Delivery
from models.member import Member
from tests.integration.test_audience_shapes import INSTANTS, ZONES, populate
from tests.support.members import make_member
from workers.planning import audience_statement, execute_audience, plan_campaign, plan_context, zones_in_use

PROGRAM = load_program(DEFAULT_PROGRAM_FILE)
SHIPPED = load_campaigns(DEFAULT_CAMPAIGNS_DIR)
CAMPAIGNS = {c.id: c for c in SHIPPED.campaigns.values() if c.enabled}
CAPPED = tuple(sorted(c.id for c in CAMPAIGNS.values() if not c.frequency_cap_exempt))


def test_a_member_in_a_zone_nobody_had_is_planned_at_the_next_plan_of_the_same_instant(pg_sessions):
    """The zones are read again by every plan: the campaign's statement is cached, its zones are not."""
    birthday = CAMPAIGNS["birthday"]
    at = datetime(2027, 6, 2, 18, 0, tzinfo=UTC)  # 10:00 has passed in Paris and in Nairobi
    with pg_sessions() as session, session.begin():
        session.add(make_member("PARIS", timezone_name="Europe/Paris", birthday=(6, 2)))
    with pg_sessions() as session, session.begin():
        first = plan_campaign(session, birthday, plan_context(session, SHIPPED, PROGRAM, at))
    with pg_sessions() as session, session.begin():
        session.add(make_member("NAIROBI", timezone_name="Africa/Nairobi", birthday=(6, 2)))
    with pg_sessions() as session, session.begin():
        assert "Africa/Nairobi" in zones_in_use(session)
        ctx = plan_context(session, SHIPPED, PROGRAM, at)
        shape = audience_statement(birthday, ctx)
        second = plan_campaign(session, birthday, ctx)
    with pg_sessions() as session:
        planned = {i: m for i, m in session.execute(select(Delivery.id, Member.external_id).join(Member, Member.id == Delivery.member_id))}
        assert shape is not None and shape[0] is audience_statement(birthday, ctx)[0]  # the cached statement
    assert [planned[i] for i in first.planned_ids] == ["PARIS"]
    assert [planned[i] for i in second.planned_ids] == ["NAIROBI"]


def _add_capped_history(session: Session) -> None:
    """Two messages this week for every third member (a silver one) (the shipped cap is 2 in 7 days), one for the
    others of every fifth: some members of each kind's audience are at the cap, some just below."""
    members = session.scalars(select(Member).order_by(Member.id)).all()
    for n, member in enumerate(members):
        count = 2 if n % 3 == 1 else 1 if n % 5 == 0 else 0  # n % 3 == 1: silver, in member day's tiers
        for k in range(count):
            sent = datetime(2027, 2, 27, 9, tzinfo=UTC) + timedelta(days=k)
            session.add(Delivery(occurrence_key=f"member_day:{member.external_id}:history{k}", campaign="member_day",
                                 member_id=member.id, channel="email", state="sent", send_at=sent, planned_at=sent,
                                 occurrence_date="2027-02-02"))
    session.commit()


def _rows(session: Session, campaign, ctx: PlanContext) -> list[tuple]:
    statement = audience_statement(campaign, ctx)
    if statement is None:
        return []
    query, params = statement
    return sorted((row.member, row.occurrence_key, row.state, row.reason)
                  for row in execute_audience(session, campaign, query, params))


@pytest.mark.parametrize("campaign_id", [c for c in CAMPAIGNS if c in CAPPED])
def test_the_frequency_cap_marks_the_same_rows_on_postgresql_and_sqlite(campaign_id, pg_sessions, sqlite_session):
    campaign = CAMPAIGNS[campaign_id]
    with pg_sessions() as pg:
        for session in (pg, sqlite_session):
            populate(session)
            _add_capped_history(session)
        capped_somewhere = 0
        for at in INSTANTS:
            contexts = {dialect: PlanContext(at=at, zones=ZONES, program=PROGRAM, capped_campaigns=CAPPED, dialect=dialect)
                        for dialect in ("postgresql", "sqlite")}
            on_postgresql = _rows(pg, campaign, contexts["postgresql"])
            assert on_postgresql == _rows(sqlite_session, campaign, contexts["sqlite"]), f"{campaign_id} at {at}"
            capped_somewhere += sum(row[3] == "frequency_cap" for row in on_postgresql)
            assert all(row[2] == "skipped" for row in on_postgresql if row[3] == "frequency_cap")
        assert capped_somewhere, f"{campaign_id}: nobody at the cap at any instant: the test proves little"


def _prepared(session: Session, fragment: str) -> int:
    return session.scalar(text("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE :f"), {"f": f"%{fragment}%"})


def test_points_expiring_is_planned_for_each_instants_values_and_birthday_may_be_prepared(pg_sessions):
    """psycopg prepares a statement run five times on a connection; PostgreSQL may then plan it once
    for any values. Points expiring (``plan_per_instant``) is never prepared; birthday is."""
    expiring, birthday = CAMPAIGNS["points_expiring"], CAMPAIGNS["birthday"]
    assert kind_of(expiring).plan_per_instant and not kind_of(birthday).plan_per_instant
    with pg_sessions() as session:
        populate(session)
        for campaign in (expiring, birthday):
            ctx = PlanContext(at=INSTANTS[2], zones=ZONES, program=PROGRAM, capped_campaigns=CAPPED)
            found = [_rows(session, campaign, ctx) for _ in range(8)]
            assert found[0] and all(rows == found[0] for rows in found)
        assert _prepared(session, "point_entries") == 0
        assert _prepared(session, "birth_month") == 1
