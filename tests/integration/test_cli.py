"""The `loyalty` command as a marketer or an operator uses it: real output, in this process (one real
process for the unreachable database)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests import cli
from tests.conftest import REPO_ROOT
from tests.support.members import add_members, make_member


def loyalty(env: dict, *args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """The command in this process (``tests/cli.py``): what it prints, its exit code."""
    return cli.loyalty(env, *args, cwd=cwd)


def test_preview_json_lists_who_is_due_what_and_writes_nothing(env, pg_sessions):
    add_members(
        pg_sessions,
        make_member("M0042", timezone_name="Europe/Paris", birthday=(2, 28), tier="silver"),
        make_member("M0043", timezone_name="Europe/Paris", birthday=(2, 28), email_opt_in=False),
        make_member("M0044", timezone_name="America/Los_Angeles", birthday=(2, 28)),  # 01:00 there: not yet
    )
    result = loyalty(env, "preview", "birthday", "--at", "2027-02-28T10:00:00Z", "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines == [
        {"member": "M0042", "campaign": "birthday", "channel": "email", "occurrence_key": "birthday:M0042:2027",
         "send_at": "2027-02-28T08:00:00Z", "reward": {"points": 250}, "status": "planned"},
        {"member": "M0043", "campaign": "birthday", "channel": None, "occurrence_key": "birthday:M0043:2027",
         "send_at": "2027-02-28T08:00:00Z", "reward": {"points": 100}, "status": "skipped", "reason": "no_consent"},
    ]
    again = loyalty(env, "preview", "birthday", "--at", "2027-02-28T10:00:00Z", "--json")
    assert again.stdout == result.stdout  # nothing was written by the first preview

    table = loyalty(env, "preview", "birthday", "--at", "2027-02-28T10:00:00Z")
    assert "M0042" in table.stdout and "1 planned, 1 skipped (no_consent)" in table.stdout


def test_an_unknown_campaign_and_a_bad_instant_are_one_sentence(env):
    unknown = loyalty(env, "preview", "birthdya", "--at", "2027-02-28T10:00:00Z")
    assert unknown.returncode == 2
    assert "There is no valid campaign 'birthdya'; the known ones are: birthday, member_day, points_expiring, tier_upgrade, winback." in unknown.stderr
    bad_time = loyalty(env, "run", "--at", "tomorrow-ish")
    assert bad_time.returncode == 2
    assert "--at 'tomorrow-ish' is not an ISO 8601 instant" in bad_time.stderr
    for result in (unknown, bad_time):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_unreachable_database_is_one_sentence_naming_the_variable(env):
    result = cli.loyalty_process({**env, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}, "preview", "birthday")
    assert result.returncode == 3
    assert "The database cannot be reached" in result.stderr and "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def _campaigns_copy(tmp_path: Path) -> Path:
    target = tmp_path / "definitions"
    shutil.copytree(REPO_ROOT / "campaigns" / "definitions", target)
    return target


def test_validate_names_the_file_and_line_of_malformed_yaml(env, tmp_path):
    definitions = _campaigns_copy(tmp_path)
    (definitions / "broken.yaml").write_text("id: broken\nkind: birthday\nchannels: [email\nname: x\n")
    result = loyalty({**env, "LOYALTY_CAMPAIGNS_DIR": str(definitions)}, "validate")
    assert result.returncode == 1
    assert f"{definitions / 'broken.yaml'}, line 4: the YAML is malformed" in result.stderr
    assert "ok    birthday (en, fr)" in result.stdout  # the valid campaign is still checked
    assert "Traceback" not in result.stderr


def test_validate_names_an_unknown_key_and_its_line(env, tmp_path):
    definitions = _campaigns_copy(tmp_path)
    text = (definitions / "birthday.yaml").read_text().replace("  min_days_since_birthday_change: 30", "  min_days_since_change: 30")
    (definitions / "birthday.yaml").write_text(text)
    line = text.splitlines().index("  min_days_since_change: 30  # a birthday added or changed more recently is not rewarded") + 1
    result = loyalty({**env, "LOYALTY_CAMPAIGNS_DIR": str(definitions)}, "validate")
    assert result.returncode == 1
    assert (f"{definitions / 'birthday.yaml'}, line {line}: unknown key 'birthday.min_days_since_change'; "
            "remove it or correct its spelling.") in result.stderr


def test_validate_names_the_template_line_with_an_undefined_variable(env, tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(REPO_ROOT / "campaigns" / "templates", templates)
    path = templates / "fr" / "birthday" / "email.txt.j2"
    lines = path.read_text().splitlines()
    lines.insert(2, "Votre code : {{ coupon.code }}")
    path.write_text("\n".join(lines) + "\n")
    result = loyalty({**env, "LOYALTY_TEMPLATES_DIR": str(templates)}, "validate")
    assert result.returncode == 1
    assert f"{path}, line 3: 'coupon' is undefined; define it or remove it from the template" in result.stderr
    assert "(campaign 'birthday', locale 'fr')" in result.stderr


def _campaign_rows(stdout: str, columns: int = 7) -> dict[str, list[str]]:
    rows = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if len(cells) == columns and cells[1].isdigit() and cells[0] in ("birthday", "member_day", "points_expiring", "tier_upgrade", "winback"):
            rows[cells[0]] = cells[1:]
    return rows


def test_the_demo_with_the_local_providers_counts_what_twilio_and_mailchimp_accepted(tmp_path):
    env = {"LOYALTY_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    result = loyalty(env, "demo", "--providers", "--members", "150", "--at", "2027-06-01T12:00:00Z", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "by Mailchimp" in result.stdout
    rows = _campaign_rows(result.stdout, columns=8)  # sent, by email, by SMS, by Mailchimp, ...
    assert set(rows) == {"birthday", "member_day", "points_expiring", "tier_upgrade", "winback"}
    texts = int(re.search(r"Twilio accepted (\d+) SMS", result.stdout).group(1))
    events = int(re.search(r"Mailchimp: (\d+) journey event", result.stdout).group(1))
    assert sum(int(cells[2]) for cells in rows.values()) == texts
    assert int(rows["tier_upgrade"][3]) == events > 0  # the notice goes out as a Mailchimp journey event
    assert all(int(cells[0]) == sum(int(c) for c in cells[1:4]) for cells in rows.values())
    said = " ".join(result.stdout.split())
    emails = sum(int(cells[1]) for cells in rows.values())
    assert re.search(rf"Sent today: {emails} email\(s\) in \S+/home/outbox/email \(one \.eml each\); {texts} SMS to "
                     rf"Twilio at http://127\.0\.0\.1:\d+; {events} Mailchimp step\(s\) to Mailchimp at http://", said)
    assert "outbox/sms" not in said  # where things really went, not a folder nothing was written to
    assert not (tmp_path / "home" / "outbox" / "sms").exists()


def test_the_demo_runs_every_kind_on_the_embedded_default_with_no_server(tmp_path):
    """No DATABASE_URL, REDIS_URL or SMTP_URL: SQLite, in-process queue, outbox folder."""
    env = {"LOYALTY_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    at = "2027-06-01T12:00:00Z"  # a Tuesday, the first of the month: a member day too
    result = loyalty(env, "demo", "--members", "150", "--at", at, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = _campaign_rows(result.stdout)
    assert set(rows) == {"birthday", "member_day", "points_expiring", "tier_upgrade", "winback"}
    sent = {campaign: int(cells[0]) for campaign, cells in rows.items()}
    assert all(count > 0 for count in sent.values()), rows  # every kind sent something today

    outbox = tmp_path / "home" / "outbox"
    emails, sms = sorted((outbox / "email").glob("*.eml")), sorted((outbox / "sms").glob("*.json"))
    assert len(emails) == sum(int(cells[1]) for cells in rows.values())
    assert len(sms) == sum(int(cells[2]) for cells in rows.values())
    assert (tmp_path / "home" / "loyalty.db").exists()

    said = " ".join(result.stdout.split())
    assert f"Sent today: {len(emails)} email(s) in {outbox / 'email'} (one .eml each); {len(sms)} SMS in" in said
    venv_bin = Path(sys.executable).parent
    assert f"Next: {venv_bin / 'loyalty'} preview winback --at {at}" in said  # not on this PATH: its path
    assert f"(`loyalty` is not on your PATH: run it as {venv_bin / 'loyalty'}, or `. {venv_bin}/activate` first.)" in said

    again = loyalty({**env, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}"}, "demo", "--members", "150",
                    "--at", at, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert _campaign_rows(again.stdout) == {}  # no table as if it sent again
    total = sum(sent.values())
    assert re.search(rf"Nothing new: {total} message\(s\) already sent on \d{{4}}-\d\d-\d\d at \d\d:\d\d UTC \(from "
                     r"the send ledger: \d+ birthday, \d+ member_day, \d+ points_expiring, \d+ tier_upgrade, \d+ "
                     r"winback\); none was sent again\.", " ".join(again.stdout.split())), again.stdout
    assert f"Next: loyalty preview winback --at {at}" in again.stdout  # on the PATH now: just `loyalty`
    assert sorted((outbox / "email").glob("*.eml")) == emails  # and nothing sent twice
    assert sorted((outbox / "sms").glob("*.json")) == sms


def _birthdays(stdout: str) -> tuple[int, int, dict[str, int]]:
    """(birthday members seeded, members accounted for, {outcome: count}) from the demo's output."""
    said = " ".join(stdout.split())
    seeded = int(re.search(r"Seeded \d+ members .*?: (?:.*?, )?(\d+) birthday", said).group(1))
    told = re.search(r"Birthdays today: (\d+) member\(s\): (.*?)\.(?: Sent today| Next)", said)
    outcomes = {what: int(n) for n, what in re.findall(r"(\d+) ([^,]+)", told.group(2))}
    return seeded, int(told.group(1)), outcomes


def test_every_birthday_the_demo_seeds_is_accounted_for(tmp_path):
    for n, at in enumerate(("2027-06-01T12:00:00Z", "2027-02-28T03:00:00Z")):  # a Feb 28 when few zones reached 09:00
        env = {"LOYALTY_HOME": str(tmp_path / f"home{n}"), "COLUMNS": "200"}
        result = loyalty(env, "demo", "--members", "240", "--at", at, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        seeded, told, outcomes = _birthdays(result.stdout)
        assert seeded == told == sum(outcomes.values()) > 0, (at, result.stdout)
        assert outcomes.get("sent", 0) == int(_campaign_rows(result.stdout)["birthday"][0])
        assert set(outcomes) <= {"sent", "skipped (no_consent)", "skipped (birthday_recently_changed)",
                                 "not due yet (before 09:00 in their zone)", "waiting", "held out"}, outcomes
