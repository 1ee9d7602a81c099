"""Bisect: a cell turned red between two releases; which release in between was the first bad.

The releases between GOOD and BAD are the engine package's versions on the index (its JSON API,
as matrix/engine_watch.py reads it), in PEP 440 order, every kind included whatever the watch
file keeps (post releases, release candidates, dev releases); one that cannot be installed here
is skipped with why (`engine_watch.installable`). Each probe's verdict comes from its records
(`read_verdict`: the cell's worst meaningful status over the stages asked, as
matrix/release_diff.py decides it): working (pass / degraded) is good, broken (fail / timeout /
oom) is bad, anything else (error, no verdict) is skipped, as `git bisect skip`. Verdicts the
store already holds for releases in the range count without a probe.

All pure but for `index_candidates` (one index read) and `run_bisect` (the probes):
`candidates` -> `Bisect` (its `next_probe`, `first_bad`, `with_verdict`) -> a plan or an answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from packaging.version import InvalidVersion, Version

from matrix import summary as S
from matrix.engine_watch import IndexRelease, Platform, installable
from matrix.release_diff import verdict_of

Outcome = Literal["good", "bad", "skip"]


@dataclass(frozen=True)
class Candidate:
    version: str
    kind: str  # final | post | pre | dev
    uploaded_at: str | None = None
    why_not: str | None = None  # why it cannot be installed here (then it is skipped)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "kind": self.kind,
            "uploaded_at": self.uploaded_at,
            "why_not": self.why_not,
        }


def kind_of(version: Version) -> str:
    if version.is_devrelease:
        return "dev"
    if version.is_prerelease:
        return "pre"
    if version.is_postrelease:
        return "post"
    return "final"


def candidates(
    releases: Sequence[IndexRelease],
    good: str,
    bad: str,
    platform: Platform,
    *,
    builds_from_source: bool = False,
) -> list[Candidate]:
    """The index's releases strictly between GOOD and BAD, oldest first (every kind)."""
    lo, hi = Version(good), Version(bad)
    if not lo < hi:
        raise ValueError(f"--good {good} must be an older release than --bad {bad}")
    out = []
    for r in sorted(releases, key=lambda r: r.parsed):
        if lo < r.parsed < hi:
            out.append(
                Candidate(
                    r.version,
                    kind_of(r.parsed),
                    r.uploaded_at,
                    installable(r, platform, builds_from_source=builds_from_source),
                )
            )
    return out


def read_verdict(
    observations: Iterable[S.Observation], version: str, stages: Sequence[str] = ()
) -> Outcome | None:
    """One release's outcome from its results (of the cell being bisected): good, bad, skip
    (no verdict), or None when it has no result at all. STAGES: only these count."""
    wanted = S.version_key(version)
    latest: dict[str, S.Observation] = {}
    for o in observations:
        if S.version_key(o.engine_version) != wanted or (stages and o.stage not in stages):
            continue
        if o.stage not in latest or o.started_at > latest[o.stage].started_at:
            latest[o.stage] = o
    if not latest:
        return None
    v = verdict_of(list(latest.values()))
    if v is None:
        return "skip"
    return "good" if v.working else "bad" if v.broken else "skip"


@dataclass(frozen=True)
class Bisect:
    """The state of one bisection: the releases in order (GOOD, the candidates, BAD) and the
    outcome known for each (GOOD is good and BAD is bad unless the results say otherwise)."""

    engine: str
    target: str  # the model id or arch/TYPE
    good: str
    bad: str
    between: tuple[Candidate, ...]
    known: Mapping[str, Outcome] = field(default_factory=dict)

    @property
    def order(self) -> list[str]:
        return [self.good, *(c.version for c in self.between), self.bad]

    def outcome(self, version: str) -> Outcome | None:
        if version in self.known:
            return self.known[version]
        c = next((c for c in self.between if c.version == version), None)
        if c is not None and c.why_not:
            return "skip"
        if version == self.good:
            return "good"
        return "bad" if version == self.bad else None

    def _bounds(self) -> tuple[int, int]:
        order = self.order
        hi = next(i for i, v in enumerate(order) if self.outcome(v) == "bad" or i == len(order) - 1)
        lo = max((i for i in range(hi) if self.outcome(order[i]) == "good"), default=0)
        return lo, hi

    @property
    def contradiction(self) -> str | None:
        """The endpoints' own results disagree with the user's labels."""
        if self.known.get(self.good) == "bad":
            return f"{self.engine} {self.good} is red for {self.target} too: not a good release"
        if self.known.get(self.bad) == "good":
            return f"{self.engine} {self.bad} is green for {self.target}: not a bad release"
        return None

    def remaining(self) -> list[str]:
        """The releases still to probe (strictly between the bounds, no outcome yet)."""
        lo, hi = self._bounds()
        return [v for v in self.order[lo + 1 : hi] if self.outcome(v) is None]

    def next_probe(self) -> str | None:
        """The release to probe next: the middle of what remains (None: done)."""
        if self.contradiction:
            return None
        rest = self.remaining()
        return rest[(len(rest) - 1) // 2] if rest else None

    def steps_left(self) -> int:
        """Probes still needed at most (binary search over what remains)."""
        rest = len(self.remaining())
        return math.ceil(math.log2(rest + 1)) if rest else 0

    def first_bad(self) -> str | None:
        """The first bad release, once nothing between the bounds is left to probe and none
        was skipped; None while probing remains (or when a skip leaves it ambiguous)."""
        if self.remaining() or self.contradiction:
            return None
        lo, hi = self._bounds()
        if any(self.outcome(v) == "skip" for v in self.order[lo + 1 : hi]):
            return None
        return self.order[hi]

    def suspects(self) -> list[str]:
        """Where the first bad release may be once probing is done: the skipped releases
        between the bounds and the bad bound (one release when `first_bad` names it)."""
        lo, hi = self._bounds()
        return [v for v in self.order[lo + 1 : hi + 1] if self.outcome(v) == "skip" or v == self.order[hi]]

    def with_verdict(self, version: str, outcome: Outcome) -> Bisect:
        return replace(self, known={**self.known, version: outcome})

    def as_dict(self) -> dict[str, Any]:
        lo, hi = self._bounds()
        return {
            "engine": self.engine,
            "target": self.target,
            "good": self.good,
            "bad": self.bad,
            "between": [c.as_dict() for c in self.between],
            "known": dict(self.known),
            "last_good": self.order[lo],
            "first_bad_bound": self.order[hi],
            "remaining": self.remaining(),
            "next_probe": self.next_probe(),
            "steps_left": self.steps_left(),
            "first_bad": self.first_bad(),
            "suspects": self.suspects(),
            "bad_seen": self.known.get(self.bad) == "bad",
            "contradiction": self.contradiction,
        }


def start(
    engine: str,
    target: str,
    good: str,
    bad: str,
    between: Sequence[Candidate],
    observations: Iterable[S.Observation] = (),
    stages: Sequence[str] = (),
) -> Bisect:
    """A bisection with what the store already says about the releases in the range."""
    obs = [o for o in observations if o.engine == engine and o.model == target]
    known: dict[str, Outcome] = {}
    for version in [good, *(c.version for c in between), bad]:
        outcome = read_verdict(obs, version, stages)
        if outcome is not None:
            known[version] = outcome
    return Bisect(engine, target, good, bad, tuple(between), known)


# Shells: the index, the probes


def index_candidates(
    engine: str,
    good: str,
    bad: str,
    *,
    index_url: str,
    platform: Platform | None = None,
    hardware: str = "cpu",
    client: Any = None,
) -> list[Candidate]:
    """The releases between GOOD and BAD on the index for this engine's package."""
    from matrix import engine_watch as ew
    from probes.engines import ENGINES

    spec = ENGINES.get(engine)
    if spec is None or spec.internal:
        raise ValueError(f"{engine}: not an engine of the registry")
    try:
        if not Version(good) < Version(bad):
            raise ValueError(f"--good {good} must be an older release than --bad {bad}")
    except InvalidVersion as exc:
        raise ValueError(str(exc)) from None
    watched = {w.engine: w for w in ew.load_watch()}.get(engine)
    package = watched.package_for(hardware) if watched else spec.package
    own = client is None
    client = client or ew.IndexClient(index_url)
    try:
        answer = client.project(package)
    finally:
        if own:
            client.close()
    if answer is None:
        raise ValueError(f"{package}: not on the index")
    return candidates(
        ew.index_releases(package, answer),
        good,
        bad,
        platform or Platform.current(),
        builds_from_source=bool(spec.wheel_builds),
    )


ProbeFn = Callable[[str], Sequence[Any]]  # version -> its records or observations


def run_bisect(
    state: Bisect,
    probe_release: ProbeFn,
    *,
    stages: Sequence[str] = (),
    say: Callable[[str], None] = print,
    max_probes: int = 32,
) -> Bisect:
    """Probe the next release until the first bad one is named (or nothing is left to probe).
    `probe_release(version)` runs the probe in `engine==version` and returns its records."""
    for _ in range(max_probes):
        version = state.next_probe()
        if version is None:
            break
        say(f"bisect: probing {state.engine}=={version} ({state.steps_left()} steps left at most)")
        records = probe_release(version)
        outcome = read_verdict(S.observations(records), version, stages) or "skip"
        say(f"bisect: {state.engine}=={version} is {outcome}")
        state = state.with_verdict(version, outcome)
    return state
