"""The Mailchimp bulk sync as a queue actor, enqueued by the clock every 15 minutes; and the bounce
mailbox's reading, every 5 minutes when ``LOYALTY_BOUNCE_IMAP_URL`` is set.

It takes no arguments: each run sends the members changed since their last sync (see
``workers/mailchimp_sync.py``). A run that fails is not retried by dramatiq: the next one, a
quarter of an hour later, picks up whatever was left, and a PostgreSQL advisory lock keeps two
runs (two clocks, a slow run) from syncing at once.
"""

from __future__ import annotations

import dramatiq
import structlog

from workers.actors import CAMPAIGN_QUEUE, _placeholder
from workers.channels.email_feedback import FeedbackProblem
from workers.email_bounces import read_mailbox
from workers.runtime import get_runtime

log = structlog.get_logger("loyalty.mailchimp")


@dramatiq.actor(broker=_placeholder, queue_name=CAMPAIGN_QUEUE, max_retries=0, time_limit=3_600_000)
def sync_mailchimp_members() -> None:
    """Upsert the members changed since the last sync into the Mailchimp audience, 500 per call."""
    runtime = get_runtime()
    if runtime.settings.mailchimp is None:
        log.info("mailchimp.not_configured", detail="MAILCHIMP_API_KEY is not set: nothing to sync")
        return
    from workers.mailchimp_sync import sync_members  # the Mailchimp SDK and requests: where Mailchimp is configured

    report = sync_members(runtime)
    if report.skipped:
        log.info("mailchimp.sync_skipped", reason="another sync is running")


@dramatiq.actor(broker=_placeholder, queue_name=CAMPAIGN_QUEUE, max_retries=0, time_limit=600_000)
def read_bounce_mailbox() -> None:
    """Apply the bounces and complaints waiting in the bounce mailbox (a run that fails is not
    retried: the next one, five minutes later, reads what is still unseen)."""
    runtime = get_runtime()
    if runtime.settings.feedback.imap is None:
        log.info("bounces.not_configured", detail="LOYALTY_BOUNCE_IMAP_URL is not set: nothing to read")
        return
    try:
        report = read_mailbox(runtime.settings, runtime.sessions)
    except FeedbackProblem as problem:
        log.warning("bounces.mailbox_failed", problem=str(problem))
        return
    log.info("bounces.mailbox_read", read=report.read, reports=report.reports, effects=report.effects,
             unreadable=report.unreadable)


ACTORS = [sync_mailchimp_members, read_bounce_mailbox]
