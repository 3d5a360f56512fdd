"""The servers under the workers go away mid-run: Redis is killed and comes back empty (every queued
message lost), PostgreSQL restarts. The same worker processes carry on; the sweeper puts back what
the queue lost. Both run on private servers: the shared ones are never touched."""

from __future__ import annotations

import secrets
import time

from sqlalchemy.exc import OperationalError

from tests.conftest import REDIS_URL
from tests.support.chaos import (
    birthday_members,
    drain,
    email_tally,
    planned_keys,
    rewards_once,
    sweeper_work,
    wait_accepted,
)

MEMBERS = 2_000


def test_redis_flushed_and_restarted_mid_run_the_sweeper_puts_back_what_the_queue_lost(
        pg_engine, pg_database, private_redis, counting_smtp, scenario):
    # Batches of 10, so that most of the messages wait in Redis rather than in the worker's prefetch
    # (64 messages) when Redis goes: those are the ones the flush loses.
    scenario.configure(database_url=pg_database, smtp_url=counting_smtp.url, redis_url=private_redis.url,
                       namespace="loyalty-chaos", LOYALTY_DELIVERY_BATCH_SIZE="10")
    _, now = birthday_members(scenario.sessions, MEMBERS, prefix="R")
    started = time.monotonic()
    assert len(scenario.plan("birthday", now)) == MEMBERS
    worker = scenario.worker("worker")
    at_flush = wait_accepted(counting_smtp, MEMBERS * 3 // 10, 300, worker)
    private_redis.restart(down_seconds=1.0)  # killed, then a new, empty server on the same port

    states = drain(scenario.sessions, sweep=scenario.sweep, timeout=300)

    assert worker.alive(), "the worker must recover without a restart of its own"
    requeued, marked = sweeper_work(worker)
    result = email_tally("Redis flushed and restarted mid-run", scenario, counting_smtp, planned_keys(scenario),
                         started, notes=f"flushed at {at_flush} accepted; the sweeper requeued {requeued}; "
                                        f"final states {dict(states)}")
    result.assert_clean()
    assert requeued > 0  # the flush did lose queued messages, and the sweeper put them back
    assert result.unknown == 0 and marked == 0  # nothing was interrupted mid-send: the queue alone was lost
    assert rewards_once(scenario) == (states["sent"], states["sent"])


def test_postgresql_restarted_three_times_mid_run_the_same_workers_finish(
        private_postgres, redis_namespace, counting_smtp, scenario):
    database = private_postgres.create_database(f"chaos_{secrets.token_hex(4)}")
    scenario.configure(database_url=database, smtp_url=counting_smtp.url, redis_url=REDIS_URL,
                       namespace=redis_namespace)
    _, now = birthday_members(scenario.sessions, MEMBERS, prefix="P")
    started = time.monotonic()
    assert len(scenario.plan("birthday", now)) == MEMBERS
    worker = scenario.worker("worker")
    restarted_at = []
    for share in (3, 5, 7):  # three times, at 30%, 50% and 70%: every connection is cut each time
        restarted_at.append(wait_accepted(counting_smtp, MEMBERS * share // 10, 300, worker))
        private_postgres.restart("fast")

    states = drain(scenario.sessions, sweep=scenario.sweep, timeout=300, database_errors=(OperationalError,))

    assert worker.alive(), "the worker must recover without a restart of its own"
    requeued, marked = sweeper_work(worker)
    result = email_tally("PostgreSQL restarted 3 times mid-run", scenario, counting_smtp, planned_keys(scenario),
                         started, notes=f"restarted at {restarted_at} accepted; the sweeper requeued {requeued} "
                                        f"and marked {marked} unknown; final states {dict(states)}")
    result.assert_clean()
    # A restart of a second or so may not cost an email: a delivery the SMTP server never received
    # must not end "unknown" (claimed, then the database went away before the send; the claim has
    # to be released, see the report on workers/delivery.py _deliver_one).
    assert result.unknown == 0, f"{result.unknown} email(s) never sent, recorded {dict(result.reasons)}"
    assert rewards_once(scenario) == (states["sent"], states["sent"])
