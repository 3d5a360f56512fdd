"""A worker dies in the middle of 2,000 birthday emails (kill -9), or is stopped (SIGTERM); a new
one is started and the sweeper runs until nothing is left: every member has the email once, or a
recorded reason why we cannot know."""

from __future__ import annotations

import time

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

MEMBERS = 2_000  # the kill lands after 600 accepted, 1,400 still to send by 4 threads
PROCESSES, THREADS = 1, 4


def start(scenario, pg_database, redis_namespace, smtp, prefix):
    scenario.configure(database_url=pg_database, smtp_url=smtp.url, redis_url=REDIS_URL, namespace=redis_namespace)
    _, now = birthday_members(scenario.sessions, MEMBERS, prefix=prefix)
    started = time.monotonic()
    planned = scenario.plan("birthday", now)
    assert len(planned) == MEMBERS
    return started


def test_kill_9_a_worker_mid_delivery_then_a_new_one_and_the_sweeper_finish(
        pg_engine, pg_database, redis_namespace, counting_smtp, scenario):
    started = start(scenario, pg_database, redis_namespace, counting_smtp, "K")
    first = scenario.worker("worker-1", processes=PROCESSES, threads=THREADS)
    at_kill = wait_accepted(counting_smtp, MEMBERS * 3 // 10, 900, first)
    first.kill()

    second = scenario.worker("worker-2", processes=PROCESSES, threads=THREADS)
    # The dead worker's messages stay in its queue until dramatiq's maintenance gives them back (a minute
    # later): the new worker is idle until the sweeper puts them back, and the sends it left in hand wait
    # for the threshold (5 s). A sweep 1 s after the states stop moving, every 2 s, not 3 and 6.
    states = drain(scenario.sessions, sweep=scenario.sweep, timeout=900, idle_seconds=1, sweep_every=2)

    requeued, marked = sweeper_work(second)
    result = email_tally("kill -9 a worker mid-run", scenario, counting_smtp, planned_keys(scenario), started,
                         notes=f"killed at {at_kill} accepted; the sweeper requeued {requeued} and marked {marked} "
                               f"unknown; final states {dict(states)}")
    result.assert_clean()
    assert set(result.reasons) <= {"unknown:interrupted_while_sending"}
    assert result.unknown <= PROCESSES * THREADS  # at most the messages in hand when it died
    assert rewards_once(scenario) == (states["sent"], states["sent"])


def test_sigterm_the_workers_mid_delivery_then_a_new_one_finishes(
        pg_engine, pg_database, redis_namespace, counting_smtp, scenario):
    started = start(scenario, pg_database, redis_namespace, counting_smtp, "T")
    first = scenario.worker("worker-1", processes=PROCESSES, threads=THREADS)
    at_stop = wait_accepted(counting_smtp, MEMBERS * 3 // 10, 900, first)
    took = first.terminate(timeout=40)

    second = scenario.worker("worker-2", processes=PROCESSES, threads=THREADS)
    # dramatiq puts back the messages its threads had not started, but not those still in its consumer's
    # prefetch cache: they wait in the stopped worker's queue until dramatiq's maintenance (a minute) or
    # the sweeper, as after a kill. The same sweeps as there.
    states = drain(scenario.sessions, sweep=scenario.sweep, timeout=900, idle_seconds=1, sweep_every=2)

    requeued, marked = sweeper_work(second)
    result = email_tally("SIGTERM the workers mid-run", scenario, counting_smtp, planned_keys(scenario), started,
                         notes=f"stopped at {at_stop} accepted, exited {took:.1f} s after SIGTERM; the sweeper "
                               f"requeued {requeued} and marked {marked} unknown; final states {dict(states)}")
    result.assert_clean()
    assert result.unknown == 0 and marked == 0  # a graceful stop finishes the messages in hand
    assert took < 30  # within the platform's grace period (Heroku: SIGKILL 30 s after SIGTERM)
    assert rewards_once(scenario) == (states["sent"], states["sent"])
