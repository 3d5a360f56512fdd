"""Coupons the product hands out, made real in the shop before anything carries them.

:func:`ready` is called by the delivery path after a message is claimed and before it is sent: the
code is recorded in ``coupons`` (once: the code is unique), then, with a shop's admin API
configured, created there (idempotently by the code, ``workers/shop_api/discounts.py``). It answers
a sentence when the shop refused or did not answer: the delivery then goes back for later, so no
message carries a code the shop does not know. Without a shop the code stays ``new`` and is written
by ``loyalty coupons export``.

:func:`mark_used` records that a shop order used codes (Shopify ``discount_codes``, WooCommerce
``coupon_lines``), called when an order is applied.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from models.base import utcnow
from models.coupons import Coupon, CouponState
from models.db import rows_changed, transaction
from models.member import Member
from workers.shop_api.discounts import Discount, DiscountShop
from workers.shop_api.http import ShopApiError

log = structlog.get_logger("loyalty.coupons")


@dataclass(frozen=True)
class Offer:
    """A code and what it gives, before it is recorded."""

    code: str
    member_id: int
    percent_off: Decimal | None
    amount_off: Decimal | None
    currency: str
    expires_at: datetime
    title: str
    delivery_id: int | None = None
    redemption_id: int | None = None


def find(session: Session, code: str) -> Coupon | None:
    return session.scalar(select(Coupon).where(func.lower(Coupon.code) == code.lower()))


def record(session: Session, offer: Offer, now: datetime | None = None) -> Coupon:
    """The coupon row of ``offer.code``, written if new (a retried delivery finds its own); ``now``: the
    instant it was made on the program's clock (a tick's ``as_of``)."""
    existing = find(session, offer.code)
    if existing is not None:
        return existing
    coupon = Coupon(code=offer.code, member_id=offer.member_id, delivery_id=offer.delivery_id,
                    redemption_id=offer.redemption_id, percent_off=offer.percent_off, amount_off=offer.amount_off,
                    currency=offer.currency, expires_at=offer.expires_at, state=CouponState.NEW,
                    created_at=now or utcnow(), updated_at=now or utcnow())
    session.add(coupon)
    session.flush()
    return coupon


def create_in_shop(sessions: sessionmaker[Session], shop: DiscountShop | None, offer: Offer,
                   now: datetime | None = None) -> ShopApiError | None:
    """Make sure the shop has ``offer``'s code; None when it does (or no shop is configured: the code
    is recorded for the export), else the error, one sentence saying why not (nothing personal in it);
    a :class:`NotShopCustomer` will not change by asking again."""
    with transaction(sessions) as session:
        coupon = record(session, offer, now)
        if shop is None or coupon.state in (CouponState.CREATED, CouponState.USED):
            return None
        if coupon.state == CouponState.CANCELLED:
            return ShopApiError("The coupon was cancelled.")
        member = session.get(Member, offer.member_id)
        if member is None:  # the foreign key keeps every coupon's member
            raise LookupError(f"a coupon names member row {offer.member_id}, which does not exist")
        discount = Discount(code=offer.code, customer_id=member.external_id, email=member.email,
                            percent_off=offer.percent_off, amount_off=offer.amount_off, currency=offer.currency,
                            starts_at=now or utcnow(), ends_at=offer.expires_at, title=offer.title)
    try:
        shop_id = shop.ensure(discount)
    except ShopApiError as error:
        log.warning("coupon.not_created", shop=shop.platform, reason=str(error))
        return error
    with transaction(sessions) as session:
        session.execute(update(Coupon).where(func.lower(Coupon.code) == offer.code.lower(),
                                             Coupon.state == CouponState.NEW)
                        .values(state=CouponState.CREATED, shop=shop.platform, shop_id=shop_id, updated_at=utcnow()))
    return None


def mark_used(session: Session, codes: Iterable[str], order_ref: str, at: datetime) -> int:
    """Codes an order from the shop used (case-insensitively): ``used``, with the order; how many."""
    wanted = sorted({code.strip().lower() for code in codes if code and code.strip()})
    if not wanted:
        return 0
    result = session.execute(update(Coupon).where(func.lower(Coupon.code).in_(wanted),
                                                  Coupon.state != CouponState.USED)
                             .values(state=CouponState.USED, used_at=at, order_ref=order_ref[:120], updated_at=utcnow()))
    return rows_changed(result)


#: The export's columns: WooCommerce's coupon fields (REST v3 ``coupons``, ``wp wc shop_coupon create``),
#: then who and what the code is for.
EXPORT_COLUMNS = ("code", "discount_type", "amount", "date_expires", "usage_limit", "usage_limit_per_user",
                  "individual_use", "email_restrictions", "customer_id", "currency", "source")


def export_rows(session: Session, since: datetime | None, timezone: str) -> list[dict[str, str]]:
    """The codes not in a shop (``new``, or ``exported`` before), oldest first, as CSV rows; the ``new``
    ones become ``exported``. ``date_expires`` is the shop's local time (``timezone``), as WooCommerce reads it."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(timezone)
    query = (select(Coupon, Member).join(Member, Member.id == Coupon.member_id)
             .where(Coupon.state.in_((CouponState.NEW, CouponState.EXPORTED))).order_by(Coupon.created_at, Coupon.id))
    if since is not None:
        query = query.where(Coupon.created_at >= since)
    rows, fresh = [], []
    for coupon, member in session.execute(query):
        percent = coupon.percent_off is not None
        rows.append({
            "code": coupon.code, "discount_type": "percent" if percent else "fixed_cart",
            "amount": str(coupon.percent_off if percent else coupon.amount_off),
            "date_expires": coupon.expires_at.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S"),
            "usage_limit": "1", "usage_limit_per_user": "1", "individual_use": "yes",
            "email_restrictions": member.email or "", "customer_id": member.external_id,
            "currency": "" if percent else (coupon.currency or ""),
            "source": "redemption" if coupon.redemption_id else "campaign",
        })
        if coupon.state == CouponState.NEW:
            fresh.append(coupon.id)
    if fresh:
        session.execute(update(Coupon).where(Coupon.id.in_(fresh))
                        .values(state=CouponState.EXPORTED, updated_at=utcnow()))
    return rows
