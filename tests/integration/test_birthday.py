"""The birthday gift, end to end on PostgreSQL and a real SMTP server, as a member would notice it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from core.tokens import read_unsubscribe_token
from models import ledger
from models.delivery import Delivery
from models.member import Member
from models.points import PointEntry
from tests.conftest import TEST_SECRET
from tests.support.members import add_members, make_member
from workers.channels.email import message_id_for
from workers.tick import run_tick

UTC = UTC


def first_sent_tick(runtime, smtp_sink, start: datetime, hours: int, step_minutes: int = 30) -> dict[str, datetime]:
    """Run the birthday campaign's tick every ``step_minutes`` and note when each member's email first
    arrived (the other campaigns' ticks would only make each of the 50 to 150 ticks slower)."""
    first: dict[str, datetime] = {}
    seen = len(smtp_sink.messages)
    at = start
    while at < start + timedelta(hours=hours):
        run_tick(runtime, at, campaign_ids=["birthday"])
        for message in smtp_sink.messages[seen:]:
            first.setdefault(message["To"].addresses[0].username, at)
        seen = len(smtp_sink.messages)
        at += timedelta(minutes=step_minutes)
    return first


def test_each_member_gets_the_gift_on_their_own_local_birthday_after_nine(runtime, pg_sessions, smtp_sink):
    add_members(
        pg_sessions,
        make_member("AKL", timezone_name="Pacific/Auckland", birthday=(3, 10)),
        make_member("PAR", timezone_name="Europe/Paris", birthday=(3, 10)),
        make_member("LAX", timezone_name="America/Los_Angeles", birthday=(3, 10)),
        make_member("AKL11", timezone_name="Pacific/Auckland", birthday=(3, 11)),
    )
    first = first_sent_tick(runtime, smtp_sink, datetime(2027, 3, 9, 0, 0, tzinfo=UTC), hours=72)

    # 09:00 local on each member's own March 10 (Auckland is UTC+13, Paris +1, Los Angeles -8).
    assert first["akl"] == datetime(2027, 3, 9, 20, 0, tzinfo=UTC)
    assert first["par"] == datetime(2027, 3, 10, 8, 0, tzinfo=UTC)
    assert first["lax"] == datetime(2027, 3, 10, 17, 0, tzinfo=UTC)
    # Auckland's March 11 begins while it is still March 10 in UTC: not a minute before 09:00 there.
    assert first["akl11"] == datetime(2027, 3, 10, 20, 0, tzinfo=UTC)
    assert len(smtp_sink.messages) == 4


def test_the_day_the_clocks_change_still_means_nine_local(runtime, pg_sessions, smtp_sink):
    add_members(
        pg_sessions,
        make_member("SPRING", timezone_name="Europe/Paris", birthday=(3, 28)),  # 02:00 → 03:00 that night
        make_member("AUTUMN", timezone_name="Europe/Paris", birthday=(10, 31)),  # 03:00 → 02:00
        make_member("USDST", timezone_name="America/Los_Angeles", birthday=(3, 14)),
    )
    spring = first_sent_tick(runtime, smtp_sink, datetime(2027, 3, 27, 12, tzinfo=UTC), hours=36)
    usa = first_sent_tick(runtime, smtp_sink, datetime(2027, 3, 14, 0, tzinfo=UTC), hours=24)
    autumn = first_sent_tick(runtime, smtp_sink, datetime(2027, 10, 30, 12, tzinfo=UTC), hours=36)
    assert spring["spring"] == datetime(2027, 3, 28, 7, 0, tzinfo=UTC)  # 09:00 CEST
    assert usa["usdst"] == datetime(2027, 3, 14, 16, 0, tzinfo=UTC)  # 09:00 PDT
    assert autumn["autumn"] == datetime(2027, 10, 31, 8, 0, tzinfo=UTC)  # 09:00 CET


def test_feb_29_birthdays_are_celebrated_on_feb_28_in_common_years(runtime, pg_sessions, smtp_sink):
    add_members(
        pg_sessions,
        make_member("LEAP", timezone_name="Europe/Paris", birthday=date(2000, 2, 29)),
        make_member("FEB28", timezone_name="Europe/Paris", birthday=(2, 28)),
    )
    common = first_sent_tick(runtime, smtp_sink, datetime(2027, 2, 27, 12, tzinfo=UTC), hours=72)
    assert common == {"leap": datetime(2027, 2, 28, 8, tzinfo=UTC), "feb28": datetime(2027, 2, 28, 8, tzinfo=UTC)}
    leap = first_sent_tick(runtime, smtp_sink, datetime(2028, 2, 27, 12, tzinfo=UTC), hours=72)
    assert leap == {"feb28": datetime(2028, 2, 28, 8, tzinfo=UTC), "leap": datetime(2028, 2, 29, 8, tzinfo=UTC)}
    with pg_sessions() as session:
        keys = set(session.scalars(select(Delivery.occurrence_key).where(Delivery.state == "sent")))
    assert keys == {"birthday:LEAP:2027", "birthday:FEB28:2027", "birthday:LEAP:2028", "birthday:FEB28:2028"}


def test_no_consent_and_a_birthday_changed_last_week_are_skipped_with_the_reason(runtime, pg_sessions, smtp_sink):
    at = datetime(2027, 6, 15, 10, tzinfo=UTC)
    add_members(
        pg_sessions,
        make_member("NOCONSENT", email_opt_in=False),
        make_member("CHANGED", birthday_updated_at=at - timedelta(days=7)),
        make_member("CHANGED31", birthday_updated_at=at - timedelta(days=31)),
        make_member("OK"),
    )
    report = run_tick(runtime, at)
    with pg_sessions() as session:
        outcome = {
            m: (state, reason)
            for m, state, reason in session.execute(
                select(Member.external_id, Delivery.state, Delivery.reason).join(Delivery, Delivery.member_id == Member.id)
            )
        }
    assert outcome == {
        "NOCONSENT": ("skipped", "no_consent"),
        "CHANGED": ("skipped", "birthday_recently_changed"),
        "CHANGED31": ("sent", None),
        "OK": ("sent", None),
    }
    assert sorted(m["To"].addresses[0].username for m in smtp_sink.messages) == ["changed31", "ok"]
    assert report.plans[0].skipped == 2


def test_the_email_has_both_parts_the_headers_and_the_member_s_language(runtime, pg_sessions, smtp_sink):
    add_members(
        pg_sessions,
        make_member("FR1", locale="fr_FR", tier="gold", first_name="Chloé"),
        make_member("EN1", locale="de", tier="silver", first_name="Hans"),  # no German: falls back to English
    )
    run_tick(runtime, datetime(2027, 6, 15, 10, tzinfo=UTC))
    by_member = {m["To"].addresses[0].username: m for m in smtp_sink.messages}

    french = by_member["fr1"]
    assert french["Subject"] == "Joyeux anniversaire, Chloé ! 500 points pour vous"
    assert french["Message-ID"] == message_id_for("birthday:FR1:2027", runtime.settings.email_from)
    assert french["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = french["List-Unsubscribe"].strip("<>")
    assert link.startswith("https://club.example.com/unsubscribe/")
    assert read_unsubscribe_token(TEST_SECRET, link.rsplit("/", 1)[1]) == ("FR1", "email")
    assert french.get_content_type() == "multipart/alternative"
    text = french.get_body(("plain",)).get_content()
    html = french.get_body(("html",)).get_content()
    assert "500 points" in text and "14 juin 2028" in text  # Babel's French date for the expiry
    assert "<strong>500 points</strong>" in html

    english = by_member["en1"]
    assert english["Subject"] == "Happy birthday, Hans! 250 points for you"
    assert "June 14, 2028" in english.get_body(("plain",)).get_content()


def test_the_same_tick_twice_sends_one_email_and_grants_the_points_once(runtime, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("TWICE", tier="silver"))
    at = datetime(2027, 6, 15, 10, tzinfo=UTC)
    run_tick(runtime, at)
    run_tick(runtime, at)
    run_tick(runtime, at + timedelta(hours=3))
    assert len(smtp_sink.messages) == 1
    with pg_sessions() as session:
        member_id = session.scalar(select(Member.id).where(Member.external_id == "TWICE"))
        assert ledger.balance(session, member_id) == 250
        assert session.scalar(select(func.count()).select_from(PointEntry)) == 1


def test_consent_withdrawn_between_planning_and_sending_stops_the_email(runtime, pg_sessions, smtp_sink):
    from models.db import transaction
    from workers.delivery import deliver
    from workers.planning import plan_campaign, plan_context

    add_members(pg_sessions, make_member("OPTOUT"))
    at = datetime(2027, 6, 15, 10, tzinfo=UTC)
    with transaction(pg_sessions) as session:
        planned = plan_campaign(session, runtime.campaigns.get("birthday"), plan_context(session, runtime.campaigns, runtime.program, at)).planned_ids
    with transaction(pg_sessions) as session:
        session.scalars(select(Member)).one().email_opt_in = False
    report = deliver(runtime, planned, as_of=at)
    assert smtp_sink.messages == []
    assert report.reasons == {"consent_withdrawn": 1}


@pytest.mark.parametrize("tier, points", [("bronze", 100), ("silver", 250), ("gold", 500)])
def test_the_gift_depends_on_the_tier(runtime, pg_sessions, smtp_sink, tier, points):
    add_members(pg_sessions, make_member("T1", tier=tier))
    run_tick(runtime, datetime(2027, 6, 15, 10, tzinfo=UTC))
    with pg_sessions() as session:
        entry = session.scalars(select(PointEntry)).one()
    assert (entry.points, entry.source, entry.entry_key) == (points, "campaign:birthday", "reward:birthday:T1:2027")
    assert entry.expires_at == datetime(2028, 6, 14, 10, tzinfo=UTC)
