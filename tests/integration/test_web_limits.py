"""The web process under oversized requests: `loyalty web` as a real process, attacked while its
health check is watched. Bodies over 64 KB and forms over 200 fields get 413 before they are read,
and the event loop keeps answering."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import httpx
import pytest

from core.settings import load_settings
from loyalty.standins.http_server import BackgroundServer
from loyalty.web import create_app
from tests.conftest import REPO_ROOT, free_port
from tests.support.providers import provider_env

LIMIT = 64 * 1024


@pytest.fixture
def web(env, tmp_path, pg_engine):
    """`loyalty web` in a process of its own, with Twilio configured (so webhooks are checked)."""
    port = free_port()
    process_env = {**{k: v for k, v in os.environ.items() if not k.startswith(("LOYALTY_", "TWILIO_", "DATABASE_URL"))},
                   **provider_env(env, tmp_path, twilio=SimpleNamespace(url="http://127.0.0.1:9")), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "loyalty", "web", "--host", "127.0.0.1", "--port", str(port)],
                               cwd=REPO_ROOT, env=process_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "loyalty web did not start"
        time.sleep(0.1)
    yield SimpleNamespace(url=url, port=port, pid=process.pid)
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class HealthWatch:
    """Asks /healthz again and again in a thread; the slowest answer is what the attack cost others."""

    def __init__(self, url: str):
        self.url, self.slowest, self.answers, self.failures = url, 0.0, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    status = client.get(self.url + "/healthz").status_code
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                self.slowest = max(self.slowest, time.monotonic() - started)
                self.answers += 1
                if status != 200:
                    self.failures.append(status)
                time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.answers and time.monotonic() < deadline:  # watching before the attack starts
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(40)


def raw_post(port: int, path: str, headers: str, body_chunks, *, read_timeout: float = 10.0):
    """POST over a raw socket: send the headers, then the body chunks while the server still takes
    them. Returns (the bytes of the body sent, the start of the answer or the socket error)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=read_timeout)
    sent = 0
    try:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # the server answered and closed while we were still sending: what we want
            pass
        try:
            answer = sock.recv(4096).decode("latin-1")
        except OSError as exc:
            answer = repr(exc)
        return sent, answer
    finally:
        sock.close()


def form(fields: int) -> bytes:
    return "&".join(f"f{i}=x" for i in range(fields)).encode()


def test_a_twenty_thousand_field_form_is_refused_at_once_and_the_health_check_answers_meanwhile(web):
    large = form(20_000)  # 170 KB, the attack of the issue
    many = b"&".join([b"a="] * 5_000)  # 15 KB: small, but 5,000 fields
    assert len(large) > LIMIT > len(many)
    answers = []
    with HealthWatch(web.url) as health, httpx.Client(timeout=60) as client:
        for _ in range(10):
            for body in (large, many):
                answers.append(client.post(web.url + "/twilio/status", content=body, headers={
                    "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "bm9wZQ=="}).status_code)
        time.sleep(0.3)
    assert answers == [413] * 20
    assert health.answers >= 2 and not health.failures
    assert health.slowest < 2.0, f"/healthz took {health.slowest:.1f} s while the forms came in"


def test_a_21_mb_body_is_refused_without_being_read(web):
    declared = 21 * 1024 * 1024
    rss_before = rss_mb(web.pid)
    with HealthWatch(web.url) as health:
        # Its length said up front: answered 413 at once, before a byte of it is sent.
        started = time.monotonic()
        sent, answer = raw_post(web.port, "/twilio/status", f"Content-Type: application/x-www-form-urlencoded\r\n"
                                f"Content-Length: {declared}\r\n", [], read_timeout=5)
        assert answer.startswith("HTTP/1.1 413"), answer
        assert time.monotonic() - started < 2
        # No length given (chunked): cut off once 64 KB have arrived, not read to the end.
        chunk = b"f=" + b"x" * (64 * 1024 - 2)
        framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        sent, answer = raw_post(web.port, "/twilio/status", "Content-Type: application/x-www-form-urlencoded\r\n"
                                "Transfer-Encoding: chunked\r\n", (framed for _ in range(declared // len(chunk))))
        assert sent < declared / 2, f"the server took {sent} bytes of a body it should have refused"
        assert "413" in answer or "Error" in answer, answer  # the 413, or the connection it closed
        time.sleep(0.3)
    assert health.answers >= 2 and not health.failures
    assert health.slowest < 2.0, f"/healthz took {health.slowest:.1f} s while the body came in"
    assert rss_mb(web.pid) - rss_before < 10, "the process grew while refusing the body"
    assert httpx.get(web.url + "/healthz", timeout=2).json() == {"status": "ok"}


def test_the_health_check_waits_for_the_database_in_a_thread_not_on_the_event_loop(env, pg_engine):
    app = create_app(load_settings(env))
    engine = app.state.engine
    held = [engine.connect() for _ in range(2 * engine.pool.size())]  # the pool and its overflow: all taken
    server = BackgroundServer(app).start()
    health: list = []
    try:
        waiting = threading.Thread(target=lambda: health.append(httpx.get(server.url + "/healthz", timeout=40)))
        waiting.start()
        time.sleep(0.5)  # /healthz is now waiting for a connection
        started = time.monotonic()
        other = httpx.get(server.url + "/unsubscribe/not-a-token", timeout=40)
        elapsed = time.monotonic() - started
        time.sleep(1.5)
        for connection in held:
            connection.close()
        waiting.join(40)
    finally:
        for connection in held:
            connection.close()
        server.stop()
        engine.dispose()
    assert other.status_code == 404
    assert elapsed < 3.0, f"another request waited {elapsed:.1f} s behind the health check"
    assert health[0].json() == {"status": "ok"}
