"""One member, as support staff read them: a summary, and everything that happened, in time order.

The history merges five sources into one list of :class:`Event`, oldest first:

- the send ledger (every delivery, whatever became of it, with its reason);
- the points ledger (with the balance after each entry);
- tier changes (the ``tier_changes`` table, when ``models`` has a ``TierChange`` model);
- consent changes: the audit log's ``optout.*``/``consent.*`` rows, plus the consent recorded on
  the member row itself (an import or a sign-up writes no per-member audit row, so the member row
  is the only trace of the last "yes");
- any other audit row about the member (a one-off send, who asked and why).

Each source is one indexed query on the member's id; the lists are small, so they are merged here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import models
from campaigns.calendar import iso_utc
from loyalty.errors import InputError
from models.audit import AuditEntry
from models.delivery import Delivery, DeliveryState
from models.member import Member
from models.order import Order, OrderStatus
from models.points import PointEntry

CONSENT_ACTIONS = ("optout.", "consent.")


@dataclass(frozen=True)
class Event:
    at: datetime
    type: str  # delivery, points, tier, consent, audit
    summary: str  # one line a person reads
    data: dict[str, Any] = field(default_factory=dict)  # the fields, for --json

    def as_json(self) -> dict[str, Any]:
        return {"at": iso_utc(self.at), "type": self.type, "summary": self.summary, **self.data}


def get_member(session: Session, external_id: str) -> Member:
    member = session.scalar(select(Member).where(Member.external_id == external_id))
    if member is None:
        raise InputError(f"There is no member with the id {external_id!r}; use the shop's member id, like M0042.")
    return member


def member_history(session: Session, member: Member) -> list[Event]:
    events = [
        *_deliveries(session, member),
        *_points(session, member),
        *_tier_changes(session, member),
        *_audit(session, member),
    ]
    events.extend(_consent_on_record(member, events))
    order = {"tier": 0, "consent": 1, "audit": 2, "delivery": 3, "points": 4}
    return sorted(events, key=lambda e: (e.at, order.get(e.type, 9)))


def _deliveries(session: Session, member: Member) -> list[Event]:
    rows = session.scalars(select(Delivery).where(Delivery.member_id == member.id).order_by(Delivery.id))
    events = []
    for d in rows:
        at = max(d.send_at, d.planned_at)  # when it was (or is) due: the ledger's own clock, as for its reward
        one_off = d.occurrence_key.startswith("oneoff:")
        what = f"{'one-off ' if one_off else ''}{d.campaign}" + (f" by {d.channel}" if d.channel else "")
        outcome = d.state + (f" ({d.reason})" if d.reason else "")
        if d.state == DeliveryState.PLANNED:
            outcome += f", due {iso_utc(d.send_at)}"
        extras = []
        if d.reward_points:
            extras.append(f"{d.reward_points} points")
        if d.requested_by:
            extras.append(f"asked by {d.requested_by}")
        summary = f"{what}: {outcome}" + (f"; {', '.join(extras)}" if extras else "")
        events.append(Event(at, "delivery", summary, {
            "delivery_id": d.id, "campaign": d.campaign, "channel": d.channel, "state": d.state,
            "reason": d.reason, "occurrence_key": d.occurrence_key, "reward_points": d.reward_points,
            "requested_by": d.requested_by, "finished_at": iso_utc(d.finished_at) if d.finished_at else None,
        }))
    return events


def _points(session: Session, member: Member) -> list[Event]:
    rows = session.scalars(
        select(PointEntry).where(PointEntry.member_id == member.id).order_by(PointEntry.occurred_at, PointEntry.id)
    )
    balance = 0
    events = []
    for entry in rows:
        balance += entry.points
        expiry = f", expires {entry.expires_at.date().isoformat()}" if entry.expires_at else ""
        source = f" ({entry.source})" if entry.source else ""
        summary = f"{entry.points:+d} points, {entry.kind}{source}{expiry}; balance {balance}"
        events.append(Event(entry.occurred_at, "points", summary, {
            "kind": entry.kind, "points": entry.points, "source": entry.source,
            "expires_at": iso_utc(entry.expires_at) if entry.expires_at else None, "balance": balance,
        }))
    return events


def _tier_changes(session: Session, member: Member) -> list[Event]:
    model = getattr(models, "TierChange", None)
    if model is None:  # no tier history table in this version of the schema
        return []
    rows = session.scalars(select(model).where(model.member_id == member.id).order_by(model.at, model.id))
    return [
        Event(row.at, "tier", f"tier {row.from_tier} → {row.to_tier} ({row.cause})", {
            "from": row.from_tier, "to": row.to_tier, "direction": row.direction, "cause": row.cause,
        })
        for row in rows
    ]


def _audit(session: Session, member: Member) -> list[Event]:
    rows = session.scalars(select(AuditEntry).where(AuditEntry.member_id == member.id).order_by(AuditEntry.at, AuditEntry.id))
    events = []
    for row in rows:
        why = f": {row.reason}" if row.reason else ""
        if row.action.startswith(CONSENT_ACTIONS):
            verb, channel = row.action.split(".", 1)
            word = "opt-out" if verb == "optout" else "consent change"
            events.append(Event(row.at, "consent", f"{channel} {word} by {row.actor}{why}", {
                "channel": channel, "opt_in": verb != "optout", "actor": row.actor, "reason": row.reason,
            }))
        else:
            events.append(Event(row.at, "audit", f"{row.action} by {row.actor}{why}", {
                "action": row.action, "actor": row.actor, "reason": row.reason, "details": row.details or {},
            }))
    return events


def _consent_on_record(member: Member, events: list[Event]) -> list[Event]:
    """The consent the member row records now, unless an audit row already tells that change."""
    told = {(e.data.get("channel"), e.at) for e in events if e.type == "consent"}
    found = []
    for channel in ("email", "sms"):
        at = getattr(member, f"{channel}_consent_at")
        if at is None or (channel, at) in told:
            continue
        opted_in = bool(getattr(member, f"{channel}_opt_in"))
        source = getattr(member, f"{channel}_consent_source")
        word = "opt-in" if opted_in else "opt-out"
        found.append(Event(at, "consent", f"{channel} {word}" + (f" ({source})" if source else ""), {
            "channel": channel, "opt_in": opted_in, "source": source,
        }))
    return found


def member_summary(session: Session, member: Member) -> dict[str, Any]:
    """What ``loyalty member show`` prints: who, how to reach them, consent, tier, points, activity."""
    balance = session.scalar(select(func.coalesce(func.sum(PointEntry.points), 0)).where(PointEntry.member_id == member.id))
    next_expiry = session.scalar(
        select(func.min(PointEntry.expires_at)).where(PointEntry.member_id == member.id, PointEntry.remaining > 0)
    )
    expiring = 0
    if next_expiry is not None:
        expiring = session.scalar(
            select(func.coalesce(func.sum(PointEntry.remaining), 0))
            .where(PointEntry.member_id == member.id, PointEntry.remaining > 0, PointEntry.expires_at == next_expiry)
        )
    last_order = session.scalar(
        select(func.max(Order.placed_at)).where(Order.member_id == member.id, Order.status == OrderStatus.PLACED)
    )
    by_state = dict(session.execute(
        select(Delivery.state, func.count()).where(Delivery.member_id == member.id).group_by(Delivery.state)
    ).all())
    birthday = None
    if member.birth_month and member.birth_day:
        year = f"{member.birth_year:04d}" if member.birth_year else "-"  # --MM-DD when the year is unknown
        birthday = f"{year}-{member.birth_month:02d}-{member.birth_day:02d}"
    return {
        "member": member.external_id,
        "name": " ".join(p for p in (member.first_name, member.last_name) if p) or None,
        "email": member.email, "email_status": member.email_status,
        "phone": member.phone, "phone_status": member.phone_status,
        "locale": member.locale, "timezone": member.timezone,
        "birthday": birthday,
        "birthday_known_since": _iso(member.birthday_updated_at),
        "tier": member.tier,
        "joined_at": _iso(member.joined_at),
        "consent": {
            channel: {
                "opt_in": bool(getattr(member, f"{channel}_opt_in")),
                "at": _iso(getattr(member, f"{channel}_consent_at")),
                "source": getattr(member, f"{channel}_consent_source"),
            }
            for channel in ("email", "sms")
        },
        "points_balance": int(balance or 0),
        "next_expiry": {"points": int(expiring or 0), "at": _iso(next_expiry)} if next_expiry else None,
        "last_order_at": _iso(last_order),
        "deliveries": {state: by_state[state] for state in DeliveryState.ALL if state in by_state},
    }


def _iso(value: datetime | None) -> str | None:
    return iso_utc(value) if value else None
