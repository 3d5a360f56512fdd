"""Bad input, through the real CLI: the corpus in ``tests/data/bad/`` (malformed YAML, wrong types,
unknown keys, an invalid RRULE, an unknown template, templates reaching for Python internals, CSV
rows with Feb 30, a bad phone number, a 10 MB field, a wrong encoding, a BOM, a missing header).

Each problem is one sentence naming the file and the line, never a traceback; the good rows of an
import still land; the clock keeps running the valid campaigns when one definition is broken, and
says so at start and on every tick.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import structlog
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import select

from core.settings import load_settings
from models.member import Member
from tests.conftest import REDIS_URL, REPO_ROOT

BAD = REPO_ROOT / "tests" / "data" / "bad"
SHIPPED = ["birthday", "member_day", "points_expiring", "tier_upgrade", "winback"]


def loyalty(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loyalty", *args], env={**os.environ, "COLUMNS": "300", **env},
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)


def no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert "Unexpected error" not in result.stderr, result.stderr


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture
def folders(tmp_path):
    """The shipped definitions and templates, copied, with the corpus's templates added."""
    definitions, templates = tmp_path / "definitions", tmp_path / "templates"
    shutil.copytree(REPO_ROOT / "campaigns" / "definitions", definitions)
    shutil.copytree(REPO_ROOT / "campaigns" / "templates", templates)
    shutil.copytree(BAD / "templates", templates, dirs_exist_ok=True)
    return definitions, templates


# --- definitions and templates: `loyalty validate` -------------------------------------------------

#: corpus file → (the line of the definition named, what the sentence says there)
DEFINITIONS = {
    "malformed.yaml": (6, "the YAML is malformed (expected ',' or ']', but got ':'); check the indentation"),
    "wrong_type.yaml": (7, "'holdout' is wrong: input should be a valid number"),
    "unknown_key.yaml": (8, "unknown key 'birthday.leap_day'; remove it or correct its spelling."),
    "bad_rrule.yaml": (8, "'member_day.rrule' is wrong: is not a valid iCalendar RRULE (invalid 'BYDAY': 1XY)."),
    "peek_subject.yaml": (10, "the email subject for 'en': the template reaches for something not allowed"),
    "latin1.yaml": (3, "not UTF-8"),  # "Anniversaire été" in Latin-1, on the name: line
    "unknown_template.yaml": (12, "birthday/emial.txt.j2"),  # the text: line that names a missing template
    "duplicate_key.yaml": (8, "the key 'holdout' is given twice (first on line 7); keep one of them"),
    "deep.yaml": (62, "the YAML is nested more than 50 levels deep"),  # 500 levels: the parser's recursion
}


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_a_broken_definition_is_one_sentence_with_its_file_and_line(env, folders, name):
    definitions, templates = folders
    shutil.copy(BAD / "definitions" / name, definitions)
    line, says = DEFINITIONS[name]

    result = loyalty({**env, "LOYALTY_CAMPAIGNS_DIR": str(definitions), "LOYALTY_TEMPLATES_DIR": str(templates)},
                     "validate")

    assert result.returncode == 1
    no_traceback(result)
    problems = [text for text in lines(result.stderr) if text.startswith("error ")]
    assert len(problems) == 1, result.stderr
    where = f"error {definitions / name}, line {line}: "
    assert problems[0].startswith(where), f"expected {where!r}, got {problems[0]!r}"
    assert says in problems[0] and problems[0].endswith("."), problems[0]
    assert lines(result.stderr)[-1] == "1 problem(s) found; nothing was changed."
    for campaign in SHIPPED:  # the others are still checked
        assert any(text.startswith(f"ok    {campaign} (") for text in lines(result.stdout)), result.stdout


def test_a_template_reaching_for_python_internals_is_refused_at_its_line(env, folders):
    definitions, templates = folders
    shutil.copy(BAD / "definitions" / "peek.yaml", definitions)

    result = loyalty({**env, "LOYALTY_CAMPAIGNS_DIR": str(definitions), "LOYALTY_TEMPLATES_DIR": str(templates)},
                     "validate")

    assert result.returncode == 1
    no_traceback(result)
    [problem] = [text for text in lines(result.stderr) if text.startswith("error ")]
    template = templates / "en" / "peek" / "email.txt.j2"
    assert problem.startswith(f"error {template}, line 3: the template reaches for something not allowed ("), problem
    assert problem.endswith("is unsafe.) (campaign 'peek', locale 'en')."), problem


def test_every_template_that_fails_is_named_at_its_line_and_the_other_campaigns_are_checked(env, folders):
    """``truncate(-1)`` (Jinja's AssertionError), ``| date`` on a number, a macro calling itself."""
    definitions, templates = folders
    shutil.copy(BAD / "definitions" / "template_errors.yaml", definitions)

    result = loyalty({**env, "LOYALTY_CAMPAIGNS_DIR": str(definitions), "LOYALTY_TEMPLATES_DIR": str(templates)},
                     "validate")

    assert result.returncode == 1
    no_traceback(result)
    folder = templates / "en" / "template_errors"
    assert [text for text in lines(result.stderr) if text.startswith("error ")] == [
        f"error {definitions / 'template_errors.yaml'}, line 9: the email subject for 'en': the template failed "
        "(AssertionError: expected length >= 3, got -1).",
        f"error {folder / 'email.txt.j2'}, line 3: the template failed (TypeError: the date filter needs a date, "
        "not int) (campaign 'template_errors', locale 'en').",
        f"error {folder / 'email.html.j2'}, line 3: the template recurses too deeply (a macro calling itself "
        "without end?) (campaign 'template_errors', locale 'en').",
    ]
    assert lines(result.stderr)[-1] == "3 problem(s) found; nothing was changed."
    for campaign in SHIPPED:
        assert any(text.startswith(f"ok    {campaign} (") for text in lines(result.stdout)), result.stdout


def test_a_definition_nested_500_levels_deep_does_not_stop_preview_or_run_of_the_others(env, pg_sessions, folders):
    definitions, _ = folders
    shutil.copy(BAD / "definitions" / "deep.yaml", definitions)
    folder_env = {**env, "LOYALTY_CAMPAIGNS_DIR": str(definitions)}

    for args in (["preview", "birthday", "--at", "2027-06-15T08:00:00Z"], ["run", "--at", "2027-06-15T08:00:00Z"]):
        result = loyalty(folder_env, *args)
        assert result.returncode == 0, result.stderr
        no_traceback(result)
    assert f"{definitions / 'deep.yaml'}, line 62: the YAML is nested more than 50 levels deep" in result.stderr


def test_a_definition_saved_with_a_bom_is_valid(env, folders):
    definitions, templates = folders
    shutil.copy(BAD / "definitions" / "bom.yaml", definitions)
    result = loyalty({**env, "LOYALTY_CAMPAIGNS_DIR": str(definitions), "LOYALTY_TEMPLATES_DIR": str(templates)},
                     "validate")
    assert result.returncode == 0, result.stderr
    assert "ok    bom (en)" in result.stdout
    assert "All 6 campaign(s) are valid." in result.stdout


# --- imports: `loyalty import members FILE` -----------------------------------------------------------

#: corpus file → (the bad row's line, what the sentence says, the good rows that must land)
ROWS = {
    "feb30.csv": (4, "birthday is not a real date; use YYYY-MM-DD or --MM-DD", ["FA1", "FA2", "FA3"]),
    "bad_phone.csv": (4, "phone is not a valid phone number;", ["PH1", "PH2", "PH3"]),
    "wrong_type.csv": (4, "email_opt_in is not a yes/no value; use true, false, yes, no, 1 or 0",
                       ["WT1", "WT2", "WT3"]),
    "huge_field.csv": (4, "last_name is 10,485,760 characters long;", ["HF1", "HF2", "HF3"]),
}


def corpus_csv(name: str, tmp_path: Path) -> Path:
    """The corpus file; the 10 MB one is kept gzipped in the repository and unpacked here."""
    if (BAD / "csv" / name).exists():
        return BAD / "csv" / name
    target = tmp_path / name
    with gzip.open(BAD / "csv" / f"{name}.gz", "rb") as packed, target.open("wb") as out:
        shutil.copyfileobj(packed, out)
    assert target.stat().st_size > 10 * 1024 * 1024
    return target


def member_ids(sessions) -> list[str]:
    with sessions() as session:
        return sorted(session.scalars(select(Member.external_id)))


@pytest.mark.parametrize("name", sorted(ROWS))
def test_a_bad_row_is_one_sentence_with_its_line_and_the_good_rows_land(env, pg_sessions, tmp_path, name):
    path = corpus_csv(name, tmp_path)
    line, says, good = ROWS[name]

    result = loyalty(env, "import", "members", str(path))

    assert result.returncode == 1  # something was rejected
    no_traceback(result)
    [problem] = lines(result.stderr)
    assert problem.startswith(f"{path}, line {line}: {says}"), problem
    assert len(problem) < 400  # the 10 MB value is not repeated
    assert f"Imported 4 members row(s) from {path}: 3 new, 0 updated, 0 unchanged, 1 rejected." in result.stdout
    assert member_ids(pg_sessions) == good


#: corpus file → (exit code, the line named, what the sentence says)
FILES = {
    "latin1.csv": (2, 4, 'the file is not UTF-8 text; save it as UTF-8 (in Excel, "CSV UTF-8") and import it again.'),
    "no_header.csv": (2, 1, ("the header has no external_id column (a members file needs external_id); "
                             "add it and import again.")),
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_a_file_that_cannot_be_read_is_one_sentence_and_nothing_is_written(env, pg_sessions, name):
    path = BAD / "csv" / name
    code, line, says = FILES[name]

    result = loyalty(env, "import", "members", str(path))

    assert result.returncode == code
    no_traceback(result)
    assert lines(result.stderr) == [f"error: {path}, line {line}: {says}"]
    assert member_ids(pg_sessions) == []


def test_a_csv_saved_with_a_bom_imports_every_row(env, pg_sessions):
    path = BAD / "csv" / "bom.csv"
    result = loyalty(env, "import", "members", str(path))
    assert result.returncode == 0, result.stderr
    assert lines(result.stderr) == []
    assert member_ids(pg_sessions) == ["BO1", "BO2", "BO3"]  # the BOM did not hide the external_id column


# --- the clock with one broken definition -------------------------------------------------------------

def test_each_tick_enqueues_the_valid_campaigns_and_names_the_broken_one(env, folders):
    from schedules.clock import enqueue_tick
    from workers.broker import install_broker

    definitions, _ = folders
    shutil.copy(BAD / "definitions" / "malformed.yaml", definitions)
    settings = load_settings({**env, "LOYALTY_CAMPAIGNS_DIR": str(definitions)})
    broker = install_broker(StubBroker())
    try:
        with structlog.testing.capture_logs() as events:
            first = enqueue_tick(settings, datetime(2027, 6, 15, 9, 0, 30, tzinfo=UTC))
            second = enqueue_tick(settings, datetime(2027, 6, 15, 9, 5, tzinfo=UTC))
        queued = broker.queues["campaigns"].qsize()
    finally:
        broker.close()

    assert first == second == SHIPPED
    assert queued == 2 * len(SHIPPED)
    broken = [event for event in events if event["event"] == "campaign.broken"]
    assert [event["log_level"] for event in broken] == ["error", "error"]  # once per tick, loudly
    assert {event["problem"] for event in broken} == {
        (f"{definitions / 'malformed.yaml'}, line 6: the YAML is malformed (expected ',' or ']', but got ':'); "
         "check the indentation and quoting there.")}
    ticks = [(event["at"], event["broken"]) for event in events if event["event"] == "clock.tick"]
    assert ticks == [("2027-06-15T09:00:00Z", 1), ("2027-06-15T09:05:00Z", 1)]


def test_the_clock_process_says_at_start_which_definition_is_broken_and_ticks_the_others(
        env, folders, redis_namespace, tmp_path):
    definitions, _ = folders
    shutil.copy(BAD / "definitions" / "wrong_type.yaml", definitions)
    clock_env = {**os.environ, **env, "LOYALTY_CAMPAIGNS_DIR": str(definitions), "REDIS_URL": REDIS_URL,
                 "LOYALTY_QUEUE_NAMESPACE": redis_namespace, "LOYALTY_TICK_MINUTES": "1", "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "clock.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "loyalty", "clock"], env=clock_env, cwd=REPO_ROOT,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while '"clock.tick"' not in log_path.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log_path.read_text()
            time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(30)

    output = log_path.read_text()
    assert "Traceback" not in output
    events = [json.loads(line) for line in output.splitlines() if line.strip()]  # one JSON event a line
    names = [event["event"] for event in events]
    assert "clock.tick" in names, output
    start, tick = names.index("clock.start"), names.index("clock.tick")
    problem = (f"{definitions / 'wrong_type.yaml'}, line 7: 'holdout' is wrong: input should be a valid number, "
               "unable to parse string as a number.")
    at_start = [e for e in events[:start] if e["event"] == "campaign.broken"]
    at_tick = [e for e in events[start:tick] if e["event"] == "campaign.broken"]
    assert [(e["level"], e["problem"]) for e in at_start] == [("error", problem)]
    assert [(e["level"], e["problem"]) for e in at_tick] == [("error", problem)]
    assert events[start]["campaigns"] == SHIPPED
    assert (events[tick]["campaigns"], events[tick]["broken"]) == (SHIPPED, 1)

    client = redis.Redis.from_url(REDIS_URL)
    try:
        queued = [json.loads(body) for body in client.hvals(f"{redis_namespace}:campaigns.msgs")]
    finally:
        client.close()
    assert sorted(m["args"][0] for m in queued if m["actor_name"] == "evaluate_campaign") == SHIPPED
