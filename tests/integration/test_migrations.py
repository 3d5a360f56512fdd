"""The migrations build exactly the schema the models describe, on PostgreSQL and on SQLite."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from models.base import Base
from models.db import head_revision, make_engine, migrate


def _differences(engine) -> list:
    with engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)


def test_the_migrated_postgresql_schema_is_the_models_schema(pg_database):
    engine = make_engine(pg_database)  # the session's database, migrated by the fixture
    try:
        assert _differences(engine) == []
    finally:
        engine.dispose()


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
