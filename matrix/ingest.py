"""Result records -> rows, idempotently: the same record ingested twice is stored once.

Every record is checked against the contract (probes/result.schema.json) first; a bad one is
reported with its position and why, and never stops the others. Works on SQLite and PostgreSQL
(their shared INSERT ... ON CONFLICT, through SQLAlchemy).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, cast

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from sqlalchemy import Connection, Table, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from matrix.store import (
    Base,
    CellLatest,
    Environment,
    ModelRevision,
    Result,
    ResultLog,
    Run,
    utc_naive,
    utc_now,
)
from matrix.summary import environment_id, parse_date, parse_time
from probes.record import verdict_fields
from probes.runner import LOG_TAIL_BYTES

MAX_REASON = 300
# Statuses whose log is worth keeping: a later rule may say more about them than today's.
KEEPS_LOG = frozenset({"fail", "error", "oom", "timeout", "degraded"})

# Column widths of the store (matrix/store.py): longer values are refused with a reason here
# rather than by the database (PostgreSQL) or silently kept (SQLite).
LIMITS: dict[tuple[str, ...], int] = {
    ("model", "id"): 512,
    ("model", "revision"): 128,
    ("model", "model_type"): 128,
    ("model", "architecture"): 256,
    ("model", "family"): 128,
    ("engine", "name"): 128,
    ("engine", "version"): 128,
    ("engine", "environment_id"): 128,
    ("engine", "hardware"): 256,
    ("engine", "image_digest"): 256,
    ("engine", "lock", "id"): 64,
    ("engine", "lock", "exclude_newer"): 32,
    ("run_id",): 128,
    ("stage",): 64,
    ("tier",): 16,
    ("failure_class",): 64,
    ("dayone_version",): 64,
    ("host",): 256,
}


@dataclass
class IngestReport:
    inserted: int = 0
    duplicates: int = 0
    updated: int = 0  # stored already, now with a (new) confirmation
    # (position, reason): the 0-based index for ingest_records, the 1-based line for ingest_file
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "inserted": self.inserted,
            "duplicates": self.duplicates,
            "rejected": [{"at": at, "reason": why} for at, why in self.rejected],
        }
        if self.updated:  # only when a confirmation arrived: the usual answer keeps its shape
            out["updated"] = self.updated
        return out


class Rejected(ValueError):
    """A record that cannot be stored, and why (in words a person can act on)."""


@lru_cache(maxsize=1)
def validator() -> Draft202012Validator:
    schema = json.loads(resources.files("probes").joinpath("result.schema.json").read_text())
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _short(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def _clean(value: Any, where: str = "record") -> Any:
    """Refuse what JSON cannot hold (NaN, Infinity); replace NUL characters and lone
    surrogates, which databases cannot store in text (logs are untrusted and may carry them)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise Rejected(_short(f"{where}: {value} is not a JSON number"))
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "\ufffd")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates ("\ud800" in JSON): no database takes them
            value = value.encode("utf-8", "replace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {_clean(k, where): _clean(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


@dataclass(frozen=True)
class Checked:
    """A valid record, with the fields the store reads already parsed."""

    record: dict[str, Any]
    started_at: dt.datetime  # naive UTC
    release_date: dt.date | None
    environment_id: str


def check(record: Any) -> Checked:
    """Validate one record against the contract; raise Rejected with the reason."""
    if not isinstance(record, dict):
        raise Rejected(f"not a JSON object but {type(record).__name__}")
    record = _clean(record)
    error = best_match(validator().iter_errors(record))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "record"
        raise Rejected(_short(f"{where}: {error.message}"))
    for path, limit in LIMITS.items():
        value: Any = record
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str) and len(value) > limit:
            raise Rejected(f"{'.'.join(path)}: longer than {limit} characters")
    try:
        started_at = utc_naive(parse_time(record["started_at"]))
    except (ValueError, OverflowError) as exc:  # OverflowError: year 1 with a positive offset
        raise Rejected(_short(f"started_at: not an ISO 8601 time: {record['started_at']!r}")) from exc
    release = record["model"].get("release_date")
    if release is not None and not isinstance(release, str):
        raise Rejected("model.release_date: not an ISO date string")
    try:
        release_date = parse_date(release)
    except ValueError as exc:
        raise Rejected(_short(f"model.release_date: not an ISO date: {release!r}")) from exc
    return Checked(record, started_at, release_date, environment_id(record["engine"]))


# Writing


def _insert_for(dialect: str) -> Any:
    """INSERT with ON CONFLICT for a backend (SQLite and PostgreSQL share it)."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert
    raise NotImplementedError(f"dayone stores results in SQLite or PostgreSQL, not {dialect}")


def _insert(session: Session, entity: type) -> Any:
    return _insert_for(session.get_bind().dialect.name)(entity)


def log_tail(path: str | None, limit: int = LOG_TAIL_BYTES) -> tuple[str, int] | None:
    """(the last `limit` bytes of the log at `path` from a whole line on, the log's size), or
    None when there is no such file. Logs are untrusted: cleaned for the database like records."""
    if not path or not path.endswith(".log"):  # a probe's log, not any file a record names
        return None
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - limit))
            data = f.read(limit)
    except OSError:
        return None
    if size > limit and b"\n" in data:
        data = data[data.index(b"\n") + 1 :]  # a cut first line could match a rule wrongly
    return _clean(data.decode("utf-8", "replace")), size


def _table(entity: type[Base]) -> Table:
    return cast(Table, entity.__table__)  # typed as any FromClause; a mapped class has a Table


M, E, R = _table(ModelRevision), _table(Environment), _table(Run)
RES, CELL, LOGS = _table(Result), _table(CellLatest), _table(ResultLog)


@dataclass(frozen=True)
class _Statements:
    """Built once per backend: compiling a statement per record costs more than running it."""

    model: Any
    environment: Any
    run: Any
    result: Any
    cell: Any
    log: Any
    model_pk = select(M.c.id).where(
        M.c.model_id == bindparam("model_id"), M.c.revision == bindparam("revision")
    )
    environment_pk = select(E.c.id, E.c.engine_version).where(
        E.c.environment_id == bindparam("environment_id")
    )
    run_pk = select(R.c.id, R.c.started_at).where(R.c.run_id == bindparam("run_id"))
    run_earlier = (
        update(R)
        .where(R.c.id == bindparam("pk"), R.c.started_at > bindparam("t"))
        .values(started_at=bindparam("t"))
    )


@lru_cache(maxsize=4)
def _statements(dialect: str) -> _Statements:
    insert = _insert_for(dialect)
    cell = insert(CELL)
    new = cell.excluded
    cell = cell.on_conflict_do_update(
        index_elements=[CELL.c.model_revision_pk, CELL.c.environment_pk, CELL.c.stage],
        set_={
            "result_pk": new.result_pk,
            "status": new.status,
            "failure_class": new.failure_class,
            "started_at": new.started_at,
        },
        # Only a newer result moves the cell; on a tie of times the later-stored one wins.
        where=or_(
            new.started_at > CELL.c.started_at,
            and_(new.started_at == CELL.c.started_at, new.result_pk > CELL.c.result_pk),
        ),
    )
    return _Statements(
        model=insert(M).on_conflict_do_nothing(),
        environment=insert(E).on_conflict_do_nothing(),
        run=insert(R).on_conflict_do_nothing(),
        result=insert(RES).on_conflict_do_nothing().returning(RES.c.id),
        cell=cell,
        log=insert(LOGS).on_conflict_do_nothing(),
    )


def _fill_missing(conn: Connection, table: Table, pk: int, values: dict[str, Any]) -> None:
    """Set the columns that are still NULL from a later record that knows them (rare: the
    caller does it once per row and batch)."""
    for column, value in values.items():
        if value is not None:
            conn.execute(
                update(table).where(table.c.id == pk, table.c[column].is_(None)).values({column: value})
            )


class _Writer:
    """Upserts one batch; remembers the rows it has already looked up."""

    def __init__(self, session: Session, keep_logs: bool = True):
        self.keep_logs = keep_logs
        self.conn = session.connection()
        self.sql = _statements(self.conn.dialect.name)
        self.models: dict[tuple[str, str], int] = {}
        self.environments: dict[str, tuple[int, str]] = {}
        self.resolutions: dict[int, set[str]] = {}
        self.runs: dict[str, tuple[int, dt.datetime]] = {}

    def forget(self) -> None:
        self.models.clear()
        self.environments.clear()
        self.resolutions.clear()
        self.runs.clear()

    def model_revision(self, c: Checked) -> int:
        model = c.record["model"]
        key = {"model_id": model["id"], "revision": model.get("revision") or ""}
        if (cached := self.models.get((key["model_id"], key["revision"]))) is not None:
            return cached
        facts = {
            "model_type": model.get("model_type"),
            "architecture": model.get("architecture"),
            "family": model.get("family"),
            "release_date": c.release_date,
        }
        self.conn.execute(self.sql.model, {**key, **facts})
        pk = self.conn.execute(self.sql.model_pk, key).scalar_one()
        _fill_missing(self.conn, M, pk, facts)
        self.models[(key["model_id"], key["revision"])] = pk
        return pk

    def environment(self, c: Checked) -> tuple[int, str]:
        if (cached := self.environments.get(c.environment_id)) is not None:
            return cached
        engine = c.record["engine"]
        self.conn.execute(
            self.sql.environment,
            {
                "environment_id": c.environment_id,
                "engine_name": engine["name"],
                "engine_version": engine["version"],
                "hardware": engine.get("hardware"),
                # the environment's full resolved list (uv pip freeze), the child's own over it
                "packages": {**(engine.get("resolved_packages") or {}), **(engine.get("packages") or {})},
                "image_digest": engine.get("image_digest"),
            },
        )
        row = self.conn.execute(self.sql.environment_pk, {"environment_id": c.environment_id}).one()
        lock = engine.get("lock") or {}
        _fill_missing(
            self.conn,
            E,
            row.id,
            {
                "image_digest": engine.get("image_digest"),
                "lock_id": lock.get("id"),
                "exclude_newer": lock.get("exclude_newer"),
            },
        )
        self.environments[c.environment_id] = (row.id, row.engine_version)
        return row.id, row.engine_version

    def resolution(self, env_pk: int, record: Mapping[str, Any]) -> None:
        """Add the record's resolution to those its environment is known to lock to."""
        lock = (record.get("engine") or {}).get("lock") or {}
        asked = {lock.get("resolution"), *(lock.get("resolutions") or ())} - {None}
        if asked <= self.resolutions.get(env_pk, set()):
            return
        known = self.conn.execute(select(E.c.resolutions).where(E.c.id == env_pk)).scalar()
        before = set(filter(None, (known or "").split(",")))
        labels = before | asked
        self.resolutions[env_pk] = labels
        if labels != before:
            self.conn.execute(update(E).where(E.c.id == env_pk).values(resolutions=",".join(sorted(labels))))

    def run(self, c: Checked) -> int | None:
        run_id = c.record.get("run_id")
        if not run_id:
            return None
        if run_id not in self.runs:
            self.conn.execute(
                self.sql.run,
                {
                    "run_id": run_id,
                    "started_at": c.started_at,
                    "dayone_version": c.record.get("dayone_version"),
                    "host": c.record.get("host"),
                    "hardware": c.record["engine"].get("hardware"),
                },
            )
            row = self.conn.execute(self.sql.run_pk, {"run_id": run_id}).one()
            self.runs[run_id] = (row.id, row.started_at)
        pk, started = self.runs[run_id]
        if c.started_at < started:  # a run starts with its earliest result
            self.conn.execute(self.sql.run_earlier, {"pk": pk, "t": c.started_at})
            self.runs[run_id] = (pk, c.started_at)
        return pk

    def result(self, c: Checked) -> str | bool:
        """Store one checked record; False when it was already there, "updated" when it was
        and took a new confirmation."""
        r = c.record
        model_pk = self.model_revision(c)
        env_pk, engine_version = self.environment(c)
        self.resolution(env_pk, r)
        run_pk = self.run(c)
        raw = dict(r)
        # the environment's full package list is stored once, with the environment
        raw["engine"] = {k: v for k, v in (r.get("engine") or {}).items() if k != "resolved_packages"}
        output = raw.pop("output") if raw.get("output") is not None else None
        result_pk = self.conn.execute(
            self.sql.result,
            {
                "model_revision_pk": model_pk,
                "environment_pk": env_pk,
                "run_pk": run_pk,
                "run_key": r.get("run_id") or "",
                **verdict_fields(r),
                "metrics": r.get("metrics") or {},
                "output": output,
                "started_at": c.started_at,
                "duration_s": float(r["duration_s"]),
                "reproduce": r.get("reproduce"),
                "raw": raw,
                "confirmed": r.get("confirmed"),
                "confirmation": r.get("confirmation"),
                "confirmed_at": utc_now() if r.get("confirmation") else None,
            },
        ).scalar()
        if result_pk is None:
            return self.confirmation_update(r, c, model_pk, env_pk, raw)
        self.conn.execute(
            self.sql.cell,
            {
                "model_revision_pk": model_pk,
                "environment_pk": env_pk,
                "stage": r["stage"],
                "model_id": r["model"]["id"],
                "engine_name": r["engine"]["name"],
                "engine_version": engine_version,
                "result_pk": result_pk,
                "status": r["status"],
                "failure_class": r.get("failure_class"),
                "started_at": c.started_at,
            },
        )
        if self.keep_logs and r["status"] in KEEPS_LOG and (tail := log_tail(r.get("log_path"))) is not None:
            self.conn.execute(
                self.sql.log,
                {"result_pk": result_pk, "log_tail": tail[0], "log_bytes": tail[1], "stored_at": utc_now()},
            )
        return True

    def confirmation_update(
        self, r: dict[str, Any], c: Checked, model_pk: int, env_pk: int, raw: dict[str, Any]
    ) -> str | bool:
        """A record stored before, now confirmed (or confirmed anew): its row takes the
        confirmation and what it changed (a harness disagreement turns the red `error`), and
        its cell follows when this row is the cell's latest. Same confirmation: a duplicate."""
        if r.get("confirmation") is None:
            return False
        row = self.conn.execute(
            select(RES.c.id, RES.c.confirmation).where(
                RES.c.model_revision_pk == model_pk,
                RES.c.environment_pk == env_pk,
                RES.c.stage == r["stage"],
                RES.c.started_at == c.started_at,
                RES.c.run_key == (r.get("run_id") or ""),
            )
        ).one_or_none()
        if row is None or row.confirmation == r["confirmation"]:
            return False
        self.conn.execute(
            update(RES)
            .where(RES.c.id == row.id)
            .values(
                status=r["status"],
                failure_class=r.get("failure_class"),
                message=r.get("message"),
                confirmed=r.get("confirmed"),
                confirmation=r["confirmation"],
                raw=raw,
                confirmed_at=utc_now(),
            )
        )
        self.conn.execute(
            update(CELL)
            .where(CELL.c.result_pk == row.id)
            .values(status=r["status"], failure_class=r.get("failure_class"))
        )
        return "updated"


def _ingest(session: Session, numbered: Iterable[tuple[int, Any]], keep_logs: bool = True) -> IngestReport:
    report = IngestReport()
    writer = _Writer(session, keep_logs)
    for at, record in numbered:
        if isinstance(record, Rejected):
            report.rejected.append((at, str(record)))
            continue
        try:
            checked = check(record)
        except Rejected as why:
            report.rejected.append((at, str(why)))
            continue
        try:
            # A savepoint per record: a row the database refuses costs that record only.
            with session.begin_nested():
                stored = writer.result(checked)
        except (IntegrityError, DataError) as err:
            writer.forget()  # rows looked up inside the rolled-back savepoint may be gone
            report.rejected.append((at, _short(f"store refused it: {err.orig}")))
            continue
        if stored == "updated":
            report.updated += 1
        elif stored:
            report.inserted += 1
        else:
            report.duplicates += 1
    return report


def ingest_records(session: Session, records: Iterable[Any], *, keep_logs: bool = True) -> IngestReport:
    """Store contract records (dicts); duplicates are counted, not stored again. The caller
    commits (`with store.writing() as session: ...`). `keep_logs`: keep the end of each failing
    record's log file (`log_path` on this host); off for records sent from elsewhere, whose
    paths name another machine's files (or, from a hostile sender, any file of this one)."""
    return _ingest(session, enumerate(records), keep_logs)


def _json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    # A .gz file is read as its gzip stream (docs/sweep keeps whole sweeps gzipped).
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:  # bytes: one line of bad UTF-8 must not end the file
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line.decode("utf-8"), parse_constant=no_constant)
            except ValueError as err:  # JSONDecodeError, bad constants, UnicodeDecodeError
                yield line_no, Rejected(_short(f"not JSON: {err}"))


def ingest_file(session: Session, path: str | Path) -> IngestReport:
    """Store a JSON lines file of records; bad lines are reported by line number, the rest kept."""
    return _ingest(session, _json_lines(Path(path)))


def rebuild_cell_latest(session: Session) -> int:
    """Recompute cell_latest from all results (a repair; ingest keeps it current). Returns rows."""
    ranked = select(
        Result.id,
        Result.model_revision_pk,
        Result.environment_pk,
        Result.stage,
        Result.status,
        Result.failure_class,
        Result.started_at,
        func.row_number()
        .over(
            partition_by=(Result.model_revision_pk, Result.environment_pk, Result.stage),
            order_by=(Result.started_at.desc(), Result.id.desc()),
        )
        .label("n"),
    ).subquery()
    rows = (
        session.execute(
            select(ranked, ModelRevision.model_id, Environment.engine_name, Environment.engine_version)
            .join(ModelRevision, ModelRevision.id == ranked.c.model_revision_pk)
            .join(Environment, Environment.id == ranked.c.environment_pk)
            .where(ranked.c.n == 1)
        )
        .mappings()
        .all()
    )
    session.execute(delete(CellLatest))
    if not rows:
        return 0
    session.execute(
        _insert(session, CellLatest),
        [
            {
                "model_revision_pk": r["model_revision_pk"],
                "environment_pk": r["environment_pk"],
                "stage": r["stage"],
                "model_id": r["model_id"],
                "engine_name": r["engine_name"],
                "engine_version": r["engine_version"],
                "result_pk": r["id"],
                "status": r["status"],
                "failure_class": r["failure_class"],
                "started_at": r["started_at"],
            }
            for r in rows
        ],
    )
    return len(rows)
