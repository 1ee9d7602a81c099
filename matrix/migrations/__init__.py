"""Alembic migrations of the store, run programmatically so they work from an installed package.

Developers make a new revision with:
    alembic -c matrix/migrations/alembic.ini revision --autogenerate -m "what changed"
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

HERE = Path(__file__).resolve().parent


def alembic_config() -> Config:
    config = Config()
    # configparser interpolation: a literal % in the path must be doubled.
    config.set_main_option("script_location", str(HERE).replace("%", "%%"))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, target: str = "head") -> None:
    """Bring the schema at `engine` to `target`; a store already there costs one read."""
    from matrix.store import WRITE_LOCK

    if target == "head" and current_revision(engine) == head_revision():
        return
    config = alembic_config()
    # One transaction holding the write lock: two processes opening a new store at once
    # migrate it once (the second waits, then finds it done).
    with engine.execution_options(**{WRITE_LOCK: True}).begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, target)
