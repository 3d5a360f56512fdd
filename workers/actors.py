"""The queue actors: thin wrappers that take ids and plain values and call the work functions.

They are declared on a placeholder broker; :func:`workers.broker.install_broker` moves them to
the real one (Redis or in-process) once the settings are known, so importing this module reads
no environment.

Retries: dramatiq's own (bounded here) only cover crashes such as a database away; a provider's
retryable error is handled by the delivery itself, which puts the row back with a later
``send_at`` and enqueues it again with that delay.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import dramatiq
import structlog
from dramatiq.brokers.stub import StubBroker

from core.calendar import iso_utc, parse_instant
from models.base import utcnow
from models.db import transaction
from models.webhooks import prune_processed_webhooks
from services.program_ops import apply_pending_orders, expire_due_lots, recalculate_all_tiers
from workers import shutdown
from workers.channels.sms_feedback import apply_early_statuses
from workers.delivery import deliver
from workers.planning import plan_campaign, plan_context
from workers.runtime import get_runtime
from workers.sweeper import sweep

log = structlog.get_logger("loyalty.actors")

_placeholder = StubBroker()

DELIVERY_QUEUE = "deliveries"
CAMPAIGN_QUEUE = "campaigns"


@dramatiq.actor(broker=_placeholder, queue_name=CAMPAIGN_QUEUE, max_retries=5, min_backoff=1_000, max_backoff=60_000)
def evaluate_campaign(campaign_id: str, at: str) -> None:
    """Plan campaign ``campaign_id`` at instant ``at`` (ISO 8601), then enqueue its deliveries."""
    runtime = get_runtime()
    campaign = runtime.campaigns.campaigns.get(campaign_id)
    if campaign is None or not campaign.enabled:
        log.warning("campaign.not_evaluated", campaign=campaign_id, reason="unknown or disabled")
        return
    refused = runtime.refusal(campaign_id)
    if refused is not None:  # as the clock reports a broken definition: loudly, on every tick, nothing planned
        log.error("campaign.broken", campaign=campaign_id, problem=refused)
        return
    instant = parse_instant(at)
    with transaction(runtime.sessions) as session:
        plan = plan_campaign(session, campaign, plan_context(session, runtime.campaigns, runtime.program, instant))
    enqueue_deliveries(plan.planned_ids, as_of=instant, batch_size=runtime.settings.delivery_batch_size)
    log.info("campaign.planned", campaign=campaign_id, at=at, planned=len(plan.planned_ids), skipped=plan.skipped)


@dramatiq.actor(broker=_placeholder, queue_name=DELIVERY_QUEUE, max_retries=5, min_backoff=1_000, max_backoff=30_000)
def deliver_batch(delivery_ids: list[int], as_of: str | None = None) -> None:
    """Deliver a batch of planned deliveries; ones not due yet are enqueued again for their time."""
    instant = parse_instant(as_of) if as_of else None
    report = deliver(get_runtime(), delivery_ids, as_of=instant, stopping=shutdown.stopping.is_set)
    if report.unstarted:  # the worker is stopping: the rest waits in the queue for the next one
        deliver_batch.send(report.unstarted, as_of)
        log.info("delivery.handed_back", count=len(report.unstarted))
    reference = instant or utcnow()
    by_time: dict[datetime, list[int]] = {}
    for delivery_id, due in report.later.items():
        by_time.setdefault(due, []).append(delivery_id)
    for due, ids in by_time.items():
        delay_ms = max(int((due - reference).total_seconds() * 1000), 0)
        deliver_batch.send_with_options(args=(ids, iso_utc(due) if instant else None), delay=delay_ms)


@dramatiq.actor(broker=_placeholder, queue_name=CAMPAIGN_QUEUE, max_retries=3)
def sweep_unfinished() -> None:
    """Put back planned deliveries whose message was lost; mark abandoned sends ``unknown``; apply the
    Twilio status callbacks that came before their message's SID was recorded."""
    runtime = get_runtime()
    result = sweep(runtime, utcnow())
    enqueue_deliveries(result.requeued_ids, as_of=None, batch_size=runtime.settings.delivery_batch_size)
    if result.requeued_ids or result.marked_unknown:
        log.warning("sweeper.repaired", requeued=len(result.requeued_ids), marked_unknown=result.marked_unknown)
    applied = apply_early_statuses(runtime.sessions)
    if applied:
        log.info("twilio.early_statuses_applied", count=applied)


@dramatiq.actor(broker=_placeholder, queue_name=CAMPAIGN_QUEUE, max_retries=3)
def maintain_points() -> None:
    """Apply orders not applied yet (a safety net for lost events), settle the redemptions a crash left
    pending (their code made in the shop, or their points given back), then expire the lots now due."""
    from workers.redemptions import finish_pending

    runtime = get_runtime()
    applied = expired = 0
    while True:
        with transaction(runtime.sessions) as session:
            batch = apply_pending_orders(session, runtime.program, now=utcnow())
        applied += batch
        if not batch:
            break
    settled = finish_pending(runtime)
    while True:
        with transaction(runtime.sessions) as session:
            batch = expire_due_lots(session, now=utcnow())
        expired += batch
        if not batch:
            break
    log.info("points.maintained", orders_applied=applied, lots_expired=expired, redemptions_settled=settled)


@dramatiq.actor(broker=_placeholder, queue_name=CAMPAIGN_QUEUE, max_retries=3, time_limit=3_600_000)
def recalculate_tiers() -> None:
    """The nightly recalculation: upgrades missed by events, and downgrades after their grace period."""
    runtime = get_runtime()
    with transaction(runtime.sessions) as session:
        changes = recalculate_all_tiers(session, runtime.program, now=utcnow())
    log.info("tiers.recalculated", changes=changes)


@dramatiq.actor(broker=_placeholder, queue_name=CAMPAIGN_QUEUE, max_retries=3)
def prune_webhooks() -> None:
    """Nightly: forget provider webhooks handled long ago (kept only to recognise duplicates)."""
    runtime = get_runtime()
    with transaction(runtime.sessions) as session:
        pruned = prune_processed_webhooks(session, utcnow())
    log.info("webhooks.pruned", count=pruned)


def enqueue_deliveries(ids: list[int], *, as_of: datetime | None, batch_size: int) -> int:
    """Enqueue ``ids`` in batches (one message per batch); call only after the planning commit."""
    stamp = iso_utc(as_of) if as_of else None
    count = 0
    for start in range(0, len(ids), batch_size):
        deliver_batch.send(ids[start : start + batch_size], stamp)
        count += 1
    return count


ACTORS: list[dramatiq.Actor[Any, Any]] = [evaluate_campaign, deliver_batch, sweep_unfinished, maintain_points,
                                          recalculate_tiers, prune_webhooks]
