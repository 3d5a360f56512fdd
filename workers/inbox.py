"""Applying the shop's inbox (``models/inbox.py``): one entry at a time, all of its events or none.

``apply_entry`` locks the entry, reads what it means (``shops/``), and applies each event through the
same parsing and upsert as an import, inside a savepoint: an event that must wait (an order whose
customer has not arrived) or cannot apply leaves nothing behind, and the entry says why. Applying a
member wakes the entries that waited for it; applying an order, the refunds that waited for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import structlog
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.settings import Settings
from models.audit import AuditAction, AuditEntry
from models.base import utcnow
from models.consent import CHANNELS, apply_statement
from models.db import transaction
from models.inbox import ERASED_BODY, InboxEntry, InboxState, claim_once, claim_version, hold, settle, wake
from models.member import Member
from models.order import Order, OrderStatus
from models.personal_data import lookup
from models.privacy import erase_member
from services.imports import apply_record
from services.imports.rows import RowProblem
from services.program_ops import apply_pending_orders, earn_as_placed, recalculate_tier, reverse_refund
from shops import api, prestashop, shopify, woocommerce
from shops.common import ShopMapping, instant, refunded_merchandise
from shops.events import PAID_FIRST, EventKind, OrderState, PayloadProblem, ShopEvent, import_status
from workers.actors import _placeholder
from workers.runtime import Runtime, get_runtime

log = structlog.get_logger("loyalty.inbox")

INBOX_QUEUE = "events"


@dataclass
class Outcome:
    state: InboxState = InboxState.APPLIED
    reason: str | None = None
    waiting_for: str | None = None
    member_ref: str | None = None
    woken: list[int] = field(default_factory=list)
    erase_body: bool = False  # a privacy request: its own payload names the person, so it goes too


def envelope(raw: str, **meta: Any) -> str:
    """What the inbox stores for one delivery: the body as received, and the headers it needs."""
    return json.dumps({"raw": raw, "meta": meta}, separators=(",", ":"))


def decode(entry: InboxEntry, mapping: ShopMapping) -> list[ShopEvent]:
    """The events a stored delivery means (pure: the same entry always means the same)."""
    try:
        stored = json.loads(entry.body)
        if stored.get("erased"):
            raise PayloadProblem("its payload was erased by a privacy request")
        meta, payload = stored["meta"], json.loads(stored["raw"])
    except (ValueError, KeyError, TypeError, RecursionError):
        raise PayloadProblem("its body is not the JSON document the platform sends") from None
    if entry.platform == shopify.PLATFORM:
        triggered = instant(meta["triggered_at"], "X-Shopify-Triggered-At") if meta.get("triggered_at") else None
        return shopify.parse(entry.topic, meta.get("event_id") or entry.dedup_key, triggered, payload, mapping)
    if entry.platform == woocommerce.PLATFORM:
        return woocommerce.parse(entry.topic, payload, mapping)
    if entry.platform == api.PLATFORM:
        return [api.parse(api.envelopes(payload)[0])]
    if entry.platform == prestashop.PLATFORM:
        facts = prestashop.ShopFacts(**meta.get("facts", {}))
        reader = {"customers": lambda p: prestashop.member_event(p, mapping, facts),
                  "orders": lambda p: prestashop.order_event(p, mapping, facts),
                  "order_slip": lambda p: prestashop.refund_event(p, facts)}.get(entry.topic)
        if reader is None:
            raise PayloadProblem(f"the PrestaShop resource {entry.topic!r} is not one we read")
        return [reader(payload)]
    raise PayloadProblem(f"the platform {entry.platform!r} is unknown")


@dramatiq.actor(broker=_placeholder, queue_name=INBOX_QUEUE, max_retries=10, min_backoff=1_000, max_backoff=60_000)
def apply_inbox_entry(entry_id: int) -> None:
    """Apply one stored delivery; then the entries it woke (enqueued after the commit)."""
    for woken in apply_entry(entry_id):
        apply_inbox_entry.send(woken)


def apply_entry(entry_id: int, runtime: Runtime | None = None) -> list[int]:
    """Apply one entry (see the module); the ids of the entries it woke. ``runtime``: the process's."""
    runtime = runtime or get_runtime()
    with transaction(runtime.sessions) as session:
        entry = session.scalars(select(InboxEntry).where(InboxEntry.id == entry_id).with_for_update()).first()
        if entry is None or entry.state != InboxState.RECEIVED:
            return []
        try:
            events = decode(entry, runtime.settings.shop.mapping)
        except PayloadProblem as problem:
            settle(session, entry_id, InboxState.REJECTED, str(problem))
            log.warning("inbox.rejected", entry=entry_id, platform=entry.platform, topic=entry.topic, reason=str(problem))
            return []
        outcome = _apply_all(session, runtime, events)
        held: set[str] = set()
        while (outcome.state is InboxState.WAITING and outcome.waiting_for is not None
               and outcome.waiting_for not in held):
            # Wait only under the lock of what it waits for, held until the commit, and after looking
            # again: the wake of a member stored meanwhile in another transaction sees this wait.
            hold(session, outcome.waiting_for)
            held.add(outcome.waiting_for)
            outcome = _apply_all(session, runtime, events)
        settle(session, entry_id, outcome.state, outcome.reason, outcome.waiting_for, outcome.member_ref)
        if outcome.erase_body:
            entry.body = ERASED_BODY
    log.info("inbox." + outcome.state, entry=entry_id, platform=entry.platform, topic=entry.topic,
             reason=outcome.reason, woken=len(outcome.woken))
    return outcome.woken


def _apply_all(session: Session, runtime: Runtime, events: list[ShopEvent]) -> Outcome:
    savepoint = session.begin_nested()
    combined = Outcome()
    reasons: list[str] = []
    try:
        for event in events:
            outcome = apply_event(session, runtime, event)
            combined.member_ref = combined.member_ref or outcome.member_ref
            if outcome.state is not InboxState.APPLIED:
                savepoint.rollback()
                outcome.member_ref = outcome.member_ref or combined.member_ref
                return outcome
            combined.woken += outcome.woken
            combined.erase_body = combined.erase_body or outcome.erase_body
            if outcome.reason:
                reasons.append(outcome.reason)
    except (RowProblem, PayloadProblem) as problem:
        savepoint.rollback()
        return Outcome(InboxState.REJECTED, str(problem), member_ref=combined.member_ref)
    savepoint.commit()
    combined.reason = "; ".join(reasons) or None
    return combined


def apply_event(session: Session, runtime: Runtime, event: ShopEvent) -> Outcome:
    handler = _HANDLERS[event.kind]
    return handler(session, runtime, event)


def _member(session: Session, external_id: str | None) -> Member | None:
    if not external_id:
        return None
    return session.scalars(select(Member).where(Member.external_id == external_id)).first()


def _versioned(session: Session, event: ShopEvent) -> bool:
    return claim_version(session, f"{event.platform}:{event.resource}", event.version_at)


def _apply_member(session: Session, runtime: Runtime, event: ShopEvent) -> Outcome:
    external_id = event.member_id
    member = _member(session, external_id)
    if member is not None and member.erased_at is not None:
        return Outcome(reason="the member was erased: the shop's data is not kept", member_ref=external_id)
    if not _versioned(session, event):
        return Outcome(reason="older than the version already applied", member_ref=external_id)
    consent_keys = {f"{channel}_{what}" for channel in CHANNELS for what in ("opt_in", "consent_at")}
    fields = {k: v for k, v in event.fields.items() if k not in consent_keys}
    settings = runtime.settings
    apply_record(session, "members", fields, source=f"shop:{event.platform}", program=runtime.program,
                 default_timezone=settings.default_timezone, default_locale=settings.default_locale)
    member = _member(session, external_id)
    if member is None:  # apply_record stored it, or raised RowProblem
        raise LookupError(f"member {external_id!r} is not there after it was applied")
    now = utcnow()
    for channel in CHANNELS:
        given = event.fields.get(f"{channel}_opt_in")
        if given is None or given == "":
            continue
        said_at = event.fields.get(f"{channel}_consent_at")
        apply_statement(session, member, channel, given.strip().lower() in ("true", "1", "yes"),
                        instant(said_at, f"{channel}_consent_at") if said_at else None,
                        source=f"shop:{event.platform}", actor=f"shop:{event.platform}", now=now)
    return Outcome(member_ref=external_id, woken=wake(session, f"member:{external_id}"))


def _owner(session: Session, event: ShopEvent) -> Member | Outcome:
    """The member an order or refund belongs to, or the outcome when there is none yet."""
    if event.member_id:
        member = _member(session, event.member_id)
        if member is None:
            return Outcome(InboxState.WAITING, f"waits for customer {event.member_id}",
                           waiting_for=f"member:{event.member_id}", member_ref=event.member_id)
        return member
    if event.member_email:
        try:
            email = validate_email(event.member_email, check_deliverability=False).normalized
        except EmailNotValidError:
            email = None
        key = lookup("email", email) if email else None
        member = session.scalars(select(Member).where(Member.email_lookup == key).order_by(Member.id)).first() if key else None
        if member is not None:
            return member
    return Outcome(reason="a guest order whose email is no member's: not applicable")


def _order_member(session: Session, order: Order) -> Member:
    member = session.get(Member, order.member_id)
    if member is None:  # the foreign key keeps every order's member
        raise LookupError(f"order row {order.id} names member row {order.member_id}, which does not exist")
    return member


def _apply_order(session: Session, runtime: Runtime, event: ShopEvent) -> Outcome:
    member = _owner(session, event)
    if isinstance(member, Outcome):
        return member
    ref = member.external_id
    if event.fields.get("test") == "true":
        return Outcome(reason="a test order: no points", member_ref=ref)
    status = import_status(OrderState(event.fields["state"]))
    order_id = event.fields["order_id"]
    paid_first = event.fields.get(PAID_FIRST) == "true"
    if paid_first and _order(session, order_id) is not None:
        return Outcome(member_ref=ref)  # stored already: its refunds and its state, next, apply as usual
    if not _versioned(session, event):
        return Outcome(reason="older than the version already applied", member_ref=ref)
    if status is None:
        return Outcome(reason="awaiting payment: points when it is paid", member_ref=ref)
    fields = {k: v for k, v in event.fields.items() if k not in _NOT_IMPORTED}
    settings = runtime.settings
    apply_record(session, "orders", {**fields, "member_id": ref, "status": status}, source=f"shop:{event.platform}",
                 program=runtime.program, default_timezone=settings.default_timezone,
                 default_locale=settings.default_locale)
    order = _order(session, order_id)
    if order is None:  # apply_record stored it, or raised RowProblem
        raise LookupError(f"order {order_id!r} is not there after it was applied")
    if "taxes_included" in event.fields:
        order.prices_include_tax = event.fields["taxes_included"] == "true"
    if event.fields.get("coupon_codes"):  # codes we made, now used at the shop's checkout
        from workers.coupons import mark_used

        mark_used(session, event.fields["coupon_codes"].split(","), f"{event.platform}:order:{order_id}",
                  instant(event.fields["placed_at"], "placed_at"))
    if paid_first:
        # What it earned while it stood; its refunds (next) take back their shares, then its state the rest.
        earn_as_placed(session, runtime.program, order)
        return Outcome(member_ref=ref)
    apply_pending_orders(session, runtime.program, now=utcnow())
    return Outcome(member_ref=ref, woken=wake(session, f"order:{order_id}"))


#: An order event's fields that are not the import's: its shop state, and what the inbox keeps apart.
_NOT_IMPORTED = frozenset({"state", "test", "coupon_codes", "taxes_included", PAID_FIRST})


def _order(session: Session, order_id: str) -> Order | None:
    return session.scalars(select(Order).where(Order.order_id == order_id)).first()


def _apply_refund(session: Session, runtime: Runtime, event: ShopEvent) -> Outcome:
    order_id = event.fields["order_id"]
    order = session.scalars(select(Order).where(Order.order_id == order_id).with_for_update()).first()
    if order is None:
        return Outcome(InboxState.WAITING, f"waits for order {order_id}", waiting_for=f"order:{order_id}",
                       member_ref=event.member_id)
    member = _order_member(session, order)
    ref = member.external_id
    if not claim_once(session, f"{event.platform}:refund:{event.fields['refund_id']}"):
        return Outcome(reason="this refund was already applied", member_ref=ref)
    at = instant(event.fields["refunded_at"], "refunded_at") if event.fields.get("refunded_at") else utcnow()
    text = event.fields.get("amount") or ""
    # An order read already refunded or cancelled after payment stands until its state applies (paid_first).
    stands = order.status == OrderStatus.PLACED or order.applied_status is None
    if not text or not stands:
        order.status = OrderStatus.REFUNDED if order.status == OrderStatus.PLACED else order.status
        apply_pending_orders(session, runtime.program, now=utcnow())
        return Outcome(reason="the whole order refunded", member_ref=ref)
    amount = refunded_merchandise(text, event.fields.get("tax") or "0", order.prices_include_tax)
    outcome = reverse_refund(session, member, order, refund_id=event.fields["refund_id"], amount=amount, now=at)
    recalculate_tier(session, runtime.program, member, now=max(at, utcnow()), cause=f"refund:{order_id}")
    return Outcome(reason=f"{outcome.taken_back} points taken back" + (
        f", {outcome.not_recoverable} already spent" if outcome.not_recoverable else ""), member_ref=ref)


def _apply_redemption(session: Session, runtime: Runtime, event: ShopEvent) -> Outcome:
    if _member(session, event.member_id) is None:
        return Outcome(InboxState.WAITING, f"waits for customer {event.member_id}",
                       waiting_for=f"member:{event.member_id}", member_ref=event.member_id)
    apply_record(session, "points", dict(event.fields), source=f"shop:{event.platform}", program=runtime.program)
    return Outcome(member_ref=event.member_id)


def _apply_member_deleted(session: Session, runtime: Runtime, event: ShopEvent) -> Outcome:
    return Outcome(reason="the shop deleted the customer: their record stays until a privacy request or "
                          "`loyalty member erase`", member_ref=event.member_id)


def _apply_order_deleted(session: Session, runtime: Runtime, event: ShopEvent) -> Outcome:
    order = session.scalars(select(Order).where(Order.order_id == event.fields["order_id"])).first()
    if order is None:
        return Outcome(reason="an order we never had")
    order.status = OrderStatus.CANCELLED
    apply_pending_orders(session, runtime.program, now=utcnow())
    return Outcome(reason="deleted in the shop: cancelled", member_ref=_order_member(session, order).external_id)


def _apply_erase_member(session: Session, runtime: Runtime, event: ShopEvent) -> Outcome:
    member = _member(session, event.member_id)
    if member is None:
        return Outcome(reason="no such member: nothing held", erase_body=True)
    erase_member(session, member, actor=f"shop:{event.platform}", reason=f"{event.platform} privacy request",
                 now=utcnow())
    return Outcome(reason="erased", member_ref=event.member_id, erase_body=True)


def _apply_erase_shop(session: Session, runtime: Runtime, event: ShopEvent) -> Outcome:
    now = utcnow()
    members = session.scalars(select(Member).where(Member.erased_at.is_(None))).all()
    for member in members:
        erase_member(session, member, actor=f"shop:{event.platform}", reason=f"{event.platform} shop erasure request",
                     now=now)
    session.execute(update(InboxEntry).values(body=ERASED_BODY))
    return Outcome(reason=f"the shop's erasure request: {len(members)} members erased", erase_body=True)


def _apply_export_member(session: Session, runtime: Runtime, event: ShopEvent) -> Outcome:
    member = _member(session, event.member_id)
    if member is None:
        return Outcome(reason="no such member: nothing held")
    session.add(AuditEntry(actor=f"shop:{event.platform}", action=AuditAction.MEMBER_EXPORT_REQUESTED,
                           member_id=member.id,
                           reason=f"{event.platform} data request {event.fields.get('request_id') or ''}".strip()))
    return Outcome(reason="export requested: `loyalty member export` writes it", member_ref=event.member_id)


_HANDLERS: dict[EventKind, Callable[[Session, Runtime, ShopEvent], Outcome]] = {
    EventKind.MEMBER: _apply_member,
    EventKind.MEMBER_DELETED: _apply_member_deleted,
    EventKind.ORDER: _apply_order,
    EventKind.ORDER_DELETED: _apply_order_deleted,
    EventKind.REFUND: _apply_refund,
    EventKind.REDEMPTION: _apply_redemption,
    EventKind.ERASE_MEMBER: _apply_erase_member,
    EventKind.ERASE_SHOP: _apply_erase_shop,
    EventKind.EXPORT_MEMBER: _apply_export_member,
}


class Notifier:
    """How the ``web`` process hands new entries on once they are committed (call it with their ids);
    :meth:`close` at the process's shutdown releases what it holds."""

    def __call__(self, ids: list[int]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to release by default."""


class _Enqueue(Notifier):
    """With Redis: to the queue (a lost message is caught up by the sweep)."""

    def __call__(self, ids: list[int]) -> None:
        try:
            for entry_id in ids:
                apply_inbox_entry.send(entry_id)
        except Exception as error:  # noqa: BLE001 - stored already: the sweep enqueues it again
            log.warning("inbox.enqueue_failed", entries=len(ids), error=type(error).__name__)


class _ApplyHere(Notifier):
    """On the embedded default, which has no worker process: applied right there, in the request's
    thread, with a runtime the first request builds; :meth:`close` disposes of it (its engine's
    connections), and a later request would build another."""

    def __init__(self, settings: Settings) -> None:
        import threading

        self._settings = settings
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()

    def __call__(self, ids: list[int]) -> None:
        from workers.runtime import build_runtime

        with self._lock:
            if self._runtime is None:
                self._runtime = build_runtime(self._settings, check_keys=False)
            runtime = self._runtime
        pending = list(ids)
        while pending:
            pending.extend(apply_entry(pending.pop(0), runtime))

    def close(self) -> None:
        with self._lock:
            runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.close()


def notifier(settings: Settings) -> Notifier:
    """How the ``web`` process hands new entries on once they are committed: to the queue when there is
    Redis (a lost message is caught up by the sweep); on the embedded default, which has no worker
    process, they are applied right there, in the request's thread. The web app closes it at shutdown."""
    if settings.redis_url is not None:
        from workers.broker import build_broker, install_broker

        install_broker(build_broker(settings))
        return _Enqueue()
    return _ApplyHere(settings)


@dramatiq.actor(broker=_placeholder, queue_name=INBOX_QUEUE, max_retries=3)
def sweep_inbox() -> None:
    """Enqueue again the entries left ``received`` for over ``LOYALTY_INBOX_STALE_AFTER_SECONDS`` (a
    minute by default: a flushed Redis, a killed web process between its commit and its enqueue);
    applying is idempotent, so a double is harmless."""
    from datetime import timedelta

    from models.inbox import stale_received

    runtime = get_runtime()
    with runtime.sessions() as session:
        ids = stale_received(session, utcnow() - timedelta(seconds=runtime.settings.inbox_stale_after_seconds))
    for entry_id in ids:
        apply_inbox_entry.send(entry_id)
    if ids:
        log.info("inbox.swept", entries=len(ids))


ACTORS: list[dramatiq.Actor[Any, Any]] = [apply_inbox_entry, sweep_inbox]
