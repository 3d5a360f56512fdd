"""Marketers checking a campaign before it is enabled: `loyalty simulate` and the preview's summary."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import func, select

from models.delivery import Delivery
from tests.conftest import REPO_ROOT
from tests.integration.test_support_commands import loyalty, one_sentence, row
from tests.support.members import add_members, make_member

UTC = UTC


def seed_birthdays(sessions) -> None:
    add_members(
        sessions,
        make_member("S1", timezone_name="Europe/Paris", birthday=(6, 15), tier="silver"),
        make_member("S2", timezone_name="Pacific/Auckland", birthday=(6, 16)),  # due 2027-06-15T21:00Z, their June 16
        make_member("S3", timezone_name="America/Los_Angeles", birthday=(6, 16)),
        make_member("S4", timezone_name="Europe/Paris", birthday=(6, 16), email_opt_in=False),
        make_member("S5", timezone_name="Europe/Paris", birthday=(6, 17)),  # after the range
        make_member("S6", timezone_name="Europe/Paris", birthday=(6, 15),
                    birthday_updated_at=datetime(2027, 6, 10, tzinfo=UTC)),
    )


def disabled_birthday(tmp_path) -> dict:
    """The birthday gift alone, disabled: a campaign being checked before it goes live."""
    definitions = tmp_path / "definitions"
    definitions.mkdir()
    text = (REPO_ROOT / "campaigns" / "definitions" / "birthday.yaml").read_text()
    (definitions / "birthday.yaml").write_text(text.replace("enabled: true", "enabled: false"))
    return {"LOYALTY_CAMPAIGNS_DIR": str(definitions)}


def test_simulate_says_per_day_what_a_disabled_campaign_would_send_and_writes_nothing(env, pg_sessions, tmp_path):
    seed_birthdays(pg_sessions)
    env = {**env, **disabled_birthday(tmp_path)}
    result = loyalty(env, "simulate", "--from", "2027-06-15", "--to", "2027-06-16", "--json")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"date": "2027-06-15", "campaign": "birthday", "send": 1, "channels": {"email": 1}, "held_out": 0,
         "skipped": {"birthday_recently_changed": 1}, "reward_points": 250},
        {"date": "2027-06-16", "campaign": "birthday", "send": 2, "channels": {"email": 2}, "held_out": 0,
         "skipped": {"no_consent": 1}, "reward_points": 200},
    ]

    table = loyalty(env, "simulate", "--from", "2027-06-14", "--to", "2027-06-16")
    assert table.returncode == 0, table.stderr
    assert "What would be sent, 2027-06-14 to 2027-06-16 (nothing was written)" in table.stdout
    assert row(table.stdout, "2027-06-15") == ["2027-06-15", "birthday", "1 (1 email)", "0", "1 birthday_recently_changed", "250"]
    assert row(table.stdout, "2027-06-16") == ["2027-06-16", "birthday", "2 (2 email)", "0", "1 no_consent", "200"]
    assert "2027-06-14" not in table.stdout.split("(nothing was written)")[1]  # a day with nothing is not listed
    assert ("birthday (disabled): 3 would be sent, 0 held out, 2 skipped (1 birthday_recently_changed, "
            "1 no_consent).") in " ".join(table.stdout.split())
    with pg_sessions() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0


def test_simulate_leaves_out_what_the_ledger_already_has(env, pg_sessions):
    seed_birthdays(pg_sessions)
    assert loyalty(env, "run", "--at", "2027-06-15T08:00:00Z", "--campaign", "birthday").returncode == 0  # S1 sent
    result = loyalty(env, "simulate", "--from", "2027-06-15", "--to", "2027-06-15", "--campaign", "birthday", "--json")
    assert json.loads(result.stdout)["send"] == 0


def test_simulate_refuses_bad_ranges_in_one_sentence(env):
    cases = [
        (["--from", "2027-06-15", "--to", "2027-06-01"], "error: --to 2027-06-01 is before --from 2027-06-15; swap them."),
        (["--from", "2027-01-01", "--to", "2028-06-01"],
         "error: A simulation covers at most 366 days; split 2027-01-01 to 2028-06-01 into shorter ranges."),
        (["--from", "June 1", "--to", "2027-06-01"], "error: --from 'June 1' is not a date; write it like 2027-06-01."),
        (["--from", "2027-06-01", "--to", "2027-06-02", "--campaign", "nope"],
         "error: There is no valid campaign 'nope'; the known ones are: "),
    ]
    for args, sentence in cases:
        result = loyalty(env, "simulate", *args)
        assert result.returncode == 2, result.stderr
        assert one_sentence(result).startswith(sentence)


def test_preview_adds_counts_per_channel_skips_by_reason_and_rendered_samples(env, pg_sessions):
    seed_birthdays(pg_sessions)
    add_members(pg_sessions, make_member("S7", timezone_name="Europe/Paris", birthday=(6, 15), email_opt_in=False))
    result = loyalty(env, "preview", "birthday", "--at", "2027-06-15T10:00:00Z")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "1 planned, 1 skipped (birthday_recently_changed), 1 skipped (no_consent)" in out
    assert "birthday: by channel" in out and row(out, "email") == ["email", "1", "0"]
    assert row(out, "no_consent") == ["no_consent", "1"]
    assert row(out, "birthday_recently_changed") == ["birthday_recently_changed", "1"]
    samples = out.split("birthday: sample messages")[1]
    assert row(samples, "S1") == ["S1", "email", "en", "Happy birthday, Test! 250 points for you"]

    as_json = loyalty(env, "preview", "birthday", "--at", "2027-06-15T10:00:00Z", "--json")
    assert [json.loads(line)["member"] for line in as_json.stdout.splitlines()] == ["S1", "S6", "S7"]
