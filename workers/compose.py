"""Composing a message: what to send to whom, or a typed :class:`Skip` saying why not.

:func:`compose` takes a campaign, a member, the planned delivery (the occurrence it stands for) and
the instant, and returns either a :class:`Message` (the channel's message, its locale, the coupon
it carries) or a :class:`Skip` (a :class:`models.delivery.Reason`, the state it ends in, a detail).
It re-checks (campaign enabled, audience tier, channel ready, the kind's own re-check), builds the
template context and renders; no exception carries a decision. It writes nothing and sends
nothing: the ``session`` is only read (a kind's facts, such as the points expiring that day).

Everything that shows or sends a campaign's message composes it here, so what is shown is what
would be sent: the sender (:mod:`workers.delivery`, which then claims, sends and records through
:mod:`workers.record`), one-off sends and their ``--dry-run`` (:mod:`workers.one_off`), ``loyalty
preview``'s expected outcomes and sample messages (:func:`describe`, :func:`expected_outcomes`),
and proofs.

It sits in ``workers/`` rather than ``campaigns/`` because it needs the runtime (the renderer,
the sender address and the unsubscribe links' secret) and builds the channels' messages
(:mod:`workers.channels.base`); the rules it applies stay pure in ``campaigns/`` (the kinds, the
template context, rendering).

An A/B variant alters the message in one place: :func:`message_campaign` gives the campaign whose
messages (subject, templates) are rendered for a delivery, and the delivery's ``reward_points`` (set
at planning) is the reward the message states and the record grants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from campaigns.context import message_context
from campaigns.eligibility import channel_ready, not_ready_reason
from campaigns.kinds import kind_of
from campaigns.kinds_api import SendCheck
from campaigns.rendering import RenderError
from campaigns.schema import CampaignBase
from campaigns.send_views import DeliveryView, MemberView
from campaigns.sms_segments import measure
from campaigns.variants import as_variant
from core import calendar
from core.tokens import unsubscribe_url
from models import ledger
from models.delivery import Delivery, DeliveryState, Reason
from models.member import Member
from workers.channels.base import Outgoing, OutgoingEmail, OutgoingMailchimp, OutgoingSms
from workers.channels.mailchimp_fields import merge_fields as mailchimp_merge_fields
from workers.coupons import Offer
from workers.runtime import Runtime


@dataclass(frozen=True)
class Skip:
    """Why a delivery gets no message: ``state`` is ``skipped`` (no longer eligible), or ``failed``
    when the message itself cannot go (``sms_too_long``, ``template_error``)."""

    reason: Reason
    state: DeliveryState = DeliveryState.SKIPPED
    detail: str | None = None


@dataclass(frozen=True)
class Message:
    """What to send to whom: the channel's message (its ``to``, subject and bodies), the locale it
    was written in, and the coupon it carries (``offer``: what the shop is to know before it goes)."""

    channel: str
    locale: str
    outgoing: Outgoing
    reward_points: int | None = None
    coupon_code: str | None = None
    offer: Offer | None = None


def message_campaign(campaign: CampaignBase, delivery: DeliveryView) -> CampaignBase:
    """The campaign whose messages are rendered for ``delivery``: the one place an A/B variant
    replaces the subject or templates (the campaign itself when it has no experiment, or when the
    delivery's variant is no longer one of its variants)."""
    return as_variant(campaign, delivery.variant)


def is_deliberate(delivery: DeliveryView) -> bool:
    """A support send (``oneoff:...``): the kind's re-check does not apply (support chose to send it)."""
    return delivery.occurrence_key.startswith("oneoff:")


def compose(runtime: Runtime, session: Session, campaign: CampaignBase | None, member: MemberView,
            delivery: DeliveryView, at: datetime, *, balance: int, merge_fields: dict[int, dict[str, Any]] | None = None,
            deliberate: bool | None = None) -> Message | Skip:
    """The message of ``delivery`` for ``member`` at ``at``, or why there is none.

    ``balance`` is the member's points balance; ``merge_fields`` their Mailchimp merge fields by
    member id (needed for the ``mailchimp`` channel); ``deliberate`` (default: a support send)
    leaves out the kind's re-check."""
    if campaign is None or not campaign.enabled:
        return Skip(Reason.CAMPAIGN_DISABLED)
    if campaign.audience.tiers is not None and member.tier not in campaign.audience.tiers:
        return Skip(Reason.NOT_IN_AUDIENCE)
    channel = delivery.channel
    if channel is None or not channel_ready(member, channel):
        return Skip(not_ready_reason(member, channel))
    settings = runtime.settings
    check = SendCheck(campaign, member, delivery, at, session, runtime.program, settings.secret)
    kind = kind_of(campaign)
    facts = kind.facts(check)  # read once, for the re-check and the template alike
    if not (is_deliberate(delivery) if deliberate is None else deliberate):
        reason = kind.recheck(check, facts)
        if reason is not None:
            return Skip(reason)

    shown = message_campaign(campaign, delivery)
    link_channel = "email" if channel == "mailchimp" else channel  # Mailchimp emails them
    link = unsubscribe_url(settings.public_base_url, settings.secret, member.external_id, link_channel)
    expires_at = campaign.reward.expiry(at) if campaign.reward is not None else None
    context = message_context(
        check, facts, points_balance=balance, unsubscribe_url=link, reward_points=delivery.reward_points,
        reward_expires_on=calendar.local_datetime(expires_at, member.timezone).date() if expires_at else None,
    )
    locale = runtime.renderer.choose_locale(shown, member.locale)
    coupon = context.get("coupon") or {}
    code = coupon.get("code")
    offer = _offer(runtime, campaign, member, coupon) if code else None

    def message(outgoing: Outgoing) -> Message:
        return Message(channel, locale, outgoing, reward_points=delivery.reward_points, coupon_code=code, offer=offer)

    messages = shown.messages  # a listed channel has its section (the model checks it)
    try:
        if channel == "sms":
            if not member.phone:
                return Skip(Reason.NO_USABLE_ADDRESS)
            body = runtime.renderer.render_sms(shown, locale, context, member_locale=member.locale)
            assert messages.sms is not None
            length, cap = measure(body), messages.sms.max_segments
            if length.segments > cap:  # refused rather than paid for or cut (a coupon code could be lost)
                return Skip(Reason.SMS_TOO_LONG, DeliveryState.FAILED, f"{length}, more than max_segments {cap}")
            return message(OutgoingSms(delivery.occurrence_key, member.phone, body))
        if not member.email:
            return Skip(Reason.NO_USABLE_ADDRESS)
        if channel == "mailchimp":
            step = messages.mailchimp
            assert step is not None
            properties = runtime.renderer.render_properties(shown, locale, step.properties, context,
                                                            member_locale=member.locale)
            fields = (merge_fields or {}).get(member.id)
            if fields is None:
                fields = mailchimp_merge_fields(session, [member], at)[member.id]
            return message(OutgoingMailchimp(delivery.occurrence_key, member.email, tuple(step.tags), step.event,
                                             properties, fields))
        rendered = runtime.renderer.render_email(shown, locale, context, member_locale=member.locale)
    except RenderError as exc:  # its summary names the template and line, never a value it was given
        return Skip(Reason.TEMPLATE_ERROR, DeliveryState.FAILED, exc.summary[:500])
    email = OutgoingEmail(
        occurrence_key=delivery.occurrence_key, to=member.email, sender=settings.email_from,
        subject=rendered.subject, text=rendered.text, html=rendered.html, unsubscribe_url=link,
    )
    return message(email)


def _offer(runtime: Runtime, campaign: CampaignBase, member: MemberView, coupon: dict[str, Any]) -> Offer | None:
    """The coupon a message carries (``percent_off`` until the end of ``valid_until``, the member's day)."""
    if coupon.get("percent_off") is None or coupon.get("valid_until") is None:
        return None
    ends = calendar.local_instant(coupon["valid_until"] + timedelta(days=1), time(0, 0), member.timezone)
    return Offer(code=coupon["code"], member_id=member.id, percent_off=Decimal(str(coupon["percent_off"])),
                 amount_off=None, currency=runtime.program.points.currency, expires_at=ends,
                 title=f"{campaign.id} {coupon['percent_off']}% (member {member.external_id})")


# --- composing without sending: dry runs, previews, simulations ------------------------------------


@dataclass
class Rendered:
    """A composed message as shown to a person (``loyalty send --dry-run``, ``loyalty preview``)."""

    channel: str
    locale: str
    subject: str | None  # None for SMS and Mailchimp
    text: str  # the body, or the Mailchimp step
    state: str = DeliveryState.PLANNED  # how it would end: planned (it would go), or failed/skipped
    reason: str | None = None
    detail: str | None = None
    coupon_code: str | None = None
    html: str | None = None  # an email's HTML part (preview writes it to a file)


def describe(composed: Message | Skip, channel: str, locale: str) -> Rendered:
    """What :func:`compose` decided, for a person to read."""
    if isinstance(composed, Skip):
        return Rendered(channel, locale, None, "", state=composed.state, reason=composed.reason,
                        detail=composed.detail)
    message = composed.outgoing
    if isinstance(message, OutgoingSms):
        return Rendered(channel, composed.locale, None, message.body, coupon_code=composed.coupon_code)
    if isinstance(message, OutgoingMailchimp):
        step = [f"tags: {', '.join(message.tags)}" if message.tags else "no tags",
                f"event: {message.event}" if message.event else "no event"]
        properties = ", ".join(f"{k}={v}" for k, v in sorted(message.properties.items()))
        text = f"Mailchimp step: {'; '.join(step)}" + (f"; properties: {properties}" if properties else "")
        return Rendered(channel, composed.locale, None, text, coupon_code=composed.coupon_code)
    return Rendered(channel, composed.locale, message.subject, message.text, coupon_code=composed.coupon_code,
                    html=message.html)


def render_for(runtime: Runtime, session: Session, campaign: CampaignBase, member: Member, delivery: Delivery,
               at: datetime, *, balance: int | None = None) -> Rendered:
    """The message a delivery would carry and how it would end, as :func:`compose` decides it for the
    sender; writes nothing. ``state`` is ``planned`` when it would go, else the state it would end
    in (``failed`` with ``sms_too_long`` or ``template_error``, ``skipped`` with the reason)."""
    channel = delivery.channel or campaign.channels[0]
    delivery.channel = channel
    locale = runtime.renderer.choose_locale(message_campaign(campaign, delivery), member.locale)
    composed = compose(runtime, session, campaign, member, delivery, at,
                       balance=ledger.balance(session, member.id) if balance is None else balance)
    return describe(composed, channel, locale)


def expected_outcomes(runtime: Runtime, session: Session, campaign: CampaignBase, rows: list[dict[str, Any]],
                      at: datetime) -> None:
    """Mark, in place, the planned SMS of a preview that the sender would refuse (``failed:
    sms_too_long``, or a template error), as :func:`compose` decides it; writes nothing."""
    texts = [row for row in rows if row["state"] == DeliveryState.PLANNED and row.get("channel") == "sms"]
    if not texts:
        return
    ids = {r["member_id"] for r in texts}
    members = {m.id: m for m in session.scalars(select(Member).where(Member.id.in_(ids)))}
    balances = ledger.balances(session, ids)
    fields = ("occurrence_key", "campaign", "member_id", "channel", "reward_points", "occurrence_date", "payload",
              "variant")
    for row in texts:
        delivery = Delivery(**{name: row[name] for name in fields if name in row})
        rendered = render_for(runtime, session, campaign, members[row["member_id"]], delivery, at,
                              balance=balances.get(row["member_id"], 0))
        if rendered.state == DeliveryState.FAILED:
            row["state"], row["reason"] = rendered.state, rendered.reason
