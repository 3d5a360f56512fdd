"""Orders placed by members: they drive points earning, lapse and tier qualification."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Boolean, ForeignKey, Index, Integer, Numeric, String, false, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UtcDateTime, utcnow


class OrderStatus:
    PLACED = "placed"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"
    ALL = (PLACED, REFUNDED, CANCELLED)


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    placed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    total: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default=OrderStatus.PLACED)
    # The status whose effects (points, last order, tier) were last applied; differs from
    # ``status`` while an imported or updated order waits for services.program_ops.apply_pending_orders.
    applied_status: Mapped[str | None] = mapped_column(String(16))
    # What partial refunds gave back of ``total``: it no longer counts toward tier spend, and each took
    # back its share of the order's points (services.program_ops.reverse_refund).
    refunded_amount: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal(0), server_default="0")
    # The shop's prices for this order include taxes (Shopify's ``taxes_included``): a refund then states
    # its merchandise taxes included, and its taxes, which earned nothing, come off (workers/inbox.py).
    prices_include_tax: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        Index("ix_orders_member_placed", "member_id", "placed_at"),
        Index("ix_orders_pending", "id", postgresql_where=text("applied_status IS DISTINCT FROM status"),
              sqlite_where=text("applied_status IS NOT status")),
    )
