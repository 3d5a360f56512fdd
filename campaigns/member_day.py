"""The member-day offer: a recurring calendar day (an iCalendar RRULE), in the member's local morning.

Shipped: the first Tuesday of every month, 10:00 local, silver and gold, by email. Occurrence key:
``member_day:{member}:{local date}``.
(``member_day`` is the campaign's id: the shipped campaign is named after its kind.)
"""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache

from dateutil.rrule import rrulestr
from sqlalchemy import Select, literal, select

from campaigns.audience_sql import PlanContext, delivery_columns, due_today, not_in_ledger, tier_filter
from campaigns.kinds_api import SendCheck
from campaigns.schema import MemberDayCampaign
from models.member import Member

EPOCH = datetime(2000, 1, 1)


@lru_cache(maxsize=256)
def is_member_day(rule: str, day: date) -> bool:
    """Whether the rule has an occurrence on ``day`` (a calendar day, wherever the member is)."""
    start = datetime.combine(day, datetime.min.time())
    occurrence = rrulestr(rule, dtstart=EPOCH).after(start, inc=True)
    return occurrence is not None and occurrence.date() == day


def audience(campaign: MemberDayCampaign, ctx: PlanContext) -> Select | None:
    dues = {zone: due for zone, due in due_today(campaign.send_time, ctx.at, ctx.zones).items()
            if is_member_day(campaign.member_day.rrule, due.local_date)}
    if not dues:
        return None
    key = literal(f"{campaign.id}:") + Member.external_id + ctx.by_zone({z: f":{d.local_date.isoformat()}" for z, d in dues.items()})
    query = select(*delivery_columns(campaign, ctx, key=key, dues=dues)).where(
        Member.timezone.in_(list(dues)), not_in_ledger(key)
    )
    tiers = tier_filter(campaign)
    return query.where(tiers) if tiers is not None else query


def recheck(check: SendCheck) -> str | None:
    return None


def template_context(check: SendCheck) -> dict:
    return {"member_day": {"date": date.fromisoformat(check.delivery.occurrence_date)}}


def sample_context(campaign: MemberDayCampaign, program) -> dict:
    return {"member_day": {"date": date(2027, 2, 2)}}
