"""Reading the relays' and the mailbox's bounce and complaint notifications, and their signatures."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from core.errors import ConfigurationError
from core.settings import load_settings
from core.tokens import bounce_token, occurrence_digest, read_bounce_token, token_in_address
from workers.channels import email_feedback as fb
from workers.channels.email import message_id_for, return_path_for

SECRET = "unit-secret-0123456789abcdef"


# -- the bounce address -----------------------------------------------------------------------------

def test_the_bounce_token_names_the_occurrence_of_the_message_id_and_is_signed():
    token = bounce_token(SECRET, "birthday:M1:2027")
    assert len(token) == 44 and token == token.lower()
    assert read_bounce_token(SECRET, token) == occurrence_digest("birthday:M1:2027")
    assert message_id_for("birthday:M1:2027", "Club <club@shop.example>") == f"<{token[:32]}@shop.example>"
    assert read_bounce_token(SECRET, token.upper()) == token[:32]  # a mailbox may change the case
    forged = token[:32] + ("0" * 12 if token[32:] != "0" * 12 else "1" * 12)
    assert read_bounce_token(SECRET, forged) is None
    assert read_bounce_token("another-secret-0123456789", token) is None
    assert read_bounce_token(SECRET, "not-a-token") is None


def test_every_email_goes_from_a_bounce_address_with_its_token():
    settings = load_settings({"LOYALTY_BOUNCE_ADDRESS": "bounces@mail.shop.example"})
    address = return_path_for(settings)("birthday:M1:2027")
    local, _, domain = address.partition("@")
    assert domain == "mail.shop.example" and local.startswith("bounces+") and len(local) <= 64
    assert token_in_address(f"<{address}>") == bounce_token(settings.secret, "birthday:M1:2027")
    default = return_path_for(load_settings({}))("birthday:M1:2027")  # no variable: the sender's address
    assert default.startswith("club+") and default.endswith("@example.com")


def test_the_outbox_shows_the_bounce_address_as_the_mailbox_would(tmp_path):
    from workers.channels.base import OutgoingEmail
    from workers.channels.outbox import OutboxEmailChannel

    settings = load_settings({"LOYALTY_BOUNCE_ADDRESS": "bounces@mail.shop.example"})
    email = OutgoingEmail("birthday:M1:2027", "ann@members.example", settings.email_from, "Hi", "Hi", "<p>Hi</p>",
                          "http://127.0.0.1:8000/unsubscribe/x")
    provider_id = OutboxEmailChannel(tmp_path, return_path=return_path_for(settings)).send(email)
    first = (tmp_path / "birthday_M1_2027.eml").read_bytes().split(b"\n", 1)[0].decode()
    assert first == f"Return-Path: <{return_path_for(settings)('birthday:M1:2027')}>"
    # its provider id is the Message-ID, as SMTP's, so a bounce's token finds the delivery on the outbox too
    assert provider_id == message_id_for("birthday:M1:2027", settings.email_from)


@pytest.mark.parametrize(("name", "value", "words"), [
    ("LOYALTY_BOUNCE_ADDRESS", "Bounces <bounces@shop.example>", "plain ASCII address"),
    ("LOYALTY_BOUNCE_ADDRESS", "bounces+x@shop.example", "without a name or '+'"),
    ("LOYALTY_BOUNCE_ADDRESS", "a-very-long-local-part-indeed@shop.example", "use at most 19"),
    ("LOYALTY_SOFT_BOUNCE_LIMIT", "0", "from 1 to 100"),
    ("SES_SNS_TOPIC_ARNS", "ses-feedback", "not an SNS topic ARN"),
    ("SENDGRID_WEBHOOK_PUBLIC_KEY", "bm90IGEga2V5", "Signature Verification"),
    ("POSTMARK_WEBHOOK_USERNAME", "postmark", "POSTMARK_WEBHOOK_PASSWORD is not set"),
    ("LOYALTY_BOUNCE_IMAP_URL", "pop3://u:p@host", "imaps://"),
    ("LOYALTY_BOUNCE_IMAP_URL", "imaps://host/INBOX", "a user and a password"),
])
def test_a_malformed_feedback_variable_is_named_in_one_sentence(name, value, words):
    with pytest.raises(ConfigurationError) as caught:
        load_settings({name: value})
    assert name in str(caught.value) and words in str(caught.value)


def test_the_feedback_variables_read():
    key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    settings = load_settings({
        "SES_SNS_TOPIC_ARNS": "arn:aws:sns:eu-west-1:123456789012:ses-feedback, arn:aws:sns:us-east-1:123456789012:b",
        "SENDGRID_WEBHOOK_PUBLIC_KEY": base64.b64encode(key).decode(),
        "POSTMARK_WEBHOOK_USERNAME": "postmark", "POSTMARK_WEBHOOK_PASSWORD": "p" * 20,
        "LOYALTY_BOUNCE_IMAP_URL": "imap+starttls://bounces%40shop.example:pw@127.0.0.1:1143/Bounces",
        "LOYALTY_SOFT_BOUNCE_LIMIT": "5",
    }).feedback
    assert settings.ses_topic_arns[1] == "arn:aws:sns:us-east-1:123456789012:b"
    assert settings.imap.username == "bounces@shop.example" and settings.imap.mailbox == "Bounces"
    assert settings.imap.port == 1143 and settings.imap.security == "starttls"
    assert settings.soft_bounce_limit == 5
    assert "pw" not in repr(settings) and "p" * 20 not in repr(settings)


# -- Amazon SES through SNS -------------------------------------------------------------------------

def _certificate(key) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
                   .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.PEM)


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
CERTIFICATE = _certificate(RSA_KEY)
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"


def sns_message(message: dict | str, *, kind: str = "Notification", version: str = "1", key=RSA_KEY, **extra) -> dict:
    envelope = {"Type": kind, "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324", "TopicArn": TOPIC,
                "Message": message if isinstance(message, str) else json.dumps(message),
                "Timestamp": "2027-06-15T07:01:00.000Z", "SignatureVersion": version,
                "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem", **extra}
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(fb.sns_string_to_sign(envelope), padding.PKCS1v15(), algorithm)
    return {**envelope, "Signature": base64.b64encode(signature).decode()}


SES_BOUNCE = {
    "notificationType": "Bounce",
    "bounce": {"bounceType": "Permanent", "bounceSubType": "General", "feedbackId": "0102017a-bounce-000000",
               "timestamp": "2027-06-15T07:00:59.000Z", "reportingMTA": "dsn; a27-1.smtp-out.eu-west-1.amazonses.com",
               "bouncedRecipients": [{"emailAddress": "ann@members.example", "action": "failed", "status": "5.1.1",
                                      "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]},
    "mail": {"timestamp": "2027-06-15T07:00:58.000Z", "messageId": "0102017a-ses-id",
             "source": "bounces+" + "a" * 44 + "@mail.shop.example", "destination": ["ann@members.example"],
             "commonHeaders": {"messageId": "<abc@shop.example>", "subject": "Happy birthday"}},
}


def test_an_sns_notification_signed_with_sha1_or_sha256_verifies_and_any_change_does_not():
    for version in ("1", "2"):
        envelope = fb.sns_envelope(json.dumps(sns_message(SES_BOUNCE, version=version)).encode())
        assert fb.sns_signature_valid(envelope, CERTIFICATE)
        assert not fb.sns_signature_valid({**envelope, "Message": envelope["Message"].replace("Permanent", "Transient")},
                                          CERTIFICATE)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert not fb.sns_signature_valid(sns_message(SES_BOUNCE, key=other), CERTIFICATE)
    assert not fb.sns_signature_valid({**sns_message(SES_BOUNCE), "Signature": "bm90"}, CERTIFICATE)


def test_a_subject_is_signed_when_present_and_a_null_one_is_not_a_field():
    with_subject = sns_message(SES_BOUNCE, Subject="Amazon SES Email Event Notification")
    assert "Subject\nAmazon SES" in fb.sns_string_to_sign(with_subject).decode()
    assert fb.sns_signature_valid(fb.sns_envelope(json.dumps(with_subject).encode()), CERTIFICATE)
    null_subject = {**sns_message(SES_BOUNCE), "Subject": None}
    assert fb.sns_signature_valid(fb.sns_envelope(json.dumps(null_subject).encode()), CERTIFICATE)


def test_the_subscription_confirmation_signs_its_subscribe_url_and_token():
    confirmation = sns_message("You have chosen to subscribe...", kind="SubscriptionConfirmation", version="2",
                               SubscribeURL="https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=t",
                               Token="t" * 40)
    text = fb.sns_string_to_sign(confirmation).decode()
    assert text.startswith("Message\nYou have chosen") and "SubscribeURL\nhttps://" in text and "Token\nttt" in text
    assert fb.sns_signature_valid(fb.sns_envelope(json.dumps(confirmation).encode()), CERTIFICATE)


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem", True),
    ("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem", True),
    ("http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem", False),
    ("https://sns.eu-west-1.amazonaws.com.evil.example/x.pem", False),
    ("https://evil.example/sns.eu-west-1.amazonaws.com.pem", False),
    ("https://sns.eu-west-1.amazonaws.com:8443/x.pem", False),
    ("https://user@sns.eu-west-1.amazonaws.com/x.pem", False),
    ("https://sns.eu-west-1.amazonaws.com/x.txt", False),
])
def test_the_signing_certificate_comes_only_from_an_sns_host(url, allowed):
    assert fb.sns_url_allowed(url, pem=True) is allowed


def test_ses_bounces_and_complaints_become_notices():
    [hard] = fb.ses_notices(json.dumps(SES_BOUNCE))
    assert (hard.kind, hard.address, hard.status, hard.token) == (fb.HARD, "ann@members.example", "5.1.1", "a" * 44)
    assert hard.key == "ses:0102017a-bounce-000000:0" and hard.message_id == "<abc@shop.example>"
    transient = {**SES_BOUNCE, "bounce": {**SES_BOUNCE["bounce"], "bounceType": "Transient", "bounceSubType": "MailboxFull"}}
    assert fb.ses_notices(json.dumps(transient))[0].kind == fb.SOFT
    complaint = {"eventType": "Complaint", "mail": SES_BOUNCE["mail"],
                 "complaint": {"feedbackId": "0102017a-complaint", "complaintFeedbackType": "abuse",
                               "timestamp": "2027-06-15T08:00:00Z",
                               "complainedRecipients": [{"emailAddress": "ann@members.example"}]}}
    [notice] = fb.ses_notices(json.dumps(complaint))
    assert (notice.kind, notice.status, notice.key) == (fb.COMPLAINT, "abuse", "ses:0102017a-complaint:0")
    assert fb.ses_notices(json.dumps({"notificationType": "Delivery", "mail": {}})) == []
    assert fb.ses_notices("Successfully validated SNS topic for Amazon SES event publishing.") == []
    with pytest.raises(fb.FeedbackProblem, match="bouncedRecipients"):
        fb.ses_notices(json.dumps({"notificationType": "Bounce", "bounce": {}}))


# -- SendGrid ---------------------------------------------------------------------------------------

EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC_PUBLIC = base64.b64encode(EC_KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()


def sendgrid_signature(timestamp: str, body: bytes, key=EC_KEY) -> str:
    return base64.b64encode(key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()


def test_a_sendgrid_signature_covers_the_timestamp_and_the_body():
    body = b'[{"event":"bounce"}]'
    signature = sendgrid_signature("1781506800", body)
    assert fb.sendgrid_signature_valid(EC_PUBLIC, "1781506800", body, signature)
    assert not fb.sendgrid_signature_valid(EC_PUBLIC, "1781506801", body, signature)
    assert not fb.sendgrid_signature_valid(EC_PUBLIC, "1781506800", body + b" ", signature)
    other = ec.generate_private_key(ec.SECP256R1())
    assert not fb.sendgrid_signature_valid(EC_PUBLIC, "1781506800", body, sendgrid_signature("1781506800", body, other))
    assert not fb.sendgrid_signature_valid(EC_PUBLIC, None, body, signature)
    assert not fb.sendgrid_signature_valid(EC_PUBLIC, "1781506800", body, "%%%")


def test_sendgrid_bounce_blocked_and_spam_report_events_become_notices():
    events = [
        {"email": "ann@members.example", "timestamp": 1781506800, "smtp-id": "<abc@shop.example>", "event": "bounce",
         "type": "bounce", "status": "5.1.1", "reason": "550 user unknown", "sg_event_id": "ZGVsaXZlcmVk-1"},
        {"email": "bob@members.example", "timestamp": 1781506801, "event": "bounce", "type": "blocked",
         "status": "4.7.1", "sg_event_id": "ZGVsaXZlcmVk-2"},
        {"email": "cy@members.example", "timestamp": 1781506802, "event": "spamreport", "sg_event_id": "ZGVsaXZlcmVk-3"},
        {"email": "dee@members.example", "timestamp": 1781506803, "event": "delivered", "sg_event_id": "ZGVsaXZlcmVk-4"},
    ]
    notices = fb.sendgrid_notices(json.dumps(events).encode())
    assert [(n.kind, n.key) for n in notices] == [(fb.HARD, "sendgrid:ZGVsaXZlcmVk-1"), (fb.SOFT, "sendgrid:ZGVsaXZlcmVk-2"),
                                                  (fb.COMPLAINT, "sendgrid:ZGVsaXZlcmVk-3")]
    assert notices[0].message_id == "<abc@shop.example>" and notices[0].status == "5.1.1"
    assert notices[0].occurred_at == datetime.fromtimestamp(1781506800, UTC)
    with pytest.raises(fb.FeedbackProblem, match="not a list"):
        fb.sendgrid_notices(b'{"event": "bounce"}')


# -- Postmark ---------------------------------------------------------------------------------------

def test_postmark_basic_auth():
    header = "Basic " + base64.b64encode(b"postmark:" + b"p" * 20).decode()
    assert fb.basic_auth_valid(header, "postmark", "p" * 20)
    assert not fb.basic_auth_valid(header, "postmark", "q" * 20)
    assert not fb.basic_auth_valid("Bearer x", "postmark", "p" * 20)
    assert not fb.basic_auth_valid(None, "postmark", "p" * 20)
    assert not fb.basic_auth_valid("Basic %%%", "postmark", "p" * 20)


POSTMARK_BOUNCE = {
    "RecordType": "Bounce", "ID": 4323372036854775807, "Type": "HardBounce", "TypeCode": 1, "Name": "Hard bounce",
    "Tag": "", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Metadata": {"loyalty-token": "b" * 44},
    "ServerID": 23, "MessageStream": "outbound", "Description": "The server was unable to deliver your message",
    "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
    "Email": "ann@members.example", "From": "club@shop.example", "BouncedAt": "2027-06-15T07:01:54.9070259Z",
    "DumpAvailable": True, "Inactive": True, "CanActivate": True, "Subject": "Happy birthday",
}


def test_postmark_bounce_and_spam_complaint_webhooks_become_notices():
    [hard] = fb.postmark_notices(json.dumps(POSTMARK_BOUNCE).encode())
    assert (hard.kind, hard.key, hard.token) == (fb.HARD, "postmark:Bounce:4323372036854775807", "b" * 44)
    assert hard.occurred_at == datetime(2027, 6, 15, 7, 1, 54, 907025, tzinfo=UTC)
    soft = {**POSTMARK_BOUNCE, "Type": "SoftBounce", "TypeCode": 4096}
    assert fb.postmark_notices(json.dumps(soft).encode())[0].kind == fb.SOFT
    complaint = {**POSTMARK_BOUNCE, "RecordType": "SpamComplaint", "Type": "SpamComplaint", "TypeCode": 512}
    assert fb.postmark_notices(json.dumps(complaint).encode())[0].kind == fb.COMPLAINT
    auto_reply = {**POSTMARK_BOUNCE, "Type": "AutoResponder", "TypeCode": 64}
    assert fb.postmark_notices(json.dumps(auto_reply).encode()) == []
    with pytest.raises(fb.FeedbackProblem, match="RecordType"):
        fb.postmark_notices(b'{"RecordType": "Delivery"}')


@pytest.mark.parametrize("type_", [[], {}, ["HardBounce"], 5, None])
def test_a_postmark_type_that_is_no_text_is_no_notice_rather_than_a_crash(type_):
    # A list or an object as Type once made the web app answer 500 (an unhashable value looked up in a set).
    assert fb.postmark_notices(json.dumps({**POSTMARK_BOUNCE, "Type": type_}).encode()) == []


def test_ses_headers_that_are_no_list_are_ignored():
    odd = {**SES_BOUNCE, "mail": {**SES_BOUNCE["mail"], "headers": 5}}
    assert [n.kind for n in fb.ses_notices(json.dumps(odd))] == [fb.HARD]


# -- the bounce mailbox: RFC 3464 and RFC 5965 -------------------------------------------------------

def dsn(recipients: list[tuple[str, str, str]], *, to: str, original_headers: str | None = None,
        message_id: str = "<dsn-1@mx.example>") -> bytes:
    """A delivery status notification as Postfix writes one: (recipient, action, status) per recipient."""
    blocks = "".join(
        f"\nFinal-Recipient: rfc822; {recipient}\nOriginal-Recipient: rfc822;{recipient}\nAction: {action}\n"
        f"Status: {code}\nDiagnostic-Code: smtp; 550 {code} no such user\n" for recipient, action, code in recipients)
    returned = ("--B\nContent-Type: text/rfc822-headers\n\n" + original_headers + "\n") if original_headers else ""
    return (
        "From: MAILER-DAEMON@mx.example (Mail Delivery System)\n"
        f"To: {to}\nSubject: Undelivered Mail Returned to Sender\nDate: Tue, 15 Jun 2027 07:02:00 +0000\n"
        f"Message-ID: {message_id}\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nI'm sorry to have to inform you that your message could not be delivered.\n\n"
        "--B\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.example\nArrival-Date: Tue, 15 Jun 2027 07:01:58 +0000\n" + blocks + "\n"
        + returned + "--B--\n"
    ).encode()


def test_a_dsn_names_each_failed_recipient_with_hard_or_soft_by_its_status():
    token = "c" * 44
    raw = dsn([("ann@members.example", "failed", "5.1.1"), ("bob@members.example", "failed", "5.2.2"),
               ("cy@members.example", "delayed", "4.4.1"), ("dee@members.example", "failed", "4.4.7")],
              to=f"bounces+{token}@mail.shop.example",
              original_headers="Message-ID: <abc@shop.example>\nSubject: Happy birthday\n")
    notices = fb.mailbox_notices(raw)
    assert [(n.address, n.kind, n.status) for n in notices] == [
        ("ann@members.example", fb.HARD, "5.1.1"), ("bob@members.example", fb.SOFT, "5.2.2"),
        ("dee@members.example", fb.SOFT, "4.4.7")]
    assert {n.token for n in notices} == {token} and notices[0].message_id == "<abc@shop.example>"
    assert len({n.key for n in notices}) == 3 and fb.mailbox_notices(raw)[0].key == notices[0].key
    assert notices[0].occurred_at == datetime(2027, 6, 15, 7, 2, tzinfo=UTC)


def test_the_token_is_also_found_in_the_returned_headers():
    raw = dsn([("ann@members.example", "failed", "5.1.1")], to="bounces@mail.shop.example",
              original_headers=f"Message-ID: <abc@shop.example>\n{fb.TOKEN_HEADER}: {'d' * 44}\n")
    assert fb.mailbox_notices(raw)[0].token == "d" * 44


def test_an_abuse_report_is_a_complaint_and_other_mail_is_nothing():
    raw = (
        "From: fbl@isp.example\nTo: fbl@shop.example\nMessage-ID: <arf-1@isp.example>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="A"\n\n'
        "--A\nContent-Type: text/plain\n\nThis is an email abuse report.\n\n"
        "--A\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\nUser-Agent: ISP-FBL/1.0\nVersion: 1\n"
        "Original-Rcpt-To: ann@members.example\n\n"
        f"--A\nContent-Type: text/rfc822-headers\n\nTo: ann@members.example\n{fb.TOKEN_HEADER}: {'e' * 44}\n\n--A--\n"
    ).encode()
    [notice] = fb.mailbox_notices(raw)
    assert (notice.kind, notice.address, notice.token) == (fb.COMPLAINT, "ann@members.example", "e" * 44)
    plain = EmailMessage()
    plain["Subject"] = "Out of office"
    plain.set_content("I am away.")
    assert fb.mailbox_notices(plain.as_bytes()) == []


def test_reading_the_mailbox_without_its_variable_says_what_to_set():
    from workers.email_bounces import read_mailbox

    with pytest.raises(fb.FeedbackProblem, match=r"LOYALTY_BOUNCE_IMAP_URL is not set.*; set it to .*imaps://"):
        read_mailbox(load_settings({}), None)  # type: ignore[arg-type]  # refused before any session


def test_the_clock_reads_the_bounce_mailbox_every_five_minutes_only_when_it_is_configured():
    from schedules.clock import build_scheduler

    without = build_scheduler(load_settings({}), tick_minutes=5)
    assert without.get_job("bounces.read_mailbox") is None
    configured = build_scheduler(load_settings({"LOYALTY_BOUNCE_IMAP_URL": "imaps://u:p@imap.example/INBOX"}),
                                 tick_minutes=5)
    job = configured.get_job("bounces.read_mailbox")
    assert job is not None and job.trigger.interval.total_seconds() == 300
