"""Locks: what an engine environment is made of, resolved once, kept, and hashed into its id.

The request `vllm==0.27.1` resolves to other dependencies on another day, so a verdict is about
the lock, not the request. Each engine release gets two resolutions, each a lock
(`uv pip compile --generate-hashes` output):

- `release`: as on its release day. Dependencies are cut off at the moment the release first
  appeared on the package index (uv's `--exclude-newer`); the engine's own files are let in up
  to its last upload (`--exclude-newer-package`). Resolved once, kept for good.
- `today`: what `pip install ENGINE==VERSION` gives today. Re-resolved when older than
  DAYONE_LOCK_MAX_AGE_H hours (default 24): a dependency's new release becomes a new lock,
  and so a new environment.

What is pure: `normalise` (the content the id hashes), `pins`, `drift` and `describe_drift`
(which dependency moved between two locks), `release_cutoff`, `is_stale`. The shells below
run uv and read the index. Locks live under <cache>/locks/ as JSON (the uv text inside).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from probes import tools
from probes.engines import EngineSpec

RESOLUTIONS = ("today", "release")
DEFAULT_RESOLUTION = "today"
DEFAULT_MAX_AGE_H = 24.0
# Bump when the way locks are compiled changes: every lock is resolved again.
LOCK_FORMAT = "1"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")


# Pure


def _blocks(text: str) -> list[list[str]]:
    """A requirements file's entries: one block per pin with its `--hash` continuation lines,
    comments and blank lines left out."""
    blocks: list[list[str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.rstrip("\\").strip()
        if line.startswith("--hash"):
            if blocks:
                blocks[-1].append(line)
        else:
            blocks.append([line])
    return blocks


def _name(pin: str) -> str:
    m = _PIN.match(pin)
    return re.sub(r"[-_.]+", "-", m.group(1)).lower() if m else pin


def normalise(text: str, built_here: Iterable[str] = ()) -> str:
    """The lock's content: pins sorted, each with its sorted hashes, comments gone. Packages
    built from source on this machine (llama-cpp-python) keep no hash: a wheel built on another
    machine differs byte for byte while being the same release."""
    unhashed = {_name(p) for p in built_here}
    out = []
    for block in sorted(_blocks(text), key=lambda b: _name(b[0])):
        pin, hashes = block[0], sorted(block[1:])
        out.append(pin if _name(pin) in unhashed else " ".join([pin, *hashes]))
    return "\n".join(out) + ("\n" if out else "")


def lock_id(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()[:12]


def pins(text: str) -> dict[str, str]:
    """name -> version of every pinned package (names normalised as PEP 503 does)."""
    found = {}
    for block in _blocks(text):
        m = _PIN.match(block[0])
        if m:
            found[_name(block[0])] = m.group(3)
    return found


@dataclass(frozen=True)
class Change:
    package: str
    old: str | None  # None: added
    new: str | None  # None: removed

    def __str__(self) -> str:
        if self.old is None:
            return f"{self.package} {self.new} added"
        if self.new is None:
            return f"{self.package} {self.old} removed"
        return f"{self.package} {self.old} -> {self.new}"


def drift(old: Mapping[str, str], new: Mapping[str, str]) -> list[Change]:
    """What moved from one package set to another, by name."""
    names = sorted(set(old) | set(new))
    return [Change(n, old.get(n), new.get(n)) for n in names if old.get(n) != new.get(n)]


# The packages whose move most often decides an engine's verdict: named first in a summary.
DECISIVE = (
    "transformers",
    "torch",
    "tokenizers",
    "triton",
    "huggingface-hub",
    "safetensors",
    "numpy",
    "xgrammar",
    "flashinfer-python",
    "gguf",
)


def describe_drift(changes: Sequence[Change], limit: int = 4) -> str:
    """One line for a page: the decisive packages first, then a count of the rest."""
    if not changes:
        return "no dependency moved"
    rank = {name: i for i, name in enumerate(DECISIVE)}
    first = sorted(changes, key=lambda c: (rank.get(c.package, len(rank)), c.package))
    shown = ", ".join(map(str, first[:limit]))
    more = len(changes) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def _parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.timezone.utc)


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def release_cutoff(upload_times: Iterable[str]) -> tuple[str, str]:
    """(dependencies' cutoff, the engine's own cutoff) from a release's file upload times: the
    first upload is when it appeared; its files may arrive over hours after that."""
    times = sorted(_parse_time(t) for t in upload_times if t)
    if not times:
        raise ValueError("the release has no upload times on the index")
    return _iso(times[0]), _iso(times[-1] + dt.timedelta(seconds=1))


def pairing_cutoff(cutoff: str, pinned_first_uploads: Iterable[str | None]) -> str:
    """The dependencies' cutoff for a release paired with the registry's exact pins (PEFT
    0.20.0 with transformers 5.23.0): the first day every part of the pairing was on the index.
    Before the newest pin appeared, its own dependencies (transformers' huggingface-hub) were
    not there either, and nothing resolves."""
    return max([cutoff, *(_iso(_parse_time(t)) for t in pinned_first_uploads if t)], key=_parse_time)


def is_stale(resolved_at: float, now: float, max_age_h: float) -> bool:
    return now - resolved_at > max_age_h * 3600


# A lock, and where it is kept


@dataclass(frozen=True)
class Lock:
    engine: str
    version: str
    resolution: str
    text: str  # what uv wrote, hashes and annotations included
    content: str  # normalise(text): what the id hashes
    exclude_newer: str | None  # the release-day cutoff; None: today
    resolved_at: float
    format: str = LOCK_FORMAT
    # What the registry asked for (requirements, no-deps and built wheels): a kept lock made
    # for another request is resolved again, so that a registry change reaches the environment.
    request: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return lock_id(self.content)

    @property
    def packages(self) -> dict[str, str]:
        return pins(self.content)

    def as_record(self) -> dict[str, object]:
        """What a result record says of its lock (contracts: engine.lock)."""
        return {
            "id": self.id,
            "resolution": self.resolution,
            "exclude_newer": self.exclude_newer,
            "resolved_at": _iso(dt.datetime.fromtimestamp(self.resolved_at, dt.timezone.utc)),
        }


def lock_request(spec: EngineSpec, version: str) -> tuple[str, ...]:
    """Everything the registry asks a lock of SPEC==VERSION for."""
    asked = (
        *spec.requirements,
        *(f"--no-deps {r}" for r in spec.no_deps),
        *(f"--built {b}" for b in spec.wheel_builds),
    )
    return tuple(r.format(version=version) for r in asked)


def locks_dir() -> Path:
    return tools.cache_dir() / "locks"


def lock_path(spec: EngineSpec, version: str, resolution: str) -> Path:
    python = ".".join(map(str, sys.version_info[:2]))
    return locks_dir() / f"{spec.name}-{version}-py{python}-{resolution}.json"


def read_lock(path: Path) -> Lock | None:
    try:
        data = json.loads(path.read_text())
        lock = Lock(**{**data, "request": tuple(data.get("request", ()))})
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return lock if lock.format == LOCK_FORMAT else None


def write_lock(lock: Lock, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(asdict(lock), indent=1))
    os.replace(tmp, path)


# Shells: the index and uv


def index_url() -> str:
    """The package index's JSON API (PyPI's shape); a fake one in tests."""
    from matrix.engine_watch import DEFAULT_INDEX

    return os.environ.get("DAYONE_INDEX_URL") or DEFAULT_INDEX


def release_upload_times(package: str, version: str, url: str | None = None) -> list[str]:
    """Every file's upload time of PACKAGE==VERSION, from the index."""
    from matrix.engine_watch import IndexClient, index_releases

    client = IndexClient(url or index_url())
    try:
        answer = client.project(package)
    except Exception as exc:  # the index is untrusted and may be away: say so, build nothing
        raise RuntimeError(f"cannot read {package}'s releases from {url or index_url()}: {exc}") from exc
    finally:
        client.close()
    if answer is None:
        raise RuntimeError(f"the index does not know {package}")
    for release in index_releases(package, answer):
        if release.version == version:
            return [f.upload_time for f in release.files if f.upload_time]
    raise RuntimeError(f"the index has no release {package}=={version}")


def _first_upload(package: str, version: str) -> str | None:
    """When PACKAGE==VERSION first appeared on the index, or None where the index cannot say
    (torch's CPU build comes from another index)."""
    try:
        return release_cutoff(release_upload_times(package, version))[0]
    except (RuntimeError, ValueError):
        return None


def compile_requirements(
    requirements: Sequence[str],
    sources: Sequence[str],
    *,
    exclude_newer: str | None = None,
    exclude_newer_package: Mapping[str, str] | None = None,
    no_deps: bool = False,
) -> str:
    """`uv pip compile` of REQUIREMENTS for this Python, with hashes; the text it wrote."""
    if not requirements:
        return ""
    with tempfile.TemporaryDirectory(prefix="dayone-lock-") as tmp:
        req = Path(tmp) / "requirements.in"
        req.write_text("\n".join(requirements) + "\n")
        cmd = [
            tools.find_uv(),
            "pip",
            "compile",
            "--quiet",
            "--generate-hashes",
            "--no-header",
            "--python",
            sys.executable,
            "--index-strategy",
            "unsafe-best-match",
            *sources,
        ]
        if exclude_newer:
            cmd += ["--exclude-newer", exclude_newer]
        for package, cutoff in (exclude_newer_package or {}).items():
            cmd += ["--exclude-newer-package", f"{package}={cutoff}"]
        if no_deps:
            cmd.append("--no-deps")
        proc = subprocess.run([*cmd, str(req)], capture_output=True, text=True)
    if proc.returncode:
        tail = "\n".join(proc.stderr.strip().splitlines()[-12:])
        raise RuntimeError(f"resolving {' '.join(requirements[:3])} ... failed:\n{tail}")
    return proc.stdout


def compile_lock(
    spec: EngineSpec,
    version: str,
    resolution: str,
    sources: Sequence[str],
    say: Callable[[str], None] = print,
) -> Lock:
    """Resolve SPEC==VERSION as RESOLUTION says, with the wheel SOURCES given."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"unknown resolution {resolution!r}; known: {', '.join(RESOLUTIONS)}")
    cutoff, own = None, {}
    fill = [r.format(version=version) for r in spec.requirements]
    if resolution == "release" and spec.requirements:
        cutoff, last = release_cutoff(release_upload_times(spec.package, version))
        # The registry's own exact pins (torch's CPU build, PEFT's transformers) are ours, not
        # the index's on that day: the cutoff leaves them be, and moves to the day the newest
        # of them appeared where that is later (pairing_cutoff).
        now = _iso(dt.datetime.now(dt.timezone.utc))
        pinned = {name: v for name, v in pins("\n".join(fill)).items() if name != _name(spec.package)}
        own = {name: now for name in pinned}
        cutoff = pairing_cutoff(cutoff, (_first_upload(name, v) for name, v in pinned.items()))
        own[spec.package] = last
    t0 = time.monotonic()
    say(
        f"resolving {spec.name}=={version} as {resolution}"
        + (f" (the index as of {cutoff})" if cutoff else "")
    )
    text = compile_requirements(fill, sources, exclude_newer=cutoff, exclude_newer_package=own)
    if spec.no_deps:
        text += compile_requirements(
            [r.format(version=version) for r in spec.no_deps],
            sources,
            exclude_newer=cutoff,
            exclude_newer_package=own,
            no_deps=True,
        )
    built = [b.format(version=version) for b in spec.wheel_builds]
    lock = Lock(
        spec.name,
        version,
        resolution,
        text,
        normalise(text, built),
        cutoff,
        time.time(),
        request=lock_request(spec, version),
    )
    say(
        f"resolved {spec.name}=={version} ({resolution}) in {time.monotonic() - t0:.1f} s: "
        f"{len(lock.packages)} packages, lock {lock.id}"
    )
    return lock


def alike(spec: EngineSpec, version: str, lock: Lock) -> list[str]:
    """The resolutions whose kept lock is LOCK's content (both: nothing moved since the
    release day), read from what is kept; nothing is resolved."""
    same = {lock.resolution}
    for resolution in RESOLUTIONS:
        kept = read_lock(lock_path(spec, version, resolution))
        if kept is not None and kept.id == lock.id:
            same.add(resolution)
    return sorted(same)


def max_age_h() -> float:
    try:
        return float(os.environ.get("DAYONE_LOCK_MAX_AGE_H") or DEFAULT_MAX_AGE_H)
    except ValueError:
        return DEFAULT_MAX_AGE_H


def ensure_lock(
    spec: EngineSpec,
    version: str,
    resolution: str,
    sources: Sequence[str],
    *,
    refresh: bool = False,
    say: Callable[[str], None] = print,
) -> Lock:
    """The kept lock, or a new one: `release` locks never go stale; `today` ones do after
    DAYONE_LOCK_MAX_AGE_H hours, or when REFRESH asks; either is resolved again when the
    registry asks for other packages than the kept lock was made for."""
    import fcntl

    path = lock_path(spec, version, resolution)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # parallel probes of one release resolve it once
        kept = read_lock(path)
        fresh = (
            kept is not None
            and tuple(kept.request) == lock_request(spec, version)
            and (resolution == "release" or not is_stale(kept.resolved_at, time.time(), max_age_h()))
        )
        if kept is not None and fresh and not refresh:
            return kept
        try:
            lock = compile_lock(spec, version, resolution, sources, say)
        except RuntimeError as exc:
            if kept is None or refresh:
                raise
            # Offline, or the index is away: today's lock stays what it was, said so; the
            # environment it names is still the one that lock built.
            first = str(exc).splitlines()[0]
            say(
                f"{spec.name}=={version}: could not resolve again ({first}); keeping the lock "
                f"of {_iso(dt.datetime.fromtimestamp(kept.resolved_at, dt.timezone.utc))}"
            )
            return kept
        if kept is not None and kept.id == lock.id:
            # nothing moved: keep the text it was first resolved to, fresh from now
            lock = Lock(**{**asdict(kept), "resolved_at": time.time(), "request": lock.request})
        elif kept is not None:
            say(
                f"{spec.name}=={version} ({resolution}) moved: "
                f"{describe_drift(drift(kept.packages, lock.packages))}"
            )
        write_lock(lock, path)
        return lock
