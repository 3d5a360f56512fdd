"""Mailchimp through the real SDK against the local Mailchimp server: campaign steps (tags and
events), the bulk sync of changed members, every error sorted, and the SDK's quirks handled."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import mailchimp_marketing
import pytest
import requests
from sqlalchemy import func, select, text, update

from core.settings import load_settings
from loyalty.standins.http_server import BackgroundServer
from loyalty.standins.mailchimp_server import DEFAULT_API_KEY, MailchimpServer
from models import ledger
from models.base import utcnow
from models.db import transaction
from models.delivery import Delivery
from models.member import Member
from models.points import EntryKind
from tests.support.members import add_members, make_member
from tests.support.providers import AT, MERGE_FIELDS, bulk_members, deliver_until_done, provider_env
from workers.channels.base import OutgoingMailchimp, PermanentFailure, RetryableFailure
from workers.channels.mailchimp import MailchimpCallError, MailchimpChannel, call
from workers.channels.mailchimp_fields import merge_fields
from workers.mailchimp_sync import payload_for, sync_members
from workers.runtime import build_runtime, set_runtime

UTC = UTC
NO_WAIT = (0.0, 0.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def mailchimp_server():
    server = MailchimpServer(merge_fields=MERGE_FIELDS, unsubscribed=["left@members.example"],
                             cleaned=["bounced@members.example"]).start()
    yield server
    server.stop()


@pytest.fixture
def mailchimp(mailchimp_server):
    mailchimp_server.reset()
    mailchimp_server.faults.configure(hold_seconds=4)  # longer than the client's 2 s
    yield mailchimp_server
    mailchimp_server.reset()


def mc_runtime(env, tmp_path, server, **options):
    extra = options.pop("extra_env", {})
    built = build_runtime(load_settings({**provider_env(env, tmp_path, mailchimp=server, **options), **extra}))
    set_runtime(built)
    return built


@pytest.fixture
def runtime(env, tmp_path, mailchimp, pg_engine):
    built = mc_runtime(env, tmp_path, mailchimp)
    yield built
    set_runtime(None)
    built.close()


def fan(external_id: str, **kwargs):
    return make_member(external_id, tier="gold", **kwargs)


def delivery_of(sessions, external_id: str) -> Delivery:
    with sessions() as session:
        return session.scalars(select(Delivery).join(Member, Member.id == Delivery.member_id)
                               .where(Member.external_id == external_id)).one()


def member(sessions, external_id: str) -> Member:
    with sessions() as session:
        return session.scalars(select(Member).where(Member.external_id == external_id)).one()


# -- campaign steps --------------------------------------------------------------------------------------


def test_a_step_upserts_the_member_applies_the_tag_and_posts_the_event_once(runtime, pg_sessions, mailchimp):
    add_members(pg_sessions, fan("G1", first_name="Chloé", birthday=(6, 15)))
    with transaction(pg_sessions) as session:
        member_id = session.scalar(select(Member.id))
        ledger.credit(session, member_id=member_id, entry_key="e1", kind=EntryKind.EARN, points=1200,
                      occurred_at=AT - timedelta(days=300), expires_at=datetime(2027, 7, 1, 3, tzinfo=UTC), source="t")
    last = deliver_until_done(runtime)
    deliver_until_done(runtime, last + timedelta(hours=2))  # again: nothing more

    remote = mailchimp.member("g1@members.example")
    assert remote.status == "subscribed" and remote.tags == ["birthday"]
    assert remote.merge_fields == {"TIER": "gold", "POINTS": 1200, "EXPPOINTS": 1200, "EXPDATE": "2027-07-01",
                                   "BDAY": "06/15", "LOCALE": "en"}
    [event] = mailchimp.events
    assert event.name == "birthday_gift"
    assert event.properties == {"first_name": "Chloé", "balance": "1,200", "occurrence_key": "journey:G1:2027"}
    assert mailchimp.calls == {"lists.set_list_member": 1, "lists.update_list_member_tags": 1,
                               "lists.create_list_member_event": 1}
    delivery = delivery_of(pg_sessions, "G1")
    assert (delivery.state, delivery.channel) == ("sent", "mailchimp")


def every_stored_value(sessions) -> str:
    """Every row of every table as PostgreSQL writes it out, one line each (what a dump would show)."""
    with sessions() as session:
        tables = session.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).all()
        return "\n".join(row for table in tables for row in session.scalars(text(f'SELECT t::text FROM "{table}" t')))


def test_no_stored_value_gives_an_email_back_through_its_md5(runtime, pg_sessions, mailchimp):
    """Mailchimp's subscriber hash is the MD5 of the address: with the database and a list of
    candidate addresses, an MD5 stored anywhere gives the email back. The sync's digest is keyed."""
    emails = ["g1@members.example", "Mixed.Case@Members.example", "plain@members.example"]
    add_members(pg_sessions, fan("G1", email=emails[0]), make_member("MC", email=emails[1]),
                make_member("P", email=emails[2]))
    deliver_until_done(runtime)  # G1 (gold) has the journey step: upsert, tag, event
    report = sync_members(runtime, retry_waits=NO_WAIT)
    assert report.sent == 3 and report.calls == 1
    assert delivery_of(pg_sessions, "G1").state == "sent"

    dump = every_stored_value(pg_sessions).lower()
    assert "mailchimp" in dump and "g1" in dump  # the dump holds the rows
    for email in emails:
        for form in (email, email.lower()):
            for digest in (hashlib.md5(form.encode()).hexdigest(), hashlib.sha256(form.encode()).hexdigest()):
                assert digest not in dump, email
    # what stands for a Mailchimp delivery is Mailchimp's random id of the member, not its hash
    assert delivery_of(pg_sessions, "G1").provider_message_id == mailchimp.member(emails[0]).unique_email_id
    # the digest of what Mailchimp accepted is keyed: no plain hash of what was sent (guessable from
    # an address and the merge fields) is stored either
    with pg_sessions() as session:
        members = session.scalars(select(Member).order_by(Member.id)).all()
        fields = merge_fields(session, members, utcnow())
    for one in members:
        payload = payload_for(one, fields[one.id])
        canonical = json.dumps({**payload, "email_address": one.email.lower()}, sort_keys=True).encode()
        assert one.mailchimp_hash is not None
        assert hashlib.md5(canonical).hexdigest() not in dump and hashlib.sha256(canonical).hexdigest() not in dump
    # and it still spares unchanged members a call
    assert sync_members(runtime, retry_waits=NO_WAIT).sent == 0


def test_a_member_mailchimp_will_not_resubscribe_is_recorded_not_retried_and_then_skipped(
        runtime, pg_sessions, mailchimp):
    mailchimp.mark_compliance("flagged@members.example")
    add_members(pg_sessions, fan("LEFT", email="left@members.example"), fan("BOUNCED", email="bounced@members.example"),
                fan("FLAGGED", email="flagged@members.example"))
    deliver_until_done(runtime)
    for external_id in ("LEFT", "BOUNCED", "FLAGGED"):
        delivery = delivery_of(pg_sessions, external_id)
        assert (delivery.state, delivery.reason) == ("failed", "mailchimp_refused"), external_id
        assert "@" not in delivery.detail
        assert member(pg_sessions, external_id).mailchimp_status == "refused"
    assert mailchimp.member("left@members.example").status == "unsubscribed"  # not resubscribed
    assert mailchimp.events == [] and mailchimp.tag_history == []
    assert mailchimp.total_calls == 3  # one upsert each, no retry

    # Next year, they are not even tried: no usable address for this channel.
    with pg_sessions() as session:
        from workers.planning import plan_context, preview_campaign

        rows = preview_campaign(session, runtime.campaigns.get("journey"),
                                plan_context(session, runtime.campaigns, runtime.program, AT.replace(year=2028)))
    assert {row["reason"] for row in rows} == {"no_usable_address"}


def test_429_and_5xx_are_retried_and_a_time_out_on_the_upsert_too(runtime, pg_sessions, mailchimp):
    add_members(pg_sessions, fan("G1"))
    mailchimp.faults.queue("throttle", "error", "timeout", "ok", "error:503")  # upsert ×3, upsert ok, tags 503
    deliver_until_done(runtime, threads=1)
    delivery = delivery_of(pg_sessions, "G1")
    assert (delivery.state, delivery.attempts) == ("sent", 5)
    assert len(mailchimp.events) == 1 and mailchimp.member("g1@members.example").tags == ["birthday"]


def test_no_answer_to_the_event_is_unknown_and_never_posted_again(runtime, pg_sessions, mailchimp):
    add_members(pg_sessions, fan("G1"), fan("G2"))
    mailchimp.faults.configure(only=r"/events$")
    mailchimp.faults.queue("timeout", "drop")
    last = deliver_until_done(runtime, threads=1)
    outcomes = sorted((delivery_of(pg_sessions, m).state, delivery_of(pg_sessions, m).reason) for m in ("G1", "G2"))
    assert outcomes == [("unknown", "mailchimp_no_answer")] * 2
    deliver_until_done(runtime, last + timedelta(hours=2))
    assert len(mailchimp.events) == 1  # the dropped answer's event did arrive; neither is posted again
    assert mailchimp.calls["lists.create_list_member_event"] == 2


def test_invalid_data_is_a_permanent_failure(env, tmp_path, pg_engine, pg_sessions):
    narrow = MailchimpServer(merge_fields={"TIER": "text"}).start()  # an audience without our merge fields
    built = mc_runtime(env, tmp_path, narrow)
    try:
        add_members(pg_sessions, fan("G1"))
        deliver_until_done(built)
    finally:
        set_runtime(None)
        built.close()
        narrow.stop()
    delivery = delivery_of(pg_sessions, "G1")
    assert (delivery.state, delivery.reason) == ("failed", "mailchimp_rejected")
    assert "Your merge fields were invalid" in delivery.detail


# -- the SDK's quirks ----------------------------------------------------------------------------------


def step(key: str = "k1", email: str = "quirk@members.example") -> OutgoingMailchimp:
    return OutgoingMailchimp(key, email, ("t",), "quirk_event", {}, {"TIER": "gold"})


def test_an_audience_id_with_server_in_it_is_not_mangled(env, tmp_path, pg_engine):
    server = MailchimpServer(list_ids=["listserver01"], merge_fields=MERGE_FIELDS).start()
    try:
        settings = load_settings(provider_env(env, tmp_path, mailchimp=server))
        stock = mailchimp_marketing.Client()  # the SDK as shipped replaces "server" in the URL
        stock.set_config({"api_key": DEFAULT_API_KEY, "server": "us21", "timeout": 5})
        stock.api_client.host = server.base_url
        with pytest.raises(mailchimp_marketing.api_client.ApiClientError) as caught:
            stock.lists.get_list("listserver01")
        assert caught.value.status_code == 404  # it asked for /lists/listus2101
        channel = MailchimpChannel(settings.mailchimp)
        try:
            channel.send(step())
        finally:
            channel.close()
        assert server.member("quirk@members.example", list_id="listserver01").tags == ["t"]
    finally:
        server.stop()


def test_one_connection_is_reused_and_the_time_out_is_ours(env, tmp_path, mailchimp, pg_engine):
    settings = load_settings(provider_env(env, tmp_path, mailchimp=mailchimp))
    channel = MailchimpChannel(settings.mailchimp)
    try:
        for i in range(3):
            channel.send(step(f"k{i}"))
        [pool] = channel._session.get_adapter(mailchimp.base_url).poolmanager.pools._container.values()
        assert pool.num_connections == 1  # nine calls, one connection (the SDK opens one a call)
        mailchimp.faults.queue("timeout")
        started = time.monotonic()
        with pytest.raises(RetryableFailure, match="mailchimp_no_answer"):  # the upsert: idempotent, retried
            channel.send(step("k9"))
        assert time.monotonic() - started < 3.5  # 2 s, not the SDK's 120 s
    finally:
        channel.close()


@pytest.fixture
def empty_answers():
    """A server answering every request with ``status`` and no body at all."""
    status = {"code": 503}

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": status["code"], "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    server = BackgroundServer(app).start()
    yield server, status
    server.stop()


def test_an_empty_error_answer_is_an_error_not_a_success(env, tmp_path, empty_answers, pg_engine):
    server, status = empty_answers
    settings = load_settings({**provider_env(env, tmp_path), "MAILCHIMP_API_KEY": DEFAULT_API_KEY,
                              "MAILCHIMP_SERVER_PREFIX": "us21", "MAILCHIMP_LIST_ID": "a1b2c3d4e5",
                              "MAILCHIMP_API_BASE_URL": server.url + "/3.0"})
    stock = mailchimp_marketing.Client()
    stock.set_config({"api_key": DEFAULT_API_KEY, "server": "us21"})
    stock.api_client.host = server.url + "/3.0"
    returned = stock.ping.get()
    assert isinstance(returned, requests.Response) and returned.status_code == 503  # returned, not raised

    channel = MailchimpChannel(settings.mailchimp)
    try:
        with pytest.raises(RetryableFailure, match="mailchimp_error"):
            channel.send(step())
        status["code"] = 400
        with pytest.raises(PermanentFailure, match="mailchimp_rejected"):
            channel.send(step())
        with pytest.raises(MailchimpCallError) as caught:
            call(channel.lists.get_list, "a1b2c3d4e5")
        assert caught.value.status == 400
    finally:
        channel.close()


# -- the bulk sync ---------------------------------------------------------------------------------------


def test_a_bulk_sync_of_10000_members_makes_at_most_20_calls_then_only_sends_changes(
        runtime, pg_sessions, mailchimp):
    bulk_members(pg_sessions, [{"external_id": f"B{i:05d}", "email": f"b{i:05d}@members.example",
                                "tier": ("bronze", "silver", "gold")[i % 3], "birth_month": 1 + i % 12,
                                "birth_day": 1 + i % 28} for i in range(10_000)])
    mailchimp.faults.configure(latency=0.05)  # each call holds its connection a while: concurrency shows
    report = sync_members(runtime, retry_waits=NO_WAIT)
    assert mailchimp.calls == {"lists.batch_list_members": 20}
    assert mailchimp.max_in_flight <= 10 and all(r.status == 200 for r in mailchimp.requests)
    assert (report.candidates, report.created, report.calls) == (10_000, 10_000, 20)
    assert mailchimp.member("b00007@members.example").merge_fields == {
        "TIER": "silver", "POINTS": 0, "EXPPOINTS": 0, "EXPDATE": "", "BDAY": "08/08", "LOCALE": "en"}

    mailchimp.reset(keep_faults=False)
    assert sync_members(runtime, retry_waits=NO_WAIT).calls == 0  # nothing changed: nothing sent
    with transaction(pg_sessions) as session:
        ids = session.scalars(select(Member.id).where(Member.external_id.in_(["B00001", "B00002"]))).all()
        for member_id in ids:
            ledger.credit(session, member_id=member_id, entry_key=f"p{member_id}", kind=EntryKind.EARN, points=40,
                          occurred_at=AT, expires_at=datetime(2028, 1, 5, 12, tzinfo=UTC), source="t")
        session.execute(update(Member).where(Member.external_id == "B00003").values(tier="gold"))
    report = sync_members(runtime, retry_waits=NO_WAIT)
    assert (report.sent, report.calls) == (3, 1)
    assert sorted(m for m in mailchimp.members() if m.startswith("b0")) == [  # the server's own seeds aside
        "b00001@members.example", "b00002@members.example", "b00003@members.example"]
    assert mailchimp.members()["b00001@members.example"].merge_fields["EXPDATE"] == "2028-01-05"


def test_the_sync_records_refusals_and_passes_on_withdrawn_consent(runtime, pg_sessions, mailchimp):
    add_members(pg_sessions, fan("LEFT", email="left@members.example"), fan("OK1"), fan("NEVER", email_opt_in=False),
                fan("QUIT"))
    sync_members(runtime, retry_waits=NO_WAIT)
    assert member(pg_sessions, "LEFT").mailchimp_status == "refused"
    assert "compliance" in member(pg_sessions, "LEFT").mailchimp_reason
    assert mailchimp.member("never@members.example") is None  # no consent, never known: not added
    assert mailchimp.member("quit@members.example").status == "subscribed"

    with transaction(pg_sessions) as session:
        session.execute(update(Member).where(Member.external_id == "QUIT").values(email_opt_in=False))
    report = sync_members(runtime, retry_waits=NO_WAIT)
    assert report.sent == 1  # QUIT; LEFT is not tried again
    assert mailchimp.member("quit@members.example").status == "unsubscribed"
    assert member(pg_sessions, "QUIT").mailchimp_status == "unsubscribed"


def test_the_sync_retries_429_and_5xx_and_leaves_a_failing_chunk_for_next_time(runtime, pg_sessions, mailchimp):
    add_members(pg_sessions, fan("G1"), fan("G2"))
    mailchimp.faults.queue("throttle", "error")
    report = sync_members(runtime, retry_waits=NO_WAIT)
    assert (report.calls, report.created, report.failed_chunks) == (3, 2, 0)

    add_members(pg_sessions, fan("G3"))
    mailchimp.faults.configure(error_rate=1.0)
    report = sync_members(runtime, retry_waits=NO_WAIT)
    assert (report.calls, report.failed_chunks) == (5, 1)
    assert member(pg_sessions, "G3").mailchimp_synced_at is None
    mailchimp.faults.clear()
    assert sync_members(runtime, retry_waits=NO_WAIT).created == 1


def test_only_one_sync_runs_at_a_time(runtime, pg_engine):
    from sqlalchemy import text

    from workers.mailchimp_sync import _LOCK_KEY

    with pg_engine.connect() as other:
        other.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
        assert sync_members(runtime).skipped
        other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
    assert not sync_members(runtime).skipped


def test_the_sync_actor_and_the_cli(env, tmp_path, runtime, pg_sessions, mailchimp):
    from tests import cli
    from workers.sync_actors import sync_mailchimp_members

    add_members(pg_sessions, fan("A1"))
    sync_mailchimp_members.fn()
    assert mailchimp.member("a1@members.example") is not None
    add_members(pg_sessions, fan("A2"))
    done = cli.loyalty(provider_env(env, tmp_path, mailchimp=mailchimp), "mailchimp", "sync", drop=())
    assert done.returncode == 0, done.stderr
    assert "1 added" in done.stdout and "in 1 call(s)" in done.stdout
    assert mailchimp.member("a2@members.example") is not None


# -- chaos -------------------------------------------------------------------------------------------------


def test_1000_events_with_20_percent_errors_and_5_percent_time_outs_each_posted_once_or_with_a_reason(
        env, tmp_path, pg_engine, pg_sessions, mailchimp):
    # Each of the ~140 injected time-outs is waited out in full by one of the 8 threads (Mailchimp takes 10
    # requests at once, so more threads would not help): 0.25 s, still far above a local answer (milliseconds).
    built = mc_runtime(env, tmp_path, mailchimp, tags=(), extra_env={"MAILCHIMP_TIMEOUT_SECONDS": "0.25"})
    try:
        bulk_members(pg_sessions, [{"external_id": f"E{i:04d}", "email": f"e{i:04d}@members.example", "tier": "gold"}
                                   for i in range(1000)])
        mailchimp.faults.configure(seed=5, error_rate=0.10, throttle_rate=0.10, timeout_rate=0.05, hold_seconds=2)
        deliver_until_done(built, threads=8)
    finally:
        set_runtime(None)
        built.close()

    applied = mailchimp.faults.applied
    assert applied["error"] > 50 and applied["throttle"] > 50 and applied["timeout"] > 20
    posted = Counter(e.properties["occurrence_key"] for e in mailchimp.events)
    assert max(posted.values()) == 1  # no occurrence posted twice
    assert Counter(e.email_address for e in mailchimp.events).most_common(1)[0][1] == 1
    with pg_sessions() as session:
        rows = session.execute(select(Delivery.occurrence_key, Delivery.state, Delivery.reason)).all()
        assert session.scalar(select(func.count()).select_from(Member)) == 1000
    assert len(rows) == 1000
    reasons = Counter()
    for key, state, reason in rows:
        if key in posted:  # sent; or unknown: the answer was too late, the event had arrived (never twice)
            assert (state, reason) == ("sent", None) or (state, reason) == ("unknown", "mailchimp_no_answer")
        else:
            assert state in ("failed", "unknown") and reason, (key, state, reason)
            reasons[reason] += 1
    assert set(reasons) <= {"mailchimp_no_answer", "retries_exhausted"}
    assert set(posted) | {key for key, state, _ in rows if state != "sent"} == {key for key, _, _ in rows}
