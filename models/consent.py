"""Consent per channel: who said yes or no, when, and which statement wins.

The latest dated change wins, whatever its source: an opt-out made here (the unsubscribe link, STOP,
support) is never undone by a shop's update dated before it, and a shop can reverse its own opt-out
with a later one. A shop's statement without a date (WooCommerce, PrestaShop's unsubscribed) counts
only while nothing was ever said for the channel.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from models.audit import AuditEntry
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
        session.add(AuditEntry(at=now, actor=actor[:120], action=f"{'optin' if given else 'optout'}.{channel}",
                               member_id=member.id, reason=f"said by {source}"))
    return changed
