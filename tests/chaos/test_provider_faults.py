"""The providers fail 20% of calls (500 and 429, or 451 and 421 for SMTP) and time out on 5%, while
real workers deliver a birthday gift by email, SMS (Twilio) and Mailchimp: every message is
accepted once, or recorded with a reason; none is ever accepted twice.

The retries' waits (30 s, 1, 2, 4, 8 minutes) are passed in simulated time: whenever the workers
are idle, the deliveries put back for later are enqueued for the instant they are due, as the
worker's own delayed message would be once its delay is over.
"""

from __future__ import annotations

import secrets
import shutil
import time
from datetime import UTC, datetime

import pytest
import redis
from sqlalchemy import select

from core.calendar import iso_utc
from loyalty.standins.fault import Faults
from loyalty.standins.mailchimp_server import DEFAULT_API_KEY, MailchimpServer
from loyalty.standins.twilio_server import (
    DEFAULT_AUTH_TOKEN,
    DEFAULT_MESSAGING_SERVICE_SID,
    TwilioServer,
)
from models.delivery import Delivery
from models.member import Member
from tests.conftest import REDIS_URL, REPO_ROOT
from tests.support.chaos import SENDER, CountingSmtp, drain, ledger, tally
from tests.support.providers import MERGE_FIELDS, bulk_members
from workers.channels.email import message_id_for
from workers.rate_limit import twilio_rate_key

AT = datetime(2027, 6, 15, 12, 0, tzinfo=UTC)  # 14:00 in Paris on the members' birthday
MEMBERS = 1_200  # 400 a channel: still dozens of each fault (asserted below)
#: Deliveries per queue message as planned: the worker's 8 threads each take a message and
#: deliver its deliveries one after another, so with batches of 100 a round of retries (100-200 due
#: at one instant) went through one or two threads, each waiting out its time-outs in turn.
BATCH = 20
#: Deliveries per queue message when a round of retries is put back: the later rounds are small (100
#: to a few due at one instant), so in messages of 20 they went through a few of the 8 threads.
RETRY_BATCH = 5
#: Every client's time-out (SMTP_URL's ?timeout=, TWILIO_TIMEOUT_SECONDS, MAILCHIMP_TIMEOUT_SECONDS): a worker
#: thread waits out each injected time-out in full, about 130 of them in a run, so at 2 s (SMTP) and 1 s they
#: were over half of it. 0.25 s is still far above a local answer (milliseconds); the stand-ins hold for 4 s.
#: A late answer taken for a time-out would show in the tally's notes ("recorded unknown although the
#: provider has them" beyond the SMTP server's timeout_after_data): none at 0.25 s, even beside CPU burners.
TIMEOUT = "0.25"
ACCOUNT_SID = "AC" + secrets.token_hex(16)  # a rate-limiter key of its own on the shared Redis

CAMPAIGN = """\
id: {id}
kind: birthday
name: Birthday gift by {channel}
send_time: "09:00"
channels: [{channel}]
locales: [en]
frequency_cap_exempt: true
audience:
  tiers: [{tier}]
reward:
  points_by_tier: {{{tier}: 100}}
  expires_after_days: 365
messages:
{messages}"""
MESSAGES = {
    "email": """  email:
    subject:
      en: "Happy birthday, {{ member.first_name }}!"
    text: birthday/email.txt.j2
    html: birthday/email.html.j2
""",
    "sms": """  sms:
    text: gift_sms/sms.txt.j2
""",
    "mailchimp": """  mailchimp:
    event: birthday_gift
    properties:
      points: "{{ reward.points | number }}"
""",
}
TIERS = {"email": "bronze", "sms": "silver", "mailchimp": "gold"}


def write_campaigns(root) -> tuple:
    definitions, templates = root / "definitions", root / "templates"
    definitions.mkdir()
    shutil.copytree(REPO_ROOT / "campaigns" / "templates", templates)
    (templates / "en" / "gift_sms").mkdir()
    (templates / "en" / "gift_sms" / "sms.txt.j2").write_text("Happy birthday {{ member.first_name }}! "
                                                               "{{ reward.points }} points for you. STOP to opt out.")
    for channel, tier in TIERS.items():
        campaign_id = f"gift_{channel}"
        (definitions / f"{campaign_id}.yaml").write_text(
            CAMPAIGN.format(id=campaign_id, channel=channel, tier=tier, messages=MESSAGES[channel]))
    return definitions, templates


@pytest.fixture
def faulty_smtp(tmp_path):
    server = CountingSmtp(tmp_path, error_rate=0.2, timeout_rate=0.05, hold=4, seed=17).start()
    yield server
    server.stop()


@pytest.fixture
def twilio():
    server = TwilioServer(account_sid=ACCOUNT_SID, auth_token=DEFAULT_AUTH_TOKEN,
                          faults=Faults(seed=11, error_rate=0.10, throttle_rate=0.10, timeout_rate=0.05,
                                        hold_seconds=4)).start()
    yield server
    server.stop()
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(twilio_rate_key(ACCOUNT_SID))
    client.close()


@pytest.fixture
def mailchimp():
    server = MailchimpServer(merge_fields=MERGE_FIELDS, faults=Faults(
        seed=13, error_rate=0.10, throttle_rate=0.10, timeout_rate=0.05, hold_seconds=4)).start()
    yield server
    server.stop()


def enqueue_due_later(scenario) -> None:
    """The deliveries put back for later, each enqueued for the instant it is due."""
    from workers.actors import deliver_batch

    with scenario.sessions() as session:
        rows = session.execute(select(Delivery.id, Delivery.send_at).where(Delivery.state == "planned")).all()
    by_time: dict[datetime, list[int]] = {}
    for delivery_id, send_at in rows:
        by_time.setdefault(send_at, []).append(delivery_id)
    for due, ids in sorted(by_time.items()):
        for start in range(0, len(ids), RETRY_BATCH):
            deliver_batch.send(ids[start:start + RETRY_BATCH], iso_utc(due))


def test_providers_failing_20_percent_and_timing_out_5_percent(
        tmp_path, pg_engine, pg_database, redis_namespace, faulty_smtp, twilio, mailchimp, scenario):
    definitions, templates = write_campaigns(tmp_path)
    scenario.configure(
        database_url=pg_database, smtp_url=f"{faulty_smtp.url}?timeout={TIMEOUT}", redis_url=REDIS_URL,
        namespace=redis_namespace, campaigns_dir=definitions, templates_dir=templates,
        TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=DEFAULT_AUTH_TOKEN,
        TWILIO_MESSAGING_SERVICE_SID=DEFAULT_MESSAGING_SERVICE_SID, TWILIO_API_BASE_URL=twilio.url,
        TWILIO_TIMEOUT_SECONDS=TIMEOUT, TWILIO_MAX_MESSAGES_PER_SECOND="500",
        MAILCHIMP_API_KEY=DEFAULT_API_KEY, MAILCHIMP_SERVER_PREFIX=DEFAULT_API_KEY.rpartition("-")[2],
        MAILCHIMP_LIST_ID=mailchimp.default_list_id, MAILCHIMP_API_BASE_URL=mailchimp.base_url,
        MAILCHIMP_TIMEOUT_SECONDS=TIMEOUT, LOYALTY_DELIVERY_BATCH_SIZE=str(BATCH),
        # dramatiq's idle poll: a worker with nothing to do looks for messages every 0.1 s at most, not
        # every 1 s, so each round of retries put back is taken at once
        dramatiq_worker_timeout="100",
    )
    channels = list(TIERS)
    bulk_members(scenario.sessions, [
        {"external_id": f"F{i:05d}", "email": f"f{i:05d}@members.example", "phone": f"+336{i:08d}",
         "sms_opt_in": True, "timezone": "Europe/Paris", "birth_month": 6, "birth_day": 15,
         "tier": TIERS[channels[i % 3]]} for i in range(MEMBERS)])

    started = time.monotonic()
    planned = sum(len(scenario.plan(f"gift_{channel}", AT)) for channel in channels)
    assert planned == MEMBERS
    scenario.worker("worker", threads=8)  # the Procfile's threads: more of the time-outs waited out at once
    states = drain(scenario.sessions, sweep=lambda: enqueue_due_later(scenario), timeout=600,
                   idle_seconds=2, sweep_every=2, waiting=scenario.deliveries_waiting)

    with scenario.sessions() as session:
        rows = session.execute(select(Delivery.channel, Delivery.occurrence_key, Member.phone)
                               .join(Member, Member.id == Delivery.member_id)).all()
    recorded = ledger(scenario.sessions)
    expected = {
        "email": {message_id_for(row.occurrence_key, SENDER): row.occurrence_key
                  for row in rows if row.channel == "email"},
        "sms": {row.phone: row.occurrence_key for row in rows if row.channel == "sms"},
        "mailchimp": {row.occurrence_key: row.occurrence_key for row in rows if row.channel == "mailchimp"},
    }
    received = {
        "email": faulty_smtp.accepted(),
        "sms": [message.to for message in twilio.accepted],
        "mailchimp": [event.properties.get("occurrence_key") for event in mailchimp.events],
    }
    faults = {"email": dict(faulty_smtp.faults()), "sms": dict(twilio.faults.applied),
              "mailchimp": dict(mailchimp.faults.applied)}
    results = []
    for channel in channels:
        result = tally(f"providers failing 20% and timing out 5%, {channel}", expected[channel], received[channel],
                       recorded, started=started)
        known_unknown = sum(1 for identity, key in expected[channel].items()
                            if identity in received[channel] and recorded[key][0] == "unknown")
        result.notes = (f"faults applied {faults[channel]}; {known_unknown} recorded unknown although the provider "
                        f"has them; final states {dict(states)}")
        result.report()
        results.append(result)
    for result in results:
        result.assert_clean()
        assert {reason.split(":", 1)[1] for reason in result.reasons} <= {
            "smtp_no_answer_after_data", "sms_no_answer", "sms_connection_lost", "mailchimp_no_answer",
            "retries_exhausted"}
    assert faults["email"].get("451", 0) + faults["email"].get("421", 0) > 50
    assert faults["email"].get("timeout_after_data", 0) > 5
    for channel in ("sms", "mailchimp"):
        assert faults[channel].get("error", 0) > 20 and faults[channel].get("throttle", 0) > 20
        assert faults[channel].get("timeout", 0) > 5

