"""The program report's figures, each one aggregate query (the database does the counting).

Definitions, as the report prints them:

- *issued*: points of the positive entries (earn, and adjustments up); *redeemed*, *expired* and
  *adjusted down*: points of those entries, as positive numbers; all within the period (by
  ``occurred_at``). *Outstanding*: the sum of the whole ledger up to the end of the period.
- *redemption rate*: redeemed / issued. *Adoption rate*: members with at least one redemption /
  members with at least one earn, in the period.
- per campaign, over the deliveries planned in the period: how many were planned (every row of
  the send ledger), sent, skipped (by reason), failed, unknown, held out, still pending; and
  *conversions*: the member placed an order within N days after the message was sent (for held-out
  members, after the moment they would have been sent it). *Uplift*: conversion rate of the sent
  minus that of the held out, in percentage points, only when both groups are non-empty.
  One-off sends by support are counted on a row of their own (``birthday (one-off)``).
- per campaign, the bounce and complaint rates of its emails, with a warning past 0.1% complaints
  (:mod:`services.deliverability`).
- per A/B variant of a campaign (its scheduled deliveries that record a variant): sent,
  conversions and conversion rate; *uplift* against the campaign's holdout (percentage points);
  and the *difference* with the campaign's first variant (the YAML's order), each with a 95%
  confidence interval, Newcombe's hybrid score interval for a difference of two proportions
  (:mod:`services.proportions`). An interval that contains 0 means the data cannot tell the two
  apart yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import SQLColumnExpression, and_, case, distinct, exists, func, literal, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from core.calendar import iso_utc
from models.delivery import Delivery, DeliveryState
from models.member import Member
from models.order import Order, OrderStatus
from models.points import EntryKind, PointEntry
from services.deliverability import email_feedback_figures
from services.proportions import METHOD, difference_interval

#: The confidence level of the report's intervals.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Period:
    """[start, end) in UTC; ``None`` is open-ended."""

    start: datetime | None = None
    end: datetime | None = None

    def where(self, column) -> list[ColumnElement]:
        conditions = []
        if self.start is not None:
            conditions.append(column >= self.start)
        if self.end is not None:
            conditions.append(column < self.end)
        return conditions

    def as_json(self) -> dict[str, str | None]:
        return {"from": iso_utc(self.start) if self.start else None, "to": iso_utc(self.end) if self.end else None}


def _sum(condition, value=None) -> ColumnElement:
    """How many rows meet ``condition`` (or the sum of ``value`` over them); 0 rather than NULL."""
    return func.coalesce(func.sum(case((condition, value if value is not None else literal(1)), else_=0)), 0)


def points_figures(session: Session, period: Period) -> dict[str, int]:
    p = PointEntry
    row = session.execute(
        select(
            _sum(p.points > 0, p.points).label("issued"),
            _sum(p.kind == EntryKind.REDEEM, -p.points).label("redeemed"),
            _sum(p.kind == EntryKind.EXPIRE, -p.points).label("expired"),
            _sum(and_(p.kind == EntryKind.ADJUST, p.points < 0), -p.points).label("adjusted_down"),
        ).where(*period.where(p.occurred_at))
    ).one()
    outstanding_query = select(func.coalesce(func.sum(p.points), 0))
    if period.end is not None:
        outstanding_query = outstanding_query.where(p.occurred_at < period.end)
    figures = {name: int(value) for name, value in row._mapping.items()}
    figures["outstanding"] = int(session.scalar(outstanding_query) or 0)  # coalesce: never None
    return figures


def _source_group(session: Session) -> ColumnElement:
    """``campaign:birthday`` stays whole; ``order:O123`` becomes ``order`` (one row per kind of source)."""
    source = func.coalesce(PointEntry.source, "unknown")
    head: ColumnElement[Any]
    if session.get_bind().dialect.name == "postgresql":
        head = func.split_part(source, ":", 1)
    else:
        head = case((func.instr(source, ":") > 0, func.substr(source, 1, func.instr(source, ":") - 1)), else_=source)
    return case((source.like("campaign:%"), source), else_=head)


def points_by_source(session: Session, period: Period) -> list[dict[str, Any]]:
    group = _source_group(session).label("source")
    rows = session.execute(
        select(group, func.sum(PointEntry.points).label("points"), func.count().label("entries"))
        .where(PointEntry.points > 0, *period.where(PointEntry.occurred_at))
        .group_by(group).order_by(func.sum(PointEntry.points).desc(), group)
    )
    return [{"source": r.source, "points": int(r.points), "entries": int(r.entries)} for r in rows]


def top_earners(session: Session, period: Period, limit: int) -> list[dict[str, Any]]:
    earned = func.sum(PointEntry.points)
    balance = (
        select(func.coalesce(func.sum(PointEntry.points), 0)).where(PointEntry.member_id == Member.id)
        .correlate(Member).scalar_subquery()
    )
    rows = session.execute(
        select(Member.external_id, Member.tier, earned.label("earned"), balance.label("balance"))
        .join(PointEntry, PointEntry.member_id == Member.id)
        .where(PointEntry.points > 0, *period.where(PointEntry.occurred_at))
        .group_by(Member.id, Member.external_id, Member.tier)
        .order_by(earned.desc(), Member.external_id).limit(limit)
    )
    return [{"member": r.external_id, "tier": r.tier, "earned": int(r.earned), "balance": int(r.balance)} for r in rows]


def members_by_tier(session: Session, tier_order: list[str] | None = None) -> dict[str, int]:
    """Members per tier today (tiers are a current state, not a figure of the period)."""
    counts = dict(session.execute(select(Member.tier, func.count()).group_by(Member.tier)).all())
    order = [t for t in (tier_order or []) if t in counts] + sorted(t for t in counts if t not in (tier_order or []))
    return {tier: int(counts[tier]) for tier in order}


def adoption(session: Session, period: Period) -> dict[str, int]:
    p = PointEntry
    row = session.execute(
        select(
            func.count(distinct(case((p.kind == EntryKind.EARN, p.member_id)))).label("earners"),
            func.count(distinct(case((p.kind == EntryKind.REDEEM, p.member_id)))).label("redeemers"),
        ).where(*period.where(p.occurred_at))
    ).one()
    return {"earners": int(row.earners), "redeemers": int(row.redeemers)}


def _converted(session: Session, since: SQLColumnExpression[Any], days: int) -> ColumnElement[bool]:
    """An order of the delivery's member placed in (since, since + days]."""
    if session.get_bind().dialect.name == "postgresql":
        window = and_(Order.placed_at > since, Order.placed_at <= since + func.make_interval(0, 0, 0, days))
    else:  # SQLite keeps timestamps as text: compare them as Julian day numbers
        gap = func.julianday(Order.placed_at) - func.julianday(since)
        window = and_(gap > 0, gap <= days)
    return exists().where(Order.member_id == Delivery.member_id, Order.status == OrderStatus.PLACED, window)


def campaign_figures(session: Session, period: Period, conversion_days: int) -> list[dict[str, Any]]:
    d, s = Delivery, DeliveryState
    one_off = d.occurrence_key.like("oneoff:%")
    name = case((one_off, d.campaign + literal(" (one-off)")), else_=d.campaign).label("campaign_name")
    rows = session.execute(
        select(
            name,
            func.count().label("planned"),
            _sum(d.state == s.SENT).label("sent"),
            _sum(d.state == s.SKIPPED).label("skipped"),
            _sum(d.state == s.FAILED).label("failed"),
            _sum(d.state == s.UNKNOWN).label("unknown"),
            _sum(d.state == s.HELD_OUT).label("held_out"),
            _sum(d.state.in_([s.PLANNED, s.SENDING])).label("pending"),
            _sum(and_(d.state == s.SENT, d.finished_at.is_not(None),
                      _converted(session, d.finished_at, conversion_days))).label("converted"),
            _sum(and_(d.state == s.HELD_OUT, _converted(session, d.planned_at, conversion_days))).label("held_out_converted"),
        ).where(*period.where(d.planned_at)).group_by(name).order_by(name)
    ).all()
    reasons = session.execute(
        select(name, d.reason, func.count()).where(d.state == s.SKIPPED, *period.where(d.planned_at))
        .group_by(name, d.reason).order_by(name, func.count().desc(), d.reason)
    ).all()
    skipped_by: dict[str, dict[str, int]] = {}
    # mypy reads these rows' items as object (SQLAlchemy's typed rows); they are (str, str | None, int)
    for campaign, reason, count in cast(list[tuple[str, str | None, int]], reasons):
        skipped_by.setdefault(campaign, {})[reason or "unknown"] = int(count)
    return [_campaign_line(dict(r._mapping), skipped_by.get(r.campaign_name, {})) for r in rows]


def _campaign_line(row: dict[str, Any], skipped: dict[str, int]) -> dict[str, Any]:
    line = {"campaign": row.pop("campaign_name"), **{key: int(value) for key, value in row.items()}}
    sent_rate = _rate(line["converted"], line["sent"])
    held_rate = _rate(line["held_out_converted"], line["held_out"])
    line["skipped_by_reason"] = skipped
    line["conversion_rate"] = sent_rate
    line["held_out_conversion_rate"] = held_rate
    line["uplift_pp"] = round((sent_rate - held_rate) * 100, 2) if sent_rate is not None and held_rate is not None else None
    return line


def variant_figures(session: Session, period: Period, conversion_days: int) -> dict[str, dict[str, dict[str, int]]]:
    """{campaign: {variant: {"sent", "converted"}}} over the scheduled deliveries planned in the period."""
    d, s = Delivery, DeliveryState
    rows = session.execute(
        select(
            d.campaign, d.variant,
            _sum(d.state == s.SENT).label("sent"),
            _sum(and_(d.state == s.SENT, d.finished_at.is_not(None),
                      _converted(session, d.finished_at.expression, conversion_days))).label("converted"),
        ).where(d.variant.is_not(None), ~d.occurrence_key.like("oneoff:%"), *period.where(d.planned_at))
        .group_by(d.campaign, d.variant)
    ).all()
    figures: dict[str, dict[str, dict[str, int]]] = {}
    # mypy reads these rows' items as object (SQLAlchemy's typed rows); they are (str, str, int, int)
    for campaign, variant, sent, converted in cast(list[tuple[str, str, int, int]], rows):
        figures.setdefault(campaign, {})[str(variant)] = {"sent": int(sent), "converted": int(converted)}
    return figures


def variant_lines(line: dict[str, Any], variants: dict[str, dict[str, int]], order: list[str] | None = None,
                  confidence: float = CONFIDENCE) -> list[dict[str, Any]]:
    """A campaign's variants, in ``order`` (the YAML's) then by name: each one's rate, its uplift
    against the holdout and its difference with the first variant, with confidence intervals."""
    known = [name for name in (order or []) if name in variants]
    names = known + sorted(name for name in variants if name not in known)
    lines = []
    held, held_converted = line["held_out"], line["held_out_converted"]
    if not names:
        return []
    first = variants[names[0]]
    for name in names:
        figures = variants[name]
        rate = _rate(figures["converted"], figures["sent"])
        uplift = difference_interval(figures["converted"], figures["sent"], held_converted, held, confidence)
        entry = {"variant": name, "sent": figures["sent"], "converted": figures["converted"], "conversion_rate": rate,
                 "uplift_pp": _pp(uplift.difference) if uplift else None, "uplift_ci_pp": _ci(uplift)}
        if name != names[0]:
            versus = difference_interval(figures["converted"], figures["sent"], first["converted"], first["sent"],
                                         confidence)
            entry.update(compared_with=names[0], difference_pp=_pp(versus.difference) if versus else None,
                         difference_ci_pp=_ci(versus), tells_apart=versus.tells_apart if versus else None)
        lines.append(entry)
    return lines


def _pp(fraction: float) -> float:
    return round(fraction * 100, 2)


def _ci(result) -> list[float] | None:
    return [_pp(result.low), _pp(result.high)] if result is not None else None


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def program_report(session: Session, period: Period, *, conversion_days: int = 7, top: int = 10,
                   tier_order: list[str] | None = None,
                   variant_order: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Every figure of ``loyalty report``, as one JSON-ready dict (``variant_order``: each campaign's
    variants in the YAML's order, the first being the one the others are compared with)."""
    points = points_figures(session, period)
    members = adoption(session, period)
    campaigns = campaign_figures(session, period, conversion_days)
    by_variant = variant_figures(session, period, conversion_days)
    for line in campaigns:
        if line["campaign"] in by_variant:
            line["variants"] = variant_lines(line, by_variant[line["campaign"]], (variant_order or {}).get(line["campaign"]))
    return {
        "period": period.as_json(),
        "conversion_days": conversion_days,
        "points": points,
        "rates": {
            "redemption_rate": _rate(points["redeemed"], points["issued"]),
            "adoption_rate": _rate(members["redeemers"], members["earners"]),
            **members,
        },
        "points_by_source": points_by_source(session, period),
        "top_earners": top_earners(session, period, top),
        "members_by_tier": members_by_tier(session, tier_order),
        "campaigns": campaigns,
        "variant_test": {"interval": METHOD, "confidence": CONFIDENCE},
        "email_feedback": email_feedback_figures(session, period),
    }
