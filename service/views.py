"""What each page says, as plain JSON-able dicts: one function per page, used by the HTML
renderer, the `.json` twins, the API and the static export alike (datasette's one renderer).

Cost rules (a page must stay fast as history grows):
- the latest state of a cell comes from `cell_latest` (one row per model revision x environment
  x stage), never from a scan of `results`;
- the matrix reads only the rows of the models on the page (paginated);
- the strip of the last N nights reads, per cell and stage, the results since a cutoff through
  the results' natural-key index (model revision, environment, stage, started_at): O(page x N);
- a page about one model or one cell reads that model's (cell's) history, which is bounded by
  one model's nights, not by the size of the store.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy.orm import Session

from matrix import archmap, compat_data, locks, queries, release_diff
from matrix import summary as S
from probes.record import verdict_fields
from probes.stages import ARCH_MAP_STAGES, STAGES, STATUSES

STRIP_NIGHTS = 14
DTG_HORIZON_DAYS = 60  # the matrix looks for a cell's first green this long after release
PER_PAGE = 50
MESSAGE_CHARS = 300  # of a failure message shown in the matrix (the cell page has it all)
TIERS = ("arch", "full")

RANKED = queries.RANKED  # worst first

LEGEND: tuple[tuple[str, str, str], ...] = (
    ("pass", "✓", "works: the stage did what it should"),
    ("degraded", "≈", "works, worse than it should (drift, fallback, slow)"),
    ("fail", "✗", "does not work: the engine's incompatibility with the model"),
    ("oom", "M", "did not fit the hardware it ran on"),
    ("timeout", "T", "did not finish in its time limit"),
    ("error", "!", "our side failed (infrastructure); not the engine's fault"),
    ("skipped", "–", "not run: blocked by a stage it needs, or gated"),
    ("n/a", "∅", "no verdict: does not apply (an encoder or seq2seq model in a map of generators)"),
    ("needs-gpu", "G", "no verdict: the engine has no path on this hardware (a CUDA-only kernel)"),
)
GLYPH = {status: glyph for status, glyph, _ in LEGEND}


def iso(value: dt.datetime | dt.date | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return S.parse_time(value).isoformat().replace("+00:00", "Z")
    return value.isoformat()


def _short(text: str | None, n: int = MESSAGE_CHARS) -> str | None:
    if text is None or len(text) <= n:
        return text
    return text[: n - 1] + "…"


# The model catalogue (one row per model id; O(model revisions), never history)


@dataclass(frozen=True)
class ModelFacts:
    model: str
    family: str
    model_type: str | None
    architecture: str | None
    release_date: dt.date | None
    first_seen: dt.datetime
    revisions: tuple[str, ...]

    def sort_key(self) -> tuple[Any, ...]:
        return (self.release_date or self.first_seen.date(), self.first_seen, self.model)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "family": self.family,
            "model_type": self.model_type,
            "architecture": self.architecture,
            "release_date": iso(self.release_date),
            "first_seen": iso(self.first_seen),
            "revisions": list(self.revisions),
        }


def catalog(session: Session, model_ids: Iterable[str] | None = None) -> dict[str, ModelFacts]:
    """Facts per model id from its revisions (the newest revision that states a fact wins).
    A model without a family is grouped under its model type, else `unknown`."""
    facts: dict[str, dict[str, Any]] = {}
    for rev in queries.model_revisions(session, model_ids):
        f = facts.setdefault(rev.model, {"first_seen": rev.created, "revisions": []})
        f["revisions"].append(rev.revision)
        for key in ("family", "model_type", "architecture", "release_date"):
            if getattr(rev, key) is not None:
                f[key] = getattr(rev, key)
    return {
        m: ModelFacts(
            m,
            f.get("family") or f.get("model_type") or "unknown",
            f.get("model_type"),
            f.get("architecture"),
            f.get("release_date"),
            f["first_seen"],
            tuple(f["revisions"]),
        )
        for m, f in facts.items()
    }


def newest_first(models: Iterable[ModelFacts]) -> list[ModelFacts]:
    """Grouped by family (the family with the newest model first), newest model first inside."""
    models = sorted(models, key=ModelFacts.sort_key, reverse=True)
    family_rank: dict[str, int] = {}
    for m in models:
        family_rank.setdefault(m.family, len(family_rank))
    return sorted(models, key=lambda m: family_rank[m.family])  # stable: keeps newest first


# The matrix


@dataclass(frozen=True)
class Filters:
    family: str | None = None
    engine: str | None = None
    hardware: str | None = None
    tier: str | None = None
    status: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "family": self.family,
            "engine": self.engine,
            "hardware": self.hardware,
            "tier": self.tier,
            "status": self.status,
        }

    @property
    def cells(self) -> queries.CellFilter:
        """The engine / hardware / tier filters as the reads take them (an empty one: any)."""
        return queries.CellFilter(self.engine or None, self.hardware or None, self.tier or None)


def _cells(rows: list[queries.CellResult]) -> dict[str, dict[str, dict[str, Any]]]:
    """model -> engine -> cell, each cell its current state (`summary.current`: the newest
    engine version seen for the cell, the latest result per stage within it)."""
    by_cell: dict[tuple[str, str], dict[str, Any]] = defaultdict(dict)
    for (model, engine, stage), r in S.current(rows).items():
        by_cell[(model, engine)][stage] = r
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (model, engine), stages in by_cell.items():
        ordered = sorted(stages.values(), key=lambda r: (_stage_order(r.stage), r.stage))
        status = S.worst_status(r.status for r in ordered)
        why = next((r for r in ordered if r.status == status), None)
        tiers = sorted({r.tier for r in ordered if r.tier})
        out[model][engine] = {
            "engine": engine,
            "engine_version": ordered[0].engine_version,
            "status": status,
            "glyph": GLYPH.get(status or "", "?"),
            "tier": "+".join(tiers) or None,
            "hardware": sorted({r.hardware for r in ordered if r.hardware}),
            "last_run": iso(max(r.started_at for r in ordered)),
            "stages": {
                r.stage: {
                    "status": r.status,
                    "failure_class": r.failure_class,
                    "message": _short(r.message),
                    "tier": r.tier,
                    "started_at": iso(r.started_at),
                    **bare_check(r.confirmed, r.confirmation),
                }
                for r in ordered
            },
            "why": None
            if why is None or status in ("pass", None)
            else {
                "stage": why.stage,
                "failure_class": why.failure_class,
                "message": _short(why.message),
                **bare_check(why.confirmed, why.confirmation),
            },
        }
    return out


# What a red's bare reproduction said (matrix/confirm.py), in the reader's words.
BARE_LABELS = {
    "confirmed": "confirmed bare",
    "differs": "not confirmed",
    "harness_disagrees": "harness disagrees",
    "no_verdict": "no bare verdict",
}


def bare_check(confirmed: bool | None, confirmation: dict[str, Any] | None) -> dict[str, Any]:
    """The confirmation fields a page shows next to a result."""
    c = confirmation or {}
    return {
        "confirmed": confirmed,
        "bare": BARE_LABELS.get(c.get("verdict") or ""),
        "bare_message": c.get("message"),
        "bare_log_path": c.get("log_path"),
        "bare_command": c.get("command"),
        "bare_line": c.get("bare_line"),
        "probe_line": c.get("probe_line"),
        "probe_log_path": c.get("probe_log_path"),
    }


_STAGE_INDEX = {stage: i for i, stage in enumerate(STAGES)}


def runs(strip: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A strip run-length encoded (TestGrid's compact rows): consecutive nights with the same
    status become one run {status, first, last, nights}."""
    out: list[dict[str, Any]] = []
    for night in strip:
        if out and out[-1]["status"] == night["status"]:
            out[-1]["last"] = night["night"]
            out[-1]["nights"] += 1
        else:
            out.append(
                {"status": night["status"], "first": night["night"], "last": night["night"], "nights": 1}
            )
    return out


def _stage_order(stage: str) -> int:
    return _STAGE_INDEX.get(stage, len(_STAGE_INDEX))


def strips(
    session: Session, model_ids: list[str], f: Filters, nights: list[dt.date]
) -> dict[tuple[str, str], dict[str, str]]:
    """(model, engine) -> {night (ISO date): worst status that night}, for the given nights
    (the page times N nights: `queries.night_statuses`)."""
    if not nights:
        return {}
    out: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for n in queries.night_statuses(session, model_ids, nights[0], f.cells):
        out[(n.model, n.engine)][n.night] = n.status
    return out


def first_greens(
    session: Session, models: list[ModelFacts], f: Filters, horizon_days: int = DTG_HORIZON_DAYS
) -> dict[tuple[str, str], dt.datetime]:
    """(model, engine) -> start of its first green probe, looked for in the model's first
    `horizon_days` after release (bounded like the strips: `queries.first_greens`). A cell that
    turned green only later reads "over the horizon" on the matrix (`days_to_green_over`); its
    cell page has the exact figure from the full history."""
    released = {m.model: m.release_date for m in models if m.release_date}
    greens = queries.first_greens(session, released, horizon_days, f.engine or None)
    return {(g.model, g.engine): g.at for g in greens}


def options(session: Session, models: Iterable[ModelFacts]) -> dict[str, list[str]]:
    """The values each filter can take (engines and hardware from the environments table)."""
    return {
        "family": sorted({m.family for m in models}),
        "engine": queries.engine_names(session),
        "hardware": queries.hardware_names(session),
        "tier": list(TIERS),
        "status": list(STATUSES),
    }


def _models_with_cells(session: Session, f: Filters) -> set[str] | None:
    """Models with a cell matching the engine / hardware / tier filters (None: no such filter).
    Reads cell_latest only (O(cells), never history)."""
    if not (f.engine or f.hardware or f.tier):
        return None
    return queries.models_with_cells(session, f.cells)


class HistoryCache:
    """Facts about the past that the matrix reads from history (strip squares, first greens),
    kept between requests in this process and dropped exactly when new results could change
    them: each request first reads the newest result id (primary key, O(1)); when it moved,
    the oldest `started_at` among the new rows (a primary-key range) says from which night on
    the cached facts are stale. A backfill of old nights is therefore seen too."""

    def __init__(self, max_models: int = 20_000) -> None:
        self.lock = threading.Lock()
        self.last_id: int | None = None
        self.last_change: int | None = None  # the newest reclassification seen
        self.last_confirmed: dt.datetime | None = None
        self.max_models = max_models
        # (hardware, tier) -> model -> night (ISO) -> engine -> status; nights listed in `known`
        self.strips: dict[tuple[Any, Any], dict[str, dict[str, dict[str, str]]]] = {}
        self.known: dict[tuple[Any, Any], dict[str, set[str]]] = {}
        # model -> (window end, {engine: first green})
        self.greens: dict[str, tuple[dt.datetime, dict[str, dt.datetime]]] = {}
        # whole views about one model (its page, its cells, its summaries): (kind, model, ...)
        self.views: OrderedDict[tuple[str, ...], Any] = OrderedDict()
        self.max_views = 512

    def sync(self, session: Session) -> None:
        newest = queries.newest_result_id(session)
        changed = queries.newest_reclassification(session)
        # A confirmation updates a stored row (no new id): its time moves the cache too.
        confirmed = queries.newest_confirmation(session)
        with self.lock:
            if (changed, confirmed) != (self.last_change, self.last_confirmed):
                self.clear()  # stored classes or confirmations were revised
                self.last_change, self.last_confirmed = changed, confirmed
            if newest == self.last_id:
                return
            if self.last_id is None or newest is None or newest < self.last_id:
                self.clear()  # first use, or the store was emptied / replaced
            else:
                oldest = queries.oldest_start_after(session, self.last_id)
                if oldest is not None:
                    self.forget_from(S.parse_time(oldest).replace(tzinfo=None))
                touched = queries.models_with_results_after(session, self.last_id)
                # A key naming a prefix (`arch/`: the map) covers every model under it.
                self.views = OrderedDict(
                    (k, v)
                    for k, v in self.views.items()
                    if k[1] not in touched
                    and not (k[1].endswith("/") and any(m.startswith(k[1]) for m in touched))
                )
            self.last_id = newest

    def view(self, session: Session, key: tuple[str, ...], compute: Any) -> Any:
        """A view about the model `key[1]`, computed once until results for it arrive."""
        self.sync(session)
        with self.lock:
            if key in self.views:
                self.views.move_to_end(key)
                return self.views[key]
        data = compute()
        with self.lock:
            self.views[key] = data
            while len(self.views) > self.max_views:
                self.views.popitem(last=False)
        return data

    def clear(self) -> None:
        self.views.clear()
        self.strips.clear()
        self.known.clear()
        self.greens.clear()

    def forget_from(self, when: dt.datetime) -> None:
        night = when.date().isoformat()
        for key, models in self.known.items():
            for model, nights in models.items():
                stale = {n for n in nights if n >= night}
                nights -= stale
                for n in stale:
                    self.strips[key].get(model, {}).pop(n, None)
        self.greens = {m: v for m, v in self.greens.items() if v[0] <= when}

    def bounded(self) -> None:
        if sum(len(m) for m in self.known.values()) + len(self.greens) > self.max_models:
            self.clear()


def matrix_view(
    session: Session,
    filters: Filters = Filters(),
    *,
    page: int = 1,
    per_page: int = PER_PAGE,
    nights: int = STRIP_NIGHTS,
    today: dt.date | None = None,
    cache: HistoryCache | None = None,
) -> dict[str, Any]:
    """The front page: models (grouped by family, newest first) x engines."""
    if cache is not None:
        cache.sync(session)
    models = catalog(session)
    opts = options(session, models.values())
    chosen = [
        m for m in newest_first(models.values()) if filters.family is None or m.family == filters.family
    ]
    with_cells = _models_with_cells(session, filters)
    if with_cells is not None:
        chosen = [m for m in chosen if m.model in with_cells]
    if filters.status:
        # The status of a cell is computed (worst stage of the newest version): decide it for
        # every candidate, then paginate. A stage-level prefilter keeps the candidates few.
        having = queries.models_with_cells(session, status=filters.status)
        candidates = [m for m in chosen if m.model in having]
        cells = _cells(queries.cell_results(session, [m.model for m in candidates], filters.cells))
        chosen = [
            m
            for m in candidates
            if any(c["status"] == filters.status for c in cells.get(m.model, {}).values())
        ]
    total = len(chosen)
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    on_page = chosen[(page - 1) * per_page : page * per_page]
    ids = [m.model for m in on_page]
    if not filters.status:
        cells = _cells(queries.cell_results(session, ids, filters.cells))
    newest = max((c["last_run"] for row in cells.values() for c in row.values()), default=None)
    end = today or (S.parse_time(newest).date() if newest else dt.date.today())
    night_list = [end - dt.timedelta(days=n) for n in range(nights - 1, -1, -1)]
    strip = _cached_strips(session, ids, filters, night_list, cache) if nights else {}
    greens = _cached_greens(session, on_page, cache)
    columns = [filters.engine] if filters.engine else opts["engine"]
    groups: list[dict[str, Any]] = []
    for m in on_page:
        row_cells = cells.get(m.model, {})
        for engine, cell in row_cells.items():
            by_night = strip.get((m.model, engine), {})
            cell["strip"] = [
                {"night": n.isoformat(), "status": by_night.get(n.isoformat())} for n in night_list
            ]
            cell["runs"] = runs(cell["strip"])
            first = greens.get((m.model, engine))
            cell["days_to_green"] = (first.date() - m.release_date).days if first and m.release_date else None
            # green now but not within the horizon: it took longer than that
            cell["days_to_green_over"] = (
                DTG_HORIZON_DAYS if first is None and m.release_date and cell["status"] == "pass" else None
            )
        row = {**m.as_dict(), "cells": row_cells}
        if not groups or groups[-1]["family"] != m.family:
            groups.append({"family": m.family, "models": []})
        groups[-1]["models"].append(row)
    return {
        "as_of": end.isoformat(),
        "filters": filters.as_dict(),
        "options": opts,
        "engines": columns,
        "nights": [n.isoformat() for n in night_list],
        "page": page,
        "pages": pages,
        "per_page": per_page,
        "total_models": total,
        "families": groups,
        "legend": [{"status": s, "glyph": g, "meaning": t} for s, g, t in LEGEND],
    }


def _cached_strips(
    session: Session, ids: list[str], f: Filters, nights: list[dt.date], cache: HistoryCache | None
) -> dict[tuple[str, str], dict[str, str]]:
    if cache is None:
        return strips(session, ids, f, nights)
    key = (f.hardware, f.tier)
    wanted = [n.isoformat() for n in nights]
    with cache.lock:
        known = cache.known.setdefault(key, {})
        missing = [m for m in ids if not set(wanted) <= known.get(m, set())]
        first_missing = min(
            (n for m in missing for n in wanted if n not in known.get(m, set())), default=None
        )
    if missing and first_missing is not None:
        fresh = strips(
            session,
            missing,
            Filters(hardware=f.hardware, tier=f.tier),
            [n for n in nights if n.isoformat() >= first_missing],
        )
        with cache.lock:
            cache.bounded()
            store = cache.strips.setdefault(key, {})
            known = cache.known.setdefault(key, {})
            for m in missing:
                row = store.setdefault(m, {})
                for n in wanted:
                    if n >= first_missing:
                        row[n] = {}
                known.setdefault(m, set()).update(n for n in wanted if n >= first_missing)
            for (m, engine), by_night in fresh.items():
                for n, status in by_night.items():
                    store[m].setdefault(n, {})[engine] = status
    with cache.lock:
        store = cache.strips.get(key, {})
        out: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
        for m in ids:
            for n in wanted:
                for engine, status in store.get(m, {}).get(n, {}).items():
                    if f.engine is None or engine == f.engine:
                        out[(m, engine)][n] = status
    return out


def _cached_greens(
    session: Session, models: list[ModelFacts], cache: HistoryCache | None
) -> dict[tuple[str, str], dt.datetime]:
    if cache is None:
        return first_greens(session, models, Filters())
    with cache.lock:
        missing = [m for m in models if m.release_date and m.model not in cache.greens]
    if missing:
        fresh = first_greens(session, missing, Filters())
        with cache.lock:
            cache.bounded()
            for m in missing:
                end = dt.datetime.combine(m.release_date, dt.time()) + dt.timedelta(days=DTG_HORIZON_DAYS)
                cache.greens[m.model] = (end, {e: t for (mm, e), t in fresh.items() if mm == m.model})
    with cache.lock:
        return {
            (m.model, e): t
            for m in models
            if m.model in cache.greens
            for e, t in cache.greens[m.model][1].items()
        }


# One model, one engine, one cell


def _summaries(results: list[Any], now: dt.datetime) -> list[dict[str, Any]]:
    return [s.as_dict() for s in S.summarize(results, now)]


def model_view(session: Session, model_id: str, now: dt.datetime | None = None) -> dict[str, Any] | None:
    """Every engine x stage for one model: current state, summaries, the probes in order."""
    facts = catalog(session, [model_id]).get(model_id)
    if facts is None:
        return None
    now = now or dt.datetime.now(dt.timezone.utc)
    cells = _cells(queries.cell_results(session, [model_id])).get(model_id, {})
    records = queries.model_observations(session, model_id)
    stages = sorted({st for c in cells.values() for st in c["stages"]}, key=lambda s: (_stage_order(s), s))
    probes = sorted(S.probes(records), key=lambda p: p.started_at, reverse=True)
    return {
        **facts.as_dict(),
        "engines": sorted(cells),
        "stages": stages,
        "cells": cells,
        "summaries": _summaries(records, now),
        "probes": [_probe_dict(p) for p in probes[:200]],
    }


def _probe_dict(p: S.Probe) -> dict[str, Any]:
    return {
        "model": p.model,
        "engine": p.engine,
        "engine_version": p.engine_version,
        "environment_id": p.environment_id,
        "run_id": p.run_id,
        "started_at": iso(p.started_at),
        "status": p.status,
        "stages": p.stages,
    }


# The packages that decide an engine's behaviour, shown beside each environment.
KEY_PACKAGES = locks.DECISIVE[:5]


def _environment_row(e: queries.EngineEnvironment) -> dict[str, Any]:
    return {
        "environment_id": e.environment_id,
        "version": e.engine_version,
        "hardware": e.hardware,
        "created": iso(e.created),
        "lock_id": e.lock_id,
        "resolutions": sorted(e.resolutions),
        "exclude_newer": e.exclude_newer,
        "key_packages": {p: (e.packages or {}).get(p) for p in KEY_PACKAGES},
    }


def engine_drift(
    session: Session, name: str, version: str | None = None
) -> list[release_diff.DependencyDrift]:
    """The models whose verdict in a release differs between its release-day lock and the
    lock installed today (matrix/locks.py)."""
    locked = [
        release_diff.LockedEnvironment(e.environment_id, e.resolutions, dict(e.packages or {}), e.created)
        for e in queries.engine_environments(session, name)
    ]
    drifts = release_diff.dependency_drift(name, queries.engine_release_stages(session, name), locked)
    return [d for d in drifts if version is None or d.version == version]


def _release_row(d: release_diff.ReleaseDiff, envs: list[queries.EngineEnvironment]) -> dict[str, Any]:
    """One release as the engine page lists it (model ids under fixed / broke / new_green,
    each change in full under `changes`)."""
    counts = d.counts
    return {
        "version": d.version,
        "previous": d.previous,
        "models": len(d.verdicts),
        "counts": {s: counts.get(s, 0) for s in RANKED},
        "fixed": [c.model for c in d.fixed],
        "broke": [c.model for c in d.broke],
        "new_green": [c.model for c in d.new_green],
        "regressions": len(d.regressions),
        "headline": d.headline(),
        "changes": {
            "fixed": [c.as_dict() for c in d.fixed],
            "broke": [c.as_dict() for c in d.broke],
            "new_green": [c.as_dict() for c in d.new_green],
        },
        "hardware": sorted({e.hardware for e in envs if e.engine_version == d.version and e.hardware}),
    }


def engine_diffs(session: Session, name: str) -> list[release_diff.ReleaseDiff]:
    return release_diff.release_diffs(name, queries.engine_release_stages(session, name))


def engine_view(session: Session, name: str) -> dict[str, Any] | None:
    """Every version of one engine and what each fixed or broke against the version before
    (matrix/release_diff.py over cell_latest: O(models x versions), not history)."""
    envs = queries.engine_environments(session, name)
    if not envs:
        return None
    diffs = engine_diffs(session, name)
    return {
        "engine": name,
        "versions": [_release_row(d, envs) for d in reversed(diffs)],
        "drift": [d.as_dict() for d in engine_drift(session, name)],
        "environments": [
            {**_environment_row(e), "packages": dict(sorted((e.packages or {}).items()))} for e in envs
        ],
    }


def engine_release_view(
    session: Session, name: str, version: str, diffs: list[release_diff.ReleaseDiff] | None = None
) -> dict[str, Any] | None:
    """/engines/{name}/{version}: one release against the release before it: what it fixed,
    broke (each regression flagged) and newly greened, and every model's verdict in it.
    `diffs`: the engine's diffs already computed (the export renders every release)."""
    if diffs is None:
        diffs = engine_diffs(session, name)
    wanted = S.version_key(version)
    at = next(
        (i for i, d in enumerate(diffs) if d.version == version or S.version_key(d.version) == wanted), None
    )
    if at is None:
        return None
    d = diffs[at]
    envs = [e for e in queries.engine_environments(session, name) if e.engine_version == d.version]
    return {
        **d.as_dict(),
        "counts": {s: d.counts.get(s, 0) for s in RANKED},
        "next": diffs[at + 1].version if at + 1 < len(diffs) else None,
        "drift": [x.as_dict() for x in engine_drift(session, name, d.version)],
        "environments": [_environment_row(e) for e in envs],
    }


def compat_view(session: Session, now: dt.datetime | None = None) -> dict[str, Any]:
    """The support data in MDN browser-compat-data's shape (matrix/compat_data.py)."""
    return compat_data.compat_document(
        queries.engine_release_stages(session), now or dt.datetime.now(dt.timezone.utc)
    )


def cell_view(
    session: Session, model_id: str, engine: str, now: dt.datetime | None = None, limit: int = 500
) -> dict[str, Any] | None:
    """One model in one engine: current state, summary, and the full history (newest first)
    with failure class, log excerpt and the command that reproduces each result."""
    records = queries.results(session, model=model_id, engine_name=engine, limit=limit, with_output=False)
    if not records:
        return None
    now = now or dt.datetime.now(dt.timezone.utc)
    facts = catalog(session, [model_id]).get(model_id)
    cell = (
        _cells(queries.cell_results(session, [model_id], Filters(engine=engine).cells))
        .get(model_id, {})
        .get(engine)
    )
    summary = next(iter(_summaries(queries.model_observations(session, model_id, engine), now)), None)
    history = [
        {
            "started_at": r["started_at"],
            "engine_version": r["engine"]["version"],
            "environment_id": S.environment_id(r["engine"]),
            "hardware": r["engine"].get("hardware"),
            "run_id": r.get("run_id"),
            **verdict_fields(r),
            "reproduce": r.get("reproduce"),
            "duration_s": r.get("duration_s"),
            "metrics": r.get("metrics") or {},
            **bare_check(r.get("confirmed"), r.get("confirmation")),
        }
        for r in records
    ]
    latest_failure = next((h for h in history if h["status"] not in ("pass", "skipped")), None)
    return {
        "model": model_id,
        "engine": engine,
        "facts": facts.as_dict() if facts else None,
        "cell": cell,
        "summary": summary,
        "latest_failure": latest_failure,
        "history": history,
        "native": native_view(records, model_id, engine),
        "drift": [d.as_dict() for d in engine_drift(session, engine) if d.model == model_id],
        "truncated": len(records) == limit,
    }


def native_view(records: list[dict[str, Any]], model_id: str, engine: str) -> dict[str, Any] | None:
    """When a cell whose current load runs on the transformers fallback was last native
    (matrix/native.py: the other releases' records and the engine's recorded registries)."""
    from matrix.engine_registry import load_registry
    from matrix.native import architecture_of, is_fallback, native_history

    loads = [r for r in records if r["stage"] == "load"]
    if not loads:
        return None
    newest = max(
        loads, key=lambda r: (S.version_key(str(r["engine"]["version"])), S.parse_time(r["started_at"]))
    )
    if not is_fallback(newest) or newest["status"] != "degraded":
        return None
    return native_history(
        records,
        model=model_id,
        engine=engine,
        current=str(newest["engine"]["version"]),
        architecture=architecture_of(newest),
        registry=load_registry(engine),
    ).as_dict()


# Lists for the API


def models_list(
    session: Session, *, family: str | None = None, limit: int = 100, offset: int = 0
) -> dict[str, Any]:
    models = [m for m in newest_first(catalog(session).values()) if family is None or m.family == family]
    return {
        "total": len(models),
        "offset": offset,
        "limit": limit,
        "models": [m.as_dict() for m in models[offset : offset + limit]],
    }


def engines_list(session: Session) -> dict[str, Any]:
    engines: dict[str, dict[str, set[str]]] = defaultdict(lambda: {"versions": set(), "hardware": set()})
    for e in queries.engine_versions(session):
        engines[e.engine]["versions"].add(e.version)
        if e.hardware:
            engines[e.engine]["hardware"].add(e.hardware)
    return {
        "engines": [
            {
                "engine": name,
                "versions": sorted(e["versions"], key=S.version_key, reverse=True),
                "hardware": sorted(e["hardware"]),
            }
            for name, e in sorted(engines.items())
        ]
    }


def summaries_view(
    session: Session, model_id: str, engine: str | None = None, now: dt.datetime | None = None
) -> dict[str, Any]:
    records = queries.model_observations(session, model_id, engine)
    return {
        "model": model_id,
        "engine": engine,
        "summaries": _summaries(records, now or dt.datetime.now(dt.timezone.utc)),
    }


def results_page(
    session: Session,
    *,
    model: str | None = None,
    engine: str | None = None,
    stage: str | None = None,
    status: str | None = None,
    since: dt.datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    return queries.results(
        session,
        model=model,
        engine=engine,
        stage=stage,
        since=since,
        limit=limit,
        offset=offset,
        status=status,
    )


def current_cell(session: Session, model_id: str, engine: str) -> dict[str, Any] | None:
    """The current state of one cell, from cell_latest only."""
    return (
        _cells(queries.cell_results(session, [model_id], Filters(engine=engine).cells))
        .get(model_id, {})
        .get(engine)
    )


def fresh(data: dict[str, Any] | None, now: dt.datetime | None = None) -> dict[str, Any] | None:
    """A cached view with `stale` recomputed for now (the one summary that moves with the clock,
    matrix.summary.staleness's rule); a copy, so the cached one stays as it was."""
    if data is None:
        return None
    now = now or dt.datetime.now(dt.timezone.utc)
    max_age = dt.timedelta(days=2)

    def update(summary: dict[str, Any]) -> dict[str, Any]:
        return {**summary, "stale": now - S.parse_time(summary["last_seen"]) > max_age}

    out = dict(data)
    if out.get("summaries") is not None:
        out["summaries"] = [update(x) for x in out["summaries"]]
    if out.get("summary") is not None:
        out["summary"] = update(out["summary"])
    return out


# The architecture map

PLOT_W, PLOT_H, PLOT_PAD = 360, 140, 24  # the share-green plot's box, in SVG user units


def share_plot(shares: list[archmap.GreenShare]) -> dict[str, Any]:
    """Where one engine's share-green line goes in its SVG box (releases evenly spaced, oldest
    left; 0% at the bottom), so the template only draws."""
    inner_w, inner_h = PLOT_W - 2 * PLOT_PAD, PLOT_H - 2 * PLOT_PAD
    step = inner_w / (len(shares) - 1) if len(shares) > 1 else 0.0
    dots = [
        {
            "x": round(PLOT_PAD + (i * step if len(shares) > 1 else inner_w / 2), 1),
            "y": round(PLOT_PAD + (100.0 - s.percent) / 100.0 * inner_h, 1),
            "version": s.version,
            "green": s.green,
            "total": s.total,
            "percent": s.percent,
        }
        for i, s in enumerate(shares)
    ]
    return {
        "width": PLOT_W,
        "height": PLOT_H,
        "pad": PLOT_PAD,
        "top": PLOT_PAD,
        "bottom": PLOT_H - PLOT_PAD,
        "right": PLOT_W - PLOT_PAD,
        "points": " ".join(f"{d['x']},{d['y']}" for d in dots),
        "dots": dots,
    }


def _map_base(session: Session, hardware: str | None = None, tier: str | None = None) -> dict[str, Any]:
    """The whole map (every engine, no filter of rows) with its timelines and plots, over the
    results on `hardware` and of `tier` only where given."""
    records = queries.results(
        session, model_prefix=archmap.ARCH_PREFIX, with_output=False, hardware=hardware, tier=tier
    )
    doc = archmap.map_document(records)
    timeline = archmap.release_timeline(queries.arch_release_stages(session, hardware=hardware, tier=tier))
    shares = archmap.green_share(timeline, doc["not_generative"])
    facts: dict[str, dict[str, dict[str, set[str]]]] = {}
    for r in records:  # which hardware and tiers each cell ran on (a static page filters so)
        arch = r["model"]["id"][len(archmap.ARCH_PREFIX) :]
        f = facts.setdefault(arch, {}).setdefault(r["engine"]["name"], {"hardware": set(), "tier": set()})
        if r["engine"].get("hardware"):
            f["hardware"].add(r["engine"]["hardware"])
        if r.get("tier"):
            f["tier"].add(r["tier"])
    return {
        **doc,
        "all_engines": doc["engines"],
        "facts": {
            a: {e: {k: sorted(v) for k, v in f.items()} for e, f in engines.items()}
            for a, engines in facts.items()
        },
        "timeline": {
            a: {e: [{"version": r.version, "status": r.status} for r in rs] for e, rs in engines.items()}
            for a, engines in timeline.items()
        },
        "green_share": {
            e: [{"version": s.version, "green": s.green, "total": s.total, "percent": s.percent} for s in ss]
            for e, ss in shares.items()
        },
        "plots": {e: share_plot(ss) for e, ss in shares.items()},
    }


def map_view(
    session: Session, filters: archmap.MapFilters | None = None, *, cache: HistoryCache | None = None
) -> dict[str, Any]:
    """/map: architecture x engine (the CLI's `dayone map --json` document, narrowed by the
    filters), each cell's release timeline, the share green per release per engine."""
    filters = filters or archmap.MapFilters()
    hardware, tier = filters.hardware, filters.tier

    def compute() -> dict[str, Any]:
        return _map_base(session, hardware, tier)

    # One cached map per (hardware, tier); key[1], the `arch/` prefix, drops them all when
    # a sweep result arrives.
    base = (
        cache.view(session, ("map", archmap.ARCH_PREFIX, hardware or "", tier or ""), compute)
        if cache is not None
        else compute()
    )
    out = archmap.filter_document(base, filters)
    kept = set(out["cells"]) | set(out["not_generative"])
    out["timeline"] = {
        a: {e: rs for e, rs in engines.items() if e in out["engines"]}
        for a, engines in base["timeline"].items()
        if a in kept
    }
    out["lineage_kind"] = {a: archmap.lineage_kind(out["lineage"].get(a)) for a in kept}
    out["facts"] = {
        a: {e: f for e, f in engines.items() if e in out["engines"]}
        for a, engines in base["facts"].items()
        if a in kept
    }
    choices = queries.map_options(session)
    out["options"] = {
        "engine": base["all_engines"],
        "status": list(STATUSES),
        "lineage": list(archmap.LINEAGE_KINDS),
        "hardware": list(choices.hardware),
        "tier": list(choices.tiers),
    }
    out["legend"] = [{"status": s, "glyph": g, "meaning": m} for s, g, m in LEGEND]
    return out


# One architecture (/map/{arch})

RED = ("fail", "timeout", "oom")


def _red(r: queries.ArchResult) -> dict[str, Any]:
    """One red of an architecture's page: where it ran, its bare command, its confirmation."""
    return {
        "result_id": r.result_id,
        "engine": r.engine,
        "engine_version": r.engine_version,
        "stage": r.stage,
        "status": r.status,
        "failure_class": r.failure_class,
        "message": _short(r.message),
        "started_at": iso(r.started_at),
        "tier": r.tier,
        "hardware": r.hardware,
        "reproduce": r.reproduce,
        "log_path": r.log_path,
        "verdict": (r.confirmation or {}).get("verdict"),
        **bare_check(r.confirmed, r.confirmation),
    }


def _lineage(rows: list[queries.ArchResult]) -> dict[str, Any] | None:
    """The copy's lineage as its newest record says."""
    return next((r.lineage for r in reversed(rows) if r.lineage), None)


def arch_spans(rows: list[queries.ArchResult]) -> dict[str, dict[str, Any]]:
    """{architecture: {engine: its release timeline and span}} over `arch_results` rows."""
    timeline = archmap.release_timeline(r.observation() for r in rows)
    return {
        arch: {
            e: {
                "releases": [{"version": x.version, "status": x.status} for x in rs],
                "span": archmap.release_span(e, rs).as_dict(),
            }
            for e, rs in engines.items()
        }
        for arch, engines in timeline.items()
    }


def _stage_of(cell: dict[str, Any] | None, stage: str) -> dict[str, Any] | None:
    """A stage of a map cell, also where it sits in a sub-cell of its own (quant, lora)."""
    for part in (cell, *((cell or {}).get(k) for k in ("quant", "lora"))):
        found = (part or {}).get("stages", {}).get(stage)
        if found is not None:
            return found
    return None


def arch_view(session: Session, arch: str) -> dict[str, Any] | None:
    """One architecture of the map: every engine's cell with its arch stages and classes (the
    map's cell, as /map computes it), its release timeline with since when it works or broke,
    the copy's lineage, the last-native note of a fallback cell, and every red (each release's
    latest per stage) with its bare reproduce command and confirmation. None: no such copy.

    Reads one model's history (the copy `arch/<arch>`), as a model page does."""
    model_id = archmap.ARCH_PREFIX + arch
    rows = queries.arch_results(session, [model_id])
    if not rows:
        return None
    doc = archmap.map_document(queries.results(session, model=model_id, with_output=False))
    apart = doc["not_generative"].get(arch)
    cells = doc["cells"].get(arch) or (apart or {}).get("cells") or {}
    spans = arch_spans(rows).get(arch, {})
    lineage = _lineage(rows)
    engines = []
    # the map's column order: inference engines first, the fine-tune group last
    for engine in archmap.inference_engines(sorted({r.engine for r in rows})) + archmap.finetune_engines(
        sorted({r.engine for r in rows})
    ):
        mine = [r for r in rows if r.engine == engine]
        newest = max(mine, key=lambda r: (S.version_key(r.engine_version), r.started_at))
        cell = cells.get(engine)
        reds = sorted(
            (r for r in mine if r.status in RED or r.confirmation),
            key=lambda r: (S.version_key(r.engine_version), r.started_at),
            reverse=True,
        )
        span = spans.get(engine, {})
        engines.append(
            {
                "engine": engine,
                "engine_version": newest.engine_version,
                "cell": cell,
                "glyph": GLYPH.get((cell or {}).get("status") or "", "?"),
                "stages": {st: _stage_of(cell, st) for st in ARCH_MAP_STAGES},
                "other_stages": {
                    st: v for st, v in (cell or {}).get("stages", {}).items() if st not in ARCH_MAP_STAGES
                },
                "releases": span.get("releases", []),
                "span": span.get("span"),
                "hardware": sorted({r.hardware for r in mine if r.hardware}),
                "tiers": sorted({r.tier for r in mine if r.tier}),
                "last_run": iso(max(r.started_at for r in mine)),
                "reds": [_red(r) for r in reds],
            }
        )
    return {
        "architecture": arch,
        "model": model_id,
        "lineage": lineage,
        "lineage_kind": archmap.lineage_kind(lineage),
        "generative": apart is None,
        "why_apart": (apart or {}).get("why"),
        "stages": list(ARCH_MAP_STAGES),
        "engines": engines,
    }


def arch_tier(session: Session, model_id: str, model_type: str | None) -> list[dict[str, Any]]:
    """A model page's arch tier: the copies of its architecture on the map (its own row when
    the model is one), each with its lineage and, per engine, since when it works."""
    if model_id.startswith(archmap.ARCH_PREFIX):
        ids = [model_id]
    else:
        ids = queries.arch_copies(session, model_type or "")
    rows = queries.arch_results(session, ids)
    spans = arch_spans(rows)
    out = []
    for mid in ids:
        mine = [r for r in rows if r.model == mid]
        arch = mid[len(archmap.ARCH_PREFIX) :]
        lineage = _lineage(mine)
        out.append(
            {
                "architecture": arch,
                "lineage": lineage,
                "lineage_kind": archmap.lineage_kind(lineage),
                "from_this_model": bool(lineage and lineage.get("repo") == model_id),
                "engines": [{"engine": e, **v} for e, v in sorted(spans.get(arch, {}).items())],
            }
        )
    return out


def model_page_view(
    session: Session, model_id: str, cache: HistoryCache | None = None
) -> dict[str, Any] | None:
    """/models/{id}: `model_view` (cached per model) with its arch tier read fresh (sweep
    results of the copies do not drop the model's cache; the read is O(engines x releases))."""

    def compute() -> dict[str, Any] | None:
        return model_view(session, model_id)

    data = fresh(cache.view(session, ("model", model_id), compute) if cache is not None else compute())
    if data is None:
        return None
    return {**data, "arch_tier": arch_tier(session, model_id, data.get("model_type"))}


# Search (the header's box)

SEARCH_LIMIT = 20


def search_view(session: Session, q: str | None, limit: int | None = SEARCH_LIMIT) -> dict[str, Any]:
    """Models and architectures matching `q` (see queries.search). No `q`: nothing, unless
    `limit` is None (the static export's whole index)."""
    q = (q or "").strip()
    hits = queries.search(session, q, limit) if q or limit is None else []
    return {
        "q": q,
        "search_q": q,
        "results": [{"kind": h.kind, "name": h.name, "detail": h.detail} for h in hits],
        "limit": limit,
    }


def result_record(session: Session, result_id: int) -> dict[str, Any] | None:
    """One stored record by its id (a red's link on an architecture's page)."""
    return queries.result_record(session, result_id)
