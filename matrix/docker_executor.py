"""The docker executor: probe images per engine version, and one sandboxed container per probe.

Images are built with the docker SDK from docker/<engine>.Dockerfile and tagged
`dayone-probe-ENGINE:VERSION` (`...-production` for the GPU flavor), labelled with the
environment key. A probe container runs `python3 -m probes.child` (the same probe code as the
local executor) with no network, memory / CPU / pids limits, the model mounted read-only, the
output directory mounted read-write, a read-only root filesystem, no capabilities, a non-root
user; it is removed afterwards whatever happens. The result is the local runner's
`ProbeOutcome`, so `probes.record.build_records` turns it into records unchanged.

Statuses: exit 137 with OOMKilled -> `oom` (probes.record.oom_evidence); an image that
cannot build or a container that cannot start -> `error` / `infra` (via
`ProbeOutcome.infra_error`), never the engine's `fail`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The docker SDK, not the repository's docker/ folder: a folder without __init__.py never
# shadows an installed package.
import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container
from docker.types import Mount
from packaging.utils import canonicalize_name, parse_wheel_filename

from matrix import environments, locks
from probes.engines import get_spec
from probes.runner import KILL_GRACE_S, ProbeOutcome, ProbeRequest, LogCapture, read_events

REPO_ROOT = Path(__file__).resolve().parent.parent
# docker/, reached through matrix/images (a link in the checkout, package data when installed)
DOCKER_DIR = Path(__file__).resolve().parent / "images"
BASE_IMAGE_SCRIPT = DOCKER_DIR / "base-image.sh"
CPU_BASE_IMAGE = os.environ.get("DAYONE_BASE_TAG", "dayone-base:bookworm")
PROBE_UID = 10001
RECIPE_VERSION = "1"  # bump when the image recipe changes in a way the key cannot see

FLAVORS = ("cpu", "production")

# Labels: images carry what they were built from; containers are marked for cleanup checks.
LABEL_ENGINE = "dayone.engine"
LABEL_ENV_KEY = "dayone.environment_key"
LABEL_PROBES = "dayone.probes_hash"
LABEL_CONTAINER = "dayone.probe"

# Inside the container.
MODEL_MOUNT = "/model"
OUT_MOUNT = "/out"
CACHE_MOUNT = "/cache"
STEP_ID = re.compile(r"^ ---> ([0-9a-f]{12})$", re.MULTILINE)


class DockerUnavailable(RuntimeError):
    """No Docker daemon answers: the docker executor cannot run at all."""


class ImageBuildError(RuntimeError):
    """The probe image could not be built: our infrastructure, never the engine's verdict."""

    def __init__(self, message: str, log_path: Path | None = None):
        super().__init__(message)
        self.log_path = log_path


@dataclass(frozen=True)
class Limits:
    """The sandbox a probe container gets (memory comes from ProbeRequest.memory_mb)."""

    # Every core, as a local probe has: a container held to fewer would be slower than the
    # local probe of the same environment, and time out where the local one passes.
    cpus: float = float(os.cpu_count() or 1)
    pids: int = 1024
    network: bool = False  # True only for engines that must download (never for probes)


DEFAULT_LIMITS = Limits()


@dataclass
class ProbeImage:
    tag: str
    image_id: str  # sha256 of the image config: the content digest of a local image
    repo_digest: str | None  # registry digest, once pushed somewhere
    environment_key: str
    engine: str
    version: str
    flavor: str
    built: bool  # False when an existing image was reused
    build_s: float
    log_path: str | None
    lock: dict[str, Any] = field(default_factory=dict)  # the lock it installs (locks.Lock)
    # A CPU image installs the venv's lock and runs its patches: the venv's environment id.
    # None for a production image (the engine's own release image underneath).
    environment_id: str | None = None

    def as_environment(self) -> dict[str, Any]:
        """Fields for probes.record.build_records(environment=...)."""
        return {
            "image": self.tag,
            "image_digest": self.repo_digest or self.image_id,
            "executor": "docker",
            "environment_key": self.environment_key,
            "lock": self.lock or None,
            "environment_id": self.environment_id,
        }


# The daemon


def connect(timeout_s: float = 120.0) -> docker.DockerClient:
    """A client for a daemon that answers; DockerUnavailable says why not."""
    try:
        client = docker.from_env(timeout=int(timeout_s))
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise DockerUnavailable(f"no Docker daemon answers ({exc}); start one with .ci/docker-up.sh") from exc
    return client


# Images


def image_tag(engine: str, version: str, flavor: str = "cpu") -> str:
    return f"dayone-probe-{engine}:{version}" + ("" if flavor == "cpu" else f"-{flavor}")


def dockerfile(engine: str) -> Path:
    return DOCKER_DIR / f"{engine}.Dockerfile"


def base_image(engine: str, version: str, flavor: str) -> str:
    if flavor == "cpu":
        return CPU_BASE_IMAGE
    if flavor == "production":
        base = get_spec(engine).production_base
        if base is None:
            raise ValueError(f"engine {engine!r} has no production image")
        return base.format(version=version)
    raise ValueError(f"unknown flavor {flavor!r}; known: {', '.join(FLAVORS)}")


def probes_hash(root: Path = REPO_ROOT / "probes") -> str:
    """Content hash of the probe code that goes into the image (its last layer)."""
    h = hashlib.sha256()
    for path in sorted(_probe_files(root)):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _probe_files(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield path


def local_wheels(requirements: list[str], dirs: list[Path]) -> list[Path]:
    """Wheels in local folders for the distributions the requirements name (torch's CPU build
    here). pip inside the build cannot see host folders, so they travel in the build context."""
    wanted = {canonicalize_name(_req_name(r)) for r in requirements}
    found: dict[str, Path] = {}
    for folder in dirs:
        for whl in sorted(folder.glob("*.whl")) if folder.is_dir() else ():
            try:
                name = parse_wheel_filename(whl.name)[0]
            except ValueError:
                continue
            if name in wanted:
                found.setdefault(whl.name, whl)
    return list(found.values())


def _req_name(requirement: str) -> str:
    for sep in ("==", ">=", "<=", "~=", "!=", "<", ">", "[", ";", " "):
        requirement = requirement.split(sep, 1)[0]
    return requirement.strip()


def wheel_dirs(spec_name: str, version: str, say: Callable[[str], None]) -> list[Path]:
    """Local wheel folders: the lead's wheel sources (DAYONE_FIND_LINKS) and wheels dayone
    built itself for source-only releases."""
    args = environments.wheel_sources()
    dirs = [Path(args[i + 1]) for i, a in enumerate(args) if a == "--find-links" and "://" not in args[i + 1]]
    spec = get_spec(spec_name)
    for build in getattr(spec, "wheel_builds", ()):
        dirs.append(environments.build_wheel(build, version, say))
    return dirs


def extra_index_url() -> str:
    return os.environ.get("DAYONE_EXTRA_INDEX_URL", "")


def image_key(engine: str, version: str, flavor: str, base_id: str, lock: locks.Lock) -> str:
    """Everything that decides what the image installs; the probe code is labelled apart."""
    spec = get_spec(engine)
    recipe = {
        "recipe": RECIPE_VERSION,
        "env_key": environments.env_key(spec, version, lock),
        "flavor": flavor,
        "base": base_id,
        "extra_index": extra_index_url(),
        "dockerfile": hashlib.sha256(dockerfile(engine).read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def lock_files(content: str) -> dict[str, str]:
    """The lock as the image's pip takes it: `locked.txt` (every pin with its hashes: pip checks
    them all) and `built.txt` (wheels built from source here, which keep no hash)."""
    lines = content.splitlines()
    return {
        "locked.txt": "".join(f"{x}\n" for x in lines if "--hash=" in x),
        "built.txt": "".join(f"{x}\n" for x in lines if "--hash=" not in x),
    }


# What the image's build needs to run the environment patches (matrix/env_patches.py): those
# modules alone, standard library only.
PATCH_MODULES = (
    "matrix/__init__.py",
    "matrix/env_patches.py",
    "probes/__init__.py",
    "probes/tools.py",
    "probes/gguf_convert.py",
)


def make_context(engine: str, lock: locks.Lock, wheels: list[Path], dest: Path) -> None:
    """Build context: the Dockerfile, probes/, the lock (the image installs what the venv
    installs), the patches the venv gets (patches/: their modules, and the llama.cpp sdist
    the converter comes from) and the local wheels (hard links when possible: torch's wheel
    is ~190 MB)."""
    shutil.copy2(dockerfile(engine), dest / "Dockerfile")
    (dest / "lock").mkdir()
    for name, text in lock_files(lock.content).items():
        (dest / "lock" / name).write_text(text)
    for module in PATCH_MODULES:
        (dest / "patches" / module).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / module, dest / "patches" / module)
    if "gguf_converter" in get_spec(engine).patches:
        from probes import gguf_convert

        sdist = gguf_convert.ensure_sdist(lock.version)
        where = dest / "patches" / "cache" / "sources" / sdist.parent.name
        where.mkdir(parents=True)
        shutil.copy2(sdist, where / sdist.name)
    shutil.copytree(
        REPO_ROOT / "probes", dest / "probes", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    (dest / "wheels").mkdir()
    for whl in wheels:
        try:
            os.link(whl, dest / "wheels" / whl.name)
        except OSError:
            shutil.copy2(whl, dest / "wheels" / whl.name)


def ensure_base_image(client: docker.DockerClient, say: Callable[[str], None]) -> str:
    """The CPU base exists or is made by docker/base-image.sh (debootstrap, cached tarball)."""
    try:
        return client.images.get(CPU_BASE_IMAGE).id
    except docker.errors.ImageNotFound:
        pass
    say(f"making base image {CPU_BASE_IMAGE} with {BASE_IMAGE_SCRIPT.name}")
    proc = subprocess.run(["bash", str(BASE_IMAGE_SCRIPT)], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise ImageBuildError(
            f"base image {CPU_BASE_IMAGE} could not be made:\n" + "\n".join(proc.stderr.splitlines()[-10:])
        )
    return client.images.get(CPU_BASE_IMAGE).id


def find_image(client: docker.DockerClient, tag: str, key: str, probes: str):
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    labels = image.labels or {}
    if labels.get(LABEL_ENV_KEY) == key and labels.get(LABEL_PROBES) == probes:
        return image
    return None


def ensure_image(
    engine: str,
    version: str | None = None,
    flavor: str = "cpu",
    *,
    client: docker.DockerClient | None = None,
    rebuild: bool = False,
    say: Callable[[str], None] = print,
    resolution: str = locks.DEFAULT_RESOLUTION,
) -> ProbeImage:
    """The probe image for ENGINE==VERSION, built when missing or out of date.

    Raises ImageBuildError (-> `error` / `infra`) when it cannot be built.
    """
    client = client or connect()
    spec = get_spec(engine)
    version = version or spec.default_version
    if not dockerfile(engine).exists():
        raise ImageBuildError(f"no Dockerfile for engine {engine}: {dockerfile(engine)}")
    base = base_image(engine, version, flavor)
    base_id = ensure_base_image(client, say) if flavor == "cpu" else base
    try:
        lock = locks.ensure_lock(spec, version, resolution, environments.sources(spec, version, say), say=say)
    except (RuntimeError, OSError) as exc:
        raise ImageBuildError(f"the image's lock could not be made: {exc}") from exc
    key = image_key(engine, version, flavor, base_id, lock)
    probes = probes_hash()
    tag = image_tag(engine, version, flavor)
    if not rebuild and (image := find_image(client, tag, key, probes)):
        return _probe_image(image, tag, key, engine, version, flavor, False, 0.0, None, lock)

    requirements = environments.requirements(spec, version)
    wheels = local_wheels(list(lock.packages), wheel_dirs(engine, version, say))
    log_dir = environments.cache_dir() / "docker" / "builds"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{engine}-{version}-{flavor}.log"
    try:
        previous = client.images.get(tag).id
    except docker.errors.ImageNotFound:
        previous = None
    say(f"building image {tag} (key {key}; {len(wheels)} local wheel(s))")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dayone-build-", dir=environments.cache_dir() / "docker") as ctx:
        make_context(engine, lock, wheels, Path(ctx))
        _build(
            client,
            Path(ctx),
            tag,
            log_path,
            network="host",
            buildargs={
                "BASE_IMAGE": base,
                "FLAVOR": flavor,
                "ENGINE_VERSION": version,
                "REQUIREMENTS": " ".join(requirements),
                "PATCHES": " ".join(environments.patch_name(p) for p in spec.patches),
                "EXTRA_INDEX_URL": extra_index_url(),
                "PROBE_UID": str(PROBE_UID),
            },
            labels={
                LABEL_ENGINE: engine,
                LABEL_ENV_KEY: key,
                LABEL_PROBES: probes,
                "dayone.recipe": RECIPE_VERSION,
            },
        )
    build_s = round(time.monotonic() - t0, 2)
    say(f"built {tag} in {build_s:.1f} s (log {log_path})")
    image = client.images.get(tag)
    if previous and previous != image.id:
        _drop_dangling(client, previous)
    return _probe_image(image, tag, key, engine, version, flavor, True, build_s, str(log_path), lock)


def _drop_dangling(client: docker.DockerClient, image_id: str) -> None:
    """The image a rebuilt tag pointed to: removed unless a container or tag still uses it."""
    try:
        client.images.remove(image_id, noprune=False)
    except docker.errors.APIError:
        pass


def _probe_image(
    image, tag, key, engine, version, flavor, built, build_s, log_path, lock: locks.Lock
) -> ProbeImage:
    digests = image.attrs.get("RepoDigests") or []
    env_id = (
        f"{engine}-{version}-{environments.env_key(get_spec(engine), version, lock)}"
        if flavor == "cpu"
        else None
    )
    return ProbeImage(
        tag,
        image.id,
        digests[0] if digests else None,
        key,
        engine,
        version,
        flavor,
        built,
        build_s,
        log_path,
        lock.as_record(),
        env_id,
    )


def _build(
    client: docker.DockerClient,
    ctx: Path,
    tag: str,
    log_path: Path,
    *,
    network: str,
    buildargs: dict[str, str],
    labels: dict[str, str],
) -> None:
    """Stream the build into a log; any error from the daemon is an ImageBuildError."""
    lines: list[str] = []
    steps: list[str] = []  # image ids of the steps that finished (" ---> 1a2b3c4d5e6f")
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            for chunk in client.api.build(
                path=str(ctx),
                tag=tag,
                buildargs=buildargs,
                labels=labels,
                network_mode=network,
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
            ):
                text = chunk.get("stream") or chunk.get("status") or ""
                if text:
                    log.write(text)
                    lines.extend(text.splitlines())
                    del lines[:-30]
                    steps += STEP_ID.findall(text)
                if "error" in chunk:
                    log.write(f"\nERROR: {chunk['error']}\n")
                    raise ImageBuildError(
                        f"image {tag} failed to build: {chunk['error'].strip()}\n" + "\n".join(lines[-10:]),
                        log_path,
                    )
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            log.write(f"\nERROR: {exc}\n")
            raise ImageBuildError(f"image {tag} failed to build: {exc}", log_path) from exc
        except ImageBuildError:
            # A failed classic build leaves its last finished step as an untagged image
            # (with our ~190 MB wheel layer in it): drop it unless a tagged image uses it.
            if steps:
                _drop_dangling(client, steps[-1])
            raise


# Probe containers


class _ChunkStream:
    """Lets probes.runner's log capture (head + tail under a cap) read docker's log chunks."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks

    def read(self, _size: int = -1) -> bytes:
        try:
            while not (chunk := next(self._chunks)):
                continue  # an empty chunk would read as end of stream
            return chunk
        except (StopIteration, docker.errors.APIError, requests.exceptions.RequestException):
            return b""


class _PeakMemory(threading.Thread):
    """Peak memory use of the container from the daemon's stats stream (about once a second)."""

    def __init__(self, container: Container):
        super().__init__(daemon=True)
        self.container, self.peak_mb = container, 0.0

    def run(self) -> None:
        try:
            for stats in self.container.stats(stream=True, decode=True):
                mem = stats.get("memory_stats") or {}
                used = max(mem.get("max_usage", 0), mem.get("usage", 0))  # max_usage: cgroup v1
                self.peak_mb = max(self.peak_mb, used / 2**20)
        except (docker.errors.DockerException, requests.exceptions.RequestException, ValueError):
            # the container went away: the stream ends, so does the thread
            return


def container_user() -> str:
    """Never root inside: the fixed probe uid when we are root, else our own uid (so the
    caller can read and delete what the probe wrote)."""
    return f"{PROBE_UID}:{PROBE_UID}" if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}"


def _prepare_out_dir(log_dir: Path) -> None:
    for sub in ("", "work", "tmp", "home"):
        (log_dir / sub).mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(log_dir / sub, PROBE_UID, PROBE_UID)


def unreadable_files(model_dir: Path, uid: int, gid: int, limit: int = 5) -> list[str]:
    """Files (and folders) of the model that the probe user could not read. Checked before the
    container starts: a model the sandbox cannot read is our setup's fault, not the engine's.
    (safetensors writes through a temporary file, so fresh checkpoints are often mode 0600.)"""

    def can(st: os.stat_result, want: int) -> bool:
        if st.st_uid == uid:
            return bool(st.st_mode & (want << 6))
        if st.st_gid == gid:
            return bool(st.st_mode & (want << 3))
        return bool(st.st_mode & want)

    bad: list[str] = []
    root = Path(model_dir)
    for path in [root, *root.rglob("*")]:
        try:
            st = path.stat()
        except OSError:
            continue  # a dangling link: the engine reports it like any missing file
        ok = can(st, 0o5) if path.is_dir() else can(st, 0o4)
        if not ok:
            bad.append(
                f"{path.relative_to(root) if path != root else '.'} "
                f"(mode {st.st_mode & 0o777:o}, owner {st.st_uid})"
            )
            if len(bad) >= limit:
                break
    return bad


def engine_cache(engine: str) -> Path:
    """The engine's caches, shared by its containers as the local probes share the host's:
    dayone's (vLLM's model-info cache: a ~10-30 s subprocess per start without it) at
    $DAYONE_CACHE, and the home folder the engines' own caches go under (a local probe runs
    with the user's home). Mounted at CACHE_MOUNT; made here, owned by the probe user."""
    path = environments.cache_dir() / "containers" / engine
    for folder in (path, path / "home"):
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(folder, PROBE_UID, PROBE_UID)
    return path


def container_config(
    req: ProbeRequest, image: str, log_dir: Path, limits: Limits, command: list[str]
) -> dict[str, Any]:
    """The sandbox, as docker SDK keyword arguments (no daemon call)."""
    memory = f"{int(req.memory_mb)}m"
    return {
        "image": image,
        "command": command,
        "user": container_user(),
        "network_mode": "default" if limits.network else "none",
        "mem_limit": memory,
        "memswap_limit": memory,  # no swap: over the limit is an OOM kill, not a crawl
        "nano_cpus": int(limits.cpus * 1e9),
        "pids_limit": limits.pids,
        "mounts": [
            Mount(MODEL_MOUNT, str(Path(req.model_dir).resolve()), type="bind", read_only=True),
            Mount(OUT_MOUNT, str(log_dir.resolve()), type="bind", read_only=False),
            Mount(CACHE_MOUNT, str(engine_cache(req.engine).resolve()), type="bind", read_only=False),
        ],
        "read_only": True,  # the image itself is not writable either
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "init": True,  # tini as pid 1: signals reach the engine, zombies are reaped
        "environment": {
            **req.env,
            "TMPDIR": f"{OUT_MOUNT}/tmp",
            "HOME": f"{CACHE_MOUNT}/home",
            "DAYONE_CACHE": CACHE_MOUNT,
            "PYTHONUNBUFFERED": "1",
            "PYTHONFAULTHANDLER": "1",
        },
        "working_dir": f"{OUT_MOUNT}/work",
        "labels": {LABEL_CONTAINER: "1", LABEL_ENGINE: req.engine},
        "detach": True,
    }


def child_command(req: ProbeRequest) -> list[str]:
    """The probe child's arguments inside the container (entry point: python3 -m probes.child)."""
    return [
        "--engine",
        req.engine,
        "--model",
        MODEL_MOUNT,
        "--stages",
        ",".join(req.stages),
        "--events",
        f"{OUT_MOUNT}/events.jsonl",
        "--workdir",
        f"{OUT_MOUNT}/work",
        "--options",
        json.dumps(req.options),
    ]


def reproduce_command(cfg: dict[str, Any]) -> str:
    """The `docker run` line a person can paste to rerun the probe (display only)."""
    args = [
        "docker",
        "run",
        "--rm",
        f"--network={cfg['network_mode']}",
        f"--memory={cfg['mem_limit']}",
        f"--cpus={cfg['nano_cpus'] / 1e9:g}",
        f"--pids-limit={cfg['pids_limit']}",
        "--read-only",
        "--cap-drop=ALL",
        "--init",
        f"--user={cfg['user']}",
    ]
    for m in cfg["mounts"]:
        args.append(
            f"--mount=type=bind,src={m['Source']},dst={m['Target']}"
            + (",readonly" if m.get("ReadOnly") else "")
        )
    return shlex.join(args + [cfg["image"], *cfg["command"]])


def exit_to_returncode(exit_code: int) -> int:
    """Container exit 128+N means the process died of signal N: report it as the local
    runner's subprocess does (-N), so records read the same in both executors."""
    return -(exit_code - 128) if 128 < exit_code < 128 + 65 else exit_code


@dataclass
class ContainerRun:
    exit_code: int | None
    oom_killed: bool
    timed_out: bool
    peak_mb: float
    duration_s: float
    started_at: float
    log_path: Path
    cfg: dict[str, Any]
    error: str | None = None


# Containers started and not yet removed: a SIGTERM to dayone (a cancelled CI job, a stopped
# nightly) removes them before dayone goes, where a default SIGTERM would leave them running.
_LIVE: set[Container] = set()
_LIVE_LOCK = threading.Lock()
_PREVIOUS_HANDLER: dict[int, Any] = {}


def _remove_live_and_go_on(signum: int, frame: Any) -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for container in live:
        try:
            container.remove(force=True, v=True)
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            pass
    previous = _PREVIOUS_HANDLER.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _remove_on_terminate() -> None:
    """Install the SIGTERM cleanup once (only the main thread may set a handler; a probe from
    a worker thread relies on the main thread having run one before)."""
    if signal.SIGTERM in _PREVIOUS_HANDLER or threading.current_thread() is not threading.main_thread():
        return
    _PREVIOUS_HANDLER[signal.SIGTERM] = signal.signal(signal.SIGTERM, _remove_live_and_go_on)


def run_container(
    client: docker.DockerClient,
    cfg: dict[str, Any],
    log_path: Path,
    timeout_s: float,
    log_cap_bytes: int = 4 * 1024 * 1024,
    on_start: Callable[[Container], None] | None = None,
) -> ContainerRun:
    """Create, start, wait (with a deadline), collect, and always remove one container."""
    started_at = time.time()
    t0 = time.monotonic()
    container: Container | None = None
    timed_out = False
    peak = None
    _remove_on_terminate()
    try:
        try:
            container = client.containers.create(**cfg)
            with _LIVE_LOCK:
                _LIVE.add(container)
            container.start()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            log_path.write_text(f"dayone: could not start probe container: {exc}\n")
            return ContainerRun(
                None,
                False,
                False,
                0.0,
                time.monotonic() - t0,
                started_at,
                log_path,
                cfg,
                error=f"could not start container: {exc}",
            )
        if on_start:
            on_start(container)
        capture = LogCapture(_ChunkStream(container.logs(stream=True, follow=True)), log_path, log_cap_bytes)
        capture.start()
        peak = _PeakMemory(container)
        peak.start()
        try:
            container.wait(timeout=max(1.0, timeout_s))
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            timed_out = True
            # SIGTERM, then SIGKILL after the grace period, as the local runner does.
            container.stop(timeout=int(KILL_GRACE_S))
            container.wait(timeout=30)
        container.reload()
        state = container.attrs["State"]
        capture.join(timeout=10)
        return ContainerRun(
            state.get("ExitCode"),
            bool(state.get("OOMKilled")),
            timed_out,
            peak.peak_mb,
            time.monotonic() - t0,
            started_at,
            log_path,
            cfg,
            error=None if not state.get("Error") else state["Error"],
        )
    finally:
        if container is not None:
            with _LIVE_LOCK:
                _LIVE.discard(container)
            try:
                container.remove(force=True, v=True)  # v: anonymous volumes go too
            except docker.errors.NotFound:
                pass


def run_probe(
    req: ProbeRequest,
    log_dir: Path,
    image: ProbeImage,
    *,
    client: docker.DockerClient | None = None,
    limits: Limits = DEFAULT_LIMITS,
    on_start: Callable[[Container], None] | None = None,
) -> ProbeOutcome:
    """Run one probe in a container; same outcome shape as probes.runner.run_probe."""
    log_dir = Path(log_dir)
    _prepare_out_dir(log_dir)
    events_path = log_dir / "events.jsonl"
    events_path.unlink(missing_ok=True)
    log_path = log_dir / "probe.log"
    cfg = container_config(req, image.image_id, log_dir, limits, child_command(req))
    argv = shlex.split(reproduce_command({**cfg, "image": image.tag}))
    uid, gid = (int(x) for x in cfg["user"].split(":"))
    if bad := unreadable_files(Path(req.model_dir), uid, gid):
        msg = (
            f"model files not readable by the probe user (uid {uid}): {', '.join(bad)}; "
            f"make them world-readable (chmod -R a+rX {req.model_dir})"
        )
        log_path.write_text(f"dayone: {msg}\n")
        return ProbeOutcome.not_started(msg, log_path, log_path.read_text(), argv)
    try:
        client = client or connect()
        run = run_container(client, cfg, log_path, req.timeout_s, req.log_cap_bytes, on_start)
    except DockerUnavailable as exc:
        log_path.write_text(f"dayone: {exc}\n")
        return ProbeOutcome.not_started(str(exc), log_path, log_path.read_text(), argv)
    log_text = log_path.read_text(encoding="utf-8", errors="replace")
    # The container's OOMKilled flag is its cgroup's OOM kill count, the fact the local runner
    # reads from memory.events: probes.record.oom_evidence decides both the same way.
    return ProbeOutcome(
        events=read_events(events_path),
        returncode=None if run.exit_code is None else exit_to_returncode(run.exit_code),
        timed_out=run.timed_out,
        memory_exceeded=False,
        peak_rss_mb=run.peak_mb,
        log_path=log_path,
        log_text=log_text,
        duration_s=run.duration_s,
        started_at=run.started_at,
        argv=argv,
        infra_error=run.error,
        oom_kills_delta=int(run.oom_killed),
        memory_limit_mb=float(req.memory_mb),
        memory_limit_source="the container's memory limit",
    )


def build_failure_outcome(exc: Exception, log_dir: Path) -> ProbeOutcome:
    """An image that could not be built as a probe outcome: every stage `error` / `infra`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "probe.log"
    text = f"dayone: probe image unavailable: {exc}\n"
    if isinstance(exc, ImageBuildError) and exc.log_path:
        text += f"(build log: {exc.log_path})\n"
    log_path.write_text(text)
    return ProbeOutcome.not_started(
        f"probe image unavailable: {str(exc).splitlines()[0]}", log_path, text, []
    )


def leftovers(client: docker.DockerClient) -> list[str]:
    """Probe containers still present (there should be none between probes)."""
    return [c.name for c in client.containers.list(all=True, filters={"label": LABEL_CONTAINER})]


def describe(image: ProbeImage) -> dict[str, Any]:
    return asdict(image)
