"""A one-off send by support staff (``loyalty send``), through the same pipeline as a scheduled one.

It is one more row of the send ledger, with the occurrence key ``oneoff:{campaign}:{member}:{n}``
(``n`` is 1 for the first; only ``--force`` or ``--grant`` writes the next), so it is sent once whatever happens,
and it is delivered by :func:`workers.delivery.deliver`, which composes it (:mod:`workers.compose`:
consent re-checked, rendered), records the outcome and grants the reward exactly as for a scheduled
send; ``--dry-run`` shows what the same compose makes of it and writes nothing. The request itself
(who, why) is an audit row written in the same transaction as the ledger row. The occurrence it
stands for is the kind's (``one_off_occurrence`` of its entry in ``campaigns.kinds.KINDS``).

A member who already received the campaign (a scheduled send or a one-off one) is refused unless
support says which of two things it means: ``--force`` re-sends that same message (the original
occurrence's facts and coupon code, marked ``resend_of`` in the payload) and grants nothing, since
its reward is keyed to the original occurrence, already in the points ledger; ``--grant`` sends a
new occurrence with its own reward, audited as ``send.oneoff.grant``.

Consent is never overridden, not even by ``--force``: a member who has withdrawn it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from campaigns.eligibility import choose_channel
from campaigns.kinds import kind_of
from campaigns.variants import variant_name, variant_reward
from core import calendar
from core.errors import InputError
from models.audit import AuditAction, AuditEntry
from models.base import utcnow
from models.db import transaction
from models.delivery import Delivery, DeliveryState, Reason
from models.member import Member
from services.history import get_member
from workers.compose import Rendered, expected_outcomes, render_for  # noqa: F401 (loyalty preview imports them here)
from workers.delivery import deliver
from workers.runtime import Runtime

AUDIT_ACTION = AuditAction.SEND_ONEOFF
GRANT_ACTION = AuditAction.SEND_ONEOFF_GRANT

_WHY_NOT = {
    Reason.NO_CONSENT: "the member has not consented to it",
    Reason.NO_USABLE_ADDRESS: "the member has no usable address for it",
}


@dataclass
class OneOffResult:
    campaign: str
    member: str
    channel: str
    occurrence_key: str
    state: str  # the delivery's state after the send, or "dry_run"
    reason: str | None
    reward_points: int | None
    requested_by: str
    delivery_id: int | None = None
    resend_of: str | None = None  # a resend: the occurrence it repeats (its reward is not granted again)
    rendered: Rendered | None = None  # --dry-run only
    due_at: datetime | None = None  # still planned: when (an SMS in quiet hours, a retry)
    variant: str | None = None  # the campaign's A/B variant the member gets

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "campaign": self.campaign, "member": self.member, "channel": self.channel,
            "occurrence_key": self.occurrence_key, "state": self.state, "reason": self.reason,
            "reward": {"points": self.reward_points} if self.reward_points and not self.resend_of else {},
            "requested_by": self.requested_by, "delivery_id": self.delivery_id, "resend_of": self.resend_of,
        }
        if self.variant is not None:
            data["variant"] = self.variant
        if self.state == DeliveryState.PLANNED and self.due_at is not None:
            data["due_at"] = calendar.iso_utc(self.due_at)
        if self.rendered is not None:
            data["message"] = {"locale": self.rendered.locale, "subject": self.rendered.subject, "text": self.rendered.text}
            data["would_end"] = {"state": self.rendered.state, "reason": self.rendered.reason}
        return data


def oneoff_prefix(campaign_id: str, member_external_id: str) -> str:
    return f"oneoff:{campaign_id}:{member_external_id}:"


def send_one_off(
    runtime: Runtime,
    *,
    campaign_id: str,
    member_external_id: str,
    reason: str,
    actor: str,
    channel: str | None = None,
    force: bool = False,
    grant: bool = False,
    dry_run: bool = False,
    now: datetime | None = None,
) -> OneOffResult:
    """Plan and deliver one send of ``campaign_id`` to one member; raises InputError when refused."""
    now = now or utcnow()
    reason = (reason or "").strip()
    if not reason:
        raise InputError("--reason is empty; say in a few words why this send is made, for the audit log.")
    campaign = runtime.campaigns.get(campaign_id)
    refused = runtime.refusal(campaign.id)
    if refused is not None:  # what `loyalty validate` says of it, and the worker's log
        raise InputError(refused)
    if not campaign.enabled:
        raise InputError(f"The campaign {campaign.id!r} is disabled; enable it before sending it to anyone.")
    if channel is not None and channel not in campaign.channels:
        raise InputError(
            f"The campaign {campaign.id!r} has no {channel} message; its channels are: {', '.join(campaign.channels)}."
        )

    with runtime.sessions() as session:
        member = get_member(session, member_external_id, runtime.settings.default_locale)
        tiers = campaign.audience.tiers
        if tiers is not None and member.tier not in tiers:
            raise InputError(
                f"{member.external_id} is {member.tier}, and {campaign.id!r} is only for {', '.join(tiers)} members."
            )
        original = None if grant else _already_received(session, campaign.id, member, force)
        preferred = [original.channel] if original is not None and original.channel in campaign.channels else []
        chosen, why_not = choose_channel(member, [channel] if channel else [*preferred, *campaign.channels])
        if chosen is None:
            assert why_not is not None  # choose_channel gives the reason when there is no channel
            over = f"by {channel}" if channel else f"by any of its channels ({', '.join(campaign.channels)})"
            raise InputError(
                f"{member.external_id} cannot be sent {campaign.id!r} {over}: {_WHY_NOT.get(why_not, why_not)} "
                f"({why_not}); consent is never overridden."
            )
        number = _next_number(session, campaign.id, member.external_id, force or grant or original is not None)
        payload: dict[str, Any] | None
        if original is not None:  # the same message again: the original's facts, coupon and (granted) reward
            occurrence_date = date.fromisoformat(original.occurrence_date) if original.occurrence_date else None
            payload = {**(original.payload or {}), "resend_of": original.stands_for}
            points = original.reward_points
            variant = original.variant
        else:
            occurrence = kind_of(campaign).one_off_occurrence(
                campaign, member, calendar.local_datetime(now, member.timezone).date(), session)
            occurrence_date, payload = occurrence.date, occurrence.payload
            points = campaign.reward.points_for(member.tier) if campaign.reward is not None else None
            variant = variant_name(campaign, member.external_id)  # the member's own A/B variant, and its gift
            sets_reward, variant_points = variant_reward(campaign, variant, member.tier)
            points = variant_points if sets_reward else points
        delivery = Delivery(
            occurrence_key=f"{oneoff_prefix(campaign.id, member.external_id)}{number}",
            campaign=campaign.id, member_id=member.id, channel=chosen, state=DeliveryState.PLANNED,
            reward_points=points or None, occurrence_date=occurrence_date.isoformat() if occurrence_date else None,
            payload=payload, send_at=now, attempts=0, requested_by=actor[:120], planned_at=now, updated_at=now,
            variant=variant,
        )
        result = OneOffResult(campaign.id, member.external_id, chosen, delivery.occurrence_key, "dry_run", None,
                              delivery.reward_points, actor[:120],
                              resend_of=original.stands_for if original is not None else None, variant=variant)
        if dry_run:
            result.rendered = render_for(runtime, session, campaign, member, delivery, now)
            return result
        member_id = member.id

    with transaction(runtime.sessions) as session:
        result.delivery_id = _insert(session, delivery)
        details = {"campaign": campaign.id, "channel": chosen, "occurrence_key": delivery.occurrence_key,
                   "delivery_id": result.delivery_id, "force": force}
        if result.resend_of:
            details["resend_of"] = result.resend_of
        if grant:
            details["reward_points"] = delivery.reward_points
        session.add(AuditEntry(at=now, actor=actor[:120], action=GRANT_ACTION if grant else AUDIT_ACTION,
                               member_id=member_id, reason=reason, details=details))

    deliver(runtime, [result.delivery_id], as_of=now)
    with runtime.sessions() as session:
        final = session.get(Delivery, result.delivery_id)
        if final is None:  # a delivery row is never deleted
            raise LookupError(f"delivery {result.delivery_id} is not in the database")
        result.state, result.reason, result.due_at = final.state, final.reason, final.send_at
    return result


def _already_received(session: Session, campaign_id: str, member: Member, force: bool) -> Delivery | None:
    """The latest message of the campaign the member was sent (scheduled or one-off), which ``force``
    re-sends; without ``force`` such a message is a refusal that says what to choose."""
    original = session.scalar(
        select(Delivery).where(Delivery.member_id == member.id, Delivery.campaign == campaign_id,
                               Delivery.state == DeliveryState.SENT)
        .order_by(Delivery.finished_at.desc(), Delivery.id.desc()).limit(1)
    )
    if original is None or force:
        return original
    when = (original.finished_at or original.send_at).date().isoformat()
    raise InputError(
        f"{member.external_id} already received {campaign_id!r} on {when} ({original.stands_for}); add --force to "
        "send that same message again (same content and coupon code, no new reward), or --grant to send a new one "
        "with its reward."
    )


def _next_number(session: Session, campaign_id: str, external_id: str, force: bool) -> int:
    """1 for a first one-off send; refuses a second unless ``force``, which takes the next number."""
    prefix = oneoff_prefix(campaign_id, external_id)
    previous = session.execute(
        select(Delivery.occurrence_key, Delivery.planned_at, Delivery.state)
        .where(Delivery.occurrence_key.startswith(prefix, autoescape=True))
    ).all()
    if not previous:
        return 1
    numbers = {int(key[len(prefix):]): (at, state) for key, at, state in previous if key[len(prefix):].isdigit()}
    first_at, first_state = numbers[min(numbers)] if numbers else (previous[0][1], previous[0][2])
    if not force:
        raise InputError(
            f"{external_id} already had a one-off {campaign_id!r} send on {first_at.date().isoformat()} ({first_state}); "
            "add --force to send it again."
        )
    return max(numbers, default=0) + 1


def _insert(session: Session, delivery: Delivery) -> int:
    """Insert the ledger row unless its occurrence key exists (a concurrent identical send)."""
    dialect_insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    columns = {c.name: getattr(delivery, c.key) for c in Delivery.__table__.columns if c.name != "id"}
    columns = {name: value for name, value in columns.items() if value is not None}
    inserted = session.execute(
        dialect_insert(Delivery).values(**columns)
        .on_conflict_do_nothing(index_elements=["occurrence_key"]).returning(Delivery.id)
    ).scalar()
    if inserted is None:
        raise InputError(f"{delivery.occurrence_key} was written by another send a moment ago; nothing was sent twice.")
    return inserted
