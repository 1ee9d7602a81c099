"""Reads for the CLI and the site: stored records in the contract shape, and the matrix."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from matrix.store import (CellLatest, Environment, ModelRevision, Reclassification, Result,
                          ResultLog, utc_naive)
from matrix.summary import Observation, current, parse_time, worst_status


def _engine_filter(engine: str) -> list[Any]:
    """`NAME` or `NAME==VERSION`, as `dayone probe --engine` takes it."""
    name, _, version = engine.partition("==")
    where = [Environment.engine_name == name.strip()]
    if version.strip():
        where.append(Environment.engine_version == version.strip())
    return where


def results(session: Session, model: str | None = None, engine: str | None = None,
            stage: str | None = None, since: dt.datetime | dt.date | str | None = None,
            limit: int | None = None, *, status: str | None = None, offset: int = 0,
            model_prefix: str | None = None, with_output: bool = True) -> list[dict[str, Any]]:
    """Stored records, exactly as ingested (the contract), newest first. `since`: results
    started at or after it (a naive time means UTC; a date means its midnight UTC).
    `model_prefix`: models whose id starts with it ("arch/": the sweep's architectures).
    `with_output=False` leaves out the bulky `output` (token ids, logprobs)."""
    query = (select(Result.raw, Result.output)
             .join(ModelRevision, ModelRevision.id == Result.model_revision_pk)
             .join(Environment, Environment.id == Result.environment_pk)
             .order_by(Result.started_at.desc(), Result.id.desc()))
    if model is not None:
        query = query.where(ModelRevision.model_id == model)
    if model_prefix is not None:
        query = query.where(ModelRevision.model_id.startswith(model_prefix, autoescape=True))
    if engine is not None:
        query = query.where(*_engine_filter(engine))
    if stage is not None:
        query = query.where(Result.stage == stage)
    if status is not None:
        query = query.where(Result.status == status)
    if since is not None:
        if isinstance(since, dt.date) and not isinstance(since, dt.datetime):
            since = dt.datetime.combine(since, dt.time())
        query = query.where(Result.started_at >= utc_naive(parse_time(since)))
    if offset:
        query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    out = []
    for raw, output in session.execute(query):
        record = dict(raw)
        if output is not None and with_output:
            record["output"] = output
        out.append(record)
    return out


@dataclass(frozen=True)
class StageState:
    status: str
    failure_class: str | None
    started_at: dt.datetime  # aware UTC
    result_id: int


@dataclass(frozen=True)
class MatrixCell:
    engine: str
    engine_version: str  # the newest version of the engine that probed this model
    status: str | None  # the worst meaningful of the stages' statuses (matrix.summary)
    stages: dict[str, StageState]


@dataclass(frozen=True)
class MatrixRow:
    model: str
    family: str | None
    model_type: str | None
    architecture: str | None
    release_date: dt.date | None
    cells: dict[str, MatrixCell]  # engine name -> cell

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def matrix(session: Session, *, engine: str | None = None, family: str | None = None
           ) -> list[MatrixRow]:
    """Models (newest release first, then newest seen) x engines, each cell's current state,
    from cell_latest only (no history scan). Engine columns: `engines(rows)`."""
    query = (select(CellLatest.model_id, CellLatest.engine_name, CellLatest.engine_version,
                    CellLatest.stage, CellLatest.status, CellLatest.failure_class,
                    CellLatest.started_at, CellLatest.result_pk, Environment.environment_id)
             .join(Environment, Environment.id == CellLatest.environment_pk))
    if engine is not None:
        query = query.where(*_engine_filter(engine))
    observed: list[Observation] = []
    result_ids: dict[Observation, int] = {}
    for r in session.execute(query):
        o = Observation(model=r.model_id, engine=r.engine_name, engine_version=r.engine_version,
                        stage=r.stage, status=r.status, failure_class=r.failure_class,
                        started_at=parse_time(r.started_at), environment_id=r.environment_id)
        observed.append(o)
        result_ids[o] = r.result_pk
    cells: dict[str, dict[str, MatrixCell]] = {}
    by_cell: dict[tuple[str, str], dict[str, Observation]] = {}
    for (model_id, engine_name, stage), o in current(observed).items():
        by_cell.setdefault((model_id, engine_name), {})[stage] = o
    for (model_id, engine_name), stages in by_cell.items():
        states = {stage: StageState(o.status, o.failure_class, o.started_at, result_ids[o])
                  for stage, o in stages.items()}
        version = next(iter(stages.values())).engine_version
        cells.setdefault(model_id, {})[engine_name] = MatrixCell(
            engine_name, version, worst_status(s.status for s in states.values()), states)
    return [row for row in _model_rows(session, cells) if family is None or row.family == family]


def _model_rows(session: Session, cells: dict[str, dict[str, MatrixCell]]) -> list[MatrixRow]:
    """One row per model id; its facts from its most recently seen revision that has them."""
    if not cells:
        return []
    facts: dict[str, dict[str, Any]] = {}
    first_seen: dict[str, dt.datetime] = {}
    query = (select(ModelRevision).where(ModelRevision.model_id.in_(list(cells)))
             .order_by(ModelRevision.created))
    for rev in session.scalars(query):
        f = facts.setdefault(rev.model_id, {})
        for key in ("family", "model_type", "architecture", "release_date"):
            if getattr(rev, key) is not None:
                f[key] = getattr(rev, key)
        first_seen.setdefault(rev.model_id, rev.created)
    rows = [MatrixRow(model=m, family=facts.get(m, {}).get("family"),
                      model_type=facts.get(m, {}).get("model_type"),
                      architecture=facts.get(m, {}).get("architecture"),
                      release_date=facts.get(m, {}).get("release_date"),
                      cells=cells[m]) for m in cells]
    # Newest first: by release date where known, else by when dayone first saw the model.
    rows.sort(key=lambda r: (r.release_date or first_seen[r.model].date(), first_seen[r.model],
                             r.model), reverse=True)
    return rows


def probed(session: Session) -> set[tuple[str, str, str, str]]:
    """(model id, revision, environment id, stage) of everything with a result (for planning:
    a model revision already probed in an environment is not new work)."""
    query = (select(ModelRevision.model_id, ModelRevision.revision, Environment.environment_id,
                    CellLatest.stage)
             .join(ModelRevision, ModelRevision.id == CellLatest.model_revision_pk)
             .join(Environment, Environment.id == CellLatest.environment_pk))
    return {tuple(row) for row in session.execute(query)}


def engines(rows: list[MatrixRow]) -> list[str]:
    """The engine columns of a matrix, by name."""
    return sorted({name for row in rows for name in row.cells})


# -- reclassify -------------------------------------------------------------------------------

@dataclass(frozen=True)
class StoredFailure:
    """What the store holds of one result that today's rules may classify again."""

    result_id: int
    model: str
    engine: str
    stage: str
    status: str
    failure_class: str | None
    message: str | None
    log_excerpt: str | None
    log_path: str | None


def stored_failures(session: Session, statuses: tuple[str, ...]) -> list[StoredFailure]:
    """Results with one of these statuses, oldest first (no log text: read it per result)."""
    query = (select(Result.id, ModelRevision.model_id, Environment.engine_name, Result.stage,
                    Result.status, Result.failure_class, Result.message, Result.log_excerpt,
                    Result.log_path)
             .join(ModelRevision, ModelRevision.id == Result.model_revision_pk)
             .join(Environment, Environment.id == Result.environment_pk)
             .where(Result.status.in_(statuses))
             .order_by(Result.id))
    return [StoredFailure(*row) for row in session.execute(query)]


def stored_log_tail(session: Session, result_id: int) -> str | None:
    """The end of a result's log as ingest kept it, or None."""
    return session.scalar(select(ResultLog.log_tail).where(ResultLog.result_pk == result_id))


def reclassifications(session: Session, result_id: int | None = None,
                      limit: int | None = None) -> list[dict[str, Any]]:
    """The recorded class changes (newest first), of one result or of all."""
    query = (select(Reclassification, ModelRevision.model_id, Environment.engine_name,
                    Result.stage)
             .join(Result, Result.id == Reclassification.result_pk)
             .join(ModelRevision, ModelRevision.id == Result.model_revision_pk)
             .join(Environment, Environment.id == Result.environment_pk)
             .order_by(Reclassification.id.desc()))
    if result_id is not None:
        query = query.where(Reclassification.result_pk == result_id)
    if limit is not None:
        query = query.limit(limit)
    return [{"result_id": c.result_pk, "model": model, "engine": engine, "stage": stage,
             "at": c.at.replace(tzinfo=dt.timezone.utc).isoformat(),
             "rules_version": c.rules_version, "rule": c.rule,
             "old_status": c.old_status, "new_status": c.new_status,
             "old_class": c.old_class, "new_class": c.new_class,
             "old_message": c.old_message, "new_message": c.new_message}
            for c, model, engine, stage in session.execute(query)]


def newest_reclassification(session: Session) -> int | None:
    """The id of the newest class change (a cache of views is stale when it moves)."""
    return session.scalar(select(func.max(Reclassification.id)))


def newest_confirmation(session: Session) -> dt.datetime | None:
    """When a stored red was last confirmed (confirming updates a row without a new id)."""
    return session.scalar(select(func.max(Result.confirmed_at)))


def unconfirmed_reds(session: Session, *, model: str | None = None, engine: str | None = None,
                     limit: int | None = None, again: bool = False) -> list[dict[str, Any]]:
    """Stored reds (fail / timeout / oom) with a reproduce command and no confirmation yet,
    newest first, as records (without `output`). AGAIN: also the reds whose bare run did not
    confirm them (it failed otherwise, or gave no verdict), as if never checked."""
    # confirmed IS NULL: never checked (a JSON column stores None as JSON null, so the
    # confirmation column itself cannot say it)
    unchecked = and_(Result.confirmed.is_(None), Result.confirmed_at.is_(None))
    query = (select(Result.raw)
             .join(ModelRevision, ModelRevision.id == Result.model_revision_pk)
             .join(Environment, Environment.id == Result.environment_pk)
             .where(Result.status.in_(("fail", "timeout", "oom")),
                    or_(unchecked, Result.confirmed.is_(False)) if again else unchecked,
                    Result.reproduce.is_not(None))
             .order_by(Result.started_at.desc(), Result.id.desc()))
    if model is not None:
        query = query.where(ModelRevision.model_id == model)
    if engine is not None:
        query = query.where(*_engine_filter(engine))
    if limit is not None:
        query = query.limit(limit)
    unset = ("confirmed", "confirmation", "confirmed_at")
    return [{k: v for k, v in dict(raw).items() if k not in unset}
            for raw in session.scalars(query)]


# -- engine releases ----------------------------------------------------------------------------

def probed_engine_versions(session: Session) -> set[tuple[str, str]]:
    """(engine name, engine version) of every engine release with a record (discovery: a
    release with one is not new work)."""
    query = select(CellLatest.engine_name, CellLatest.engine_version).distinct()
    return {(name, version) for name, version in session.execute(query)}


def tracked_models(session: Session) -> list[str]:
    """The model ids with a record, not the sweep's architectures (`arch/...`): what a new
    engine release is probed on besides the architecture map."""
    query = (select(CellLatest.model_id).distinct()
             .where(~CellLatest.model_id.startswith("arch/", autoescape=True))
             .order_by(CellLatest.model_id))
    return list(session.scalars(query))
