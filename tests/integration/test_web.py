"""The web process's Twilio webhooks: signatures, status callbacks, STOP/START/HELP, duplicates."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import httpx
import pytest
from sqlalchemy import func, select

from core.settings import load_settings
from loyalty.standins.http_server import BackgroundServer
from loyalty.standins.twilio_server import DEFAULT_AUTH_TOKEN, TwilioServer, twilio_signature
from loyalty.web import create_app
from models.audit import AuditEntry
from models.delivery import Delivery
from models.member import Member
from models.webhooks import EarlyStatusCallback, ProcessedWebhook
from tests.conftest import free_port
from tests.support.members import add_members, make_member
from tests.support.providers import AT, deliver_until_done, provider_env
from workers.runtime import build_runtime, set_runtime

PHONE = "+33612345678"
PUBLIC = "https://club.example.com"


@pytest.fixture
def web_env(env, tmp_path):
    return provider_env(env, tmp_path, twilio=SimpleNamespace(url="http://127.0.0.1:9"))  # nothing is sent


@contextmanager
def serving(settings):
    """The web app on a port of its own, and an HTTP client for it."""
    app = create_app(settings)
    server = BackgroundServer(app).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            yield http
    finally:
        server.stop()
        app.state.engine.dispose()


@pytest.fixture
def client(web_env, pg_engine):
    with serving(load_settings(web_env)) as http:  # reached at http://127.0.0.1:<port>, as behind a router
        yield http


def signed_post(client, path: str, form: dict, *, token: str = DEFAULT_AUTH_TOKEN, url: str | None = None):
    signature = twilio_signature(token, url or PUBLIC + path, form)
    return client.post(path, data=form, headers={"X-Twilio-Signature": signature})


def texter(external_id: str = "S1", phone: str = PHONE, **kwargs) -> Member:
    return make_member(external_id, tier="silver", phone=phone, sms_opt_in=True, email_opt_in=False, **kwargs)


def inbound(body: str, sid: str = "SM" + "1" * 32, phone: str = PHONE, **extra) -> dict:
    return {"MessageSid": sid, "SmsSid": sid, "AccountSid": "AC" + "0" * 32, "From": phone, "To": "+15005550006",
            "Body": body, **extra}


def consent(sessions, external_id: str = "S1") -> tuple[bool, str | None]:
    with sessions() as session:
        member = session.scalars(select(Member).where(Member.external_id == external_id)).one()
    return member.sms_opt_in, member.sms_consent_source


def count(sessions, model) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


# -- signatures ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("forgery", ["no signature", "wrong token", "another url", "altered body"])
def test_a_forged_webhook_is_refused_and_changes_nothing(client, pg_sessions, forgery):
    add_members(pg_sessions, texter())
    form = inbound("STOP")
    if forgery == "no signature":
        response = client.post("/twilio/inbound", data=form)
    elif forgery == "wrong token":
        response = signed_post(client, "/twilio/inbound", form, token="0" * 32)
    elif forgery == "another url":
        response = signed_post(client, "/twilio/inbound", form, url="https://evil.example/twilio/inbound")
    else:
        signature = twilio_signature(DEFAULT_AUTH_TOKEN, PUBLIC + "/twilio/inbound", inbound("HELP"))
        response = client.post("/twilio/inbound", data=form, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403
    status = client.post("/twilio/status", data={"MessageSid": "SM1", "MessageStatus": "failed"},
                         headers={"X-Twilio-Signature": "bm9wZQ=="})
    assert status.status_code == 403
    assert consent(pg_sessions) == (True, None)
    assert count(pg_sessions, ProcessedWebhook) == 0 and count(pg_sessions, AuditEntry) == 0


def test_the_url_signed_is_the_public_one_not_the_one_behind_the_router(client, pg_sessions):
    add_members(pg_sessions, texter())
    # The request reaches us as http://127.0.0.1:<port>/...; Twilio signed https://club.example.com/...
    assert signed_post(client, "/twilio/inbound", inbound("STOP")).status_code == 200
    assert consent(pg_sessions)[0] is False


def test_without_twilio_configured_every_webhook_is_refused(env, pg_engine, pg_sessions):
    add_members(pg_sessions, texter())
    with serving(load_settings(env)) as client:
        assert signed_post(client, "/twilio/inbound", inbound("STOP")).status_code == 403
    assert consent(pg_sessions)[0] is True


# -- inbound keywords ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["STOP", "stop", " Stop. ", "STOPALL", "UNSUBSCRIBE", "cancel", "End", "QUIT"])
def test_stop_and_its_synonyms_withdraw_sms_consent_with_its_source_and_an_audit_entry(client, pg_sessions, body):
    add_members(pg_sessions, texter(), texter("OTHER", phone="+33699999999"))
    response = signed_post(client, "/twilio/inbound", inbound(body))
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/xml")
    assert "<Message>" not in response.text  # Twilio's Messaging Service confirms STOP itself
    assert consent(pg_sessions) == (False, "sms:STOP")
    assert consent(pg_sessions, "OTHER") == (True, None)
    with pg_sessions() as session:
        audit = session.scalars(select(AuditEntry)).one()
    assert (audit.actor, audit.action, audit.reason) == ("member", "optout.sms", "texted STOP")
    assert PHONE not in str(audit.details)


@pytest.mark.parametrize("body", ["START", "yes", "UNSTOP"])
def test_start_and_its_synonyms_give_consent_back(client, pg_sessions, body):
    add_members(pg_sessions, make_member("S1", phone=PHONE, sms_opt_in=False))
    signed_post(client, "/twilio/inbound", inbound(body))
    assert consent(pg_sessions) == (True, "sms:START")


@pytest.mark.parametrize("program", ["points:\n  per_currency_unit: 1\n", "brand: [unclosed\n"])
def test_help_without_a_brand_or_a_readable_program_names_the_default_and_the_public_url(
        web_env, pg_engine, tmp_path, program):
    (tmp_path / "program.yaml").write_text(program)
    with serving(load_settings({**web_env, "LOYALTY_PROGRAM_FILE": str(tmp_path / "program.yaml")})) as client:
        response = signed_post(client, "/twilio/inbound", inbound("HELP"))
    assert response.status_code == 200
    assert (f"<Message>The Loyalty Club: reply STOP to stop our text messages, START to get them again. "
            f"More: {PUBLIC}</Message>") in response.text


def test_help_answers_a_help_text_and_changes_nothing(client, pg_sessions):
    add_members(pg_sessions, texter())
    for body in ("HELP", "info"):
        response = signed_post(client, "/twilio/inbound", inbound(body, sid="SM" + body.upper().ljust(32, "0")))
        assert response.status_code == 200
        # the shipped program's brand: the name its texts carry, its support address and site
        assert ("<Message>Maison Lumière: reply STOP to stop our text messages, START to get them again. "
                "Help: help@shop.example.com. More: https://shop.example.com</Message>") in response.text
    assert signed_post(client, "/twilio/inbound", inbound("Stop sending me birthday stuff?")).status_code == 200
    assert consent(pg_sessions) == (True, None)  # only the keyword alone counts, as Twilio does
    assert count(pg_sessions, AuditEntry) == 0


def test_twilio_s_opt_out_type_is_trusted(client, pg_sessions):
    add_members(pg_sessions, texter())
    signed_post(client, "/twilio/inbound", inbound("Arrêt", OptOutType="STOP"))  # a keyword set in the console
    assert consent(pg_sessions) == (False, "sms:STOP")


def test_a_duplicate_inbound_changes_nothing_twice(client, pg_sessions):
    add_members(pg_sessions, texter())
    stop = inbound("STOP", sid="SM" + "a" * 32)
    start = inbound("START", sid="SM" + "b" * 32)
    for form in (stop, start, stop):  # the STOP delivered again after the START: not applied again
        assert signed_post(client, "/twilio/inbound", form).status_code == 200
    assert consent(pg_sessions) == (True, "sms:START")
    assert count(pg_sessions, AuditEntry) == 2


def test_handled_webhooks_are_remembered_thirty_days_then_forgotten_by_the_nightly_job(client, pg_sessions, runtime):
    from datetime import timedelta

    from models.base import utcnow
    from workers.actors import prune_webhooks

    add_members(pg_sessions, texter())
    assert signed_post(client, "/twilio/inbound", inbound("STOP", sid="SM" + "c" * 32)).status_code == 200
    with pg_sessions() as session, session.begin():
        session.add(ProcessedWebhook(key="twilio:inbound:SM-old", received_at=utcnow() - timedelta(days=31)))
        session.add(ProcessedWebhook(key="twilio:inbound:SM-recent", received_at=utcnow() - timedelta(days=29)))

    prune_webhooks()  # the actor's body, as the worker runs it

    with pg_sessions() as session:
        kept = sorted(session.scalars(select(ProcessedWebhook.key)))
    assert kept == ["twilio:inbound:SM-recent", "twilio:inbound:" + "SM" + "c" * 32]


# -- status callbacks ------------------------------------------------------------------------------------------------


@pytest.fixture
def live(env, tmp_path, pg_engine):
    """The web app on a real port, as Twilio's callbacks reach it, and a Twilio server that calls it."""
    port = free_port()
    twilio = TwilioServer().start()
    web_env = {**provider_env(env, tmp_path, twilio=twilio), "LOYALTY_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    settings = load_settings(web_env)
    app = create_app(settings)
    web = BackgroundServer(app, port=port).start()
    runtime = build_runtime(settings)
    set_runtime(runtime)
    yield runtime, twilio
    set_runtime(None)
    runtime.close()
    web.stop()
    app.state.engine.dispose()
    twilio.stop()


def sms_delivery(sessions) -> Delivery:
    with sessions() as session:
        return session.scalars(select(Delivery)).one()


def test_delivered_keeps_the_delivery_sent_and_says_so(live, pg_sessions):
    runtime, twilio = live
    add_members(pg_sessions, texter())
    deliver_until_done(runtime)
    sid = sms_delivery(pg_sessions).provider_message_id
    for status in ("sent", "delivered"):
        assert twilio.send_status_callback(sid, status).status_code == 200  # to the URL the send gave
    delivery = sms_delivery(pg_sessions)
    assert (delivery.state, delivery.reason, delivery.detail) == ("sent", None, "delivered")


def test_undelivered_fails_the_delivery_with_twilio_s_error_code_once(live, pg_sessions):
    runtime, twilio = live
    add_members(pg_sessions, texter())
    deliver_until_done(runtime)
    sid = sms_delivery(pg_sessions).provider_message_id
    for _ in range(2):  # Twilio may call twice
        assert twilio.send_status_callback(sid, "undelivered", error_code=30003).status_code == 200
    delivery = sms_delivery(pg_sessions)
    assert (delivery.state, delivery.reason, delivery.detail) == ("failed", "twilio_30003", "undelivered 30003")
    assert count(pg_sessions, ProcessedWebhook) == 1


def test_a_stop_reported_late_by_the_messaging_service_withdraws_consent(live, pg_sessions):
    runtime, twilio = live
    twilio.messaging_service_defers_errors = True  # accepted now, failed with 21610 a moment later
    twilio.opt_out(PHONE)
    add_members(pg_sessions, texter())
    deliver_until_done(runtime)
    sid = sms_delivery(pg_sessions).provider_message_id
    twilio.send_status_callback(sid, "failed", error_code=21610)
    delivery = sms_delivery(pg_sessions)
    assert (delivery.state, delivery.reason) == ("failed", "sms_opted_out")
    assert consent(pg_sessions) == (False, "twilio:21610")
    with pg_sessions() as session:  # audited as every consent change is, naming the delivery that learnt it
        audit = session.execute(select(AuditEntry.action, AuditEntry.actor, AuditEntry.details)).one()
    assert audit == ("optout.sms", "provider:sms", {"delivery_id": delivery.id})


def test_a_member_who_texts_stop_gets_no_further_sms(live, pg_sessions):
    runtime, twilio = live
    add_members(pg_sessions, texter())
    deliver_until_done(runtime)
    assert len(twilio.accepted) == 1
    public = runtime.settings.public_base_url
    form = inbound("STOP", sid="SM" + "c" * 32)
    reply = httpx.post(public + "/twilio/inbound", data=form,
                       headers={"X-Twilio-Signature": twilio_signature(DEFAULT_AUTH_TOKEN, public + "/twilio/inbound", form)})
    assert reply.status_code == 200
    deliver_until_done(runtime, AT.replace(year=2028))  # next year's birthday text
    assert len(twilio.accepted) == 1
    with pg_sessions() as session:
        next_year = session.scalars(select(Delivery).where(Delivery.occurrence_key.like("%2028"))).one()
    assert (next_year.state, next_year.reason) == ("skipped", "no_consent")


def test_health_check(client):
    assert client.get("/healthz").json() == {"status": "ok"}


class EarlyCallingTwilio(TwilioServer):
    """Twilio calling the status callback of a message before its answer to the send has left (it
    happens: the answer's way back is slower than the carrier's report), so the SID is not recorded yet."""

    early_status = ("undelivered", 30003)

    def _create_message(self, form, headers):
        resource = super()._create_message(form, headers)
        status, code = self.early_status
        self.early_answers.append(self.send_status_callback(resource["sid"], status, error_code=code).status_code)
        return resource


@pytest.fixture
def early_twilio(env, tmp_path, pg_engine):
    """``live``, with a Twilio server that calls back before it answers the send."""
    port = free_port()
    twilio = EarlyCallingTwilio().start()
    twilio.early_answers = []
    web_env = {**provider_env(env, tmp_path, twilio=twilio), "LOYALTY_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    settings = load_settings(web_env)
    app = create_app(settings)
    web = BackgroundServer(app, port=port).start()
    runtime = build_runtime(settings)
    set_runtime(runtime)
    yield runtime, twilio
    set_runtime(None)
    runtime.close()
    web.stop()
    app.state.engine.dispose()
    twilio.stop()


@pytest.mark.parametrize("early", [("undelivered", 30003), ("failed", 21610), ("delivered", None)])
def test_a_status_callback_that_comes_before_the_sid_is_recorded_is_applied_once_it_is(early_twilio, pg_sessions, early):
    from workers.actors import sweep_unfinished

    runtime, twilio = early_twilio
    twilio.early_status = early
    add_members(pg_sessions, texter())
    deliver_until_done(runtime)
    assert twilio.early_answers == [200]  # kept, so Twilio has no reason to call again (it would not)
    assert (sms_delivery(pg_sessions).state, sms_delivery(pg_sessions).detail) == ("sent", None)  # not applied yet

    sweep_unfinished()  # the actor's body, as the worker runs it every 5 minutes

    delivery = sms_delivery(pg_sessions)
    status, code = early
    if status == "delivered":
        assert (delivery.state, delivery.reason, delivery.detail) == ("sent", None, "delivered")
    elif code == 21610:
        assert (delivery.state, delivery.reason) == ("failed", "sms_opted_out")
        assert consent(pg_sessions) == (False, "twilio:21610")
    else:
        assert (delivery.state, delivery.reason, delivery.detail) == ("failed", "twilio_30003", "undelivered 30003")
    assert count(pg_sessions, EarlyStatusCallback) == 0  # applied, then forgotten
    # Twilio's same callback again, now that the SID is known, changes nothing twice.
    assert twilio.send_status_callback(delivery.provider_message_id, status, error_code=code).status_code == 200
    assert sms_delivery(pg_sessions).updated_at == delivery.updated_at
    sweep_unfinished()
    assert count(pg_sessions, ProcessedWebhook) == 1


def test_kept_status_callbacks_never_matched_are_forgotten_after_thirty_days(client, pg_sessions, runtime):
    from datetime import timedelta

    from models.base import utcnow
    from workers.actors import prune_webhooks

    form = {"MessageSid": "SM" + "d" * 32, "MessageStatus": "failed", "ErrorCode": "30003"}
    assert signed_post(client, "/twilio/status", form).status_code == 200
    assert signed_post(client, "/twilio/status", form).status_code == 200  # kept once
    with pg_sessions() as session, session.begin():
        session.add(EarlyStatusCallback(message_sid="SM-old", status="failed", received_at=utcnow() - timedelta(days=31)))
    prune_webhooks()
    with pg_sessions() as session:
        kept = [(c.message_sid, c.status, c.error_code) for c in session.scalars(select(EarlyStatusCallback))]
    assert kept == [("SM" + "d" * 32, "failed", 30003)]


def test_a_wrong_method_or_path_is_refused_in_one_json_sentence(client):
    for path in ("/feedback/ses", "/twilio/inbound", "/webhooks/shopify", "/api/events"):
        response = client.get(path)
        assert response.status_code == 405 and response.headers["allow"] == "POST", path
        assert response.json() == {"error": f"GET is not accepted at {path}: send POST."}
    response = client.delete("/healthz")
    assert response.status_code == 405 and response.json() == {"error": "DELETE is not accepted at /healthz: send GET or HEAD."}
    response = client.get("/nothing/here")
    assert response.status_code == 404
    assert response.json() == {"error": "There is no endpoint at /nothing/here; the README's HTTP API lists them."}
