"""Coupons the product hands out, and the points members turn into them.

``coupons``: one row per code (unique, compared case-insensitively: WooCommerce lowercases codes).
A code is recorded *before* anything carries it; its ``state`` says where it stands in the shop:

- ``new``: recorded here only (no shop configured, or not created yet);
- ``created``: the shop has it (``shop`` names the platform, ``shop_id`` its id there);
- ``used``: an order from the shop used it (``used_at``, ``order_ref``);
- ``exported``: written by ``loyalty coupons export`` for the shop's own import;
- ``cancelled``: its redemption was given back; the code must not be used.

``redemptions``: points a member turned into a code through the API. One row per (member,
idempotency key), so the same request twice is one redemption. The points are taken in the
transaction that writes the row (``pending``); the code is then created in the shop (``created``),
or the points are given back by a recorded ledger entry (``reversed``). A ``pending`` row older than
a few minutes was left by a crash: the sweep finishes it (``workers/coupons.py``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, Integer, Numeric, String, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigIntKey, UtcDateTime, utcnow


class CouponState:
    NEW = "new"
    CREATED = "created"
    USED = "used"
    EXPORTED = "exported"
    CANCELLED = "cancelled"


class RedemptionState:
    PENDING = "pending"
    CREATED = "created"
    REVERSED = "reversed"


class Coupon(Base):
    __tablename__ = "coupons"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    code: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="SET NULL"))
    redemption_id: Mapped[int | None] = mapped_column(ForeignKey("redemptions.id", ondelete="SET NULL"))
    percent_off: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))  # a percentage, or
    amount_off: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))  # a fixed amount in ``currency``
    currency: Mapped[str | None] = mapped_column(String(3))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    state: Mapped[str] = mapped_column(String(16), default=CouponState.NEW)
    shop: Mapped[str | None] = mapped_column(String(16))
    shop_id: Mapped[str | None] = mapped_column(String(200))
    order_ref: Mapped[str | None] = mapped_column(String(120))
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (
        Index("ux_coupons_code", func.lower(code), unique=True),
        Index("ix_coupons_member", "member_id"),
    )


class Redemption(Base):
    __tablename__ = "redemptions"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    points: Mapped[int] = mapped_column(Integer)
    value: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    currency: Mapped[str] = mapped_column(String(3))
    code: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    state: Mapped[str] = mapped_column(String(16), default=RedemptionState.PENDING)
    lots_expire_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # points given back expire then
    attempt: Mapped[int] = mapped_column(Integer, default=1)  # a reversed one asked again takes the points again
    reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("member_id", "idempotency_key"),)
