"""The migrations build exactly the schema the models describe, on PostgreSQL and on SQLite."""

from __future__ import annotations

import os
import subprocess

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from models.base import Base
from models.db import alembic_config, head_revision, make_engine, migrate
from tests import cli
from tests.conftest import PG_ROOT


def _differences(engine) -> list:
    with engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)


def test_the_migrated_postgresql_schema_is_the_models_schema(pg_database):
    engine = make_engine(pg_database)  # the session's database, migrated by the fixture
    try:
        assert _differences(engine) == []
    finally:
        engine.dispose()


# SQLAlchemy cannot reflect an index on an expression from SQLite (ux_coupons_code, on lower(code)), so it
# says it skips it, and alembic that it leaves that index out of the comparison: all this test can check there.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index:sqlalchemy.exc.SAWarning")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based index:UserWarning")
def test_a_new_sqlite_file_migrates_to_head_and_matches_the_models(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'loyalty.db'}")
    try:
        assert migrate(engine) is True
        assert migrate(engine) is False  # a second run has nothing to do
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() == head_revision(engine)
        assert _differences(engine) == []
    finally:
        engine.dispose()


@pytest.fixture
def unmigrated_database():
    """A PostgreSQL database that exists but was never migrated, as `heroku addons:create` leaves it."""
    name = f"loyalty_unmigrated_{os.getpid()}"
    with psycopg.connect(f"{PG_ROOT}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG_ROOT}/{name}"
    with psycopg.connect(f"{PG_ROOT}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _loyalty(env: dict, *args: str) -> subprocess.CompletedProcess:
    """The command in this process (``tests/cli.py``), none of this process's settings but ``env``."""
    settings = [name for name in os.environ if name.startswith(("LOYALTY_", "DATABASE_URL", "REDIS_URL"))]
    return cli.loyalty(env, *args, drop=settings)


def test_a_database_never_migrated_says_run_loyalty_migrate_in_one_sentence_then_migrate_fixes_it(env, unmigrated_database):
    env = {**env, "DATABASE_URL": unmigrated_database}
    for args in (["preview", "birthday", "--at", "2027-02-28T10:00:00Z"], ["history", "--member", "M1"], ["report"]):
        refused = _loyalty(env, *args)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.strip() == (
            "error: The database at DATABASE_URL has no schema yet: run `loyalty migrate` "
            "(on Heroku the release phase runs it at each deploy)."), refused.stderr
        assert "SELECT" not in refused.stderr and refused.stdout == ""
    assert _loyalty(env, "migrate").returncode == 0
    assert _loyalty(env, "preview", "birthday", "--at", "2027-02-28T10:00:00Z").returncode == 0


def test_a_database_behind_the_code_says_run_loyalty_migrate(env, unmigrated_database):
    engine = make_engine(unmigrated_database.replace("postgresql://", "postgresql+psycopg://"))
    try:
        config = alembic_config(engine)
        previous = ScriptDirectory.from_config(config).get_revision(head_revision(engine)).down_revision
        command.upgrade(config, previous)
    finally:
        engine.dispose()
    refused = _loyalty({**env, "DATABASE_URL": unmigrated_database}, "report")
    assert refused.returncode == 2
    assert refused.stderr.strip().startswith(f"error: The database at DATABASE_URL is at schema revision {previous}, older")
    assert refused.stderr.strip().endswith("run `loyalty migrate`.")
