"""Privacy requests: erasing a member's personal data, and exporting everything held about them.

Erasure keeps the accounts: the member row (by the shop's id), the points ledger, orders and the send
ledger stay, anonymous; names, email, phone, their look-up hashes (also those kept with the bounces
and complaints about their address), the birthday, consent, the stored payloads of the shop's deliveries about the member and the facts kept with their messages go. Sends
still planned for them are skipped (``member_erased``). Both are audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models.audit import AuditAction, AuditEntry
from models.coupons import Coupon
from models.db import rows_changed
from models.delivery import Delivery, DeliveryState
from models.email_feedback import EmailFeedback
from models.inbox import InboxEntry, erase_bodies
from models.member import ContactStatus, Member
from models.order import Order
from models.points import PointEntry
from models.tier import TierChange

ERASED_REASON = "member_erased"


def erase_member(session: Session, member: Member, *, actor: str, reason: str, now: datetime) -> dict[str, int]:
    """Erase ``member``'s personal data (see the module); returns what was changed, for the audit row."""
    for column in ("email", "phone", "first_name", "last_name", "email_lookup", "phone_lookup",
                   "birth_year", "birth_month", "birth_day", "birthday_updated_at", "mailchimp_hash"):
        setattr(member, column, None)
    member.email_status = ContactStatus.MISSING
    member.phone_status = ContactStatus.MISSING
    for channel in ("email", "sms"):
        setattr(member, f"{channel}_opt_in", False)
        setattr(member, f"{channel}_consent_at", now)
        setattr(member, f"{channel}_consent_source", "erased")
    member.erased_at = now
    skipped = rows_changed(session.execute(
        update(Delivery)
        .where(Delivery.member_id == member.id, Delivery.state == DeliveryState.PLANNED)
        .values(state=DeliveryState.SKIPPED, reason=ERASED_REASON, finished_at=now, updated_at=now)
    ))
    session.execute(update(Delivery).where(Delivery.member_id == member.id).values(payload=None))
    session.execute(update(EmailFeedback).where(EmailFeedback.member_id == member.id).values(email_lookup=None))
    inbox = erase_bodies(session, member.external_id)
    counts = {"deliveries_skipped": skipped, "inbox_payloads_erased": inbox}
    session.add(AuditEntry(at=now, actor=actor[:120], action=AuditAction.MEMBER_ERASED, member_id=member.id,
                           reason=reason, details=counts))
    return counts


def export_member(session: Session, member: Member, *, actor: str, reason: str, now: datetime) -> dict[str, Any]:
    """Everything held about ``member``, as JSON-ready data (the audit row of the export is written too)."""
    def iso(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment else None

    birthday = None
    if member.birth_month and member.birth_day:
        birthday = (f"{member.birth_year:04d}-" if member.birth_year else "--") + f"{member.birth_month:02d}-{member.birth_day:02d}"
    data: dict[str, Any] = {
        "member": {
            "external_id": member.external_id, "email": member.email, "phone": member.phone,
            "first_name": member.first_name, "last_name": member.last_name, "locale": member.locale,
            "timezone": member.timezone, "birthday": birthday, "tier": member.tier,
            "joined_at": iso(member.joined_at), "erased_at": iso(member.erased_at),
            "consent": {
                channel: {"given": getattr(member, f"{channel}_opt_in"),
                          "at": iso(getattr(member, f"{channel}_consent_at")),
                          "source": getattr(member, f"{channel}_consent_source")}
                for channel in ("email", "sms")
            },
        },
        "points": [
            {"entry": e.entry_key, "kind": e.kind, "points": e.points, "at": iso(e.occurred_at),
             "expires_at": iso(e.expires_at), "remaining": e.remaining, "source": e.source}
            for e in session.scalars(select(PointEntry).where(PointEntry.member_id == member.id).order_by(PointEntry.id))
        ],
        "orders": [
            {"order_id": o.order_id, "placed_at": iso(o.placed_at), "total": str(o.total), "currency": o.currency,
             "status": o.status, "refunded_amount": str(o.refunded_amount)}
            for o in session.scalars(select(Order).where(Order.member_id == member.id).order_by(Order.placed_at))
        ],
        "messages": [
            {"campaign": d.campaign, "occurrence": d.occurrence_key, "channel": d.channel, "state": d.state,
             "reason": d.reason, "send_at": iso(d.send_at), "finished_at": iso(d.finished_at),
             "reward_points": d.reward_points, "coupon_code": d.coupon_code}
            for d in session.scalars(select(Delivery).where(Delivery.member_id == member.id).order_by(Delivery.id))
        ],
        "coupons": [
            {"code": c.code, "percent_off": str(c.percent_off) if c.percent_off is not None else None,
             "amount_off": str(c.amount_off) if c.amount_off is not None else None, "currency": c.currency,
             "expires_at": iso(c.expires_at), "state": c.state, "used_at": iso(c.used_at)}
            for c in session.scalars(select(Coupon).where(Coupon.member_id == member.id).order_by(Coupon.id))
        ],
        "tier_changes": [
            {"from": t.from_tier, "to": t.to_tier, "direction": t.direction, "at": iso(t.at), "cause": t.cause}
            for t in session.scalars(select(TierChange).where(TierChange.member_id == member.id).order_by(TierChange.at))
        ],
        "audit": [
            {"at": iso(a.at), "actor": a.actor, "action": a.action, "reason": a.reason}
            for a in session.scalars(select(AuditEntry).where(AuditEntry.member_id == member.id).order_by(AuditEntry.id))
        ],
        "email_feedback": [
            {"received_at": iso(f.received_at), "provider": f.provider, "kind": f.kind, "status": f.status,
             "effect": f.effect, "campaign": f.campaign}
            for f in session.scalars(select(EmailFeedback).where(EmailFeedback.member_id == member.id)
                                     .order_by(EmailFeedback.id))
        ],
        "shop_events": [
            {"received_at": iso(i.received_at), "platform": i.platform, "topic": i.topic, "state": i.state}
            for i in session.scalars(select(InboxEntry).where(InboxEntry.member_ref == member.external_id)
                                     .order_by(InboxEntry.id))
        ],
    }
    session.add(AuditEntry(at=now, actor=actor[:120], action=AuditAction.MEMBER_EXPORTED, member_id=member.id,
                           reason=reason))
    return data
