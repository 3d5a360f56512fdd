"""Points turned into a discount code (``POST /api/members/{id}/redemptions``), never lost on the way.

1. **take**: one transaction locks the member's row, finds the redemption of this idempotency key or
   writes it (``pending``), takes the points from the lots that expire first (a ``redeem`` ledger
   entry) and records the code; two requests at once wait for each other, so they cannot overspend;
2. **create** the discount in the shop (idempotent by the code), or only record it without a shop;
3. **settle**: ``created``; or, when the shop refused or did not answer, ``reversed``: the points come
   back as a recorded ``adjust`` lot expiring when the earliest lot they came from did, and the code is
   ``cancelled``.

A crash between 1 and 3 leaves a ``pending`` row holding the points: :func:`finish_pending` (the clock,
every few minutes) creates its code or gives them back. The same key asked again answers the same code
and takes nothing more; a reversed one asked again takes the points again (a new attempt).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from campaigns.program import Program
from core.settings import Settings
from models import ledger
from models.base import utcnow
from models.coupons import Coupon, CouponState, Redemption, RedemptionState
from models.db import transaction
from models.member import Member
from models.points import EntryKind, PointEntry
from workers.coupons import Offer, create_in_shop
from workers.shop_api.discounts import DiscountShop, NotShopCustomer, shop_for

log = structlog.get_logger("loyalty.redemptions")

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud at a till
PENDING_AFTER = timedelta(minutes=5)  # a pending redemption older than this was left by a crash
CENT = Decimal("0.01")


class RedemptionRuntime(Protocol):
    """What a redemption needs: the workers' ``Runtime`` has it, and so has the member API's ``Bank``."""

    @property
    def settings(self) -> Settings: ...

    @property
    def sessions(self) -> sessionmaker[Session]: ...

    @property
    def program(self) -> Program: ...


class RedemptionRefused(Exception):
    """A request we answer with ``status`` and one sentence."""

    def __init__(self, status: int, sentence: str):
        super().__init__(sentence)
        self.status, self.sentence = status, sentence


@dataclass(frozen=True)
class Answer:
    code: str
    points: int
    value: Decimal
    currency: str
    expires_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "points": self.points, "value": str(self.value), "currency": self.currency,
                "expires_at": self.expires_at.isoformat().replace("+00:00", "Z")}


def new_code() -> str:
    return "PTS-" + "".join(secrets.choice(CODE_ALPHABET) for _ in range(10))


def _answer(row: Redemption) -> Answer:
    return Answer(row.code, row.points, row.value, row.currency, row.expires_at)


def _offer(row: Redemption, member: Member) -> Offer:
    return Offer(code=row.code, member_id=row.member_id, percent_off=None, amount_off=row.value,
                 currency=row.currency, expires_at=row.expires_at, redemption_id=row.id,
                 title=f"Loyalty points: {row.points} points (member {member.external_id})")


def _debit_key(row: Redemption) -> str:
    return f"redemption:{row.id}:{row.attempt}"


def _take(session: Session, runtime: RedemptionRuntime, member: Member, points: int, key: str, now: datetime) -> tuple[Redemption, bool]:
    """The key's redemption, its points taken (in the caller's transaction); True when it is settled."""
    program = runtime.program
    row = session.scalar(select(Redemption).where(Redemption.member_id == member.id,
                                                  Redemption.idempotency_key == key))
    if row is not None and row.points != points:
        raise RedemptionRefused(409, f"This idempotency_key was used for a redemption of {row.points} points; "
                                     "send a new key for a different amount.")
    if row is not None and row.state != RedemptionState.REVERSED:
        return row, row.state == RedemptionState.CREATED
    value = (Decimal(points) * program.points.value_per_point).quantize(CENT, rounding=ROUND_HALF_UP)
    first_lot = session.scalar(select(PointEntry.expires_at).where(PointEntry.member_id == member.id,
                                                                   PointEntry.remaining > 0)
                               .order_by(PointEntry.expires_at.is_(None), PointEntry.expires_at).limit(1))
    if row is None:
        row = Redemption(member_id=member.id, idempotency_key=key, points=points, value=value,
                         currency=program.points.currency, code=new_code(),
                         expires_at=now + timedelta(days=program.redemption.valid_days),
                         state=RedemptionState.PENDING, attempt=1, lots_expire_at=first_lot, created_at=now,
                         updated_at=now)
        session.add(row)
        session.flush()
    else:  # given back earlier (the shop failed): asked again, a new attempt with a new code
        row.attempt, row.state, row.code, row.reason = row.attempt + 1, RedemptionState.PENDING, new_code(), None
        row.lots_expire_at, row.updated_at = first_lot, now
        row.expires_at = now + timedelta(days=program.redemption.valid_days)
    try:
        ledger.debit(session, member_id=member.id, entry_key=_debit_key(row), kind=EntryKind.REDEEM, points=points,
                     occurred_at=now, source=f"redemption:{row.id}")
    except ledger.InsufficientPoints:
        available = ledger.balance(session, member.id)
        raise RedemptionRefused(409, f"The member has {available} points, fewer than the {points} asked for.") from None
    from workers.coupons import record

    record(session, _offer(row, member), now)
    return row, False


def redeem(runtime: RedemptionRuntime, shop: DiscountShop | None, external_id: str, points: Any, key: Any,
           now: datetime | None = None) -> Answer:
    """Turn ``points`` of the member ``external_id`` into a code; :class:`RedemptionRefused` when not."""
    now = now or utcnow()
    if not isinstance(points, int) or isinstance(points, bool) or points <= 0:
        raise RedemptionRefused(400, 'Send "points" as a whole number of points, like {"points": 500, '
                                     '"idempotency_key": "..."}.')
    if not isinstance(key, str) or not 1 <= len(key.strip()) <= 200:
        raise RedemptionRefused(400, 'Send an "idempotency_key" of 1 to 200 characters, the same one when you '
                                     "retry this redemption.")
    if problem := runtime.program.redemption.problem(points):
        raise RedemptionRefused(400, problem)
    with transaction(runtime.sessions) as session:
        member = session.scalar(select(Member).where(Member.external_id == external_id).with_for_update())
        if member is None:
            raise RedemptionRefused(404, "No member has this id.")
        row, settled = _take(session, runtime, member, points, key.strip(), now)
        answer, row_id, offer = _answer(row), row.id, _offer(row, member)
    if settled:
        return answer
    return _settle(runtime, shop, row_id, offer, now)


def _settle(runtime: RedemptionRuntime, shop: DiscountShop | None, row_id: int, offer: Offer, now: datetime) -> Answer:
    problem = create_in_shop(runtime.sessions, shop, offer, now)
    with transaction(runtime.sessions) as session:
        row = session.scalar(select(Redemption).where(Redemption.id == row_id).with_for_update())
        if row is None:  # a redemption is never deleted
            raise LookupError(f"redemption {row_id} is not in the database")
        if row.state == RedemptionState.PENDING and row.code == offer.code:
            if problem is None:
                row.state, row.updated_at = RedemptionState.CREATED, utcnow()
            else:
                _give_back(session, row, str(problem))
        answer, state = _answer(row), row.state
    if isinstance(problem, NotShopCustomer) and state != RedemptionState.CREATED:
        raise RedemptionRefused(409, "This member is not a customer of the shop, so no code can be made for them; "
                                     "no points were taken.")
    if state != RedemptionState.CREATED:
        raise RedemptionRefused(503, "The shop could not create the discount now; no points were taken, "
                                     "try again in a few minutes with the same idempotency_key.")
    return answer


def _give_back(session: Session, row: Redemption, problem: str) -> None:
    """The points back (a recorded ``adjust`` lot, once per attempt), the code cancelled."""
    now = utcnow()
    ledger.credit(session, member_id=row.member_id, entry_key=f"{_debit_key(row)}:given-back", kind=EntryKind.ADJUST,
                  points=row.points, occurred_at=now, expires_at=row.lots_expire_at,
                  source=f"redemption:{row.id}:shop-failed")
    row.state, row.reason, row.updated_at = RedemptionState.REVERSED, problem[:500], now
    session.execute(update(Coupon).where(func.lower(Coupon.code) == row.code.lower(),
                                         Coupon.state == CouponState.NEW)
                    .values(state=CouponState.CANCELLED, updated_at=now))
    log.info("redemption.given_back", redemption_id=row.id, points=row.points, reason=problem[:200])


def finish_pending(runtime: RedemptionRuntime, shop: DiscountShop | None = None, *, older_than: timedelta = PENDING_AFTER,
                   now: datetime | None = None) -> dict[str, int]:
    """Settle the redemptions a crash left ``pending``: their code made in the shop, or their points back."""
    now = now or utcnow()
    own = shop is None
    if own:
        settings = runtime.settings.shop
        shop = shop_for(settings, settings.mapping.default_timezone)
    counts = {"created": 0, "reversed": 0}
    try:
        with runtime.sessions() as session:
            stale = session.execute(select(Redemption.id, Member.external_id).join(Member)
                                    .where(Redemption.state == RedemptionState.PENDING,
                                           Redemption.updated_at < now - older_than)).all()
        for row_id, _ in stale:
            with runtime.sessions() as session:
                row = session.get(Redemption, row_id)
                member = session.get(Member, row.member_id) if row is not None else None
                if row is None or member is None:  # neither a redemption nor a member row is ever deleted
                    raise LookupError(f"redemption {row_id} or its member is not in the database")
                offer = _offer(row, member)
            try:
                _settle(runtime, shop, row_id, offer, now)
                counts["created"] += 1
            except RedemptionRefused:
                counts["reversed"] += 1
    finally:
        if own and shop is not None:
            shop.close()
    return counts
