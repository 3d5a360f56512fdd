"""The birthday gift: on the member's local birthday, after the local send time, once a year.

Occurrence key: ``birthday:{member external id}:{year of the local birthday}``.
(``birthday`` is the campaign's id: the shipped campaign is named after its kind.)
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import Field
from sqlalchemy import Integer, Select, String, and_, case, func, literal, tuple_
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from campaigns.audience_sql import (
    PlanContext,
    ZoneDue,
    ZoneValues,
    due_rows,
    due_today,
    join_zone_values,
    ledger_values,
    param,
    zone_value,
)
from campaigns.kinds_api import Kind, Occurrence, SendCheck
from campaigns.program import Program
from campaigns.schema import CampaignBase, StrictModel
from core import calendar
from models.base import UtcDateTime
from models.delivery import Reason
from models.member import Member


class BirthdayRules(StrictModel):
    leap_day_in_common_years: Literal["feb28", "mar1"] = Field(
        default="feb28", description="When members born on Feb 29 celebrate in years without one."
    )
    min_days_since_birthday_change: Annotated[int, Field(ge=0)] = Field(
        default=30, description="A birthday added or changed more recently than this is not rewarded."
    )


class BirthdayCampaign(CampaignBase):
    kind: Literal["birthday"]
    birthday: BirthdayRules = BirthdayRules()


def due_zones(campaign: BirthdayCampaign, at: datetime, zones: Iterable[str]) -> dict[str, ZoneDue]:
    """The zones where the local send time has passed today, with today's local date."""
    return due_today(campaign.send_time, at, list(zones))


def due(campaign: BirthdayCampaign, ctx: PlanContext) -> dict[str, Any] | None:
    """The instant's values: the due zones' local dates and send instants, and the (zone, month,
    day) birthdays celebrated there today."""
    dues = due_zones(campaign, ctx.at, ctx.zones)
    if not dues:
        return None
    rule = campaign.birthday.leap_day_in_common_years
    days = [(zone, m, d) for zone, due in dues.items() for m, d in calendar.celebrated_birthdays(due.local_date, rule)]
    zones, months, days_of_month = (list(part) for part in zip(*days, strict=True))
    return {**ledger_values(campaign, ctx, dues), "birthdays": days, "birthday_zones": zones,
            "birthday_months": months, "birthday_days": days_of_month,
            "key_year": ZoneValues({z: f":{d.local_date.year}" for z, d in dues.items()}),
            "known_since": ctx.at - timedelta(days=campaign.birthday.min_days_since_birthday_change)}


def shape(campaign: BirthdayCampaign, ctx: PlanContext, due: dict[str, Any]) -> Select:
    """Members whose birthday is celebrated today in their zone, not yet in the send ledger."""
    join_zone_values(ctx, due)
    key = literal(f"{campaign.id}:") + Member.external_id + zone_value(ctx, due, "key_year")
    recently_changed = case((Member.birthday_updated_at > param("known_since", UtcDateTime()),
                             literal(Reason.BIRTHDAY_RECENTLY_CHANGED)), else_=None)
    rows = due_rows(campaign, ctx, key=key, dues=due, kind_reason=recently_changed)
    if ctx.dialect == "postgresql":
        # A join with the (zone, month, day) list as three arrays: one index probe on (timezone,
        # birth_month, birth_day) per entry (a third faster at 1M members than the same list as a
        # row-value IN), and three parameters, so that the statement has one shape whatever the day.
        wanted = func.unnest(
            param("birthday_zones", postgresql.ARRAY(String())),
            param("birthday_months", postgresql.ARRAY(Integer())),
            param("birthday_days", postgresql.ARRAY(Integer())),
        ).table_valued("tz", "mo", "dy").render_derived(name="birthdays")
        return rows.select_from(wanted).join(
            Member, and_(Member.timezone == wanted.c.tz, Member.birth_month == wanted.c.mo,
                         Member.birth_day == wanted.c.dy))
    return rows.where(tuple_(Member.timezone, Member.birth_month, Member.birth_day).in_(due["birthdays"]))


def recheck(check: SendCheck[BirthdayCampaign], facts: None) -> Reason | None:
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


def template_context(check: SendCheck[BirthdayCampaign], facts: None) -> dict[str, Any]:
    occurrence = check.delivery.occurrence_date
    return {"birthday": {"date": date.fromisoformat(occurrence) if occurrence else None}}


def sample_context(campaign: BirthdayCampaign, program: Program) -> dict[str, Any]:
    return {"birthday": {"date": date(2027, 2, 28)}}


def one_off_occurrence(campaign: BirthdayCampaign, member: Member, today: date, session: Session) -> Occurrence:
    """A support send of the birthday gift stands for today's (in the member's zone)."""
    return Occurrence(today)


KIND = Kind(BirthdayCampaign, due=due, shape=shape, recheck=recheck, template_context=template_context,
            sample_context=sample_context, one_off_occurrence=one_off_occurrence)
