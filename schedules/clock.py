"""The ``clock`` process: every few minutes, enqueue "evaluate campaign C at T" for each campaign.

It never evaluates an audience itself. Jobs have stable ids, run in UTC, coalesce missed runs and
never overlap; a second clock started by mistake only enqueues duplicate evaluations, which the
send ledger's occurrence keys make harmless. A broken definition does not stop the others: it is
reported at start and on every tick.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime

import structlog
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from campaigns.loader import load_campaigns
from core.calendar import iso_utc
from core.settings import Settings

log = structlog.get_logger("loyalty.clock")


def tick_instant(now: datetime | None = None) -> datetime:
    """The tick's instant, to the minute, so two clocks at the same minute enqueue the same thing."""
    return (now or datetime.now(UTC)).replace(second=0, microsecond=0)


def enqueue_tick(settings: Settings, at: datetime | None = None) -> list[str]:
    """Enqueue one evaluation per enabled campaign; returns the campaign ids enqueued."""
    from workers.actors import evaluate_campaign

    campaigns = load_campaigns(settings.campaigns_dir)
    for problem in campaigns.errors:
        log.error("campaign.broken", problem=str(problem))
    instant = iso_utc(tick_instant(at))
    enqueued = []
    for campaign in campaigns.enabled:
        evaluate_campaign.send(campaign.id, instant)
        enqueued.append(campaign.id)
    log.info("clock.tick", at=instant, campaigns=enqueued, broken=len(campaigns.errors))
    return enqueued


def enqueue_sweep() -> None:
    from workers.actors import sweep_unfinished

    sweep_unfinished.send()


def enqueue_points_maintenance() -> None:
    from workers.actors import maintain_points

    maintain_points.send()


def enqueue_tier_recalculation() -> None:
    from workers.actors import recalculate_tiers

    recalculate_tiers.send()


def enqueue_webhook_pruning() -> None:
    from workers.actors import prune_webhooks

    prune_webhooks.send()


def enqueue_inbox_sweep() -> None:
    from workers.inbox import sweep_inbox

    sweep_inbox.send()


def enqueue_mailchimp_sync() -> None:
    from workers.sync_actors import sync_mailchimp_members

    sync_mailchimp_members.send()


def enqueue_bounce_mailbox_read() -> None:
    from workers.sync_actors import read_bounce_mailbox

    read_bounce_mailbox.send()


def enqueue_shop_poll() -> None:
    from workers.shop_sync import poll_shops

    poll_shops.send()


def enqueue_shop_loyalty_sync() -> None:
    from workers.shop_loyalty import sync_shop_customers

    sync_shop_customers.send()


def build_scheduler(settings: Settings, *, tick_minutes: int, sweep_minutes: int = 5) -> BlockingScheduler:
    scheduler = BlockingScheduler(
        timezone=UTC,
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 120},
    )
    scheduler.add_job(enqueue_tick, IntervalTrigger(minutes=tick_minutes, timezone=UTC),
                      args=(settings,), id="campaigns.tick", replace_existing=True, next_run_time=datetime.now(UTC))
    scheduler.add_job(enqueue_sweep, IntervalTrigger(minutes=sweep_minutes, timezone=UTC),
                      id="deliveries.sweep", replace_existing=True)
    scheduler.add_job(enqueue_inbox_sweep, IntervalTrigger(seconds=settings.inbox_stale_after_seconds,
                                                           timezone=UTC),
                      id="inbox.sweep", replace_existing=True)
    scheduler.add_job(enqueue_points_maintenance, IntervalTrigger(minutes=15, timezone=UTC),
                      id="points.maintain", replace_existing=True)
    scheduler.add_job(enqueue_tier_recalculation, CronTrigger(hour=2, minute=30, timezone=UTC),
                      id="tiers.recalculate", replace_existing=True)
    scheduler.add_job(enqueue_webhook_pruning, CronTrigger(hour=3, minute=15, timezone=UTC),
                      id="webhooks.prune", replace_existing=True)
    if settings.mailchimp is not None:
        scheduler.add_job(enqueue_mailchimp_sync, IntervalTrigger(minutes=15, timezone=UTC),
                          id="mailchimp.sync", replace_existing=True)
    if settings.feedback.imap is not None:
        scheduler.add_job(enqueue_bounce_mailbox_read, IntervalTrigger(minutes=5, timezone=UTC),
                          id="bounces.read_mailbox", replace_existing=True)
    if settings.shop.woocommerce is not None or settings.shop.prestashop is not None:
        scheduler.add_job(enqueue_shop_poll, IntervalTrigger(minutes=settings.shop.poll_minutes, timezone=UTC),
                          id="shop.poll", replace_existing=True)
    if settings.shop.shopify is not None or settings.shop.woocommerce is not None:
        scheduler.add_job(enqueue_shop_loyalty_sync, IntervalTrigger(minutes=15, timezone=UTC),
                          id="shop.loyalty_sync", replace_existing=True)
    return scheduler


def run_clock(settings: Settings) -> None:
    from workers.broker import build_broker, install_broker

    if settings.redis_url is None:
        log.warning("clock.in_process_queue", detail="REDIS_URL is not set: ticks go to an in-process queue no worker reads")
    install_broker(build_broker(settings))
    campaigns = load_campaigns(settings.campaigns_dir)
    for problem in campaigns.errors:
        log.error("campaign.broken", problem=str(problem))
    tick_minutes = settings.tick_minutes
    log.info("clock.start", campaigns=sorted(c.id for c in campaigns.enabled), tick_minutes=tick_minutes)
    scheduler = build_scheduler(settings, tick_minutes=tick_minutes)

    def stop(signum, _frame):  # SIGTERM from the platform: finish the job in hand, then exit
        log.info("clock.stop", signal=signal.Signals(signum).name)
        scheduler.shutdown(wait=True)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    scheduler.start()
