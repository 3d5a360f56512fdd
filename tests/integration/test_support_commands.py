"""Support staff at the command line: a one-off send, a member's history, show, opt-out.

The `loyalty` command (run in this process, ``tests/cli.py``) against PostgreSQL and a real SMTP
server, and once on the embedded default; the assertions are on what a person reads.
"""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from models import ledger
from models.audit import AuditEntry
from models.delivery import Delivery
from models.member import Member
from models.points import EntryKind, PointEntry
from models.tier import TierChange
from tests import cli
from tests.conftest import REPO_ROOT
from tests.support.members import add_members, make_member

UTC = UTC


def loyalty(env: dict, *args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """The command in this process (``tests/cli.py``), 160 columns wide, as no one in particular."""
    return cli.loyalty({"COLUMNS": "160", **env}, *args, cwd=cwd, drop=(*cli.SERVICE_VARIABLES, "LOYALTY_ACTOR"))


def row(stdout: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃]", line)][1:-1]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no table row starts with {first!r} in:\n{stdout}")


def one_sentence(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def member_id(sessions, external_id: str) -> int:
    with sessions() as session:
        return session.scalar(select(Member.id).where(Member.external_id == external_id))


# --- loyalty send ----------------------------------------------------------------------------------

def test_a_one_off_send_goes_through_the_pipeline_once_and_is_audited(env, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("M0042", tier="silver", birthday=(1, 3)))  # not their birthday today

    first = loyalty(env, "send", "birthday", "--member", "M0042", "--reason", "gift email lost, ticket 1234", "--as", "alice")
    assert first.returncode == 0, first.stderr
    assert re.fullmatch(r"Sent birthday to M0042 by email \(delivery \d+, oneoff:birthday:M0042:1\); "
                        r"250 points granted\.\n", first.stdout), first.stdout
    assert [m["Subject"] for m in smtp_sink.to("m0042@members.example")] == ["Happy birthday, Test! 250 points for you"]

    again = loyalty(env, "send", "birthday", "--member", "M0042", "--reason", "asked again", "--as", "bob")
    assert again.returncode == 2
    today = datetime.now(UTC).date().isoformat()
    assert one_sentence(again).startswith(f"error: M0042 already received 'birthday' on {today} "
                                          "(oneoff:birthday:M0042:1); add --force to send that same message again")
    assert len(smtp_sink.messages) == 1

    forced = loyalty(env, "send", "birthday", "--member", "M0042", "--reason", "second gift approved", "--as", "bob",
                     "--grant", "--json")
    assert forced.returncode == 0, forced.stderr
    result = json.loads(forced.stdout)
    assert {k: result[k] for k in ("campaign", "member", "channel", "occurrence_key", "state", "reason", "reward",
                                   "requested_by")} == {
        "campaign": "birthday", "member": "M0042", "channel": "email", "occurrence_key": "oneoff:birthday:M0042:2",
        "state": "sent", "reason": None, "reward": {"points": 250}, "requested_by": "bob",
    }
    assert len(smtp_sink.messages) == 2

    with pg_sessions() as session:
        deliveries = session.execute(select(Delivery.occurrence_key, Delivery.requested_by, Delivery.state)
                                     .order_by(Delivery.id)).all()
        audit = session.execute(select(AuditEntry.actor, AuditEntry.action, AuditEntry.reason, AuditEntry.member_id)
                                .order_by(AuditEntry.id)).all()
        points = session.scalar(select(func.sum(PointEntry.points)))
    assert deliveries == [("oneoff:birthday:M0042:1", "alice", "sent"), ("oneoff:birthday:M0042:2", "bob", "sent")]
    mid = member_id(pg_sessions, "M0042")
    assert audit == [("alice", "send.oneoff", "gift email lost, ticket 1234", mid),
                     ("bob", "send.oneoff.grant", "second gift approved", mid)]
    assert points == 500  # the reward of the first send, and the one explicitly granted


def test_a_dry_run_shows_the_message_and_writes_nothing(env, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("M0050", tier="gold", locale="fr_FR", first_name="Léa"))
    result = loyalty(env, "send", "birthday", "--member", "M0050", "--reason", "checking", "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == ("Dry run: oneoff:birthday:M0050:1 would go to M0050 by email (fr); "
                        "nothing was written or sent.")
    assert lines[1] == "Subject: Joyeux anniversaire, Léa ! 500 points pour vous"
    assert any("Léa" in line for line in lines[2:])
    with pg_sessions() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 0
    assert smtp_sink.messages == []


def test_a_one_off_reminder_is_about_the_members_next_expiry(env, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("M0045", timezone_name="Europe/Paris"), make_member("M0046"))
    with pg_sessions() as session, session.begin():
        lots = [("x1", 120, datetime(2030, 1, 5, 12, tzinfo=UTC)), ("x2", 80, datetime(2030, 1, 5, 20, tzinfo=UTC)),
                ("x3", 999, datetime(2031, 1, 1, tzinfo=UTC))]  # the first two expire the same day in Paris
        for key, points, expires in lots:
            ledger.record(session, member_id=member_id(pg_sessions, "M0045"), entry_key=key, kind=EntryKind.EARN,
                          points=points, occurred_at=datetime(2029, 1, 5, tzinfo=UTC), expires_at=expires, source="order")
    result = loyalty(env, "send", "points_expiring", "--member", "M0045", "--reason", "asked when points expire", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "200 of your points expire on January 5, 2030" in result.stdout.splitlines()[1]
    nothing = loyalty(env, "send", "points_expiring", "--member", "M0046", "--reason", "asked", "--dry-run")
    assert nothing.returncode == 2
    assert one_sentence(nothing) == "error: M0046 has no points that expire; there is nothing to remind them of."


def test_consent_is_never_overridden_and_every_refusal_is_one_sentence(env, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("M0043", email_opt_in=False), make_member("M0044"))
    cases = [
        (["send", "birthday", "--member", "M0043", "--reason", "x", "--force"],
         "error: M0043 cannot be sent 'birthday' by any of its channels (email): the member has not consented to it "
         "(no_consent); consent is never overridden."),
        (["send", "birthday", "--member", "M0044", "--reason", "x", "--channel", "sms"],
         "error: The campaign 'birthday' has no sms message; its channels are: email."),
        (["send", "birthday", "--member", "NOPE", "--reason", "x"],
         "error: There is no member with the id 'NOPE'; use the shop's member id (like M0042), their email address "
         "or their phone number."),
        (["send", "birthdya", "--member", "M0044", "--reason", "x"],
         "error: There is no valid campaign 'birthdya'; the known ones are: "),
        (["send", "birthday", "--member", "M0044", "--reason", "   "],
         "error: --reason is empty; say in a few words why this send is made, for the audit log."),
    ]
    for args, sentence in cases:
        result = loyalty(env, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert one_sentence(result).startswith(sentence), result.stderr
    assert smtp_sink.messages == []


def test_a_one_off_tier_notice_announces_the_member_s_current_tier(env, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("M0045", tier="gold"))
    result = loyalty(env, "send", "tier_upgrade", "--member", "M0045", "--reason", "notice lost in spam")
    assert result.returncode == 0, result.stderr
    (message,) = smtp_sink.messages
    assert message["Subject"] == "Welcome to Gold, Test!"
    assert "early access to sales" in message.get_body(("plain",)).get_content()


# --- loyalty member optout / show ------------------------------------------------------------------

def test_an_opt_out_is_recorded_with_who_and_why_and_planned_sends_are_skipped(env, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("M0060"))
    result = loyalty(env, "member", "optout", "M0060", "--channel", "email", "--reason", "asked by phone", "--as", "alice")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"M0060 is opted out of email since \S+Z \(support:alice\); planned sends over it will be "
                        r"skipped, and the change is in the audit log\.\n", result.stdout), result.stdout
    again = loyalty(env, "member", "optout", "M0060", "--channel", "email", "--reason", "asked twice", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) | {"at": None} == {"member": "M0060", "channel": "email", "opt_in": False,
                                                        "changed": False, "at": None, "source": "support:alice"}
    with pg_sessions() as session:
        member = session.scalar(select(Member).where(Member.external_id == "M0060"))
        audit = session.execute(select(AuditEntry.actor, AuditEntry.action, AuditEntry.reason)).all()
    assert (member.email_opt_in, member.email_consent_source) == (False, "support:alice")
    assert audit == [("alice", "optout.email", "asked by phone")]

    refused = loyalty(env, "send", "birthday", "--member", "M0060", "--reason", "try")
    assert refused.returncode == 2 and "has not consented to it (no_consent)" in refused.stderr


def test_member_show_prints_who_how_to_reach_consent_tier_and_points(env, pg_sessions):
    add_members(pg_sessions, make_member("M0070", tier="gold", birthday=(2, 29), timezone_name="America/Montreal",
                                         locale="fr_CA", first_name="Zoé"))
    mid = member_id(pg_sessions, "M0070")
    with pg_sessions() as session, session.begin():
        for key, points, month in (("e1", 300, 1), ("e2", 200, 3)):
            ledger.record(session, member_id=mid, entry_key=key, kind=EntryKind.EARN, points=points, source=f"order:{key}",
                          occurred_at=datetime(2026, month, 5, tzinfo=UTC), expires_at=datetime(2027, month, 5, tzinfo=UTC))
        ledger.record(session, member_id=mid, entry_key="r1", kind=EntryKind.REDEEM, points=-100,
                      occurred_at=datetime(2026, 4, 1, tzinfo=UTC), source="checkout")

    table = loyalty(env, "member", "show", "M0070")
    assert table.returncode == 0, table.stderr
    assert row(table.stdout, "name") == ["name", "Zoé Member"]
    assert row(table.stdout, "email") == ["email", "m0070@members.example (ok)"]
    assert row(table.stdout, "locale, time zone") == ["locale, time zone", "fr_CA, America/Montreal"]
    assert row(table.stdout, "birthday") == ["birthday", "--02-29 (known since 2020-01-01T00:00:00Z)"]
    assert row(table.stdout, "email consent") == ["email consent", "yes, since 2020-01-01T00:00:00Z (test)"]
    assert row(table.stdout, "SMS consent") == ["SMS consent", "no"]
    assert row(table.stdout, "points") == ["points", "400"]
    assert row(table.stdout, "next expiry") == ["next expiry", "200 points on 2027-01-05T00:00:00Z"]

    data = json.loads(loyalty(env, "member", "show", "M0070", "--json").stdout)
    assert data["tier"] == "gold" and data["points_balance"] == 400
    assert data["next_expiry"] == {"points": 200, "at": "2027-01-05T00:00:00Z"}
    assert data["consent"]["email"] == {"opt_in": True, "at": "2020-01-01T00:00:00Z", "source": "test"}


# --- loyalty history -------------------------------------------------------------------------------

def test_history_shows_deliveries_points_tier_and_consent_changes_in_time_order(env, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("M0080", tier="silver", timezone_name="Europe/Paris", birthday=(6, 15)))
    mid = member_id(pg_sessions, "M0080")
    with pg_sessions() as session, session.begin():
        ledger.record(session, member_id=mid, entry_key="h1", kind=EntryKind.EARN, points=120,
                      occurred_at=datetime(2026, 5, 1, 10, tzinfo=UTC), expires_at=datetime(2027, 5, 1, tzinfo=UTC),
                      source="order:H1")
        session.add(TierChange(member_id=mid, from_tier="bronze", to_tier="silver", direction="up",
                               at=datetime(2026, 5, 2, 9, tzinfo=UTC), local_date="2026-05-02", cause="order:H2"))

    before = loyalty(env, "history", "--member", "M0080", "--json")
    assert [json.loads(line)["summary"] for line in before.stdout.splitlines()][0] == "email opt-in (test)"

    assert loyalty(env, "run", "--at", "2026-06-15T08:30:00Z").returncode == 0  # 10:30 in Paris: the gift
    assert loyalty(env, "member", "optout", "M0080", "--channel", "email", "--reason", "moving abroad",
                   "--as", "alice").returncode == 0  # now, after all of the above
    result = loyalty(env, "history", "--member", "M0080", "--json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["type"], e["summary"]) for e in events] == [
        ("points", "+120 points, earn (order:H1), expires 2027-05-01; balance 120"),
        ("tier", "tier bronze → silver (order:H2)"),
        ("delivery", "birthday by email: sent; 250 points"),
        ("points", "+250 points, earn (campaign:birthday), expires 2027-06-15; balance 370"),
        ("consent", "email opt-out by alice: moving abroad"),
    ]
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    delivery = events[2]
    assert (delivery["at"], delivery["occurrence_key"], delivery["state"]) == ("2026-06-15T08:30:00Z", "birthday:M0080:2026",
                                                                               "sent")
    assert (events[-1]["channel"], events[-1]["opt_in"], events[-1]["actor"]) == ("email", False, "alice")

    table = loyalty(env, "history", "--member", "M0080")
    assert "History of M0080 · silver · Europe/Paris" in table.stdout
    assert row(table.stdout, "2026-05-02 09:00") == ["2026-05-02 09:00", "tier", "tier bronze → silver (order:H2)"]
    assert row(table.stdout, "2026-06-15 08:30") == ["2026-06-15 08:30", "delivery", "birthday by email: sent; 250 points"]
    assert table.stdout.rstrip().endswith("5 event(s).")


def test_history_of_a_skipped_send_says_why(env, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("M0081", email_opt_in=False, birthday=(6, 15)))
    assert loyalty(env, "run", "--at", "2027-06-15T08:30:00Z").returncode == 0
    table = loyalty(env, "history", "--member", "M0081")
    assert row(table.stdout, "2027-06-15 08:30")[1:] == ["delivery", "birthday: skipped (no_consent)"]
    unknown = loyalty(env, "history", "--member", "M9999")
    assert unknown.returncode == 2
    assert one_sentence(unknown) == ("error: There is no member with the id 'M9999'; use the shop's member id "
                                     "(like M0042), their email address or their phone number.")


# --- the embedded default --------------------------------------------------------------------------

def test_member_show_history_and_a_one_off_send_on_the_embedded_default(tmp_path):
    home = {"LOYALTY_HOME": str(tmp_path / "home")}
    demo = loyalty(home, "demo", "--members", "60", "--at", "2027-06-15T12:00:00Z", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    gift = next((tmp_path / "home" / "outbox" / "email").glob("birthday_*.eml")).stem  # birthday_DEMO0019_2027
    gifted = gift.split("_")[1]

    show = loyalty(home, "member", "show", gifted, cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    assert re.fullmatch(r"(\d+ \w+, )*\d+ sent(, \d+ \w+)*", row(show.stdout, "deliveries")[1])
    assert row(show.stdout, "email consent")[1].startswith("yes, since ")

    history = loyalty(home, "history", "--member", gifted, "--json", cwd=tmp_path)
    assert history.returncode == 0, history.stderr
    events = [json.loads(line) for line in history.stdout.splitlines()]
    assert [e["occurrence_key"] for e in events if e["type"] == "delivery" and e["campaign"] == "birthday"] == [
        gift.replace("_", ":")]
    assert {"points", "consent"} <= {e["type"] for e in events}

    refused = loyalty(home, "send", "birthday", "--member", gifted, "--reason", "demo", "--as", "carol", cwd=tmp_path)
    assert refused.returncode == 2  # the gift was received today: --force re-sends it, --grant gives another
    send = loyalty(home, "send", "birthday", "--member", gifted, "--reason", "demo", "--as", "carol", "--force",
                   cwd=tmp_path)
    assert send.returncode == 0, send.stderr
    assert send.stdout.startswith(f"Sent birthday to {gifted} by email")
    assert "no new reward" in send.stdout
    later = loyalty(home, "history", "--member", gifted, cwd=tmp_path)
    assert re.search(r"send\.oneoff by carol: demo", later.stdout)
    assert re.search(r"one-off birthday by email: sent; resend of birthday:\S+, no new reward, asked by carol", later.stdout)
