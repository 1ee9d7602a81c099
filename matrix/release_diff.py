"""What each engine release fixed, broke and newly greened against the release before it (pure).

Input: the latest result of every stage of every model in every release of one engine
(`queries.engine_release_stages`, from cell_latest: O(models x releases), never history), as
`summary.Observation`s. Releases are ordered by `packaging` (`summary.version_key`).

- A model's verdict in a release (`Verdict`) is the worst meaningful status over its stages'
  latest results there (`summary.worst_status`), with the stage that decided it (the first in
  the stage list with that status) and its failure class: "parity wrong_output".
- Each release is compared with the previous release of the same engine; a model that the
  previous release did not probe is compared with its verdict in the newest earlier release
  that did (`before_version` says which). A release's own no-verdict results (`error`,
  `skipped`, `n/a`, `needs-gpu`) never count as a change.
- `fixed`: broken (fail / timeout / oom) before, working (pass / degraded) now.
  `broke`: working before, broken now: a regression, flagged (`regression`), the one the
  feed announces and `dayone bisect` narrows to the first bad release.
  `new_green`: pass now and not pass before, not counted as fixed (first seen green, or
  degraded / no verdict before).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from matrix import locks
from matrix import summary as S
from probes.stages import QUANT_STAGES, STAGES

ARCH_PREFIX = "arch/"
HEADLINE_CHANGES = 5  # broken cells named in a headline; the page lists them all
_STAGE_INDEX = {stage: i for i, stage in enumerate(STAGES)}


def label(model: str) -> str:
    """How a headline names a model: a sweep architecture by its type alone."""
    return model[len(ARCH_PREFIX) :] if model.startswith(ARCH_PREFIX) else model


@dataclass(frozen=True)
class Verdict:
    """One model in one release: its worst meaningful status and the stage that decided it."""

    status: str
    stage: str | None = None
    failure_class: str | None = None
    message: str | None = None

    @property
    def working(self) -> bool:
        return self.status in S.WORKING

    @property
    def broken(self) -> bool:
        return self.status in S.BROKEN

    @property
    def why(self) -> str:
        """`parity wrong_output`, `load timeout`, `pass`."""
        if self.status == S.GREEN or self.stage is None:
            return self.status
        return f"{self.stage} {self.failure_class or self.status}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "stage": self.stage,
            "failure_class": self.failure_class,
            "message": self.message,
            "why": self.why,
        }


@dataclass(frozen=True)
class Change:
    model: str
    after: Verdict
    before: Verdict | None = None
    before_version: str | None = None

    @property
    def regression(self) -> bool:
        return self.before is not None and self.before.working and self.after.broken

    def describe(self) -> str:
        """`qwen3_5_moe_text parity wrong_output`."""
        return f"{label(self.model)} {self.after.why}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "label": label(self.model),
            "before_version": self.before_version,
            "before": self.before.as_dict() if self.before else None,
            "after": self.after.as_dict(),
            "regression": self.regression,
            "describe": self.describe(),
        }


@dataclass(frozen=True)
class ReleaseDiff:
    engine: str
    version: str
    previous: str | None  # the release before it with verdicts (None: the first probed)
    verdicts: dict[str, Verdict]  # model -> its verdict in this release
    fixed: tuple[Change, ...]
    broke: tuple[Change, ...]
    new_green: tuple[Change, ...]
    first_result: dt.datetime | None  # when this release's first (kept) result started
    last_result: dt.datetime | None

    @property
    def regressions(self) -> tuple[Change, ...]:
        return tuple(c for c in self.broke if c.regression)

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for v in self.verdicts.values():
            out[v.status] += 1
        return dict(out)

    @property
    def changed(self) -> bool:
        return bool(self.fixed or self.broke or self.new_green)

    def headline(self) -> str:
        """`vllm 0.32.0: 3 architectures fixed, 1 broken: qwen3_5_moe_text parity
        wrong_output` (the feed's entry title)."""
        head = f"{self.engine} {self.version}"
        if self.previous is None:
            green = sum(1 for v in self.verdicts.values() if v.status == S.GREEN)
            return (
                f"{head}: first release probed, {green} of {len(self.verdicts)} "
                f"{_noun(self.verdicts, len(self.verdicts))} green"
            )
        if not self.changed:
            return f"{head}: no change against {self.previous}"
        parts: list[str] = []
        noun_done = False
        changed = [c.model for c in self.fixed + self.broke + self.new_green]
        for n, what in (
            (len(self.fixed), "fixed"),
            (len(self.broke), "broken"),
            (len(self.new_green), "newly green"),
        ):
            if not n:
                continue
            parts.append(f"{n} {_noun(changed, n)} {what}" if not noun_done else f"{n} {what}")
            noun_done = True
        text = f"{head}: {', '.join(parts)}"
        if self.broke:
            named = [c.describe() for c in self.broke[:HEADLINE_CHANGES]]
            more = len(self.broke) - len(named)
            text += ": " + "; ".join(named) + (f"; and {more} more" if more else "")
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "version": self.version,
            "previous": self.previous,
            "models": len(self.verdicts),
            "counts": self.counts,
            "fixed": [c.as_dict() for c in self.fixed],
            "broke": [c.as_dict() for c in self.broke],
            "new_green": [c.as_dict() for c in self.new_green],
            "regressions": len(self.regressions),
            "headline": self.headline(),
            "first_result": _iso(self.first_result),
            "last_result": _iso(self.last_result),
            "verdicts": {m: v.as_dict() for m, v in sorted(self.verdicts.items())},
        }


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else S.parse_time(t).isoformat().replace("+00:00", "Z")


def _noun(models: Iterable[str], n: int) -> str:
    models = list(models)
    arch = sum(1 for m in models if m.startswith(ARCH_PREFIX))
    word = "architecture" if arch == len(models) else "model" if arch == 0 else "cell"
    return word if n == 1 else word + "s"


def verdict_of(stages: Sequence[S.Observation]) -> Verdict | None:
    """The worst meaningful status over one model's stages in one release (None: no stage with
    a verdict); the deciding stage is the first in the stage list with that status."""
    status = S.worst_status(o.status for o in stages)
    if status is None:
        return None
    decider = min(
        (o for o in stages if o.status == status),
        key=lambda o: (_STAGE_INDEX.get(o.stage, len(_STAGE_INDEX)), o.stage),
    )
    return Verdict(
        status=status, stage=decider.stage, failure_class=decider.failure_class, message=decider.message
    )


def release_verdicts(observations: Iterable[S.Observation]) -> dict[str, dict[str, Verdict]]:
    """engine version -> model -> verdict (the latest result per stage, then the worst). The
    quantized copies' stages are left out, as the map's cell leaves them: a release's verdict is
    on the engine running the model as released."""
    latest: dict[tuple[str, str, str], S.Observation] = {}
    for o in observations:
        if o.stage in QUANT_STAGES:
            continue
        k = (o.engine_version, o.model, o.stage)
        if k not in latest or o.started_at > latest[k].started_at:
            latest[k] = o
    grouped: dict[tuple[str, str], list[S.Observation]] = defaultdict(list)
    for (version, model, _stage), o in latest.items():
        grouped[(version, model)].append(o)
    out: dict[str, dict[str, Verdict]] = defaultdict(dict)
    for (version, model), stages in grouped.items():
        v = verdict_of(stages)
        if v is not None:
            out[version][model] = v
    return dict(out)


def release_diffs(engine: str, observations: Iterable[S.Observation]) -> list[ReleaseDiff]:
    """Every release of `engine` with results, oldest first, each against the one before."""
    obs = [o for o in observations if o.engine == engine]
    times: dict[str, list[dt.datetime]] = defaultdict(list)
    for o in obs:
        times[o.engine_version].append(o.started_at)
    verdicts = release_verdicts(obs)
    versions = sorted(times, key=S.version_key)
    out: list[ReleaseDiff] = []
    seen: dict[str, tuple[str, Verdict]] = {}  # model -> (version, its newest verdict before)
    previous: str | None = None
    for version in versions:
        now = verdicts.get(version, {})
        fixed, broke, green = [], [], []
        for model, after in sorted(now.items()):
            before_version, before = seen.get(model, (None, None))
            if before is None:
                if after.status == S.GREEN:
                    green.append(Change(model, after, before, before_version))
                continue
            change = Change(model, after, before, before_version)
            if before.broken and after.working:
                fixed.append(change)
            elif before.working and after.broken:
                broke.append(change)
            elif after.status == S.GREEN and before.status != S.GREEN:
                green.append(change)
        out.append(
            ReleaseDiff(
                engine=engine,
                version=version,
                previous=previous,
                verdicts=now,
                fixed=tuple(fixed),
                broke=tuple(broke),
                new_green=tuple(green),
                first_result=min(times[version]),
                last_result=max(times[version]),
            )
        )
        for model, v in now.items():
            if v.status in S.MEANINGFUL:  # a no-verdict result leaves the last verdict standing
                seen[model] = (version, v)
        if any(v.status in S.MEANINGFUL for v in now.values()):
            previous = version
    return out


def release_diff(engine: str, version: str, observations: Iterable[S.Observation]) -> ReleaseDiff | None:
    """One release's diff (the same version spelled another way by PEP 440 matches too)."""
    wanted = S.version_key(version)
    return next(
        (
            d
            for d in release_diffs(engine, observations)
            if d.version == version or S.version_key(d.version) == wanted
        ),
        None,
    )


# Dependency drift: one release, two resolutions (matrix/locks.py)


@dataclass(frozen=True)
class LockedEnvironment:
    """What the drift comparison needs of an environment: which resolutions locked to it,
    its packages, when it was made."""

    environment_id: str
    resolutions: frozenset[str]
    packages: dict[str, str]
    created: dt.datetime


@dataclass(frozen=True)
class DependencyDrift:
    """One model in one release whose verdict as released differs from its verdict as installed
    today: the engine did not change, its dependencies did."""

    model: str
    engine: str
    version: str
    released: Verdict
    today: Verdict
    changes: tuple[locks.Change, ...]
    at: dt.datetime | None  # the newer side's result

    @property
    def regression(self) -> bool:
        return self.released.working and self.today.broken

    def headline(self) -> str:
        moved = locks.describe_drift(self.changes)
        return (
            f"{label(self.model)} in {self.engine} {self.version}: {self.released.why} as "
            f"released; {self.today.why} as installed today ({moved})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "engine": self.engine,
            "version": self.version,
            "released": self.released.as_dict(),
            "today": self.today.as_dict(),
            "changes": [str(c) for c in self.changes],
            "regression": self.regression,
            "headline": self.headline(),
            "at": _iso(self.at),
        }


def _newest_with(envs: Iterable[LockedEnvironment], resolution: str) -> LockedEnvironment | None:
    found = [e for e in envs if resolution in e.resolutions]
    return max(found, key=lambda e: e.created) if found else None


def dependency_drift(
    engine: str, observations: Iterable[S.Observation], environments: Sequence[LockedEnvironment]
) -> list[DependencyDrift]:
    """Every (release, model) whose verdict in its release-day environment differs from its
    verdict in the newest environment installed today. A release whose two resolutions
    locked alike has one environment: nothing to compare."""
    by_id = {e.environment_id: e for e in environments}
    grouped: dict[tuple[str, str], dict[str, list[S.Observation]]] = defaultdict(lambda: defaultdict(list))
    for o in observations:
        if o.engine == engine and o.environment_id in by_id:
            grouped[(o.engine_version, o.model)][o.environment_id].append(o)
    out = []
    for (version, model), per_env in sorted(grouped.items()):
        envs = [by_id[e] for e in per_env]
        released, today = _newest_with(envs, "release"), _newest_with(envs, "today")
        if released is None or today is None or released is today:
            continue
        before, after = (
            verdict_of(per_env[released.environment_id]),
            verdict_of(per_env[today.environment_id]),
        )
        if before is None or after is None or before.status == after.status:
            continue
        at = max(o.started_at for o in per_env[today.environment_id])
        out.append(
            DependencyDrift(
                model,
                engine,
                version,
                before,
                after,
                tuple(locks.drift(released.packages, today.packages)),
                at,
            )
        )
    return out
