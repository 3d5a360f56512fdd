"""SMS through the real Twilio SDK against the local Twilio server: each answer sorted, pacing
shared through Redis, and a chaos run in which every member is accepted once or has a reason."""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import redis
from dramatiq import Worker
from sqlalchemy import select
from twilio.base.exceptions import TwilioRestException

from core.settings import load_settings
from loyalty.standins.twilio_server import DEFAULT_ACCOUNT_SID, TwilioServer
from models.audit import AuditEntry
from models.delivery import Delivery
from models.member import Member
from tests.conftest import REDIS_URL
from tests.support.members import add_members, make_member
from tests.support.providers import AT, bulk_members, deliver_until_done, provider_env
from workers.channels.base import OutgoingSms
from workers.rate_limit import RateLimited, twilio_rate_key
from workers.runtime import build_runtime, set_runtime

PHONE = "+33612345678"
TWILIO_ENV = {"TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID, "TWILIO_AUTH_TOKEN": "x" * 32,
              "TWILIO_MESSAGING_SERVICE_SID": "MG" + "0" * 32}


@pytest.fixture(scope="module")
def twilio_server():
    server = TwilioServer().start()
    yield server
    server.stop()


@pytest.fixture
def twilio(twilio_server):
    twilio_server.reset()
    twilio_server.set_rate_limit(None)
    twilio_server.unsubscribed, twilio_server.landlines = set(), set()
    twilio_server.faults.configure(hold_seconds=4)  # longer than the client's 2 s
    yield twilio_server
    twilio_server.reset()


def sms_runtime(env, tmp_path, twilio, **options):
    extra = options.pop("extra_env", {})
    built = build_runtime(load_settings({**provider_env(env, tmp_path, twilio=twilio, **options), **extra}))
    set_runtime(built)
    return built


@pytest.fixture
def runtime(env, tmp_path, twilio, pg_engine):
    built = sms_runtime(env, tmp_path, twilio)
    yield built
    set_runtime(None)
    built.close()


def texter(external_id: str, phone: str = PHONE, **kwargs) -> Member:
    return make_member(external_id, tier="silver", phone=phone, sms_opt_in=True, email_opt_in=False, **kwargs)


def outcome(sessions, external_id: str) -> tuple[str, str | None]:
    with sessions() as session:
        row = session.execute(select(Delivery.state, Delivery.reason).join(Member, Member.id == Delivery.member_id)
                              .where(Member.external_id == external_id)).one()
    return row.state, row.reason


def test_an_sms_goes_through_the_messaging_service_with_a_status_callback(runtime, pg_sessions, twilio):
    add_members(pg_sessions, texter("S1"))
    deliver_until_done(runtime)
    [sent] = twilio.accepted
    assert (sent.to, sent.body) == (PHONE, "Happy birthday Test! Reply STOP to opt out.")
    assert sent.messaging_service_sid == runtime.settings.twilio.messaging_service_sid
    assert sent.status_callback == "https://club.example.com/twilio/status"
    assert "user-agent" in sent.headers and sent.headers["user-agent"].startswith("twilio-python/")
    with pg_sessions() as session:
        delivery = session.scalars(select(Delivery)).one()
    assert (delivery.state, delivery.channel, delivery.provider_message_id) == ("sent", "sms", sent.sid)


@pytest.mark.parametrize(
    "setup, reason, member_after",
    [
        ("landline", "sms_not_mobile", {"phone_status": "unreachable", "sms_opt_in": True}),
        ("stop", "sms_opted_out", {"phone_status": "ok", "sms_opt_in": False, "sms_consent_source": "twilio:21610"}),
        ("not_e164", "sms_invalid_number", {"phone_status": "invalid", "sms_opt_in": True}),
    ],
)
def test_permanent_errors_end_with_a_reason_and_what_they_teach_about_the_member(
        runtime, pg_sessions, twilio, setup, reason, member_after):
    phone = "0612345678" if setup == "not_e164" else PHONE  # as if stored before imports normalised numbers
    if setup == "landline":
        twilio.landlines.add(PHONE)
    if setup == "stop":
        twilio.opt_out(PHONE)
    add_members(pg_sessions, texter("S1", phone=phone))
    deliver_until_done(runtime)
    assert twilio.accepted == []
    assert twilio.calls["messages.create"] == 1  # not retried
    assert outcome(pg_sessions, "S1") == ("failed", reason)
    with pg_sessions() as session:
        member = session.scalars(select(Member)).one()
        delivery = session.scalars(select(Delivery)).one()
        audit = session.scalars(select(AuditEntry)).one()
    assert {key: getattr(member, key) for key in member_after} == member_after
    assert "0612345678" not in delivery.detail and "345678" not in delivery.detail  # no number in the ledger's detail
    assert (audit.actor, audit.reason) == ("provider:sms", reason)
    # A STOP is a consent change like any other (record_consent); a number's status, the provider's update
    assert audit.action == ("optout.sms" if setup == "stop" else "member.updated_by_provider")
    assert audit.details["delivery_id"] == delivery.id
    if setup == "stop":
        assert member.sms_consent_at is not None


def test_429_and_5xx_are_retried_after_minutes_and_then_sent_once(runtime, pg_sessions, twilio):
    from workers.delivery import deliver
    from workers.tick import run_tick

    add_members(pg_sessions, texter("S1"))
    twilio.faults.queue("throttle", "error", "error:503")
    run_tick(runtime, AT)
    waits = []
    as_of = AT
    for _ in range(3):
        with pg_sessions() as session:
            delivery = session.scalars(select(Delivery)).one()
        assert (delivery.state, delivery.reason) == ("planned", ["sms_provider_busy", "sms_provider_error",
                                                                 "sms_provider_error"][len(waits)])
        waits.append(delivery.send_at - as_of)
        as_of = delivery.send_at
        deliver(runtime, [delivery.id], as_of=as_of)
    assert waits == [timedelta(seconds=30), timedelta(minutes=1), timedelta(minutes=2)]  # minutes, not days
    assert len(twilio.accepted) == 1
    with pg_sessions() as session:
        delivery = session.scalars(select(Delivery)).one()
    assert (delivery.state, delivery.reason, delivery.attempts) == ("sent", None, 4)


def test_retries_are_bounded(env, tmp_path, twilio, pg_engine, pg_sessions):
    built = sms_runtime(env, tmp_path, twilio, extra_env={"LOYALTY_MAX_DELIVERY_ATTEMPTS": "3"})
    try:
        add_members(pg_sessions, texter("S1"))
        twilio.faults.configure(error_rate=1.0)
        deliver_until_done(built)
    finally:
        set_runtime(None)
        built.close()
    assert twilio.calls["messages.create"] == 3
    assert outcome(pg_sessions, "S1") == ("failed", "retries_exhausted")


def test_a_time_out_after_the_request_left_is_unknown_and_never_re_sent(runtime, pg_sessions, twilio):
    add_members(pg_sessions, texter("S1"), texter("S2", phone="+33612345679"))
    twilio.faults.queue("timeout", "drop")
    started = time.monotonic()
    last = deliver_until_done(runtime, threads=1)
    assert time.monotonic() - started < 8  # the SDK's default would wait forever: ours gives up after 2 s
    outcomes = {outcome(pg_sessions, member): member for member in ("S1", "S2")}
    assert set(outcomes) == {("unknown", "sms_no_answer"), ("unknown", "sms_connection_lost")}
    dropped = {"S1": PHONE, "S2": "+33612345679"}[outcomes["unknown", "sms_connection_lost"]]
    assert [m.to for m in twilio.accepted] == [dropped]  # the message whose answer was lost did go
    deliver_until_done(runtime, last + timedelta(hours=1))
    assert twilio.calls["messages.create"] == 2  # neither is sent again


def test_no_connection_at_all_is_retried(env, tmp_path, twilio, pg_engine, pg_sessions):
    closed = TwilioServer().start()
    closed.stop()  # a port nobody listens on any more
    built = sms_runtime(env, tmp_path, closed, extra_env={"LOYALTY_MAX_DELIVERY_ATTEMPTS": "2"})
    try:
        add_members(pg_sessions, texter("S1"))
        deliver_until_done(built)
    finally:
        set_runtime(None)
        built.close()
    with pg_sessions() as session:
        delivery = session.scalars(select(Delivery)).one()
    assert (delivery.state, delivery.reason, delivery.attempts) == ("failed", "retries_exhausted", 2)
    assert delivery.detail.startswith("sms_provider_unreachable")


def test_wrong_credentials_are_retried_not_a_permanent_failure(env, tmp_path, twilio, pg_engine, pg_sessions):
    built = sms_runtime(env, tmp_path, twilio, extra_env={"TWILIO_AUTH_TOKEN": "wrong"})
    try:
        add_members(pg_sessions, texter("S1"))
        from workers.tick import run_tick

        report = run_tick(built, AT)
    finally:
        set_runtime(None)
        built.close()
    assert report.delivery.reasons == Counter()  # back in line, not failed
    with pg_sessions() as session:
        delivery = session.scalars(select(Delivery)).one()
    assert (delivery.state, delivery.reason) == ("planned", "sms_auth_failed")


def test_an_sms_longer_than_the_campaign_allows_is_not_sent(env, tmp_path, twilio, pg_engine, pg_sessions):
    built = sms_runtime(env, tmp_path, twilio, sms_text="Joyeux anniversaire {{ member.first_name }} ! " + "ç" * 80,
                        max_segments=1)
    try:
        add_members(pg_sessions, texter("S1"))
        deliver_until_done(built)
    finally:
        set_runtime(None)
        built.close()
    assert twilio.total_calls == 0
    with pg_sessions() as session:
        delivery = session.scalars(select(Delivery)).one()
    assert (delivery.state, delivery.reason) == ("failed", "sms_too_long")
    assert delivery.detail == "2 segments (UCS-2, 107 units), more than max_segments 1"


# -- pacing ------------------------------------------------------------------------------------------


@pytest.fixture
def rate_key():
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(twilio_rate_key(DEFAULT_ACCOUNT_SID))
    yield
    client.delete(twilio_rate_key(DEFAULT_ACCOUNT_SID))
    client.close()


def per_second_peak(times: list[float]) -> int:
    """The most messages in any one-second window."""
    times = sorted(times)
    return max((sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times)), default=0)


def test_two_workers_together_stay_under_the_rate_shared_through_redis(env, tmp_path, twilio, pg_engine, rate_key):
    rate = 20
    twilio.set_rate_limit(rate, burst=rate)  # the account's limit: above it, 429
    settings = load_settings({**provider_env(env, tmp_path, twilio=twilio), "REDIS_URL": REDIS_URL,
                              "TWILIO_MAX_MESSAGES_PER_SECOND": str(rate)})
    dynos = [build_runtime(settings), build_runtime(settings)]  # two processes' worth: nothing shared in memory
    sent_by: list[str] = []

    def send_many(runtime, prefix: str) -> None:
        channel = runtime.channel("sms")
        try:
            for i in range(20):
                channel.send(OutgoingSms(f"{prefix}{i}", f"+3361234{i:04d}", "paced"))
                sent_by.append(prefix)
        finally:
            channel.close()

    started = time.monotonic()
    workers = [threading.Thread(target=send_many, args=(dyno, name)) for dyno, name in zip(dynos, "ab", strict=True)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    elapsed = time.monotonic() - started
    for dyno in dynos:
        dyno.close()

    assert len(twilio.accepted) == 40
    assert [r.status for r in twilio.requests if r.status != 201] == []  # never a 429
    assert elapsed >= 39 / rate * 0.95  # 40 sends, 1/20 s apart, whichever dyno sends them
    server_times = [m.date_created.timestamp() for m in twilio.accepted]
    assert max(server_times) - min(server_times) >= 1.8
    # The server's own token bucket (no 429 above) is the judge of the account's rate; the arrival
    # times also carry the loaded machine's jitter, so this looser count is only a sanity check.
    assert per_second_peak(server_times) <= rate + 2
    assert Counter(name[0] for name in sent_by) == {"a": 20, "b": 20}


def test_a_slot_too_far_away_is_not_waited_for_the_send_is_retried_later(rate_key):
    from workers.channels.base import RetryableFailure
    from workers.channels.sms import TwilioSmsChannel
    from workers.rate_limit import LocalRateLimiter, RedisRateLimiter

    client = redis.Redis.from_url(REDIS_URL)
    # a key of its own: the other test process sends through the account's shared key meanwhile
    key = f"{twilio_rate_key(DEFAULT_ACCOUNT_SID)}:{secrets.token_hex(4)}"
    shared = RedisRateLimiter(client, key, rate=1, max_wait=0.5)
    local = LocalRateLimiter(rate=1, max_wait=0.5)
    for limiter in (shared, local):
        assert limiter.acquire() == 0
        with pytest.raises(RateLimited):
            limiter.acquire()  # the next slot is a second away: more than max_wait
    client.close()
    settings = load_settings({**TWILIO_ENV, "TWILIO_API_BASE_URL": "http://127.0.0.1:9"})
    channel = TwilioSmsChannel(settings.twilio, local)
    with pytest.raises(RetryableFailure, match="sms_rate_limited"):
        channel.send(OutgoingSms("k", PHONE, "later"))
    channel.close()


def test_without_pacing_the_same_load_is_refused(twilio):
    twilio.set_rate_limit(20, burst=20)
    service = next(iter(twilio.messaging_services))

    def send_unpaced(prefix: str) -> int:
        client, refused = twilio.client(timeout=5), 0
        for i in range(20):
            try:
                client.messages.create(to=f"+3361{prefix}{i:04d}", messaging_service_sid=service, body="unpaced")
            except TwilioRestException as exc:
                assert exc.status == 429
                refused += 1
        client.http_client.session.close()
        return refused

    with ThreadPoolExecutor(4) as pool:
        refused = sum(pool.map(send_unpaced, "1234"))
    assert refused > 0  # so the test above would see 429s if the limiter did not work


def test_a_dramatiq_worker_on_redis_delivers_sms_through_twilio(env, tmp_path, twilio, pg_engine, pg_sessions,
                                                               redis_namespace, rate_key):
    from models.db import transaction
    from workers.actors import enqueue_deliveries
    from workers.broker import build_broker, install_broker
    from workers.planning import plan_campaign, plan_context

    twilio.set_rate_limit(20, burst=20)
    settings = load_settings({**provider_env(env, tmp_path, twilio=twilio), "REDIS_URL": REDIS_URL,
                              "TWILIO_MAX_MESSAGES_PER_SECOND": "20"})
    built = build_runtime(settings)
    set_runtime(built)
    bulk_members(pg_sessions, [{"external_id": f"W{i:03d}", "tier": "silver", "phone": f"+3361200{i:04d}",
                                "sms_opt_in": True, "email_opt_in": False} for i in range(30)])
    broker = install_broker(build_broker(settings, namespace=redis_namespace))
    worker = Worker(broker, worker_threads=6, worker_timeout=100)  # stops in 0.1 s, not 1.3
    worker.start()
    try:
        with transaction(built.sessions) as session:
            plan = plan_campaign(session, built.campaigns.get("sms_gift"),
                                 plan_context(session, built.campaigns, built.program, AT))
        enqueue_deliveries(plan.planned_ids, as_of=AT, batch_size=5)
        broker.join("deliveries", timeout=30_000)
    finally:
        worker.stop()
        broker.close()
        set_runtime(None)
        built.close()
    assert len(plan.planned_ids) == 30
    assert sorted(m.to for m in twilio.accepted) == [f"+3361200{i:04d}" for i in range(30)]
    assert all(r.status == 201 for r in twilio.requests)
    with pg_sessions() as session:
        assert set(session.scalars(select(Delivery.state))) == {"sent"}


# -- chaos ---------------------------------------------------------------------------------------------


def test_1000_sms_with_20_percent_errors_and_5_percent_time_outs_each_accepted_once_or_with_a_reason(
        env, tmp_path, pg_engine, pg_sessions, twilio):
    runtime = sms_runtime(env, tmp_path, twilio, extra_env={"TWILIO_TIMEOUT_SECONDS": "0.5"})  # time-outs cost less
    numbers = {f"C{i:04d}": f"+336{i:08d}" for i in range(1000)}
    landlines, opted_out = list(numbers.values())[:10], list(numbers.values())[10:20]
    twilio.landlines.update(landlines)
    twilio.opt_out(*opted_out)
    bulk_members(pg_sessions, [{"external_id": ext, "tier": "silver", "phone": phone, "sms_opt_in": True,
                                "email_opt_in": False} for ext, phone in numbers.items()])
    twilio.faults.configure(seed=3, error_rate=0.10, throttle_rate=0.10, timeout_rate=0.05, hold_seconds=2)

    try:
        deliver_until_done(runtime, threads=8)
    finally:
        set_runtime(None)
        runtime.close()

    applied = twilio.faults.applied
    assert applied["error"] > 50 and applied["throttle"] > 50 and applied["timeout"] > 20
    accepted = Counter(m.to for m in twilio.accepted)
    assert max(accepted.values()) == 1  # no member got it twice
    sids = {m.to: m.sid for m in twilio.accepted}
    with pg_sessions() as session:
        rows = session.execute(select(Member.phone, Delivery.state, Delivery.reason, Delivery.provider_message_id)
                               .join(Delivery, Delivery.member_id == Member.id)).all()
    assert len(rows) == 1000
    reasons = Counter()
    for phone, state, reason, provider_id in rows:
        if phone in accepted:  # sent; or unknown: the answer was too late, the message had gone (never twice)
            assert (state, reason, provider_id) in (("sent", None, sids[phone]), ("unknown", "sms_no_answer", None))
        else:
            assert state in ("failed", "unknown") and reason, (phone, state, reason)
            reasons[reason] += 1
        if phone in landlines or phone in opted_out:  # unless a fault answered first, every time
            expected = "sms_not_mobile" if phone in landlines else "sms_opted_out"
            assert reason in (expected, "sms_no_answer", "retries_exhausted")
    assert reasons["sms_not_mobile"] + reasons["sms_opted_out"] >= 15
    assert reasons["sms_no_answer"] == applied["timeout"]  # each time-out: unknown, never sent again
    assert set(reasons) <= {"sms_not_mobile", "sms_opted_out", "sms_no_answer", "retries_exhausted"}
    assert len(accepted) + sum(reasons.values()) == 1000
