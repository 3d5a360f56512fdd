"""Provider webhooks already handled, so a duplicate (providers retry, and may send twice) changes
nothing twice: the effect and this row are written in one transaction, and the unique key decides.

Keys: ``twilio:status:{MessageSid}:{MessageStatus}`` and ``twilio:inbound:{MessageSid}``.

A row is only needed while the provider may still send the same webhook again (Twilio retries
for hours, not days), so rows older than :data:`RETENTION` are deleted every night.

:class:`EarlyStatusCallback` keeps a Twilio status callback that arrived before its message's SID
was recorded (Twilio may call back before the send's outcome commits, and does not call again
after a 200): the sweeper applies it once the delivery has the SID; one never matched is forgotten
after :data:`RETENTION` too.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Index, Integer, String, UniqueConstraint, delete
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base, BigIntKey, UtcDateTime, utcnow
from models.db import rows_changed


class ProcessedWebhook(Base):
    __tablename__ = "processed_webhooks"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (Index("ix_processed_webhooks_received_at", "received_at"),)


class EarlyStatusCallback(Base):
    """A final status callback for a message SID no delivery has yet: only what applying it needs."""

    __tablename__ = "early_status_callbacks"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    message_sid: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    error_code: Mapped[int | None] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("message_sid", "status"),
        Index("ix_early_status_callbacks_received_at", "received_at"),
    )


#: How long a handled webhook is remembered, to recognise a duplicate.
RETENTION = timedelta(days=30)


def prune_processed_webhooks(session: Session, now: datetime) -> int:
    """Forget the webhooks handled (or kept, never matched) more than :data:`RETENTION` ago; returns how many."""
    result = session.execute(delete(ProcessedWebhook).where(ProcessedWebhook.received_at < now - RETENTION))
    kept = session.execute(delete(EarlyStatusCallback).where(EarlyStatusCallback.received_at < now - RETENTION))
    return rows_changed(result) + rows_changed(kept)
