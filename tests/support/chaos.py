"""What the chaos tests share: real worker processes, an SMTP server of its own that counts what it
accepted (and can misbehave), clock processes, the sweeper loop, and the tally.

The tally never trusts our own ledger for "accepted": the provider servers say what they accepted
(the SMTP server by Message-ID, stable per occurrence; the Twilio-like one by number; the
Mailchimp-like one by the event's ``occurrence_key``). The ledger is only read to excuse a message
the providers never accepted: a delivery recorded ``unknown`` or ``failed`` with a reason (the
README's "Guarantees": an outcome we cannot know is recorded, never re-sent).

Run as a program, this module is one of the helper processes::

    python -m tests.support.chaos smtp --port 2525 --out accepted.txt [--error-rate 0.2 --timeout-rate 0.05]
    python -m tests.support.chaos clock --start 2027-06-15T03:10:00Z --minutes 60 --pause 0.1
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
#: The sender of every chaos email; its domain is in every Message-ID.
SENDER = "Loyalty Club <club@example.com>"
#: Signs unsubscribe links in the chaos processes (the same as the other tests').
SECRET = "test-secret-0123456789abcdef"
VENV_BIN = Path(sys.executable).parent

#: The worker as the Procfile runs it (``--processes`` and ``--threads`` are added per scenario).
WORKER_ARGS = ["workers.main", "--queues", "campaigns", "deliveries", "events", "--skip-logging",
               "--worker-shutdown-timeout", "25000", "--worker-fork-timeout", "10000"]

#: The tallies printed during the session, repeated in pytest's terminal summary (tests/chaos/conftest.py).
REPORTED: list[str] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float, what: str, *, every: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def zone_in_daytime(now: datetime) -> str:
    """A fixed-offset zone where it is now between 10:00 and 20:00: the 09:00 send time has passed
    and the local date does not change while a test runs."""
    for offset in range(-12, 15):
        name = "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"  # Etc/GMT-3 is UTC+3
        if 10 <= now.astimezone(ZoneInfo(name)).hour < 20:
            return name
    raise AssertionError("every hour of the day is covered by some offset")


# --- processes ---------------------------------------------------------------------------------------

def group_members(pgid: int) -> int:
    """How many live (not zombie) processes are in process group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: ask the kernel, zombies included
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return 0
        return 1
    count = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        state, process_group = fields[0], int(fields[2])
        if process_group == pgid and state != "Z":
            count += 1
    return count


@dataclass
class Process:
    """A child process in a process group of its own, its output in a log file."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def group_alive(self) -> bool:
        """True while a process of the group runs (zombies waiting to be reaped do not count)."""
        return group_members(self.popen.pid) > 0

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.popen.pid, signum)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """kill -9, to every process of the group (dramatiq's main process and its worker process)."""
        self.signal_group(signal.SIGKILL)
        self.popen.wait(10)
        wait_for(lambda: not self.group_alive(), 10, f"{self.name}'s processes to die")

    def terminate(self, timeout: float = 40) -> float:
        """SIGTERM to every process of the group, as a platform stops a dyno; returns the seconds it took."""
        started = time.monotonic()
        self.signal_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
            wait_for(lambda: not self.group_alive(), 10, f"{self.name}'s processes to exit")
        except (subprocess.TimeoutExpired, AssertionError) as error:
            self.kill()
            raise AssertionError(
                f"{self.name} was still running {timeout:.0f} s after SIGTERM:\n{self.log()[-3000:]}") from error
        return time.monotonic() - started

    def stop(self) -> None:
        """Whatever state it is in: gone afterwards (used in teardown)."""
        if self.group_alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                pass
            if self.group_alive():
                self.signal_group(signal.SIGKILL)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass


#: Variables of the product (and of dramatiq) never inherited from the shell that runs the tests.
OWN_VARIABLES = ("LOYALTY_", "TWILIO_", "MAILCHIMP_", "DATABASE_URL", "REDIS_URL", "SMTP_URL", "dramatiq_")


def spawn(name: str, args: list[str], env: dict[str, str], log_path: Path) -> Process:
    """Start ``args`` in a process group of its own, with the environment ``env`` on top of the shell's."""
    full_env = {**{k: v for k, v in os.environ.items() if not k.startswith(OWN_VARIABLES)},
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1", **env}
    with open(log_path, "w") as log:
        popen = subprocess.Popen(args, env=full_env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    return Process(name, popen, log_path)


def start_worker(env: dict[str, str], log_path: Path, *, processes: int = 1, threads: int = 4,
                 ready_timeout: float = 90) -> Process:
    """``dramatiq workers.main`` with the Procfile's prefetch (16), every process of it ready for messages."""
    worker = spawn(f"worker ({log_path.name})", [str(VENV_BIN / "dramatiq"), *WORKER_ARGS, "--processes",
                                                 str(processes), "--threads", str(threads)],
                   {"dramatiq_queue_prefetch": "16", **env}, log_path)

    def ready() -> bool:
        if not worker.alive():
            raise AssertionError(f"the worker exited with {worker.popen.returncode}:\n{worker.log()[-3000:]}")
        return worker.log().count("ready for action") >= processes

    try:
        wait_for(ready, ready_timeout, "the worker to be ready", every=0.2)
    except AssertionError as exc:
        worker.stop()
        raise AssertionError(f"{exc}:\n{worker.log()[-2000:]}") from None
    return worker


def start_clock(env: dict[str, str], log_path: Path, *, start: datetime, minutes: int, pause: float) -> Process:
    """A clock process that ticks every simulated minute from ``start`` for ``minutes`` minutes."""
    from core.calendar import iso_utc

    return spawn(f"clock ({log_path.name})",
                 [sys.executable, "-m", "tests.support.chaos", "clock", "--start", iso_utc(start),
                  "--minutes", str(minutes), "--pause", str(pause)], env, log_path)


# --- the SMTP server that counts ----------------------------------------------------------------------

class CountingSmtp:
    """An SMTP server in a process of its own (it survives whatever happens to the workers) that
    appends the Message-ID of every message it accepts to a file.

    Faults, drawn per message from a seeded generator: ``error_rate`` refuses at RCPT with ``451``
    or ``421`` (then closes the connection), half each; ``timeout_rate`` stays silent for
    ``hold`` seconds (longer than the client's time-out), half of them at RCPT (nothing accepted),
    half after the message body, which is queued (counted as accepted) before the silence: the
    client cannot know, so if it sent the message again, the copy would show as a duplicate here.
    """

    def __init__(self, directory: Path, *, error_rate: float = 0.0, timeout_rate: float = 0.0, hold: float = 4.0,
                 seed: int = 7):
        self.port = free_port()
        self.out = Path(directory) / f"smtp-accepted-{self.port}.txt"
        self.out.write_text("")
        self.options = ["--error-rate", str(error_rate), "--timeout-rate", str(timeout_rate), "--hold", str(hold),
                        "--seed", str(seed)]
        self.process: Process | None = None

    def start(self) -> CountingSmtp:
        self.process = spawn("smtp", [sys.executable, "-m", "tests.support.chaos", "smtp", "--port", str(self.port),
                                      "--out", str(self.out), *self.options], {}, self.out.with_suffix(".log"))

        def listening() -> bool:
            if not self.process.alive():
                raise AssertionError(f"the SMTP server exited:\n{self.process.log()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False

        try:
            wait_for(listening, 30, "the counting SMTP server to listen")
        except AssertionError:
            self.stop()
            raise
        return self

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def accepted(self) -> list[str]:
        """The Message-ID of every message accepted, in order, repeats included."""
        return [line.split("\t", 1)[0] for line in self.out.read_text().splitlines() if line.strip()]

    def count(self) -> int:
        """How many messages were accepted (cheap enough to poll)."""
        return self.out.read_bytes().count(b"\n")

    def faults(self) -> Counter:
        """What the server did instead of accepting at once (from its log)."""
        return Counter(line.split(" ", 1)[1] for line in self.process.log().splitlines() if line.startswith("fault "))

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def _smtp_main(port: int, out: str, error_rate: float, timeout_rate: float, hold: float, seed: int) -> None:
    import asyncio
    import random
    from email.parser import BytesHeaderParser

    from aiosmtpd.controller import Controller

    rng = random.Random(seed)
    sink = open(out, "a", buffering=1)
    parser = BytesHeaderParser()

    def fault(kind: str) -> None:
        print(f"fault {kind}", flush=True)

    class Handler:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 (aiosmtpd)
            draw = rng.random()
            if draw < error_rate / 2:
                fault("451")
                return "451 4.3.0 Try again later"
            if draw < error_rate:
                fault("421")  # answered, then the connection is closed, as aiosmtpd's own QUIT does
                await server.push("421 4.3.2 Service shutting down, try again later")
                server._handler_coroutine.cancel()
                server.transport.close()
                return "421 4.3.2 Service shutting down, try again later"
            if draw < error_rate + timeout_rate / 2:
                fault("timeout_before_data")
                await asyncio.sleep(hold)
                return "451 4.4.2 Timed out"
            session.hold_after_data = draw < error_rate + timeout_rate
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd)
            content = envelope.original_content or envelope.content
            message_id = parser.parsebytes(content)["Message-ID"] or "<none>"
            sink.write(f"{message_id}\t{','.join(envelope.rcpt_tos)}\n")  # queued: it will be delivered
            if getattr(session, "hold_after_data", False):
                session.hold_after_data = False
                fault("timeout_after_data")
                await asyncio.sleep(hold)  # the client gives up before it hears that the message was queued
            return "250 Message accepted for delivery"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"listening on {port}", flush=True)
    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    while not stop:
        time.sleep(0.2)
    controller.stop()
    sink.close()


def _clock_main(start: str, minutes: int, pause: float) -> None:
    """Tick every simulated minute, as ``loyalty clock`` does every LOYALTY_TICK_MINUTES."""
    from datetime import timedelta

    from core import logs
    from core.calendar import parse_instant
    from core.settings import load_settings
    from schedules.clock import enqueue_tick
    from workers.broker import build_broker, install_broker

    logs.configure()
    settings = load_settings()
    broker = install_broker(build_broker(settings))
    first = parse_instant(start)
    for minute in range(minutes + 1):
        enqueue_tick(settings, first + timedelta(minutes=minute))
        time.sleep(pause)
    broker.close()


# --- the database's side ------------------------------------------------------------------------------

def delivery_states(sessions) -> Counter:
    from sqlalchemy import func, select

    from models.delivery import Delivery

    with sessions() as session:
        return Counter(dict(session.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).all()))


def ledger(sessions) -> dict[str, tuple[str, str | None]]:
    """occurrence key → (state, reason) for every delivery."""
    from sqlalchemy import select

    from models.delivery import Delivery

    with sessions() as session:
        return {key: (state, reason) for key, state, reason in
                session.execute(select(Delivery.occurrence_key, Delivery.state, Delivery.reason))}


def drain(sessions, *, sweep: Callable[[], None] | None, timeout: float, idle_seconds: float = 3.0,
          sweep_every: float = 6.0, database_errors: tuple[type[BaseException], ...] = (),
          waiting: Callable[[], int] | None = None) -> Counter:
    """Wait until no delivery is ``planned`` or ``sending``; while nothing moves for ``idle_seconds``,
    run ``sweep`` (at most every ``sweep_every`` seconds). Returns the final count per state.

    With the chaos tests' threshold of 5 s, a sweeper on a timer would also requeue deliveries still
    waiting in a busy queue (their rows are as old as the plan): harmless, the claim makes the copy a
    no-op, but slow. Sweeping when the workers are idle is what the production threshold (10 minutes,
    a sweep every 5) amounts to.

    ``waiting`` (:meth:`ChaosRun.deliveries_waiting`) says how many delivery messages are queued or
    being worked on: when it is 0 and nothing is ``sending``, the workers are idle now, so ``sweep``
    runs at once instead of after ``idle_seconds`` of guessing, and the states are read every 0.1 s
    (without it, every ``idle_seconds`` / 5, 0.5 s at most).
    """
    deadline = time.monotonic() + timeout
    pause = 0.1 if waiting is not None else min(0.5, idle_seconds / 5)
    last, last_change, last_sweep = None, time.monotonic(), 0.0
    while True:
        try:
            states = delivery_states(sessions)
        except database_errors:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
            continue
        if not states["planned"] and not states["sending"]:
            return states
        now = time.monotonic()
        idle = waiting is not None and not states["sending"] and waiting() == 0
        if states != last:
            last, last_change = states, now
        if sweep is not None and (idle or (now - last_change >= idle_seconds and now - last_sweep >= sweep_every)):
            sweep()
            last_sweep = now
        if now > deadline:
            raise AssertionError(f"deliveries still unfinished after {timeout:.0f} s: {dict(states)}")
        time.sleep(pause)


def sweeper_work(*workers: Process) -> tuple[int, int]:
    """(deliveries requeued, deliveries marked unknown) by the sweeper, from the workers' logs."""
    import json

    requeued = marked = 0
    for worker in workers:
        for line in worker.log().splitlines():
            if '"sweeper.repaired"' in line:
                event = json.loads(line)
                requeued += event.get("requeued", 0)
                marked += event.get("marked_unknown", 0)
    return requeued, marked


# --- the tally ---------------------------------------------------------------------------------------

@dataclass
class Tally:
    scenario: str
    expected: int
    accepted: int
    duplicates: int
    missing: int
    unknown: int  # not accepted, recorded unknown or failed with a reason
    unexpected: int  # accepted although nobody expected it
    reasons: Counter = field(default_factory=Counter)
    missing_examples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    notes: str = ""

    def line(self) -> str:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.reasons.items())) or "none"
        text = (f"{self.scenario}: expected={self.expected} accepted={self.accepted} duplicates={self.duplicates} "
                f"missing={self.missing} unknown={self.unknown} (recorded reasons: {reasons}) "
                f"unexpected={self.unexpected} in {self.seconds:.0f} s")
        return f"{text}; {self.notes}" if self.notes else text

    def report(self) -> None:
        line = self.line()
        REPORTED.append(line)
        print(f"\n[chaos] {line}", flush=True)

    def assert_clean(self) -> None:
        assert (self.duplicates, self.missing, self.unexpected) == (0, 0, 0), (
            f"{self.line()}; missing for example: {self.missing_examples}")


def tally(scenario: str, expected: dict[str, str], received: Iterable[str],
          recorded: dict[str, tuple[str, str | None]], *, started: float | None = None) -> Tally:
    """``expected``: what the provider should see for each message (a Message-ID, a number...) →
    its occurrence key; ``received``: what the provider accepted, repeats included; ``recorded``:
    occurrence key → (state, reason) from the ledger."""
    counts = Counter(received)
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    accepted = sum(1 for identity in counts if identity in expected)
    unexpected = sum(1 for identity in counts if identity not in expected)
    reasons: Counter = Counter()
    missing: list[str] = []
    for identity, key in expected.items():
        if identity in counts:
            continue
        state, reason = recorded.get(key, (None, None))
        if state in ("unknown", "failed") and reason:
            reasons[f"{state}:{reason}"] += 1
        else:
            missing.append(f"{key} ({state}, {reason})")
    return Tally(scenario, expected=len(expected), accepted=accepted, duplicates=duplicates, missing=len(missing),
                 unknown=sum(reasons.values()), unexpected=unexpected, reasons=reasons, missing_examples=missing[:5],
                 seconds=time.monotonic() - started if started is not None else 0.0)


# --- a scenario ---------------------------------------------------------------------------------------

@dataclass
class ChaosRun:
    """One scenario's moving parts; everything started through it is stopped after the test."""

    tmp_path: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)
    runtime: object = None
    broker: object = None

    def configure(self, *, database_url: str, smtp_url: str, redis_url: str, namespace: str,
                  campaigns_dir: Path | None = None, templates_dir: Path | None = None, **extra: str) -> dict:
        """The environment of every process of the scenario; builds the test process's own runtime
        (for planning) and installs the Redis broker in the test process (for enqueuing)."""
        from core.settings import load_settings
        from workers.broker import build_broker, install_broker
        from workers.runtime import build_runtime, set_runtime

        self.env = {
            "DATABASE_URL": database_url, "REDIS_URL": redis_url, "LOYALTY_QUEUE_NAMESPACE": namespace,
            "SMTP_URL": smtp_url, "LOYALTY_SECRET": SECRET, "LOYALTY_HOME": str(self.tmp_path / "home"),
            "LOYALTY_PUBLIC_URL": "https://club.example.com", "LOYALTY_STALE_AFTER_SECONDS": "5",
            "LOYALTY_DELIVERY_BATCH_SIZE": "100", "LOYALTY_EMAIL_FROM": SENDER,
            "LOYALTY_CAMPAIGNS_DIR": str(campaigns_dir or birthday_only(self.tmp_path)), **extra,
        }
        if templates_dir is not None:
            self.env["LOYALTY_TEMPLATES_DIR"] = str(templates_dir)
        settings = load_settings(self.env)
        self.runtime = build_runtime(settings)
        set_runtime(self.runtime)
        self.broker = install_broker(build_broker(settings, namespace=namespace))
        return self.env

    @property
    def sessions(self):
        return self.runtime.sessions

    def worker(self, name: str, **sizing: int) -> Process:
        process = start_worker(self.env, self.tmp_path / f"{name}.log", **sizing)
        self.processes.append(process)
        return process

    def clock(self, name: str, **options) -> Process:
        process = start_clock(self.env, self.tmp_path / f"{name}.log", **options)
        self.processes.append(process)
        return process

    def plan(self, campaign_id: str, at: datetime) -> list[int]:
        """Plan as ``evaluate_campaign`` does, then enqueue the deliveries after the commit."""
        from models.db import transaction
        from workers.actors import enqueue_deliveries
        from workers.planning import plan_campaign, plan_context

        runtime = self.runtime
        with transaction(runtime.sessions) as session:
            plan = plan_campaign(session, runtime.campaigns.get(campaign_id),
                                 plan_context(session, runtime.campaigns, runtime.program, at))
        enqueue_deliveries(plan.planned_ids, as_of=at, batch_size=runtime.settings.delivery_batch_size)
        return plan.planned_ids

    def deliveries_waiting(self) -> int:
        """Delivery messages enqueued and not yet done (queued, prefetched or being worked on); those
        delayed for a later time are not counted until they are due. 0: the workers have nothing to do."""
        from workers.actors import DELIVERY_QUEUE

        return self.broker.client.hlen(f"{self.broker.namespace}:{DELIVERY_QUEUE}.msgs")

    def sweep(self) -> None:
        """What the clock enqueues every 5 minutes."""
        from workers.actors import sweep_unfinished

        sweep_unfinished.send()

    def close(self) -> None:
        from workers.runtime import set_runtime

        # The scenario is over and counted: kill -9 every group at once rather than wait for each
        # graceful exit (2-3 s a worker), then reap them.
        for process in self.processes:
            process.signal_group(signal.SIGKILL)
        for process in self.processes:
            process.stop()
        if self.broker is not None:
            self.broker.close()
        if self.runtime is not None:
            set_runtime(None)
            self.runtime.close()


def birthday_only(tmp_path: Path) -> Path:
    """A definitions folder holding the shipped birthday gift alone, so every count is exact."""
    folder = tmp_path / "definitions"
    if not folder.exists():
        folder.mkdir()
        shutil.copy(REPO_ROOT / "campaigns" / "definitions" / "birthday.yaml", folder)
    return folder


def birthday_members(sessions, count: int, *, prefix: str, now: datetime | None = None) -> tuple[str, datetime]:
    """``count`` members whose birthday is today in a zone where 09:00 has passed; returns the zone
    and the instant to plan at (now)."""
    from tests.support.providers import bulk_members

    now = now or datetime.now(UTC).replace(microsecond=0)
    zone = zone_in_daytime(now)
    today = now.astimezone(ZoneInfo(zone)).date()
    tiers = ("bronze", "silver", "gold")
    bulk_members(sessions, [{"external_id": f"{prefix}{i:05d}", "email": f"{prefix.lower()}{i:05d}@members.example",
                             "timezone": zone, "birth_month": today.month, "birth_day": today.day,
                             "tier": tiers[i % 3]} for i in range(count)])
    return zone, now


def email_tally(scenario: str, run: ChaosRun, smtp: CountingSmtp, keys: list[str], started: float,
                **extra) -> Tally:
    """Counted at the SMTP server by Message-ID (one per occurrence, on every attempt)."""
    from workers.channels.email import message_id_for

    expected = {message_id_for(key, SENDER): key for key in keys}
    assert len(expected) == len(keys)
    result = tally(scenario, expected, smtp.accepted(), ledger(run.sessions), started=started)
    for name, value in extra.items():
        setattr(result, name, value)
    result.report()
    return result


def planned_keys(run: ChaosRun) -> list[str]:
    from sqlalchemy import select

    from models.delivery import Delivery

    with run.sessions() as session:
        return list(session.scalars(select(Delivery.occurrence_key).order_by(Delivery.id)))


def rewards_once(run: ChaosRun) -> tuple[int, int]:
    """(sent deliveries, reward entries): equal when every sent gift was granted exactly once."""
    from sqlalchemy import func, select

    from models.delivery import Delivery
    from models.points import PointEntry

    with run.sessions() as session:
        sent = session.scalar(select(func.count()).select_from(Delivery).where(Delivery.state == "sent"))
        rewards = session.scalar(
            select(func.count()).select_from(PointEntry).where(PointEntry.entry_key.like("reward:%")))
    return sent, rewards


def wait_accepted(smtp: CountingSmtp, at_least: int, timeout: float, worker: Process, *,
                  stalled_after: float = 120) -> int:
    """Wait until the SMTP server has accepted ``at_least`` messages; fail at once if the worker
    dies, and after ``stalled_after`` seconds without a single new message (a broken worker)."""
    progress = {"count": -1, "at": time.monotonic()}

    def enough():
        if not worker.alive():
            raise AssertionError(f"the worker died by itself:\n{worker.log()[-3000:]}")
        count = smtp.count()
        if count != progress["count"]:
            progress.update(count=count, at=time.monotonic())
        elif time.monotonic() - progress["at"] > stalled_after:
            raise AssertionError(f"no message accepted for {stalled_after:.0f} s ({count} so far); the worker says:\n"
                                 f"{worker.log()[-3000:]}")
        return count if count >= at_least else 0

    return wait_for(enough, timeout, f"{at_least} messages at the SMTP server", every=0.1)


# --- as a program ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.chaos")
    commands = parser.add_subparsers(dest="command", required=True)
    smtp = commands.add_parser("smtp", help="an SMTP server that appends each accepted Message-ID to a file")
    smtp.add_argument("--port", type=int, required=True)
    smtp.add_argument("--out", required=True)
    smtp.add_argument("--error-rate", type=float, default=0.0)
    smtp.add_argument("--timeout-rate", type=float, default=0.0)
    smtp.add_argument("--hold", type=float, default=4.0)
    smtp.add_argument("--seed", type=int, default=7)
    clock = commands.add_parser("clock", help="tick every simulated minute (schedules.clock.enqueue_tick)")
    clock.add_argument("--start", required=True)
    clock.add_argument("--minutes", type=int, required=True)
    clock.add_argument("--pause", type=float, default=0.1)
    args = parser.parse_args(argv)
    if args.command == "smtp":
        _smtp_main(args.port, args.out, args.error_rate, args.timeout_rate, args.hold, args.seed)
    else:
        _clock_main(args.start, args.minutes, args.pause)


if __name__ == "__main__":
    main()
