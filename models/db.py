"""Engines, sessions and migrations.

PostgreSQL sessions run with JIT off (it adds 10-200 ms to the small indexed queries the worker
makes) and ``pool_pre_ping`` so a worker survives a database restart without a restart of its own.
SQLite (the embedded default) runs in WAL mode with a busy timeout, so the CLI and an in-process
worker can share the file. The sqlite3 driver opens a transaction only before an INSERT, UPDATE or
DELETE, so a SAVEPOINT issued first would itself become the transaction and its RELEASE would commit
(an import's ``--dry-run`` would write its rows): a savepoint outside a transaction begins one first.

Alembic (about 30 ms of imports, Mako included) is imported by the functions that read or change
the schema, not with the models: ``loyalty validate`` and the clock never need it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import structlog
from sqlalchemy import Connection, CursorResult, Engine, Result, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.errors import LoyaltyError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
log = structlog.get_logger("loyalty.db")


def make_engine(database_url: str, *, pool_size: int = 5) -> Engine:
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(database_url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no cover - trivial
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "savepoint")
        def _begin_before_savepoint(connection, _name):
            dbapi_connection = connection.connection.dbapi_connection
            if not dbapi_connection.in_transaction:
                dbapi_connection.execute("BEGIN")  # ended by the driver's own COMMIT or ROLLBACK

        return engine
    return create_engine(
        database_url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={"options": "-c jit=off", "connect_timeout": 10},
    )


class SchemaNotReadyError(LoyaltyError):
    """The database's schema is missing or older than this code."""


def engine_for(settings, *, pool_size: int = 5, check_keys: bool = True) -> Engine:
    """The engine for ``settings``, with the personal-data keys installed for this process, once the
    database is known to be migrated and its stored members readable with these keys (see
    :func:`check_database`; ``check_keys=False`` for ``loyalty keys rotate``, which repairs them)."""
    from models.personal_data import KeyRing, install

    ring = KeyRing.from_settings(settings.secret, settings.data_keys, settings.lookup_key)
    install(ring)
    engine = make_engine(settings.database_url, pool_size=pool_size)
    try:
        check_database(engine, ring if check_keys else None)
    except BaseException:
        engine.dispose()
        raise
    return engine


def check_database(engine: Engine, ring=None) -> None:
    """At a process's start: a PostgreSQL database never migrated, or older than this code, is one
    sentence saying to run ``loyalty migrate``; stored members that do not match ``ring`` are one
    sentence naming the variable that changed. The embedded SQLite file is migrated by the runtime
    itself, so only its keys are checked, once it is at the newest revision. A database that
    cannot be reached is left to the process's own handling (the worker waits for it)."""
    from models.personal_data import check_stored_members

    try:
        with engine.connect() as connection:
            current = _revision_of(connection)
            head = head_revision(engine)
            if engine.dialect.name != "sqlite":
                _refuse_an_old_schema(engine, current, head)
            elif current != head:
                return
            if ring is not None:
                check_stored_members(connection, ring)
    except OperationalError as exc:
        # info, not warning: the CLI then says "cannot be reached" once, in its own sentence
        log.info("database.unreachable_at_start", error=type(exc.orig or exc).__name__)


def _refuse_an_old_schema(engine: Engine, current: str | None, head: str | None) -> None:
    if current is None:
        raise SchemaNotReadyError(
            "The database at DATABASE_URL has no schema yet: run `loyalty migrate` "
            "(on Heroku the release phase runs it at each deploy)."
        )
    if current == head:
        return
    from alembic.util import CommandError

    scripts = _scripts(engine)
    try:
        behind = current in {rev.revision for rev in scripts.walk_revisions()}
    except CommandError:
        behind = False
    if behind:  # a revision newer than ours (a rollback of the code) is left alone
        raise SchemaNotReadyError(
            f"The database at DATABASE_URL is at schema revision {current}, older than this code's {head}: "
            "run `loyalty migrate`."
        )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on any error."""
    with factory() as session, session.begin():
        yield session


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return _revision_of(connection)


def _revision_of(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _scripts(engine: Engine) -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(engine))


def head_revision(engine: Engine) -> str | None:
    return _scripts(engine).get_current_head()


def migrate(engine: Engine) -> bool:
    """Bring the schema to the newest revision; returns True when something was applied."""
    if current_revision(engine) == head_revision(engine):
        return False
    from alembic import command

    command.upgrade(alembic_config(engine), "head")
    return True


@contextmanager
def only_one(engine: Engine, key: int) -> Iterator[bool]:
    """Whether this process holds the session-level PostgreSQL advisory lock ``key`` for the block
    (a job that must run once at a time: a sync, a poll); SQLite (one process) needs none."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    with engine.connect() as connection:
        ours = connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key})
        connection.commit()
        try:
            yield bool(ours)
        finally:
            if ours:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()


def rows_changed(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE changed. ``Session.execute`` is typed as returning a
    ``Result``; for a DML statement it is a ``CursorResult``, which carries ``rowcount``."""
    return cast(CursorResult[Any], result).rowcount or 0
