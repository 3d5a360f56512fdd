"""What orders and time do to a member: points earned and reversed, tiers, expiry.

Every write is keyed so that applying the same order, refund or expiry twice changes nothing:
``order:{order id}`` (earned), ``first_order:{member}`` (bonus), ``refund:{order id}`` (reversal),
``refund:{order id}:{refund id}`` (a partial refund's share), ``expire:{lot id}`` (expiry).

The first-order bonus goes with the member's first order that stands: an order refunded or cancelled
whole gives its bonus back (``first_order_back:{member}``), and the member's earliest order that still
stands, or else the next one placed, earns it again (``first_order:{member}:{order id}``, given back as
``first_order_back:{member}:{order id}``). While a bonus is held (not wholly given back: spent points
are not recoverable) no other is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import bindparam, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from campaigns.program import Program
from core import calendar
from models import ledger
from models import tier as tier_history
from models.member import Member
from models.order import Order, OrderStatus
from models.points import EntryKind, PointEntry
from models.tier import TierChange


@dataclass
class RefundOutcome:
    taken_back: int
    not_recoverable: int


def apply_order(session: Session, program: Program, order: Order, *, now: datetime) -> None:
    """Earn (or reverse) the order's points, move the member's last order, recalculate the tier."""
    # Locked: two orders of one member applied at once must not both take the first-order bonus.
    # FOR NO KEY UPDATE, not FOR UPDATE: storing an order takes a key-share lock on its member (the
    # foreign key), which FOR UPDATE would wait for, so two transactions that each stored an order
    # would wait for each other.
    member = session.get(Member, order.member_id, with_for_update={"key_share": True})
    if member is None:  # the foreign key keeps every order's member
        raise LookupError(f"order row {order.id} names member row {order.member_id}, which does not exist")
    if order.status == OrderStatus.PLACED:
        _earn_for_order(session, program, member, order)
    else:
        reverse_order(session, program, member, order, now=now)
    last = session.scalar(
        select(func.max(Order.placed_at)).where(Order.member_id == member.id, Order.status == OrderStatus.PLACED)
    )
    member.last_order_at = last
    member.last_order_local_date = calendar.local_datetime(last, member.timezone).date().isoformat() if last else None
    # Up to the member's latest order: an order applied after a later one (webhooks out of order, a
    # shop's clock a little ahead of ours) must still count toward the later one's spend.
    at = max(now, order.placed_at, last or order.placed_at)
    if order.status == OrderStatus.PLACED:
        _upgrade_as_orders_were_placed(session, program, member, since=order.placed_at, until=at)
    recalculate_tier(session, program, member, now=at, cause=f"order:{order.order_id}")
    order.applied_status = order.status


def apply_pending_orders(session: Session, program: Program, *, now: datetime, limit: int = 5_000) -> int:
    """Apply the orders whose status changed since their effects were last applied (oldest first).

    Imports and live events only store orders; this is the one place their effects happen, so an
    order imported twice, or an event retried, is applied once.
    """
    pending = session.scalars(
        select(Order)
        .where(Order.applied_status.is_distinct_from(Order.status))
        .order_by(Order.placed_at, Order.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for order in pending:
        apply_order(session, program, order, now=now)
    return len(pending)


def earn_as_placed(session: Session, program: Program, order: Order) -> None:
    """What ``order`` earned while it stood, for an order a shop shows already refunded or cancelled
    after payment: the ledger only (its last order and tier never counted it). Its final status, applied
    next (:func:`apply_pending_orders`), takes back what its refunds did not."""
    member = session.get(Member, order.member_id, with_for_update={"key_share": True})
    if member is None:  # the foreign key keeps every order's member
        raise LookupError(f"order row {order.id} names member row {order.member_id}, which does not exist")
    _earn_for_order(session, program, member, order)


def _earn_for_order(session: Session, program: Program, member: Member, order: Order) -> None:
    rules = program.points
    expires_at = order.placed_at + timedelta(days=rules.expires_after_days)
    points = rules.for_order_total(Decimal(order.total))
    if points > 0:
        ledger.credit(session, member_id=member.id, entry_key=f"order:{order.order_id}", kind=EntryKind.EARN,
                      points=points, occurred_at=order.placed_at, expires_at=expires_at, source=f"order:{order.order_id}")
    _grant_bonus(session, program, member, order)


_BONUS, _GIVEN_BACK = "first_order:", "first_order_back:"  # + the member's external id [+ ":" + order id]
_BONUS_SOURCE = "first_order_bonus:"  # + the order's id
_GIVEN_BACK_ENTRY = aliased(PointEntry)
_FIRST_BONUS = select(PointEntry.points, select(_GIVEN_BACK_ENTRY.points).where(
    _GIVEN_BACK_ENTRY.entry_key == bindparam("given_back")).scalar_subquery()).where(PointEntry.entry_key == bindparam("bonus"))


def _grant_bonus(session: Session, program: Program, member: Member, order: Order) -> None:
    """The first-order bonus, earned by ``order`` as its points are, unless the member holds one."""
    rules = program.points
    if not rules.first_order_bonus:
        return
    base = f"{_BONUS}{member.external_id}"
    # The first bonus and its give-back, by the unique key alone: the common case, one statement built once.
    first = session.execute(_FIRST_BONUS, {"bonus": base, "given_back": _GIVEN_BACK + base[len(_BONUS):]}).first()
    if first is not None and first[0] + (first[1] or 0) > 0:
        return  # the first bonus, held
    if first is not None and any(bonus.held for bonus in _bonuses(session, member)):
        return  # a later one, held
    ledger.credit(session, member_id=member.id, entry_key=f"{base}:{order.order_id}" if first is not None else base,
                  kind=EntryKind.EARN, points=rules.first_order_bonus, occurred_at=order.placed_at,
                  expires_at=order.placed_at + timedelta(days=rules.expires_after_days),
                  source=f"{_BONUS_SOURCE}{order.order_id}")


@dataclass(frozen=True)
class _Bonus:
    given_back_key: str  # first_order_back:{member}[:{order id}]
    points: int
    source: str | None  # first_order_bonus:{order id}
    given_back: int | None  # the points its give-back took (negative), None: not given back

    @property
    def held(self) -> bool:
        """Not given back, or not wholly (its points were spent)."""
        return self.points + (self.given_back or 0) > 0


def _bonuses(session: Session, member: Member) -> list[_Bonus]:
    """The first-order bonuses credited to the member (the first ever keyed ``first_order:{member}``),
    each with its give-back, in one query."""
    base = f"{_BONUS}{member.external_id}"
    back = aliased(PointEntry)
    given_back_key = literal(_GIVEN_BACK) + func.substr(PointEntry.entry_key, len(_BONUS) + 1)
    rows = session.execute(
        select(given_back_key, PointEntry.points, PointEntry.source, back.points)
        .outerjoin(back, back.entry_key == given_back_key)
        .where(PointEntry.member_id == member.id, PointEntry.kind == EntryKind.EARN,
               (PointEntry.entry_key == base) | PointEntry.entry_key.startswith(f"{base}:", autoescape=True)))
    return [_Bonus(key, points, source, given_back) for key, points, source, given_back in rows]


def _give_back_bonus(session: Session, program: Program, member: Member, order: Order, now: datetime) -> RefundOutcome:
    """The first-order bonus ``order`` earned, taken back (once, never below zero) as the order no longer
    stands; given back whole, it goes to the member's earliest order that still stands, if any (else to
    the next one placed)."""
    bonus = next((b for b in _bonuses(session, member) if b.source == f"{_BONUS_SOURCE}{order.order_id}"), None)
    if bonus is None or bonus.given_back is not None:
        return RefundOutcome(0, 0)
    outcome = _take_back(session, member, bonus.given_back_key, bonus.points, now,
                         source=f"{_GIVEN_BACK}{order.order_id}")
    standing = session.scalars(
        select(Order).where(Order.member_id == member.id, Order.status == OrderStatus.PLACED)
        .order_by(Order.placed_at, Order.id).limit(1)).first()
    if standing is not None:
        _grant_bonus(session, program, member, standing)
    return outcome


def reverse_order(session: Session, program: Program, member: Member, order: Order, *, now: datetime) -> RefundOutcome:
    """Take back what the order earned and partial refunds did not already, then the first-order bonus
    it earned, never below zero; what was already spent is recorded."""
    key = f"refund:{order.order_id}"
    earned = RefundOutcome(0, 0) if ledger.entry_exists(session, key) else _take_back(
        session, member, key, _earned(session, order) - _partially_taken(session, order), now,
        source=f"refund:{order.order_id}")
    bonus = _give_back_bonus(session, program, member, order, now)
    return RefundOutcome(earned.taken_back + bonus.taken_back, earned.not_recoverable + bonus.not_recoverable)


def reverse_refund(session: Session, member: Member, order: Order, *, refund_id: str, amount: Decimal,
                   now: datetime) -> RefundOutcome:
    """A partial refund of ``amount`` of the order's total: its share of the points, never below zero.

    The caller applies each refund once (the inbox keeps a refund's id). The share is cumulative: the
    refunded amount so far over the total, of what the order earned, less what earlier partial refunds
    took. The refunded amount stops counting toward the member's tier spend.
    """
    key = f"refund:{order.order_id}:{refund_id}"
    if ledger.entry_exists(session, key) or ledger.entry_exists(session, f"refund:{order.order_id}"):
        return RefundOutcome(0, 0)
    total = Decimal(order.total)
    refunded = min(Decimal(order.refunded_amount or 0) + amount, total)
    order.refunded_amount = refunded
    earned = _earned(session, order)
    share = earned if total <= 0 else int(earned * refunded / total)  # cumulative, rounded down
    return _take_back(session, member, key, share - _partially_taken(session, order), now,
                      source=f"refund:{order.order_id}:{refund_id}")


def _earned(session: Session, order: Order) -> int:
    return session.scalar(select(PointEntry.points).where(PointEntry.entry_key == f"order:{order.order_id}")) or 0


def _partially_taken(session: Session, order: Order) -> int:
    """The points the order's partial refunds took back."""
    return -(session.scalar(
        select(func.coalesce(func.sum(PointEntry.points), 0))
        .where(PointEntry.member_id == order.member_id, PointEntry.entry_key.startswith(f"refund:{order.order_id}:"))
    ) or 0)


def _take_back(session: Session, member: Member, key: str, points: int, now: datetime, *, source: str) -> RefundOutcome:
    if points <= 0:
        return RefundOutcome(0, 0)
    available = session.scalar(
        select(func.coalesce(func.sum(PointEntry.remaining), 0)).where(PointEntry.member_id == member.id, PointEntry.remaining > 0)
    )
    taken = min(points, int(available or 0))  # coalesce: never None
    short = points - taken
    if short:
        source += f" ({short} points already spent, not recoverable)"
    if taken:
        ledger.debit(session, member_id=member.id, entry_key=key, kind=EntryKind.ADJUST, points=taken,
                     occurred_at=now, source=source)
    return RefundOutcome(taken, short)


def spend_in_window(session: Session, program: Program, member_id: int, now: datetime) -> Decimal:
    since = now - timedelta(days=program.tiers.window_days)
    total = session.scalar(
        select(func.coalesce(func.sum(Order.total - Order.refunded_amount), 0)).where(
            Order.member_id == member_id, Order.status == OrderStatus.PLACED, Order.placed_at > since, Order.placed_at <= now
        )
    )
    return Decimal(total or 0)  # coalesce: never None


def _placed_orders(session: Session, member_id: int, after: datetime, until: datetime) -> list[tier_history.PlacedOrder]:
    rows = session.execute(
        select(Order.placed_at, Order.total - Order.refunded_amount, Order.order_id)
        .where(Order.member_id == member_id, Order.status == OrderStatus.PLACED, Order.placed_at > after,
               Order.placed_at <= until)
        .order_by(Order.placed_at, Order.id)
    )
    return [tier_history.PlacedOrder(placed_at, Decimal(total), order_id) for placed_at, total, order_id in rows]


def _upgrade_as_orders_were_placed(session: Session, program: Program, member: Member, *, since: datetime,
                                   until: datetime) -> None:
    """Upgrades at the instants the member's orders were placed, from ``since`` on, each dated then.

    An order imported (or arriving) late makes its upgrade on the day it was placed, not today, so
    a shop's imported history is not announced as news; every order of the member placed after it
    is looked at too, since its spend counts toward theirs.
    """
    window = timedelta(days=program.tiers.window_days)
    orders = _placed_orders(session, member.id, after=since - window, until=until)
    for upgrade in tier_history.upgrades(program.tiers, member.tier, member.tier_reached_at, orders, since=since):
        _change(session, member, upgrade.tier, "up", upgrade.at, f"order:{upgrade.order_id}")


def _below_since(session: Session, program: Program, member: Member, now: datetime) -> datetime:
    """When the member's spend fell below their tier's (for the grace period): the moment an order
    left the window, if the spend reached the tier since it was reached; else ``now``."""
    if member.tier_reached_at is None:
        return now
    window = timedelta(days=program.tiers.window_days)
    orders = _placed_orders(session, member.id, after=member.tier_reached_at - window, until=now)
    return tier_history.fell_below(program.tiers, member.tier, member.tier_reached_at, orders, now=now) or now


def recalculate_tier(session: Session, program: Program, member: Member, *, now: datetime, cause: str) -> TierChange | None:
    """Upgrade at once; downgrade only after the grace period below the tier's spend."""
    rules = program.tiers
    target = rules.qualifying(spend_in_window(session, program, member.id, now))
    current = member.tier
    if rules.rank(target) > rules.rank(current) or current not in rules.names:
        return _change(session, member, target, "up", now, cause)
    if rules.rank(target) == rules.rank(current):
        member.tier_below_since = None
        return None
    if member.tier_below_since is None:
        member.tier_below_since = _below_since(session, program, member, now)
    if now - member.tier_below_since >= timedelta(days=rules.downgrade_grace_days):
        return _change(session, member, target, "down", now, cause)
    return None


def _change(session: Session, member: Member, target: str, direction: str, now: datetime, cause: str) -> TierChange:
    local_date = calendar.local_datetime(now, member.timezone).date().isoformat()
    change = TierChange(member_id=member.id, from_tier=member.tier, to_tier=target, direction=direction, at=now,
                        local_date=local_date, cause=cause)
    member.tier, member.tier_reached_at, member.tier_below_since = target, now, None
    session.add(change)
    session.flush()
    return change


def recalculate_all_tiers(session: Session, program: Program, *, now: datetime) -> int:
    """The nightly recalculation: members whose spend says another tier, or in a grace period."""
    changes = 0
    for member in session.scalars(select(Member).where(Member.last_order_at.is_not(None) | (Member.tier != program.tiers.names[0]))):
        if recalculate_tier(session, program, member, now=now, cause="recalculation"):
            changes += 1
    return changes


def expire_due_lots(session: Session, *, now: datetime, limit: int = 10_000) -> int:
    """Write each lot's expiry entry once, at or after its expiry time; returns lots expired."""
    lots = session.execute(
        select(PointEntry.id, PointEntry.member_id, PointEntry.remaining, PointEntry.expires_at)
        .where(PointEntry.remaining > 0, PointEntry.expires_at <= now)
        .order_by(PointEntry.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not lots:
        return 0
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(
        insert(PointEntry)
        .values([
            {"entry_key": f"expire:{lot.id}", "member_id": lot.member_id, "kind": EntryKind.EXPIRE,
             "points": -lot.remaining, "occurred_at": lot.expires_at, "source": "expiry", "created_at": now}
            for lot in lots
        ])
        .on_conflict_do_nothing(index_elements=["entry_key"])
    )
    session.execute(update(PointEntry).where(PointEntry.id.in_([lot.id for lot in lots])).values(remaining=0))
    return len(lots)
