"""The audit log: who did what to which member, why and when (support actions, imports, opt-outs)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigIntKey, UtcDateTime, utcnow


class AuditAction(StrEnum):
    """What an audit row records (``audit_log.action``, stored as the value)."""

    __sa_type_engine__ = String()  # in a SQL literal, a VARCHAR like a str

    SEND_ONEOFF = "send.oneoff"  # support sent a campaign to one member (loyalty send)
    SEND_ONEOFF_GRANT = "send.oneoff.grant"  # the same, as a new occurrence with its reward (--grant)
    PROOF_SENT = "proof.sent"  # a proof of a campaign's message went to a marketer (loyalty proof)
    MEMBER_UPDATED_BY_PROVIDER = "member.updated_by_provider"  # e.g. Twilio said the number opted out
    MEMBER_ERASED = "member.erased"
    MEMBER_EXPORTED = "member.exported"
    MEMBER_EXPORT_REQUESTED = "member.export_requested"  # the shop asked for a member's data
    EMAIL_UNDELIVERABLE = "email.undeliverable"  # the address bounced for good, or too often
    OPTIN_EMAIL = "optin.email"
    OPTOUT_EMAIL = "optout.email"
    OPTIN_SMS = "optin.sms"
    OPTOUT_SMS = "optout.sms"

    @classmethod
    def consent(cls, channel: str, granted: bool) -> AuditAction:
        """The action of a consent grant or withdrawal on ``channel`` (``email`` or ``sms``)."""
        return cls(f"{'optin' if granted else 'optout'}.{channel}")

    @classmethod
    def imported(cls, kind: str) -> str:
        """An import's action, ``import.<kind>`` (one per import kind, so not listed above)."""
        return f"import.{kind}"


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"))
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (Index("ix_audit_log_member_at", "member_id", "at"),)
