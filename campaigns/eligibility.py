"""Rules every campaign kind shares: consent per channel, channel fallback, the skip reasons.

Each rule exists twice on purpose, side by side: as a SQL expression, so audiences are chosen
set-based in the database, and in Python, so the sender can re-check one member right before
sending. ``tests/unit/test_eligibility.py`` keeps the two in agreement.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, case, literal, or_, true
from sqlalchemy.sql.elements import ColumnElement

from models.member import ContactStatus, MailchimpStatus, Member


class Reason:
    """Why a delivery was not sent. These strings are stored, reported and documented."""

    NO_CONSENT = "no_consent"  # no listed channel has the member's consent
    NO_USABLE_ADDRESS = "no_usable_address"  # consent, but the address is missing or invalid
    CONSENT_WITHDRAWN = "consent_withdrawn"  # consent gone between planning and sending
    NOT_IN_AUDIENCE = "not_in_audience"  # e.g. the tier changed since planning
    CAMPAIGN_DISABLED = "campaign_disabled"
    BIRTHDAY_RECENTLY_CHANGED = "birthday_recently_changed"
    BIRTHDAY_CHANGED = "birthday_changed"  # no longer the member's birthday at send time
    FREQUENCY_CAP = "frequency_cap"  # the member had the most marketing messages allowed this week
    HOLDOUT = "holdout"  # in the campaign's holdout group, to measure uplift
    POINTS_NO_LONGER_EXPIRING = "points_no_longer_expiring"  # redeemed or expired since planning
    ORDERED_AGAIN = "ordered_again"  # a win-back member ordered: the episode is over
    SUPERSEDED = "superseded"  # a tier notice overtaken by a higher tier reached the same day
    RETRIES_EXHAUSTED = "retries_exhausted"
    SMS_TOO_LONG = "sms_too_long"  # the rendered SMS has more segments than the campaign's max_segments
    INTERRUPTED = "interrupted_while_sending"  # a worker died mid-send: outcome unknown


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
    no_channel_reason = case(
        (or_(*(cond for cond, _ in usable)), None),
        (any_consent, literal(Reason.NO_USABLE_ADDRESS)),
        else_=literal(Reason.NO_CONSENT),
    )
    return channel, no_channel_reason


def channel_ready(member: Member, channel: str) -> bool:
    if channel == "email":
        return bool(member.email_opt_in) and member.email_status == ContactStatus.OK
    if channel == "sms":
        return bool(member.sms_opt_in) and member.phone_status == ContactStatus.OK
    if channel == "mailchimp":
        return (bool(member.email_opt_in) and member.email_status == ContactStatus.OK
                and member.mailchimp_status != MailchimpStatus.REFUSED)
    return False


def choose_channel(member: Member, channels: Sequence[str]) -> tuple[str | None, str | None]:
    """The Python twin of :func:`channel_choice_sql`: (channel, None) or (None, reason)."""
    for channel in channels:
        if channel_ready(member, channel):
            return channel, None
    if any(getattr(member, CONSENT_OF[c]) for c in channels if c in CONSENT_OF):
        return None, Reason.NO_USABLE_ADDRESS
    return None, Reason.NO_CONSENT
