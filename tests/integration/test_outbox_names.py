"""The outbox folder: one file per message, whatever characters the shop's member ids hold."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes

from core.settings import load_settings
from tests.support.members import add_members, make_member
from workers.runtime import build_runtime
from workers.tick import run_tick

BIRTHDAY_MORNING = datetime(2027, 6, 15, 8, 0, tzinfo=UTC)  # 10:00 in Paris on the members' birthday


def test_members_z_slash_1_and_z_underscore_1_get_a_file_each_inside_the_outbox(env, pg_engine, pg_sessions, tmp_path):
    add_members(pg_sessions, make_member("Z/1", email="slash@members.example"),
                make_member("Z_1", email="underscore@members.example"),
                make_member("../../../escape", email="dots@members.example"))
    outbox = tmp_path / "outbox"
    settings = load_settings({key: value for key, value in env.items() if key != "SMTP_URL"}
                             | {"LOYALTY_OUTBOX_DIR": str(outbox)})
    runtime = build_runtime(settings)
    try:
        report = run_tick(runtime, BIRTHDAY_MORNING, campaign_ids=["birthday"])
    finally:
        runtime.close()

    assert report.delivery.outcomes == {"sent": 3}
    files = sorted(path.relative_to(outbox).as_posix() for path in outbox.rglob("*") if path.is_file())
    assert files == ["email/birthday_%2E%2E%2F%2E%2E%2F%2E%2E%2Fescape_2027.eml",
                     "email/birthday_Z%2F1_2027.eml", "email/birthday_Z%5F1_2027.eml"]
    recipients = {name: message_from_bytes((outbox / name).read_bytes())["To"] for name in files}
    assert recipients == {files[0]: "dots@members.example", files[1]: "slash@members.example",
                          files[2]: "underscore@members.example"}
