"""Provider webhooks already handled, so a duplicate (providers retry, and may send twice) changes
nothing twice: the effect and this row are written in one transaction, and the unique key decides.

Keys: ``twilio:status:{MessageSid}:{MessageStatus}`` and ``twilio:inbound:{MessageSid}``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigIntKey, UtcDateTime, utcnow


class ProcessedWebhook(Base):
    __tablename__ = "processed_webhooks"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
