"""`preview` and `send --dry-run` say how a message will end, as the sender decides it.

An SMS longer than the campaign's `max_segments` is refused by the sender (`failed: sms_too_long`):
the preview and the dry run show it so, and a real run then ends it exactly so. A dry run of a
campaign sent only as a Mailchimp step shows the step it would apply.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from sqlalchemy import select, update

from models import ledger
from models.audit import AuditEntry
from models.delivery import Delivery
from models.member import Member
from models.points import EntryKind
from tests.conftest import REPO_ROOT
from tests.integration.test_support_commands import loyalty
from tests.support.members import add_members, make_member

UTC = UTC
LONG_NAME = "Anna-Maria-Magdalena-" * 12  # the win-back SMS with this name is more than 2 segments


def lapsed(sessions, *external_ids: str, days: int, today) -> None:
    with sessions() as session, session.begin():
        session.execute(update(Member).where(Member.external_id.in_(external_ids))
                        .values(last_order_local_date=(today - timedelta(days=days)).isoformat()))


def texter(external_id: str, first_name: str, number: int) -> Member:
    return make_member(external_id, first_name=first_name, email_opt_in=False, sms_opt_in=True,
                       phone=f"+3361234{number:04d}")


def test_preview_shows_an_sms_the_sender_will_refuse_as_it_will_end(env, pg_sessions):
    add_members(pg_sessions, texter("W0001", "Sam", 1), texter("W0002", LONG_NAME, 2))
    at = datetime(2027, 6, 9, 12, tzinfo=UTC)  # 14:00 in Paris
    lapsed(pg_sessions, "W0001", "W0002", days=100, today=at.date())  # step 2: the SMS with a coupon

    result = loyalty(env, "preview", "winback", "--at", at.isoformat(), "--json")
    assert result.returncode == 0, result.stderr
    lines = {line["member"]: line for line in map(json.loads, result.stdout.splitlines())}
    assert (lines["W0001"]["channel"], lines["W0001"]["status"]) == ("sms", "planned")
    assert (lines["W0002"]["channel"], lines["W0002"]["status"], lines["W0002"]["reason"]) == (
        "sms", "failed", "sms_too_long")

    table = loyalty(env, "preview", "winback", "--at", at.isoformat())
    assert "1 failed (sms_too_long), 1 planned" in table.stdout

    assert loyalty(env, "run", "--at", at.isoformat()).returncode == 0  # and it ends as the preview said
    with pg_sessions() as session:
        ended = {m: (s, r) for m, s, r in session.execute(
            select(Member.external_id, Delivery.state, Delivery.reason).join(Member, Member.id == Delivery.member_id))}
    assert ended == {"W0001": ("sent", None), "W0002": ("failed", "sms_too_long")}


def _templates_naming_the_member_in_the_reminder_sms(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(REPO_ROOT / "campaigns" / "templates", target)
    sms = target / "en" / "points_expiring" / "sms.txt.j2"
    sms.write_text("{{ member.first_name }}, " + sms.read_text(encoding="utf-8"), encoding="utf-8")
    return target


def test_a_dry_run_of_a_too_long_sms_says_it_would_fail_and_writes_nothing(env, pg_sessions, tmp_path):
    add_members(pg_sessions, texter("W0003", LONG_NAME, 3))
    with pg_sessions() as session, session.begin():
        member_id = session.scalar(select(Member.id).where(Member.external_id == "W0003"))
        ledger.record(session, member_id=member_id, entry_key="e1", kind=EntryKind.EARN, points=300, source="order",
                      occurred_at=datetime(2026, 1, 5, tzinfo=UTC), expires_at=datetime(2030, 1, 5, tzinfo=UTC))
    env = {**env, "LOYALTY_TEMPLATES_DIR": str(_templates_naming_the_member_in_the_reminder_sms(tmp_path))}

    result = loyalty(env, "send", "points_expiring", "--member", "W0003", "--reason", "checking", "--dry-run")
    assert result.returncode == 1, result.stderr
    said = " ".join(result.stdout.split())  # the terminal may wrap the sentence
    assert said == ("Dry run: oneoff:points_expiring:W0003:1 to W0003 by sms would end failed (sms_too_long: "
                    "3 segments (GSM-7, 335 units), more than max_segments 2); nothing was written or sent.")  # "Maison Lumière: ..."
    as_json = json.loads(loyalty(env, "send", "points_expiring", "--member", "W0003", "--reason", "x", "--dry-run",
                                 "--json").stdout)
    assert as_json["would_end"] == {"state": "failed", "reason": "sms_too_long"}
    with pg_sessions() as session:
        assert session.scalars(select(Delivery)).all() == [] and session.scalars(select(AuditEntry)).all() == []


def _mailchimp_only_campaigns(tmp_path: Path) -> Path:
    target = tmp_path / "campaigns"
    shutil.copytree(REPO_ROOT / "campaigns" / "definitions", target)
    path = target / "tier_upgrade.yaml"
    definition = yaml.safe_load(path.read_text(encoding="utf-8"))
    definition["channels"] = ["mailchimp"]
    definition["messages"] = {"mailchimp": {"tags": ["tier-upgrade"], "event": "tier_upgrade",
                                            "properties": {"tier": "{{ tier.name }}"}}}
    path.write_text(yaml.safe_dump(definition, sort_keys=False), encoding="utf-8")
    return target


def test_a_dry_run_of_a_mailchimp_only_campaign_shows_the_step_it_would_apply(env, pg_sessions, tmp_path):
    add_members(pg_sessions, make_member("M0200", tier="gold"))
    env = {**env, "LOYALTY_CAMPAIGNS_DIR": str(_mailchimp_only_campaigns(tmp_path))}
    result = loyalty(env, "send", "tier_upgrade", "--member", "M0200", "--reason", "checking", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.splitlines() == [
        "Dry run: oneoff:tier_upgrade:M0200:1 would go to M0200 by mailchimp (en); nothing was written or sent.",
        "Mailchimp step: tags: tier-upgrade; event: tier_upgrade; properties: tier=gold",
    ]
