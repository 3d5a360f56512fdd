"""Members: who they are, where they live (time zone), how to reach them and what they agreed to.

Audience queries read only the non-personal columns (time zone, birthday parts, consent, contact
status, tier), so the email, phone and name columns can be encrypted at rest without slowing them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, Integer, SmallInteger, String, event
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UtcDateTime, utcnow
from models.personal_data import EncryptedText, keep_lookups_current


class ContactStatus:
    """Whether an address can be used; anything but ``OK`` is a reason not to send."""

    OK = "ok"
    MISSING = "missing"
    INVALID = "invalid"  # rejected by the provider as not a valid address or number
    UNREACHABLE = "unreachable"  # e.g. a landline that cannot receive SMS
    UNDELIVERABLE = "undeliverable"  # an email address that bounced for good (models/email_feedback.py)


class MailchimpStatus:
    """Where the member stands in the Mailchimp audience, as the last sync or send learnt it."""

    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"  # we passed on a withdrawn email consent
    REFUSED = "refused"  # Mailchimp will not (re)subscribe them (unsubscribed or cleaned there, compliance)
    ERROR = "error"  # Mailchimp refused the data (e.g. a merge field): tried again when the member changes


class Member(Base):
    __tablename__ = "members"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(64), unique=True)

    # Personal data: encrypted at rest (models/personal_data.py), never logged, never used to select
    # an audience. A member is found by email or phone through the keyed look-up hashes.
    email: Mapped[str | None] = mapped_column(EncryptedText)
    phone: Mapped[str | None] = mapped_column(EncryptedText)  # E.164
    first_name: Mapped[str | None] = mapped_column(EncryptedText)
    last_name: Mapped[str | None] = mapped_column(EncryptedText)
    email_lookup: Mapped[str | None] = mapped_column(String(64), index=True)
    phone_lookup: Mapped[str | None] = mapped_column(String(64), index=True)

    email_status: Mapped[str] = mapped_column(String(16), default=ContactStatus.MISSING)
    phone_status: Mapped[str] = mapped_column(String(16), default=ContactStatus.MISSING)

    locale: Mapped[str] = mapped_column(String(16))
    timezone: Mapped[str] = mapped_column(String(64))

    birth_year: Mapped[int | None] = mapped_column(SmallInteger)
    birth_month: Mapped[int | None] = mapped_column(SmallInteger)
    birth_day: Mapped[int | None] = mapped_column(SmallInteger)
    birthday_updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    email_opt_in: Mapped[bool] = mapped_column(Boolean, default=False)
    email_consent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    email_consent_source: Mapped[str | None] = mapped_column(String(64))
    sms_opt_in: Mapped[bool] = mapped_column(Boolean, default=False)
    sms_consent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sms_consent_source: Mapped[str | None] = mapped_column(String(64))

    tier: Mapped[str] = mapped_column(String(32), default="bronze")
    tier_reached_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # when the current tier was reached
    tier_below_since: Mapped[datetime | None] = mapped_column(UtcDateTime)  # qualifies for less since (grace)
    last_order_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # placed orders only
    last_order_local_date: Mapped[str | None] = mapped_column(String(10))  # ISO, in the member's zone: win-back
    joined_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    erased_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # personal data erased (privacy request)

    # Mailchimp: the audience copy (workers/mailchimp_sync.py). None: never synced.
    mailchimp_status: Mapped[str | None] = mapped_column(String(16))
    mailchimp_reason: Mapped[str | None] = mapped_column(String(200))  # why refused or in error; no personal data
    mailchimp_synced_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # changes before it are in Mailchimp
    mailchimp_hash: Mapped[str | None] = mapped_column(String(32))  # digest of what Mailchimp last accepted
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        # The birthday audience: one index probe per (zone, month, day).
        Index("ix_members_birthday", "timezone", "birth_month", "birth_day"),
        # Win-back: members whose last order falls in a window of local dates, zone by zone.
        Index("ix_members_last_order", "timezone", "last_order_local_date"),
    )


event.listen(Member, "before_insert", keep_lookups_current)
event.listen(Member, "before_update", keep_lookups_current)
