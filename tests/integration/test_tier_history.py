"""Tier changes are dated when the orders making them were placed: an imported history is not news.

A shop moving to the product imports its members (all bronze) and years of orders; the upgrades
those orders make are history, so the tier-upgrade notice (upgrades of the last
``announce_within_days``) must not greet everyone as new gold members. A recent order still does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from models.base import utcnow
from models.delivery import Delivery
from models.member import Member
from models.tier import TierChange
from tests.integration.test_cli import loyalty

UTC = UTC


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tier_changes(sessions, external_id: str) -> list[tuple[str, str, datetime, str]]:
    with sessions() as session:
        return [tuple(row) for row in session.execute(
            select(TierChange.to_tier, TierChange.direction, TierChange.at, TierChange.cause)
            .join(Member, Member.id == TierChange.member_id)
            .where(Member.external_id == external_id)
            .order_by(TierChange.at, TierChange.id))]


def member_tier(sessions, external_id: str) -> str:
    with sessions() as session:
        return session.scalar(select(Member.tier).where(Member.external_id == external_id))


def test_imported_history_upgrades_on_the_days_orders_were_placed_and_only_a_recent_one_is_announced(
        env, pg_sessions, smtp_sink, tmp_path):
    now = utcnow().replace(microsecond=0)
    members = tmp_path / "members.csv"
    members.write_text(
        "external_id,email,timezone,locale,email_opt_in,tier\n"
        "OLD,old@members.example,Europe/Paris,en,true,bronze\n"
        "GONE,gone@members.example,Europe/Paris,en,true,bronze\n"
        "NEW,new@members.example,Europe/Paris,en,true,bronze\n"
    )
    year_ago, crossed = now - timedelta(days=330), now - timedelta(days=320)
    two_years_ago = now - timedelta(days=700)
    recent = now - timedelta(days=2)
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "order_id,member_id,placed_at,total,currency,status\n"
        f"O2,OLD,{iso(crossed)},1800.00,EUR,placed\n"  # not in the order placed: the importer sorts them
        f"O1,OLD,{iso(year_ago)},700.00,EUR,placed\n"
        f"G1,GONE,{iso(two_years_ago)},2500.00,EUR,placed\n"
        f"N1,NEW,{iso(recent)},2100.00,EUR,placed\n"
    )
    for kind, path in (("members", members), ("orders", orders)):
        result = loyalty(env, "import", kind, str(path))
        assert result.returncode == 0, result.stderr

    # OLD: silver when O1 was placed, gold when O2 made the year's spend 2,500
    assert tier_changes(pg_sessions, "OLD") == [("silver", "up", year_ago, "order:O1"), ("gold", "up", crossed, "order:O2")]
    assert member_tier(pg_sessions, "OLD") == "gold"
    # GONE: gold two years ago, long out of the window since: back to bronze today, not gold for a grace period
    (up, down) = tier_changes(pg_sessions, "GONE")
    assert up == ("gold", "up", two_years_ago, "order:G1")
    assert down[:2] == ("bronze", "down") and down[2] >= now
    assert member_tier(pg_sessions, "GONE") == "bronze"
    assert tier_changes(pg_sessions, "NEW") == [("gold", "up", recent, "order:N1")]

    at = iso(now + timedelta(minutes=1))
    preview = loyalty(env, "preview", "tier_upgrade", "--at", at, "--json")
    assert preview.returncode == 0, preview.stderr
    due = [json.loads(line) for line in preview.stdout.splitlines()]
    assert [(line["member"], line["status"]) for line in due] == [("NEW", "planned")]

    run = loyalty(env, "run", "--at", at, "--campaign", "tier_upgrade")
    assert run.returncode == 0, run.stderr
    assert [m["To"].addresses[0].username for m in smtp_sink.messages] == ["new"]
    with pg_sessions() as session:
        keys = session.scalars(select(Delivery.occurrence_key).where(Delivery.campaign == "tier_upgrade")).all()
    assert [key.rsplit(":", 1)[0] for key in keys] == ["tier_upgrade:NEW:gold"]


def test_a_late_order_placed_event_upgrades_on_the_day_it_was_placed(runtime, pg_sessions):
    from workers.event_actors import member_updated, order_placed

    now = utcnow().replace(microsecond=0)
    member_updated.fn({"external_id": "LATE", "email": "late@members.example", "timezone": "Europe/Paris",
                       "email_opt_in": "true"})
    placed = now - timedelta(days=40)
    order_placed.fn({"order_id": "L1", "member_id": "LATE", "placed_at": iso(placed), "total": "650",
                     "currency": "EUR"})
    assert tier_changes(pg_sessions, "LATE") == [("silver", "up", placed, "order:L1")]

    # an older order arriving after a newer one: the newer one's spend reaches gold, on its day
    older = now - timedelta(days=60)
    order_placed.fn({"order_id": "L0", "member_id": "LATE", "placed_at": iso(older), "total": "1400",
                     "currency": "EUR"})
    assert tier_changes(pg_sessions, "LATE") == [("silver", "up", placed, "order:L1"), ("gold", "up", placed, "order:L1")]
    assert member_tier(pg_sessions, "LATE") == "gold"
