"""Planning's cached audience statements (``workers.planning.audience_statement``) select the same
members as a fresh build, at instants that differ in their due zones and dates; and PostgreSQL (a
cached shape with array parameters) agrees with SQLite (the values inlined, built per instant)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from campaigns.audience_sql import PlanContext
from campaigns.loader import load_campaigns
from campaigns.program import load_program
from core import calendar
from core.settings import DEFAULT_CAMPAIGNS_DIR, DEFAULT_PROGRAM_FILE
from models.points import EntryKind, PointEntry
from models.tier import TierChange
from tests.support.members import make_member
from workers.planning import audience_query, audience_statement

PROGRAM = load_program(DEFAULT_PROGRAM_FILE)
CAMPAIGNS = [c for c in load_campaigns(DEFAULT_CAMPAIGNS_DIR).campaigns.values() if c.enabled]
ZONES = ["Pacific/Auckland", "Asia/Tokyo", "Europe/Paris", "America/New_York", "America/Los_Angeles"]
TIERS = ["bronze", "silver", "gold"]
#: Morning and evening UTC (different zones past their send time), a leap day and the days around
#: a common year's Feb 28, the US spring-forward day, a first Tuesday (the shipped member day).
INSTANTS = [
    datetime(2027, 2, 28, 1, 0, tzinfo=UTC),
    datetime(2027, 2, 28, 9, 30, tzinfo=UTC),
    datetime(2027, 2, 28, 18, 0, tzinfo=UTC),
    datetime(2027, 3, 1, 18, 0, tzinfo=UTC),
    datetime(2027, 3, 2, 9, 30, tzinfo=UTC),
    datetime(2027, 3, 2, 23, 30, tzinfo=UTC),
    datetime(2027, 3, 14, 13, 30, tzinfo=UTC),
    datetime(2028, 2, 29, 18, 0, tzinfo=UTC),
]


def populate(session: Session) -> None:
    """Members in five zones with birthdays, last orders, expiring lots and upgrades around the
    instants, so that every kind has members due at some instants and not at others."""
    members = []
    for n in range(150):
        zone = ZONES[n % len(ZONES)]
        day = date(2027, 2, 20) + timedelta(days=n % 14)
        birthday = (2, 29) if n % 11 == 0 else (day.month, day.day)
        member = make_member(f"S{n:03d}", timezone_name=zone, birthday=birthday, tier=TIERS[n % 3],
                             sms_opt_in=n % 4 == 0, phone="+33612345678" if n % 4 == 0 else None)
        member.last_order_local_date = (date(2027, 3, 1) - timedelta(days=55 + (n * 7) % 140)).isoformat()
        members.append(member)
    session.add_all(members)
    session.flush()
    for n, member in enumerate(members):
        expires = datetime(2027, 3, 1, 0, 0, tzinfo=UTC) + timedelta(days=(n * 3) % 40, hours=(n * 5) % 24)
        session.add(PointEntry(entry_key=f"lot-{n}", member_id=member.id, kind=EntryKind.EARN, points=100 + n,
                               occurred_at=datetime(2026, 3, 1, tzinfo=UTC), expires_at=expires, remaining=100 + n))
        if member.tier != "bronze":
            reached = datetime(2027, 2, 25, 6, 0, tzinfo=UTC) + timedelta(hours=(n * 13) % 200)
            member.tier_reached_at = reached
            session.add(TierChange(member_id=member.id, from_tier="bronze", to_tier=member.tier, direction="up",
                                   at=reached, local_date=calendar.local_datetime(reached, member.timezone).date().isoformat(),
                                   cause="test"))
    session.commit()


def cached_ids(session: Session, campaign, ctx: PlanContext):
    statement = audience_statement(campaign, ctx)
    if statement is None:
        return None, None
    query, params = statement
    ids = session.scalars(select(query.subquery("q").c.member_id), params).all()
    return query, Counter(ids)


def fresh_ids(session: Session, campaign, ctx: PlanContext):
    query = audience_query(campaign, ctx)
    return None if query is None else Counter(session.scalars(select(query.subquery("q").c.member_id)).all())


@pytest.mark.parametrize("campaign", CAMPAIGNS, ids=[c.id for c in CAMPAIGNS])
def test_the_cached_shape_selects_the_fresh_builds_members_on_both_databases(campaign, pg_sessions, sqlite_session):
    capped = tuple(sorted(c.id for c in CAMPAIGNS if not c.frequency_cap_exempt))
    with pg_sessions() as pg:
        populate(pg)
        populate(sqlite_session)
        shapes, due_somewhere = set(), 0
        for at in INSTANTS:
            contexts = {dialect: PlanContext(at=at, zones=ZONES, program=PROGRAM, capped_campaigns=capped, dialect=dialect)
                        for dialect in ("postgresql", "sqlite")}
            shape, cached = cached_ids(pg, campaign, contexts["postgresql"])
            fresh = fresh_ids(pg, campaign, contexts["postgresql"])
            _, on_sqlite = cached_ids(sqlite_session, campaign, contexts["sqlite"])
            assert cached == fresh, f"{campaign.id} at {at}: the cached statement and a fresh build differ"
            assert cached == on_sqlite, f"{campaign.id} at {at}: PostgreSQL and SQLite differ"
            if shape is not None:
                shapes.add(id(shape))
            due_somewhere += bool(cached)
        assert len(shapes) == 1, f"{campaign.id}: one statement for every instant, not {len(shapes)}"
        assert due_somewhere >= 2, f"{campaign.id}: members are due at only {due_somewhere} instants: the test proves little"
