"""The Atom feed: regressions (working -> broken), new greens (a cell's first green probe), and
each engine release's diff against the release before it (matrix/release_diff.py: "vllm 0.32.0:
3 architectures fixed, 1 broken: qwen3_5_moe_text parity wrong_output"), dated by the release's
first result.

Reads the results of a recent window (by the started_at index), grouped into probes in SQL,
plus a few nights before it so a transition at the window's start has its "before". Transitions
across a gap longer than that lookback are not reported (the cell page has the full story).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from matrix import locks, queries, release_diff
from matrix import summary as S
from service import render, views
from service.links import Links

WINDOW_DAYS = 7
LOOKBACK_DAYS = 3
MAX_ENTRIES = 200


@dataclass(frozen=True)
class Entry:
    # "regression", "new_green", "release" (one engine release's diff) or "dependency_drift"
    # (working -> broken in one release whose environment changed: its dependencies moved)
    kind: str
    model: str
    engine: str
    at: dt.datetime
    status: str | None
    engine_version: str
    before_status: str | None = None
    before_version: str | None = None
    headline: str | None = None  # a release entry's title

    @property
    def title(self) -> str:
        if self.kind == "release" and self.headline:
            return self.headline
        if self.kind == "dependency_drift":
            return (
                f"Dependency drift: {self.model} in {self.engine} {self.engine_version}: "
                f"{self.before_status} → {self.status}, the engine unchanged"
                + (f" ({self.headline})" if self.headline else "")
            )
        if self.kind == "regression":
            return (
                f"Regression: {self.model} in {self.engine} {self.engine_version}: "
                f"{self.before_status} ({self.before_version}) → {self.status}"
            )
        return f"New green: {self.model} runs in {self.engine} {self.engine_version}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.model,
            "engine": self.engine,
            "at": views.iso(self.at),
            "status": self.status,
            "engine_version": self.engine_version,
            "before_status": self.before_status,
            "before_version": self.before_version,
            "title": self.title,
        }


def entries(
    probes: list[S.Probe],
    since: dt.datetime,
    green_before: set[tuple[str, str]],
    packages: Mapping[str, Mapping[str, str]] | None = None,
) -> list[Entry]:
    """Pure: the feed's entries from probes (oldest may precede `since`), newest first.
    `green_before`: cells known to have been green before the probes begin. `packages`: each
    environment's packages, to say what moved in a dependency drift."""
    packages = packages or {}
    obs = [
        S.Observation(
            model=p.model,
            engine=p.engine,
            engine_version=p.engine_version,
            stage="probe",
            status=p.status or "skipped",
            started_at=p.started_at,
            environment_id=p.environment_id,
            run_id=p.run_id,
        )
        for p in probes
    ]
    out: list[Entry] = []
    for r in S.regressions(obs):
        if r.after.started_at >= since:
            drifted = _drifted(r)
            moved = (
                locks.describe_drift(
                    locks.drift(
                        packages.get(r.before.environment_id, {}), packages.get(r.after.environment_id, {})
                    )
                )
                if drifted and packages
                else None
            )
            out.append(
                Entry(
                    "dependency_drift" if drifted else "regression",
                    r.model,
                    r.engine,
                    r.after.started_at,
                    r.after.status,
                    r.after.engine_version,
                    r.before.status,
                    r.before.engine_version,
                    headline=moved,
                )
            )
    for (model, engine), first in S.first_green(obs).items():
        if first is not None and first.started_at >= since and (model, engine) not in green_before:
            out.append(
                Entry("new_green", model, engine, first.started_at, first.status, first.engine_version)
            )
    out.sort(key=lambda e: (e.at, e.kind, e.model, e.engine), reverse=True)
    return out[:MAX_ENTRIES]


def _drifted(r: S.Regression) -> bool:
    """The same release broke in another environment: a new lock, not a new engine."""
    return not r.across_versions and r.before.environment_id != r.after.environment_id


def release_entries(diffs: list[release_diff.ReleaseDiff], since: dt.datetime) -> list[Entry]:
    """Pure: one entry per engine release first probed since `since` that changed something
    against the release before it (a first release probed has nothing to compare with)."""
    return [
        Entry(
            "release",
            "",
            d.engine,
            d.first_result,
            None,
            d.version,
            before_version=d.previous,
            headline=d.headline(),
        )
        for d in diffs
        if d.first_result is not None and d.first_result >= since and d.previous is not None and d.changed
    ]


def _green_before(session: Session, start: dt.datetime, cells: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these cells had a passing result before `start` (a stage-level check: a cell
    with any earlier pass is not announced as new)."""
    if not cells:
        return set()
    return queries.green_before(session, start, (m for m, _ in cells)) & cells


def feed_view(session: Session, now: dt.datetime | None = None, days: int = WINDOW_DAYS) -> dict[str, Any]:
    now = S.parse_time(now or dt.datetime.now(dt.timezone.utc))
    since = now - dt.timedelta(days=days)
    start = since - dt.timedelta(days=LOOKBACK_DAYS)
    probes = queries.probes_since(session, start.replace(tzinfo=None))
    greens = {(p.model, p.engine) for p in probes if p.status == S.GREEN and p.started_at >= since}
    envs = {p.environment_id for p in probes}
    items = entries(
        probes,
        since,
        _green_before(session, start.replace(tzinfo=None), greens),
        queries.environment_packages(session, envs),
    )
    stages = queries.engine_release_stages(session)
    for engine in sorted({o.engine for o in stages}):
        items += release_entries(release_diff.release_diffs(engine, stages), since)
    items.sort(key=lambda e: (e.at, e.kind, e.model, e.engine), reverse=True)
    items = items[:MAX_ENTRIES]
    return {
        "updated": views.iso(items[0].at if items else now),
        "since": views.iso(since),
        "entries": [e.as_dict() for e in items],
    }


def atom(data: dict[str, Any], links: Links, site: str = "") -> str:
    return render.environment().get_template("feed.atom").render(data=data, links=links, site=site)
