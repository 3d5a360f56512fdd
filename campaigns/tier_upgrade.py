"""The tier-upgrade notice: one notice per upgrade, with the new tier's benefits.

An upgrade reached on a member's local date D is announced from the send time on D (or at once,
if reached later that day). Two upgrades before the notice goes out make one notice, for the
highest tier: only the upgrade to the member's *current* tier is ever announced. Occurrence key:
``tier_upgrade:{member}:{tier}:{local date reached}``.
(``tier_upgrade`` is the campaign's id: the shipped campaign is named after its kind.)
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any, Literal

from pydantic import Field
from sqlalchemy import Select, and_, literal
from sqlalchemy.orm import Session

from campaigns.audience_sql import PlanContext, ZoneDue, ZoneValues, due_rows, ledger_values, param, zone_value
from campaigns.kinds_api import Kind, Occurrence, SendCheck
from campaigns.program import Program
from campaigns.schema import CampaignBase, StrictModel
from campaigns.send_views import DeliveryView
from core import calendar
from models.base import UtcDateTime
from models.delivery import Reason
from models.member import Member
from models.tier import TierChange


class TierUpgradeRules(StrictModel):
    announce_within_days: Annotated[int, Field(ge=1)] = Field(
        default=7, description="An upgrade older than this (say, after an outage) is no longer announced."
    )


class TierUpgradeCampaign(CampaignBase):
    kind: Literal["tier_upgrade"]
    tier_upgrade: TierUpgradeRules = TierUpgradeRules()


def tier_of_key(occurrence_key: str) -> str:
    return occurrence_key.rsplit(":", 2)[1]


def announced_tier(delivery: DeliveryView) -> str:
    """The tier a notice announces: in the payload for a one-off send, else in the occurrence key."""
    return (delivery.payload or {}).get("tier") or tier_of_key(delivery.occurrence_key)


def due(campaign: TierUpgradeCampaign, ctx: PlanContext) -> dict[str, Any] | None:
    """Per zone: today's local date and send instant (now, once passed), and the last local date
    whose upgrades are due (today once the send time has passed, else yesterday)."""
    dues, last_due_date = {}, ZoneValues()
    for zone_name in ctx.zones:
        local_day = calendar.local_datetime(ctx.at, zone_name).date()
        send_at = calendar.local_instant(local_day, campaign.send_time, zone_name)
        past_send_time = ctx.at >= send_at
        dues[zone_name] = ZoneDue(local_day, min(send_at, ctx.at))
        last_due_date[zone_name] = (local_day if past_send_time else local_day - timedelta(days=1)).isoformat()
    if not dues:
        return None
    return {**ledger_values(campaign, ctx, dues), "last_due_date": last_due_date, "at": ctx.at,
            "since": ctx.at - timedelta(days=campaign.tier_upgrade.announce_within_days)}


def shape(campaign: TierUpgradeCampaign, ctx: PlanContext, due: dict[str, Any]) -> Select:
    key = literal(f"{campaign.id}:") + Member.external_id + literal(":") + Member.tier + literal(":") + TierChange.local_date
    return (
        due_rows(campaign, ctx, key=key, dues=due, occurrence_date=TierChange.local_date)
        .select_from(TierChange)
        .join(Member, and_(Member.id == TierChange.member_id, Member.tier == TierChange.to_tier,
                           Member.tier_reached_at == TierChange.at))
        .where(TierChange.direction == "up", TierChange.at >= param("since", UtcDateTime()),
               TierChange.at <= param("at", UtcDateTime()),
               TierChange.local_date <= zone_value(ctx, due, "last_due_date"))
    )


def recheck(check: SendCheck[TierUpgradeCampaign], facts: None) -> Reason | None:
    return None if check.member.tier == announced_tier(check.delivery) else Reason.SUPERSEDED


def _context(program: Program, tier: str, locale: str) -> dict[str, Any]:
    level = program.tiers.level(tier)
    benefits = level.benefits if level else {}
    language = locale.split("_")[0]
    text = benefits.get(locale) or benefits.get(language) or next(iter(benefits.values()), "")
    return {"tier": {"name": tier, "benefits": text, "min_spend": level.min_spend if level else None}}


def template_context(check: SendCheck[TierUpgradeCampaign], facts: None) -> dict[str, Any]:
    return _context(check.program, announced_tier(check.delivery), check.member.locale or "en")


def sample_context(campaign: TierUpgradeCampaign, program: Program) -> dict[str, Any]:
    return _context(program, program.tiers.names[-1], campaign.default_locale)


def one_off_occurrence(campaign: TierUpgradeCampaign, member: Member, today: date, session: Session) -> Occurrence:
    """A support send of the notice announces the member's current tier, as of today."""
    return Occurrence(today, {"tier": member.tier})


KIND = Kind(TierUpgradeCampaign, due=due, shape=shape, recheck=recheck, template_context=template_context,
            sample_context=sample_context, one_off_occurrence=one_off_occurrence)
