"""Tier history: every upgrade and downgrade, with when and why (an order, the nightly recalculation).

Also the pure arithmetic of a member's spend over time (no database): tiers are decided as of the
moments orders were placed, so an order imported or received late changes the tier on the day it
was placed, and a grace period runs from the moment the spend actually fell below the tier's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

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


@dataclass(frozen=True)
class PlacedOrder:
    placed_at: datetime
    total: Decimal
    order_id: str


@dataclass(frozen=True)
class Upgrade:
    tier: str
    at: datetime
    order_id: str  # the order whose placing reached the tier


def _spend(orders: Sequence[PlacedOrder], at: datetime, window: timedelta) -> Decimal:
    """The spend of the rolling window ending at ``at`` (an order counts from its instant on, for
    ``window``: ``at - window < placed_at <= at``, as the database query has it)."""
    return sum((o.total for o in orders if at - window < o.placed_at <= at), Decimal(0))


def upgrades(rules, tier: str, reached_at: datetime | None, orders: Sequence[PlacedOrder], *,
             since: datetime) -> Iterator[Upgrade]:
    """The upgrades ``orders`` make from ``since`` on, in the order they were placed, each dated when
    the order reaching it was placed (never before ``reached_at``, so the history stays in order).

    ``orders`` are the member's placed orders that can count at or after ``since`` (placed after
    ``since`` minus the window), in any order.
    """
    window = timedelta(days=rules.window_days)
    ordered = sorted(orders, key=lambda o: o.placed_at)
    for index, order in enumerate(ordered):
        if order.placed_at < since or (index + 1 < len(ordered) and ordered[index + 1].placed_at == order.placed_at):
            continue  # orders placed at the same instant are looked at once, after the last of them
        target = rules.qualifying(_spend(ordered, order.placed_at, window))
        if rules.rank(target) > rules.rank(tier):
            at = max(order.placed_at, reached_at) if reached_at is not None else order.placed_at
            yield Upgrade(target, at, order.order_id)
            tier, reached_at = target, at


def fell_below(rules, tier: str, reached_at: datetime, orders: Sequence[PlacedOrder], *,
               now: datetime) -> datetime | None:
    """The moment the spend last fell below ``tier``'s minimum (an order leaving the window), if it
    reached that minimum at some point since ``reached_at``; None if it never did (a refund, say:
    then the fall is noticed now) or if it is not below at ``now``."""
    level = rules.level(tier)
    if level is None:
        return None
    window = timedelta(days=rules.window_days)
    moments = {reached_at}
    for order in orders:
        moments.update(m for m in (order.placed_at, order.placed_at + window) if reached_at <= m <= now)
    fell = None
    reached = False
    for moment in sorted(moments):
        if _spend(orders, moment, window) >= level.min_spend:
            reached, fell = True, None
        elif reached and fell is None:
            fell = moment
    return fell
