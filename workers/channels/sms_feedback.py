"""What Twilio's webhooks change: message status callbacks and inbound messages (STOP, START, HELP).

Both are refused by the web app unless ``X-Twilio-Signature`` validates against the URL Twilio
called, which is ``LOYALTY_PUBLIC_URL`` + the path (behind Heroku's router the request itself
arrives as plain http on another host, so its own URL would never validate).

A webhook is handled once: its key (``twilio:status:{MessageSid}:{MessageStatus}``,
``twilio:inbound:{MessageSid}``) is inserted in ``processed_webhooks`` in the same transaction as
its effect; a duplicate finds the key taken and changes nothing.

Status callbacks (the delivery is found by its ``provider_message_id``):

- ``delivered``: the delivery stays ``sent``; its detail says ``delivered``;
- ``undelivered`` / ``failed``: ``sent → failed`` with the reason of Twilio's ``ErrorCode``
  (``sms_opted_out``, ``sms_invalid_number``, ``sms_not_mobile`` as for a refused send, with the
  same effect on the member; any other code as ``twilio_<code>``);
- other statuses (queued, sent...) are steps on the way and change nothing;
- a final status for a SID no delivery has yet is kept (``early_status_callbacks``): Twilio may call
  back before the send's outcome (with the SID) commits, and it does not call again after our 200
  (nor after an error, unless the URL asks it to, and then only within 15 s). The sweeper applies
  it once the delivery has the SID (:func:`apply_early_statuses`), exactly as if it came then.

The signature is checked over the form's fields grouped by name once (the SDK looks each name's
values up in the mapping it is given: a multidict's look-up scans every field, so a form of 20,000
fields cost 20,000² comparisons).

Inbound messages, by Twilio's keywords (the whole message, any case; or Twilio's ``OptOutType``):
STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT withdraw SMS consent (source
``sms:STOP``); START, YES, UNSTOP give it (``sms:START``); HELP, INFO change nothing and get a
help text back naming the brand (the program's ``brand.shop_name``, its support address and
web site: :func:`help_reply`). Every member with that phone number is changed, and audited; nothing else is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker
from twilio.request_validator import RequestValidator

from campaigns.brand import Brand
from models.base import utcnow
from models.consent import record_consent
from models.db import transaction
from models.delivery import Delivery, DeliveryState
from models.member import Member
from models.personal_data import lookup
from models.webhooks import EarlyStatusCallback, ProcessedWebhook
from workers.channels.base import PermanentFailure
from workers.channels.sms_codes import failure_for_code
from workers.record import write_what_it_teaches

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})
FINAL_STATUSES = ("delivered", "undelivered", "failed")


class _Grouped(dict):
    """A form's values by name, each looked up once: what the SDK's validator asks of a multidict."""

    def getall(self, name: str) -> list[str]:
        return self[name]


def signature_is_valid(auth_token: str, url: str, fields: Iterable[tuple[str, str]], signature: str | None) -> bool:
    """True when ``signature`` is Twilio's for ``url`` and the form ``fields`` (name, value pairs)."""
    if not signature:
        return False
    grouped = _Grouped()
    for name, value in fields:
        grouped.setdefault(name, []).append(value)
    return RequestValidator(auth_token).validate(url, grouped, signature)


def help_reply(brand: Brand, public_url: str) -> str:
    """What a member who texts HELP gets back: who sends the texts (the name the texts carry), how to
    stop and restart them, and where to get help (the support address, the shop's site)."""
    parts = [f"{brand.shop_name}: reply STOP to stop our text messages, START to get them again."]
    if brand.support_email:
        parts.append(f"Help: {brand.support_email}.")
    parts.append(f"More: {brand.url or public_url}")
    return " ".join(parts)


def keyword_of(form: Mapping[str, str]) -> str | None:
    """``STOP``, ``START`` or ``HELP`` when the message is one of their keywords, else None."""
    opt_out_type = (form.get("OptOutType") or "").strip().upper()  # Twilio's Advanced Opt-Out says it
    word = opt_out_type or (form.get("Body") or "").strip().strip(".!").strip().upper()
    if word in STOP_WORDS:
        return "STOP"
    if word in START_WORDS:
        return "START"
    if word in HELP_WORDS:
        return "HELP"
    return None


def first_time(session: Session, key: str) -> bool:
    """Record the webhook ``key``; False if it was already recorded (a duplicate)."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    inserted = session.execute(
        insert(ProcessedWebhook).values(key=key[:200], received_at=utcnow())
        .on_conflict_do_nothing(index_elements=["key"]).returning(ProcessedWebhook.id)
    ).first()
    return inserted is not None


def apply_status(sessions: sessionmaker[Session], form: Mapping[str, str]) -> str:
    """Apply a status callback, or keep it until its SID is recorded; returns what happened (for the log)."""
    sid, status = form.get("MessageSid") or form.get("SmsSid"), (form.get("MessageStatus") or "").lower()
    if not sid or status not in FINAL_STATUSES:
        return "ignored"
    code = _int(form.get("ErrorCode"))
    with transaction(sessions) as session:
        outcome = _apply(session, sid, status, code)
        if outcome == "unknown_message":  # its send's outcome not recorded yet: kept for the sweeper
            _keep(session, sid, status, code)
            return "kept"
    return outcome


def apply_early_statuses(sessions: sessionmaker[Session], limit: int = 1000) -> int:
    """Apply the kept status callbacks whose SID a delivery now has; returns how many were applied.

    Each is applied as if it had just arrived (a duplicate of one applied meanwhile changes nothing)
    and forgotten in the same transaction."""
    applied = 0
    while True:
        with transaction(sessions) as session:
            kept = session.scalars(
                select(EarlyStatusCallback)
                .join(Delivery, (Delivery.provider_message_id == EarlyStatusCallback.message_sid) & (Delivery.channel == "sms"))
                .order_by(EarlyStatusCallback.id).limit(limit)
                .with_for_update(of=EarlyStatusCallback, skip_locked=True)
            ).unique().all()
            for callback in kept:
                _apply(session, callback.message_sid, callback.status, callback.error_code)
                session.delete(callback)
        applied += len(kept)
        if len(kept) < limit:
            return applied


def _keep(session: Session, sid: str, status: str, code: int | None) -> None:
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(
        insert(EarlyStatusCallback).values(message_sid=sid[:200], status=status, error_code=code, received_at=utcnow())
        .on_conflict_do_nothing(index_elements=["message_sid", "status"])
    )


def _apply(session: Session, sid: str, status: str, code: int | None) -> str:
    delivery = session.scalars(
        select(Delivery).where(Delivery.provider_message_id == sid, Delivery.channel == "sms").with_for_update()
    ).first()
    if delivery is None:
        return "unknown_message"
    if not first_time(session, f"twilio:status:{sid}:{status}"):
        return "duplicate"
    if delivery.state != DeliveryState.SENT:
        return "not_sent"
    now = utcnow()
    if status == "delivered":
        delivery.detail, delivery.updated_at = "delivered", now
        return "delivered"
    failure = failure_for_code(code, None, status)
    reason = failure.reason if isinstance(failure, PermanentFailure) and failure.teaches else None
    delivery.state = DeliveryState.FAILED
    delivery.reason = reason or (f"twilio_{code}" if code else f"sms_{status}")
    delivery.detail = f"{status} {code or ''}".strip()
    delivery.updated_at = delivery.finished_at = now
    if reason:
        write_what_it_teaches(session, delivery.member_id, failure, actor="provider:sms", delivery_id=delivery.id,
                              at=now)
    return status


def apply_inbound(sessions: sessionmaker[Session], form: Mapping[str, str]) -> tuple[str | None, int]:
    """Apply an inbound message; returns (its keyword or None, how many members changed)."""
    sid, phone = form.get("MessageSid") or form.get("SmsSid"), (form.get("From") or "").strip()
    keyword = keyword_of(form)
    if not sid or not phone or keyword in (None, "HELP"):
        return keyword, 0
    opt_in = keyword == "START"
    now = utcnow()
    changed = 0
    with transaction(sessions) as session:
        if not first_time(session, f"twilio:inbound:{sid}"):
            return keyword, 0
        members = session.execute(
            select(Member.id).where(Member.phone_lookup == lookup("phone", phone), Member.sms_opt_in.is_not(opt_in)).with_for_update()
        ).scalars().all()
        for member_id in members:
            changed += record_consent(session, member_id, "sms", granted=opt_in, source=f"sms:{keyword}", at=now,
                                      actor="member", reason=f"texted {keyword}", details={"message_sid": sid})
    return keyword, changed


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None
