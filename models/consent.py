"""Consent per channel: who said yes or no, when, and which statement wins.

A member who says so here (the unsubscribe link, STOP or START texted, support, a spam complaint) is
recorded by :func:`record_consent`, the one place that writes a consent change with its audit row.

The latest dated change wins, whatever its source: an opt-out made here (the unsubscribe link, STOP,
support) is never undone by a shop's update dated before it, and a shop can reverse its own opt-out
with a later one. A shop's statement without a date (WooCommerce, PrestaShop's unsubscribed) counts
only while nothing was ever said for the channel (:func:`apply_statement`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, or_, update
from sqlalchemy.orm import Session

from models.audit import AuditAction, AuditEntry
from models.db import rows_changed
from models.member import Member

CHANNELS = ("email", "sms")


def statement_wins(current_at: datetime | None, current_source: str | None, said_at: datetime | None) -> bool:
    """Whether a statement dated ``said_at`` (None: undated) replaces the member's current consent."""
    if said_at is None:
        return current_source is None and current_at is None
    return current_at is None or said_at > current_at


def apply_statement(session: Session, member: Member, channel: str, given: bool, said_at: datetime | None,
                    *, source: str, actor: str, now: datetime) -> bool:
    """Apply a dated consent statement if it wins (see :func:`statement_wins`); audited when it changes
    the consent. Returns whether the member's consent changed."""
    current_at = getattr(member, f"{channel}_consent_at")
    current_source = getattr(member, f"{channel}_consent_source")
    if not statement_wins(current_at, current_source, said_at):
        return False
    changed = bool(getattr(member, f"{channel}_opt_in")) != given
    setattr(member, f"{channel}_opt_in", given)
    setattr(member, f"{channel}_consent_at", said_at or now)
    setattr(member, f"{channel}_consent_source", source[:64])
    if changed and member.id is not None:
        _audit(session, member.id, channel, given, at=now, actor=actor, reason=f"said by {source}")
    return changed


def record_consent(session: Session | Connection, member_id: int, channel: str, *, granted: bool, source: str,
                   at: datetime, actor: str, reason: str, details: dict[str, Any] | None = None,
                   over_unsaid: bool = False) -> bool:
    """Record that a member grants (``granted=True``) or withdraws their consent for ``channel``, said at
    ``at`` through ``source`` (``unsubscribe:page``, ``sms:STOP``, ``support:alice``, ``complaint:ses``;
    kept to 64 characters), with its audit row: ``optin.<channel>`` or ``optout.<channel>`` by
    ``actor``, with ``reason`` and ``details``. Returns whether anything was written.

    Consent that already says so is left as it is, and no row is written; with ``over_unsaid``, a
    refusal (or a yes) that nobody ever said (no source) or that came from a shop import is recorded
    anyway, as said now by ``source``, so that a later import cannot reverse it (support's opt-out).
    One conditional UPDATE decides: two of the same at once (a one-click and a page unsubscribe) write
    one change and one audit row."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown consent channel {channel!r}")
    opt_in, consent_at, consent_source = (getattr(Member, f"{channel}_{c}") for c in ("opt_in", "consent_at",
                                                                                    "consent_source"))
    wanted = opt_in.is_not(granted)
    if over_unsaid:
        wanted = or_(wanted, consent_source.is_(None), consent_source == "", consent_source.like("import:%"))
    written = rows_changed(session.execute(
        update(Member).where(Member.id == member_id, wanted)
        .values({opt_in: granted, consent_at: at, consent_source: source[:64]})
    ))
    if written:
        _audit(session, member_id, channel, granted, at=at, actor=actor, reason=reason, details=details)
    return bool(written)


def _audit(session: Session | Connection, member_id: int, channel: str, granted: bool, *, at: datetime,
           actor: str, reason: str, details: dict[str, Any] | None = None) -> None:
    session.execute(insert(AuditEntry).values(at=at, actor=actor[:120], action=AuditAction.consent(channel, granted),
                                              member_id=member_id, reason=reason, details=details or {}))
