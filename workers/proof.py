"""Proofs (``loyalty proof``): the message a member would get, sent to the marketer's own address.

A proof is composed by the sender's own code, exactly as that member's message would be (their
locale, their A/B variant unless ``variant`` picks another, their points, the kind's facts of a
one-off send of the campaign today), or for the sample member of ``loyalty validate`` when no
member is named; a disabled campaign is proofed as it will be once enabled. It then goes through the real channel (SMTP, Twilio, or the outbox folder on the
embedded default) to the address or number given, marked: ``[PROOF]`` before the email's subject
or the SMS's text. A proof

- writes no row of the send ledger (the member's real message is still due, and the frequency cap
  counts only ledger rows), grants no reward, and makes no coupon in the shop (its code, derived
  from the proof's own occurrence key, is one no shop knows);
- carries a dummy unsubscribe link (``<public URL>/unsubscribe/proof``), so a click on the proof's
  link or on the mail client's unsubscribe button unsubscribes nobody;
- is audited: one ``proof.sent`` row (who, which campaign, member, channel, variant, where it went,
  the outcome), whether the channel took it or not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy.orm import Session

from campaigns.context import sample_context
from campaigns.rendering import RenderError
from campaigns.schema import CampaignBase
from campaigns.sms_segments import measure
from campaigns.variants import as_variant, variant_name, variant_reward
from core import calendar
from core.errors import InputError
from core.settings import Settings
from core.tokens import unsubscribe_url
from models import ledger
from models.audit import AuditAction, AuditEntry
from models.base import utcnow
from models.db import transaction
from models.delivery import Delivery, DeliveryState
from models.member import Member
from services.history import e164, get_member
from workers.channels.base import AmbiguousFailure, ChannelFailure, OutgoingEmail, OutgoingSms
from workers.runtime import Runtime

MARK = "[PROOF]"
SAMPLE = "sample"  # the member a proof names when it is for the sample member

ProofMessage = OutgoingEmail | OutgoingSms


@dataclass
class ProofResult:
    campaign: str
    member: str  # the member's external id, or "sample"
    channel: str
    to: str
    variant: str | None
    locale: str
    subject: str | None  # the marked subject (email)
    text: str  # the marked SMS text, or the email's text part
    occurrence_key: str  # the proof's own (its Message-ID), never a ledger row's
    state: str  # "sent", or "failed"/"unknown" with the channel's reason
    reason: str | None = None
    provider_message_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "member": self.member, "channel": self.channel, "to": self.to,
                "variant": self.variant, "locale": self.locale, "subject": self.subject, "text": self.text,
                "occurrence_key": self.occurrence_key, "state": self.state, "reason": self.reason}


def proof_address(channel: str, to: str, default_region: str | None) -> str:
    """``to`` checked for the channel: an email address, or a phone number (made E.164)."""
    value = (to or "").strip()
    if channel == "email":
        try:
            return validate_email(value, check_deliverability=False).normalized
        except EmailNotValidError:
            raise InputError(f"--to {value!r} is not an email address; give the address the email proof goes to.") from None
    number = e164(value, default_region)
    if number is None:
        raise InputError(f"--to {value!r} is not a phone number; give the number the SMS proof goes to, "
                         "with its country code (+33...).")
    return number


def proof_channel(campaign: CampaignBase, channel: str | None) -> str:
    """The channel to proof: the one asked for, else the campaign's first email or SMS channel."""
    proofable = [c for c in ("email", "sms") if getattr(campaign.messages, c) is not None]
    if channel is not None:
        if channel not in proofable:
            has = ", ".join(proofable) or "none"
            raise InputError(f"The campaign {campaign.id!r} has no {channel} message to proof; its messages: {has}.")
        return channel
    listed = [c for c in campaign.channels if c in proofable] + proofable
    if not listed:
        raise InputError(f"The campaign {campaign.id!r} only has Mailchimp steps, which have no message to proof.")
    return listed[0]


def mark(message: ProofMessage, to: str, real_unsubscribe: str | None, dummy_unsubscribe: str) -> ProofMessage:
    """The message as a proof: to ``to``, marked, with the member's unsubscribe link made a dummy."""
    if isinstance(message, OutgoingSms):
        body = message.body.replace(real_unsubscribe, dummy_unsubscribe) if real_unsubscribe else message.body
        return replace(message, to=to, body=f"{MARK} {body}")
    swap = (lambda text: text.replace(real_unsubscribe, dummy_unsubscribe)) if real_unsubscribe else (lambda text: text)
    return replace(message, to=to, subject=f"{MARK} {message.subject}", text=swap(message.text), html=swap(message.html),
                   unsubscribe_url=dummy_unsubscribe)


def send_proof(runtime: Runtime, *, campaign_id: str, to: str, actor: str, member_external_id: str | None = None,
               channel: str | None = None, variant: str | None = None, now: datetime | None = None) -> ProofResult:
    """Compose the proof, send it through the real channel, audit it; raises InputError when refused."""
    now = now or utcnow()
    campaign = runtime.campaigns.get(campaign_id)
    chosen = proof_channel(campaign, channel)
    settings = runtime.settings
    address = proof_address(chosen, to, _default_region(settings))
    if variant is not None and (campaign.experiment is None or campaign.experiment.get(variant) is None):
        names = ", ".join(v.name for v in campaign.experiment.variants) if campaign.experiment else "none"
        raise InputError(f"The campaign {campaign.id!r} has no variant {variant!r}; its variants: {names}.")
    dummy = f"{settings.public_base_url}/unsubscribe/proof"
    with runtime.sessions() as session:
        if member_external_id is None:
            member_id, shown_member = None, SAMPLE
            message, locale, variant, real_link = _sample_message(runtime, campaign, chosen, variant, now)
        else:
            member = get_member(session, member_external_id, settings.default_locale)
            member_id, shown_member = member.id, member.external_id
            message, locale, variant, real_link = _member_message(runtime, session, campaign, member, chosen, variant, now)
    message = mark(message, address, real_link, dummy)
    result = ProofResult(campaign.id, shown_member, chosen, address, variant, locale,
                         message.subject if isinstance(message, OutgoingEmail) else None,
                         message.body if isinstance(message, OutgoingSms) else message.text,
                         message.occurrence_key, DeliveryState.SENT)
    sender = runtime.channel(chosen)
    try:
        result.provider_message_id = sender.send(message)
    except ChannelFailure as failure:
        result.state = DeliveryState.UNKNOWN if isinstance(failure, AmbiguousFailure) else DeliveryState.FAILED
        result.reason = failure.reason
    finally:
        sender.close()
    with transaction(runtime.sessions) as session:
        session.add(AuditEntry(at=now, actor=actor[:120], action=AuditAction.PROOF_SENT, member_id=member_id,
                               reason=f"proof of {campaign.id} to {address}",
                               details={"campaign": campaign.id, "member": shown_member, "channel": chosen,
                                        "variant": variant, "to": address, "occurrence_key": message.occurrence_key,
                                        "state": result.state, "reason": result.reason}))
    return result


def _default_region(settings: Settings) -> str | None:
    from services.imports.rows import locale_region

    return locale_region(settings.default_locale) if getattr(settings, "default_locale", None) else None


def _proof_key(campaign_id: str, member: str, now: datetime) -> str:
    return f"proof:{campaign_id}:{member}:{now.strftime('%Y%m%dT%H%M%S%f')}"


def _member_message(runtime: Runtime, session: Session, campaign: CampaignBase, member: Member, channel: str,
                    variant: str | None, now: datetime) -> tuple[ProofMessage, str, str | None, str]:
    """The member's message on ``channel``, composed by the sender's code (:func:`workers.compose.compose`)
    for a delivery that is never written; (message, locale, variant, the member's unsubscribe link)."""
    from campaigns.kinds import kind_of
    from workers.compose import Skip, compose

    variant = variant or variant_name(campaign, member.external_id)
    sets_reward, points = variant_reward(campaign, variant, member.tier)
    if not sets_reward:
        points = campaign.reward.points_for(member.tier) if campaign.reward is not None else None
    today = calendar.local_datetime(now, member.timezone).date()
    occurrence = kind_of(campaign).one_off_occurrence(campaign, member, today, session)
    delivery = Delivery(occurrence_key=_proof_key(campaign.id, member.external_id, now), campaign=campaign.id,
                        member_id=member.id, channel=channel, state=DeliveryState.PLANNED, reward_points=points or None,
                        variant=variant, occurrence_date=occurrence.date.isoformat() if occurrence.date else None,
                        payload=occurrence.payload, send_at=now, attempts=0, planned_at=now, updated_at=now)
    live = campaign if campaign.enabled else campaign.model_copy(update={"enabled": True})  # proofed before going live
    composed = compose(runtime, session, live, member, delivery, now, balance=ledger.balance(session, member.id),
                       deliberate=True)  # like a support send: what the member would get today, due or not
    if isinstance(composed, Skip):
        why = f"{composed.reason}: {composed.detail}" if composed.detail else composed.reason
        raise InputError(f"{member.external_id} would get no {channel} message of {campaign.id!r} ({why}); "
                         "pick another member, or leave out --member for the sample member.")
    real = unsubscribe_url(runtime.settings.public_base_url, runtime.settings.secret, member.external_id, channel)
    outgoing = composed.outgoing
    assert isinstance(outgoing, (OutgoingEmail, OutgoingSms)), "proof_channel chose email or sms"
    return outgoing, composed.locale, variant, real


def _sample_message(runtime: Runtime, campaign: CampaignBase, channel: str, variant: str | None,
                    now: datetime) -> tuple[ProofMessage, str, str | None, str]:
    """The sample member's message (``loyalty validate``'s); (message, locale, variant, link)."""
    if variant is None and campaign.experiment is not None:
        variant = campaign.experiment.variants[0].name
    shown = as_variant(campaign, variant)
    context = sample_context(shown, runtime.program)
    sets_reward, points = variant_reward(campaign, variant, context["member"]["tier"])
    if sets_reward:
        context["reward"] = {**context["reward"], "points": points}
    locale = campaign.default_locale
    key = _proof_key(campaign.id, SAMPLE, now)
    try:
        if channel == "sms":
            body = runtime.renderer.render_sms(shown, locale, context)
            assert shown.messages.sms is not None  # proof_channel chose a channel with a message
            length, cap = measure(body), shown.messages.sms.max_segments
            if length.segments > cap:
                raise InputError(f"The sample SMS of {campaign.id!r} is {length}, more than max_segments {cap}: it would "
                                 "not be sent (sms_too_long); shorten the template.")
            return OutgoingSms(key, "", body), locale, variant, context["unsubscribe_url"]
        rendered = runtime.renderer.render_email(shown, locale, context)
    except RenderError as error:
        raise InputError(f"The {channel} message of {campaign.id!r} does not render: {error}; "
                         "run loyalty validate.") from None
    email = OutgoingEmail(occurrence_key=key, to="", sender=runtime.settings.email_from, subject=rendered.subject,
                          text=rendered.text, html=rendered.html, unsubscribe_url=context["unsubscribe_url"])
    return email, locale, variant, context["unsubscribe_url"]
