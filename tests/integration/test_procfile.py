"""The Procfile for real: `release` once, then `clock`, `worker` and `web` under honcho, exactly as
written, against PostgreSQL, Redis and a local SMTP server; then SIGTERM, as a platform sends it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
import redis
from sqlalchemy import select

from models.db import make_engine, make_sessionmaker
from models.delivery import Delivery
from tests.conftest import PG_ROOT, PUBLIC_URL, REDIS_URL, REPO_ROOT, TEST_SECRET, TEST_SENDER, free_port
from tests.support.members import add_members, make_member

PROCFILE = REPO_ROOT / "Procfile"
VENV_BIN = Path(sys.executable).parent
HONCHO_LINE = re.compile(r"^\d\d:\d\d:\d\d (?P<name>\S+?)\s*\| (?P<text>.*)$")
#: honcho prints "SIGTERM received" from its signal handler, which can run between the two writes of
#: the print() of a process's line (the text, then its newline): the two lines come out as one.
GLUED = re.compile(r"(?<=\S)(?=\d\d:\d\d:\d\d system\s*\| )")
STARTED = re.compile(r"^(?P<name>\S+) started \(pid=(?P<pid>\d+)\)$")
MEMBERS = 60


def procfile() -> dict[str, str]:
    entries = (line.split(":", 1) for line in PROCFILE.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {name.strip(): command.strip() for name, command in entries}


def zone_in_daytime(now: datetime) -> str:
    """A zone where it is now between 10:00 and 20:00: the 09:00 send time has passed, and the local
    date does not change while the test runs."""
    for offset in range(-12, 15):
        name = "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"  # Etc/GMT-3 is UTC+3
        if 10 <= now.astimezone(ZoneInfo(name)).hour < 20:
            return name
    raise AssertionError("every hour of the day is covered by some offset")


@pytest.fixture
def fresh_database():
    name = f"loyalty_procfile_{os.getpid()}"
    with psycopg.connect(f"{PG_ROOT}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG_ROOT}/{name}"
    with psycopg.connect(f"{PG_ROOT}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def queued_delivery_ids(namespace: str) -> set[int]:
    """Delivery ids carried by the messages waiting in the Redis queue (now or delayed)."""
    client = redis.Redis.from_url(REDIS_URL)
    ids: set[int] = set()
    for key in (f"{namespace}:deliveries.msgs", f"{namespace}:deliveries.DQ.msgs"):
        for body in client.hvals(key):
            ids.update(json.loads(body)["args"][0])
    client.close()
    return ids


def test_the_procfile_runs_delivers_and_stops_cleanly_on_sigterm(fresh_database, smtp_sink, redis_namespace, tmp_path):
    commands = procfile()
    assert set(commands) == {"release", "clock", "worker", "web"}
    assert "--processes ${WORKER_PROCESSES" in commands["worker"] and "--threads ${WORKER_THREADS" in commands["worker"]

    definitions = tmp_path / "definitions"  # the birthday gift alone, so the count is exact
    definitions.mkdir()
    shutil.copy(REPO_ROOT / "campaigns" / "definitions" / "birthday.yaml", definitions)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LOYALTY_", "DATABASE_URL", "REDIS_URL", "SMTP_URL"))},
        "DATABASE_URL": fresh_database, "REDIS_URL": REDIS_URL, "LOYALTY_QUEUE_NAMESPACE": redis_namespace,
        "SMTP_URL": f"smtp://127.0.0.1:{smtp_sink.port}", "LOYALTY_SECRET": TEST_SECRET, "PORT": str(port),
        "LOYALTY_PUBLIC_URL": PUBLIC_URL, "LOYALTY_EMAIL_FROM": TEST_SENDER,
        "LOYALTY_TICK_MINUTES": "1", "WORKER_PROCESSES": "2", "WORKER_THREADS": "2", "LOYALTY_DELIVERY_BATCH_SIZE": "5",
        "LOYALTY_CAMPAIGNS_DIR": str(definitions), "LOYALTY_HOME": str(tmp_path / "home"),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1",
    }

    # The release phase runs alone and first, as on Heroku: honcho would stop everything when it exits.
    release = subprocess.run(commands["release"], shell=True, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert release.returncode == 0, release.stderr
    assert "Schema upgraded to the newest revision." in release.stdout

    zone = zone_in_daytime(datetime.now(UTC))
    today = datetime.now(ZoneInfo(zone)).date()
    engine = make_engine(fresh_database.replace("postgresql://", "postgresql+psycopg://"))
    sessions = make_sessionmaker(engine)
    members = [make_member(f"P{i:03d}", timezone_name=zone, birthday=(today.month, today.day)) for i in range(MEMBERS)]
    add_members(sessions, *members, make_member("PNOCONSENT", timezone_name=zone, birthday=(today.month, today.day),
                                                email_opt_in=False))
    addresses = [m.email for m in members] + ["pnoconsent@members.example"]

    honcho = subprocess.Popen(
        [str(VENV_BIN / "honcho"), "--no-colour", "-f", str(PROCFILE), "-d", str(REPO_ROOT), "start", "web", "clock", "worker"],
        env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(part for line in honcho.stdout
                                                           for part in GLUED.split(line.rstrip("\n"))), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 40
        healthy = False
        while time.monotonic() < deadline and not (healthy and len(smtp_sink.messages) >= MEMBERS // 3):
            time.sleep(0.2)
            try:
                healthy = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                healthy = False
        assert healthy and len(smtp_sink.messages) >= MEMBERS // 3, "\n".join(output[-40:])
    finally:
        stopped_at = time.monotonic()
        os.killpg(honcho.pid, signal.SIGTERM)  # honcho passes it on to every process, as a platform does
        try:
            honcho.wait(timeout=30)
        finally:
            if honcho.poll() is None:
                os.killpg(honcho.pid, signal.SIGKILL)
    reader.join(5)
    honcho.stdout.close()  # read to its end by the reader

    # Every process exited within 30 seconds: honcho and each process's own group (dramatiq's children too).
    children = {m["name"]: int(m["pid"]) for line in output if (parsed := HONCHO_LINE.match(line)) and parsed["name"] == "system"
                and (m := STARTED.match(parsed["text"]))}
    assert set(children) == {"web.1", "clock.1", "worker.1"}, output
    for name, pid in children.items():
        while _group_alive(pid) and time.monotonic() - stopped_at < 30:
            time.sleep(0.1)
        assert not _group_alive(pid), f"{name} still runs 30 s after SIGTERM"
    assert time.monotonic() - stopped_at < 30

    # Every delivery is sent, or planned and back in the queue: none is left half-done in `sending`.
    with sessions() as session:
        rows = session.execute(select(Delivery.id, Delivery.state, Delivery.reason)).all()
    engine.dispose()
    states = {state for _, state, _ in rows}
    assert states <= {"sent", "planned", "skipped"}, rows
    assert [reason for _, state, reason in rows if state == "skipped"] == ["no_consent"]
    planned = {delivery_id for delivery_id, state, _ in rows if state == "planned"}
    assert planned <= queued_delivery_ids(redis_namespace)
    sent = [delivery_id for delivery_id, state, _ in rows if state == "sent"]
    recipients = [m["To"].addresses[0].addr_spec for m in smtp_sink.messages]
    assert len(recipients) == len(set(recipients)) == len(sent)

    # Logs: one JSON event per line from every process, and no email address in any of them.
    lines = [(m["name"].split(".")[0], m["text"]) for line in output if (m := HONCHO_LINE.match(line)) and m["name"] != "system"]
    events = []
    for name, text in lines:
        event = json.loads(text)  # fails on any line that is not one JSON object
        assert isinstance(event, dict) and "event" in event, text
        events.append((name, event["event"]))
    assert {name for name, _ in events} == {"web", "clock", "worker"}
    assert ("clock", "clock.tick") in events and ("worker", "campaign.planned") in events
    assert sum(1 for name, event in events if (name, event) == ("worker", "delivery.finished")) == len(sent)
    log_text = "\n".join(text for _, text in lines)
    assert not [address for address in addresses if address in log_text]
    assert "@members.example" not in log_text


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
