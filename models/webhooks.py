"""Provider webhooks already handled, so a duplicate (providers retry, and may send twice) changes
nothing twice: the effect and this row are written in one transaction, and the unique key decides.

Keys: ``twilio:status:{MessageSid}:{MessageStatus}`` and ``twilio:inbound:{MessageSid}``.

A row is only needed while the provider may still send the same webhook again (Twilio retries
for hours, not days), so rows older than :data:`RETENTION` are deleted every night.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Index, String, delete
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base, BigIntKey, UtcDateTime, utcnow


class ProcessedWebhook(Base):
    __tablename__ = "processed_webhooks"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (Index("ix_processed_webhooks_received_at", "received_at"),)


#: How long a handled webhook is remembered, to recognise a duplicate.
RETENTION = timedelta(days=30)


def prune_processed_webhooks(session: Session, now: datetime) -> int:
    """Forget the webhooks handled more than :data:`RETENTION` ago; returns how many."""
    result = session.execute(delete(ProcessedWebhook).where(ProcessedWebhook.received_at < now - RETENTION))
    return result.rowcount or 0
