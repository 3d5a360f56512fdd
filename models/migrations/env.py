"""Alembic environment: the engine is handed in by ``models.db.migrate`` (never read from a file)."""

from alembic import context

import models  # noqa: F401  (registers every table on Base.metadata)
from models.base import Base

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
