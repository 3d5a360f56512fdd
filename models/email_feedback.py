"""What the mail servers answered after an email left: bounces and spam complaints.

One row per notification and recipient (a relay's webhook, a delivery status notification read in
the bounce mailbox), whatever it changed; the unique ``key`` (the provider's id for it) is what makes
a duplicate change nothing twice: the row and its effect are written in one transaction.

``kind``: ``hard_bounce`` (the address does not exist or refuses us for good), ``soft_bounce`` (a
full mailbox, a server away: counted, see ``LOYALTY_SOFT_BOUNCE_LIMIT``) or ``complaint`` (the member
marked it as spam). ``effect``: what it did to the member (:class:`Effect`). The address is never
stored: ``email_lookup`` is its keyed hash, so a member's later, different address starts afresh.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigIntKey, UtcDateTime, utcnow


class FeedbackKind:
    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"
    COMPLAINT = "complaint"
    BOUNCES = (HARD_BOUNCE, SOFT_BOUNCE)


class Effect:
    UNDELIVERABLE = "undeliverable"  # the member's address marked undeliverable
    COUNTED = "counted"  # a soft bounce below the threshold
    CONSENT_WITHDRAWN = "consent_withdrawn"
    NONE = "none"  # already so, or about an address the member no longer has
    UNKNOWN_RECIPIENT = "unknown_recipient"  # no member has that address


class EmailFeedback(Base):
    __tablename__ = "email_feedback"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    provider: Mapped[str] = mapped_column(String(16))  # ses, sendgrid, postmark, imap
    kind: Mapped[str] = mapped_column(String(16))
    effect: Mapped[str] = mapped_column(String(32))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="SET NULL"))
    campaign: Mapped[str | None] = mapped_column(String(64))
    email_lookup: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str | None] = mapped_column(String(64))  # e.g. "5.1.1" or the provider's type; no address
    occurred_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # as the provider dates it
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_email_feedback_delivery_id", "delivery_id"),
        Index("ix_email_feedback_member_kind", "member_id", "kind"),
    )
