"""Reads for the CLI and the site: stored records in the contract shape, the failures newer rules
may classify again, the reds to confirm."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from matrix.store import (CellLatest, Environment, ModelRevision, Reclassification, Result,
                          ResultLog, utc_naive)
from matrix.summary import Observation, parse_time


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


# -- the architecture map -----------------------------------------------------------------------

def arch_release_stages(session: Session, prefix: str = "arch/") -> list[Observation]:
    """The latest result of every stage of every sweep architecture in every engine release it
    ran in (one row per model revision x environment x stage, from cell_latest: the release
    timeline costs O(architectures x releases), never history)."""
    query = (select(CellLatest.model_id, CellLatest.engine_name, CellLatest.engine_version,
                    CellLatest.stage, CellLatest.status, CellLatest.started_at,
                    CellLatest.failure_class)
             .where(CellLatest.model_id.startswith(prefix, autoescape=True))
             .order_by(CellLatest.model_id, CellLatest.engine_name))
    return [Observation(model=r.model_id, engine=r.engine_name, engine_version=r.engine_version,
                        stage=r.stage, status=r.status, started_at=parse_time(r.started_at),
                        failure_class=r.failure_class)
            for r in session.execute(query)]


# -- engine releases: what each fixed and broke, support data, bisect -------------------------

def engine_release_stages(session: Session, engine: str | None = None,
                          model: str | None = None) -> list[Observation]:
    """The latest result of every stage of every model in every release of one engine (or of
    every engine), with its failure class and message, from cell_latest: what
    matrix/release_diff.py, matrix/compat_data.py and matrix/bisect.py read. One row per model
    revision x environment x stage, so O(models x releases), never history."""
    query = (select(CellLatest.model_id, CellLatest.engine_name, CellLatest.engine_version,
                    CellLatest.stage, CellLatest.status, CellLatest.started_at,
                    CellLatest.failure_class, Result.message, Environment.environment_id)
             .join(Result, Result.id == CellLatest.result_pk)
             .join(Environment, Environment.id == CellLatest.environment_pk)
             .order_by(CellLatest.engine_name, CellLatest.model_id))
    if engine is not None:
        query = query.where(CellLatest.engine_name == engine)
    if model is not None:
        query = query.where(CellLatest.model_id == model)
    return [Observation(model=r.model_id, engine=r.engine_name, engine_version=r.engine_version,
                        stage=r.stage, status=r.status, started_at=parse_time(r.started_at),
                        environment_id=r.environment_id, failure_class=r.failure_class,
                        message=r.message)
            for r in session.execute(query)]


def engine_names(session: Session) -> list[str]:
    """Every engine with an environment in the store, by name."""
    return sorted(session.scalars(select(Environment.engine_name).distinct()))


@dataclass(frozen=True)
class EngineEnvironment:
    environment_id: str
    engine_version: str
    hardware: str | None
    created: dt.datetime
    packages: dict[str, Any]


def engine_environments(session: Session, engine: str) -> list[EngineEnvironment]:
    """The environments of one engine (every version, every hardware), oldest first."""
    query = (select(Environment.environment_id, Environment.engine_version,
                    Environment.hardware, Environment.created, Environment.packages)
             .where(Environment.engine_name == engine).order_by(Environment.id))
    return [EngineEnvironment(r.environment_id, r.engine_version, r.hardware, r.created,
                              dict(r.packages or {}))
            for r in session.execute(query)]
