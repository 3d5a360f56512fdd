"""(c) Delivery: messages per second from ``planned`` to accepted by the provider, and (d) memory.

Ours: the real ``worker`` process of the ``Procfile`` (``dramatiq workers.main``, 2 processes × 8
threads, prefetch 16) on the real Redis, against local provider servers that accept every message
at once and count it, each in a process of its own: SMTP (aiosmtpd) and Twilio
(``loyalty/standins/twilio_server.py``, with the product paced far above what it can take).
Deliveries are planned by the product (``plan_campaign``, one birthday tick a day from the
benchmark instant until there are enough; for SMS, a birthday campaign on the ``sms`` channel
written for the benchmark, since the shipped ones send email), then enqueued as the actor does
(``workers.actors.enqueue_deliveries``); the clock runs from the first enqueue to the moment the
server accepted the last message. The SMTP server keeps the Message-ID of every message it accepted:
after our run (and after the in-process sample), each delivery the ledger says sent must have been
accepted once, under the Message-ID the ledger recorded, and nothing else (``Mismatch`` otherwise,
naming the deliveries). Two runs on one database at once break each other (each empties the send
ledger when it starts a channel): give each its own ``--database``.

Two floors, both printed (issue 16):

- the wire: a bare loop of 16 threads (2 × 8), one connection each, sending the very same messages
  (the SMTP bytes, or the Twilio form, that the server received from our worker, recorded during
  our run) to the same server, with no queue and no database, once the worker has stopped; the
  fastest of three runs;
- the render-and-send loop (email): what a team writes without us, at the worker's concurrency
  (2 forked processes × 8 connections): one read of the deliveries, members and balances, then the
  same templates rendered by the same Jinja2 environment, the same message built with the standard
  library's ``EmailMessage``, sent with ``smtplib``; no queue, no ledger; the fastest of three runs.

Also printed: the worker's CPU a message, PostgreSQL's commits a message over our run
(``pg_stat_database``; autovacuum included), and the statements, reads and commits a message
counted by SQLAlchemy events on the same code (``workers.delivery.deliver``) sending 200 more
deliveries in this process (``pg_stat_statements`` is not preloaded on the benchmark's server).

Before the email run, the worker plans and delivers the birthday tick at the benchmark instant
itself (``evaluate_campaign`` through Redis), so that its peak memory (d) covers planning at this
size; memory is read during the email run. Before the SMS run, the worker delivers 100 texts
untimed (the first days after the instant), for the same reason: a fresh worker's first batches
compile templates and statements and open pools.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import secrets
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from benchmarks.common import (
    REDIS_URL,
    Bench,
    Mismatch,
    Row,
    compare_accepted,
    plan_campaign,
    plan_context,
    worker_env,
)
from benchmarks.generate import AT
from benchmarks.memory import TreeSampler

TARGET = 0.35  # of the wire (issue 16)
TEAM_TARGET = 0.9  # of the render-and-send loop (email)
FLOOR_RUNS = 3
THREADS = 8
PROCESSES = 2
FALLBACK_COMMAND = (
    "env dramatiq_queue_prefetch=${DRAMATIQ_PREFETCH:-16} dramatiq workers.main --processes ${WORKER_PROCESSES:-2}"
    " --threads ${WORKER_THREADS:-8} --queues campaigns deliveries"
)


def repo_root() -> Path:
    import workers

    return Path(workers.__file__).resolve().parent.parent


# --- the provider servers, each in a process of its own, counting what they accepted ------------

def _serve_smtp(port: int, count, last, ready, control) -> None:
    """aiosmtpd answering at once. It keeps the Message-ID of every message it accepted, in order,
    before answering 250 (so a message the client was told is accepted is always in the list), and
    ``count`` is that list's length: written by this process's one event loop thread only, after
    ``last``, so a reader that sees a count also sees the time of the message that made it."""
    from aiosmtpd.controller import Controller

    accepted: list[str] = []  # the Message-ID of every accepted message ("" when it had none)

    class Handler:
        keep = False
        kept: list = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
            content = envelope.original_content or envelope.content
            if self.keep:
                self.kept.append((envelope.mail_from, list(envelope.rcpt_tos), content))
            accepted.append(message_id_of(content))
            last.value = time.monotonic()
            count.value = len(accepted)
            return "250 OK"

    handler = Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()

    def dump():
        kept, handler.kept = handler.kept, []
        return kept

    def keep(on):
        handler.keep = on

    _control_loop(control, keep, dump, ids=lambda since: accepted[since:])
    controller.stop()


def message_id_of(content: bytes) -> str:
    """The Message-ID header's value (``<...>``) of a message as it came over the wire, or "" when
    it has none."""
    end = content.find(b"\r\n\r\n")
    for line in (content if end < 0 else content[:end]).split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"message-id":
            return value.strip().decode("ascii", "replace")
    return ""


def _serve_twilio(port: int, count, last, ready, control) -> None:
    from loyalty.standins.twilio_server import TwilioServer

    server = TwilioServer(port=port).start()
    stop = threading.Event()
    state = {"keep": False, "from": 0}

    def watch():  # the server keeps its own records: read the count, note when it moves
        seen = 0
        while not stop.is_set():
            now = server.calls.get("messages.create", 0)
            if now != seen:
                seen = count.value = now
                last.value = time.monotonic()
            stop.wait(0.002)

    threading.Thread(target=watch, daemon=True).start()
    ready.set()

    def keep(on):
        if on:
            state["from"] = len(server.accepted)
        state["keep"] = on

    def dump():
        accepted = server.accepted[state["from"]:]
        return [{name: list(values) for name, values in m.params.items()} for m in accepted]

    _control_loop(control, keep, dump)
    stop.set()
    server.stop()


def _control_loop(control, keep, dump, ids=None) -> None:
    while True:
        command, argument = control.recv()
        if command == "keep":
            keep(argument)
        elif command == "dump":
            with open(argument, "wb") as f:
                pickle.dump(dump(), f)
        elif command == "ids":  # (path, since): the ids of the messages accepted from the since-th on
            path, since = argument
            with open(path, "wb") as f:
                pickle.dump(ids(since) if ids else None, f)
        elif command == "stop":
            control.send("ok")
            return
        control.send("ok")


class ProviderProcess:
    """A local provider server (SMTP or Twilio) in another process, answering at once, counting."""

    def __init__(self, kind: str) -> None:
        target = {"smtp": _serve_smtp, "twilio": _serve_twilio}[kind]
        # fork: the child runs nothing but the server, and it needs no importable __main__
        context = multiprocessing.get_context("fork")
        self.kind = kind
        self.port = _free_port()
        self._count = context.RawValue(ctypes.c_long, 0)
        self._last = context.RawValue(ctypes.c_double, 0.0)
        ready = context.Event()
        self._control, child = context.Pipe()
        self._process = context.Process(target=target, args=(self.port, self._count, self._last, ready, child),
                                        name=f"bench-{kind}", daemon=True)
        self._process.start()
        if not ready.wait(30):
            raise RuntimeError(f"the benchmark's {kind} server did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def count(self) -> int:
        return self._count.value

    @property
    def last_accepted(self) -> float:
        return self._last.value

    def _ask(self, command: str, argument=None) -> None:
        self._control.send((command, argument))
        self._control.recv()

    def keep(self, on: bool) -> None:
        self._ask("keep", on)

    def take_kept(self) -> list:
        return self._load("dump")

    def accepted_ids(self, since: int = 0) -> list[str]:
        """The Message-ID of every message the server accepted from the ``since``-th on (its
        count at that moment), in the order accepted; SMTP only."""
        ids = self._load("ids", since)
        if ids is None:
            raise TypeError(f"the benchmark's {self.kind} server keeps no message ids; only the SMTP server does")
        return ids

    def _load(self, command: str, *argument):
        with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as f:
            path = f.name
        try:
            self._ask(command, (path, *argument) if argument else path)
            with open(path, "rb") as f:
                return pickle.load(f)
        finally:
            os.unlink(path)

    def stop(self) -> None:
        try:
            self._ask("stop")
        finally:
            self._process.join(10)
            if self._process.is_alive():
                self._process.terminate()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the worker, as the Procfile runs it --------------------------------------------------------------

def worker_command() -> str:
    procfile = repo_root() / "Procfile"
    try:
        for line in procfile.read_text().splitlines():
            if line.startswith("worker:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return FALLBACK_COMMAND


@dataclass
class WorkerProcess:
    process: subprocess.Popen
    log_path: Path
    namespace: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def first_failure(self) -> str | None:
        """The last line of the first traceback a worker logged for a message, if any."""
        import json

        for line in self.log_text().splitlines():
            if "unhandled exception" not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                return line[-300:]
            trace = [t for t in str(event.get("exception", "")).splitlines() if t.strip()]
            return trace[-1] if trace else str(event.get("event", ""))[-300:]
        return None

    def wait_ready(self, processes: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            if self.log_text().count("ready for action") >= processes:
                return
            time.sleep(0.2)
        raise RuntimeError(f"the worker was not ready after {timeout:.0f} s:\n{self.log_text()[-3000:]}")

    def stop(self, timeout: float = 40) -> int | None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return self.process.returncode


def start_worker(database: str, namespace: str, log_path: Path, **extra: str) -> WorkerProcess:
    env = dict(os.environ)
    env.update(worker_env(database, REDIS_URL=REDIS_URL, LOYALTY_QUEUE_NAMESPACE=namespace, **extra))
    env.update({
        "WORKER_PROCESSES": str(PROCESSES), "WORKER_THREADS": str(THREADS), "DRAMATIQ_PREFETCH": "16",
        "dramatiq_queue_prefetch": "16",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    })
    log = open(log_path, "w")
    process = subprocess.Popen(
        ["sh", "-c", f"exec {worker_command()}"], env=env, cwd=repo_root(), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    return WorkerProcess(process, log_path, namespace)


def _broker(bench: Bench, namespace: str):
    from core.settings import load_settings
    from workers.broker import build_broker, install_broker

    settings = load_settings(worker_env(bench.database, REDIS_URL=REDIS_URL))
    return install_broker(build_broker(settings, namespace=namespace)), settings


def _clean_redis(namespace: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(f"{namespace}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# --- the steps -------------------------------------------------------------------------------------

def _states(bench: Bench, ids: list[int] | None = None) -> dict[str, int]:
    from sqlalchemy import func, select

    from models.delivery import Delivery

    with bench.runtime.sessions() as session:
        query = select(Delivery.state, func.count()).group_by(Delivery.state)
        if ids is not None:
            query = query.where(Delivery.id.in_(ids))
        return dict(session.execute(query).all())


def worker_tick(bench: Bench, campaign, timeout: float = 900) -> dict:
    """The worker plans and delivers the birthday tick at the benchmark instant, through Redis."""
    from core.calendar import iso_utc
    from workers.actors import evaluate_campaign

    started = time.monotonic()
    evaluate_campaign.send(campaign.id, iso_utc(AT))
    deadline = started + timeout
    while time.monotonic() < deadline:
        states = _states(bench)
        if sum(states.values()) and not states.get("planned", 0) + states.get("sending", 0):
            return {"seconds": time.monotonic() - started, "states": states}
        time.sleep(0.25)
    raise RuntimeError(f"the worker's tick did not finish in {timeout:.0f} s: {_states(bench)}")


def worker_warm_up(bench: Bench, campaign, wanted: int, server: ProviderProcess, batch_size: int,
                   worker: WorkerProcess) -> dict:
    """The worker delivers ``wanted`` due deliveries (the first days after the benchmark instant),
    untimed, before the measured ones: its templates compiled, its statements cached, its pools open."""
    from workers.actors import enqueue_deliveries

    started = time.monotonic()
    batches = plan_for_delivery(bench, campaign, wanted)
    ids = [i for _, day_ids in batches for i in day_ids]
    base = server.count
    for at, day_ids in batches:
        enqueue_deliveries(day_ids, as_of=at, batch_size=batch_size)
    _wait_count(server, base + len(ids), bench, ids, timeout=900, worker=worker)
    deadline = time.monotonic() + 60
    states = _states(bench, ids)
    while (states.get("planned") or states.get("sending")) and time.monotonic() < deadline:
        time.sleep(0.05)  # the worker records each outcome after the server's answer
        states = _states(bench, ids)
    return {"seconds": time.monotonic() - started, "states": states, "accepted": server.count - base}


def plan_for_delivery(bench: Bench, campaign, wanted: int) -> list[tuple[datetime, list[int]]]:
    """Plan one tick a day after the benchmark instant until ``wanted`` ids are due at their tick.

    A delivery planned for later (an SMS deferred past the member's quiet hours) is left out: the
    benchmark measures sending what is due, not waiting for a morning."""
    from sqlalchemy import select

    from models.db import transaction
    from models.delivery import Delivery

    batches, total = [], 0
    for day in range(1, 800):
        at = AT + timedelta(days=day)
        with transaction(bench.runtime.sessions) as session:
            ids = plan_campaign(session, campaign, plan_context(session, bench, at)).planned_ids
            if ids:
                ids = sorted(session.scalars(select(Delivery.id).where(Delivery.id.in_(ids), Delivery.send_at <= at)))
        ids = ids[: wanted - total]
        if ids:
            batches.append((at, ids))
            total += len(ids)
        if total >= wanted:
            break
    return batches


def _wait_count(server: ProviderProcess, target: int, bench: Bench, ids: list[int], timeout: float,
                worker: WorkerProcess | None = None) -> int:
    """Wait until the server accepted ``target`` messages in all, or the deliveries are all final.

    Gives up early, with the worker's first error, when nothing moved for a minute while the
    worker's log reports messages it failed to process."""
    deadline = time.monotonic() + timeout
    last_count, last_progress = server.count, time.monotonic()
    checked = last_progress
    while time.monotonic() < deadline:
        count = server.count
        if count >= target:
            return count
        now = time.monotonic()
        if count != last_count:
            last_count, last_progress = count, now
        elif now - checked > 15:
            checked = now
            if ids:
                states = _states(bench, ids)
                if not states.get("planned") and not states.get("sending"):
                    return count  # everything is final: some were not sent (the states say why)
            if worker is not None and now - last_progress > 60:
                failure = worker.first_failure()
                if failure:
                    raise RuntimeError(f"the worker fails to process messages: {failure}")
        time.sleep(0.005)
    raise RuntimeError(f"delivery did not finish in {timeout:.0f} s ({server.count} of {target} accepted)")


def _final_states(bench: Bench, ids: list[int], timeout: float = 60) -> dict[str, int]:
    """The deliveries' states once none is ``planned`` or ``sending`` (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        states = _states(bench, ids)
        if not states.get("planned") and not states.get("sending") or time.monotonic() > deadline:
            return states
        time.sleep(0.1)


def _same_messages(what: str, accepted: list[str], sent: list[str]) -> None:
    """A floor's messages (their Message-IDs) were each accepted once, and nothing else."""
    from collections import Counter

    missing, extra = Counter(sent) - Counter(accepted), Counter(accepted) - Counter(sent)
    if missing or extra:
        raise Mismatch(f"{what}: {len(sent):,} messages sent, the server accepted {len(accepted):,}: "
                       f"{sum(missing.values()):,} missing, {sum(extra.values()):,} not sent or accepted twice")


def ledger_sent(bench: Bench, ids: list[int]) -> dict[int, str | None]:
    """The deliveries among ``ids`` the ledger says sent: delivery id -> the provider's id recorded
    (for email, the Message-ID the server was given)."""
    from sqlalchemy import select

    from models.delivery import Delivery, DeliveryState

    sent: dict[int, str | None] = {}
    with bench.runtime.sessions() as session:
        for start in range(0, len(ids), 10_000):
            sent.update(session.execute(
                select(Delivery.id, Delivery.provider_message_id)
                .where(Delivery.id.in_(ids[start:start + 10_000]), Delivery.state == DeliveryState.SENT)).all())
    return sent


def _in_threads(work, shares: list[list]) -> None:
    errors: list[BaseException] = []

    def run(share):
        try:
            work(share)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def floor_smtp(server: ProviderProcess, messages: list[tuple[str, list[str], bytes]], threads: int) -> None:
    """The bare loop: ``threads`` SMTP connections, each sending its share of the messages in turn."""
    def work(share):
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as connection:
            for mail_from, rcpt_tos, content in share:
                connection.sendmail(mail_from, rcpt_tos, content)

    _in_threads(work, [messages[i::threads] for i in range(threads)])


def floor_twilio(server: ProviderProcess, messages: list[dict[str, list[str]]], threads: int) -> None:
    """The bare loop: ``threads`` keep-alive HTTP connections posting the same message forms."""
    import base64
    import http.client
    from urllib.parse import urlencode

    from loyalty.standins.twilio_server import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN

    path = f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages.json"
    token = base64.b64encode(f"{DEFAULT_ACCOUNT_SID}:{DEFAULT_AUTH_TOKEN}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/x-www-form-urlencoded"}

    def work(share):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            for params in share:
                connection.request("POST", path, body=urlencode(params, doseq=True), headers=headers)
                answer = connection.getresponse()
                answer.read()
                if answer.status != 201:
                    raise RuntimeError(f"the local Twilio answered {answer.status}")
        finally:
            connection.close()

    _in_threads(work, [messages[i::threads] for i in range(threads)])


def team_inputs(bench: Bench, campaign, batches: list[tuple[datetime, list[int]]]) -> list[tuple]:
    """What the render-and-send loop needs, read as a team would (one query for the deliveries, one
    for their members, one for the balances): ``(at, delivery, member, balance)`` in id order."""
    from sqlalchemy import select

    from models import ledger
    from models.delivery import Delivery
    from models.member import Member

    inputs: list[tuple] = []
    with bench.runtime.sessions() as session:
        for at, ids in batches:
            deliveries = session.scalars(select(Delivery).where(Delivery.id.in_(ids)).order_by(Delivery.id)).all()
            member_ids = {d.member_id for d in deliveries}
            members = {m.id: m for m in session.scalars(select(Member).where(Member.id.in_(member_ids)))}
            balances = ledger.balances(session, member_ids)
            inputs.extend((at, d, members[d.member_id], balances.get(d.member_id, 0)) for d in deliveries)
    return inputs


def floor_render_send_smtp(bench: Bench, server: ProviderProcess, campaign, inputs: list[tuple], threads: int,
                           processes: int = PROCESSES) -> None:
    """The loop a team writes without us: render the same templates with the same libraries (the
    Jinja2 environment, Babel's filters), build the same message (the same headers and the two
    parts, with the standard library's ``EmailMessage``), send it (``smtplib``); the worker's
    concurrency (``processes`` forked processes of ``threads`` connections: rendering is CPU, and
    one process's threads would share one interpreter lock); no queue, no ledger, no claim, no
    re-check."""
    context = multiprocessing.get_context("fork")  # the children inherit the inputs and the renderer
    children = [context.Process(target=_render_send_process, args=(bench, server, campaign, inputs[i::processes], threads),
                                name="bench-team", daemon=True) for i in range(processes)]
    for child in children:
        child.start()
    for child in children:
        child.join()
    failed = [child.exitcode for child in children if child.exitcode != 0]
    if failed:
        raise RuntimeError(f"the render-and-send loop's processes exited with {failed}")


def _render_send_process(bench: Bench, server: ProviderProcess, campaign, inputs: list[tuple], threads: int) -> None:
    from email.message import EmailMessage
    from email.utils import format_datetime

    from core.tokens import unsubscribe_url
    from workers.channels.email import message_id_for

    runtime = bench.runtime
    settings, renderer = runtime.settings, runtime.renderer
    sender = settings.email_from
    reward = getattr(campaign, "reward", None)
    expires_after = timedelta(days=(reward.expires_after_days if reward else None) or 365)

    def work(share):
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as connection:
            for at, delivery, member, balance in share:
                link = unsubscribe_url(settings.public_base_url, settings.secret, member.external_id, "email")
                context = {
                    "member": {"first_name": member.first_name or "", "last_name": member.last_name or "",
                               "external_id": member.external_id, "tier": member.tier, "points_balance": balance},
                    "reward": {"points": delivery.reward_points, "expires_on": (at + expires_after).date()},
                    "campaign": {"id": campaign.id, "name": campaign.name},
                    "unsubscribe_url": link,
                }
                locale = renderer.choose_locale(campaign, member.locale)
                rendered = renderer.render_email(campaign, locale, context, member_locale=member.locale)
                message = EmailMessage()
                message["From"] = sender
                message["To"] = member.email
                message["Subject"] = rendered.subject
                message["Date"] = format_datetime(at)
                message["Message-ID"] = message_id_for(delivery.occurrence_key, sender)
                message["List-Unsubscribe"] = f"<{link}>"
                message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
                message["Auto-Submitted"] = "auto-generated"
                message.set_content(rendered.text)
                message.add_alternative(rendered.html, subtype="html")
                connection.send_message(message)

    _in_threads(work, [inputs[i::threads] for i in range(threads)])


def transactions(bench: Bench) -> tuple[int, int]:
    """The benchmark database's committed and rolled-back transactions so far (``pg_stat_database``;
    the statistics are flushed by each backend at most once a second, so read after a pause)."""
    from sqlalchemy import text

    with bench.runtime.engine.connect() as connection:
        connection.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
        row = connection.execute(text("SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = :name"),
                                 {"name": bench.database}).one()
    return int(row[0]), int(row[1])


def statements_in_process(bench: Bench, campaign, server: ProviderProcess, kind_env: dict[str, str],
                          batches: list[tuple[datetime, list[int]]]) -> dict:
    """The product's ``deliver`` run in this process on a few deliveries, its engine's statements
    and commits counted (SQLAlchemy events): what a message costs PostgreSQL, by the same code the
    worker runs. Its own runtime, pointed at the same server."""
    from sqlalchemy import event

    from core.settings import load_settings
    from workers.delivery import deliver
    from workers.runtime import build_runtime

    runtime = build_runtime(load_settings(worker_env(bench.database, **kind_env)), pool_size=2)
    counts = {"statements": 0, "commits": 0, "reads": 0}

    def statement(conn, cursor, sql, parameters, context, executemany):
        counts["statements"] += 1
        if sql.lstrip().upper().startswith("SELECT"):
            counts["reads"] += 1

    def commit(conn):
        counts["commits"] += 1

    event.listen(runtime.engine, "before_cursor_execute", statement)
    event.listen(runtime.engine, "commit", commit)
    base, messages = server.count, 0
    try:
        for at, ids in batches:
            report = deliver(runtime, ids, as_of=at)
            messages += report.outcomes.get("sent", 0)
        if server.kind == "smtp":
            compare_accepted("the in-process sample", server.accepted_ids(base),
                             ledger_sent(bench, [i for _, ids in batches for i in ids]))
    finally:
        event.remove(runtime.engine, "before_cursor_execute", statement)
        event.remove(runtime.engine, "commit", commit)
        runtime.close()
    if messages:  # the Twilio stand-in's count is read by a watcher thread: give it a moment
        deadline = time.monotonic() + 30
        while server.count - base < messages and time.monotonic() < deadline:
            time.sleep(0.01)
    if server.count - base != messages or not messages:
        raise Mismatch(f"the in-process sample sent {messages} messages and the server accepted {server.count - base}")
    return {"sample_messages": messages, **{f"sample_{name}_per_message": value / messages for name, value in counts.items()}}


SMS_CAMPAIGN = """\
id: bench_sms
kind: birthday
name: Birthday text (benchmark)
send_time: "09:00"
channels: [sms]
locales: [en]
frequency_cap_exempt: true
reward:
  points_by_tier: {bronze: 100, silver: 250, gold: 500}
  expires_after_days: 365
messages:
  sms:
    text: bench_sms/sms.txt.j2
    max_segments: 2
"""
SMS_TEXT = "Happy birthday {{ member.first_name }}! {{ reward.points }} points are waiting for you. Reply STOP to opt out."


def sms_campaign_dirs(root: Path) -> tuple[Path, Path]:
    """A definitions folder with one SMS birthday campaign (the shipped ones send email), and its template."""
    campaigns, templates = root / "campaigns", root / "templates"
    (templates / "en" / "bench_sms").mkdir(parents=True, exist_ok=True)
    campaigns.mkdir(parents=True, exist_ok=True)
    (campaigns / "bench_sms.yaml").write_text(SMS_CAMPAIGN)
    (templates / "en" / "bench_sms" / "sms.txt.j2").write_text(SMS_TEXT)
    return campaigns, templates


@dataclass
class ChannelRun:
    ours_rate: float
    floor_rate: float
    messages: int
    details: dict
    memory: dict
    team_rate: float | None = None  # the render-and-send loop (email)
    database: dict | None = None


SAMPLE = 200  # deliveries sent in this process to count statements and commits
SMS_WARM_UP = 100  # texts the worker delivers untimed first (the email run's worker delivers its tick first)


def run_channel(bench: Bench, kind: str, campaign, wanted: int, log_path: Path, *, extra_env: dict[str, str],
                worker_tick_first: bool = False, warm_up: int = 0) -> ChannelRun:
    """Ours against the floor on one channel: plan, enqueue, time to the last accepted message.

    ``warm_up``: that many deliveries (a few days) planned and delivered through the worker first,
    untimed, as the email run's tick does (the SMS campaign's tick cannot: some of its texts wait
    for the end of their members' quiet hours)."""
    from workers.actors import enqueue_deliveries

    namespace = f"loyalty-bench-{secrets.token_hex(4)}"
    with bench.runtime.engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE deliveries CASCADE")
    server = ProviderProcess(kind)
    env = dict(extra_env)
    if kind == "smtp":
        env["SMTP_URL"] = f"smtp://127.0.0.1:{server.port}"
    else:
        from loyalty.standins.twilio_server import (
            DEFAULT_ACCOUNT_SID,
            DEFAULT_AUTH_TOKEN,
            DEFAULT_MESSAGING_SERVICE_SID,
        )

        env.update({
            "TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID, "TWILIO_AUTH_TOKEN": DEFAULT_AUTH_TOKEN,
            "TWILIO_MESSAGING_SERVICE_SID": DEFAULT_MESSAGING_SERVICE_SID, "TWILIO_API_BASE_URL": server.url,
            "TWILIO_MAX_MESSAGES_PER_SECOND": str(TWILIO_RATE), "TWILIO_TIMEOUT_SECONDS": "30",
        })
    worker = sampler = None
    tick = None
    try:
        _, settings = _broker(bench, namespace)
        worker = start_worker(bench.database, namespace, log_path, **env)
        sampler = TreeSampler(worker.pid).start()
        worker.wait_ready(PROCESSES)
        if worker_tick_first:
            tick = worker_tick(bench, campaign)
            tick["accepted"] = server.count
        if warm_up:
            tick = worker_warm_up(bench, campaign, warm_up, server, settings.delivery_batch_size, worker)

        batches = plan_for_delivery(bench, campaign, wanted)
        ids = [i for _, day_ids in batches for i in day_ids]
        if len(ids) < wanted:
            raise RuntimeError(f"only {len(ids)} deliveries of {campaign.id} could be planned for the delivery benchmark")

        # Ours: enqueue as the actor does, time until the server has accepted them all.
        server.keep(True)
        base = server.count
        xact_before = transactions(bench)
        cpu_before = sampler.cpu_seconds()
        started = time.monotonic()
        for at, day_ids in batches:
            enqueue_deliveries(day_ids, as_of=at, batch_size=settings.delivery_batch_size)
        enqueue_seconds = time.monotonic() - started
        accepted = _wait_count(server, base + len(ids), bench, ids, timeout=3600, worker=worker) - base
        ours_seconds = server.last_accepted - started
        worker_cpu = sampler.cpu_seconds() - cpu_before
        states = _final_states(bench, ids)  # the worker records an outcome after the server's answer
        memory = sampler.stop()
        sampler = None
        kept = server.take_kept()
        server.keep(False)
        compared = None
        if kind == "smtp":  # each message the ledger says sent, accepted by the server once, and no other
            compared = compare_accepted(f"delivery {kind}", server.accepted_ids(base), ledger_sent(bench, ids))
        if not accepted or states.get("sent", 0) != accepted or len(kept) != accepted:
            raise Mismatch(f"delivery {kind}: the server accepted {accepted} messages, the ledger says {states}")

        # The floor: the same messages, the same server, the same concurrency, nothing else (the
        # worker stopped first). Its fastest of FLOOR_RUNS: one run moved between 600 and 2,100
        # messages a second on the same machine, and the floor is what the bare stack *can* do.
        code = worker.stop()
        worker = None
        if code not in (0, None, -signal.SIGTERM):
            print(f"(the worker exited with {code}; its log is {log_path})", file=sys.stderr)
        time.sleep(1.2)  # the statistics of the worker's last transactions reach pg_stat_database
        xact_after = transactions(bench)
        database = {"commits_per_message": (xact_after[0] - xact_before[0]) / max(accepted, 1),
                    "rollbacks_per_message": (xact_after[1] - xact_before[1]) / max(accepted, 1),
                    "measured_by": "pg_stat_database of the benchmark database over our run (the worker's "
                                   "transactions and the benchmark's few progress reads)"}
        floor_runs = []
        for _ in range(FLOOR_RUNS):
            base = server.count
            started = time.monotonic()
            (floor_smtp if kind == "smtp" else floor_twilio)(server, kept, PROCESSES * THREADS)
            _wait_count(server, base + len(kept), bench, [], timeout=900)
            floor_runs.append(server.last_accepted - started)
            if kind == "smtp":
                _same_messages("the wire floor", server.accepted_ids(base), [message_id_of(c) for _, _, c in kept])
        floor_seconds = min(floor_runs)

        # The second floor: the loop a team writes without us (email: render, build, send), the
        # same deliveries, the same concurrency; the fastest of FLOOR_RUNS, its read included.
        team_runs = []
        if kind == "smtp":
            from workers.channels.email import message_id_for

            for _ in range(FLOOR_RUNS):
                base = server.count
                started = time.monotonic()
                inputs = team_inputs(bench, campaign, batches)
                floor_render_send_smtp(bench, server, campaign, inputs, THREADS)
                _wait_count(server, base + len(inputs), bench, [], timeout=900)
                team_runs.append((server.last_accepted - started, len(inputs)))
                _same_messages("the render-and-send loop", server.accepted_ids(base),
                               [message_id_for(d.occurrence_key, bench.runtime.settings.email_from)
                                for _, d, _, _ in inputs])

        # What a message costs PostgreSQL, counted on the same code in this process (a small sample).
        sample = plan_for_delivery(bench, campaign, SAMPLE)
        sample_ids = [i for _, day_ids in sample for i in day_ids]
        xact_sample = transactions(bench)
        database.update(statements_in_process(bench, campaign, server, env, sample))
        time.sleep(1.2)
        xact_done = transactions(bench)
        database["sample_server_commits_per_message"] = (xact_done[0] - xact_sample[0]) / max(len(sample_ids), 1)
    finally:
        if sampler is not None:
            sampler.stop()
        if worker is not None:
            code = worker.stop()
            if code not in (0, None, -signal.SIGTERM):
                print(f"(the worker exited with {code}; its log is {log_path})", file=sys.stderr)
        server.stop()
        _clean_redis(namespace)
    team = min(team_runs) if team_runs else None
    return ChannelRun(
        ours_rate=accepted / ours_seconds, floor_rate=len(kept) / floor_seconds, messages=accepted, memory=memory,
        team_rate=team[1] / team[0] if team else None, database=database,
        details={"team_runs_s": [t for t, _ in team_runs], "database": database, "accepted_compared": compared,"messages": accepted, "ours_s": ours_seconds, "floor_s": floor_seconds, "enqueue_s": enqueue_seconds,
                 "floor_runs_s": floor_runs, "worker_cpu_s": worker_cpu, "worker_cpu_ms_per_message": worker_cpu * 1000 / max(accepted, 1),
                 "worker_tick": tick, "states": states, "command": worker_command(), "log": str(log_path)},
    )


TWILIO_RATE = 10_000  # messages a second the product paces itself to: above what the local server takes


def _failed(item: str, exc: Exception) -> Row:
    status = "MISMATCH" if isinstance(exc, Mismatch) else "ERROR"
    return Row("c. delivery", item, status=status, target=f"≥ {TARGET}×", note=f"{type(exc).__name__}: {exc}"[:600])


def _row(item: str, run: ChannelRun, note: str) -> Row:
    """Against the wire (the bare loop of pre-rendered bytes); the render-and-send loop's ratio,
    the worker's CPU and PostgreSQL's statements and commits a message in the note."""
    value = run.ours_rate / run.floor_rate
    team = ""
    if run.team_rate:
        team = (f"; render-and-send loop {run.team_rate:,.0f} msg/s, ours {run.ours_rate / run.team_rate:.2f}× it "
                f"(target ≥ {TEAM_TARGET}×)")
    database = run.database or {}
    sql = ""
    if "sample_statements_per_message" in database:
        sql = (f"; PostgreSQL a message: {database['commits_per_message']:.2f} commits in the run (pg_stat_database, "
               f"autovacuum included); in {database['sample_messages']} sent in-process: "
               f"{database['sample_statements_per_message']:.2f} statements ({database['sample_reads_per_message']:.2f} "
               f"reads), {database['sample_commits_per_message']:.2f} commits")
    return Row(
        "c. delivery", item, ours=run.ours_rate, floor=run.floor_rate, unit="msg/s", ratio=value,
        target=f"≥ {TARGET}× wire", met=value >= TARGET,
        note=(f"{run.messages:,} messages; {PROCESSES}×{THREADS} on Redis vs {PROCESSES * THREADS} bare "
              f"{note}; {run.details['worker_cpu_ms_per_message']:.2f} ms of worker CPU a message{team}{sql}"),
        details=run.details,
    )


def measure(bench: Bench, results_dir: Path, *, deliveries: int | None = None) -> tuple[list[Row], dict]:
    """Rows for (c), and the memory figures for (d) at this size (from the email run)."""
    rows: list[Row] = []
    memory: dict = {}
    campaigns = bench.campaigns_of_kind("birthday")
    if not campaigns:
        rows.append(Row("c. delivery", "email (SMTP)", status="no campaign", target=f"≥ {TARGET}×"))
    else:
        wanted = deliveries or (2_000 if bench.quick else 20_000)
        try:
            run = run_channel(bench, "smtp", campaigns[0], wanted, results_dir / f"worker-smtp-{bench.database}.log",
                              extra_env={}, worker_tick_first=True)
        except Exception as exc:  # noqa: BLE001 - the SMS run still gets its turn
            rows.append(_failed("email (SMTP)", exc))
        else:
            rows.append(_row("email (SMTP)", run, "SMTP connections"))
            memory = run.memory
            memory["worker_tick"] = run.details["worker_tick"]

    unavailable = twilio_missing()
    if unavailable:
        rows.append(Row("c. delivery", "sms (Twilio)", status="not available yet", target=f"≥ {TARGET}×", note=unavailable))
        return rows, memory
    from campaigns.loader import load_campaigns

    root = Path(tempfile.mkdtemp(prefix="loyalty-bench-sms-"))
    try:
        campaigns_dir, templates_dir = sms_campaign_dirs(root)
        loaded = load_campaigns(campaigns_dir)
        if loaded.errors:
            raise RuntimeError(f"the benchmark's SMS campaign does not load: {loaded.errors[0]}")
        wanted = max((deliveries or (2_000 if bench.quick else 20_000)) // 4, 500)
        try:
            run = run_channel(bench, "twilio", loaded.campaigns["bench_sms"], wanted,
                              results_dir / f"worker-twilio-{bench.members}.log",
                              extra_env={"LOYALTY_CAMPAIGNS_DIR": str(campaigns_dir),
                                         "LOYALTY_TEMPLATES_DIR": str(templates_dir)},
                              warm_up=SMS_WARM_UP)
        except Exception as exc:  # noqa: BLE001
            rows.append(_failed("sms (Twilio)", exc))
        else:
            rows.append(_row("sms (Twilio)", run, "HTTP connections"))
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return rows, memory


def twilio_missing() -> str | None:
    """Why the Twilio variant cannot run, or None when it can."""
    try:
        import loyalty.standins.twilio_server  # noqa: F401
    except Exception:  # noqa: BLE001
        return "no local Twilio server (loyalty/standins/twilio_server.py) yet"
    try:
        from workers.channels.sms import TwilioSmsChannel  # noqa: F401
    except Exception:  # noqa: BLE001
        return "the local Twilio server exists; no Twilio SMS channel in workers/channels/ yet"
    return None
