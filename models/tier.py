"""Tier history: every upgrade and downgrade, with when and why (an order, the nightly recalculation)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigIntKey, UtcDateTime, utcnow


class TierChange(Base):
    __tablename__ = "tier_changes"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    from_tier: Mapped[str] = mapped_column(String(32))
    to_tier: Mapped[str] = mapped_column(String(32))
    direction: Mapped[str] = mapped_column(String(8))  # "up" or "down"
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    local_date: Mapped[str] = mapped_column(String(10))  # ISO date of ``at`` in the member's zone
    cause: Mapped[str] = mapped_column(String(64))  # "order:<id>", "recalculation"

    __table_args__ = (Index("ix_tier_changes_member_at", "member_id", "at"),)
