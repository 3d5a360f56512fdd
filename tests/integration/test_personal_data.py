"""Personal data: encrypted at rest, found by keyed hash, rotated with the documented command,
and never in the logs of a whole day's work."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from cryptography.fernet import Fernet
from sqlalchemy import select, text

from models.member import Member
from models.personal_data import lookup
from tests import cli
from tests.conftest import REDIS_URL, REPO_ROOT
from tests.support.members import add_members, make_member

UTC = UTC


def loyalty(env: dict, *args: str) -> subprocess.CompletedProcess:
    """The command in this process (``tests/cli.py``); the worker below is a real process."""
    return cli.loyalty(env, *args, drop=())


def test_names_emails_and_phones_are_ciphertext_in_the_database(runtime, pg_sessions, pg_engine, tmp_path, env):
    add_members(pg_sessions, make_member("PD1", email="ada@members.example", phone="+33612345678", first_name="Ada"))
    csv = tmp_path / "members.csv"
    csv.write_text("external_id,email,phone,first_name,last_name,locale,timezone\n"
                   "PD2,grace@members.example,+14155550100,Grace,Hopper,en_US,America/New_York\n")
    result = loyalty(env, "import", "members", str(csv))
    assert result.returncode == 0, result.stderr

    with pg_engine.connect() as connection:
        raw = connection.execute(text("SELECT email, phone, first_name, last_name FROM members ORDER BY external_id")).all()
    stored = " ".join(str(value) for row in raw for value in row)
    for secret in ("ada@members.example", "+33612345678", "Ada", "grace@members.example", "+14155550100", "Grace", "Hopper"):
        assert secret not in stored
    assert all(value.startswith("enc1:") for row in raw for value in row if value)

    with pg_sessions() as session:
        grace = session.scalar(select(Member).where(Member.phone_lookup == lookup("phone", "+14155550100")))
        assert (grace.external_id, grace.email, grace.first_name) == ("PD2", "grace@members.example", "Grace")
        ada = session.scalar(select(Member).where(Member.email_lookup == lookup("email", "ADA@members.example")))
        assert ada.external_id == "PD1"


def test_keys_rotate_re_encrypts_so_the_old_key_can_go(env, pg_sessions, pg_engine, tmp_path):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    csv_env = {**env, "LOYALTY_DATA_KEYS": old}
    path = tmp_path / "members.csv"
    path.write_text("external_id,email,phone,first_name,last_name,locale,timezone\n"
                    "M001,ada@members.example,+442079460958,Ada,Lovelace,en_GB,Europe/London\n")
    assert loyalty(csv_env, "import", "members", str(path)).returncode == 0
    shown_before = loyalty(csv_env, "member", "show", "M001").stdout

    assert loyalty({**env, "LOYALTY_DATA_KEYS": new}, "member", "show", "M001").returncode != 0
    rotated = loyalty({**env, "LOYALTY_DATA_KEYS": f"{new},{old}"}, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert "Re-encrypted the personal data of" in rotated.stdout
    after = loyalty({**env, "LOYALTY_DATA_KEYS": new}, "member", "show", "M001")
    assert after.returncode == 0, after.stderr
    assert after.stdout == shown_before

    wrong = loyalty({**env, "LOYALTY_DATA_KEYS": old}, "member", "show", "M001")
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert "LOYALTY_DATA_KEYS changed" in wrong.stderr  # named at start, before any member is read


def test_a_whole_day_at_debug_logs_no_email_address_or_phone_number(env, pg_sessions, smtp_sink, redis_namespace):
    from core.settings import load_settings
    from schedules.clock import enqueue_tick
    from workers.broker import build_broker, install_broker

    members = []
    for i in range(300):
        zone = ["Europe/Paris", "America/New_York", "Asia/Tokyo"][i % 3]
        members.append(make_member(f"LOG{i:03d}", timezone_name=zone, birthday=(6, 15), email=f"person{i}@private.example",
                                   phone=f"+336{i:08d}", sms_opt_in=True, tier=["bronze", "silver", "gold"][i % 3],
                                   first_name=f"Secretname{i}"))
    add_members(pg_sessions, *members)
    smtp_sink.reject = {f"person{i}@private.example" for i in range(0, 300, 25)}  # 550s that quote the address

    worker_env = {**os.environ, **env, "REDIS_URL": REDIS_URL, "LOYALTY_QUEUE_NAMESPACE": redis_namespace,
                  "LOYALTY_LOG_LEVEL": "debug"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "workers.main", "--processes", "1", "--threads", "4",
         "--queues", "campaigns", "deliveries", "events"],
        env=worker_env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        settings = load_settings({**env, "REDIS_URL": REDIS_URL})
        install_broker(build_broker(settings, namespace=redis_namespace))
        day = datetime(2027, 6, 15, 0, 0, tzinfo=UTC) - timedelta(hours=9)  # Tokyo's June 15 starts here
        for hour in range(0, 34, 2):
            enqueue_tick(settings, day + timedelta(hours=hour))
        deadline = time.monotonic() + 120
        expected = 300 - len(smtp_sink.reject)
        while len(smtp_sink.messages) < expected and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(1)
    finally:
        worker.terminate()
        output, _ = worker.communicate(timeout=60)

    assert len(smtp_sink.messages) == expected
    assert "delivery.finished" in output and "email_rejected" in output  # debug logs were written, refusals too
    leaks = [secret for m in members for secret in (m.email, m.phone, m.first_name) if secret in output]
    assert leaks == []
