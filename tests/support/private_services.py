"""Private PostgreSQL and Redis servers, for the tests that restart, kill or flush them.

The shared servers on 5432 and 6379 are used by every other test (and by other people's test runs
at the same time): a chaos test never touches them. It starts its own instead, on a free port:

- :class:`PrivateRedis`: ``redis-server`` as a child process, with nothing persisted (``--save ""
  --appendonly no``), so :meth:`PrivateRedis.restart` (SIGKILL, then a new server on the same port)
  is also a flush: every queued message is gone.
- :class:`PrivatePostgres`: a throw-away cluster (``initdb``) in a temporary folder owned by the
  ``postgres`` OS user (PostgreSQL refuses to run as root), started, stopped and restarted with
  ``pg_ctl`` as that user.

Both are also pytest fixtures (``private_redis``, ``private_postgres``); ``tests/chaos/conftest.py``
imports them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
import redis

from models.db import make_engine, migrate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout:.0f} s")


class PrivateRedis:
    """A redis-server of this test's own on 127.0.0.1:<port>, in memory only."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.port = port or free_port()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError("redis-server is not installed; the chaos tests need it (apt install redis-server).")
        self.starts += 1
        with open(self.workdir / f"redis-{self.starts}.log", "w") as log:
            self.process = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--daemonize", "no", "--dir", str(self.workdir)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        _wait(self.ping, 15, f"the private redis-server on port {self.port} did not answer")
        return self

    def ping(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"redis-server exited with {self.process.returncode}: "
                                 + (self.workdir / f"redis-{self.starts}.log").read_text()[-2000:])
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: the server is gone at once, and with it everything it held."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Killed, then a fresh, empty server on the same port (a flush as well as a restart)."""
        self.kill()
        time.sleep(down_seconds)
        self.start()

    def stop(self) -> None:
        self.kill()


class PrivatePostgres:
    """A PostgreSQL cluster of this test's own, run by the ``postgres`` OS user."""

    USER = "postgres"

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.bin = self._bin_dir()
        # Not under pytest's tmp_path: its parents are private to root, and the server runs as postgres.
        self.root = Path(tempfile.mkdtemp(prefix="loyalty-chaos-pg-"))
        self.data = self.root / "data"
        entry = pwd.getpwnam(self.USER)
        os.chown(self.root, entry.pw_uid, entry.pw_gid)

    @staticmethod
    def _bin_dir() -> Path:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise AssertionError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: install postgresql")
        return Path(found[-1]).parent

    def _as_postgres(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        command = ["runuser", "-u", self.USER, "--", *args] if os.geteuid() == 0 else list(args)
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.root, check=False)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done

    @property
    def root_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> PrivatePostgres:
        self._as_postgres(str(self.bin / "initdb"), "-A", "trust", "-U", self.USER, "-D", str(self.data),
                          "--no-sync", "-E", "UTF8", "--locale", "C")
        return self

    def _ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
                          "-o", options, "-w", "-t", "60", action, *extra)

    def start(self) -> None:
        self._ctl("start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart -m fast``: every connection is cut, the server is back a moment later."""
        self._ctl("restart", "-m", mode)

    def accepting(self) -> bool:
        try:
            with psycopg.connect(f"{self.root_url}/postgres", connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    def create_database(self, name: str) -> str:
        """A new database, migrated to the newest revision; returns its SQLAlchemy URL."""
        with psycopg.connect(f"{self.root_url}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = self.url(name)
        engine = make_engine(url)
        try:
            migrate(engine)
        finally:
            engine.dispose()
        return url

    def destroy(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server on a free port, for this test alone; killed afterwards."""
    server = PrivateRedis(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def private_postgres():
    """A PostgreSQL cluster on a free port, for this module alone; removed afterwards."""
    server = PrivatePostgres().init()
    server.start()
    yield server
    server.destroy()
