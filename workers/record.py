"""Recording a delivery: its claim, its outcome, its reward, and what a provider told us of the member.

Every write of the send path is here, apart from composing (:mod:`workers.compose`, which writes
nothing) and the send itself (:mod:`workers.delivery`). All of them go through the batch's
:class:`workers.delivery_link.Link` and are guarded by the state the row is expected in, so a row
another worker has claimed or finished meanwhile is left alone:

- :func:`end_unclaimed`: a :class:`workers.compose.Skip` reached before the send, straight from
  ``planned``;
- :func:`claim`: ``planned → sending`` (SMS quiet hours put it off instead; the frequency cap is
  counted under a lock on the member's row, in the claim's transaction);
- :func:`finish` / :func:`retry_later`: the outcome of a send from ``sending`` (``sent`` with its
  reward lot, whose ledger key is the occurrence's, so it is granted once; ``failed``, ``unknown``,
  or back to ``planned`` for a later attempt), with the member's columns a provider changed and
  their audit row.
"""

from __future__ import annotations

import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Connection, insert, update
from sqlalchemy.orm import Session

from campaigns.send_views import DeliveryView, MemberView
from core.redact import redact
from models import ledger
from models.audit import AuditAction, AuditEntry
from models.base import utcnow
from models.consent import record_consent
from models.delivery import FINAL_STATES, DeliveryState, Reason
from models.member import Member
from models.points import EntryKind
from workers.channels.base import ChannelFailure, RetryableFailure
from workers.compose import Skip, is_deliberate
from workers.delivery_link import LOCK_MEMBER, RECENT_CAPPED, Link
from workers.runtime import Runtime

log = structlog.get_logger("loyalty.delivery")

RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(minutes=15)


def retry_delay(attempt: int) -> timedelta:
    """Wait before attempt ``attempt + 1``: 30 s, 1, 2, 4, 8 then 15 minutes at most."""
    return min(RETRY_BASE * (2 ** max(attempt - 1, 0)), RETRY_CAP)


@dataclass
class DeliveryReport:
    outcomes: Counter[str] = field(default_factory=Counter)  # final state → count
    reasons: Counter[str] = field(default_factory=Counter)  # skip/failure reason → count
    later: dict[int, datetime] = field(default_factory=dict)  # still planned: id → when it is due
    unstarted: list[int] = field(default_factory=list)  # not looked at: the worker is stopping
    kept_planned: Counter[str] = field(default_factory=Counter)  # campaign → due deliveries left planned (Runtime.refusal)

    def merge(self, other: DeliveryReport) -> None:
        self.outcomes.update(other.outcomes)
        self.reasons.update(other.reasons)
        self.later.update(other.later)
        self.unstarted.extend(other.unstarted)
        self.kept_planned.update(other.kept_planned)

    def count(self, state: str, reason: str | None) -> None:
        self.outcomes[state] += 1
        if reason:
            self.reasons[reason] += 1


def end_unclaimed(link: Link, delivery: DeliveryView, skip: Skip, report: DeliveryReport) -> None:
    """Record an outcome reached before the send (a skip, a template error) straight from ``planned``."""
    now = utcnow()
    detail = redact(skip.detail)
    values = {"state": skip.state, "reason": skip.reason, "detail": detail, "finished_at": now, "updated_at": now}
    moved: list[bool | None] = []
    link.retried(lambda: moved.append(link.move(delivery.id, DeliveryState.PLANNED, values)))
    if moved[-1]:
        report.count(skip.state, skip.reason)
        log.info("delivery.finished", delivery_id=delivery.id, campaign=delivery.campaign, channel=delivery.channel,
                 state=skip.state, reason=skip.reason, detail=detail, attempt=delivery.attempts)


def claim(runtime: Runtime, link: Link, delivery: DeliveryView, member: MemberView, as_of: datetime,
          report: DeliveryReport) -> bool:
    """Claim ``delivery`` for its send (``planned → sending``, committed before anything goes out).

    False when it is not to be sent now: an SMS due in the member's quiet hours (put off, unclaimed,
    to their end), the frequency cap reached (recorded ``skipped``), or another worker's claim."""
    if delivery.channel == "sms":
        allowed = runtime.program.quiet_hours.next_allowed(as_of, member.timezone)
        if allowed > as_of:  # the member's night: put off, unclaimed, to its end
            link.defer(delivery.id, allowed)
            report.later[delivery.id] = allowed
            return False
    if not link.claim(delivery.id, as_of, utcnow(), gate=_frequency_cap_gate(runtime, link, delivery, as_of, report)):
        return False
    delivery.attempts += 1
    return True


def _frequency_cap_gate(runtime: Runtime, link: Link, delivery: DeliveryView, as_of: datetime,
                        report: DeliveryReport) -> Callable[[Connection], bool] | None:
    """For a capped campaign, the check run in the claim's transaction: the member's row is locked
    while their recent marketing messages are counted; at the cap the delivery is skipped. None for
    an exempt campaign or a support send (the claim is then one statement)."""
    campaign = runtime.campaigns.campaigns.get(delivery.campaign)
    if campaign is None or campaign.frequency_cap_exempt or is_deliberate(delivery):  # a support send is not capped
        return None
    cap = runtime.program.frequency_cap

    def gate(connection: Connection) -> bool:
        connection.execute(LOCK_MEMBER, {"member_id": delivery.member_id})
        recent = connection.scalar(RECENT_CAPPED, {
            "member_id": delivery.member_id, "delivery_id": delivery.id,
            "capped": [c.id for c in runtime.campaigns.campaigns.values() if not c.frequency_cap_exempt],
            "since": as_of - timedelta(days=cap.window_days),
        })
        if (recent or 0) < cap.max_messages:
            return True
        now = utcnow()
        link.move_in(connection, delivery.id, DeliveryState.SENDING, {
            "state": DeliveryState.SKIPPED, "reason": Reason.FREQUENCY_CAP, "finished_at": now, "updated_at": now})
        report.count(DeliveryState.SKIPPED, Reason.FREQUENCY_CAP)
        return False

    return gate


def retry_later(link: Link, runtime: Runtime, delivery: DeliveryView, exc: RetryableFailure, as_of: datetime,
                report: DeliveryReport) -> None:
    """Back to ``planned`` for a later attempt, or ``failed`` once the attempts are spent."""
    if delivery.attempts >= runtime.settings.max_delivery_attempts:
        finish(link, runtime, delivery, DeliveryState.FAILED, Reason.RETRIES_EXHAUSTED,
               f"{exc.reason}: {exc.detail}", as_of, report)
    else:
        finish(link, runtime, delivery, DeliveryState.PLANNED, exc.reason, exc.detail, as_of, report,
               send_at=as_of + retry_delay(delivery.attempts))


def finish(
    link: Link,
    runtime: Runtime,
    delivery: DeliveryView,
    state: DeliveryState,
    reason: str | None,
    detail: str | None,
    as_of: datetime,
    report: DeliveryReport,
    *,
    provider_id: str | None = None,
    send_at: datetime | None = None,
    coupon_code: str | None = None,
    failure: ChannelFailure | None = None,
) -> None:
    """Record the outcome of a send (and its reward, once). Retried for a while if the database is
    away, because the send itself already happened and must not be repeated. ``reason`` is one of
    :class:`Reason` or a provider's own (``smtp_550``)."""
    detail = redact(detail)  # providers quote the address or number they refused
    now = utcnow()
    values: dict[str, Any] = {"state": state, "reason": reason, "detail": detail, "updated_at": now}
    if state in FINAL_STATES:
        values["finished_at"] = now
    if provider_id is not None:
        values["provider_message_id"] = provider_id
    if send_at is not None:
        values["send_at"] = send_at
    if coupon_code is not None:
        values["coupon_code"] = coupon_code

    credit = _reward_lot(runtime, delivery, as_of) if state == DeliveryState.SENT and delivery.reward_points else None
    then = _member_updates(delivery, failure, now) if failure is not None and failure.teaches else None
    if then is None:  # written with the next claim's commit, or alone at the end of the batch
        link.record(delivery.id, DeliveryState.SENDING, values, credit=credit)
    else:
        def move() -> None:
            link.move(delivery.id, DeliveryState.SENDING, values, credit=credit, then=then)

        link.retried(move)
    if state == DeliveryState.PLANNED:
        assert send_at is not None
        report.later[delivery.id] = send_at
    else:
        report.count(state, reason)
    log.info("delivery.finished", delivery_id=delivery.id, campaign=delivery.campaign, channel=delivery.channel,
             state=state, reason=reason, detail=detail, attempt=delivery.attempts)


def where(exc: BaseException) -> str:
    """An exception's type and the line of ours that raised it: no message (it may quote an address)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/site-packages/" not in f.filename]
    place = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}{place}"


def _member_updates(delivery: DeliveryView, failure: ChannelFailure, now: datetime) -> Callable[[Connection], None]:
    """Writes what the provider told us about the member (e.g. an invalid number), audited."""

    def write(connection: Connection) -> None:
        write_what_it_teaches(connection, delivery.member_id, failure, actor=f"provider:{delivery.channel}",
                              delivery_id=delivery.id, at=now)

    return write


def write_what_it_teaches(db: Session | Connection, member_id: int, failure: ChannelFailure, *, actor: str,
                          delivery_id: int, at: datetime) -> None:
    """What a provider's answer (at the send, or in a later status callback) teaches about the member:
    status columns, audited as ``member.updated_by_provider``, and a withdrawn consent, through
    :func:`models.consent.record_consent` like every other consent change (``optout.sms``)."""
    if failure.member_updates:
        db.execute(update(Member).where(Member.id == member_id).values(**failure.member_updates))
        db.execute(insert(AuditEntry).values(
            actor=actor, action=AuditAction.MEMBER_UPDATED_BY_PROVIDER, member_id=member_id, reason=failure.reason,
            details={"columns": sorted(failure.member_updates), "delivery_id": delivery_id}, at=at))
    if failure.withdraws is not None:
        record_consent(db, member_id, failure.withdraws.channel, granted=False, source=failure.withdraws.source,
                       at=at, actor=actor, reason=failure.reason, details={"delivery_id": delivery_id})


def _reward_lot(runtime: Runtime, delivery: DeliveryView, as_of: datetime) -> dict[str, Any]:
    """The ledger lot of a sent message's reward; its key is the occurrence's, so it is written once
    (a support resend stands for the original occurrence, whose reward is already in the ledger)."""
    campaign = runtime.campaigns.campaigns[delivery.campaign]
    return ledger.lot_values(
        member_id=delivery.member_id,
        entry_key=f"reward:{delivery.stands_for}",
        kind=EntryKind.EARN,
        points=delivery.reward_points,
        occurred_at=as_of,
        expires_at=campaign.reward.expiry(as_of) if campaign.reward is not None else None,
        source=f"campaign:{delivery.campaign}",
    )
