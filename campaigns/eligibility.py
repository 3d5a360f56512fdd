"""Rules every campaign kind shares: consent per channel, channel fallback (the skip reasons they
give are :class:`models.delivery.Reason`).

Each rule exists twice on purpose, side by side: as a SQL expression, so audiences are chosen
set-based in the database, and in Python, so the sender can re-check one member right before
sending. ``tests/unit/test_eligibility.py`` keeps the two in agreement.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, case, literal, or_, true
from sqlalchemy.sql.elements import ColumnElement

from campaigns.send_views import MemberView
from models.delivery import Reason
from models.member import ContactStatus, MailchimpStatus, Member

#: The consent each channel needs: a Mailchimp step leads to Mailchimp emailing the member.
CONSENT_OF = {"email": "email_opt_in", "sms": "sms_opt_in", "mailchimp": "email_opt_in"}


def _consent_sql(channel: str) -> ColumnElement[bool]:
    return getattr(Member, CONSENT_OF[channel]) == true()


def _address_ok_sql(channel: str) -> ColumnElement[bool]:
    if channel == "mailchimp":  # a usable email, and not refused by Mailchimp (unsubscribed or cleaned there)
        return and_(Member.email_status == ContactStatus.OK,
                    or_(Member.mailchimp_status.is_(None), Member.mailchimp_status != MailchimpStatus.REFUSED))
    column = {"email": Member.email_status, "sms": Member.phone_status}[channel]
    return column == ContactStatus.OK


def channel_choice_sql(channels: Sequence[str]) -> tuple[ColumnElement, ColumnElement]:
    """(the first usable channel or NULL, the reason when there is none or NULL)."""
    usable = [(and_(_consent_sql(c), _address_ok_sql(c)), literal(c)) for c in channels]
    channel = case(*usable, else_=None)
    any_consent = or_(*(_consent_sql(c) for c in channels))
    undeliverable = [and_(_consent_sql(c), Member.email_status == ContactStatus.UNDELIVERABLE)
                     for c in channels if c in EMAIL_CHANNELS]
    no_channel_reason = case(
        (or_(*(cond for cond, _ in usable)), None),
        *([(or_(*undeliverable), literal(Reason.EMAIL_UNDELIVERABLE))] if undeliverable else []),
        (any_consent, literal(Reason.NO_USABLE_ADDRESS)),
        else_=literal(Reason.NO_CONSENT),
    )
    return channel, no_channel_reason


#: The channels that send to the member's email address (Mailchimp emails them too).
EMAIL_CHANNELS = ("email", "mailchimp")


def _undeliverable(member: MemberView, channel: str) -> bool:
    return channel in EMAIL_CHANNELS and bool(member.email_opt_in) and member.email_status == ContactStatus.UNDELIVERABLE


def not_ready_reason(member: MemberView, channel: str | None) -> Reason:
    """Why a planned delivery's channel is no longer ready at send time (``channel_ready`` is False):
    its address bounced for good since, or the consent was withdrawn."""
    return Reason.EMAIL_UNDELIVERABLE if channel and _undeliverable(member, channel) else Reason.CONSENT_WITHDRAWN


def channel_ready(member: MemberView, channel: str) -> bool:
    if channel == "email":
        return bool(member.email_opt_in) and member.email_status == ContactStatus.OK
    if channel == "sms":
        return bool(member.sms_opt_in) and member.phone_status == ContactStatus.OK
    if channel == "mailchimp":
        return (bool(member.email_opt_in) and member.email_status == ContactStatus.OK
                and member.mailchimp_status != MailchimpStatus.REFUSED)
    return False


def choose_channel(member: Member, channels: Sequence[str]) -> tuple[str | None, Reason | None]:
    """The Python twin of :func:`channel_choice_sql`: (channel, None) or (None, reason)."""
    for channel in channels:
        if channel_ready(member, channel):
            return channel, None
    if any(_undeliverable(member, c) for c in channels):
        return None, Reason.EMAIL_UNDELIVERABLE
    if any(getattr(member, CONSENT_OF[c]) for c in channels if c in CONSENT_OF):
        return None, Reason.NO_USABLE_ADDRESS
    return None, Reason.NO_CONSENT
