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
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from sqlalchemy import Select, String, and_, any_, literal, or_, select, union_all
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from campaigns.audience_sql import (
    PlanContext,
    due_rows,
    due_today,
    join_zone_values,
    ledger_values,
    param,
    zone_condition,
)
from campaigns.kinds_api import Kind, Occurrence, SendCheck
from campaigns.program import Program
from campaigns.schema import CampaignBase, Channel, Coupon, StrictModel
from core import calendar
from core.errors import InputError
from models.delivery import Reason
from models.member import Member


class WinbackStep(StrictModel):
    step: Annotated[int, Field(ge=1)]
    from_day: Annotated[int, Field(ge=1)]
    to_day: Annotated[int, Field(ge=1)]
    channels: Annotated[list[Channel], Field(min_length=1)] | None = None
    coupon: Coupon | None = None

    @model_validator(mode="after")
    def _window(self) -> WinbackStep:
        if self.to_day < self.from_day:
            raise ValueError(f"step {self.step}: to_day must not be before from_day")
        return self


class WinbackRules(StrictModel):
    steps: Annotated[list[WinbackStep], Field(min_length=1)]

    @model_validator(mode="after")
    def _no_overlap(self) -> WinbackRules:
        ordered = sorted(self.steps, key=lambda s: s.from_day)
        for before, after in zip(ordered, ordered[1:], strict=False):
            if after.from_day <= before.to_day:
                raise ValueError(f"steps {before.step} and {after.step} overlap; a member is in one step at a time")
        if len({s.step for s in self.steps}) != len(self.steps):
            raise ValueError("two steps have the same number")
        return self


class WinbackCampaign(CampaignBase):
    kind: Literal["winback"]
    winback: WinbackRules

    @model_validator(mode="after")
    def _step_channels_have_messages(self) -> WinbackCampaign:
        for step in self.winback.steps:
            for channel in step.channels or []:
                if getattr(self.messages, channel) is None:
                    raise ValueError(f"step {step.step} uses {channel!r} but messages has no {channel!r} section")
        return self


def coupon_code(secret: str, occurrence_key: str, prefix: str) -> str:
    """A unique, unguessable code derived from the occurrence: a retry gets the same code."""
    digest = hmac.new(secret.encode(), occurrence_key.encode(), hashlib.sha256).digest()
    return f"{prefix}-{base64.b32encode(digest).decode()[:10]}"


#: Zones' local dates differ by at most two days at any instant (UTC-12 to UTC+14), so the due
#: zones' windows of a step are at most three distinct (from, to) pairs.
WINDOW_GROUPS = 3


def due(campaign: WinbackCampaign, ctx: PlanContext) -> dict[str, Any] | None:
    """Per step: in each due zone, the window of last-order local dates in the step today, and the
    zones grouped by window (``WINDOW_GROUPS`` groups, the unused ones empty)."""
    today = due_today(campaign.send_time, ctx.at, ctx.zones)
    if not today:
        return None
    values: dict[str, Any] = {}
    for step in campaign.winback.steps:
        prefix = f"s{step.step}_"
        windows = {z: ((d.local_date - timedelta(days=step.to_day)).isoformat(),
                       (d.local_date - timedelta(days=step.from_day)).isoformat()) for z, d in today.items()}
        groups: dict[tuple[str, str], list[str]] = {}
        for zone, window in windows.items():
            groups.setdefault(window, []).append(zone)
        if len(groups) > WINDOW_GROUPS:
            raise ValueError(f"{len(groups)} distinct local dates among the zones at {ctx.at}")
        padded = [*groups.items(), *[(("", ""), [])] * (WINDOW_GROUPS - len(groups))]
        values.update(ledger_values(campaign, ctx, today, channels=step.channels, prefix=prefix))
        values[f"{prefix}windows"] = windows
        for n, ((low, high), zones) in enumerate(padded):
            values.update({f"{prefix}zones{n}": zones, f"{prefix}from{n}": low, f"{prefix}to{n}": high})
    return values


def _step_query(campaign: WinbackCampaign, ctx: PlanContext, step: WinbackStep, due: dict[str, Any]) -> Select:
    prefix = f"s{step.step}_"
    key = literal(f"{campaign.id}:") + Member.external_id + literal(":") + Member.last_order_local_date + literal(f":{step.step}")
    rows = due_rows(campaign, ctx, key=key, dues=due, prefix=prefix, channels=step.channels, payload={"step": step.step},
                    occurrence_date=Member.last_order_local_date)
    if ctx.dialect == "postgresql":
        # The zones grouped by window, a fixed number of groups: each an index condition on
        # (timezone, last_order_local_date), ``timezone = ANY(zones) AND date BETWEEN from AND to``
        # (one descent a zone), so the statement has one shape whatever the day (an OR branch a
        # zone, 1,300 parameters, cost 36 ms of Python to build on every tick). A join with the
        # windows as unnested arrays had PostgreSQL hash them and read every member (2x the floor).
        in_window = or_(*(and_(Member.timezone == any_(param(f"{prefix}zones{n}", postgresql.ARRAY(String()))),
                               Member.last_order_local_date.between(param(f"{prefix}from{n}", String()),
                                                                    param(f"{prefix}to{n}", String())))
                          for n in range(WINDOW_GROUPS)))
    else:
        in_window = zone_condition(due[f"{prefix}windows"], lambda zone, w: Member.last_order_local_date.between(w[0], w[1]))
    return rows.where(in_window)


def shape(campaign: WinbackCampaign, ctx: PlanContext, due: dict[str, Any]) -> Select:
    join_zone_values(ctx, due)
    parts = [_step_query(campaign, ctx, step, due) for step in campaign.winback.steps]
    return select(union_all(*parts).subquery()) if len(parts) > 1 else parts[0]


def _step_of(check: SendCheck[WinbackCampaign]) -> WinbackStep:
    number = (check.delivery.payload or {}).get("step") or int(check.delivery.occurrence_key.rsplit(":", 1)[1])
    return next(step for step in check.campaign.winback.steps if step.step == number)


def recheck(check: SendCheck[WinbackCampaign], facts: None) -> Reason | None:
    if check.member.last_order_local_date != check.delivery.occurrence_date:
        return Reason.ORDERED_AGAIN
    return None


def _context(step: WinbackStep, days: int, code: str | None, valid_until: date | None) -> dict[str, Any]:
    coupon = None
    if step.coupon is not None:
        coupon = {"code": code, "percent_off": step.coupon.percent_off, "valid_until": valid_until}
    return {"winback": {"step": step.step, "days_since_order": days}, "coupon": coupon}


def template_context(check: SendCheck[WinbackCampaign], facts: None) -> dict[str, Any]:
    step = _step_of(check)
    local_today = calendar.local_datetime(check.at, check.member.timezone).date()
    days = (local_today - check.occurrence_date).days
    code = valid_until = None
    if step.coupon is not None:
        code = coupon_code(check.secret, check.delivery.stands_for, step.coupon.prefix)
        valid_until = local_today + timedelta(days=step.coupon.valid_days)
    return _context(step, days, code, valid_until)


def sample_context(campaign: WinbackCampaign, program: Program) -> dict[str, Any]:
    step = max(campaign.winback.steps, key=lambda s: s.coupon is not None)
    return _context(step, step.from_day, f"{step.coupon.prefix}-SAMPLE1234" if step.coupon else None, date(2027, 4, 1))


def one_off_occurrence(campaign: WinbackCampaign, member: Member, today: date, session: Session) -> Occurrence:
    """A support send is about the member's last order, at the step its age has reached."""
    if not member.last_order_local_date:
        raise InputError(f"{member.external_id} has never ordered, so there is no last order to win them back from.")
    last = date.fromisoformat(member.last_order_local_date)
    days = (today - last).days
    reached = [step for step in campaign.winback.steps if step.from_day <= days]
    if not reached:
        first = min(step.from_day for step in campaign.winback.steps)
        raise InputError(f"{member.external_id} last ordered {days} days ago; the first win-back step is at day {first}.")
    return Occurrence(last, {"step": max(reached, key=lambda step: step.from_day).step})


KIND = Kind(WinbackCampaign, due=due, shape=shape, recheck=recheck, template_context=template_context,
            sample_context=sample_context, one_off_occurrence=one_off_occurrence)
