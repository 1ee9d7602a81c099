"""Engine environments: one isolated venv per lock, built with uv, cached by key.

An environment is installed from a lock (matrix/locks.py: `release` as on the release day,
`today` as installed today), never from the request. The key hashes what decides what is
installed and how: the lock's content, the Python, the patches' code, this recipe's version.
So two machines with one lock build one environment under one id, and a dependency's new
release (a new lock) builds a new one. Found again in well under a second otherwise. dayone
itself never imports an engine.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from matrix import env_patches, locks
from probes import gguf_convert, tools
from probes.engines import EngineSpec, get_spec

RECIPE_VERSION = "3"  # bump when the way environments are built changes


cache_dir = tools.cache_dir  # one home for the cache's whereabouts, shared with the probes


def envs_dir() -> Path:
    return cache_dir() / "envs"


def wheel_sources() -> list[str]:
    """Where torch's CPU build comes from: a local wheel folder here, the PyTorch CPU index on
    a GitHub runner (DAYONE_EXTRA_INDEX_URL)."""
    args: list[str] = []
    links = os.environ.get("DAYONE_FIND_LINKS", "/opt/wheels")
    for link in filter(None, links.split(os.pathsep)):
        if Path(link).exists() or "://" in link:
            args += ["--find-links", link]
    extra = os.environ.get("DAYONE_EXTRA_INDEX_URL")
    if extra:
        args += ["--extra-index-url", extra]
    return args


@dataclass
class Environment:
    engine: str
    version: str
    key: str
    path: str
    python: str
    packages: dict[str, str]
    built_at: float
    build_s: float
    patches: list[str]
    # Whether it holds together, checked once at build time (see check_env): `uv pip check`'s
    # report and the engine's import; `broken` says why the environment cannot be probed.
    # Kept in dayone-check.json beside dayone-env.json.
    check: dict[str, str | bool | None] = field(default_factory=dict)
    # The lock it was installed from (locks.Lock.as_record(); its text is lock.txt beside),
    # for a request the lock of that request's resolution: two resolutions that lock alike
    # share one environment.
    lock: dict[str, object] = field(default_factory=dict)

    @property
    def environment_id(self) -> str:
        return f"{self.engine}-{self.version}-{self.key}"

    @property
    def broken(self) -> str | None:
        return self.check.get("broken") or None  # type: ignore[return-value]


# What each patch key an EngineSpec names runs (taking the env's python path). Kept here, not
# in env_patches.py: the key hashes each patch's module source, so a new entry must not change
# the source of the patches already there (and rebuild their environments).
PATCHES: dict[str, Callable[[Path], object]] = {
    "vllm_cpu": env_patches.vllm_cpu,
    "sglang_cpu": env_patches.sglang_cpu,
    "gguf_converter": gguf_convert.install_converter,
}


def patch_of(key: str) -> Callable[[Path], object]:
    try:
        return PATCHES[key]
    except KeyError:
        raise KeyError(f"unknown env patch {key!r}; known: {', '.join(sorted(PATCHES))}") from None


def patch_name(key: str) -> str:
    """The patch as module:function: the name environment keys and dayone-env.json carry."""
    patch = patch_of(key)
    return f"{patch.__module__}:{patch.__name__}"


def requirements(spec: EngineSpec, version: str) -> list[str]:
    return [r.format(version=version) for r in spec.requirements]


def env_key(spec: EngineSpec, version: str, lock: locks.Lock) -> str:
    """The environment's key: a hash of its lock (not of the request) and of how it is made."""
    names = [patch_name(key) for key in spec.patches]
    recipe = {
        "recipe": RECIPE_VERSION,
        "engine": spec.name,
        "version": version,
        "lock": lock.content,
        "python": ".".join(map(str, sys.version_info[:2])),
        "patches": names,
        # the patch code itself: editing a patch rebuilds the environments it touches
        "patch_source": [_patch_source(p) for p in names],
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def _patch_source(patch: str) -> str:
    import importlib.util

    found = importlib.util.find_spec(patch.partition(":")[0])
    origin = found.origin if found else None
    return hashlib.sha256(Path(origin).read_bytes()).hexdigest()[:12] if origin else patch


def _uv() -> str:
    return tools.find_uv()


def _meta_path(path: Path) -> Path:
    return path / "dayone-env.json"


def _check_path(path: Path) -> Path:
    # Its own file, beside the metadata: dayone-env.json keeps the fields every dayone reads
    # (environments are shared by every dayone using this cache).
    return path / "dayone-check.json"


def load_env(path: Path) -> Environment | None:
    try:
        env = Environment(**json.loads(_meta_path(path).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    try:
        env.check = json.loads(_check_path(path).read_text())
    except (OSError, ValueError):
        env.check = {}
    return env


def _write_meta(env: Environment) -> None:
    meta = asdict(env)
    check = meta.pop("check")
    _check_path(Path(env.path)).write_text(json.dumps(check, indent=2))
    _meta_path(Path(env.path)).write_text(json.dumps(meta, indent=2))


def list_envs(engine: str | None = None) -> list[Environment]:
    root = envs_dir()
    found = [e for p in sorted(root.glob("*")) if p.is_dir() and (e := load_env(p))]
    return [e for e in found if engine is None or e.engine == engine]


def _version_key(v: str):
    from packaging.version import InvalidVersion, Version

    try:
        return (0, Version(v))
    except InvalidVersion:
        return (1, v)


def newest_built(engine: str) -> Environment | None:
    envs = list_envs(engine)
    return max(envs, key=lambda e: _version_key(e.version)) if envs else None


def _run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    with open(log, "a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    if proc.returncode:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"environment build step failed ({' '.join(cmd[:4])} ...):\n{tail}")


def _freeze(python: Path) -> dict[str, str]:
    out = subprocess.run(
        [_uv(), "pip", "freeze", "--python", str(python)], capture_output=True, text=True, check=True
    ).stdout
    pkgs = {}
    for line in out.splitlines():
        name, sep, ver = line.partition("==")
        if sep:
            pkgs[name.lower()] = ver
    return pkgs


# The engine's own import, and transformers' where installed: both run import-time checks of
# their dependency pins (transformers refuses a huggingface-hub outside its range).
_IMPORT_CHECK = """
import importlib, importlib.metadata as m, sys
wanted = {want!r}
mods = sorted(k for k, v in m.packages_distributions().items()
              if any(d.lower() == wanted.lower() for d in v) and not k.startswith("_"))
names = mods[:1] + (["transformers"] if "transformers" in m.packages_distributions() else [])
for name in dict.fromkeys(names):
    importlib.import_module(name)
print("imported", *names)
"""


def check_env(spec: EngineSpec, python: Path) -> dict[str, str | bool | None]:
    """Does the environment hold together? `uv pip check` (recorded: some engines' CPU
    environments leave out CUDA-only requirements on purpose) and the engine's import (its
    failure makes the environment unusable: every probe in it would be our red)."""
    pip = subprocess.run([_uv(), "pip", "check", "--python", str(python)], capture_output=True, text=True)
    report = (pip.stdout + pip.stderr).strip()
    out: dict[str, str | bool | None] = {
        "pip_check_ok": pip.returncode == 0,
        "pip_check": report[-4000:],
        "broken": None,
    }
    if spec.package and spec.requirements:
        proc = subprocess.run(
            [str(python), "-c", _IMPORT_CHECK.format(want=spec.package)],
            capture_output=True,
            text=True,
            timeout=600,
            env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
            | {"PYTHONNOUSERSITE": "1"},
        )
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        if proc.returncode:
            out["broken"] = (
                f"the environment does not hold together: importing the engine "
                f"fails: {lines[-1] if lines else f'exit {proc.returncode}'}"
            )
    return out


def _ensure_checked(spec: EngineSpec, env: Environment) -> Environment:
    """An environment built before the check existed is checked once, and the result kept."""
    if env.check:
        return env
    env.check = check_env(spec, Path(env.python))
    try:
        _check_path(Path(env.path)).write_text(json.dumps(env.check, indent=2))
    except OSError:
        pass
    return env


def sources(spec: EngineSpec, version: str, say: Callable[[str], None] = print) -> list[str]:
    """Where the packages come from: the wheel sources, and the wheels built here (built
    first: the lock resolves against them)."""
    found = wheel_sources()
    for build in spec.wheel_builds:
        found += ["--find-links", str(build_wheel(build, version, say))]
    return found


def build_env(
    spec: EngineSpec,
    version: str,
    say: Callable[[str], None] = print,
    *,
    resolution: str = locks.DEFAULT_RESOLUTION,
    refresh: bool = False,
) -> Environment:
    """The environment of SPEC==VERSION as RESOLUTION resolves it (locked first, then found or
    installed from the lock)."""
    find_links = sources(spec, version, say)
    lock = locks.ensure_lock(spec, version, resolution, find_links, refresh=refresh, say=say)
    return build_from_lock(spec, lock, find_links, say)


def _lock_record(spec: EngineSpec, lock: locks.Lock) -> dict[str, object]:
    return {**lock.as_record(), "resolutions": locks.alike(spec, lock.version, lock)}


def build_from_lock(
    spec: EngineSpec, lock: locks.Lock, find_links: list[str], say: Callable[[str], None] = print
) -> Environment:
    """Install LOCK (exactly: `uv pip sync`) into the environment its key names."""
    version = lock.version
    key = env_key(spec, version, lock)
    path = envs_dir() / f"{spec.name}-{version}-{key}"
    found = load_env(path)
    if found and found.check:
        return replace(found, lock=_lock_record(spec, lock))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # a parallel probe waits for the same build
        found = load_env(path)
        if found:
            return replace(_ensure_checked(spec, found), lock=_lock_record(spec, lock))
        t0 = time.monotonic()
        if path.exists():
            shutil.rmtree(path)  # a half-built environment from an interrupted build
        path.mkdir(parents=True)
        log = path / "build.log"
        say(f"building environment {spec.name}=={version} (lock {lock.id}, key {key}) in {path}")
        _run([_uv(), "venv", "--quiet", "--python", sys.executable, str(path / "venv")], log)
        python = path / "venv" / "bin" / "python"
        (path / "lock.txt").write_text(lock.text)
        (path / "lock.content.txt").write_text(lock.content)
        # --compile-bytecode: without .pyc files every probe recompiles torch (import 2x slower).
        if lock.content:  # an engine with no requirements (fault injection) needs only the venv
            _run(
                [
                    _uv(),
                    "pip",
                    "sync",
                    "--compile-bytecode",
                    "--python",
                    str(python),
                    "--index-strategy",
                    "unsafe-best-match",
                    *find_links,
                    str(path / "lock.content.txt"),
                ],
                log,
            )
        patches = []
        for patch in spec.patches:
            patch_of(patch)(python)
            patches.append(patch_name(patch))
        env = Environment(
            spec.name,
            version,
            key,
            str(path),
            str(python),
            _freeze(python),
            time.time(),
            round(time.monotonic() - t0, 2),
            patches,
            check_env(spec, python),
            _lock_record(spec, lock),
        )
        _write_meta(env)
        say(
            f"built {spec.name}=={version} in {env.build_s:.1f} s" + (f"; {env.broken}" if env.broken else "")
        )
        return env


def build_wheel(requirement: str, version: str, say: Callable[[str], None]) -> Path:
    """Build a wheel from a source-only release once per version; cached under wheels/."""
    name = requirement.split("==")[0]
    out = cache_dir() / "wheels" / f"{name}-{version}"
    if any(out.glob("*.whl")):
        return out
    out.mkdir(parents=True, exist_ok=True)
    spec_env = {
        "CMAKE_ARGS": os.environ.get("CMAKE_ARGS", "-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF"),
        "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2),
    }
    say(f"building wheel {requirement.format(version=version)} (minutes, once per version) into {out}")
    # pip from a venv uv seeds: the host interpreter may have none (dayone installed with uv).
    _run(
        [
            str(tools.pip_python(cache_dir())),
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-w",
            str(out),
            requirement.format(version=version),
        ],
        out.parent / f"{name}-{version}.build.log",
        spec_env,
    )
    return out


def ensure_env(
    engine: str | EngineSpec,
    version: str | None = None,
    say: Callable[[str], None] = print,
    resolution: str = locks.DEFAULT_RESOLUTION,
) -> Environment:
    """The environment for ENGINE==VERSION as RESOLUTION resolves it; no version: the newest
    built version. ENGINE: its spec (a probe resolves it once) or its name."""
    spec = engine if isinstance(engine, EngineSpec) else get_spec(engine)
    if version is None:
        newest = newest_built(spec.name)
        version = newest.version if newest else spec.default_version
    return build_env(spec, version, say, resolution=resolution)


def prune(keep: set[str] | None = None, engine: str | None = None) -> list[str]:
    """Remove environments not in `keep` (environment ids); returns what was removed."""
    removed = []
    for env in list_envs(engine):
        if keep is None or env.environment_id not in keep:
            shutil.rmtree(env.path, ignore_errors=True)
            removed.append(env.environment_id)
    return removed


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file() and not f.is_symlink())
