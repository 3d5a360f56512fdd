"""The four other kinds and the rules across campaigns, as a member would notice them."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from core.settings import load_settings
from models.delivery import Delivery
from models.member import Member
from models.points import PointEntry
from tests import cli
from tests.conftest import REPO_ROOT
from tests.support.members import add_members, make_member
from tests.support.program import give_lot, place_order, redeem
from workers.planning import plan_context, preview_campaign
from workers.runtime import build_runtime
from workers.tick import run_tick

UTC = UTC


def ledger_rows(sessions, campaign: str) -> dict[str, tuple[str, str | None]]:
    with sessions() as session:
        return {key: (state, reason) for key, state, reason in session.execute(
            select(Delivery.occurrence_key, Delivery.state, Delivery.reason).where(Delivery.campaign == campaign))}


def texts_to(smtp_sink, username: str) -> list[str]:
    return [m.get_body(("plain",)).get_content() for m in smtp_sink.messages if m["To"].addresses[0].username == username]


def sms_outbox(runtime) -> dict[str, dict]:
    folder = runtime.settings.outbox_dir / "sms"
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")} if folder.exists() else {}


# --- expiring points -----------------------------------------------------------------------------

def test_two_lots_expiring_the_same_day_make_one_reminder_with_their_sum_30_and_7_days_before(runtime, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("EXP", timezone_name="Europe/Paris"))
    expiry_morning = datetime(2027, 7, 31, 6, 0, tzinfo=UTC)  # 08:00 in Paris on July 31
    give_lot(runtime, "EXP", "lot-a", 120, datetime(2026, 7, 31, 6, tzinfo=UTC), expiry_morning)
    give_lot(runtime, "EXP", "lot-b", 80, datetime(2026, 7, 31, 20, tzinfo=UTC), expiry_morning + timedelta(hours=14))
    give_lot(runtime, "EXP", "lot-c", 999, datetime(2026, 9, 1, tzinfo=UTC), datetime(2027, 9, 1, tzinfo=UTC))

    run_tick(runtime, datetime(2027, 7, 1, 7, 59, tzinfo=UTC))  # 09:59 in Paris: not yet
    assert smtp_sink.messages == []
    run_tick(runtime, datetime(2027, 7, 1, 8, 0, tzinfo=UTC))  # 10:00 on July 1: 30 days before
    run_tick(runtime, datetime(2027, 7, 24, 8, 0, tzinfo=UTC))  # 7 days before
    assert ledger_rows(pg_sessions, "points_expiring") == {
        "points_expiring:EXP:2027-07-31:30": ("sent", None),
        "points_expiring:EXP:2027-07-31:7": ("sent", None),
    }
    first, second = texts_to(smtp_sink, "exp")
    assert "200 of your points expire on July 31, 2027" in first
    assert "€2.00" in first


def test_a_lot_half_redeemed_before_its_reminder_states_the_new_amount(runtime, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("HALF", timezone_name="America/Los_Angeles", locale="fr_CA"))
    give_lot(runtime, "HALF", "lot", 400, datetime(2026, 8, 1, tzinfo=UTC), datetime(2027, 8, 1, 12, tzinfo=UTC))
    redeem(runtime, "HALF", "spend", 200, datetime(2027, 6, 1, tzinfo=UTC))
    run_tick(runtime, datetime(2027, 7, 2, 17, 0, tzinfo=UTC))  # 10:00 in Los Angeles, 30 days before
    (text,) = texts_to(smtp_sink, "half")
    assert "200 de vos points expirent le 1 août 2027" in text


def test_points_redeemed_between_planning_and_sending_cancel_the_reminder(runtime, pg_sessions, smtp_sink):
    from models.db import transaction
    from workers.delivery import deliver
    from workers.planning import plan_campaign, plan_context

    add_members(pg_sessions, make_member("GONE"))
    give_lot(runtime, "GONE", "lot", 50, datetime(2026, 8, 1, tzinfo=UTC), datetime(2027, 8, 1, 12, tzinfo=UTC))
    at = datetime(2027, 7, 25, 9, tzinfo=UTC)
    with transaction(pg_sessions) as session:
        ids = plan_campaign(session, runtime.campaigns.get("points_expiring"),
                            plan_context(session, runtime.campaigns, runtime.program, at)).planned_ids
    redeem(runtime, "GONE", "spend-all", 50, at)
    report = deliver(runtime, ids, as_of=at)
    assert smtp_sink.messages == [] and report.reasons == {"points_no_longer_expiring": 1}


def test_without_email_consent_the_reminder_goes_by_sms(runtime, pg_sessions, smtp_sink):
    member = make_member("SMSONLY", email_opt_in=False, sms_opt_in=True, phone="+33612345678")
    add_members(pg_sessions, member)
    give_lot(runtime, "SMSONLY", "lot", 75, datetime(2026, 8, 1, tzinfo=UTC), datetime(2027, 8, 1, 12, tzinfo=UTC))
    run_tick(runtime, datetime(2027, 7, 25, 9, tzinfo=UTC))
    assert smtp_sink.messages == []
    sms = sms_outbox(runtime)["points%5Fexpiring_SMSONLY_2027-08-01_7"]
    assert sms["to"] == "+33612345678" and "75 points" in sms["body"] and "STOP" in sms["body"]


# --- points ledger -------------------------------------------------------------------------------

def test_a_refund_after_a_redemption_takes_back_what_is_left_and_records_the_rest(runtime, pg_sessions):
    from models import ledger

    add_members(pg_sessions, make_member("REF"))
    place_order(runtime, "REF", "O1", datetime(2027, 1, 10, tzinfo=UTC), "100.90")  # 100 points + 50 bonus
    redeem(runtime, "REF", "spend", 130, datetime(2027, 1, 11, tzinfo=UTC))
    place_order(runtime, "REF", "O1", datetime(2027, 1, 10, tzinfo=UTC), "100.90", status="refunded")
    with pg_sessions() as session:
        refund = session.scalars(select(PointEntry).where(PointEntry.entry_key == "refund:O1")).one()
        balance = ledger.balance(session, refund.member_id)
    assert refund.points == -20
    assert "80 points already spent, not recoverable" in refund.source
    assert balance == 0


def test_the_expiry_entry_is_written_once_however_often_the_job_runs(runtime, pg_sessions):
    from models import ledger
    from models.db import transaction
    from services.program_ops import expire_due_lots

    add_members(pg_sessions, make_member("XP"))
    give_lot(runtime, "XP", "lot", 300, datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    redeem(runtime, "XP", "spend", 100, datetime(2026, 6, 1, tzinfo=UTC))
    with pg_sessions() as session:
        assert expire_due_lots(session, now=datetime(2026, 12, 31, tzinfo=UTC)) == 0
    for _ in range(3):
        with transaction(pg_sessions) as session:
            expire_due_lots(session, now=datetime(2027, 1, 2, tzinfo=UTC))
    run_tick(runtime, datetime(2027, 1, 3, tzinfo=UTC))
    with pg_sessions() as session:
        expiries = session.scalars(select(PointEntry.points).where(PointEntry.kind == "expire")).all()
        member_pk = session.scalar(select(Member.id))
        assert ledger.balance(session, member_pk) == 0
    assert expiries == [-200]


# --- win-back ------------------------------------------------------------------------------------

def test_winback_email_at_day_60_then_an_sms_coupon_at_day_90(runtime, pg_sessions, smtp_sink):
    from campaigns.holdout import is_held_out

    assert not is_held_out("winback", "LAPSED", 0.1)  # LAPSED is in the messaged 90%, by the documented hash
    add_members(pg_sessions, make_member("LAPSED", sms_opt_in=True, phone="+33611111111", tier="bronze"))
    place_order(runtime, "LAPSED", "L1", datetime(2027, 1, 1, 15, tzinfo=UTC), "40")
    # Paris, 10:00 local = 09:00 UTC in winter, 08:00 in summer.
    run_tick(runtime, datetime(2027, 3, 1, 9, tzinfo=UTC))  # day 59: nothing
    run_tick(runtime, datetime(2027, 3, 2, 9, tzinfo=UTC))  # day 60: step 1 by email
    run_tick(runtime, datetime(2027, 4, 1, 8, tzinfo=UTC))  # day 90: step 2 by SMS with a coupon
    rows = ledger_rows(pg_sessions, "winback")
    assert rows == {"winback:LAPSED:2027-01-01:1": ("sent", None), "winback:LAPSED:2027-01-01:2": ("sent", None)}
    (text,) = texts_to(smtp_sink, "lapsed")
    assert "It has been 60 days since your last order" in text
    sms = sms_outbox(runtime)["winback_LAPSED_2027-01-01_2"]
    with pg_sessions() as session:
        code = session.scalar(select(Delivery.coupon_code).where(Delivery.occurrence_key == "winback:LAPSED:2027-01-01:2"))
    assert code.startswith("BACK-") and code in sms["body"] and "15%" in sms["body"]


def test_an_order_between_planning_and_sending_stops_the_winback_and_a_new_lapse_starts_over(runtime, pg_sessions, smtp_sink):
    from models.db import transaction
    from workers.delivery import deliver
    from workers.planning import plan_campaign, plan_context

    members = [make_member(f"W{i:02d}") for i in range(12)]
    add_members(pg_sessions, *members)
    for member in members:
        place_order(runtime, member.external_id, f"{member.external_id}-1", datetime(2027, 1, 1, 15, tzinfo=UTC), "20")
    at = datetime(2027, 3, 2, 9, tzinfo=UTC)
    with transaction(pg_sessions) as session:
        plan = plan_campaign(session, runtime.campaigns.get("winback"), plan_context(session, runtime.campaigns, runtime.program, at))
    assert plan.planned_ids, "every member of this test cannot be held out"
    with pg_sessions() as session:
        first = session.scalar(select(Member.external_id).join(Delivery, Delivery.member_id == Member.id)
                               .where(Delivery.id == plan.planned_ids[0]))
    place_order(runtime, first, f"{first}-2", at - timedelta(hours=1), "15")
    report = deliver(runtime, plan.planned_ids, as_of=at)
    assert report.reasons["ordered_again"] == 1
    assert first.lower() not in [m["To"].addresses[0].username for m in smtp_sink.messages]

    run_tick(runtime, datetime(2027, 5, 1, 8, tzinfo=UTC))  # 60 days after the new order: a new episode
    assert ledger_rows(pg_sessions, "winback")[f"winback:{first}:2027-03-02:1"][0] in ("sent", "held_out")


def test_the_holdout_is_the_documented_stable_hash_and_the_same_on_every_run(runtime, pg_sessions, env):
    import hashlib

    members = [make_member(f"H{i:03d}") for i in range(200)]
    add_members(pg_sessions, *members)
    for member in members:
        place_order(runtime, member.external_id, f"{member.external_id}-1", datetime(2027, 1, 1, 15, tzinfo=UTC), "20")
    expected = {m.external_id for m in members
                if int.from_bytes(hashlib.sha256(f"winback:{m.external_id}".encode()).digest()[:8], "big") / 2**64 < 0.1}
    assert 8 <= len(expected) <= 35

    preview = cli.loyalty(env, "preview", "winback", "--at", "2027-03-02T09:00:00Z", "--json", drop=())
    lines = [json.loads(line) for line in preview.stdout.splitlines()]
    assert {line["member"] for line in lines if line["status"] == "held_out"} == expected
    run_tick(runtime, datetime(2027, 3, 2, 9, tzinfo=UTC))
    with pg_sessions() as session:
        held = set(session.scalars(select(Member.external_id).join(Delivery, Delivery.member_id == Member.id)
                                   .where(Delivery.state == "held_out")))
    assert held == expected


# --- tier upgrade --------------------------------------------------------------------------------

def test_two_orders_the_same_day_crossing_two_thresholds_give_one_notice_for_the_highest_tier(runtime, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("UP", tier="bronze"))
    place_order(runtime, "UP", "U1", datetime(2027, 5, 10, 6, tzinfo=UTC), "600")  # silver, 08:00 in Paris
    place_order(runtime, "UP", "U2", datetime(2027, 5, 10, 7, tzinfo=UTC), "1500")  # gold, 09:00
    run_tick(runtime, datetime(2027, 5, 10, 8, 5, tzinfo=UTC))  # 10:05 in Paris
    run_tick(runtime, datetime(2027, 5, 10, 12, 0, tzinfo=UTC))
    assert ledger_rows(pg_sessions, "tier_upgrade") == {"tier_upgrade:UP:gold:2027-05-10": ("sent", None)}
    (text,) = texts_to(smtp_sink, "up")
    assert "You are now a Gold member" in text and "early access to sales" in text


def test_a_downgrade_waits_for_the_grace_period_and_sends_no_notice(runtime, pg_sessions, smtp_sink):
    from models.db import transaction
    from services.program_ops import recalculate_all_tiers

    add_members(pg_sessions, make_member("DOWN", tier="bronze"))
    place_order(runtime, "DOWN", "D1", datetime(2026, 5, 1, tzinfo=UTC), "700")
    # D1 leaves the 365-day window on 2027-05-01 00:00: the 30 days of grace run from then, not
    # from the recalculation that noticed it
    for day, expected in ((datetime(2027, 5, 2, tzinfo=UTC), "silver"), (datetime(2027, 5, 30, 23, tzinfo=UTC), "silver"),
                          (datetime(2027, 5, 31, tzinfo=UTC), "bronze")):
        with transaction(pg_sessions) as session:
            recalculate_all_tiers(session, runtime.program, now=day)
        with pg_sessions() as session:
            assert session.scalar(select(Member.tier)) == expected, day
    run_tick(runtime, datetime(2027, 6, 2, 12, tzinfo=UTC))
    assert ledger_rows(pg_sessions, "tier_upgrade") == {}


# --- member day ----------------------------------------------------------------------------------

def test_member_day_is_the_first_tuesday_for_silver_and_gold_at_ten_local(runtime, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("SILV", tier="silver"), make_member("GOLD", tier="gold", locale="fr"),
                make_member("BRON", tier="bronze"))
    run_tick(runtime, datetime(2027, 6, 1, 7, 59, tzinfo=UTC))  # Tuesday June 1, 09:59 in Paris
    run_tick(runtime, datetime(2027, 6, 8, 8, 0, tzinfo=UTC))  # the second Tuesday
    assert smtp_sink.messages == []
    run_tick(runtime, datetime(2027, 6, 1, 8, 0, tzinfo=UTC))
    assert ledger_rows(pg_sessions, "member_day") == {
        "member_day:SILV:2027-06-01": ("sent", None), "member_day:GOLD:2027-06-01": ("sent", None)}
    assert "c'est la journée membre" in texts_to(smtp_sink, "gold")[0]


def _runtime_with(env, tmp_path, *, campaign_edits=None, program_edits=None):
    definitions = tmp_path / "definitions"
    shutil.copytree(REPO_ROOT / "campaigns" / "definitions", definitions)
    for name, (old, new) in (campaign_edits or {}).items():
        path = definitions / f"{name}.yaml"
        path.write_text(path.read_text().replace(old, new))
    program = tmp_path / "program.yaml"
    text = (REPO_ROOT / "campaigns" / "program.yaml").read_text()
    for old, new in program_edits or []:
        text = text.replace(old, new)
    program.write_text(text)
    return build_runtime(load_settings({**env, "LOYALTY_CAMPAIGNS_DIR": str(definitions), "LOYALTY_PROGRAM_FILE": str(program)}))


def test_a_member_day_on_the_day_the_clocks_change_is_still_ten_local(env, tmp_path, pg_engine, pg_sessions, smtp_sink):
    runtime = _runtime_with(env, tmp_path, campaign_edits={"member_day": ("FREQ=MONTHLY;BYDAY=1TU", "FREQ=MONTHLY;BYDAY=-1SU")})
    try:
        add_members(pg_sessions, make_member("DST", tier="gold"))
        run_tick(runtime, datetime(2027, 3, 28, 7, 59, tzinfo=UTC))  # 09:59 CEST, the first day of summer time
        assert smtp_sink.messages == []
        run_tick(runtime, datetime(2027, 3, 28, 8, 0, tzinfo=UTC))
        assert ledger_rows(pg_sessions, "member_day") == {"member_day:DST:2027-03-28": ("sent", None)}
    finally:
        runtime.close()


# --- across campaigns ----------------------------------------------------------------------------

def test_messages_planned_under_the_cap_are_held_to_it_again_when_claimed(runtime, pg_sessions, smtp_sink):
    """Each of three member-day messages was planned while the member had room under the cap (as
    when campaigns plan at the same moment); at the claim the member is locked while their recent
    messages are counted, so only the cap's number go out and the rest are skipped, not lost."""
    from workers.delivery import deliver

    add_members(pg_sessions, make_member("RACE", tier="gold"))
    at = datetime(2027, 3, 2, 9, tzinfo=UTC)
    with pg_sessions() as session, session.begin():
        member_id = session.scalar(select(Member.id).where(Member.external_id == "RACE"))
        session.add_all([Delivery(occurrence_key=f"member_day:RACE:2027-03-0{day}", campaign="member_day",
                                  member_id=member_id, channel="email", send_at=at, occurrence_date=f"2027-03-0{day}")
                         for day in (1, 2, 3)])
    with pg_sessions() as session:
        ids = session.scalars(select(Delivery.id).order_by(Delivery.id)).all()
    cap = runtime.program.frequency_cap.max_messages
    assert cap < len(ids)

    report = deliver(runtime, ids, as_of=at)

    assert report.outcomes == {"sent": cap, "skipped": len(ids) - cap}
    assert report.reasons == {"frequency_cap": len(ids) - cap}
    states = ledger_rows(pg_sessions, "member_day")
    assert sorted(states.values()) == sorted([("sent", None)] * cap + [("skipped", "frequency_cap")] * (len(ids) - cap))
    assert len(texts_to(smtp_sink, "race")) == cap


def test_a_cap_reached_by_one_campaign_blocks_another_but_not_an_exempt_one(env, tmp_path, pg_engine, pg_sessions, smtp_sink):
    runtime = _runtime_with(env, tmp_path, campaign_edits={"winback": ("holdout: 0.1", "holdout: 0")},
                            program_edits=[("max_messages: 2", "max_messages: 1")])
    try:
        add_members(pg_sessions, make_member("CAP", tier="gold", birthday=(6, 2)))
        place_order(runtime, "CAP", "C1", datetime(2026, 12, 31, 15, tzinfo=UTC), "20")
        with runtime.sessions() as session, session.begin():
            session.scalar(select(Member)).tier = "gold"
        run_tick(runtime, datetime(2027, 3, 1, 9, tzinfo=UTC))  # win-back step 1 (day 60): the one allowed this week
        run_tick(runtime, datetime(2027, 3, 2, 12, tzinfo=UTC))  # member day, the next day (first Tuesday of March)
        assert ledger_rows(pg_sessions, "winback") == {"winback:CAP:2026-12-31:1": ("sent", None)}
        assert ledger_rows(pg_sessions, "member_day") == {"member_day:CAP:2027-03-02": ("skipped", "frequency_cap")}
        run_tick(runtime, datetime(2027, 6, 2, 9, tzinfo=UTC))
        assert ledger_rows(pg_sessions, "birthday") == {"birthday:CAP:2027": ("sent", None)}
    finally:
        runtime.close()


def test_planning_marks_members_at_the_cap_skipped_and_leaves_the_others_planned(env, tmp_path, pg_engine, pg_sessions, smtp_sink):
    """The cap applied when a tick plans (what `loyalty preview` shows), on a one-statement kind
    (member day) and on the win-back, whose steps are parts of one statement."""
    runtime = _runtime_with(env, tmp_path, campaign_edits={"winback": ("holdout: 0.1", "holdout: 0")},
                            program_edits=[("max_messages: 2", "max_messages: 1")])
    try:
        add_members(pg_sessions, make_member("FULL", tier="gold"), make_member("FREE", tier="gold"),
                    make_member("NONE", tier="gold", email_opt_in=False))
        for external_id, order in (("FULL", "F1"), ("FREE", "F2"), ("NONE", "F3")):
            place_order(runtime, external_id, order, datetime(2026, 12, 31, 15, tzinfo=UTC), "20")
        with runtime.sessions() as session, session.begin():
            for member in session.scalars(select(Member)):
                member.tier = "gold"
        with runtime.sessions() as session, session.begin():  # FULL had a member-day message this week
            member = session.scalar(select(Member).where(Member.external_id == "FULL"))
            session.add(Delivery(occurrence_key="member_day:FULL:2027-02-02", campaign="member_day", member_id=member.id,
                                 channel="email", state="sent", send_at=datetime(2027, 2, 27, 9, tzinfo=UTC),
                                 planned_at=datetime(2027, 2, 27, 9, tzinfo=UTC), occurrence_date="2027-02-02"))

        def preview(campaign_id, at):
            with runtime.sessions() as session:
                ctx = plan_context(session, runtime.campaigns, runtime.program, at)
                return {row["member"]: (row["state"], row["reason"])
                        for row in preview_campaign(session, runtime.campaigns.get(campaign_id), ctx)}

        assert preview("winback", datetime(2027, 3, 1, 9, tzinfo=UTC)) == {
            "FULL": ("skipped", "frequency_cap"), "FREE": ("planned", None), "NONE": ("skipped", "no_consent")}
        assert preview("member_day", datetime(2027, 3, 2, 12, tzinfo=UTC)) == {
            "FULL": ("skipped", "frequency_cap"), "FREE": ("planned", None), "NONE": ("skipped", "no_consent")}
        assert preview("birthday", datetime(2027, 6, 2, 9, tzinfo=UTC)) == {}  # exempt, and no birthday today
    finally:
        runtime.close()


def test_an_sms_planned_at_2300_local_leaves_at_0800(env, tmp_path, pg_engine, pg_sessions):
    runtime = _runtime_with(env, tmp_path, campaign_edits={"winback": ("holdout: 0.1", "holdout: 0")})
    try:
        add_members(pg_sessions, make_member("NIGHT", email_opt_in=False, sms_opt_in=True, phone="+33622222222"))
        place_order(runtime, "NIGHT", "N1", datetime(2027, 1, 1, 15, tzinfo=UTC), "20")
        at = datetime(2027, 4, 1, 21, 0, tzinfo=UTC)  # day 90, 23:00 in Paris: step 2 by SMS
        for hour in range(12):
            run_tick(runtime, at + timedelta(hours=hour))
            sent = sms_outbox(runtime)
            if sent:
                break
        assert at + timedelta(hours=hour) == datetime(2027, 4, 2, 6, 0, tzinfo=UTC)  # 08:00 in Paris
        with pg_sessions() as session:
            send_at = session.scalar(select(Delivery.send_at).where(Delivery.campaign == "winback"))
        assert send_at == datetime(2027, 4, 2, 6, 0, tzinfo=UTC)
    finally:
        runtime.close()


def test_two_campaigns_of_the_same_kind_each_send_once_without_blocking_each_other(env, tmp_path, pg_engine, pg_sessions, smtp_sink):
    definitions = tmp_path / "definitions"
    shutil.copytree(REPO_ROOT / "campaigns" / "definitions", definitions)
    shipped = (definitions / "birthday.yaml").read_text()
    assert "id: birthday\n" in shipped
    (definitions / "birthday_vip.yaml").write_text(shipped.replace("id: birthday\n", "id: birthday_vip\n"))
    runtime = build_runtime(load_settings({**env, "LOYALTY_CAMPAIGNS_DIR": str(definitions)}))
    try:
        add_members(pg_sessions, make_member("TWICE", tier="gold", birthday=(6, 15)))
        for _ in range(2):  # a second tick (a retry, a second clock) changes nothing
            run_tick(runtime, datetime(2027, 6, 15, 12, tzinfo=UTC))
        assert ledger_rows(pg_sessions, "birthday") == {"birthday:TWICE:2027": ("sent", None)}
        assert ledger_rows(pg_sessions, "birthday_vip") == {"birthday_vip:TWICE:2027": ("sent", None)}
        assert len(texts_to(smtp_sink, "twice")) == 2
    finally:
        runtime.close()
