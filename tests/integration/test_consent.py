"""models.consent.record_consent: the one writer of a member's yes or no with its audit row (the
unsubscribe link, support's opt-out, STOP/START texted, a spam complaint), on PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from models.audit import AuditEntry
from models.consent import record_consent
from models.member import Member
from tests.support.members import add_members, make_member

NOW = datetime(2027, 3, 1, 9, 30, tzinfo=UTC)


def member_id(sessions, external_id: str) -> int:
    with sessions() as session:
        return session.scalar(select(Member.id).where(Member.external_id == external_id))


def consent(sessions, external_id: str, channel: str = "email") -> tuple:
    with sessions() as session:
        member = session.scalar(select(Member).where(Member.external_id == external_id))
        return tuple(getattr(member, f"{channel}_{c}") for c in ("opt_in", "consent_at", "consent_source"))


def audit(sessions) -> list[tuple]:
    with sessions() as session:
        return [(r.at, r.actor, r.action, r.reason, r.details)
                for r in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]


def test_a_withdrawal_is_written_with_its_source_time_and_audit_row_and_a_second_one_writes_nothing(pg_sessions):
    add_members(pg_sessions, make_member("C1"))
    complained_at = datetime(2027, 2, 27, 18, 0, tzinfo=UTC)  # the provider's time, not ours
    mid = member_id(pg_sessions, "C1")
    with pg_sessions() as session, session.begin():
        assert record_consent(session, mid, "email", granted=False, source="complaint:ses", at=complained_at,
                              actor="provider:ses", reason="spam complaint", details={"feedback_id": "f-1"})
    with pg_sessions() as session, session.begin():
        assert not record_consent(session, mid, "email", granted=False, source="complaint:ses", at=NOW,
                                  actor="provider:ses", reason="spam complaint")
    assert consent(pg_sessions, "C1") == (False, complained_at, "complaint:ses")
    assert audit(pg_sessions) == [(complained_at, "provider:ses", "optout.email", "spam complaint", {"feedback_id": "f-1"})]


def test_a_grant_after_a_withdrawal_is_an_opt_in_row(pg_sessions):
    add_members(pg_sessions, make_member("C2", sms_opt_in=True))
    mid = member_id(pg_sessions, "C2")
    for granted, keyword in ((False, "STOP"), (True, "START")):
        with pg_sessions() as session, session.begin():
            assert record_consent(session, mid, "sms", granted=granted, source=f"sms:{keyword}", at=NOW,
                                  actor="member", reason=f"texted {keyword}")
    assert consent(pg_sessions, "C2", "sms") == (True, NOW, "sms:START")
    assert [row[2] for row in audit(pg_sessions)] == ["optout.sms", "optin.sms"]
    assert consent(pg_sessions, "C2")[0] is True  # the other channel untouched


def test_two_withdrawals_at_once_write_one_change_and_one_row(pg_sessions):
    """The second waits on the first's row lock, then finds the consent already withdrawn."""
    add_members(pg_sessions, make_member("C3"))
    mid = member_id(pg_sessions, "C3")
    second: list[bool] = []

    def other() -> None:
        with pg_sessions() as session, session.begin():
            second.append(record_consent(session, mid, "email", granted=False, source="unsubscribe:page", at=NOW,
                                         actor="member", reason="unsubscribe link (page)"))

    with pg_sessions() as session, session.begin():
        assert record_consent(session, mid, "email", granted=False, source="unsubscribe:one-click", at=NOW,
                              actor="member", reason="unsubscribe link (one-click)")
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive()  # blocked on the row until this transaction ends
    thread.join(10)
    assert second == [False]
    assert consent(pg_sessions, "C3")[2] == "unsubscribe:one-click"
    assert len(audit(pg_sessions)) == 1


def test_over_unsaid_records_a_refusal_nobody_said_or_an_import_s_but_keeps_a_member_s_own(pg_sessions):
    never, imported, own = make_member("N1", email_opt_in=False), make_member("I1", email_opt_in=False), \
        make_member("O1", email_opt_in=False)
    imported.email_consent_source, own.email_consent_source = "import:members.csv", "unsubscribe:page"
    add_members(pg_sessions, never, imported, own)
    ids = {x: member_id(pg_sessions, x) for x in ("N1", "I1", "O1")}

    def support(external_id: str, **options) -> bool:
        with pg_sessions() as session, session.begin():
            return record_consent(session, ids[external_id], "email", granted=False, source="support:alice", at=NOW,
                                  actor="alice", reason="asked by phone", **options)

    assert not support("N1")  # already not opted in: nothing to say without over_unsaid
    assert [support(x, over_unsaid=True) for x in ("N1", "I1", "O1")] == [True, True, False]
    assert [consent(pg_sessions, x)[2] for x in ("N1", "I1", "O1")] == ["support:alice", "support:alice",
                                                                        "unsubscribe:page"]
    assert [row[2] for row in audit(pg_sessions)] == ["optout.email", "optout.email"]


def test_a_long_source_is_cut_to_its_column_and_an_unknown_channel_refused(pg_sessions):
    add_members(pg_sessions, make_member("L1"))
    mid = member_id(pg_sessions, "L1")
    with pg_sessions() as session, session.begin():
        assert record_consent(session, mid, "email", granted=False, source="complaint:" + "x" * 100, at=NOW,
                              actor="provider:x", reason="spam complaint")
        with pytest.raises(ValueError, match="push"):
            record_consent(session, mid, "push", granted=False, source="s", at=NOW, actor="a", reason="r")
    assert consent(pg_sessions, "L1")[2] == ("complaint:" + "x" * 100)[:64]
