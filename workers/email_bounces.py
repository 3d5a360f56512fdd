"""What a bounce or a complaint changes, and the bounce mailbox read over IMAP.

A notice (``workers/channels/email_feedback.py``) is traced to its delivery by our signed token
(the bounce address's ``+TOKEN``, or Postmark's metadata) or by the original Message-ID a relay
reports; its member is the delivery's, else (a relay's verified webhook only) every member with the
address. In one transaction with an ``email_feedback`` row whose unique key is the provider's id for
the notice (a duplicate finds it taken and changes nothing):

- a hard bounce marks the member's address ``undeliverable`` (``email_status``): later emails are
  skipped with ``email_undeliverable``, until the address changes;
- a soft bounce is counted; ``LOYALTY_SOFT_BOUNCE_LIMIT`` of them (on different emails to the same
  address) make it undeliverable;
- a complaint withdraws the member's email consent at once (source ``complaint:<provider>``), so
  the next tick plans nothing for them and a message already planned is skipped when sent.

Each change is audited (actor ``provider:<provider>``). A notice about an address the member no
longer has changes nothing but is kept for the report. The mailbox is anyone's to write to: a report
read there acts only with a validly signed token.
"""

from __future__ import annotations

import imaplib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import distinct, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from core.feedback_settings import ImapTarget
from core.settings import Settings
from core.tokens import read_bounce_token
from models.audit import AuditAction, AuditEntry
from models.base import utcnow
from models.consent import record_consent
from models.db import transaction
from models.delivery import Delivery
from models.email_feedback import Effect, EmailFeedback, FeedbackKind
from models.member import ContactStatus, Member
from models.personal_data import lookup
from workers.channels.email import message_id_for
from workers.channels.email_feedback import COMPLAINT, HARD, FeedbackProblem, Notice, mailbox_notices

log = structlog.get_logger("loyalty.bounces")


def apply_notices(sessions: sessionmaker[Session], settings: Settings, notices: Iterable[Notice], *,
                  verified_source: bool = True) -> list[str]:
    """Apply each notice in a transaction of its own; returns each one's effect (``duplicate`` for
    one already applied, ``untraced`` for a mailbox report without a valid token)."""
    return [_apply_one(sessions, settings, notice, verified_source) for notice in notices]


def _apply_one(sessions: sessionmaker[Session], settings: Settings, notice: Notice, verified_source: bool) -> str:
    digest = read_bounce_token(settings.secret, notice.token) if notice.token else None
    if not verified_source and digest is None:
        return "untraced"  # anyone can write to the mailbox: only our signed token is believed
    now = utcnow()
    with transaction(sessions) as session:
        delivery = _delivery(session, settings, digest, notice.message_id)
        address_hash = lookup("email", notice.address) if notice.address else None
        members: list[Member] = []
        if delivery is not None:
            found = session.get(Member, delivery.member_id, with_for_update=True)
            members = [found] if found is not None else []
        elif address_hash is not None:
            members = list(session.scalars(
                select(Member).where(Member.email_lookup == address_hash).order_by(Member.id).with_for_update()))
        base = dict(provider=notice.provider, kind=notice.kind, status=notice.status,
                    occurred_at=notice.occurred_at, received_at=now, email_lookup=address_hash,
                    delivery_id=delivery.id if delivery else None, campaign=delivery.campaign if delivery else None)
        first = _record(session, key=notice.key, member_id=members[0].id if members else None,
                        effect=Effect.UNKNOWN_RECIPIENT if not members else Effect.NONE, **base)
        if first is None:
            return "duplicate"
        effects = []
        for position, member in enumerate(members):
            row_id = first if position == 0 else _record(session, key=f"{notice.key}#{member.id}"[:200],
                                                        member_id=member.id, effect=Effect.NONE, **base)
            if row_id is None:
                continue
            effect = _effect(session, settings, notice, member, address_hash, delivery, now)
            session.execute(update(EmailFeedback).where(EmailFeedback.id == row_id).values(effect=effect))
            effects.append(effect)
    outcome = effects[0] if effects else Effect.UNKNOWN_RECIPIENT
    log.info("email.feedback", provider=notice.provider, kind=notice.kind, status=notice.status,
             delivery_id=delivery.id if delivery else None, members=len(members), effect=outcome)
    return outcome


def _delivery(session: Session, settings: Settings, digest: str | None, message_id: str | None) -> Delivery | None:
    """The email delivery the notice is about: by the token's digest (the Message-ID we gave it), or
    by the Message-ID the relay reports."""
    candidates = []
    if digest is not None:
        candidates.append(f"<{digest}@{message_id_for('', settings.email_from).split('@', 1)[1]}")
    if message_id:
        candidates.append(message_id if message_id.startswith("<") else f"<{message_id}>")
    for candidate in candidates:
        found = session.scalars(select(Delivery).where(
            Delivery.provider_message_id == candidate, Delivery.channel == "email").limit(1)).first()
        if found is not None:
            return found
    return None


def _record(session: Session, **values: Any) -> int | None:
    """Insert the feedback row; None when its key was already recorded (a duplicate)."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    return session.execute(
        insert(EmailFeedback).values(**values).on_conflict_do_nothing(index_elements=["key"])
        .returning(EmailFeedback.id)
    ).scalar()


def _effect(session: Session, settings: Settings, notice: Notice, member: Member, address_hash: str | None,
            delivery: Delivery | None, now: datetime) -> str:
    actor = f"provider:{notice.provider}"
    details: dict[str, Any] = {"feedback": notice.kind, "status": notice.status, "delivery_id": delivery.id if delivery else None}
    if notice.kind == COMPLAINT:
        changed = record_consent(session, member.id, "email", granted=False, source=f"complaint:{notice.provider}",
                                 at=now, actor=actor, reason=f"marked an email as spam ({notice.provider})",
                                 details=details)
        return Effect.CONSENT_WITHDRAWN if changed else Effect.NONE
    if address_hash is not None and member.email_lookup != address_hash:
        return Effect.NONE  # about an address the member no longer has
    if member.email_status == ContactStatus.UNDELIVERABLE:
        return Effect.NONE
    if notice.kind != HARD:
        bounced = session.scalar(
            select(func.count(distinct(func.coalesce(EmailFeedback.delivery_id, -EmailFeedback.id))))
            .where(EmailFeedback.member_id == member.id, EmailFeedback.kind == FeedbackKind.SOFT_BOUNCE,
                   EmailFeedback.email_lookup == member.email_lookup)) or 0
        if bounced < settings.feedback.soft_bounce_limit:
            return Effect.COUNTED
        details["soft_bounces"] = int(bounced)
    member.email_status = ContactStatus.UNDELIVERABLE
    member.updated_at = now
    session.add(AuditEntry(at=now, actor=actor, action=AuditAction.EMAIL_UNDELIVERABLE, member_id=member.id,
                           reason=f"{notice.kind.replace('_', ' ')} ({notice.status or 'no status'})"[:200],
                           details=details))
    return Effect.UNDELIVERABLE


# -- the bounce mailbox ----------------------------------------------------------------------------

@dataclass
class MailboxReport:
    read: int = 0  # messages looked at
    reports: int = 0  # DSNs and abuse reports among them
    effects: dict[str, int] = field(default_factory=dict)
    unreadable: int = 0  # reports that could not be read (left seen, logged)


def read_mailbox(settings: Settings, sessions: sessionmaker[Session], *, limit: int = 500) -> MailboxReport:
    """Read the bounce mailbox's unseen messages (at most ``limit``), apply what they report, and mark
    them seen (a message read twice is a duplicate and changes nothing)."""
    target = settings.feedback.imap
    if target is None:
        raise FeedbackProblem("LOYALTY_BOUNCE_IMAP_URL is not set, so there is no bounce mailbox to read; set it to the "
                              "mailbox's address, such as imaps://user:password@imap.shop.example:993/INBOX")
    report = MailboxReport()
    with _connect(target) as imap:
        status, _ = imap.select(_quoted(target.mailbox))
        if status != "OK":
            raise FeedbackProblem(f"the bounce mailbox has no folder {target.mailbox!r}; fix LOYALTY_BOUNCE_IMAP_URL's path")
        _, data = imap.uid("SEARCH", "UNSEEN")
        uids = [uid.decode() for uid in (data[0] or b"").split()[:limit]]
        for uid in uids:
            _, fetched = imap.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next((item[1] for item in fetched if isinstance(item, tuple)), None)
            report.read += 1
            if raw is not None:
                try:
                    notices = mailbox_notices(raw)
                except FeedbackProblem as problem:
                    report.unreadable += 1
                    log.warning("bounces.unreadable", uid=uid, problem=str(problem))
                    notices = []
                report.reports += bool(notices)
                for effect in apply_notices(sessions, settings, notices, verified_source=False):
                    report.effects[effect] = report.effects.get(effect, 0) + 1
            imap.uid("STORE", uid, "+FLAGS", "(\\Seen)")
    return report


def _connect(target: ImapTarget) -> imaplib.IMAP4:
    try:
        if target.security == "tls":
            imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(target.host, target.port, ssl_context=ssl.create_default_context(),
                                                    timeout=target.timeout)
        else:
            imap = imaplib.IMAP4(target.host, target.port, timeout=target.timeout)
            if target.security == "starttls":
                imap.starttls(ssl_context=ssl.create_default_context())
        imap.login(target.username, target.password)
    except imaplib.IMAP4.error:
        raise FeedbackProblem("the bounce mailbox refused the login; check LOYALTY_BOUNCE_IMAP_URL's user and password") from None
    except (OSError, ssl.SSLError) as exc:
        raise FeedbackProblem(f"the bounce mailbox cannot be reached ({type(exc).__name__}); check LOYALTY_BOUNCE_IMAP_URL") from None
    return imap


def _quoted(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'
