"""The member-day offer: a recurring calendar day (an iCalendar RRULE), in the member's local morning.

Shipped: the first Tuesday of every month, 10:00 local, silver and gold, by email. Occurrence key:
``member_day:{member}:{local date}``.
(``member_day`` is the campaign's id: the shipped campaign is named after its kind.)
"""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from typing import Any, Literal

from dateutil.rrule import rrulestr
from pydantic import Field, field_validator
from sqlalchemy import Select, literal
from sqlalchemy.orm import Session

from campaigns.audience_sql import (
    PlanContext,
    ZoneValues,
    due_rows,
    due_today,
    join_zone_values,
    ledger_values,
    zone_in,
    zone_value,
)
from campaigns.kinds_api import Kind, Occurrence, SendCheck
from campaigns.program import Program
from campaigns.schema import CampaignBase, StrictModel
from models.member import Member

EPOCH = datetime(2000, 1, 1)


class MemberDayRules(StrictModel):
    rrule: str = Field(description="An iCalendar RRULE, e.g. FREQ=MONTHLY;BYDAY=1TU")

    @field_validator("rrule")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            rrulestr(value, dtstart=EPOCH)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"is not a valid iCalendar RRULE ({exc})") from None
        return value


class MemberDayCampaign(CampaignBase):
    kind: Literal["member_day"]
    member_day: MemberDayRules


@lru_cache(maxsize=256)
def is_member_day(rule: str, day: date) -> bool:
    """Whether the rule has an occurrence on ``day`` (a calendar day, wherever the member is)."""
    start = datetime.combine(day, datetime.min.time())
    occurrence = rrulestr(rule, dtstart=EPOCH).after(start, inc=True)
    return occurrence is not None and occurrence.date() == day


def due(campaign: MemberDayCampaign, ctx: PlanContext) -> dict[str, Any] | None:
    """The zones where today is a member day and the send time has passed, with their dates."""
    dues = {zone: due for zone, due in due_today(campaign.send_time, ctx.at, ctx.zones).items()
            if is_member_day(campaign.member_day.rrule, due.local_date)}
    if not dues:
        return None
    return {**ledger_values(campaign, ctx, dues), "zones": list(dues),
            "key_date": ZoneValues({z: f":{d.local_date.isoformat()}" for z, d in dues.items()})}


def shape(campaign: MemberDayCampaign, ctx: PlanContext, due: dict[str, Any]) -> Select:
    join_zone_values(ctx, due)
    # The key's date read by the member's own zone (an array lookup), not from the joined zone table:
    # the ledger check is then an index probe a member, as the floor's (with the table's column in
    # the key, PostgreSQL hashed the whole send ledger instead: 1.5-2x slower at 100,000 members).
    key = literal(f"{campaign.id}:") + Member.external_id + zone_value(ctx, due, "key_date", zone=Member.timezone)
    return due_rows(campaign, ctx, key=key, dues=due).where(zone_in(ctx, due, "zones"))


def template_context(check: SendCheck[MemberDayCampaign], facts: None) -> dict[str, Any]:
    return {"member_day": {"date": check.occurrence_date}}


def sample_context(campaign: MemberDayCampaign, program: Program) -> dict[str, Any]:
    return {"member_day": {"date": date(2027, 2, 2)}}


def one_off_occurrence(campaign: MemberDayCampaign, member: Member, today: date, session: Session) -> Occurrence:
    """A support send of the offer stands for today's (in the member's zone), member day or not."""
    return Occurrence(today)


KIND = Kind(MemberDayCampaign, due=due, shape=shape, template_context=template_context,
            sample_context=sample_context, one_off_occurrence=one_off_occurrence)
