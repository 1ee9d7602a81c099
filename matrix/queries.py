"""Reads for the CLI and the site: stored records in the contract shape, the failures newer rules
may classify again, the reds to confirm."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, func, or_, select, text
from sqlalchemy.orm import Session

from matrix.store import (
    CellLatest,
    Environment,
    ModelRevision,
    Reclassification,
    Result,
    ResultLog,
    utc_naive,
)
from matrix.summary import FALLBACK, GREEN, MEANINGFUL, Cell, Observation, Probe, parse_time


def _engine_filter(engine: str) -> list[Any]:
    """`NAME` or `NAME==VERSION`, as `dayone probe --engine` takes it."""
    name, _, version = engine.partition("==")
    where = [Environment.engine_name == name.strip()]
    if version.strip():
        where.append(Environment.engine_version == version.strip())
    return where


def results(
    session: Session,
    model: str | None = None,
    engine: str | None = None,
    stage: str | None = None,
    since: dt.datetime | dt.date | str | None = None,
    limit: int | None = None,
    *,
    status: str | None = None,
    offset: int = 0,
    model_prefix: str | None = None,
    with_output: bool = True,
    hardware: str | None = None,
    tier: str | None = None,
    engine_name: str | None = None,
) -> list[dict[str, Any]]:
    """Stored records, exactly as ingested (the contract), newest first. `since`: results
    started at or after it (a naive time means UTC; a date means its midnight UTC).
    `model_prefix`: models whose id starts with it ("arch/": the sweep's architectures).
    `with_output=False` leaves out the bulky `output` (token ids, logprobs). `hardware`,
    `tier`: results on that hardware (the environment's), of that tier. `engine_name`: one
    engine by its name alone (a page's path, where `NAME==VERSION` names no engine)."""
    query = (
        select(Result.raw, Result.output)
        .join(ModelRevision, ModelRevision.id == Result.model_revision_pk)
        .join(Environment, Environment.id == Result.environment_pk)
        .order_by(Result.started_at.desc(), Result.id.desc())
    )
    if model is not None:
        query = query.where(ModelRevision.model_id == model)
    if model_prefix is not None:
        query = query.where(ModelRevision.model_id.startswith(model_prefix, autoescape=True))
    if engine is not None:
        query = query.where(*_engine_filter(engine))
    if engine_name is not None:
        query = query.where(Environment.engine_name == engine_name)
    if stage is not None:
        query = query.where(Result.stage == stage)
    if status is not None:
        query = query.where(Result.status == status)
    if hardware is not None:
        query = query.where(Environment.hardware == hardware)
    if tier is not None:
        query = query.where(Result.tier == tier)
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


# Reclassify


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
    query = (
        select(
            Result.id,
            ModelRevision.model_id,
            Environment.engine_name,
            Result.stage,
            Result.status,
            Result.failure_class,
            Result.message,
            Result.log_excerpt,
            Result.log_path,
        )
        .join(ModelRevision, ModelRevision.id == Result.model_revision_pk)
        .join(Environment, Environment.id == Result.environment_pk)
        .where(Result.status.in_(statuses))
        .order_by(Result.id)
    )
    return [StoredFailure(*row) for row in session.execute(query)]


def stored_log_tail(session: Session, result_id: int) -> str | None:
    """The end of a result's log as ingest kept it, or None."""
    return session.scalar(select(ResultLog.log_tail).where(ResultLog.result_pk == result_id))


def reclassifications(
    session: Session, result_id: int | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """The recorded class changes (newest first), of one result or of all."""
    query = (
        select(Reclassification, ModelRevision.model_id, Environment.engine_name, Result.stage)
        .join(Result, Result.id == Reclassification.result_pk)
        .join(ModelRevision, ModelRevision.id == Result.model_revision_pk)
        .join(Environment, Environment.id == Result.environment_pk)
        .order_by(Reclassification.id.desc())
    )
    if result_id is not None:
        query = query.where(Reclassification.result_pk == result_id)
    if limit is not None:
        query = query.limit(limit)
    return [
        {
            "result_id": c.result_pk,
            "model": model,
            "engine": engine,
            "stage": stage,
            "at": c.at.replace(tzinfo=dt.timezone.utc).isoformat(),
            "rules_version": c.rules_version,
            "rule": c.rule,
            "old_status": c.old_status,
            "new_status": c.new_status,
            "old_class": c.old_class,
            "new_class": c.new_class,
            "old_message": c.old_message,
            "new_message": c.new_message,
        }
        for c, model, engine, stage in session.execute(query)
    ]


def newest_reclassification(session: Session) -> int | None:
    """The id of the newest class change (a cache of views is stale when it moves)."""
    return session.scalar(select(func.max(Reclassification.id)))


def newest_confirmation(session: Session) -> dt.datetime | None:
    """When a stored red was last confirmed (confirming updates a row without a new id)."""
    return session.scalar(select(func.max(Result.confirmed_at)))


def unconfirmed_reds(
    session: Session,
    *,
    model: str | None = None,
    engine: str | None = None,
    limit: int | None = None,
    again: bool = False,
) -> list[dict[str, Any]]:
    """Stored reds (fail / timeout / oom) with a reproduce command and no confirmation yet,
    newest first, as records (without `output`). AGAIN: also the reds whose bare run did not
    confirm them (it failed otherwise, or gave no verdict), as if never checked."""
    # confirmed IS NULL: never checked (a JSON column stores None as JSON null, so the
    # confirmation column itself cannot say it)
    unchecked = and_(Result.confirmed.is_(None), Result.confirmed_at.is_(None))
    query = (
        select(Result.raw)
        .join(ModelRevision, ModelRevision.id == Result.model_revision_pk)
        .join(Environment, Environment.id == Result.environment_pk)
        .where(
            Result.status.in_(("fail", "timeout", "oom")),
            or_(unchecked, Result.confirmed.is_(False)) if again else unchecked,
            Result.reproduce.is_not(None),
        )
        .order_by(Result.started_at.desc(), Result.id.desc())
    )
    if model is not None:
        query = query.where(ModelRevision.model_id == model)
    if engine is not None:
        query = query.where(*_engine_filter(engine))
    if limit is not None:
        query = query.limit(limit)
    unset = ("confirmed", "confirmation", "confirmed_at")
    return [{k: v for k, v in dict(raw).items() if k not in unset} for raw in session.scalars(query)]


# Engine releases


def probed_engine_versions(session: Session) -> set[tuple[str, str]]:
    """(engine name, engine version) of every engine release with a record (discovery: a
    release with one is not new work)."""
    query = select(CellLatest.engine_name, CellLatest.engine_version).distinct()
    return {(name, version) for name, version in session.execute(query)}


def tracked_models(session: Session) -> list[str]:
    """The model ids with a record, not the sweep's architectures (`arch/...`): what a new
    engine release is probed on besides the architecture map."""
    query = (
        select(CellLatest.model_id)
        .distinct()
        .where(~CellLatest.model_id.startswith("arch/", autoescape=True))
        .order_by(CellLatest.model_id)
    )
    return list(session.scalars(query))


# The cell_latest rows every page reads

# The cell_latest columns an Observation needs (_observed reads them back).
_OBSERVED = (
    CellLatest.model_id,
    CellLatest.engine_name,
    CellLatest.engine_version,
    CellLatest.stage,
    CellLatest.status,
    CellLatest.started_at,
    CellLatest.failure_class,
)


def _observed(row: Any) -> dict[str, Any]:
    """A row of _OBSERVED (and environment id and message where selected) as an Observation's
    fields."""
    m = row._mapping
    return {
        "model": m["model_id"],
        "engine": m["engine_name"],
        "engine_version": m["engine_version"],
        "stage": m["stage"],
        "status": m["status"],
        "started_at": parse_time(m["started_at"]),
        "environment_id": m.get("environment_id", ""),
        "failure_class": m["failure_class"],
        "message": m.get("message"),
    }


def _cell_observation(row: Any) -> Observation:
    return Observation(**_observed(row))


@dataclass(frozen=True)
class CellFilter:
    """Which cells a read keeps (None: any): one engine, one hardware, one tier."""

    engine: str | None = None
    hardware: str | None = None
    tier: str | None = None


def _narrowed(
    query: Any, f: CellFilter, *, environment_joined: bool = False, result_joined: bool = False
) -> Any:
    """`query` over cell_latest narrowed to `f`. The hardware is the environment's and the tier
    the result's: each joined here unless the query has joined it already (a result joined
    for a cell's history narrows that history by its own tier)."""
    if f.engine is not None:
        query = query.where(CellLatest.engine_name == f.engine)
    if f.hardware is not None:
        if not environment_joined:
            query = query.join(Environment, Environment.id == CellLatest.environment_pk)
        query = query.where(Environment.hardware == f.hardware)
    if f.tier is not None:
        if not result_joined:
            query = query.join(Result, Result.id == CellLatest.result_pk)
        query = query.where(Result.tier == f.tier)
    return query


# The matrix (the front page), a model's page, a cell's page


@dataclass(frozen=True)
class ModelRevisionFacts:
    """What one stored revision of a model says about the model."""

    model: str
    revision: str
    family: str | None
    model_type: str | None
    architecture: str | None
    release_date: dt.date | None
    created: dt.datetime


def model_revisions(session: Session, model_ids: Iterable[str] | None = None) -> list[ModelRevisionFacts]:
    """The revisions of these models (of all, without ids), oldest first."""
    query = select(
        ModelRevision.model_id,
        ModelRevision.revision,
        ModelRevision.family,
        ModelRevision.model_type,
        ModelRevision.architecture,
        ModelRevision.release_date,
        ModelRevision.created,
    ).order_by(ModelRevision.created, ModelRevision.id)
    if model_ids is not None:
        query = query.where(ModelRevision.model_id.in_(list(model_ids)))
    return [ModelRevisionFacts(*row) for row in session.execute(query)]


@dataclass(frozen=True)
class CellResult(Observation):
    """The latest result of one stage of a model in one environment (a cell_latest row) with
    what the matrix shows of it; an Observation, so summaries read it as it is."""

    tier: str | None = None
    hardware: str | None = None
    confirmed: bool | None = None
    confirmation: dict[str, Any] | None = None


def cell_results(
    session: Session, model_ids: list[str], cells: CellFilter = CellFilter()
) -> list[CellResult]:
    """The latest result of every stage of these models in every environment, as `cells` keeps."""
    if not model_ids:
        return []
    query = (
        select(
            *_OBSERVED,
            Result.message,
            Environment.environment_id,
            Environment.hardware,
            Result.tier,
            Result.confirmed,
            Result.confirmation,
        )
        .join(Environment, Environment.id == CellLatest.environment_pk)
        .join(Result, Result.id == CellLatest.result_pk)
        .where(CellLatest.model_id.in_(model_ids))
    )
    query = _narrowed(query, cells, environment_joined=True, result_joined=True)
    return [
        CellResult(
            **_observed(r),
            tier=r.tier,
            hardware=r.hardware,
            confirmed=r.confirmed,
            confirmation=r.confirmation,
        )
        for r in session.execute(query)
    ]


def all_cells(session: Session) -> list[Cell]:
    """Every (model, engine) with a latest result."""
    return [
        (m, e) for m, e in session.execute(select(CellLatest.model_id, CellLatest.engine_name).distinct())
    ]


def models_with_cells(
    session: Session, cells: CellFilter = CellFilter(), *, status: str | None = None
) -> set[str]:
    """The models with a stage's latest result as `cells` keeps (of that status, where given)."""
    query = _narrowed(select(CellLatest.model_id).distinct(), cells)
    if status is not None:
        query = query.where(CellLatest.status == status)
    return set(session.scalars(query))


# Worst first: `MIN(rank)` over a group in SQL is exactly `summary.worst_status`.
RANKED: tuple[str, ...] = MEANINGFUL + FALLBACK
_RANK = {status: i for i, status in enumerate(RANKED)}


def _rank() -> Any:
    return case(_RANK, value=Result.status, else_=len(RANKED))


def _worst(rank: int) -> str | None:
    """The status a group's `MIN(_rank())` stands for (None: none of RANKED)."""
    return RANKED[rank] if rank < len(RANKED) else None


def _cell_results(*conditions: Any) -> Any:
    """Joins a cell to the results of its own model revision, environment and stage."""
    return and_(
        Result.model_revision_pk == CellLatest.model_revision_pk,
        Result.environment_pk == CellLatest.environment_pk,
        Result.stage == CellLatest.stage,
        *conditions,
    )


@dataclass(frozen=True)
class NightStatus:
    model: str
    engine: str
    night: str  # ISO date
    status: str  # the worst of the cell's results that night


def night_statuses(
    session: Session, model_ids: list[str], since: dt.date, cells: CellFilter = CellFilter()
) -> list[NightStatus]:
    """The worst status of each cell of these models on each night from `since` on."""
    if not model_ids:
        return []
    # One range seek per (model revision, environment, stage) through the results'
    # natural-key index, from the first night on: the page times N nights, never history.
    cutoff = dt.datetime.combine(since, dt.time())
    day = func.date(Result.started_at)
    query = (
        select(
            CellLatest.model_id,
            CellLatest.engine_name,
            day.label("day"),
            func.min(_rank()).label("rank"),
        )
        .join(
            Result,
            _cell_results(Result.started_at >= cutoff),
        )
        .where(CellLatest.model_id.in_(model_ids))
        .group_by(CellLatest.model_id, CellLatest.engine_name, day)
    )
    query = _narrowed(query, cells, result_joined=True)
    out = []
    for model, engine, night, rank in session.execute(query):
        status = _worst(rank)
        if status is not None:
            out.append(NightStatus(model, engine, str(night)[:10], status))
    return out


@dataclass(frozen=True)
class FirstGreen:
    model: str
    engine: str
    at: dt.datetime  # aware, UTC: the start of the cell's first green probe


def first_greens(
    session: Session, released: Mapping[str, dt.date], horizon_days: int, engine: str | None = None
) -> list[FirstGreen]:
    """The first green probe of each cell of these models (by release date), looked for until the horizon."""
    if not released:
        return []
    # Green as summary says it (no stage broken or degraded, at least one passed; probes grouped
    # by run and night), over [release - 7 days, release + horizon) alone: one range seek per
    # (model revision, environment, stage), flat however long the history grows.
    lo = {m: dt.datetime.combine(day, dt.time()) - dt.timedelta(days=7) for m, day in released.items()}
    hi = {m: lo[m] + dt.timedelta(days=7 + horizon_days) for m in released}
    bad = case((Result.status.in_(("fail", "timeout", "oom", "degraded")), 1), else_=0)
    good = case((Result.status == "pass", 1), else_=0)
    probe = (
        select(
            CellLatest.model_id.label("model_id"),
            CellLatest.engine_name.label("engine_name"),
            func.min(Result.started_at).label("t"),
            func.sum(bad).label("bad"),
            func.sum(good).label("good"),
        )
        .join(
            Result,
            _cell_results(
                Result.started_at >= case(lo, value=CellLatest.model_id),
                Result.started_at < case(hi, value=CellLatest.model_id),
            ),
        )
        .where(CellLatest.model_id.in_(list(lo)))
        .group_by(
            CellLatest.model_id,
            CellLatest.engine_name,
            CellLatest.environment_pk,
            Result.run_key,
            func.date(Result.started_at),
        )
    )
    if engine is not None:
        probe = probe.where(CellLatest.engine_name == engine)
    sub = probe.subquery()
    query = (
        select(sub.c.model_id, sub.c.engine_name, func.min(sub.c.t))
        .where(sub.c.bad == 0, sub.c.good > 0)
        .group_by(sub.c.model_id, sub.c.engine_name)
    )
    return [FirstGreen(m, e, parse_time(t)) for m, e, t in session.execute(query)]


def hardware_names(session: Session) -> list[str]:
    """Every hardware with an environment in the store, by name."""
    return sorted(h for h in session.scalars(select(Environment.hardware).distinct()) if h)


@dataclass(frozen=True)
class EngineVersion:
    engine: str
    version: str
    hardware: str | None


def engine_versions(session: Session) -> list[EngineVersion]:
    """Every environment's engine, engine version and hardware."""
    query = select(Environment.engine_name, Environment.engine_version, Environment.hardware)
    return [EngineVersion(*row) for row in session.execute(query)]


def model_observations(session: Session, model: str, engine: str | None = None) -> list[Observation]:
    """Every result of one model (in one engine) as the columns summaries read: no raw JSON to parse."""
    query = (
        select(
            ModelRevision.model_id,
            ModelRevision.release_date,
            Environment.engine_name,
            Environment.engine_version,
            Environment.environment_id,
            Result.stage,
            Result.status,
            Result.started_at,
            Result.run_key,
            Result.failure_class,
        )
        .select_from(Result)
        .join(ModelRevision, ModelRevision.id == Result.model_revision_pk)
        .join(Environment, Environment.id == Result.environment_pk)
        .where(ModelRevision.model_id == model)
    )
    if engine is not None:
        query = query.where(Environment.engine_name == engine)
    utc = dt.timezone.utc
    return [
        Observation(
            model=r.model_id,
            engine=r.engine_name,
            engine_version=r.engine_version,
            stage=r.stage,
            status=r.status,
            started_at=r.started_at.replace(tzinfo=utc),
            environment_id=r.environment_id,
            run_id=r.run_key or None,
            failure_class=r.failure_class,
            release_date=r.release_date,
        )
        for r in session.execute(query)
    ]


# What moved since a cache was filled (service/views.py's HistoryCache)


def newest_result_id(session: Session) -> int | None:
    """The id of the newest stored result (primary key: O(1))."""
    return session.scalar(select(func.max(Result.id)))


def oldest_start_after(session: Session, result_id: int) -> dt.datetime | None:
    """The earliest start among the results stored after this one (a backfill starts early)."""
    return session.scalar(select(func.min(Result.started_at)).where(Result.id > result_id))


def models_with_results_after(session: Session, result_id: int) -> set[str]:
    """The models with a result stored after this one."""
    query = select(ModelRevision.model_id).where(
        ModelRevision.id.in_(select(Result.model_revision_pk).where(Result.id > result_id))
    )
    return set(session.scalars(query))


# The feed


def probes_since(session: Session, start: dt.datetime) -> list[Probe]:
    """Every probe started at or after `start` (naive: UTC), its one stage `probe`: its worst status."""
    day = func.date(Result.started_at)
    query = (
        select(
            ModelRevision.model_id,
            Environment.engine_name,
            Environment.engine_version,
            Environment.environment_id,
            Result.run_key,
            func.min(Result.started_at).label("t"),
            func.min(_rank()).label("rank"),
        )
        .select_from(Result)
        .join(ModelRevision, ModelRevision.id == Result.model_revision_pk)
        .join(Environment, Environment.id == Result.environment_pk)
        .where(Result.started_at >= start)
        .group_by(
            ModelRevision.model_id,
            Environment.engine_name,
            Environment.engine_version,
            Environment.environment_id,
            Result.run_key,
            day,
        )
    )
    return [
        Probe(
            model, engine, version, env, run_key or None, parse_time(t), {"probe": _worst(rank) or "skipped"}
        )
        for model, engine, version, env, run_key, t, rank in session.execute(query)
    ]


def green_before(session: Session, start: dt.datetime, model_ids: Iterable[str]) -> set[Cell]:
    """The (model, engine) of these models with a passing result started before `start`."""
    query = (
        select(ModelRevision.model_id, Environment.engine_name)
        .distinct()
        .select_from(Result)
        .join(ModelRevision, ModelRevision.id == Result.model_revision_pk)
        .join(Environment, Environment.id == Result.environment_pk)
        .where(
            Result.started_at < start,
            Result.status == GREEN,
            ModelRevision.model_id.in_(sorted(set(model_ids))),
        )
    )
    return {(m, e) for m, e in session.execute(query)}


# The architecture map


def arch_release_stages(
    session: Session, prefix: str = "arch/", *, hardware: str | None = None, tier: str | None = None
) -> list[Observation]:
    """The latest result of every stage of every sweep architecture in every engine release it
    ran in (one row per model revision x environment x stage, from cell_latest: the release
    timeline costs O(architectures x releases), never history), on one hardware and/or tier
    where given."""
    query = (
        select(
            *_OBSERVED,
        )
        .where(CellLatest.model_id.startswith(prefix, autoescape=True))
        .order_by(CellLatest.model_id, CellLatest.engine_name)
    )
    query = _narrowed(query, CellFilter(hardware=hardware, tier=tier))
    return [_cell_observation(r) for r in session.execute(query)]


@dataclass(frozen=True)
class MapOptions:
    """The values the map's hardware and tier filters can take (those of the sweep's copies)."""

    hardware: tuple[str, ...]
    tiers: tuple[str, ...]


def map_options(session: Session, prefix: str = "arch/") -> MapOptions:
    hardware = (
        select(Environment.hardware)
        .distinct()
        .join(CellLatest, CellLatest.environment_pk == Environment.id)
        .where(CellLatest.model_id.startswith(prefix, autoescape=True), Environment.hardware.is_not(None))
    )
    tiers = (
        select(Result.tier)
        .distinct()
        .join(CellLatest, CellLatest.result_pk == Result.id)
        .where(CellLatest.model_id.startswith(prefix, autoescape=True), Result.tier.is_not(None))
    )
    return MapOptions(
        tuple(sorted(h for h in session.scalars(hardware) if h)),
        tuple(sorted(t for t in session.scalars(tiers) if t)),
    )


@dataclass(frozen=True)
class ArchResult:
    """The latest result of one stage of an architecture's copy in one engine release (a
    cell_latest row with what its page shows: the red's reproduce line and confirmation)."""

    result_id: int
    model: str  # `arch/<type>`
    engine: str
    engine_version: str
    stage: str
    status: str
    failure_class: str | None
    message: str | None
    started_at: dt.datetime  # aware, UTC
    tier: str | None
    hardware: str | None
    reproduce: str | None
    log_path: str | None
    confirmed: bool | None
    confirmation: dict[str, Any] | None
    lineage: dict[str, Any] | None  # where the copy came from, as the record says

    def observation(self) -> Observation:
        return Observation(
            model=self.model,
            engine=self.engine,
            engine_version=self.engine_version,
            stage=self.stage,
            status=self.status,
            started_at=self.started_at,
            failure_class=self.failure_class,
            message=self.message,
        )


def arch_results(session: Session, model_ids: list[str]) -> list[ArchResult]:
    """Every release's latest result per stage of these architecture copies (`arch/<type>`),
    oldest first: O(engines x releases x stages) per copy, from cell_latest, never history."""
    if not model_ids:
        return []
    query = (
        select(
            Result.id,
            CellLatest.model_id,
            CellLatest.engine_name,
            CellLatest.engine_version,
            CellLatest.stage,
            CellLatest.status,
            CellLatest.failure_class,
            Result.message,
            CellLatest.started_at,
            Result.tier,
            Environment.hardware,
            Result.reproduce,
            Result.log_path,
            Result.confirmed,
            Result.confirmation,
            Result.raw,
        )
        .join(Result, Result.id == CellLatest.result_pk)
        .join(Environment, Environment.id == CellLatest.environment_pk)
        .where(CellLatest.model_id.in_(model_ids))
        .order_by(CellLatest.started_at, Result.id)
    )
    out = []
    for r in session.execute(query):
        lineage = ((r.raw or {}).get("model") or {}).get("lineage")
        out.append(
            ArchResult(
                result_id=r.id,
                model=r.model_id,
                engine=r.engine_name,
                engine_version=r.engine_version,
                stage=r.stage,
                status=r.status,
                failure_class=r.failure_class,
                message=r.message,
                started_at=parse_time(r.started_at),
                tier=r.tier,
                hardware=r.hardware,
                reproduce=r.reproduce,
                log_path=r.log_path,
                confirmed=r.confirmed,
                confirmation=r.confirmation if isinstance(r.confirmation, dict) else None,
                lineage=lineage if isinstance(lineage, dict) else None,
            )
        )
    return out


def arch_copies(session: Session, model_type: str, prefix: str = "arch/") -> list[str]:
    """The architecture copies (`arch/<type>` and its variants `arch/<type>+<variant>`) of a
    model type, by id: what a model page links to on the map."""
    if not model_type:
        return []
    exact = prefix + model_type
    query = (
        select(ModelRevision.model_id)
        .distinct()
        .where(
            or_(
                ModelRevision.model_id == exact,
                ModelRevision.model_id.startswith(exact + "+", autoescape=True),
            )
        )
        .order_by(ModelRevision.model_id)
    )
    return list(session.scalars(query))


# Search (the header's box)


@dataclass(frozen=True)
class SearchHit:
    kind: str  # "model" or "architecture"
    name: str  # the model id, or the architecture (without `arch/`)
    detail: str | None  # the model's type and family; nothing for an architecture


def search(session: Session, q: str, limit: int | None = 20, prefix: str = "arch/") -> list[SearchHit]:
    """Models and architectures whose name (a model's id, type or family) contains `q`, any
    case; exact names first, then names starting with it, then the rest, each by name. An
    empty `q` matches everything (the static export's index)."""
    needle = q.strip()
    is_arch = ModelRevision.model_id.startswith(prefix, autoescape=True)
    name = func.substr(ModelRevision.model_id, len(prefix) + 1)  # an architecture's own name
    length = func.length(ModelRevision.model_id).label("length")
    query = select(ModelRevision.model_id, ModelRevision.model_type, ModelRevision.family, length).distinct()
    if needle:
        query = query.where(
            or_(
                and_(is_arch, name.icontains(needle, autoescape=True)),
                and_(
                    ~is_arch,
                    or_(
                        ModelRevision.model_id.icontains(needle, autoescape=True),
                        ModelRevision.model_type.icontains(needle, autoescape=True),
                        ModelRevision.family.icontains(needle, autoescape=True),
                    ),
                ),
            )
        )
    if limit is not None:
        # Bounded however large the catalogue: of more matches than 50 x limit, the shortest
        # names (an exact name is among them), ranked below.
        query = query.order_by(length, ModelRevision.model_id).limit(50 * limit)
    facts: dict[str, tuple[set[str], set[str]]] = {}
    for model_id, model_type, family, _length in session.execute(query):
        types, families = facts.setdefault(model_id, (set(), set()))
        if model_type:
            types.add(model_type)
        if family:
            families.add(family)
    hits = []
    for model_id, (types, families) in facts.items():
        if model_id.startswith(prefix):
            hits.append(SearchHit("architecture", model_id[len(prefix) :], None))
        else:
            detail = " · ".join(sorted(types) + sorted(families - types)) or None
            hits.append(SearchHit("model", model_id, detail))
    folded = needle.casefold()

    def rank(h: SearchHit) -> tuple[int, str, str]:
        name = h.name.casefold()
        tail = name.rsplit("/", 1)[-1]
        place = (
            0 if folded in (name, tail) else 1 if name.startswith(folded) or tail.startswith(folded) else 2
        )
        return (place if folded else 0, name, h.kind)

    hits.sort(key=rank)
    return hits if limit is None else hits[:limit]


def result_record(session: Session, result_id: int) -> dict[str, Any] | None:
    """One stored record (the contract, without `output`) by its id, or None."""
    raw = session.scalar(select(Result.raw).where(Result.id == result_id))
    return None if raw is None else {k: v for k, v in dict(raw).items() if k != "output"}


# Engine releases: what each fixed and broke, support data, bisect


def engine_release_stages(
    session: Session, engine: str | None = None, model: str | None = None
) -> list[Observation]:
    """The latest result of every stage of every model in every release of one engine (or of
    every engine), with its failure class and message, from cell_latest: what
    matrix/release_diff.py, matrix/compat_data.py and matrix/bisect.py read. One row per model
    revision x environment x stage, so O(models x releases), never history."""
    query = (
        select(
            *_OBSERVED,
            Result.message,
            Environment.environment_id,
        )
        .join(Result, Result.id == CellLatest.result_pk)
        .join(Environment, Environment.id == CellLatest.environment_pk)
        .order_by(CellLatest.engine_name, CellLatest.model_id)
    )
    if engine is not None:
        query = query.where(CellLatest.engine_name == engine)
    if model is not None:
        query = query.where(CellLatest.model_id == model)
    return [_cell_observation(r) for r in session.execute(query)]


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
    lock_id: str | None = None
    resolutions: frozenset[str] = frozenset()  # "release" and / or "today" (matrix/locks.py)
    exclude_newer: str | None = None


def environment_packages(session: Session, environment_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """environment id -> its resolved packages, for the ids given."""
    ids = sorted(set(environment_ids))
    if not ids:
        return {}
    query = select(Environment.environment_id, Environment.packages).where(
        Environment.environment_id.in_(ids)
    )
    return {r.environment_id: dict(r.packages or {}) for r in session.execute(query)}


def engine_environments(session: Session, engine: str) -> list[EngineEnvironment]:
    """The environments of one engine (every version, every hardware), oldest first."""
    query = (
        select(
            Environment.environment_id,
            Environment.engine_version,
            Environment.hardware,
            Environment.created,
            Environment.packages,
            Environment.lock_id,
            Environment.resolutions,
            Environment.exclude_newer,
        )
        .where(Environment.engine_name == engine)
        .order_by(Environment.id)
    )
    return [
        EngineEnvironment(
            r.environment_id,
            r.engine_version,
            r.hardware,
            r.created,
            dict(r.packages or {}),
            r.lock_id,
            frozenset(filter(None, (r.resolutions or "").split(","))),
            r.exclude_newer,
        )
        for r in session.execute(query)
    ]


# /healthz


def ping(session: Session) -> None:
    """Asks the store the one trivial question (SQLAlchemyError: it cannot be read)."""
    session.execute(text("SELECT 1"))
