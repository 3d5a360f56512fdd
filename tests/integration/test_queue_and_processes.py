"""The real moving parts: two `loyalty run` processes racing, and a dramatiq worker on the real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime

from dramatiq import Worker
from sqlalchemy import func, select

from core.settings import load_settings
from models.delivery import Delivery
from models.points import PointEntry
from schedules.clock import enqueue_tick
from tests.conftest import REDIS_URL, REPO_ROOT
from tests.support.members import add_members, make_member
from workers.broker import build_broker, install_broker

UTC = UTC


def loyalty(env: dict, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "loyalty.cli", *args],
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_two_run_processes_at_once_send_one_email_and_grant_points_once_per_member(env, pg_sessions, smtp_sink):
    members = [make_member(f"R{i:03d}", tier="gold") for i in range(120)]
    add_members(pg_sessions, *members)
    at = "2027-06-15T12:00:00Z"
    first, second = loyalty(env, "run", "--at", at), loyalty(env, "run", "--at", at)
    outputs = [first.communicate(timeout=120), second.communicate(timeout=120)]
    assert first.returncode == 0 and second.returncode == 0, outputs

    recipients = [m["To"].addresses[0].addr_spec for m in smtp_sink.messages]
    assert len(recipients) == 120
    assert len(set(recipients)) == 120
    with pg_sessions() as session:
        assert session.scalar(select(func.count()).select_from(PointEntry)) == 120
        assert session.scalar(select(func.sum(PointEntry.points))) == 120 * 500
        assert set(session.scalars(select(Delivery.state))) == {"sent"}


def test_a_dramatiq_worker_on_redis_plans_and_delivers_a_clock_tick(env, pg_sessions, smtp_sink, redis_namespace, runtime):
    add_members(
        pg_sessions,
        *(make_member(f"Q{i:03d}", timezone_name="America/Los_Angeles") for i in range(30)),
        make_member("QSKIP", timezone_name="America/Los_Angeles", email_opt_in=False),
    )
    settings = load_settings({**env, "REDIS_URL": REDIS_URL})
    broker = install_broker(build_broker(settings, namespace=redis_namespace))
    worker = Worker(broker, worker_threads=4, worker_timeout=100)  # stops in 0.1 s, not 1.3
    worker.start()
    try:
        enqueued = enqueue_tick(settings, datetime(2027, 6, 15, 18, 0, 30, tzinfo=UTC))  # 11:00 in Los Angeles
        assert enqueued == ["birthday", "member_day", "points_expiring", "tier_upgrade", "winback"]
        deadline = time.monotonic() + 60
        while len(smtp_sink.messages) < 30 and time.monotonic() < deadline:
            time.sleep(0.1)
        broker.join("campaigns", timeout=30_000)
        broker.join("deliveries", timeout=30_000)
    finally:
        worker.stop()
        broker.close()

    assert len(smtp_sink.messages) == 30
    with pg_sessions() as session:
        states = dict(session.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).all())
        sent_at = session.scalars(select(Delivery.send_at).distinct()).all()
    assert states == {"sent": 30, "skipped": 1}
    assert sent_at == [datetime(2027, 6, 15, 16, 0, tzinfo=UTC)]  # 09:00 PDT, the member's send time


def test_two_workers_delivering_the_same_batch_send_each_email_once(runtime, pg_sessions, smtp_sink):
    import threading

    from models.db import transaction
    from workers.delivery import deliver
    from workers.planning import plan_campaign, plan_context

    add_members(pg_sessions, *(make_member(f"D{i:03d}") for i in range(60)))
    at = datetime(2027, 6, 15, 12, tzinfo=UTC)
    with transaction(pg_sessions) as session:
        ids = plan_campaign(session, runtime.campaigns.get("birthday"), plan_context(session, runtime.campaigns, runtime.program, at)).planned_ids
    reports = []
    threads = [threading.Thread(target=lambda: reports.append(deliver(runtime, ids, as_of=at))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(m["To"].addresses[0].username for m in smtp_sink.messages) == [f"d{i:03d}" for i in range(60)]
    assert sum(report.outcomes["sent"] for report in reports) == 60


def test_a_stopping_worker_ends_after_the_message_in_hand_and_leaves_the_rest_planned(runtime, pg_sessions, smtp_sink):
    from models.db import transaction
    from workers.delivery import deliver
    from workers.planning import plan_campaign, plan_context

    add_members(pg_sessions, *(make_member(f"S{i:03d}") for i in range(50)))
    at = datetime(2027, 6, 15, 12, tzinfo=UTC)
    with transaction(pg_sessions) as session:
        ids = plan_campaign(session, runtime.campaigns.get("birthday"),
                            plan_context(session, runtime.campaigns, runtime.program, at)).planned_ids
    assert len(ids) == 50

    # SIGTERM arrives while the 7th message is being sent (the sink has taken six).
    report = deliver(runtime, ids, as_of=at, stopping=lambda: len(smtp_sink.messages) >= 7)

    with pg_sessions() as session:
        states = dict(session.execute(select(Delivery.id, Delivery.state).where(Delivery.id.in_(ids))).all())
    sent = [i for i in ids if states[i] == "sent"]
    assert len(smtp_sink.messages) == len(sent) == 7
    assert sorted(report.unstarted) == sorted(set(ids) - set(sent))
    assert {states[i] for i in report.unstarted} == {"planned"}  # nothing claimed, nothing lost

    again = deliver(runtime, report.unstarted, as_of=at)  # the next worker takes the rest
    assert again.outcomes["sent"] == 43 and len(smtp_sink.messages) == 50
