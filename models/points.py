"""The points ledger: every earn, redeem, expiry and adjustment is an entry.

Earned points form *lots* (an ``earn`` or positive ``adjust`` entry with ``remaining`` points and an
``expires_at``). Redemptions, expiries and negative adjustments consume the lots that expire first.
The balance is the sum of ``points`` over a member's entries, never negative. Each entry has a
unique ``entry_key`` (the shop's id, or one we derive such as ``reward:<occurrence key>``), which is
what makes a re-import or a retried grant write nothing twice.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigIntKey, UtcDateTime, utcnow


class EntryKind:
    EARN = "earn"
    REDEEM = "redeem"
    EXPIRE = "expire"
    ADJUST = "adjust"
    ALL = (EARN, REDEEM, EXPIRE, ADJUST)


class PointEntry(Base):
    __tablename__ = "point_entries"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    entry_key: Mapped[str] = mapped_column(String(200), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    points: Mapped[int] = mapped_column(Integer)  # signed: + earn/adjust up, - redeem/expire/adjust down
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # lots only
    remaining: Mapped[int | None] = mapped_column(Integer)  # lots only: points not yet consumed
    source: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_point_entries_member_occurred", "member_id", "occurred_at"),
        # Open lots by expiry: the expiring-points reminder and the expiry job read only these.
        Index(
            "ix_point_entries_open_lots",
            "expires_at",
            "member_id",
            postgresql_where=text("remaining > 0"),
            sqlite_where=text("remaining > 0"),
        ),
    )


def allocate_oldest_first(lots: list[tuple[int, int]], amount: int) -> list[tuple[int, int]]:
    """Take ``amount`` points from ``lots`` (``(lot id, remaining)``, already ordered by expiry).

    Returns ``(lot id, points taken)`` pairs. Raises ``ValueError`` when the lots hold too little,
    so that a balance can never go negative.
    """
    if amount < 0:
        raise ValueError("amount must not be negative")
    taken: list[tuple[int, int]] = []
    left = amount
    for lot_id, remaining in lots:
        if left == 0:
            break
        take = min(left, remaining)
        if take > 0:
            taken.append((lot_id, take))
            left -= take
    if left:
        raise ValueError(f"only {amount - left} of {amount} points are available")
    return taken
