"""Bounces and complaints, end to end: emails go out with their bounce address (VERP) through a real
SMTP server; the relays' notifications come in through the web app (SES through a local SNS
stand-in with its own certificate authority, SendGrid signed with ECDSA, Postmark behind basic
auth), and the bounce mailbox is a real Dovecot read over IMAP. Every effect is read back from
PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from core.tokens import read_bounce_token, token_in_address
from loyalty.standins.http_server import BackgroundServer
from loyalty.web import create_app
from models.audit import AuditEntry
from models.delivery import Delivery, DeliveryState
from models.email_feedback import EmailFeedback
from models.member import ContactStatus, Member
from tests.conftest import REPO_ROOT
from tests.support.dovecot import Dovecot
from tests.support.members import add_members, make_member
from tests.support.sns_server import TOPIC, SnsStandIn
from workers.delivery import deliver
from workers.planning import plan_campaign, plan_context
from workers.tick import due_delivery_ids, run_tick

UTC = UTC
BIRTHDAY_2027 = datetime(2027, 6, 15, 7, 0, tzinfo=UTC)  # 09:00 in Paris
BIRTHDAY_2028 = datetime(2028, 6, 15, 7, 0, tzinfo=UTC)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC_PUBLIC = base64.b64encode(EC_KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
POSTMARK = ("postmark-hooks", "postmark-webhook-password-0123")


@pytest.fixture
def env(env):
    return {**env, "LOYALTY_BOUNCE_ADDRESS": "bounces@mail.shop.example", "SES_SNS_TOPIC_ARNS": TOPIC,
            "SENDGRID_WEBHOOK_PUBLIC_KEY": EC_PUBLIC, "POSTMARK_WEBHOOK_USERNAME": POSTMARK[0],
            "POSTMARK_WEBHOOK_PASSWORD": POSTMARK[1], "LOYALTY_SOFT_BOUNCE_LIMIT": "2"}


@pytest.fixture
def sns():
    stand_in = SnsStandIn().start()
    yield stand_in
    stand_in.stop()


@contextmanager
def serving(settings, sns_trust=None):
    app = create_app(settings, sns_trust=sns_trust)
    server = BackgroundServer(app).start()
    try:
        with httpx.Client(base_url=server.url, timeout=20) as http:
            yield http
    finally:
        server.stop()
        app.state.engine.dispose()


@pytest.fixture
def web(settings, sns, pg_engine):
    with serving(settings, sns.trust()) as http:
        yield http


def sent_birthdays(runtime, smtp_sink, at=BIRTHDAY_2027) -> dict[str, str]:
    """Run the birthday tick; each recipient's envelope sender (MAIL FROM)."""
    seen = len(smtp_sink.envelopes)
    run_tick(runtime, at, campaign_ids=["birthday"])
    return {rcpts[0]: mail_from for mail_from, rcpts in smtp_sink.envelopes[seen:]}


def member(sessions, external_id: str) -> Member:
    with sessions() as session:
        return session.scalars(select(Member).where(Member.external_id == external_id)).one()


def feedback_rows(sessions) -> list[EmailFeedback]:
    with sessions() as session:
        return list(session.scalars(select(EmailFeedback).order_by(EmailFeedback.id)))


def audits(sessions, action: str) -> list[AuditEntry]:
    with sessions() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def delivery_of(sessions, external_id: str, year: int = 2027) -> Delivery:
    with sessions() as session:
        return session.scalars(select(Delivery).join(Member, Member.id == Delivery.member_id).where(
            Member.external_id == external_id, Delivery.occurrence_key.like(f"%{year}%"))).one()


def ses_bounce(source: str, address: str, *, kind: str = "Permanent", feedback_id: str = "0102-bounce-1") -> dict:
    return {"notificationType": "Bounce",
            "bounce": {"bounceType": kind, "bounceSubType": "General", "feedbackId": feedback_id,
                       "timestamp": "2027-06-15T07:00:59.000Z",
                       "bouncedRecipients": [{"emailAddress": address, "action": "failed", "status": "5.1.1",
                                              "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]},
            "mail": {"timestamp": "2027-06-15T07:00:58.000Z", "messageId": "0102-ses-message", "source": source,
                     "destination": [address], "commonHeaders": {"subject": "Happy birthday"}}}


# -- the bounce address ---------------------------------------------------------------------------

def test_every_email_goes_from_a_bounce_address_that_names_its_delivery(runtime, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("ANN"), make_member("BOB"))
    senders = sent_birthdays(runtime, smtp_sink)
    assert set(senders) == {"ann@members.example", "bob@members.example"}
    for address, mail_from in senders.items():
        assert mail_from.startswith("bounces+") and mail_from.endswith("@mail.shop.example")
        digest = read_bounce_token(runtime.settings.secret, token_in_address(mail_from))
        delivery = delivery_of(pg_sessions, address.split("@")[0].upper())
        assert delivery.provider_message_id == f"<{digest}@example.com>"  # the token names that delivery
    message = smtp_sink.to("ann@members.example")[0]
    assert message["X-PM-Metadata-loyalty-token"] == token_in_address(senders["ann@members.example"])
    assert message["From"] == "Loyalty Club <club@example.com>"  # the visible sender is unchanged


# -- Amazon SES through SNS -------------------------------------------------------------------------

def test_ses_subscription_is_confirmed_only_when_signed_by_sns(web, sns):
    forged = sns.subscription_confirmation()
    forged["Token"] = "x" * 64
    assert web.post("/feedback/ses", content=json.dumps(forged)).status_code == 401
    assert sns.confirmed == []
    answer = web.post("/feedback/ses", content=json.dumps(sns.subscription_confirmation()),
                      headers={"x-amz-sns-message-type": "SubscriptionConfirmation", "content-type": "text/plain"})
    assert answer.status_code == 200 and answer.json() == {"subscribed": True}
    assert len(sns.confirmed) == 1 and "Action=ConfirmSubscription" in sns.confirmed[0]
    other_topic = sns.subscription_confirmation(topic="arn:aws:sns:eu-west-1:999999999999:someone-elses")
    assert web.post("/feedback/ses", content=json.dumps(other_topic)).status_code == 403
    assert len(sns.confirmed) == 1


def test_an_ses_hard_bounce_marks_the_address_undeliverable_and_later_emails_are_skipped(
        runtime, web, sns, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("ANN"), make_member("BOB"))
    senders = sent_birthdays(runtime, smtp_sink)
    notification = sns.notification(ses_bounce(senders["ann@members.example"], "ann@members.example"))
    answer = web.post("/feedback/ses", content=json.dumps(notification))
    assert answer.status_code == 200 and answer.json() == {"applied": 1, "duplicates": 0}

    assert member(pg_sessions, "ANN").email_status == ContactStatus.UNDELIVERABLE
    assert member(pg_sessions, "BOB").email_status == ContactStatus.OK
    [row] = feedback_rows(pg_sessions)
    assert (row.kind, row.provider, row.effect, row.status) == ("hard_bounce", "ses", "undeliverable", "5.1.1")
    assert row.delivery_id == delivery_of(pg_sessions, "ANN").id and row.campaign == "birthday"
    [audit] = audits(pg_sessions, "email.undeliverable")
    assert audit.actor == "provider:ses" and "ann@" not in (audit.reason or "")

    # SNS delivers at least once: the same notification again changes nothing
    again = web.post("/feedback/ses", content=json.dumps(notification))
    assert again.json() == {"applied": 0, "duplicates": 1}
    assert len(feedback_rows(pg_sessions)) == 1 and len(audits(pg_sessions, "email.undeliverable")) == 1

    # a year later, Ann's birthday email is skipped, Bob's goes out
    later = sent_birthdays(runtime, smtp_sink, BIRTHDAY_2028)
    assert list(later) == ["bob@members.example"]
    skipped = delivery_of(pg_sessions, "ANN", 2028)
    assert (skipped.state, skipped.reason) == (DeliveryState.SKIPPED, "email_undeliverable")


def test_forged_oversized_or_foreign_ses_notifications_are_refused(web, sns, pg_sessions):
    add_members(pg_sessions, make_member("ANN"))
    bounce = ses_bounce("bounces@mail.shop.example", "ann@members.example")
    tampered = sns.notification(bounce)
    tampered["Message"] = tampered["Message"].replace("Permanent", "Transient")
    assert web.post("/feedback/ses", content=json.dumps(tampered)).status_code == 401
    from cryptography.hazmat.primitives.asymmetric import rsa

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert web.post("/feedback/ses", content=json.dumps(sns.notification(bounce, key=other_key))).status_code == 401
    elsewhere = sns.notification(bounce)
    elsewhere["SigningCertURL"] = "https://evil.example/SimpleNotificationService-test.pem"
    refused = web.post("/feedback/ses", content=json.dumps(elsewhere))
    assert refused.status_code == 401 and "SigningCertURL" in refused.json()["error"]
    foreign = sns.notification(bounce, topic="arn:aws:sns:eu-west-1:999999999999:someone-elses")
    assert web.post("/feedback/ses", content=json.dumps(foreign)).status_code == 403
    assert web.post("/feedback/ses", content=b"{not json").status_code == 400
    huge = web.post("/feedback/ses", content=b"x" * 1_000_001)
    assert huge.status_code == 413
    assert feedback_rows(pg_sessions) == [] and member(pg_sessions, "ANN").email_status == ContactStatus.OK


def test_an_unconfigured_relay_answers_404(settings, pg_engine):
    import dataclasses

    from core.feedback_settings import FeedbackSettings

    bare = dataclasses.replace(settings, feedback=FeedbackSettings())
    with serving(bare) as http:
        for path in ("/feedback/ses", "/feedback/sendgrid", "/feedback/postmark"):
            answer = http.post(path, content=b"[]")
            assert answer.status_code == 404 and "set " in answer.json()["error"]


# -- SendGrid ---------------------------------------------------------------------------------------

def sendgrid_post(web, events: list[dict], *, key=EC_KEY, timestamp: str = "1781506800", body: bytes | None = None):
    body = body if body is not None else json.dumps(events).encode()
    signature = base64.b64encode(key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    return web.post("/feedback/sendgrid", content=body, headers={
        "content-type": "application/json", "X-Twilio-Email-Event-Webhook-Signature": signature,
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp})


def test_sendgrid_events_are_traced_by_message_id_and_verified(runtime, web, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("ANN"), make_member("BOB"))
    sent_birthdays(runtime, smtp_sink)
    message_id = delivery_of(pg_sessions, "BOB").provider_message_id
    events = [
        {"email": "bob@members.example", "timestamp": 1781506800, "smtp-id": message_id, "event": "bounce",
         "type": "blocked", "status": "4.7.1", "reason": "try again later", "sg_event_id": "sg-event-1",
         "sg_message_id": "sg-message-1.filter"},
        {"email": "ann@members.example", "timestamp": 1781506801, "event": "delivered", "sg_event_id": "sg-event-2"},
    ]
    forged = sendgrid_post(web, events, key=ec.generate_private_key(ec.SECP256R1()))
    assert forged.status_code == 401 and feedback_rows(pg_sessions) == []
    signed = sendgrid_post(web, events)
    assert signed.status_code == 200 and signed.json() == {"applied": 1, "duplicates": 0}
    [row] = feedback_rows(pg_sessions)
    assert (row.kind, row.effect, row.delivery_id) == ("soft_bounce", "counted", delivery_of(pg_sessions, "BOB").id)
    assert member(pg_sessions, "BOB").email_status == ContactStatus.OK  # one soft bounce: counted only
    assert sendgrid_post(web, events).json() == {"applied": 0, "duplicates": 1}
    oversized = sendgrid_post(web, [], body=b"[" + b" " * 1_000_000 + b"]")
    assert oversized.status_code == 413


def test_soft_bounces_on_different_emails_make_the_address_undeliverable_at_the_threshold(
        runtime, web, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("BOB"))
    sent_birthdays(runtime, smtp_sink)
    sent_birthdays(runtime, smtp_sink, BIRTHDAY_2028)
    effects = []
    for number, year in enumerate((2027, 2027, 2028), start=1):  # the same email soft-bounced twice counts once
        events = [{"email": "bob@members.example", "timestamp": 1781506800 + number, "event": "bounce",
                   "type": "blocked", "status": "4.2.1", "sg_event_id": f"sg-soft-{number}",
                   "smtp-id": delivery_of(pg_sessions, "BOB", year).provider_message_id}]
        assert sendgrid_post(web, events).status_code == 200
        effects.append(feedback_rows(pg_sessions)[-1].effect)
    assert effects == ["counted", "counted", "undeliverable"]  # LOYALTY_SOFT_BOUNCE_LIMIT=2 here
    assert member(pg_sessions, "BOB").email_status == ContactStatus.UNDELIVERABLE


def test_an_email_planned_before_its_address_bounced_for_good_is_skipped_when_sent(runtime, web, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("ANN"))
    sent_birthdays(runtime, smtp_sink)
    with runtime.sessions() as session:
        context = plan_context(session, runtime.campaigns, runtime.program, BIRTHDAY_2028)
    with runtime.sessions() as session, session.begin():
        plan_campaign(session, runtime.campaigns.campaigns["birthday"], context)
    events = [{"email": "ann@members.example", "timestamp": 1781506800, "event": "bounce", "type": "bounce",
               "status": "5.1.1", "sg_event_id": "sg-hard-1", "smtp-id": delivery_of(pg_sessions, "ANN").provider_message_id}]
    assert sendgrid_post(web, events).json() == {"applied": 1, "duplicates": 0}
    seen = len(smtp_sink.envelopes)
    deliver(runtime, due_delivery_ids(runtime, BIRTHDAY_2028), as_of=BIRTHDAY_2028)
    assert len(smtp_sink.envelopes) == seen
    skipped = delivery_of(pg_sessions, "ANN", 2028)
    assert (skipped.state, skipped.reason) == (DeliveryState.SKIPPED, "email_undeliverable")


# -- Postmark ---------------------------------------------------------------------------------------

def postmark_complaint(token: str | None, record_id: int = 42) -> dict:
    return {"RecordType": "SpamComplaint", "ID": record_id, "Type": "SpamComplaint", "TypeCode": 512,
            "Name": "Spam complaint", "Tag": "", "MessageID": "00000000-0000-0000-0000-000000000000",
            "Metadata": {"loyalty-token": token} if token else {}, "ServerID": 23, "MessageStream": "outbound",
            "Description": "The subscriber explicitly marked this message as spam.", "Details": "Test spam complaint details",
            "Email": "ann@members.example", "From": "club@example.com", "BouncedAt": "2027-06-15T10:00:00.0000000Z",
            "DumpAvailable": True, "Inactive": True, "CanActivate": False, "Subject": "Happy birthday"}


def test_a_postmark_complaint_withdraws_consent_and_stops_the_next_planned_email(runtime, web, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("ANN"), make_member("BOB"))
    senders = sent_birthdays(runtime, smtp_sink)
    # next year's birthday emails are planned (not sent yet) when Ann's complaint arrives
    with runtime.sessions() as session:
        context = plan_context(session, runtime.campaigns, runtime.program, BIRTHDAY_2028)
    with runtime.sessions() as session, session.begin():
        plan_campaign(session, runtime.campaigns.campaigns["birthday"], context)
    assert delivery_of(pg_sessions, "ANN", 2028).state == DeliveryState.PLANNED

    complaint = json.dumps(postmark_complaint(token_in_address(senders["ann@members.example"]))).encode()
    assert web.post("/feedback/postmark", content=complaint).status_code == 401
    wrong = web.post("/feedback/postmark", content=complaint, auth=(POSTMARK[0], "not-the-password-at-all"))
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Basic")
    answer = web.post("/feedback/postmark", content=complaint, auth=POSTMARK)
    assert answer.status_code == 200 and answer.json() == {"applied": 1, "duplicates": 0}

    ann = member(pg_sessions, "ANN")
    assert (ann.email_opt_in, ann.email_consent_source) == (False, "complaint:postmark")
    [audit] = audits(pg_sessions, "optout.email")
    assert audit.actor == "provider:postmark" and audit.member_id == ann.id
    [row] = feedback_rows(pg_sessions)
    assert (row.kind, row.effect, row.delivery_id) == ("complaint", "consent_withdrawn", delivery_of(pg_sessions, "ANN").id)
    assert web.post("/feedback/postmark", content=complaint, auth=POSTMARK).json() == {"applied": 0, "duplicates": 1}
    assert len(audits(pg_sessions, "optout.email")) == 1

    seen = len(smtp_sink.envelopes)
    deliver(runtime, due_delivery_ids(runtime, BIRTHDAY_2028), as_of=BIRTHDAY_2028)
    assert [rcpts for _, rcpts in smtp_sink.envelopes[seen:]] == [["bob@members.example"]]
    stopped = delivery_of(pg_sessions, "ANN", 2028)
    assert (stopped.state, stopped.reason) == (DeliveryState.SKIPPED, "consent_withdrawn")


def test_a_postmark_bounce_without_our_token_acts_on_the_address(web, pg_sessions):
    add_members(pg_sessions, make_member("ANN"))
    bounce = {**postmark_complaint(None, 77), "RecordType": "Bounce", "Type": "HardBounce", "TypeCode": 1}
    assert web.post("/feedback/postmark", content=b"{" + b" " * 1_000_000 + b"}", auth=POSTMARK).status_code == 413
    answer = web.post("/feedback/postmark", content=json.dumps(bounce).encode(), auth=POSTMARK)
    assert answer.json() == {"applied": 1, "duplicates": 0}
    assert member(pg_sessions, "ANN").email_status == ContactStatus.UNDELIVERABLE
    [row] = feedback_rows(pg_sessions)
    assert row.delivery_id is None and row.email_lookup is not None

    from models.privacy import export_member  # a privacy export lists it

    with pg_sessions() as session, session.begin():
        exported = export_member(session, session.get(Member, row.member_id), actor="test", reason="request",
                                 now=datetime(2027, 7, 1, tzinfo=UTC))
    assert [(f["provider"], f["kind"], f["effect"]) for f in exported["email_feedback"]] == [
        ("postmark", "hard_bounce", "undeliverable")]

    from models.privacy import erase_member  # erasing the member forgets the address's hash kept with it

    with pg_sessions() as session, session.begin():
        erase_member(session, session.get(Member, row.member_id), actor="test", reason="privacy request",
                     now=datetime(2027, 7, 1, tzinfo=UTC))
    assert feedback_rows(pg_sessions)[0].email_lookup is None


# -- the bounce mailbox over IMAP (Dovecot) -----------------------------------------------------------

@pytest.fixture
def dovecot():
    server = Dovecot().start()
    yield server
    server.stop()


def dsn_to(envelope_sender: str, recipient: str, status: str = "5.1.1", message_id: str = "<dsn-1@mx.example>") -> bytes:
    """What a receiving mail server sends back to the envelope sender (RFC 3464), as Postfix writes it."""
    return (
        f"Return-Path: <>\r\nDelivered-To: {envelope_sender}\r\n"
        "From: MAILER-DAEMON@mx.members.example (Mail Delivery System)\r\n"
        f"To: {envelope_sender}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Date: Tue, 15 Jun 2027 07:02:00 +0000\r\nMessage-ID: {message_id}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="DSN"\r\n\r\n'
        "--DSN\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered to one or more recipients.\r\n\r\n"
        "--DSN\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.members.example\r\nArrival-Date: Tue, 15 Jun 2027 07:01:58 +0000\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nOriginal-Recipient: rfc822;{recipient}\r\nAction: failed\r\n"
        f"Status: {status}\r\nDiagnostic-Code: smtp; 550 {status} <{recipient}>: Recipient address rejected\r\n\r\n"
        "--DSN\r\nContent-Type: text/rfc822-headers\r\n\r\nSubject: Happy birthday\r\n\r\n--DSN--\r\n"
    ).encode()


def run_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loyalty", *args], env={**os.environ, **env}, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_a_bounce_in_the_mailbox_is_traced_to_its_delivery_and_a_forged_one_is_not(
        env, runtime, pg_sessions, smtp_sink, dovecot):
    add_members(pg_sessions, make_member("ANN"), make_member("BOB"))
    senders = sent_birthdays(runtime, smtp_sink)
    dovecot.deliver(dsn_to(senders["ann@members.example"], "ann@members.example"))
    # anyone can write to the mailbox: a report for Bob with a made-up token changes nothing
    forged_sender = "bounces+" + "0" * 44 + "@mail.shop.example"
    dovecot.deliver(dsn_to(forged_sender, "bob@members.example", message_id="<dsn-2@mx.example>"))
    with dovecot.client() as imap:  # and a message that is no report at all
        imap.append("INBOX", None, None, b"Subject: Out of office\r\nTo: bounces@mail.shop.example\r\n\r\nAway.\r\n")

    result = run_cli({**env, "LOYALTY_BOUNCE_IMAP_URL": dovecot.url}, "bounces", "read")
    assert result.returncode == 0, result.stderr
    assert "Read 3 message(s): 2 bounce or complaint report(s) (1 undeliverable, 1 untraced)" in result.stdout

    assert member(pg_sessions, "ANN").email_status == ContactStatus.UNDELIVERABLE
    assert member(pg_sessions, "BOB").email_status == ContactStatus.OK
    [row] = feedback_rows(pg_sessions)
    assert (row.provider, row.kind, row.status) == ("imap", "hard_bounce", "5.1.1")
    assert row.delivery_id == delivery_of(pg_sessions, "ANN").id
    assert dovecot.unseen() == 0

    # the same report delivered twice by the mail server changes nothing twice
    dovecot.deliver(dsn_to(senders["ann@members.example"], "ann@members.example"))
    again = run_cli({**env, "LOYALTY_BOUNCE_IMAP_URL": dovecot.url}, "bounces", "read")
    assert "(1 duplicate)" in again.stdout and len(feedback_rows(pg_sessions)) == 1
    assert len(audits(pg_sessions, "email.undeliverable")) == 1


def test_a_wrong_mailbox_password_is_one_sentence(env, pg_engine, dovecot):
    url = dovecot.url.replace("bounce-mailbox-password", "wrong")
    result = run_cli({**env, "LOYALTY_BOUNCE_IMAP_URL": url}, "bounces", "read")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: The bounce mailbox refused the login; check LOYALTY_BOUNCE_IMAP_URL's "
                                     "user and password.")


# -- the report -------------------------------------------------------------------------------------

def test_the_report_shows_bounce_and_complaint_rates_and_warns_past_a_tenth_of_a_percent(
        env, runtime, web, sns, pg_sessions, smtp_sink, tmp_path):
    from tests.integration.test_support_commands import loyalty

    add_members(pg_sessions, make_member("ANN"), make_member("BOB"), make_member("CY"))
    senders = sent_birthdays(runtime, smtp_sink)
    bounce = sns.notification(ses_bounce(senders["bob@members.example"], "bob@members.example"))
    assert web.post("/feedback/ses", content=json.dumps(bounce)).json()["applied"] == 1
    complaint = postmark_complaint(token_in_address(senders["ann@members.example"]))
    assert web.post("/feedback/postmark", content=json.dumps(complaint).encode(), auth=POSTMARK).json()["applied"] == 1
    june = ("--from", "2027-06-01", "--to", "2027-06-30")

    data = json.loads(loyalty(env, "report", *june, "--json").stdout)["email_feedback"]
    assert data["campaigns"] == [{"campaign": "birthday", "emails_sent": 3, "bounced": 1, "hard_bounced": 1,
                                  "complaints": 1, "bounce_rate": 0.333333, "complaint_rate": 0.333333}]
    assert len(data["warnings"]) == 1 and data["warnings"][0].startswith("birthday: 1 spam complaint(s) for 3 email(s)")

    text = loyalty(env, "report", *june).stdout
    assert "Email bounces and complaints" in text and "33.33%" in text
    assert "warning: birthday: 1 spam complaint(s) for 3 email(s) sent (33.33%), above the 0.1%" in " ".join(text.split())
    page = tmp_path / "report.html"
    loyalty(env, "report", *june, "--html", str(page))
    html = page.read_text()
    assert "<h2>Email bounces and complaints</h2>" in html and "<b>Warning:</b> birthday: 1 spam complaint" in html
