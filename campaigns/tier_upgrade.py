"""The tier-upgrade notice: one notice per upgrade, with the new tier's benefits.

An upgrade reached on a member's local date D is announced from the send time on D (or at once,
if reached later that day). Two upgrades before the notice goes out make one notice, for the
highest tier: only the upgrade to the member's *current* tier is ever announced. Occurrence key:
``tier_upgrade:{member}:{tier}:{local date reached}``.
(``tier_upgrade`` is the campaign's id: the shipped campaign is named after its kind.)
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Select, and_, literal, select

from core import calendar
from campaigns.audience_sql import PlanContext, ZoneDue, delivery_columns, not_in_ledger, tier_filter
from campaigns.eligibility import Reason
from campaigns.kinds_api import SendCheck
from campaigns.schema import TierUpgradeCampaign
from models.member import Member
from models.tier import TierChange


def tier_of_key(occurrence_key: str) -> str:
    return occurrence_key.rsplit(":", 2)[1]


def announced_tier(delivery) -> str:
    """The tier a notice announces: in the payload for a one-off send, else in the occurrence key."""
    return (delivery.payload or {}).get("tier") or tier_of_key(delivery.occurrence_key)


def audience(campaign: TierUpgradeCampaign, ctx: PlanContext) -> Select | None:
    dues, last_due_date = {}, {}
    for zone_name in ctx.zones:
        local_day = calendar.local_datetime(ctx.at, zone_name).date()
        send_at = calendar.local_instant(local_day, campaign.send_time, zone_name)
        past_send_time = ctx.at >= send_at
        dues[zone_name] = ZoneDue(local_day, min(send_at, ctx.at))
        last_due_date[zone_name] = (local_day if past_send_time else local_day - timedelta(days=1)).isoformat()
    if not dues:
        return None
    key = literal(f"{campaign.id}:") + Member.external_id + literal(":") + Member.tier + literal(":") + TierChange.local_date
    columns = delivery_columns(campaign, ctx, key=key, dues=dues, occurrence_date=TierChange.local_date)
    since = ctx.at - timedelta(days=campaign.tier_upgrade.announce_within_days)
    query = (
        select(*columns)
        .select_from(TierChange)
        .join(Member, and_(Member.id == TierChange.member_id, Member.tier == TierChange.to_tier,
                           Member.tier_reached_at == TierChange.at))
        .where(TierChange.direction == "up", TierChange.at >= since, TierChange.at <= ctx.at,
               TierChange.local_date <= ctx.by_zone(last_due_date), not_in_ledger(key))
    )
    tiers = tier_filter(campaign)
    return query.where(tiers) if tiers is not None else query


def recheck(check: SendCheck) -> str | None:
    return None if check.member.tier == announced_tier(check.delivery) else Reason.SUPERSEDED


def _context(program, tier: str, locale: str) -> dict:
    level = program.tiers.level(tier)
    benefits = level.benefits if level else {}
    language = locale.split("_")[0]
    text = benefits.get(locale) or benefits.get(language) or next(iter(benefits.values()), "")
    return {"tier": {"name": tier, "benefits": text, "min_spend": level.min_spend if level else None}}


def template_context(check: SendCheck) -> dict:
    return _context(check.program, announced_tier(check.delivery), check.member.locale or "en")


def sample_context(campaign: TierUpgradeCampaign, program) -> dict:
    return _context(program, program.tiers.names[-1], campaign.default_locale)
