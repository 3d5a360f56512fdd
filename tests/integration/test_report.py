"""`loyalty report`: the program's figures, as a marketer reads them (tables, JSON, an HTML page),
on PostgreSQL with a ledger whose every figure is known, and once on the embedded default."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal

from models import ledger
from models.db import transaction
from models.delivery import Delivery
from models.order import Order
from models.points import EntryKind
from tests.integration.test_support_commands import loyalty, member_id, one_sentence, row
from tests.support.members import add_members, make_member

UTC = UTC


def at(day: int, hour: int = 10, month: int = 6) -> datetime:
    return datetime(2027, month, day, hour, tzinfo=UTC)


def seed_program(sessions) -> None:
    """Five members, a month of points, orders and deliveries (June 2027), and some of May."""
    add_members(sessions, make_member("A", tier="gold"), make_member("B", tier="silver"), make_member("C"),
                make_member("D"), make_member("E", tier="silver"))
    ids = {name: member_id(sessions, name) for name in "ABCDE"}
    entries = [  # (member, key, kind, points, when, source)
        ("A", "p0", EntryKind.EARN, 1000, at(1, month=5), "order:O0"),  # May: outside the period
        ("A", "p1", EntryKind.EARN, 500, at(2), "order:O1"),
        ("A", "p2", EntryKind.REDEEM, -200, at(10), "checkout:R1"),
        ("B", "p3", EntryKind.EARN, 300, at(5), "campaign:birthday"),
        ("B", "p4", EntryKind.EARN, 100, at(6), "order:O2"),
        ("C", "p5", EntryKind.EARN, 50, at(7), "first_order_bonus:O3"),
        ("C", "p6", EntryKind.EXPIRE, -50, at(20), "expiry"),
        ("D", "p7", EntryKind.ADJUST, 40, at(8), "support:alice"),
        ("D", "p8", EntryKind.ADJUST, -10, at(9), "support:alice"),
    ]
    deliveries = [  # (key, campaign, member, state, reason, planned, finished)
        ("member_day:A:2027-06-03", "member_day", "A", "sent", None, at(3, 9), at(3)),
        ("member_day:B:2027-06-03", "member_day", "B", "sent", None, at(3, 9), at(3)),
        ("member_day:C:2027-06-03", "member_day", "C", "sent", None, at(3, 9), at(3)),
        ("member_day:D:2027-06-03", "member_day", "D", "held_out", "holdout", at(3, 9), at(3, 9)),
        ("member_day:E:2027-06-03", "member_day", "E", "held_out", "holdout", at(3, 9), at(3, 9)),
        ("member_day:E:2027-06-04", "member_day", "E", "skipped", "frequency_cap", at(4, 9), None),
        ("member_day:E:2027-06-05", "member_day", "E", "failed", "email_rejected", at(5, 9), at(5)),
        ("birthday:B:2027", "birthday", "B", "sent", None, at(5, 9), at(5)),
        ("birthday:C:2027", "birthday", "C", "skipped", "no_consent", at(6, 9), None),
        ("birthday:D:2027", "birthday", "D", "skipped", "birthday_recently_changed", at(7, 9), None),
        ("birthday:E:2027", "birthday", "E", "planned", None, at(30, 9), None),
        ("oneoff:birthday:A:1", "birthday", "A", "sent", None, at(6, 9), at(6)),
        ("member_day:A:2027-05-03", "member_day", "A", "sent", None, at(3, 9, month=5), at(3, month=5)),  # May
    ]
    orders = [  # (order id, member, placed, status)
        ("O1", "A", at(5), "placed"),  # 2 days after A's member-day message: a conversion
        ("O2", "B", at(15), "placed"),  # 12 days after: one only with --conversion-days 14 or more
        ("O3", "C", at(4), "refunded"),  # not an order that counts
    ]
    with transaction(sessions) as session:
        for name, key, kind, points, when, source in entries:
            ledger.record(session, member_id=ids[name], entry_key=key, kind=kind, points=points, occurred_at=when,
                          expires_at=datetime(2028, 6, 1, tzinfo=UTC) if points > 0 else None, source=source)
        for key, campaign, name, state, reason, planned, finished in deliveries:
            session.add(Delivery(occurrence_key=key, campaign=campaign, member_id=ids[name], channel="email", state=state,
                                 reason=reason, send_at=planned, planned_at=planned, finished_at=finished, attempts=1))
        for order_id, name, placed, status in orders:
            session.add(Order(order_id=order_id, member_id=ids[name], placed_at=placed, total=Decimal("40.00"),
                              currency="EUR", status=status))


JUNE = ("--from", "2027-06-01", "--to", "2027-06-30")


def test_the_report_as_json_has_every_figure_of_the_period(env, pg_sessions):
    seed_program(pg_sessions)
    result = loyalty(env, "report", *JUNE, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["period"] == {"from": "2027-06-01T00:00:00Z", "to": "2027-07-01T00:00:00Z",
                              "words": "2027-06-01 to 2027-06-30 (UTC days)"}
    assert data["points"] == {"issued": 990, "redeemed": 200, "expired": 50, "adjusted_down": 10, "outstanding": 1730,
                              "outstanding_value": {"amount": "17.30", "currency": "EUR"}}
    assert data["rates"] == {"redemption_rate": 0.202, "adoption_rate": 0.3333, "earners": 3, "redeemers": 1}
    assert data["points_by_source"] == [
        {"source": "order", "points": 600, "entries": 2},
        {"source": "campaign:birthday", "points": 300, "entries": 1},
        {"source": "first_order_bonus", "points": 50, "entries": 1},
        {"source": "support", "points": 40, "entries": 1},
    ]
    assert data["top_earners"] == [
        {"member": "A", "tier": "gold", "earned": 500, "balance": 1300},
        {"member": "B", "tier": "silver", "earned": 400, "balance": 400},
        {"member": "C", "tier": "bronze", "earned": 50, "balance": 0},
        {"member": "D", "tier": "bronze", "earned": 40, "balance": 30},
    ]
    assert list(data["members_by_tier"].items()) == [("bronze", 2), ("silver", 2), ("gold", 1)]
    assert data["campaigns"] == [
        {"campaign": "birthday", "planned": 4, "sent": 1, "skipped": 2, "failed": 0, "unknown": 0, "held_out": 0,
         "pending": 1, "converted": 0, "held_out_converted": 0,
         "skipped_by_reason": {"birthday_recently_changed": 1, "no_consent": 1},
         "conversion_rate": 0.0, "held_out_conversion_rate": None, "uplift_pp": None},
        {"campaign": "birthday (one-off)", "planned": 1, "sent": 1, "skipped": 0, "failed": 0, "unknown": 0,
         "held_out": 0, "pending": 0, "converted": 0, "held_out_converted": 0, "skipped_by_reason": {},
         "conversion_rate": 0.0, "held_out_conversion_rate": None, "uplift_pp": None},
        {"campaign": "member_day", "planned": 7, "sent": 3, "skipped": 1, "failed": 1, "unknown": 0, "held_out": 2,
         "pending": 0, "converted": 1, "held_out_converted": 0, "skipped_by_reason": {"frequency_cap": 1},
         "conversion_rate": 0.3333, "held_out_conversion_rate": 0.0, "uplift_pp": 33.33},
    ]

    longer = json.loads(loyalty(env, "report", *JUNE, "--json", "--conversion-days", "14").stdout)
    member_day = longer["campaigns"][2]
    assert (member_day["converted"], member_day["conversion_rate"], member_day["uplift_pp"]) == (2, 0.6667, 66.67)
    birthday = longer["campaigns"][0]
    assert birthday["converted"] == 1  # B ordered 10 days after the gift

    all_time = json.loads(loyalty(env, "report", "--json").stdout)
    assert all_time["points"]["issued"] == 1990 and all_time["points"]["outstanding"] == 1730
    assert all_time["campaigns"][2]["planned"] == 8


def test_the_report_tables_say_the_same_as_the_json(env, pg_sessions):
    seed_program(pg_sessions)
    result = loyalty(env, "report", *JUNE)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("Program report, 2027-06-01 to 2027-06-30 (UTC days)")
    assert row(out, "issued") == ["issued", "990"]
    assert row(out, "outstanding") == ["outstanding", "1,730"]
    assert row(out, "outstanding, worth") == ["outstanding, worth", "17.30 EUR"]
    assert row(out, "redemption rate") == ["redemption rate", "20.2%"]
    assert row(out, "adoption rate") == ["adoption rate", "33.3% (1 of 3 earners)"]
    assert row(out, "order") == ["order", "600", "2"]
    assert row(out, "A") == ["A", "gold", "500", "1,300"]
    assert row(out, "silver") == ["silver", "2", "40.0%"]
    sends = [line for line in out.splitlines() if line.startswith("│ member_day")]
    assert [cells for cells in ([c.strip() for c in line.split("│")][1:-1] for line in sends)] == [
        ["member_day", "7", "3", "1", "1", "0", "2", "0"],  # planned, sent, skipped, failed, unknown, held out, pending
        ["member_day", "frequency_cap", "1"],
        ["member_day", "3", "1", "33.3%", "2", "0", "0.0%", "+33.3 pp"],  # the conversions, and the uplift
    ]
    assert row(out, "birthday (one-off)")[:3] == ["birthday (one-off)", "1", "1"]
    assert "Conversions (an order within 7 days)" in out


def test_the_html_page_has_charts_and_needs_no_network(env, pg_sessions, tmp_path):
    seed_program(pg_sessions)
    page = tmp_path / "report.html"
    result = loyalty(env, "report", *JUNE, "--html", str(page))
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith(f"The HTML page is in {page}.")
    html = page.read_text()
    assert html.startswith("<!doctype html>") and html.count("<svg") >= 5
    assert "<script" not in html and "src=" not in html and "@import" not in html
    links = re.findall(r'href="([^"]*)"', html)  # only the sample messages, written next to the page
    assert links and all(link.startswith("report-samples/") and (tmp_path / link).is_file() for link in links)
    urls = re.findall(r"https?://[^\"'<> ]+", html)
    assert urls == ["http://www.w3.org/2000/svg"] * html.count("<svg")  # the SVG namespace, never fetched
    assert "<title>member_day, sent: 33.3%</title>" in html and "<title>member_day, held out: 0.0%</title>" in html
    assert "<b>990</b>points issued" in html and "+33.3" in html


def test_bad_dates_are_one_sentence(env):
    bad = loyalty(env, "report", "--from", "2027-13-01")
    assert bad.returncode == 2
    assert one_sentence(bad) == "error: --from '2027-13-01' is not a date; write it like 2027-06-01."
    reversed_ = loyalty(env, "report", "--from", "2027-06-30", "--to", "2027-06-01")
    assert reversed_.returncode == 2
    assert one_sentence(reversed_) == "error: --to 2027-06-01 is before --from 2027-06-30; swap them."


def test_the_report_on_the_embedded_default(tmp_path):
    home = {"LOYALTY_HOME": str(tmp_path / "home")}
    demo = loyalty(home, "demo", "--members", "60", "--at", "2027-06-15T12:00:00Z", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    outbox = tmp_path / "home" / "outbox"
    files = [p.name for p in outbox.glob("*/*") if p.suffix in (".eml", ".json")]
    gifts_sent = sum(1 for name in files if name.startswith("birthday_"))
    result = loyalty(home, "report", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert sum(data["members_by_tier"].values()) == 60
    assert sum(c["sent"] for c in data["campaigns"]) == len(files) > 0  # one file in the outbox per message sent
    birthday = next(c for c in data["campaigns"] if c["campaign"] == "birthday")
    assert birthday["sent"] == gifts_sent > 0
    gifts = next(s for s in data["points_by_source"] if s["source"] == "campaign:birthday")
    assert gifts["entries"] == gifts_sent
    p = data["points"]
    assert p["outstanding"] == p["issued"] - p["redeemed"] - p["expired"] - p["adjusted_down"]  # the ledger adds up
    table = loyalty(home, "report", "--from", "2027-06-15", "--to", "2027-06-15", cwd=tmp_path)
    assert row(table.stdout, "campaign:birthday")[1:] == [f"{gifts['points']:,}", str(gifts_sent)]
    assert row(table.stdout, "birthday")[:3] == ["birthday", str(birthday["planned"]), str(gifts_sent)]
