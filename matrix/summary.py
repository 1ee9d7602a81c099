"""Pure summaries over results: no database, no I/O. Input is contract records (dicts, as
`queries.results` returns them) or `Observation`s; every function takes either.

Vocabulary:
- cell: (model, engine). Its *current* state is the newest engine version seen for it, and
  within that version the latest result per stage (a backfill of an old version run tonight
  must not repaint today's matrix with that version's verdicts).
- probe: the results of one model in one environment in one run (all its stages).
- series: a cell's probes in order of (engine version, time): consecutive engine versions and
  consecutive nights of one version are neighbours in it.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Union

from packaging.version import InvalidVersion, Version

from probes.record import environment_id as _environment_id

# The one order of statuses, worst first. Only these say something about the engine; a cell or a
# probe is the worst of them. `error` (ours), `needs-gpu` and `n/a` (no verdict: no path on this
# hardware / does not apply) and `skipped` (blocked) count only when nothing meaningful is there,
# in this order.
MEANINGFUL: tuple[str, ...] = ("fail", "timeout", "oom", "degraded", "pass")
FALLBACK: tuple[str, ...] = ("error", "needs-gpu", "n/a", "skipped")
WORKING: frozenset[str] = frozenset({"pass", "degraded"})
BROKEN: frozenset[str] = frozenset({"fail", "timeout", "oom"})
GREEN = "pass"  # what "supported since" and "days to green" count

# Results of one model in one environment without a run id belong to one probe unless a stage
# repeats or this much time passes between them.
PROBE_GAP = dt.timedelta(hours=1)

Cell = tuple[str, str]  # (model, engine)


@dataclass(frozen=True)
class Observation:
    """The fields of a result that summaries read."""

    model: str
    engine: str
    engine_version: str
    stage: str
    status: str
    started_at: dt.datetime  # aware, UTC
    environment_id: str = ""
    run_id: str | None = None
    failure_class: str | None = None
    release_date: dt.date | None = None
    message: str | None = None


ResultLike = Union[Observation, Mapping[str, Any]]


def parse_time(value: str | dt.datetime) -> dt.datetime:
    """An ISO 8601 time (or datetime) as aware UTC; naive means UTC."""
    t = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


def parse_date(value: str | dt.date | None) -> dt.date | None:
    if value is None or isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.datetime):
        return value.date()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return dt.datetime.fromisoformat(value).date()


def environment_id(engine: Mapping[str, Any]) -> str:
    """The record's environment id, else the stable hash probes use for it."""
    return engine.get("environment_id") or _environment_id(dict(engine))


def observe(result: ResultLike) -> Observation:
    if isinstance(result, Observation):
        return result
    model, engine = result["model"], result["engine"]
    return Observation(
        model=model["id"],
        engine=engine["name"],
        engine_version=engine["version"],
        stage=result["stage"],
        status=result["status"],
        started_at=parse_time(result["started_at"]),
        environment_id=environment_id(engine),
        run_id=result.get("run_id"),
        failure_class=result.get("failure_class"),
        release_date=parse_date(model.get("release_date")),
        message=result.get("message"),
    )


def observations(results: Iterable[ResultLike]) -> list[Observation]:
    return [observe(r) for r in results]


@lru_cache(maxsize=4096)
def version_key(version: str) -> tuple[int, Any]:
    """packaging order; versions that are not PEP 440 sort below all that are, by text."""
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


def worst_status(statuses: Iterable[str]) -> str | None:
    """The worst meaningful status; `error`, then `skipped`, only when there is nothing else."""
    present = set(statuses)
    for status in MEANINGFUL + FALLBACK:
        if status in present:
            return status
    return None


def _newer(a: Observation, b: Observation) -> bool:
    return (version_key(a.engine_version), a.started_at) > (version_key(b.engine_version), b.started_at)


# Current state


def current(results: Iterable[ResultLike]) -> dict[tuple[str, str, str], Observation]:
    """(model, engine, stage) -> its latest result within the cell's newest engine version."""
    obs = observations(results)
    newest: dict[Cell, tuple[int, Any]] = {}
    for o in obs:
        key = version_key(o.engine_version)
        if key > newest.get((o.model, o.engine), (-1, "")):
            newest[(o.model, o.engine)] = key
    out: dict[tuple[str, str, str], Observation] = {}
    for o in obs:
        if version_key(o.engine_version) != newest[(o.model, o.engine)]:
            continue
        k = (o.model, o.engine, o.stage)
        if k not in out or o.started_at > out[k].started_at:
            out[k] = o
    return out


def latest_status(results: Iterable[ResultLike]) -> dict[tuple[str, str, str], str]:
    """(model, engine, stage) -> current status."""
    return {k: o.status for k, o in current(results).items()}


def cell_status(results: Iterable[ResultLike]) -> dict[Cell, str | None]:
    """(model, engine) -> the worst meaningful of its stages' current statuses."""
    by_cell: dict[Cell, list[str]] = defaultdict(list)
    for (model, engine, _stage), o in current(results).items():
        by_cell[(model, engine)].append(o.status)
    return {cell: worst_status(statuses) for cell, statuses in by_cell.items()}


# Probes and series


@dataclass(frozen=True)
class Probe:
    """One model in one environment in one run: its stages and their worst status."""

    model: str
    engine: str
    engine_version: str
    environment_id: str
    run_id: str | None
    started_at: dt.datetime
    stages: dict[str, str] = field(hash=False)

    @property
    def status(self) -> str | None:
        return worst_status(self.stages.values())

    @property
    def broken_stages(self) -> list[str]:
        return [s for s, status in self.stages.items() if status in BROKEN]


def probes(results: Iterable[ResultLike]) -> list[Probe]:
    """Group results into probes: by run id where there is one, else by time (see PROBE_GAP)."""
    groups: dict[tuple[Any, ...], list[Observation]] = defaultdict(list)
    for o in observations(results):
        groups[(o.model, o.engine, o.engine_version, o.environment_id, o.run_id)].append(o)
    out: list[Probe] = []
    for (model, engine, version, env, run_id), obs in groups.items():
        obs.sort(key=lambda o: o.started_at)
        batches: list[list[Observation]] = []
        for o in obs:
            batch = batches[-1] if batches else None
            if (
                batch is None
                or run_id is None
                and (
                    any(b.stage == o.stage for b in batch) or o.started_at - batch[-1].started_at > PROBE_GAP
                )
            ):
                batches.append([o])
            else:
                batch.append(o)
        for batch in batches:
            stages: dict[str, str] = {}
            for o in batch:  # by time: a stage repeated within a run keeps its latest status
                stages[o.stage] = o.status
            out.append(Probe(model, engine, version, env, run_id, batch[0].started_at, stages))
    return out


def series(results: Iterable[ResultLike]) -> dict[Cell, list[Probe]]:
    """(model, engine) -> its probes ordered by (engine version, time)."""
    out: dict[Cell, list[Probe]] = defaultdict(list)
    for p in probes(results):
        out[(p.model, p.engine)].append(p)
    for ps in out.values():
        ps.sort(key=lambda p: (version_key(p.engine_version), p.started_at))
    return dict(out)


def _meaningful(ps: list[Probe]) -> list[Probe]:
    return [p for p in ps if p.status in MEANINGFUL]


# The version axis


def version_status(results: Iterable[ResultLike]) -> dict[tuple[str, str, str], str | None]:
    """(model, engine, engine version) -> worst meaningful of that version's latest per stage."""
    latest: dict[tuple[str, str, str, str], Observation] = {}
    for o in observations(results):
        k = (o.model, o.engine, o.engine_version, o.stage)
        if k not in latest or o.started_at > latest[k].started_at:
            latest[k] = o
    by_version: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for (model, engine, version, _stage), o in latest.items():
        by_version[(model, engine, version)].append(o.status)
    return {k: worst_status(v) for k, v in by_version.items()}


def supported_since(results: Iterable[ResultLike]) -> dict[Cell, str | None]:
    """(model, engine) -> the lowest engine version whose latest verdict is green, or None."""
    out: dict[Cell, str | None] = {}
    for (model, engine, version), status in version_status(results).items():
        cell = (model, engine)
        out.setdefault(cell, None)
        best = out[cell]
        if status == GREEN and (best is None or version_key(version) < version_key(best)):
            out[cell] = version
    return out


def release_dates(results: Iterable[ResultLike]) -> dict[str, dt.date]:
    """model -> its release date, from any result that carries one."""
    return {o.model: o.release_date for o in observations(results) if o.release_date}


def first_green(results: Iterable[ResultLike]) -> dict[Cell, Probe | None]:
    """(model, engine) -> its earliest green probe (by time, any engine version), or None."""
    out: dict[Cell, Probe | None] = {}
    for cell, ps in series(results).items():
        greens = [p for p in ps if p.status == GREEN]
        out[cell] = min(greens, key=lambda p: p.started_at) if greens else None
    return out


def days_to_green(results: Iterable[ResultLike]) -> dict[Cell, int | None]:
    """(model, engine) -> days from the model's release to its first green probe; None when
    the release date is unknown or it never was green. Negative if probed green before the
    stated release (a wrong release date, most likely), reported as is."""
    obs = observations(results)
    released = release_dates(obs)
    out: dict[Cell, int | None] = {}
    for (model, engine), probe in first_green(obs).items():
        date = released.get(model)
        out[(model, engine)] = (probe.started_at.date() - date).days if probe and date else None
    return out


# Time series: failing since, last pass, regressions, flakiness, staleness


@dataclass(frozen=True)
class Streak:
    last_pass: Probe | None  # the newest green probe in the series
    failing_since: Probe | None  # first probe of the trailing run of broken ones, if broken now


def failing_since(results: Iterable[ResultLike]) -> dict[Cell, Streak]:
    out: dict[Cell, Streak] = {}
    for cell, ps in series(results).items():
        ps = _meaningful(ps)
        last_pass = next((p for p in reversed(ps) if p.status == GREEN), None)
        since = None
        for p in reversed(ps):
            if p.status not in BROKEN:
                break
            since = p
        out[cell] = Streak(last_pass, since)
    return out


@dataclass(frozen=True)
class Regression:
    model: str
    engine: str
    before: Probe  # working
    after: Probe  # broken, the next meaningful probe in the series

    @property
    def across_versions(self) -> bool:
        return self.before.engine_version != self.after.engine_version


def regressions(results: Iterable[ResultLike]) -> list[Regression]:
    """Working -> broken between neighbours in a cell's series (versions or nights)."""
    out: list[Regression] = []
    for (model, engine), ps in series(results).items():
        ps = _meaningful(ps)
        for before, after in zip(ps, ps[1:]):
            if before.status in WORKING and after.status in BROKEN:
                out.append(Regression(model, engine, before, after))
    return out


@dataclass(frozen=True)
class Flakiness:
    engine_version: str
    statuses: tuple[str, ...]  # oldest first, meaningful only, the last N
    flips: int  # working <-> broken changes between neighbours

    @property
    def flaky(self) -> bool:
        return self.flips > 0


def flakiness(results: Iterable[ResultLike], last_n: int = 10) -> dict[tuple[str, str, str, str], Flakiness]:
    """(model, engine, environment id, stage) -> flips over its last N meaningful results.
    One environment pins the engine version and hardware, so a flip there is not a fix or a
    regression of the engine: it is flakiness."""
    groups: dict[tuple[str, str, str, str], list[Observation]] = defaultdict(list)
    for o in observations(results):
        if o.status in MEANINGFUL:
            groups[(o.model, o.engine, o.environment_id, o.stage)].append(o)
    out: dict[tuple[str, str, str, str], Flakiness] = {}
    for key, obs in groups.items():
        obs = sorted(obs, key=lambda o: o.started_at)[-last_n:]
        working = [o.status in WORKING for o in obs]
        flips = sum(a != b for a, b in zip(working, working[1:]))
        out[key] = Flakiness(obs[-1].engine_version, tuple(o.status for o in obs), flips)
    return out


@dataclass(frozen=True)
class Staleness:
    last_seen: dt.datetime
    age: dt.timedelta
    stale: bool


def staleness(
    results: Iterable[ResultLike], now: dt.datetime, max_age: dt.timedelta = dt.timedelta(days=2)
) -> dict[Cell, Staleness]:
    """(model, engine) -> when it last had any result, and whether that is older than max_age."""
    now = parse_time(now)
    last: dict[Cell, dt.datetime] = {}
    for o in observations(results):
        cell = (o.model, o.engine)
        if cell not in last or o.started_at > last[cell]:
            last[cell] = o.started_at
    return {cell: Staleness(t, now - t, now - t > max_age) for cell, t in last.items()}


# One row per cell


@dataclass(frozen=True)
class CellSummary:
    model: str
    engine: str
    status: str | None
    engine_version: str  # the newest seen
    supported_since: str | None
    days_to_green: int | None
    last_pass: Probe | None
    failing_since: Probe | None
    regressions: int
    flaky_stages: tuple[str, ...]
    last_seen: dt.datetime
    stale: bool

    def as_dict(self) -> dict[str, Any]:
        def probe(p: Probe | None) -> dict[str, Any] | None:
            return (
                None
                if p is None
                else {"engine_version": p.engine_version, "started_at": p.started_at.isoformat()}
            )

        return {
            "model": self.model,
            "engine": self.engine,
            "status": self.status,
            "engine_version": self.engine_version,
            "supported_since": self.supported_since,
            "days_to_green": self.days_to_green,
            "last_pass": probe(self.last_pass),
            "failing_since": probe(self.failing_since),
            "regressions": self.regressions,
            "flaky_stages": list(self.flaky_stages),
            "last_seen": self.last_seen.isoformat(),
            "stale": self.stale,
        }


def summarize(
    results: Iterable[ResultLike],
    now: dt.datetime,
    *,
    last_n: int = 10,
    max_age: dt.timedelta = dt.timedelta(days=2),
) -> list[CellSummary]:
    """Every summary above, one row per (model, engine), sorted by model then engine."""
    obs = observations(results)
    statuses = cell_status(obs)
    newest = {(o.model, o.engine): o.engine_version for o in current(obs).values()}
    since = supported_since(obs)
    days = days_to_green(obs)
    streaks = failing_since(obs)
    regressed: dict[Cell, int] = defaultdict(int)
    for r in regressions(obs):
        regressed[(r.model, r.engine)] += 1
    flaky: dict[Cell, set[str]] = defaultdict(set)
    for (model, engine, _env, stage), f in flakiness(obs, last_n).items():
        if f.flaky:
            flaky[(model, engine)].add(stage)
    seen = staleness(obs, now, max_age)
    return [
        CellSummary(
            model=cell[0],
            engine=cell[1],
            status=statuses[cell],
            engine_version=newest[cell],
            supported_since=since.get(cell),
            days_to_green=days.get(cell),
            last_pass=streaks[cell].last_pass,
            failing_since=streaks[cell].failing_since,
            regressions=regressed[cell],
            flaky_stages=tuple(sorted(flaky[cell])),
            last_seen=seen[cell].last_seen,
            stale=seen[cell].stale,
        )
        for cell in sorted(statuses)
    ]


SUMMARY_COLUMNS = (
    "model",
    "engine",
    "status",
    "version",
    "supported since",
    "days to green",
    "failing since",
    "last pass",
    "regressions",
    "flaky",
    "stale",
)


def summary_rows(summaries: Iterable[CellSummary]) -> list[tuple[str, ...]]:
    """Plain text cells for a terminal table, in SUMMARY_COLUMNS order."""

    def when(p: Probe | None) -> str:
        return "-" if p is None else f"{p.engine_version} ({p.started_at.date().isoformat()})"

    return [
        (
            s.model,
            s.engine,
            s.status or "-",
            s.engine_version,
            s.supported_since or "-",
            "-" if s.days_to_green is None else str(s.days_to_green),
            when(s.failing_since),
            when(s.last_pass),
            str(s.regressions),
            ",".join(s.flaky_stages) or "-",
            f"yes (last {s.last_seen.date().isoformat()})" if s.stale else "no",
        )
        for s in summaries
    ]


def summary_table(summaries: Iterable[CellSummary]) -> str:
    """The summaries as an aligned plain-text table (`dayone results --summary`)."""
    rows = [SUMMARY_COLUMNS, *summary_rows(summaries)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(SUMMARY_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
