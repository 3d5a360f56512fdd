"""Delivering planned sends: claim, gate, re-check, render, send, record, reward.

Each delivery is claimed alone, right before its send, by moving it ``planned → sending`` in one
conditional UPDATE, committed first: whoever wins the claim is the only one to send it. So a killed
worker leaves at most the message it was sending in ``sending`` (the sweeper later marks it
``unknown``), never a batch of untouched rows.

Two rules across campaigns are enforced inside the claim's transaction:

- **quiet hours** for SMS: a claim inside the member's night goes back to ``planned`` for the end
  of it (deferred, never dropped);
- **the frequency cap**: the member's row is locked while their recent marketing messages are
  counted, so two campaigns claiming at once cannot both pass a cap of one more.

The result and the reward are written in one transaction, guarded by ``state = 'sending'``; the
reward's ledger key is derived from the occurrence, so it is granted once whatever happens.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from campaigns import calendar
from campaigns.context import message_context
from campaigns.eligibility import Reason, channel_ready
from campaigns.kinds import rules_for
from campaigns.kinds_api import SendCheck
from campaigns.rendering import RenderError
from campaigns.sms_segments import measure
from loyalty.redact import redact
from loyalty.tokens import unsubscribe_url
from models import ledger
from models.audit import AuditEntry
from models.base import utcnow
from models.db import transaction
from models.delivery import Delivery, DeliveryState
from models.member import Member
from models.points import EntryKind
from workers.channels.base import (
    AmbiguousFailure,
    ChannelFailure,
    Outgoing,
    OutgoingEmail,
    OutgoingMailchimp,
    OutgoingSms,
    PermanentFailure,
    RetryableFailure,
)
from workers.mailchimp_sync import merge_fields
from workers.runtime import Runtime

log = structlog.get_logger("loyalty.delivery")

RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(minutes=15)


def retry_delay(attempt: int) -> timedelta:
    """Wait before attempt ``attempt + 1``: 30 s, 1, 2, 4, 8 then 15 minutes at most."""
    return min(RETRY_BASE * (2 ** max(attempt - 1, 0)), RETRY_CAP)


@dataclass
class DeliveryReport:
    outcomes: Counter = field(default_factory=Counter)  # final state → count
    reasons: Counter = field(default_factory=Counter)  # skip/failure reason → count
    later: dict[int, datetime] = field(default_factory=dict)  # still planned: id → when it is due

    def merge(self, other: DeliveryReport) -> None:
        self.outcomes.update(other.outcomes)
        self.reasons.update(other.reasons)
        self.later.update(other.later)

    def count(self, state: str, reason: str | None) -> None:
        self.outcomes[state] += 1
        if reason:
            self.reasons[reason] += 1


class _Outcome(Exception):
    """Ends one delivery early with a final state (raised while preparing it)."""

    def __init__(self, state: str, reason: str | None, detail: str | None = None):
        self.state, self.reason, self.detail = state, reason, detail


@dataclass
class _Prepared:
    message: Outgoing
    coupon_code: str | None


def deliver(runtime: Runtime, delivery_ids: list[int], *, as_of: datetime | None = None) -> DeliveryReport:
    """Deliver the given planned deliveries that are due at ``as_of`` (now by default)."""
    report = DeliveryReport()
    channels: dict[str, object] = {}
    try:
        for delivery_id in delivery_ids:
            _deliver_one(runtime, delivery_id, as_of or utcnow(), channels, report)
    finally:
        for channel in channels.values():
            channel.close()
    return report


def _deliver_one(runtime: Runtime, delivery_id: int, as_of: datetime, channels: dict, report: DeliveryReport) -> None:
    with transaction(runtime.sessions) as session:
        if not _claim_and_gate(runtime, session, delivery_id, as_of, report):
            return

    try:
        with runtime.sessions() as session:  # closed (connection released) before the network call
            delivery = session.get(Delivery, delivery_id)
            try:
                prepared, early_end = _prepare(runtime, session, delivery, as_of), None
            except _Outcome as outcome:
                prepared, early_end = None, outcome
    except OperationalError:
        # Our claim is committed, so the row is ours alone; nothing was sent: put it back.
        _release_claim(runtime, delivery_id)
        raise
    if early_end is not None:
        _finish(runtime, delivery, early_end.state, early_end.reason, early_end.detail, as_of, report)
        return

    channel = channels.get(delivery.channel) or channels.setdefault(delivery.channel, runtime.channel(delivery.channel))
    try:
        provider_id = channel.send(prepared.message)
    except PermanentFailure as exc:
        _finish(runtime, delivery, DeliveryState.FAILED, exc.reason, exc.detail, as_of, report, failure=exc)
    except AmbiguousFailure as exc:
        _finish(runtime, delivery, DeliveryState.UNKNOWN, exc.reason, exc.detail, as_of, report)
    except RetryableFailure as exc:
        if delivery.attempts >= runtime.settings.max_delivery_attempts:
            _finish(runtime, delivery, DeliveryState.FAILED, Reason.RETRIES_EXHAUSTED, f"{exc.reason}: {exc.detail}", as_of, report)
        else:
            _finish(runtime, delivery, DeliveryState.PLANNED, exc.reason, exc.detail, as_of, report,
                    send_at=as_of + retry_delay(delivery.attempts))
    else:
        _finish(runtime, delivery, DeliveryState.SENT, None, None, as_of, report,
                provider_id=provider_id, coupon_code=prepared.coupon_code)


def _release_claim(runtime: Runtime, delivery_id: int) -> None:
    """Put a claimed delivery back to ``planned``: nothing was sent, so sending it later is safe
    (left in ``sending``, the sweeper would have to record it ``unknown``)."""
    for attempt in range(8):
        try:
            with transaction(runtime.sessions) as session:
                session.execute(update(Delivery).where(Delivery.id == delivery_id, Delivery.state == DeliveryState.SENDING)
                                .values(state=DeliveryState.PLANNED, attempts=Delivery.attempts - 1, updated_at=utcnow()))
            return
        except OperationalError:
            time.sleep(min(2**attempt * 0.25, 15))


def _claim_and_gate(runtime: Runtime, session: Session, delivery_id: int, as_of: datetime, report: DeliveryReport) -> bool:
    """Claim the delivery and apply quiet hours and the frequency cap; True if it is ours to send."""
    now = utcnow()
    claimed = session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.state == DeliveryState.PLANNED, Delivery.send_at <= as_of)
        .values(state=DeliveryState.SENDING, sending_at=now, attempts=Delivery.attempts + 1, updated_at=now)
        .returning(Delivery.member_id, Delivery.campaign, Delivery.channel, Delivery.occurrence_key)
    ).first()
    if claimed is None:
        row = session.execute(select(Delivery.state, Delivery.send_at).where(Delivery.id == delivery_id)).first()
        if row is not None and row.state == DeliveryState.PLANNED:
            report.later[delivery_id] = row.send_at
        return False  # someone else has it, or it is already final: nothing to do

    program = runtime.program
    if claimed.channel == "sms":
        zone = session.scalar(select(Member.timezone).where(Member.id == claimed.member_id))
        allowed = program.quiet_hours.next_allowed(as_of, zone)
        if allowed > as_of:
            session.execute(update(Delivery).where(Delivery.id == delivery_id).values(
                state=DeliveryState.PLANNED, send_at=allowed, attempts=Delivery.attempts - 1, updated_at=now))
            report.later[delivery_id] = allowed
            return False

    campaign = runtime.campaigns.campaigns.get(claimed.campaign)
    deliberate = claimed.occurrence_key.startswith("oneoff:")  # a support send is not capped
    if campaign is not None and not campaign.frequency_cap_exempt and not deliberate:
        session.execute(select(Member.id).where(Member.id == claimed.member_id).with_for_update())
        capped = [c.id for c in runtime.campaigns.campaigns.values() if not c.frequency_cap_exempt]
        recent = session.scalar(
            select(func.count()).where(
                Delivery.member_id == claimed.member_id,
                Delivery.id != delivery_id,
                Delivery.campaign.in_(capped),
                Delivery.state.in_([DeliveryState.SENT, DeliveryState.SENDING]),
                Delivery.send_at > as_of - timedelta(days=program.frequency_cap.window_days),
            )
        )
        if recent >= program.frequency_cap.max_messages:
            session.execute(update(Delivery).where(Delivery.id == delivery_id).values(
                state=DeliveryState.SKIPPED, reason=Reason.FREQUENCY_CAP, finished_at=now, updated_at=now))
            report.count(DeliveryState.SKIPPED, Reason.FREQUENCY_CAP)
            return False
    return True


def _prepare(runtime: Runtime, session: Session, delivery: Delivery, as_of: datetime) -> _Prepared:
    campaign = runtime.campaigns.campaigns.get(delivery.campaign)
    if campaign is None or not campaign.enabled:
        raise _Outcome(DeliveryState.SKIPPED, Reason.CAMPAIGN_DISABLED)
    member = session.get(Member, delivery.member_id)
    if campaign.audience.tiers is not None and member.tier not in campaign.audience.tiers:
        raise _Outcome(DeliveryState.SKIPPED, Reason.NOT_IN_AUDIENCE)
    if delivery.channel is None or not channel_ready(member, delivery.channel):
        raise _Outcome(DeliveryState.SKIPPED, Reason.CONSENT_WITHDRAWN)
    settings = runtime.settings
    check = SendCheck(campaign, member, delivery, as_of, session, runtime.program, settings.secret)
    if not delivery.occurrence_key.startswith("oneoff:"):
        reason = rules_for(campaign).recheck(check)
        if reason is not None:
            raise _Outcome(DeliveryState.SKIPPED, reason)

    link_channel = "email" if delivery.channel == "mailchimp" else delivery.channel  # Mailchimp emails them
    link = unsubscribe_url(settings.public_base_url, settings.secret, member.external_id, link_channel)
    expires_on = _reward_expiry(campaign, as_of)
    context = message_context(
        check,
        points_balance=ledger.balance(session, member.id),
        unsubscribe_url=link,
        reward_expires_on=calendar.local_datetime(expires_on, member.timezone).date() if expires_on else None,
    )
    locale = runtime.renderer.choose_locale(campaign, member.locale)
    coupon = (context.get("coupon") or {}).get("code")
    try:
        if delivery.channel == "sms":
            if not member.phone:
                raise _Outcome(DeliveryState.SKIPPED, Reason.NO_USABLE_ADDRESS)
            body = runtime.renderer.render_sms(campaign, locale, context)
            length, cap = measure(body), campaign.messages.sms.max_segments
            if length.segments > cap:  # refused rather than paid for or cut (a coupon code could be lost)
                raise _Outcome(DeliveryState.FAILED, Reason.SMS_TOO_LONG, f"{length}, more than max_segments {cap}")
            return _Prepared(OutgoingSms(delivery.occurrence_key, member.phone, body), coupon)
        if not member.email:
            raise _Outcome(DeliveryState.SKIPPED, Reason.NO_USABLE_ADDRESS)
        if delivery.channel == "mailchimp":
            step = campaign.messages.mailchimp
            properties = runtime.renderer.render_properties(campaign, locale, step.properties, context)
            fields = merge_fields(session, [member], as_of)[member.id]
            return _Prepared(OutgoingMailchimp(delivery.occurrence_key, member.email, tuple(step.tags), step.event,
                                               properties, fields), coupon)
        rendered = runtime.renderer.render_email(campaign, locale, context)
    except RenderError as exc:
        raise _Outcome(DeliveryState.FAILED, "template_error", str(exc)[:500]) from None
    email = OutgoingEmail(
        occurrence_key=delivery.occurrence_key, to=member.email, sender=settings.email_from,
        subject=rendered.subject, text=rendered.text, html=rendered.html, unsubscribe_url=link,
    )
    return _Prepared(email, coupon)


def _reward_expiry(campaign, as_of: datetime) -> datetime | None:
    reward = getattr(campaign, "reward", None)
    if reward is None or reward.expires_after_days is None:
        return None
    return as_of + timedelta(days=reward.expires_after_days)


def _finish(
    runtime: Runtime,
    delivery: Delivery,
    state: str,
    reason: str | None,
    detail: str | None,
    as_of: datetime,
    report: DeliveryReport,
    *,
    provider_id: str | None = None,
    send_at: datetime | None = None,
    coupon_code: str | None = None,
    failure: ChannelFailure | None = None,
) -> None:
    """Record the outcome (and the reward, once). Retried for a while if the database is away,
    because the send itself already happened and must not be repeated."""
    detail = redact(detail)  # providers quote the address or number they refused
    values = {"state": state, "reason": reason, "detail": detail, "updated_at": utcnow()}
    if state in DeliveryState.FINAL:
        values["finished_at"] = utcnow()
    if provider_id is not None:
        values["provider_message_id"] = provider_id
    if send_at is not None:
        values["send_at"] = send_at
    if coupon_code is not None:
        values["coupon_code"] = coupon_code

    for attempt in range(8):
        try:
            with transaction(runtime.sessions) as session:
                moved = session.execute(
                    update(Delivery)
                    .where(Delivery.id == delivery.id, Delivery.state == DeliveryState.SENDING)
                    .values(**values)
                    .returning(Delivery.id)
                ).first()
                if moved and state == DeliveryState.SENT and delivery.reward_points:
                    _grant_reward(runtime, session, delivery, as_of)
                if moved and failure is not None and failure.member_updates:
                    session.execute(update(Member).where(Member.id == delivery.member_id).values(**failure.member_updates))
                    session.add(AuditEntry(actor=f"provider:{delivery.channel}", action="member.updated_by_provider",
                                           member_id=delivery.member_id, reason=failure.reason,
                                           details={"columns": sorted(failure.member_updates), "delivery_id": delivery.id}))
            break
        except OperationalError:
            if attempt == 7:
                raise
            time.sleep(min(2**attempt * 0.25, 15))

    if state == DeliveryState.PLANNED:
        report.later[delivery.id] = send_at
    else:
        report.count(state, reason)
    log.info("delivery.finished", delivery_id=delivery.id, campaign=delivery.campaign, channel=delivery.channel,
             state=state, reason=reason, detail=detail, attempt=delivery.attempts)


def _grant_reward(runtime: Runtime, session: Session, delivery: Delivery, as_of: datetime) -> None:
    campaign = runtime.campaigns.campaigns[delivery.campaign]
    ledger.credit(
        session,
        member_id=delivery.member_id,
        entry_key=f"reward:{delivery.occurrence_key}",
        kind=EntryKind.EARN,
        points=delivery.reward_points,
        occurred_at=as_of,
        expires_at=_reward_expiry(campaign, as_of),
        source=f"campaign:{delivery.campaign}",
    )
