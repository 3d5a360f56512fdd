"""Delivery reads only what a message's channel and templates need: no phone for an email, and no
names (encrypted at rest) for a campaign whose templates never use them; the messages still say
what their templates say, on PostgreSQL and the real SMTP sink."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

from sqlalchemy import event

from core.settings import DEFAULT_CAMPAIGNS_DIR, DEFAULT_TEMPLATES_DIR, load_settings
from tests.support.members import add_members, make_member
from workers.runtime import build_runtime
from workers.tick import run_tick

BIRTHDAY_MORNING = datetime(2027, 6, 15, 8, 0, tzinfo=UTC)  # 10:00 in Paris on their birthday


def _members_read(env: dict, members_sessions, overrides: dict | None = None) -> list[str]:
    """The tick's SELECTs of member rows (the delivery's read)."""
    runtime = build_runtime(load_settings({**env, **(overrides or {})}))
    seen: list[str] = []
    event.listen(runtime.engine, "before_cursor_execute",
                 lambda conn, cursor, sql, parameters, context, many: seen.append(sql)
                 if sql.lstrip().startswith("SELECT members.id") else None)
    try:
        report = run_tick(runtime, BIRTHDAY_MORNING)
    finally:
        runtime.close()
    assert report.delivery.outcomes == {"sent": 2}
    return seen


def test_an_email_reads_no_phone_and_only_the_names_its_templates_use(env, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("ANNA", first_name="Anna", phone="+33612345678"),
                make_member("ZOE", first_name="Zoé", locale="fr"))
    reads = _members_read(env, pg_sessions)
    assert reads and all("members.phone," not in sql and "members.phone " not in sql for sql in reads)
    assert all("members.first_name" in sql for sql in reads)  # the shipped birthday greets by name
    assert all("members.last_name" not in sql for sql in reads)  # and no template of it uses the last
    assert sorted(str(m["Subject"]) for m in smtp_sink.messages)[0].startswith("Happy birthday, Anna!")


def test_names_no_template_uses_are_not_read(env, pg_sessions, smtp_sink, tmp_path):
    campaigns, templates = tmp_path / "campaigns", tmp_path / "templates"
    shutil.copytree(DEFAULT_CAMPAIGNS_DIR, campaigns)
    shutil.copytree(DEFAULT_TEMPLATES_DIR, templates)
    for path in [campaigns / "birthday.yaml", *(templates.glob("*/birthday/*.j2"))]:
        path.write_text(path.read_text().replace("{{ member.first_name }}", "friend"))
    add_members(pg_sessions, make_member("ANNA", first_name="Anna"), make_member("ZOE", first_name="Zoé", locale="fr"))
    reads = _members_read(env, pg_sessions, {"LOYALTY_CAMPAIGNS_DIR": str(campaigns),
                                             "LOYALTY_TEMPLATES_DIR": str(templates)})
    assert reads and all("first_name" not in sql and "last_name" not in sql and "phone," not in sql for sql in reads)
    subjects = sorted(str(m["Subject"]) for m in smtp_sink.messages)
    assert subjects[0].startswith("Happy birthday, friend!") and subjects[1].startswith("Joyeux anniversaire, friend")
    bodies = " ".join(m.get_body(("plain",)).get_content() for m in smtp_sink.messages)
    assert "friend" in bodies and "Anna" not in bodies and "Zoé" not in bodies
