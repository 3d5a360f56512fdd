"""Two clock processes at once (a second `clock` started by mistake) for an hour of simulated
ticks, one a minute, while a worker evaluates and delivers: every member has one email."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from models.delivery import Delivery
from models.member import Member
from tests.conftest import REDIS_URL
from tests.support.chaos import drain, email_tally, wait_for
from tests.support.providers import bulk_members

START = datetime(2027, 6, 15, 3, 10, tzinfo=UTC)
MINUTES = 60
END = START + timedelta(minutes=MINUTES)
#: 09:00 local falls before the hour (Dhaka, Yangon, Eucla), inside it (Kathmandu 03:15Z, Kolkata
#: 03:30Z, Karachi 04:00Z) or after it (Tehran 05:30Z: nothing may be sent there yet).
ZONES = ["Asia/Dhaka", "Asia/Yangon", "Australia/Eucla", "Asia/Kathmandu", "Asia/Kolkata", "Asia/Karachi",
         "Asia/Tehran"]
MEMBERS = 2_000


def local_nine(zone: str) -> datetime:
    return datetime(2027, 6, 15, 9, 0, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def test_two_clocks_for_an_hour_of_ticks_send_one_email_per_member(
        pg_engine, pg_database, redis_namespace, counting_smtp, scenario):
    scenario.configure(database_url=pg_database, smtp_url=counting_smtp.url, redis_url=REDIS_URL,
                       namespace=redis_namespace)
    bulk_members(scenario.sessions, [
        {"external_id": f"C{i:05d}", "email": f"c{i:05d}@members.example", "timezone": ZONES[i % len(ZONES)],
         "birth_month": 6, "birth_day": 15, "tier": ("bronze", "silver", "gold")[i % 3]} for i in range(MEMBERS)])
    due = {f"C{i:05d}" for i in range(MEMBERS) if local_nine(ZONES[i % len(ZONES)]) <= END}
    assert 0 < len(due) < MEMBERS

    started = time.monotonic()
    worker = scenario.worker("worker")
    clocks = [scenario.clock(f"clock-{n}", start=START, minutes=MINUTES, pause=0.1) for n in (1, 2)]
    for clock in clocks:
        wait_for(lambda clock=clock: clock.popen.poll() is not None, 180, f"{clock.name} to tick {MINUTES + 1} times")
        assert clock.popen.returncode == 0, clock.log()[-3000:]
        assert clock.log().count('"clock.tick"') == MINUTES + 1
    evaluations = 2 * (MINUTES + 1)
    wait_for(lambda: worker.log().count('"campaign.planned"') >= evaluations, 300,
             f"the worker to evaluate the {evaluations} ticks")
    states = drain(scenario.sessions, sweep=None, timeout=300)

    with scenario.sessions() as session:
        rows = session.execute(select(Member.external_id, Member.timezone, Delivery.occurrence_key, Delivery.send_at,
                                      Delivery.planned_at).join(Member, Member.id == Delivery.member_id)).all()
    assert {row.external_id for row in rows} == due  # nobody in Tehran yet, everybody else
    assert all(row.send_at == local_nine(row.timezone) for row in rows)
    lags = [row.planned_at - max(row.send_at, START) for row in rows]
    assert min(lags) >= timedelta(0)  # never planned before the member's 09:00
    result = email_tally("two clocks for an hour of ticks", scenario, counting_smtp,
                         [row.occurrence_key for row in rows], started,
                         notes=f"{evaluations} evaluations, planned at most {max(lags)} after it was due; "
                               f"final states {dict(states)}")
    result.assert_clean()
    assert result.accepted == len(due)
    assert "campaign.broken" not in worker.log()
