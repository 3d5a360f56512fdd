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
from datetime import datetime, timedelta
from typing import Any

import phonenumbers
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.calendar import iso_utc, local_datetime
from core.errors import InputError
from models.audit import AuditEntry
from models.coupons import Coupon
from models.delivery import Delivery, DeliveryState
from models.member import Member
from models.order import Order, OrderStatus
from models.personal_data import lookup
from models.points import PointEntry
from models.tier import TierChange
from services.imports.rows import locale_region

CONSENT_ACTIONS = ("optout.", "optin.", "consent.")
SAME_CHANGE = timedelta(seconds=5)


@dataclass(frozen=True)
class Event:
    at: datetime
    type: str  # delivery, points, tier, consent, audit
    summary: str  # one line a person reads
    data: dict[str, Any] = field(default_factory=dict)  # the fields, for --json

    def as_json(self) -> dict[str, Any]:
        return {"at": iso_utc(self.at), "type": self.type, "summary": self.summary, **self.data}


def get_member(session: Session, key: str, default_locale: str | None = None) -> Member:
    """The member ``key`` names: their external id, else their email, else their phone number.

    The external id is tried first, so an id made only of digits still finds its member. Then a
    key with ``@`` is looked up as an email, and one that reads as a phone number (``+33 6 12 34 56
    78``, or national digits in the country of ``default_locale``) as that number in E.164, both through the keyed
    look-up hashes. Errors never repeat an email or a phone number.
    """
    key = key.strip()
    member = session.scalar(select(Member).where(Member.external_id == key))
    if member is not None:
        return member
    if "@" in key:
        found = _by_lookup(session, Member.email_lookup, lookup("email", key))
        what = "email address"
    elif any(ch.isdigit() for ch in key) and not any(ch.isalpha() for ch in key):
        phone = e164(key, locale_region(default_locale) if default_locale else None)
        if phone is None:  # not echoed: it may be (part of) a phone number
            raise InputError("There is no member with that id, and it is not a phone number with its country code; "
                             "use the shop's member id (like M0042), an email address or a number starting with +.")
        found = _by_lookup(session, Member.phone_lookup, lookup("phone", phone))
        what = "phone number"
    else:
        raise InputError(f"There is no member with the id {key!r}; use the shop's member id (like M0042), "
                         "their email address or their phone number.")
    if not found:
        raise InputError(f"No member has that {what}; check it, or use the shop's member id (like M0042).")
    if len(found) > 1:
        ids = ", ".join(m.external_id for m in found[:10]) + (", ..." if len(found) > 10 else "")
        raise InputError(f"{len(found)} members share that {what} ({ids}); use one of these ids instead.")
    return found[0]


def e164(text: str, default_region: str | None) -> str | None:
    """``text`` as an E.164 phone number, or None when it does not read as one."""
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _by_lookup(session: Session, column, digest: str | None) -> list[Member]:
    if digest is None:
        return []
    return list(session.scalars(select(Member).where(column == digest).order_by(Member.external_id)))


def member_history(session: Session, member: Member) -> list[Event]:
    events = [
        *_deliveries(session, member),
        *_points(session, member),
        *_tier_changes(session, member),
        *_audit(session, member),
        *_coupons(session, member),
    ]
    events.extend(_consent_on_record(member, events))
    order = {"tier": 0, "consent": 1, "audit": 2, "delivery": 3, "points": 4, "coupon": 5}
    return sorted(events, key=lambda e: (e.at, order.get(e.type, 9)))


def _deliveries(session: Session, member: Member) -> list[Event]:
    """Each delivery, with the reward it granted (read from the points ledger, not from what it was
    planned with: a skipped or failed message grants nothing, nor does a resend) and its coupon."""
    rows = session.scalars(select(Delivery).where(Delivery.member_id == member.id).order_by(Delivery.id)).all()
    granted = dict(session.execute(
        select(PointEntry.entry_key, PointEntry.points)
        .where(PointEntry.member_id == member.id, PointEntry.entry_key.in_([f"reward:{d.occurrence_key}" for d in rows]))
    ).all()) if rows else {}
    events = []
    for d in rows:
        at = max(d.send_at, d.planned_at)  # when it was (or is) due: the ledger's own clock, as for its reward
        one_off = d.occurrence_key.startswith("oneoff:")
        resend_of = (d.payload or {}).get("resend_of")
        what = (f"{'one-off ' if one_off else ''}{d.campaign}" + (f" by {d.channel}" if d.channel else "")
                + (f", variant {d.variant}" if d.variant else ""))
        outcome = d.state + (f" ({d.reason})" if d.reason else "")
        if d.state == DeliveryState.PLANNED:
            outcome += f", due {iso_utc(d.send_at)}"
        points = granted.get(f"reward:{d.occurrence_key}")
        extras = []
        if resend_of:
            extras.append(f"resend of {resend_of}, no new reward")
        elif points:
            extras.append(f"{points} points")
        elif d.reward_points and d.state in (DeliveryState.PLANNED, DeliveryState.SENDING):
            extras.append(f"{d.reward_points} points once sent")
        if d.coupon_code:
            extras.append(f"coupon {d.coupon_code}")
        if d.requested_by:
            extras.append(f"asked by {d.requested_by}")
        summary = f"{what}: {outcome}" + (f"; {', '.join(extras)}" if extras else "")
        events.append(Event(at, "delivery", summary, {
            "delivery_id": d.id, "campaign": d.campaign, "variant": d.variant, "channel": d.channel, "state": d.state,
            "reason": d.reason, "occurrence_key": d.occurrence_key, "reward_points": points or None,
            "coupon_code": d.coupon_code, "resend_of": resend_of,
            "requested_by": d.requested_by, "finished_at": iso_utc(d.finished_at) if d.finished_at else None,
        }))
    return events


def coupon_line(coupon: Coupon, timezone: str) -> str:
    """``BACK-M2G3SRVFIR 15% off until 2027-04-11: used (shopify:order:6100000000002)``; until: the
    last day it works, in the member's time zone."""
    value = f"{coupon.percent_off.normalize():f}% off" if coupon.percent_off is not None else \
        f"{coupon.amount_off} {coupon.currency} off"
    state = {"new": "recorded, not in a shop", "created": f"created in {coupon.shop}",
             "exported": "exported (loyalty coupons export)", "cancelled": "cancelled (points given back)",
             "used": f"used ({coupon.order_ref})" if coupon.order_ref else "used"}.get(coupon.state, coupon.state)
    last_day = local_datetime(coupon.expires_at - timedelta(microseconds=1), timezone).date()
    return f"{coupon.code} {value} until {last_day.isoformat()}: {state}"


def _coupons(session: Session, member: Member) -> list[Event]:
    """Each coupon the member was given (a campaign's or redeemed points), with its state in the shop."""
    rows = session.scalars(select(Coupon).where(Coupon.member_id == member.id).order_by(Coupon.created_at, Coupon.id))
    return [Event(c.created_at, "coupon", f"coupon {coupon_line(c, member.timezone)}", {
        "code": c.code, "state": c.state, "shop": c.shop, "percent_off": str(c.percent_off) if c.percent_off else None,
        "amount_off": str(c.amount_off) if c.amount_off else None, "currency": c.currency,
        "expires_at": iso_utc(c.expires_at), "used_at": _iso(c.used_at), "order": c.order_ref,
        "delivery_id": c.delivery_id, "redemption_id": c.redemption_id,
    }) for c in rows]


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
    rows = session.scalars(select(TierChange).where(TierChange.member_id == member.id)
                           .order_by(TierChange.at, TierChange.id))
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
            word = {"optout": "opt-out", "optin": "opt-in"}.get(verb, "consent change")
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
    found = []
    for channel in ("email", "sms"):
        at = getattr(member, f"{channel}_consent_at")
        opted_in = bool(getattr(member, f"{channel}_opt_in"))
        # The audit row of the same change is written in the same transaction, a moment apart.
        if at is None or any(e.type == "consent" and e.data.get("channel") == channel and e.data.get("opt_in") == opted_in
                             and abs(e.at - at) <= SAME_CHANGE for e in events):
            continue
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
        "deliveries": {state: by_state[state] for state in DeliveryState if state in by_state},
        "coupons": [coupon_line(c, member.timezone) for c in session.scalars(
            select(Coupon).where(Coupon.member_id == member.id).order_by(Coupon.created_at.desc(), Coupon.id.desc())
            .limit(10))],
    }


def _iso(value: datetime | None) -> str | None:
    return iso_utc(value) if value else None
