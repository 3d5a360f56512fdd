"""`loyalty demo --shop shopify` as a new user runs it: no server, twice in a row; what it prints is
what the database holds, and the second run applies and sends nothing twice."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from models.delivery import Delivery
from models.inbox import InboxEntry
from models.member import Member
from models.points import PointEntry
from tests import cli

NAMES = ("Ana Martin", "Ben Okafor", "Chloé Dubois", "Dev Patel", "Eve Laurent")


def demo(shop: str, home: Path, cwd: Path) -> subprocess.CompletedProcess:
    return cli.loyalty({"LOYALTY_HOME": str(home), "COLUMNS": "220"}, "demo", "--shop", shop, cwd=cwd)


def member_rows(stdout: str) -> dict[str, dict[str, str]]:
    """The customers table: {name: {member, orders, points, this run, tier}}."""
    rows = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if len(cells) == 7 and cells[0] in NAMES:
            rows[cells[0]] = dict(zip(("member", "orders", "points", "this run", "tier"), cells[2:], strict=True))
    return rows


def inbox_rows(stdout: str) -> list[tuple[str, int, str, str]]:
    rows = []
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if len(cells) == 4 and cells[1].isdigit():
            rows.append((cells[0], int(cells[1]), cells[2], cells[3]))
    return rows


def held(home: Path):
    engine = create_engine(f"sqlite:///{home / 'loyalty.db'}")
    try:
        with engine.connect() as db:
            members = {external_id: (tier, points) for external_id, tier, points in db.execute(
                select(Member.external_id, Member.tier, func.coalesce(func.sum(PointEntry.points), 0))
                .join(PointEntry, PointEntry.member_id == Member.id, isouter=True).group_by(Member.id))}
            inbox = dict(db.execute(select(InboxEntry.state, func.count()).group_by(InboxEntry.state)).all())
            sent = db.execute(select(Delivery.campaign, Delivery.occurrence_key)
                              .where(Delivery.state == "sent")).all()
    finally:
        engine.dispose()
    return members, inbox, sent


@pytest.mark.parametrize(("shop", "paid", "refunded"), [
    ("shopify", "orders/paid", "refunds/create"),  # a paid order fires orders/create and orders/paid
    ("woocommerce", "order.created", "order.updated"),  # a refund arrives as an order update
])
def test_the_shop_demo_shows_what_the_webhooks_became_and_a_second_run_changes_nothing(tmp_path, shop, paid, refunded):
    home = tmp_path / "home"
    first = demo(shop, home, tmp_path)
    assert first.returncode == 0, first.stderr
    said = " ".join(first.stdout.split())
    shown = member_rows(first.stdout)
    assert set(shown) == set(NAMES), first.stdout
    members, inbox, sent = held(home)

    # What the table says is what the database holds, and it is what the shop's story earns.
    for name, row in shown.items():
        assert members[row["member"]] == (row["tier"], int(row["points"])), name
        assert row["this run"] == f"+{row['points']}"
    points = {name: int(row["points"]) for name, row in shown.items()}
    assert points == {"Ana Martin": 540 + 50, "Ben Okafor": 80 + 50,  # applied once his customer arrived
                      "Chloé Dubois": 100 + 50 - 40,  # the refunded teapot's 40 taken back
                      "Dev Patel": 100 + 50,  # three copies of each webhook, applied once
                      "Eve Laurent": 40 + 50}  # an order 100 days ago
    assert shown["Ana Martin"]["tier"] == "silver" and len(members) == 5  # the guest made no member

    # The inbox: one entry per webhook, all applied, the duplicates not stored.
    entries = inbox_rows(first.stdout)
    stored = sum(n for _, n, _, _ in entries)
    assert inbox == {"applied": stored}
    match = re.search(r"The store fired (\d+) webhook\(s\) \((\d+) deliveries with the duplicates\); the web app "
                      r"answered (\d+) × 200\.", said)
    copies = int(re.search(r"\((\d+) duplicate deliveries answered 200 and not stored again\)", said)[1])
    assert match and int(match[1]) == stored and int(match[2]) == int(match[3]) == stored + copies and copies > 0
    assert (refunded, 1, "applied", "40 points taken back") in entries
    assert (paid, 1, "applied", "applied after waiting") in entries  # Ben's order waited for him
    assert (paid, 1, "applied", "a guest order whose email is no member's: not applicable") in entries

    # The tick sent Ana's tier-upgrade notice and Eve's win-back with its coupon, both in the outbox.
    ana, eve = shown["Ana Martin"]["member"], shown["Eve Laurent"]["member"]
    assert sorted(sent)[0] == ("tier_upgrade", f"tier_upgrade:{ana}:silver:{sorted(sent)[0][1].rsplit(':', 1)[1]}")
    assert sorted(sent)[1][0] == "winback" and sorted(sent)[1][1].startswith(f"winback:{eve}:")
    assert re.search(r"│ tier_upgrade\s+│ Ana Martin\s+│ silver\s+│ email\s+│ sent\s+│", first.stdout)
    emails = sorted((home / "outbox" / "email").glob("*.eml"))
    assert len(emails) == 2 and "Sent today: 2 email(s)" in said

    # Eve's code was made in the store before her email, and the store's checkout accepted it for her.
    code = re.search(r"Eve's win-back code (BACK-\w+) was in the store before her email went out \(made through "
                     r"its admin API\); the store's checkout accepted it for her: 9\.00 off an order of 60\.00\.", said)
    assert code and any(code[1] in path.read_text() for path in emails)

    again = demo(shop, home, tmp_path)
    assert again.returncode == 0, again.stderr
    shown_again = member_rows(again.stdout)
    assert {name: int(row["points"]) for name, row in shown_again.items()} == points
    assert {row["this run"] for row in shown_again.values()} == {"+0"}
    members_again, inbox_again, sent_again = held(home)
    assert members_again == members and sent_again == sent
    assert inbox_again == {"applied": 2 * stored}  # new webhook ids: stored, applied, no effect
    assert "Already sent by an earlier run: 2 message(s) to the store's customers (1 tier_upgrade, 1 winback); none " \
           "was sent again." in " ".join(again.stdout.split())
    assert sorted((home / "outbox" / "email").glob("*.eml")) == emails


@pytest.mark.parametrize(("args", "sentence"), [
    (("--shop", "magento"), "--shop 'magento' is not a shop the demo can play; use shopify or woocommerce."),
    (("--shop", "shopify", "--at", "2027-06-01T12:00:00Z"),
     "--at cannot be used with --shop: the shop's demo runs now, with its own store; leave it out."),
])
def test_a_shop_the_demo_cannot_play_is_one_sentence(tmp_path, args, sentence):
    result = cli.loyalty({"LOYALTY_HOME": str(tmp_path / "home")}, "demo", *args, cwd=tmp_path)
    assert result.returncode != 0 and result.stderr.strip() == f"error: {sentence}"
    assert not (tmp_path / "home" / "loyalty.db").exists()  # refused before anything was written
