"""The lapsed-customer win-back: steps by days since the last order; an order ends the episode.

Shipped: step 1 (email) from day 60 to 89, step 2 (SMS with a unique coupon, email without SMS
consent) from day 90 to 179, at 10:00 local. Occurrence key:
``winback:{member}:{local date of the last order}:{step}``, so a later lapse (a new last order)
starts a new episode.
(``winback`` is the campaign's id: the shipped campaign is named after its kind.)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import date, timedelta

from sqlalchemy import Select, literal, select, union_all

from core import calendar
from campaigns.audience_sql import PlanContext, ZoneDue, delivery_columns, due_today, not_in_ledger, tier_filter, zone_condition
from campaigns.eligibility import Reason
from campaigns.kinds_api import SendCheck
from campaigns.schema import WinbackCampaign, WinbackStep
from models.member import Member


def coupon_code(secret: str, occurrence_key: str, prefix: str) -> str:
    """A unique, unguessable code derived from the occurrence: a retry gets the same code."""
    digest = hmac.new(secret.encode(), occurrence_key.encode(), hashlib.sha256).digest()
    return f"{prefix}-{base64.b32encode(digest).decode()[:10]}"


def _step_query(campaign: WinbackCampaign, ctx: PlanContext, step: WinbackStep, today: dict[str, ZoneDue]) -> Select:
    windows = {z: ((d.local_date - timedelta(days=step.to_day)).isoformat(),
                   (d.local_date - timedelta(days=step.from_day)).isoformat()) for z, d in today.items()}
    in_window = zone_condition(windows, lambda zone, w: Member.last_order_local_date.between(w[0], w[1]))
    key = literal(f"{campaign.id}:") + Member.external_id + literal(":") + Member.last_order_local_date + literal(f":{step.step}")
    columns = delivery_columns(
        campaign, ctx, key=key, dues=today, channels=step.channels, payload={"step": step.step},
        occurrence_date=Member.last_order_local_date,
    )
    query = select(*columns).where(in_window, not_in_ledger(key))
    tiers = tier_filter(campaign)
    return query.where(tiers) if tiers is not None else query


def audience(campaign: WinbackCampaign, ctx: PlanContext) -> Select | None:
    today = due_today(campaign.send_time, ctx.at, ctx.zones)
    if not today:
        return None
    parts = [_step_query(campaign, ctx, step, today) for step in campaign.winback.steps]
    return select(union_all(*parts).subquery()) if len(parts) > 1 else parts[0]


def _step_of(check: SendCheck) -> WinbackStep:
    number = (check.delivery.payload or {}).get("step") or int(check.delivery.occurrence_key.rsplit(":", 1)[1])
    return next(step for step in check.campaign.winback.steps if step.step == number)


def recheck(check: SendCheck) -> str | None:
    if check.member.last_order_local_date != check.delivery.occurrence_date:
        return Reason.ORDERED_AGAIN
    return None


def _context(step: WinbackStep, days: int, code: str | None, valid_until: date | None) -> dict:
    coupon = None
    if step.coupon is not None:
        coupon = {"code": code, "percent_off": step.coupon.percent_off, "valid_until": valid_until}
    return {"winback": {"step": step.step, "days_since_order": days}, "coupon": coupon}


def template_context(check: SendCheck) -> dict:
    step = _step_of(check)
    local_today = calendar.local_datetime(check.at, check.member.timezone).date()
    days = (local_today - date.fromisoformat(check.delivery.occurrence_date)).days
    code = valid_until = None
    if step.coupon is not None:
        code = coupon_code(check.secret, check.delivery.stands_for, step.coupon.prefix)
        valid_until = local_today + timedelta(days=step.coupon.valid_days)
    return _context(step, days, code, valid_until)


def sample_context(campaign: WinbackCampaign, program) -> dict:
    step = max(campaign.winback.steps, key=lambda s: s.coupon is not None)
    return _context(step, step.from_day, f"{step.coupon.prefix}-SAMPLE1234" if step.coupon else None, date(2027, 4, 1))
