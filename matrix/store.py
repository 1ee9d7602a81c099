"""The store: typed tables for model revisions, engine environments, runs and results.

SQLite (WAL) is the embedded default; any SQLAlchemy URL works (PostgreSQL for a deployment with
many writers). The schema is owned by the Alembic migrations in `matrix/migrations/`, which
`open_store` applies on open: nothing here calls `create_all`.

Times are stored as naive UTC (`utc_naive`): SQLite has no time zone type, and one convention on
every backend keeps equality (the idempotency key) and ordering exact.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Date,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    make_url,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from matrix.paths import dayone_home

# JSONB on PostgreSQL (indexable, compact), plain JSON text elsewhere.
JSONValue = JSON().with_variant(JSONB(), "postgresql")

# Named constraints, so migrations can refer to them on every backend.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utc_naive(value: dt.datetime) -> dt.datetime:
    """A datetime as naive UTC; a naive input is taken to be UTC already."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def utc_now() -> dt.datetime:
    return utc_naive(dt.datetime.now(dt.timezone.utc))


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSONValue, dt.datetime: DateTime(), dt.date: Date()}


class ModelRevision(Base):
    """A model (hub id or local name) at one revision (commit sha or content fingerprint)."""

    __tablename__ = "model_revisions"
    __table_args__ = (UniqueConstraint("model_id", "revision"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[str] = mapped_column(String(512))
    # "" when the record named no revision: NULLs never collide in a unique constraint.
    revision: Mapped[str] = mapped_column(String(128), default="")
    model_type: Mapped[str | None] = mapped_column(String(128))
    architecture: Mapped[str | None] = mapped_column(String(256))
    family: Mapped[str | None] = mapped_column(String(128))
    release_date: Mapped[dt.date | None]
    created: Mapped[dt.datetime] = mapped_column(default=utc_now)


class Environment(Base):
    """One engine at one version on one hardware target, with the packages that decide behaviour."""

    __tablename__ = "environments"

    id: Mapped[int] = mapped_column(primary_key=True)
    environment_id: Mapped[str] = mapped_column(String(128), unique=True)
    engine_name: Mapped[str] = mapped_column(String(128), index=True)
    engine_version: Mapped[str] = mapped_column(String(128))
    hardware: Mapped[str | None] = mapped_column(String(256))
    packages: Mapped[dict[str, Any]] = mapped_column(default=dict)
    image_digest: Mapped[str | None] = mapped_column(String(256))
    # The lock it was installed from (matrix/locks.py) and the resolutions that locked to it:
    # "release" (as on the release day, cut off at exclude_newer), "today", or both
    # ("release,today": nothing had moved).
    lock_id: Mapped[str | None] = mapped_column(String(64))
    resolutions: Mapped[str | None] = mapped_column(String(64))
    exclude_newer: Mapped[str | None] = mapped_column(String(32))
    created: Mapped[dt.datetime] = mapped_column(default=utc_now)


class Run(Base):
    """One nightly or manual sweep: when, where, which dayone."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(String(128), unique=True)
    started_at: Mapped[dt.datetime]
    dayone_version: Mapped[str | None] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(256))
    hardware: Mapped[str | None] = mapped_column(String(256))
    notes: Mapped[str | None] = mapped_column(Text)


class Result(Base):
    """One (model revision, environment, stage) outcome in one run: a contract record, stored."""

    __tablename__ = "results"
    __table_args__ = (
        # The natural key: the same record ingested twice is stored once. It also serves
        # "history of one cell and stage, by time" (model, engine, stage, started_at).
        UniqueConstraint(
            "model_revision_pk",
            "environment_pk",
            "stage",
            "started_at",
            "run_key",
            name="uq_results_natural_key",
        ),
        Index("ix_results_started_at", "started_at"),
        Index("ix_results_confirmed_at", "confirmed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_revision_pk: Mapped[int] = mapped_column(ForeignKey("model_revisions.id"))
    environment_pk: Mapped[int] = mapped_column(ForeignKey("environments.id"))
    run_pk: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)
    # The record's run_id, "" when it had none (part of the natural key; NULLs never collide).
    run_key: Mapped[str] = mapped_column(String(128), default="")
    stage: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    failure_class: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text)
    log_excerpt: Mapped[str | None] = mapped_column(Text)
    log_path: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Bulky stage output (token ids, logprobs), kept apart from `raw` so it is stored once.
    output: Mapped[dict[str, Any] | None]
    started_at: Mapped[dt.datetime]
    duration_s: Mapped[float] = mapped_column(Float)
    reproduce: Mapped[str | None] = mapped_column(Text)
    # A red's bare reproduction (matrix/confirm.py): True the engine alone fails the same way,
    # False it does not, None not checked; `confirmation` holds both lines and the bare log.
    confirmed: Mapped[bool | None]
    confirmation: Mapped[dict[str, Any] | None]
    confirmed_at: Mapped[dt.datetime | None]  # when a confirmation last changed this row
    # The record as ingested, minus `output`: `queries.results` gives it back unchanged.
    raw: Mapped[dict[str, Any]]
    ingested_at: Mapped[dt.datetime] = mapped_column(default=utc_now)


class CellLatest(Base):
    """The newest result per (model revision, environment, stage), kept up to date by ingest so
    the matrix and the planner never scan history."""

    __tablename__ = "cell_latest"
    __table_args__ = (Index("ix_cell_latest_cell", "model_id", "engine_name", "stage"),)

    model_revision_pk: Mapped[int] = mapped_column(ForeignKey("model_revisions.id"), primary_key=True)
    environment_pk: Mapped[int] = mapped_column(ForeignKey("environments.id"), primary_key=True)
    stage: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Copies of the model id and engine, so the matrix reads one table.
    model_id: Mapped[str] = mapped_column(String(512))
    engine_name: Mapped[str] = mapped_column(String(128))
    engine_version: Mapped[str] = mapped_column(String(128))
    result_pk: Mapped[int] = mapped_column(ForeignKey("results.id"))
    status: Mapped[str] = mapped_column(String(16))
    failure_class: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[dt.datetime]


class ResultLog(Base):
    """The end of a failing result's log (bounded), kept so today's rules can be applied again
    later (`dayone reclassify`) after the probe's own log file is gone."""

    __tablename__ = "result_logs"

    result_pk: Mapped[int] = mapped_column(ForeignKey("results.id"), primary_key=True)
    log_tail: Mapped[str] = mapped_column(Text)
    log_bytes: Mapped[int]  # the size of the whole log when its tail was kept
    stored_at: Mapped[dt.datetime] = mapped_column(default=utc_now)


class Reclassification(Base):
    """One change of a stored result's class by newer rules: what it was, what it became, when,
    under which rules."""

    __tablename__ = "reclassifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    result_pk: Mapped[int] = mapped_column(ForeignKey("results.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=utc_now)
    rules_version: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str | None] = mapped_column(String(128))
    old_status: Mapped[str] = mapped_column(String(16))
    new_status: Mapped[str] = mapped_column(String(16))
    old_class: Mapped[str | None] = mapped_column(String(64))
    new_class: Mapped[str] = mapped_column(String(64))
    old_message: Mapped[str | None] = mapped_column(Text)
    new_message: Mapped[str | None] = mapped_column(Text)


# Opening a store

# Execution option: on SQLite, start the transaction with BEGIN IMMEDIATE (take the write lock
# first). A deferred transaction that reads and then writes fails at once when another writer
# committed in between; an immediate one waits its turn instead.
WRITE_LOCK = "dayone_write_lock"


def default_url() -> str:
    """`$DAYONE_DB` if set, else the SQLite file `$DAYONE_HOME/dayone.db` (`~/.dayone`)."""
    return os.environ.get("DAYONE_DB") or f"sqlite:///{dayone_home() / 'dayone.db'}"


@dataclass(frozen=True)
class Store:
    engine: Engine
    session: sessionmaker[Session]

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A session in a write transaction (committed on success, rolled back on error)."""
        with Session(self.engine.execution_options(**{WRITE_LOCK: True})) as session:
            with session.begin():
                yield session

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_setup(engine: Engine, file_db: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy (the driver's implicit BEGIN only precedes
        # DML, which breaks savepoints and transactional DDL); see `_on_begin`.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        if file_db:
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the ingest
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(WRITE_LOCK)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def open_store(url: str | None = None, *, migrate: bool = True) -> Store:
    """Open (and create or upgrade to the newest schema) the store at `url` or `default_url()`."""
    parsed = make_url(url or default_url())
    if parsed.get_backend_name() == "sqlite":
        file_db = parsed.database not in (None, "", ":memory:") and "mode=memory" not in str(parsed)
        if file_db and parsed.database:  # file_db says it is set; this says it to mypy
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)
        _sqlite_setup(engine, file_db)
    else:
        engine = create_engine(parsed, pool_pre_ping=True)
    if migrate:
        from matrix.migrations import upgrade

        upgrade(engine)
    return Store(engine=engine, session=sessionmaker(engine, expire_on_commit=False))
