"""What each shop last accepted of a member's loyalty facts (``workers/shop_loyalty.py``).

One row per (platform, member): the keyed digest of the tier, balance, its worth and next expiry
the shop holds (``digest``), the tier its tag says (``tier``: a tier change also swaps the tag), and
whether the last write went through (``state`` ``synced``) or the shop refused that member's data
(``error``, with a reason without personal data: tried again when the member changes).
``synced_at`` is the sync's start minus its overlap: changes before it are in the shop.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UtcDateTime


class ShopCustomerState:
    SYNCED = "synced"
    ERROR = "error"


class ShopCustomer(Base):
    __tablename__ = "shop_customers"

    platform: Mapped[str] = mapped_column(String(16), primary_key=True)  # shopify, woocommerce
    member_id: Mapped[int] = mapped_column(Integer, ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    digest: Mapped[str | None] = mapped_column(String(32))
    tier: Mapped[str | None] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(200))
    synced_at: Mapped[datetime] = mapped_column(UtcDateTime)
