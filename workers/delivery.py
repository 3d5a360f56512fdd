"""Delivering planned sends: read, re-check and render a few at a time, then claim, send, record.

A batch is worked through in chunks of :data:`PREPARE_CHUNK`. For a chunk, one read-only session
loads the deliveries, their members and their balances (a few queries, not a few per message),
re-checks each against the campaign's rules and renders it. Then each message, one at a time:

1. **claim**: ``planned → sending`` in one conditional UPDATE, committed before anything goes out;
   whoever wins the claim is the only one to send it. A killed worker leaves at most the message
   it was sending in ``sending`` (the sweeper later marks it ``unknown``), never a batch of
   untouched rows: nothing is claimed ahead of its send.
2. **coupon**: a message carrying a coupon has its code recorded and, with a shop configured, made
   in the shop (``workers/coupons.py``); a shop that refuses or does not answer puts the message
   back for later like a provider error (``coupon_not_created``), so no message carries a code the
   shop does not know;
3. **send** through the channel;
4. **record** the outcome and the reward in one transaction, guarded by ``state = 'sending'``; the
   reward's ledger key is derived from the occurrence, so it is granted once whatever happens.

The claims and results of a batch go through one database connection (one pool check-out, one
liveness ping; :mod:`workers.delivery_link`): on PostgreSQL a message costs one statement and one
commit: its claim carries the previous message's outcome (with its reward); the batch's last
outcome is committed alone.

Two rules across campaigns are enforced at the claim:

- **quiet hours** for SMS: a message due inside the member's night goes back to ``planned`` for
  the end of it (deferred, never dropped);
- **the frequency cap**: the member's row is locked while their recent marketing messages are
  counted, so two campaigns claiming at once cannot both pass a cap of one more.

A message that ends before its send (skipped by a re-check, a template error) is recorded straight
from ``planned``, guarded by that state, so a row another worker has claimed meanwhile is left alone.
"""

from __future__ import annotations

import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import structlog
from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session

from core import calendar
from campaigns.context import message_context
from campaigns.eligibility import channel_ready, not_ready_reason
from campaigns.kinds import kind_of
from campaigns.kinds_api import SendCheck
from campaigns.rendering import RenderError
from campaigns.sms_segments import measure
from core.redact import redact
from core.tokens import unsubscribe_url
from models import ledger
from models.audit import AuditEntry
from models.base import utcnow
from models.delivery import FINAL_STATES, Delivery, DeliveryState, Reason
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
from workers.coupons import Offer, create_in_shop
from workers.delivery_link import LOCK_MEMBER, RECENT_CAPPED, Link
from workers.channels.mailchimp_fields import merge_fields
from workers.runtime import Runtime
from workers.shop_api.discounts import NotShopCustomer, shop_for

log = structlog.get_logger("loyalty.delivery")

RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(minutes=15)

#: Messages read, re-checked and rendered together. Small, so that what a re-check saw is at most
#: a few seconds old when the message is claimed and sent.
PREPARE_CHUNK = 20

COUPON_NOT_CREATED = "coupon_not_created"  # the shop refused the message's coupon or did not answer
SHOP_DISCOUNTS = "shop:discounts"  # the shop's discount client, kept with the batch's channels

def retry_delay(attempt: int) -> timedelta:
    """Wait before attempt ``attempt + 1``: 30 s, 1, 2, 4, 8 then 15 minutes at most."""
    return min(RETRY_BASE * (2 ** max(attempt - 1, 0)), RETRY_CAP)


@dataclass
class DeliveryReport:
    outcomes: Counter = field(default_factory=Counter)  # final state → count
    reasons: Counter = field(default_factory=Counter)  # skip/failure reason → count
    later: dict[int, datetime] = field(default_factory=dict)  # still planned: id → when it is due
    unstarted: list[int] = field(default_factory=list)  # not looked at: the worker is stopping

    def merge(self, other: DeliveryReport) -> None:
        self.outcomes.update(other.outcomes)
        self.reasons.update(other.reasons)
        self.later.update(other.later)
        self.unstarted.extend(other.unstarted)

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
    offer: Offer | None = None  # the coupon the message carries, made in the shop before the send


@dataclass
class _Item:
    """One due delivery of a chunk, after its re-check and rendering."""

    delivery: Delivery
    member: Member
    prepared: _Prepared | None = None
    ended: _Outcome | None = None


def deliver(runtime: Runtime, delivery_ids: list[int], *, as_of: datetime | None = None,
            stopping: Callable[[], bool] = lambda: False) -> DeliveryReport:
    """Deliver the given planned deliveries that are due at ``as_of`` (now by default).

    When ``stopping()`` turns true, the ids not started yet are left untouched and listed in
    ``report.unstarted`` (the actor enqueues them again)."""
    report = DeliveryReport()
    channels: dict[str, object] = {}
    link = Link(runtime.engine)
    try:
        for start in range(0, len(delivery_ids), PREPARE_CHUNK):
            if stopping():
                report.unstarted.extend(delivery_ids[start:])
                break
            instant = as_of or utcnow()
            items = _prepare_chunk(runtime, delivery_ids[start:start + PREPARE_CHUNK], instant, report)
            for position, item in enumerate(items):
                if stopping():  # nothing of these was written: they are still planned
                    report.unstarted.extend(i.delivery.id for i in items[position:])
                    report.unstarted.extend(delivery_ids[start + PREPARE_CHUNK:])
                    return report
                if item.ended is not None:
                    _end_unclaimed(link, item, instant, report)
                else:
                    _claim_and_send(runtime, link, item, instant, channels, report)
    finally:
        link.drop()
        for channel in channels.values():
            channel.close()
    return report


def _prepare_chunk(runtime: Runtime, ids: list[int], as_of: datetime, report: DeliveryReport) -> list[_Item]:
    """The chunk's due deliveries, each re-checked and rendered (or ended), in id order."""
    with runtime.sessions() as session:  # read-only; closed (connection released) before any send
        deliveries = session.scalars(select(Delivery).where(Delivery.id.in_(ids)).order_by(Delivery.id)).all()
        due = []
        for delivery in deliveries:
            if delivery.state != DeliveryState.PLANNED:
                continue  # someone else has it, or it is already final: nothing to do
            if delivery.send_at > as_of:
                report.later[delivery.id] = delivery.send_at
                continue
            due.append(delivery)
        if not due:
            return []
        member_ids = {d.member_id for d in due}
        members = {m.id: m for m in session.scalars(select(Member).where(Member.id.in_(member_ids)))}
        balances = ledger.balances(session, member_ids)
        on_mailchimp = [members[d.member_id] for d in due if d.channel == "mailchimp"]
        fields = merge_fields(session, on_mailchimp, as_of) if on_mailchimp else {}
        items = []
        for delivery in due:
            item = _Item(delivery, members[delivery.member_id])
            try:
                item.prepared = _prepare(runtime, session, delivery, item.member, as_of,
                                         balance=balances.get(item.member.id, 0), fields=fields)
            except _Outcome as outcome:
                item.ended = outcome
            items.append(item)
        return items


def _end_unclaimed(link: Link, item: _Item, as_of: datetime, report: DeliveryReport) -> None:
    """Record an outcome reached before the send (a skip, a template error) straight from ``planned``."""
    outcome, delivery = item.ended, item.delivery
    now = utcnow()
    values = {"state": outcome.state, "reason": outcome.reason, "detail": redact(outcome.detail),
              "finished_at": now, "updated_at": now}
    moved = []
    link.retried(lambda: moved.append(link.move(delivery.id, DeliveryState.PLANNED, values)))
    if moved[-1]:
        report.count(outcome.state, outcome.reason)
        log.info("delivery.finished", delivery_id=delivery.id, campaign=delivery.campaign, channel=delivery.channel,
                 state=outcome.state, reason=outcome.reason, detail=redact(outcome.detail), attempt=delivery.attempts)


def _claim_and_send(runtime: Runtime, link: Link, item: _Item, as_of: datetime, channels: dict,
                    report: DeliveryReport) -> None:
    delivery = item.delivery
    if delivery.channel == "sms":
        allowed = runtime.program.quiet_hours.next_allowed(as_of, item.member.timezone)
        if allowed > as_of:  # the member's night: put off, unclaimed, to its end
            link.defer(delivery.id, allowed)
            report.later[delivery.id] = allowed
            return

    if not link.claim(delivery.id, as_of, utcnow(), gate=_frequency_cap_gate(runtime, link, delivery, as_of, report)):
        return
    delivery.attempts += 1

    channel = channels.get(delivery.channel) or channels.setdefault(delivery.channel, runtime.channel(delivery.channel))
    prepared = item.prepared
    if prepared.offer is not None:  # the shop knows the code before any message carries it
        problem = create_in_shop(runtime.sessions, _discount_shop(runtime, channels),
                                 replace(prepared.offer, delivery_id=delivery.id), as_of)
        if isinstance(problem, NotShopCustomer):  # asking again will not help
            _finish(link, runtime, delivery, DeliveryState.FAILED, COUPON_NOT_CREATED, str(problem), as_of, report)
            return
        if problem is not None:
            _retry_later(link, runtime, delivery, RetryableFailure(COUPON_NOT_CREATED, str(problem)), as_of, report)
            return
    try:
        provider_id = channel.send(prepared.message)
    except PermanentFailure as exc:
        _finish(link, runtime, delivery, DeliveryState.FAILED, exc.reason, exc.detail, as_of, report, failure=exc)
    except AmbiguousFailure as exc:
        _finish(link, runtime, delivery, DeliveryState.UNKNOWN, exc.reason, exc.detail, as_of, report)
    except RetryableFailure as exc:
        _retry_later(link, runtime, delivery, exc, as_of, report)
    except Exception as exc:  # noqa: BLE001: a fault of ours inside the channel: whether it went out is not known
        # That message ends as unknown (never re-sent blindly); the others of the batch still go.
        log.error("delivery.send_crashed", delivery_id=delivery.id, campaign=delivery.campaign,
                  channel=delivery.channel, error=type(exc).__name__,
                  stack=[f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in traceback.extract_tb(exc.__traceback__)])
        _finish(link, runtime, delivery, DeliveryState.UNKNOWN, "send_crashed", _where(exc), as_of, report)
    else:
        _finish(link, runtime, delivery, DeliveryState.SENT, None, None, as_of, report,
                provider_id=provider_id, coupon_code=prepared.coupon_code)


def _retry_later(link: Link, runtime: Runtime, delivery: Delivery, exc: RetryableFailure, as_of: datetime,
                 report: DeliveryReport) -> None:
    """Back to ``planned`` for a later attempt, or ``failed`` once the attempts are spent."""
    if delivery.attempts >= runtime.settings.max_delivery_attempts:
        _finish(link, runtime, delivery, DeliveryState.FAILED, Reason.RETRIES_EXHAUSTED,
                f"{exc.reason}: {exc.detail}", as_of, report)
    else:
        _finish(link, runtime, delivery, DeliveryState.PLANNED, exc.reason, exc.detail, as_of, report,
                send_at=as_of + retry_delay(delivery.attempts))


class _NoShop:
    def close(self) -> None:
        pass


def _discount_shop(runtime: Runtime, channels: dict):
    """The configured shop's discount client, one per batch (closed with the channels); None without a shop."""
    shop = channels.get(SHOP_DISCOUNTS)
    if shop is None:
        settings = runtime.settings.shop
        shop = channels[SHOP_DISCOUNTS] = shop_for(settings, settings.mapping.default_timezone) or _NoShop()
    return None if isinstance(shop, _NoShop) else shop


def _frequency_cap_gate(runtime: Runtime, link: Link, delivery: Delivery, as_of: datetime,
                        report: DeliveryReport) -> Callable[[Connection], bool] | None:
    """For a capped campaign, the check run in the claim's transaction: the member's row is locked
    while their recent marketing messages are counted; at the cap the delivery is skipped. None for
    an exempt campaign or a support send (the claim is then one statement)."""
    campaign = runtime.campaigns.campaigns.get(delivery.campaign)
    deliberate = delivery.occurrence_key.startswith("oneoff:")  # a support send is not capped
    if campaign is None or campaign.frequency_cap_exempt or deliberate:
        return None
    cap = runtime.program.frequency_cap

    def gate(connection: Connection) -> bool:
        connection.execute(LOCK_MEMBER, {"member_id": delivery.member_id})
        recent = connection.scalar(RECENT_CAPPED, {
            "member_id": delivery.member_id, "delivery_id": delivery.id,
            "capped": [c.id for c in runtime.campaigns.campaigns.values() if not c.frequency_cap_exempt],
            "since": as_of - timedelta(days=cap.window_days),
        })
        if recent < cap.max_messages:
            return True
        now = utcnow()
        link.move_in(connection, delivery.id, DeliveryState.SENDING, {
            "state": DeliveryState.SKIPPED, "reason": Reason.FREQUENCY_CAP, "finished_at": now, "updated_at": now})
        report.count(DeliveryState.SKIPPED, Reason.FREQUENCY_CAP)
        return False

    return gate


def _prepare(runtime: Runtime, session: Session, delivery: Delivery, member: Member, as_of: datetime, *,
             balance: int, fields: dict[int, dict]) -> _Prepared:
    """Re-check and render one delivery (``fields``: Mailchimp merge fields by member id)."""
    campaign = runtime.campaigns.campaigns.get(delivery.campaign)
    if campaign is None or not campaign.enabled:
        raise _Outcome(DeliveryState.SKIPPED, Reason.CAMPAIGN_DISABLED)
    if campaign.audience.tiers is not None and member.tier not in campaign.audience.tiers:
        raise _Outcome(DeliveryState.SKIPPED, Reason.NOT_IN_AUDIENCE)
    if delivery.channel is None or not channel_ready(member, delivery.channel):
        raise _Outcome(DeliveryState.SKIPPED, not_ready_reason(member, delivery.channel))
    settings = runtime.settings
    check = SendCheck(campaign, member, delivery, as_of, session, runtime.program, settings.secret)
    kind = kind_of(campaign)
    facts = kind.facts(check)  # read once, for the re-check and the template alike
    if not delivery.occurrence_key.startswith("oneoff:"):
        reason = kind.recheck(check, facts)
        if reason is not None:
            raise _Outcome(DeliveryState.SKIPPED, reason)

    link_channel = "email" if delivery.channel == "mailchimp" else delivery.channel  # Mailchimp emails them
    link = unsubscribe_url(settings.public_base_url, settings.secret, member.external_id, link_channel)
    expires_on = _reward_expiry(campaign, as_of)
    context = message_context(
        check,
        facts,
        points_balance=balance,
        unsubscribe_url=link,
        reward_points=delivery.reward_points,
        reward_expires_on=calendar.local_datetime(expires_on, member.timezone).date() if expires_on else None,
    )
    locale = runtime.renderer.choose_locale(campaign, member.locale)
    coupon = (context.get("coupon") or {}).get("code")
    offer = _offer(runtime, campaign, member, context.get("coupon")) if coupon else None
    try:
        if delivery.channel == "sms":
            if not member.phone:
                raise _Outcome(DeliveryState.SKIPPED, Reason.NO_USABLE_ADDRESS)
            body = runtime.renderer.render_sms(campaign, locale, context, member_locale=member.locale)
            length, cap = measure(body), campaign.messages.sms.max_segments
            if length.segments > cap:  # refused rather than paid for or cut (a coupon code could be lost)
                raise _Outcome(DeliveryState.FAILED, Reason.SMS_TOO_LONG, f"{length}, more than max_segments {cap}")
            return _Prepared(OutgoingSms(delivery.occurrence_key, member.phone, body), coupon, offer)
        if not member.email:
            raise _Outcome(DeliveryState.SKIPPED, Reason.NO_USABLE_ADDRESS)
        if delivery.channel == "mailchimp":
            step = campaign.messages.mailchimp
            properties = runtime.renderer.render_properties(campaign, locale, step.properties, context,
                                                            member_locale=member.locale)
            return _Prepared(OutgoingMailchimp(delivery.occurrence_key, member.email, tuple(step.tags), step.event,
                                               properties, fields[member.id]), coupon, offer)
        rendered = runtime.renderer.render_email(campaign, locale, context, member_locale=member.locale)
    except RenderError as exc:  # its summary names the template and line, never a value it was given
        raise _Outcome(DeliveryState.FAILED, "template_error", exc.summary[:500]) from None
    email = OutgoingEmail(
        occurrence_key=delivery.occurrence_key, to=member.email, sender=settings.email_from,
        subject=rendered.subject, text=rendered.text, html=rendered.html, unsubscribe_url=link,
    )
    return _Prepared(email, coupon, offer)


def _offer(runtime: Runtime, campaign, member: Member, coupon: dict) -> Offer | None:
    """The coupon a message carries (``percent_off`` until the end of ``valid_until``, the member's day)."""
    if coupon.get("percent_off") is None or coupon.get("valid_until") is None:
        return None
    ends = calendar.local_instant(coupon["valid_until"] + timedelta(days=1), time(0, 0), member.timezone)
    return Offer(code=coupon["code"], member_id=member.id, percent_off=Decimal(str(coupon["percent_off"])),
                 amount_off=None, currency=runtime.program.points.currency, expires_at=ends,
                 title=f"{campaign.id} {coupon['percent_off']}% (member {member.external_id})")


def _where(exc: BaseException) -> str:
    """An exception's type and the line of ours that raised it: no message (it may quote an address)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/site-packages/" not in f.filename]
    place = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}{place}"


def _reward_expiry(campaign, as_of: datetime) -> datetime | None:
    if campaign.reward is None or campaign.reward.expires_after_days is None:
        return None
    return as_of + timedelta(days=campaign.reward.expires_after_days)


def _finish(
    link: Link,
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
    """Record the outcome of a send (and its reward, once). Retried for a while if the database is
    away, because the send itself already happened and must not be repeated."""
    detail = redact(detail)  # providers quote the address or number they refused
    now = utcnow()
    values = {"state": state, "reason": reason, "detail": detail, "updated_at": now}
    if state in FINAL_STATES:
        values["finished_at"] = now
    if provider_id is not None:
        values["provider_message_id"] = provider_id
    if send_at is not None:
        values["send_at"] = send_at
    if coupon_code is not None:
        values["coupon_code"] = coupon_code

    credit = _reward_lot(runtime, delivery, as_of) if state == DeliveryState.SENT and delivery.reward_points else None
    then = _member_updates(delivery, failure, now) if failure is not None and failure.member_updates else None
    if then is None:  # written with the next claim's commit, or alone at the end of the batch
        link.record(delivery.id, DeliveryState.SENDING, values, credit=credit)
    else:
        link.retried(lambda: link.move(delivery.id, DeliveryState.SENDING, values, credit=credit, then=then))
    if state == DeliveryState.PLANNED:
        report.later[delivery.id] = send_at
    else:
        report.count(state, reason)
    log.info("delivery.finished", delivery_id=delivery.id, campaign=delivery.campaign, channel=delivery.channel,
             state=state, reason=reason, detail=detail, attempt=delivery.attempts)


def _member_updates(delivery: Delivery, failure: ChannelFailure, now: datetime) -> Callable[[Connection], None]:
    """Writes what the provider told us about the member (e.g. an opted-out number), audited."""

    def write(connection: Connection) -> None:
        connection.execute(update(Member).where(Member.id == delivery.member_id).values(**failure.member_updates))
        connection.execute(AuditEntry.__table__.insert().values(
            actor=f"provider:{delivery.channel}", action="member.updated_by_provider", member_id=delivery.member_id,
            reason=failure.reason, details={"columns": sorted(failure.member_updates), "delivery_id": delivery.id},
            at=now))

    return write


def _reward_lot(runtime: Runtime, delivery: Delivery, as_of: datetime) -> dict:
    """The ledger lot of a sent message's reward; its key is the occurrence's, so it is written once
    (a support resend stands for the original occurrence, whose reward is already in the ledger)."""
    campaign = runtime.campaigns.campaigns[delivery.campaign]
    return ledger.lot_values(
        member_id=delivery.member_id,
        entry_key=f"reward:{delivery.stands_for}",
        kind=EntryKind.EARN,
        points=delivery.reward_points,
        occurred_at=as_of,
        expires_at=_reward_expiry(campaign, as_of),
        source=f"campaign:{delivery.campaign}",
    )
