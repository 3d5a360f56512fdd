"""What the relays and the bounce mailbox say about an email after it left, read and verified: pure.

Each reader turns one provider's notification into :class:`Notice` values (a hard bounce, a soft
bounce or a complaint, about one recipient) or raises :class:`FeedbackProblem` with one sentence;
every signature check is a function of the bytes, the headers and a key, with no I/O. What a notice
changes is written by ``workers/email_bounces.py``.

- **Amazon SES through SNS**: the SNS envelope is signed (RSA, SHA1 for ``SignatureVersion`` 1,
  SHA256 for 2) over ``Key\\nValue\\n`` lines of fixed fields (AWS's documented algorithm); the
  certificate comes from ``SigningCertURL``, which must be ``https://sns.<region>.amazonaws.com/...pem``.
  The SES notification inside (``notificationType`` or ``eventType``: Bounce, Complaint) names the
  envelope sender it was sent with (``mail.source``: our bounce address with its token).
- **SendGrid's Event Webhook**: ECDSA (P-256, SHA256) over the timestamp header followed by the raw
  body, checked with the public key the user copies from SendGrid; events ``bounce`` (``type``
  ``bounce``: hard, ``blocked``: soft) and ``spamreport``; the original Message-ID is ``smtp-id``.
- **Postmark**: bounce and spam-complaint webhooks (``RecordType`` Bounce / SpamComplaint); Postmark
  signs nothing, so its webhook URL carries basic-auth credentials we check; our token comes back
  in ``Metadata`` (the ``X-PM-Metadata-loyalty-token`` header we send).
- **The bounce mailbox**: delivery status notifications (RFC 3464 ``multipart/report;
  report-type=delivery-status``) with ``Action: failed``, and abuse reports (RFC 5965,
  ``report-type=feedback-report``), read with the standard library's email parser. A DSN is sent to
  the envelope sender, so its token is in the recipient headers; anyone can write to a mailbox, so
  only a validly signed token is acted on (checked by the caller with ``core.tokens``).

Hard or soft: an SES ``Permanent`` bounce is hard, ``Transient`` and ``Undetermined`` soft; a DSN
status ``5.x.x`` is hard except a full mailbox (``x.2.2``) or a message too large (``x.3.4``), which
say nothing about the address; ``4.x.x`` is soft.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from core.tokens import token_in_address

HARD, SOFT, COMPLAINT = "hard_bounce", "soft_bounce", "complaint"
#: AWS's own hosts for SNS certificates and subscription URLs (the commercial and the China partitions).
SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
SOFT_DETAILS = frozenset({"2.2", "3.4"})  # mailbox full, message too large: not the address's fault
TOKEN_HEADER = "X-PM-Metadata-loyalty-token"


class FeedbackProblem(ValueError):
    """A notification that cannot be read; its text is one sentence that quotes nothing it carried."""


@dataclass(frozen=True)
class Notice:
    key: str  # the provider's id for this notice and recipient: a duplicate has the same
    provider: str  # ses, sendgrid, postmark, imap
    kind: str  # HARD, SOFT or COMPLAINT
    address: str | None  # the recipient it is about
    token: str | None = None  # our bounce token as found (not yet verified)
    message_id: str | None = None  # the original email's Message-ID, when the provider gives it
    status: str | None = None  # "5.1.1", or the provider's type; never an address
    occurred_at: datetime | None = None


def _text(value: object, limit: int = 320) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _instant(value: object) -> datetime | None:
    """An ISO 8601 time (Postmark writes 7 decimals), or a Unix time, as aware UTC; None if unreadable."""
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str) and value:
            text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00")
            parsed = datetime.fromisoformat(text)
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise FeedbackProblem(f"the body is not {what} JSON") from None


# -- Amazon SES through SNS --------------------------------------------------------------------------

SNS_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
_SNS_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}


def sns_envelope(body: bytes) -> dict[str, str]:
    """The SNS message's fields, checked for what its signature and handling need."""
    document = _json(body, "SNS")
    if not isinstance(document, dict) or document.get("Type") not in SNS_TYPES:
        raise FeedbackProblem("the body is not an SNS message (Type Notification or SubscriptionConfirmation)")
    if document.get("Subject") is None:
        document.pop("Subject", None)  # signed only when present
    for name in (*_SNS_SIGNED[document["Type"]], "Signature", "SignatureVersion", "SigningCertURL"):
        if name == "Subject" and name not in document:
            continue
        if not isinstance(document.get(name), str):
            raise FeedbackProblem(f"the SNS message has no {name} field")
    if document["SignatureVersion"] not in ("1", "2"):
        raise FeedbackProblem("the SNS message's SignatureVersion is neither 1 nor 2")
    return document


def sns_string_to_sign(envelope: dict[str, str]) -> bytes:
    """AWS's canonical form: ``Key\\nValue\\n`` for each signed field present, in this order."""
    lines = []
    for name in _SNS_SIGNED[envelope["Type"]]:
        if name in envelope and envelope[name] is not None:
            lines += [name, envelope[name]]
    return ("\n".join(lines) + "\n").encode("utf-8")


def sns_url_allowed(url: str, host_pattern: re.Pattern[str] = SNS_HOST, *, pem: bool = False,
                    ports: tuple[int | None, ...] = (None, 443)) -> bool:
    """An https URL on an SNS host, on https's port (and for a certificate, a ``.pem`` path)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return False
    return (parts.scheme == "https" and host_pattern.fullmatch(host) is not None and port in ports
            and not parts.username and (not pem or parts.path.endswith(".pem")))


def sns_signature_valid(envelope: dict[str, str], certificate_pem: bytes) -> bool:
    """Whether ``Signature`` is the certificate key's RSA signature of :func:`sns_string_to_sign`."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        key = x509.load_pem_x509_certificate(certificate_pem).public_key()
        signature = base64.b64decode(envelope["Signature"], validate=True)
    except (ValueError, binascii.Error):
        return False
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    algorithm = hashes.SHA1() if envelope["SignatureVersion"] == "1" else hashes.SHA256()
    try:
        key.verify(signature, sns_string_to_sign(envelope), padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        return False
    return True


def ses_notices(message: str) -> list[Notice]:
    """The bounces and complaints of an SES notification (an SNS ``Message``); [] for other types, and
    for a message that is no SES notification at all (SES's own test message when a topic is set up)."""
    try:
        document = json.loads(message)
    except (ValueError, RecursionError):
        return []
    if not isinstance(document, dict):
        return []
    kind = document.get("notificationType") or document.get("eventType")
    mail: dict[str, Any] = document["mail"] if isinstance(document.get("mail"), dict) else {}
    token = token_in_address(mail.get("source") or "") if isinstance(mail.get("source"), str) else None
    common: dict[str, Any] = mail["commonHeaders"] if isinstance(mail.get("commonHeaders"), dict) else {}
    for header in mail["headers"] if isinstance(mail.get("headers"), list) else []:
        if isinstance(header, dict) and str(header.get("name", "")).lower() == TOKEN_HEADER.lower():
            token = token or _text(header.get("value"), 64)
    message_id = _text(common.get("messageId"), 200)
    if kind == "Bounce":
        bounce = document.get("bounce")
        if not isinstance(bounce, dict) or not isinstance(bounce.get("bouncedRecipients"), list):
            raise FeedbackProblem("the SES bounce has no bouncedRecipients")
        hard = bounce.get("bounceType") == "Permanent"
        status = f"{bounce.get('bounceType')}/{bounce.get('bounceSubType')}"[:64]
        recipients, section = bounce["bouncedRecipients"], bounce
    elif kind == "Complaint":
        complaint = document.get("complaint")
        if not isinstance(complaint, dict) or not isinstance(complaint.get("complainedRecipients"), list):
            raise FeedbackProblem("the SES complaint has no complainedRecipients")
        hard, status = False, _text(complaint.get("complaintFeedbackType"), 64) or "complaint"
        recipients, section = complaint["complainedRecipients"], complaint
    else:
        return []  # Delivery, Send, Open...: nothing to act on
    feedback_id = _text(section.get("feedbackId"), 150) or _text(mail.get("messageId"), 150)
    if not feedback_id:
        raise FeedbackProblem("the SES notification has no feedbackId")
    notices = []
    for index, recipient in enumerate(recipients):
        address = _text(recipient.get("emailAddress")) if isinstance(recipient, dict) else None
        if address is None:
            raise FeedbackProblem(f"recipient {index + 1} of the SES notification has no emailAddress")
        notices.append(Notice(
            key=f"ses:{feedback_id}:{index}", provider="ses",
            kind=COMPLAINT if kind == "Complaint" else HARD if hard else SOFT,
            address=getaddresses([address])[0][1] or address, token=token, message_id=message_id,
            status=(_text(recipient.get("status"), 16) or status) if kind == "Bounce" else status,
            occurred_at=_instant(section.get("timestamp")),
        ))
    return notices


# -- SendGrid -----------------------------------------------------------------------------------------

def sendgrid_signature_valid(public_key_b64: str, timestamp: str | None, body: bytes, signature_b64: str | None) -> bool:
    """SendGrid's Event Webhook signature: ECDSA P-256 / SHA256 over timestamp + body, base64 DER."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    if not timestamp or not signature_b64:
        return False
    try:
        key = load_der_public_key(base64.b64decode(public_key_b64))
        signature = base64.b64decode(signature_b64, validate=True)
    except (ValueError, binascii.Error):
        return False
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def sendgrid_notices(body: bytes) -> list[Notice]:
    events = _json(body, "SendGrid event")
    if not isinstance(events, list):
        raise FeedbackProblem("the body is not a list of SendGrid events")
    notices = []
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise FeedbackProblem(f"event {index + 1} is not an object")
        name = event.get("event")
        if name == "bounce":
            kind = SOFT if event.get("type") == "blocked" else HARD
        elif name == "spamreport":
            kind = COMPLAINT
        else:
            continue  # delivered, deferred, open, click, dropped...: nothing to act on
        event_id, address = _text(event.get("sg_event_id"), 150), _text(event.get("email"))
        if not event_id or not address:
            raise FeedbackProblem(f"event {index + 1} has no sg_event_id or email")
        notices.append(Notice(
            key=f"sendgrid:{event_id}", provider="sendgrid", kind=kind, address=address,
            token=_text(event.get("loyalty_token"), 64), message_id=_text(event.get("smtp-id"), 200),
            status=_text(event.get("status"), 16) or _text(event.get("type"), 16) or name,
            occurred_at=_instant(event.get("timestamp")),
        ))
    return notices


# -- Postmark -----------------------------------------------------------------------------------------

POSTMARK_HARD = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})
POSTMARK_SOFT = frozenset({"SoftBounce", "Transient", "DnsError"})


def basic_auth_valid(header: str | None, username: str, password: str) -> bool:
    """Whether an ``Authorization: Basic`` header carries these credentials (compared in constant time)."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (ValueError, binascii.Error):
        return False
    expected = f"{username}:{password}".encode()
    return hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(expected).digest())


def postmark_notices(body: bytes) -> list[Notice]:
    record = _json(body, "Postmark webhook")
    if not isinstance(record, dict) or record.get("RecordType") not in ("Bounce", "SpamComplaint"):
        raise FeedbackProblem("the body is not a Postmark bounce or spam-complaint webhook (RecordType)")
    type_ = record.get("Type") if isinstance(record.get("Type"), str) else None  # a list or object is no type
    if record["RecordType"] == "SpamComplaint" or type_ == "SpamComplaint":
        kind = COMPLAINT
    elif type_ in POSTMARK_HARD:
        kind = HARD
    elif type_ in POSTMARK_SOFT:
        kind = SOFT
    else:
        return []  # auto-replies, challenge verifications, subscribe requests...: not about the address
    record_id, address = record.get("ID"), _text(record.get("Email"))
    if not isinstance(record_id, (int, str)) or isinstance(record_id, bool) or not address:
        raise FeedbackProblem("the Postmark webhook has no ID or Email")
    metadata: dict[str, Any] = record["Metadata"] if isinstance(record.get("Metadata"), dict) else {}
    return [Notice(
        key=f"postmark:{record['RecordType']}:{str(record_id)[:100]}", provider="postmark", kind=kind,
        address=address, token=_text(metadata.get("loyalty-token"), 64), status=_text(type_, 64),
        occurred_at=_instant(record.get("BouncedAt")),
    )]


# -- the bounce mailbox: RFC 3464 delivery status notifications, RFC 5965 abuse reports ----------------

_RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "To")


def mailbox_notices(raw: bytes) -> list[Notice]:
    """The failed recipients of a DSN, or the complaint of an abuse report; [] for any other email."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    if message.get_content_type() != "multipart/report":
        return []
    param = message.get_param("report-type")
    report_type = param.lower() if isinstance(param, str) else ""
    payload = message.get_payload() if message.is_multipart() else []
    parts = [part for part in payload if isinstance(part, Message)] if isinstance(payload, list) else []
    original = _original_headers(parts)
    token = _token(message, original)
    message_id = _clean_id(original.get("Message-ID")) if original is not None else None
    base = _key_base(message, raw)
    if report_type == "delivery-status":
        return _dsn_notices(parts, base, token, message_id, _date(message))
    if report_type == "feedback-report":
        return _arf_notices(parts, original, base, token, message_id, _date(message))
    return []


def _dsn_notices(parts: list[Message], base: str, token: str | None, message_id: str | None,
                 date: datetime | None) -> list[Notice]:
    status_part = next((p for p in parts if p.get_content_type() == "message/delivery-status"), None)
    if status_part is None:
        raise FeedbackProblem("the delivery status notification has no message/delivery-status part")
    payload = status_part.get_payload()
    blocks = [block for block in payload if isinstance(block, Message)] if isinstance(payload, list) else []
    notices = []
    for index, block in enumerate(blocks[1:]):  # the first block is about the message, the rest one recipient each
        if (block.get("Action") or "").strip().lower() != "failed":
            continue  # delayed, delivered, relayed, expanded: not a bounce
        status = (block.get("Status") or "").strip().split(" ")[0]
        if not re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", status):
            continue
        recipient = _typed_address(block.get("Original-Recipient")) or _typed_address(block.get("Final-Recipient"))
        detail = status.split(".", 1)[1]
        hard = status.startswith("5.") and not any(detail.startswith(soft + ".") or detail == soft
                                                  for soft in SOFT_DETAILS)
        notices.append(Notice(key=f"imap:{base}:{index}", provider="imap", kind=HARD if hard else SOFT,
                              address=recipient, token=token, message_id=message_id, status=status,
                              occurred_at=date))
    return notices


def _arf_notices(parts: list[Message], original: Message | None, base: str, token: str | None,
                 message_id: str | None, date: datetime | None) -> list[Notice]:
    report = next((p for p in parts if p.get_content_type() == "message/feedback-report"), None)
    if report is None:
        return []
    payload = report.get_payload()
    fields = payload[0] if isinstance(payload, list) and payload and isinstance(payload[0], Message) else report
    if (fields.get("Feedback-Type") or "").strip().lower() != "abuse":
        return []
    address = _typed_address(fields.get("Original-Rcpt-To")) or (
        getaddresses([original.get("To") or ""])[0][1] if original is not None else None)
    return [Notice(key=f"imap:{base}:arf", provider="imap", kind=COMPLAINT, address=address or None,
                   token=token, message_id=message_id, status="abuse", occurred_at=date)]


def _original_headers(parts: list[Message]) -> Message | None:
    """The headers of the email the report is about (its message/rfc822 or text/rfc822-headers part)."""
    for part in parts:
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            return inner[0] if isinstance(inner, list) and inner and isinstance(inner[0], Message) else None
        if part.get_content_type() == "text/rfc822-headers":
            payload = part.get_payload(decode=True)
            return email.message_from_bytes(payload if isinstance(payload, bytes) else b"",
                                            policy=email.policy.compat32)
    return None


def _token(report: Message, original: Message | None) -> str | None:
    """Our token: the report's recipient (a DSN goes to the envelope sender), else a header of the original."""
    for name in _RECIPIENT_HEADERS:
        for value in report.get_all(name) or []:
            for _, address in getaddresses([str(value)]):
                if token_in_address(address):
                    return token_in_address(address)
    if original is not None:
        header = original.get(TOKEN_HEADER)
        if header:
            return str(header).strip()
        for _, address in getaddresses([str(original.get("Return-Path") or "")]):
            if token_in_address(address):
                return token_in_address(address)
    return None


def _typed_address(value: str | None) -> str | None:
    """``rfc822; someone@example.com`` (RFC 3464 address-type; address) → the address."""
    if not value:
        return None
    kind, _, address = str(value).partition(";")
    address = address.strip().strip("<>") if kind.strip().lower() == "rfc822" else ""
    return address[:320] or None


def _clean_id(value: object) -> str | None:
    return str(value).strip()[:200] if value else None


def _key_base(message: Message, raw: bytes) -> str:
    """The report's own Message-ID (a mail server may deliver a report twice), else its bytes' digest."""
    own = str(message.get("Message-ID") or "").strip()
    return hashlib.sha256((own or raw.decode("latin-1")).encode()).hexdigest()[:40]


def _date(message: Message) -> datetime | None:
    try:
        value = parsedate_to_datetime(str(message.get("Date") or ""))
    except (TypeError, ValueError):
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
