"""The send ledger: one row per occurrence of a campaign for a member, whatever the outcome.

The unique ``occurrence_key`` (``birthday:M0042:2027``) is what makes every send idempotent: the
planner inserts with ON CONFLICT DO NOTHING, and the sender claims a row by moving it from
``planned`` to ``sending`` in one conditional UPDATE, so two workers, two clocks or a retried
message can never both send it.

States::

    planned ──► sending ──► sent
       │           ├──────► failed   (permanent provider error, or retries exhausted)
       │           ├──────► unknown  (the provider may or may not have it: never re-sent blindly)
       │           ├──────► planned  (retryable error: back in line, with a later send_at)
       │           └──────► skipped  (the frequency cap, counted at the claim)
       ├──► skipped   (composed at send time and no longer eligible; reason says why)
       ├──► failed    (composed, but the message cannot go: sms_too_long, template_error)
    skipped, held_out     (decided at planning: not eligible, or in the campaign's holdout)

Each move is one conditional UPDATE guarded by the state it leaves (``workers/record.py``,
``workers/delivery_link.py``, the sweeper's ``sending → unknown``), which is where this diagram is
enforced; there is no table of allowed moves besides it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigIntKey, UtcDateTime, utcnow


class DeliveryState(StrEnum):
    """A send-ledger row's state (the diagram above); stored as its value."""

    __sa_type_engine__ = String()  # in a SQL literal (``literal(DeliveryState.PLANNED)``), a VARCHAR like a str

    PLANNED = "planned"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNKNOWN = "unknown"
    HELD_OUT = "held_out"


#: The states a row never leaves (``finished_at`` is set when a row reaches one).
FINAL_STATES = frozenset({DeliveryState.SENT, DeliveryState.FAILED, DeliveryState.SKIPPED, DeliveryState.UNKNOWN,
                          DeliveryState.HELD_OUT})


class Reason(StrEnum):
    """Why a delivery was not sent (or ended as it did), when we decided it: every such reason, in one
    place. Stored in ``deliveries.reason``, reported and documented. A provider's own refusal
    (``smtp_550``, ``twilio_21610``...) is stored as the channel names it and is not listed here."""

    __sa_type_engine__ = String()  # in a SQL literal, a VARCHAR like a str

    NO_CONSENT = "no_consent"  # no listed channel has the member's consent
    NO_USABLE_ADDRESS = "no_usable_address"  # consent, but the address is missing or invalid
    EMAIL_UNDELIVERABLE = "email_undeliverable"  # email consent, but the address bounced for good (or too often)
    CONSENT_WITHDRAWN = "consent_withdrawn"  # consent gone between planning and sending
    NOT_IN_AUDIENCE = "not_in_audience"  # e.g. the tier changed since planning
    CAMPAIGN_DISABLED = "campaign_disabled"
    FREQUENCY_CAP = "frequency_cap"  # the member had the most marketing messages allowed this week
    HOLDOUT = "holdout"  # in the campaign's holdout group, to measure uplift
    # The kinds' re-checks (``recheck`` of each entry of ``campaigns.kinds.KINDS``):
    BIRTHDAY_RECENTLY_CHANGED = "birthday_recently_changed"
    BIRTHDAY_CHANGED = "birthday_changed"  # no longer the member's birthday at send time
    POINTS_NO_LONGER_EXPIRING = "points_no_longer_expiring"  # redeemed or expired since planning
    ORDERED_AGAIN = "ordered_again"  # a win-back member ordered: the episode is over
    SUPERSEDED = "superseded"  # a tier notice overtaken by a higher tier reached the same day
    # Composing and sending:
    SMS_TOO_LONG = "sms_too_long"  # the rendered SMS has more segments than the campaign's max_segments
    TEMPLATE_ERROR = "template_error"  # a template failed to render (the detail names file and line)
    COUPON_NOT_CREATED = "coupon_not_created"  # the shop refused the message's coupon or did not answer
    SEND_CRASHED = "send_crashed"  # a fault of ours inside the channel: whether it went out is not known
    RETRIES_EXHAUSTED = "retries_exhausted"
    INTERRUPTED = "interrupted_while_sending"  # a worker died mid-send: outcome unknown


class Delivery(Base):
    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    occurrence_key: Mapped[str] = mapped_column(String(200), unique=True)
    campaign: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    channel: Mapped[str | None] = mapped_column(String(16))  # None when skipped before a channel was chosen
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.PLANNED)
    reason: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)  # provider error text, never personal data
    reward_points: Mapped[int | None] = mapped_column(Integer)
    coupon_code: Mapped[str | None] = mapped_column(String(64))
    occurrence_date: Mapped[str | None] = mapped_column(String(10))  # the member's local date, ISO
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the kind's facts at planning (points expiring...)
    send_at: Mapped[datetime] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    requested_by: Mapped[str | None] = mapped_column(String(120))  # a one-off send: who asked
    variant: Mapped[str | None] = mapped_column(String(32))  # the campaign's A/B variant (campaigns/variants.py)
    planned_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    sending_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    @property
    def stands_for(self) -> str:
        """The occurrence the message carries: its own, or for a support resend (``loyalty send
        --force`` of something already sent) the original's, whose coupon code it repeats and whose
        reward, already granted under that key, it does not grant again."""
        return (self.payload or {}).get("resend_of") or self.occurrence_key

    __table_args__ = (
        Index("ix_deliveries_member_planned", "member_id", "planned_at"),
        Index("ix_deliveries_campaign_state", "campaign", "state"),
        Index("ix_deliveries_member_campaign_date", "member_id", "campaign", "occurrence_date"),
        # Status callbacks find their delivery by the provider's message id.
        Index("ix_deliveries_provider_message_id", "provider_message_id"),
        # The sweeper's view: rows that are not final yet.
        Index(
            "ix_deliveries_unfinished",
            "state",
            "send_at",
            postgresql_where=text("state IN ('planned', 'sending')"),
            sqlite_where=text("state IN ('planned', 'sending')"),
        ),
        # The frequency cap at planning: who had a message in the last days, read as one index range.
        Index("ix_deliveries_send_at", "send_at", postgresql_include=["member_id", "campaign", "state"]),
    )
