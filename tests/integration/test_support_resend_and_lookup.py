"""Support at the command line: a resend repeats the message and grants nothing, a new grant is
explicit and audited; a member is found by email or phone; the history tells what a member got.

Real `python -m loyalty` processes against PostgreSQL and a real SMTP server.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from models import ledger
from models.audit import AuditEntry
from models.delivery import Delivery
from models.member import Member
from tests.integration.test_support_commands import loyalty, member_id, one_sentence
from tests.support.members import add_members, make_member
from workers.channels.sms_feedback import apply_inbound

UTC = UTC


def balance(sessions, external_id: str) -> int:
    with sessions() as session:
        return ledger.balance(session, member_id(sessions, external_id))


def body(message) -> str:
    return message.get_body(("plain",)).get_content()


def coupon_in(text: str) -> str:
    return re.search(r"\bBACK-[A-Z2-7]{10}\b", text).group(0)


# --- item 22: a resend is the same message, a new grant is explicit -------------------------------

def test_a_forced_resend_repeats_the_message_and_grants_nothing_a_grant_adds_once_and_is_audited(
        env, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("M0042", tier="silver", birthday=(1, 3)))
    first = loyalty(env, "send", "birthday", "--member", "M0042", "--reason", "gift lost, ticket 1", "--as", "alice")
    assert first.returncode == 0, first.stderr
    assert balance(pg_sessions, "M0042") == 250

    again = loyalty(env, "send", "birthday", "--member", "M0042", "--reason", "asked again", "--as", "bob")
    assert again.returncode == 2
    today = datetime.now(UTC).date().isoformat()
    assert one_sentence(again) == (
        f"error: M0042 already received 'birthday' on {today} (oneoff:birthday:M0042:1); add --force to send that "
        "same message again (same content and coupon code, no new reward), or --grant to send a new one with its reward.")

    resend = loyalty(env, "send", "birthday", "--member", "M0042", "--reason", "not in inbox", "--as", "bob", "--force")
    assert resend.returncode == 0, resend.stderr
    assert re.fullmatch(r"Sent birthday to M0042 by email \(delivery \d+, oneoff:birthday:M0042:2\); the same message "
                        r"as oneoff:birthday:M0042:1, no new reward\.\n", resend.stdout), resend.stdout
    assert balance(pg_sessions, "M0042") == 250  # nothing granted twice
    sent = smtp_sink.to("m0042@members.example")
    assert len(sent) == 2 and sent[0]["Subject"] == sent[1]["Subject"] == "Happy birthday, Test! 250 points for you"

    granted = loyalty(env, "send", "birthday", "--member", "M0042", "--reason", "goodwill, ticket 2", "--as", "carol",
                      "--grant", "--json")
    assert granted.returncode == 0, granted.stderr
    result = json.loads(granted.stdout)
    assert (result["occurrence_key"], result["state"], result["reward"]) == ("oneoff:birthday:M0042:3", "sent",
                                                                             {"points": 250})
    assert balance(pg_sessions, "M0042") == 500  # the explicit grant, once
    with pg_sessions() as session:
        audit = session.execute(select(AuditEntry.actor, AuditEntry.action, AuditEntry.reason, AuditEntry.details)
                                .order_by(AuditEntry.id)).all()
    assert [(a, action, why) for a, action, why, _ in audit] == [
        ("alice", "send.oneoff", "gift lost, ticket 1"), ("bob", "send.oneoff", "not in inbox"),
        ("carol", "send.oneoff.grant", "goodwill, ticket 2")]
    assert audit[1][3]["resend_of"] == "oneoff:birthday:M0042:1"
    assert audit[2][3]["reward_points"] == 250


def test_a_resend_of_a_scheduled_win_back_carries_the_same_coupon_code(env, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("M0091", timezone_name="Europe/Paris"))
    with pg_sessions() as session, session.begin():
        session.execute(update(Member).where(Member.external_id == "M0091").values(last_order_local_date="2027-03-01"))
    at = datetime(2027, 3, 1, tzinfo=UTC) + timedelta(days=100, hours=9)  # day 100, 10:00 in Paris: step 2
    assert loyalty(env, "run", "--at", at.isoformat()).returncode == 0
    (original,) = smtp_sink.to("m0091@members.example")
    code = coupon_in(body(original))

    resend = loyalty(env, "send", "winback", "--member", "M0091", "--reason", "coupon lost", "--force")
    assert resend.returncode == 0, resend.stderr
    assert "the same message as winback:M0091:2027-03-01:2, no new reward" in resend.stdout
    second = smtp_sink.to("m0091@members.example")[1]
    assert second["Subject"] == original["Subject"]
    assert coupon_in(body(second)) == code

    history = loyalty(env, "history", "--member", "M0091", "--json")
    deliveries = [json.loads(line) for line in history.stdout.splitlines() if '"delivery"' in line]
    by_key = {d["occurrence_key"]: d for d in deliveries}  # the tick ran in 2027, the resend today
    assert {key: d["coupon_code"] for key, d in by_key.items()} == {
        "winback:M0091:2027-03-01:2": code, "oneoff:winback:M0091:1": code}
    assert by_key["oneoff:winback:M0091:1"]["summary"].startswith(
        f"one-off winback by email: sent; resend of winback:M0091:2027-03-01:2, no new reward, coupon {code}")


# --- item 23: a member found by id, email or phone ------------------------------------------------

def test_a_member_is_found_by_id_email_or_phone_and_errors_never_echo_them(env, pg_sessions, smtp_sink):
    add_members(pg_sessions,
                make_member("M0100", email="Lea.Martin@Shop.example", phone="+33612345678", first_name="Léa"),
                make_member("33612345678", email="digits@shop.example"),  # an id made of digits, like a number
                make_member("M0101", phone="+14155550123"), make_member("M0102", phone="+14155550123"))

    for key in ("M0100", "lea.martin@shop.example", " Lea.Martin@Shop.example ", "+33 6 12 34 56 78", "+33612345678"):
        shown = loyalty(env, "member", "show", key, "--json")
        assert shown.returncode == 0, (key, shown.stderr)
        assert json.loads(shown.stdout)["member"] == "M0100", key
    by_id = loyalty(env, "member", "show", "33612345678", "--json")  # the external id wins over the look-ups
    assert json.loads(by_id.stdout)["member"] == "33612345678"

    history = loyalty(env, "history", "--member", "lea.martin@shop.example", "--json")
    assert history.returncode == 0, history.stderr
    assert {json.loads(line)["member"] for line in history.stdout.splitlines()} == {"M0100"}

    sent = loyalty(env, "send", "birthday", "--member", "+33 6 12 34 56 78", "--reason", "asked by phone")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("Sent birthday to M0100 by email")
    assert [m["To"] for m in smtp_sink.messages] == ["Lea.Martin@Shop.example"]

    optout = loyalty(env, "member", "optout", "Lea.Martin@shop.example", "--channel", "email", "--reason", "asked")
    assert optout.returncode == 0, optout.stderr
    assert optout.stdout.startswith("M0100 is opted out of email since ")
    assert "@" not in optout.stdout

    shared = loyalty(env, "member", "show", "+1 (415) 555-0123")
    assert shared.returncode == 2
    assert one_sentence(shared) == ("error: 2 members share that phone number (M0101, M0102); "
                                    "use one of these ids instead.")
    for key, sentence in (
        ("nobody@shop.example", "error: No member has that email address; check it, or use the shop's member id "
                                "(like M0042)."),
        ("+33 7 00 00 00 00", "error: No member has that phone number; check it, or use the shop's member id "
                              "(like M0042)."),
        ("06 12", "error: There is no member with that id, and it is not a phone number with its country code; use "
                  "the shop's member id (like M0042), an email address or a number starting with +."),
    ):
        result = loyalty(env, "history", "--member", key)
        assert result.returncode == 2, key
        assert one_sentence(result) == sentence
        assert key.strip() not in result.stderr


# --- item 24: what the history tells ---------------------------------------------------------------

def test_history_shows_a_texted_start_no_points_where_none_were_granted_and_the_coupon(env, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("M0110", email_opt_in=False, sms_opt_in=True, phone="+33612345679", birthday=(6, 15)))
    assert loyalty(env, "run", "--at", "2027-06-15T08:30:00Z").returncode == 0  # the gift, skipped: no consent
    for keyword, sid in (("STOP", "SM" + "a" * 32), ("START", "SM" + "b" * 32)):
        apply_inbound(pg_sessions, {"MessageSid": sid, "From": "+33612345679", "To": "+15005550006", "Body": keyword})

    result = loyalty(env, "history", "--member", "M0110", "--json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    consent = [e["summary"] for e in events if e["type"] == "consent" and e.get("channel") == "sms"]
    assert consent[-2:] == ["sms opt-out by member: texted STOP", "sms opt-in by member: texted START"]
    assert not [e for e in events if e["type"] == "audit"]  # nothing left as an unrecognised action
    (gift,) = [e for e in events if e["type"] == "delivery"]
    assert gift["summary"] == "birthday: skipped (no_consent)"  # no "100 points": none were granted
    assert gift["reward_points"] is None
    with pg_sessions() as session:
        assert session.scalar(select(Delivery.reward_points)) == 100  # what it would have granted
