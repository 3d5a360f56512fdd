"""Where a backfill or a poll of a shop's admin API has got to: one row per (platform, resource).

A backfill stores its position (Shopify's ``endCursor``, WooCommerce's next page, PrestaShop's last
id) after each page it has committed to the inbox, so a run killed halfway starts again from there;
``finished_at`` says it went to the end, and the next backfill starts over (what was already applied
changes nothing). The poll keeps here the instant its last run started (``position``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base, UtcDateTime, utcnow


class ShopCursor(Base):
    __tablename__ = "shop_cursors"

    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    resource: Mapped[str] = mapped_column(String(40), primary_key=True)  # "backfill:orders", "poll"
    position: Mapped[str | None] = mapped_column(String(500))  # None: from the start
    since: Mapped[datetime | None] = mapped_column(UtcDateTime)  # the run's --since (a resumed run keeps it)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


def get_cursor(session: Session, platform: str, resource: str) -> ShopCursor | None:
    return session.scalars(select(ShopCursor).where(ShopCursor.platform == platform,
                                                    ShopCursor.resource == resource).with_for_update()).first()


def save_cursor(session: Session, platform: str, resource: str, *, position: str | None,
                since: datetime | None = None, finished: bool = False, restart: bool = False) -> ShopCursor:
    """Record a position (the caller commits, with the page's inbox rows)."""
    cursor = get_cursor(session, platform, resource)
    now = utcnow()
    if cursor is None:
        cursor = ShopCursor(platform=platform, resource=resource, started_at=now)
        session.add(cursor)
    if restart:
        cursor.started_at, cursor.since = now, since
    cursor.position, cursor.updated_at = position, now
    cursor.finished_at = now if finished else None
    session.flush()
    return cursor
