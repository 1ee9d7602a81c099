"""Alembic environment: uses the connection `matrix.migrations.upgrade` passes in, or (for the
alembic command line) `sqlalchemy.url` / `$DAYONE_DB` / the default store."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from matrix.store import Base, default_url

config = context.config


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite alters tables by copy-and-move; batch mode does that for us.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or default_url())
    with engine.begin() as conn:
        run(conn)
    engine.dispose()
