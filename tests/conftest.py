"""Shared fixtures: a real PostgreSQL database, a real Redis namespace and a real SMTP server.

``LOYALTY_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432``) and
``LOYALTY_TEST_REDIS`` (default ``redis://127.0.0.1:6379/0``) say where they are. Nothing is
mocked: a test that needs a service and cannot reach it fails, with the reason.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from core.settings import load_settings
from models.base import Base
from models.db import make_engine, make_sessionmaker, migrate
from models.personal_data import KeyRing, install
from tests.support.smtp import SmtpSink

PG_ROOT = os.environ.get("LOYALTY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("LOYALTY_TEST_REDIS", "redis://127.0.0.1:6379/0")
REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET = "test-secret-0123456789abcdef"
TEST_SENDER = "Loyalty Club <club@example.com>"
PUBLIC_URL = "https://club.example.com"

# The keys our processes derive from LOYALTY_SECRET=TEST_SECRET, so the tests read what they write.
TEST_KEYS = KeyRing.from_settings(TEST_SECRET, None, None)
install(TEST_KEYS)


@pytest.fixture(autouse=True)
def with_test_keys():
    """Every test starts with the test keys: a runtime built with another secret (the benchmark's,
    the demo's) installs its own keys in this process, and members a later test writes in-process
    must be readable by the ``loyalty`` subprocesses it starts."""
    install(TEST_KEYS)


def _pg_database_url(name: str) -> str:
    return f"{PG_ROOT}/{name}"


@pytest.fixture(scope="session")
def pg_database() -> str:
    """A fresh, migrated PostgreSQL database for this test session; dropped at the end."""
    name = f"loyalty_test_{os.getpid()}"
    with psycopg.connect(_pg_database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _pg_database_url(name).replace("postgresql://", "postgresql+psycopg://")
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    yield url
    with psycopg.connect(_pg_database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


#: What empties the test database between tests, as ``TRUNCATE ... RESTART IDENTITY`` would: every
#: table's rows deleted, children before parents, and every sequence back to 1. On a test's few rows
#: this takes a few milliseconds where TRUNCATE takes 50-60 (it makes new files for every table and
#: index), about 50 s of the suite.
EMPTY_EVERY_TABLE = "; ".join(
    [f'DELETE FROM "{table.name}"' for table in reversed(Base.metadata.sorted_tables)]
    + ["SELECT setval(c.oid, 1, false) FROM pg_class c WHERE c.relkind = 'S' "
       "AND c.relnamespace = 'public'::regnamespace"])


@pytest.fixture
def pg_engine(pg_database):
    """The session's database, emptied before the test (committed data is visible to workers)."""
    engine = make_engine(pg_database)
    try:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '20s'"))
            conn.execute(text(EMPTY_EVERY_TABLE))
    except OperationalError:
        engine.dispose()
        pytest.fail("Could not empty the test database: an earlier test left a transaction open "
                    f"(close its session): {_open_transactions(pg_database)}", pytrace=False)
    yield engine
    engine.dispose()


def _open_transactions(database_url: str) -> list[str]:
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(_pg_database_url("postgres"), autocommit=True) as conn:
        rows = conn.execute("SELECT state, left(query, 200) FROM pg_stat_activity "
                            "WHERE datname = %s AND state LIKE 'idle in transaction%%'", (name,)).fetchall()
    return [f"{state}: {query}" for state, query in rows]


@pytest.fixture
def sqlite_session():
    """A session on an empty in-memory SQLite database with every table (the embedded default's
    dialect, for what must agree on both databases)."""
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        yield session
    engine.dispose()


@pytest.fixture
def pg_sessions(pg_engine):
    return make_sessionmaker(pg_engine)


@pytest.fixture
def smtp_sink():
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def redis_namespace():
    """A queue namespace of this test's own in the real Redis; its keys are deleted afterwards."""
    import redis

    namespace = f"loyalty-test-{secrets.token_hex(4)}"
    yield namespace
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{namespace}*"))
    if keys:
        client.delete(*keys)
    client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def env(tmp_path, pg_database, smtp_sink):
    """Environment variables for a process of ours against the test services."""
    return {
        "DATABASE_URL": pg_database,
        "SMTP_URL": f"smtp://127.0.0.1:{smtp_sink.port}",
        "LOYALTY_SECRET": TEST_SECRET,
        "LOYALTY_HOME": str(tmp_path / "home"),
        "LOYALTY_PUBLIC_URL": PUBLIC_URL,
        "LOYALTY_EMAIL_FROM": TEST_SENDER,
    }


@pytest.fixture
def settings(env):
    return load_settings(env)


@pytest.fixture
def runtime(settings, pg_engine):
    """The product's runtime on the test database and SMTP sink, installed for actors too."""
    from workers.runtime import build_runtime, set_runtime

    built = build_runtime(settings)
    set_runtime(built)
    yield built
    set_runtime(None)
    built.close()


#: Tests that start real processes or servers of their own, or work through large data, marked
#: ``slow``: `make test` and CI run them, `make check` (a developer's loop, under two minutes) leaves
#: them out. Every chaos test; these integration modules whole; and these tests (by function name).
SLOW = "slow"
SLOW_MODULES = {
    "test_bad_input",  # real `python -m loyalty` processes: exit codes, no traceback, a clock's start
    "test_benchmark_intake", "test_benchmark_smoke",  # a benchmark database of 2,000 members
    "test_demo_shop",  # the shop demo: a store, its webhooks, twice
    "test_deploy",  # a fresh virtualenv from requirements.txt; the Procfile's processes refusing to start
    "test_email_layout_in_chromium", "test_pages_in_chromium",  # every email, the report and the pages in Chromium
    "test_procfile",  # the Procfile under honcho
    "test_queue_and_processes",  # worker and `loyalty run` processes at once
    "test_web_limits",  # a real `loyalty web` process
}
SLOW_TESTS = {
    "test_the_demo_with_the_local_providers_counts_what_twilio_and_mailchimp_accepted",
    "test_the_demo_runs_every_kind_on_the_embedded_default_with_no_server",
    "test_every_birthday_the_demo_seeds_is_accounted_for",
    "test_a_whole_day_at_debug_logs_no_email_address_or_phone_number",  # a worker process, 300 members
    "test_a_backfill_killed_halfway_resumes_and_ends_with_the_same_ledger",  # a process killed
    "test_a_worker_killed_while_the_shop_makes_the_code_ends_with_one_code",  # a process killed
    "test_a_bulk_sync_of_10000_members_makes_at_most_20_calls_then_only_sends_changes",
    "test_1000_events_with_20_percent_errors_and_5_percent_time_outs_each_posted_once_or_with_a_reason",
    "test_1000_sms_with_20_percent_errors_and_5_percent_time_outs_each_accepted_once_or_with_a_reason",
    "test_the_backfill_says_in_one_sentence_what_stops_it",  # an unreachable shop: 15 s of the client's retries
    # the slowest of the rest (3-10 s each on idle cores), left to `make test` to keep `make check` under two minutes:
    "test_tier_tags_follow_an_upgrade_in_one_sync_in_the_fewest_requests_and_nothing_unchanged_is_sent",  # 60 customers
    "test_the_holdout_is_the_documented_stable_hash_and_the_same_on_every_run",  # 200 members, an order each
    "test_fifty_requests_at_once_for_a_member_holding_ten_make_ten_codes",  # 50 HTTP clients at once
    "test_the_report_on_the_embedded_default",  # the demo first
}


def pytest_configure(config):
    config.addinivalue_line("markers", f"{SLOW}: real processes, servers or large data; left out of `make check`, "
                                       "run by `make test` and CI")


def pytest_itemcollected(item):
    if item.path.parent.name == "chaos" or item.path.stem in SLOW_MODULES or (
            getattr(item, "originalname", item.name) in SLOW_TESTS):
        item.add_marker(SLOW)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: without the plugin (-p no:xdist) it is not called
def pytest_xdist_make_scheduler(config, log):
    """On several processes (``-n 2``), the chaos tests run one after another on one of them (they
    time real processes), the other tests one by one wherever a process is free. (pytest-xdist's
    own ``xdist_group`` does not group under pytest 9: it renames node ids, which pytest 9 ignores.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ChaosApart(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "chaos" if nodeid.startswith("tests/chaos/") else nodeid

    return ChaosApart(config, log)


#: The chaos scenarios' tally lines (tests/chaos/conftest.py), repeated at the end of the run; they come
#: with the tests' reports, so a run on several processes (pytest-xdist) shows them too.
CHAOS_TALLIES: list[str] = []


def pytest_runtest_logreport(report):
    CHAOS_TALLIES.extend(value for name, value in report.user_properties if name == "chaos tally"
                         and report.when == "teardown")


def pytest_terminal_summary(terminalreporter):
    if CHAOS_TALLIES:
        terminalreporter.section("chaos tallies")
        for line in CHAOS_TALLIES:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session, exitstatus):
    """In CI a skipped test is a failed test: nothing may quietly not run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and os.environ.get("CI") and session.exitstatus == 0:
        reporter.write_line(f"{skipped} test(s) were skipped: in CI that is a failure.", red=True)
        session.exitstatus = 1
