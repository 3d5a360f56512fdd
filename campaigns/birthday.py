"""The birthday gift: on the member's local birthday, after the local send time, once a year.

Occurrence key: ``birthday:{member external id}:{year of the local birthday}``.
(``birthday`` is the campaign's id: the shipped campaign is named after its kind.)
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta

from sqlalchemy import Integer, Select, String, and_, case, func, literal, select, tuple_
from sqlalchemy.dialects import postgresql

from core import calendar
from campaigns.audience_sql import PlanContext, ZoneDue, delivery_columns, due_today, not_in_ledger, tier_filter
from campaigns.eligibility import Reason
from campaigns.kinds_api import SendCheck
from campaigns.schema import BirthdayCampaign
from models.member import Member


def due_zones(campaign: BirthdayCampaign, at: datetime, zones: Iterable[str]) -> dict[str, ZoneDue]:
    """The zones where the local send time has passed today, with today's local date."""
    return due_today(campaign.send_time, at, list(zones))


def audience(campaign: BirthdayCampaign, ctx: PlanContext) -> Select | None:
    """Members whose birthday is celebrated today in their zone, not yet in the send ledger."""
    dues = due_zones(campaign, ctx.at, ctx.zones)
    if not dues:
        return None
    rule = campaign.birthday.leap_day_in_common_years
    days = [(zone, m, d) for zone, due in dues.items() for m, d in calendar.celebrated_birthdays(due.local_date, rule)]
    key = literal(f"{campaign.id}:") + Member.external_id + ctx.by_zone({z: f":{d.local_date.year}" for z, d in dues.items()})
    known_since = ctx.at - timedelta(days=campaign.birthday.min_days_since_birthday_change)
    recently_changed = case((Member.birthday_updated_at > known_since, literal(Reason.BIRTHDAY_RECENTLY_CHANGED)), else_=None)
    reward = case(campaign.reward.points_by_tier, value=Member.tier, else_=None) if campaign.reward else None
    columns = delivery_columns(campaign, ctx, key=key, dues=dues, kind_reason=recently_changed, reward=reward)
    if ctx.dialect == "postgresql":
        # A join with the (zone, month, day) list as three arrays: one index probe on (timezone,
        # birth_month, birth_day) per entry (a third faster at 1M members than the same list as a
        # row-value IN), and three parameters, so that SQLAlchemy compiles the statement once (a
        # VALUES list of 200 parameters took 5 ms to compile on every tick, as long as running it).
        zones, months, days_of_month = (list(part) for part in zip(*days))
        wanted = func.unnest(
            literal(zones, postgresql.ARRAY(String())),
            literal(months, postgresql.ARRAY(Integer())),
            literal(days_of_month, postgresql.ARRAY(Integer())),
        ).table_valued("tz", "mo", "dy").render_derived(name="birthdays")
        query = select(*columns).select_from(wanted).join(
            Member, and_(Member.timezone == wanted.c.tz, Member.birth_month == wanted.c.mo,
                         Member.birth_day == wanted.c.dy)).where(not_in_ledger(key))
    else:
        query = select(*columns).where(tuple_(Member.timezone, Member.birth_month, Member.birth_day).in_(days),
                                       not_in_ledger(key))
    tiers = tier_filter(campaign)
    return query.where(tiers) if tiers is not None else query


def recheck(check: SendCheck) -> str | None:
    """Still the member's birthday gift to send? (Consent and tier are checked for every kind.)"""
    campaign, member, delivery = check.campaign, check.member, check.delivery
    if delivery.occurrence_date:
        day = date.fromisoformat(delivery.occurrence_date)
        if (member.birth_month, member.birth_day) not in calendar.celebrated_birthdays(day, campaign.birthday.leap_day_in_common_years):
            return Reason.BIRTHDAY_CHANGED
    known_since = check.at - timedelta(days=campaign.birthday.min_days_since_birthday_change)
    if member.birthday_updated_at is not None and member.birthday_updated_at > known_since:
        return Reason.BIRTHDAY_RECENTLY_CHANGED
    return None


def template_context(check: SendCheck) -> dict:
    occurrence = check.delivery.occurrence_date
    return {"birthday": {"date": date.fromisoformat(occurrence) if occurrence else None}}


def sample_context(campaign: BirthdayCampaign, program) -> dict:
    return {"birthday": {"date": date(2027, 2, 28)}}
