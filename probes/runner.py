"""Run one probe child in isolation and collect what it left behind.

Host side, standard library only. The child gets its own process group (killed whole on timeout
or memory blow-up, and after it exits, so no engine server outlives it), a time limit, a memory
limit (resident memory of the whole group, polled), no core dumps, and its stdout/stderr captured
to a log file with a size cap (head kept, tail kept, the middle dropped and counted).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOG_TAIL_BYTES = 64 * 1024
POLL_S = 0.2
KILL_GRACE_S = 3.0


@dataclass
class ProbeRequest:
    engine: str
    model_dir: Path
    stages: list[str]
    python: str = sys.executable
    # Directory put on the child's PYTHONPATH so `import probes` works in the engine env; it
    # must hold `probes` and nothing else of the host (see isolated_probes). None: a copy of
    # this probes package under the temporary directory.
    probes_root: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 600.0
    memory_mb: int = 8192
    log_cap_bytes: int = 4 * 1024 * 1024
    workdir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    no_network: bool = False
    # Most live processes the child's group may have (fork bombs).
    pids_max: int = 1024

    def child_argv(self, events: Path, workdir: Path) -> list[str]:
        return [
            self.python,
            "-m",
            "probes.child",
            "--engine",
            self.engine,
            "--model",
            str(self.model_dir),
            "--stages",
            ",".join(self.stages),
            "--events",
            str(events),
            "--workdir",
            str(workdir),
            "--options",
            json.dumps(self.options),
        ]


@dataclass
class ProbeOutcome:
    """What a probe child left behind; probes.record turns it into result records."""

    events: list[dict[str, Any]]
    returncode: int | None
    timed_out: bool
    memory_exceeded: bool
    peak_rss_mb: float
    log_path: Path
    log_text: str  # the capped log as stored
    duration_s: float
    started_at: float
    argv: list[str]
    infra_error: str | None = None  # we could not start the child at all
    pid: int | None = None  # the child's pid, also its process group id
    pids_exceeded: bool = False  # killed for too many processes
    # Facts for telling the host's OOM killer from an engine crash (probes.record.oom_evidence):
    # OOM kills counted by the child's memory cgroup and its parents during the run (None where
    # unreadable), and the tightest memory limit the child ran under, with where it came from.
    oom_kills_delta: int | None = None
    memory_limit_mb: float | None = None
    memory_limit_source: str | None = None

    @classmethod
    def not_started(
        cls, why: str, log_path: Path, log_text: str, argv: list[str], started_at: float | None = None
    ) -> ProbeOutcome:
        """A probe whose child never ran: no events, every stage `error` for `why`."""
        return cls(
            [],
            None,
            False,
            False,
            0.0,
            log_path,
            log_text,
            0.0,
            time.time() if started_at is None else started_at,
            argv,
            infra_error=why,
        )


PROBES_PACKAGE = Path(__file__).resolve().parent

# Host interpreter settings that would steer the engine env's Python to host packages.
_HOST_PYTHON_VARS = (
    "PYTHONHOME",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "PYTHONEXECUTABLE",
    "PYTHONPLATLIBDIR",
    "PYTHONSAFEPATH",
    "VIRTUAL_ENV",
    "VIRTUAL_ENV_PROMPT",
    "CONDA_PREFIX",
    "__PYVENV_LAUNCHER__",
    "PYTHONINSPECT",
)


def _package_files(package: Path) -> list[Path]:
    return sorted(
        f
        for f in package.rglob("*")
        if f.is_file() and "__pycache__" not in f.parts and f.suffix not in (".pyc", ".pyo")
    )


def probes_content_hash(package: Path = PROBES_PACKAGE) -> str:
    digest = hashlib.sha256()
    for f in _package_files(package):
        digest.update(str(f.relative_to(package)).encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def isolated_probes(root: Path, package: Path = PROBES_PACKAGE) -> Path:
    """A directory holding a copy of the `probes` package and nothing else, for the child's
    PYTHONPATH: in an installed dayone the package's parent is site-packages, and every host
    package there would shadow the engine environment's own. Keyed by the package's content
    (a changed probe gets a new copy), built in a temporary directory and renamed into place
    (parallel probes race for it), reused when present."""
    dest = root / probes_content_hash(package)
    if (dest / "probes" / "__init__.py").is_file():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".probes-", dir=root))
    try:
        for f in _package_files(package):
            target = tmp / "probes" / f.relative_to(package)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
        try:
            os.rename(tmp, dest)
        except OSError:  # another probe put its identical copy there first
            if not (dest / "probes" / "__init__.py").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def child_environment(
    host: dict[str, str], extra: dict[str, str], probes_root: Path, workdir: Path | None = None
) -> dict[str, str]:
    """The child's environment: the host's, less every variable that points Python at host
    packages; the import path is the probes copy alone, user site off."""
    env = {k: v for k, v in host.items() if k not in _HOST_PYTHON_VARS}
    env.update(extra)
    env.update(
        {
            "PYTHONPATH": str(probes_root),
            "PYTHONNOUSERSITE": "1",
            "PYTHONUNBUFFERED": "1",
            "PYTHONFAULTHANDLER": "1",
        }
    )
    if workdir is not None:
        env["TMPDIR"] = str(workdir)
    return env


def read_events(path: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return events
    for line in lines:
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a crash mid-write
    return events


class LogCapture(threading.Thread):
    """Drain the child's output into a file: head up to the cap, last bytes as tail."""

    # A write error (results directory full) must not stop the
    # draining, or the child blocks on a full pipe and reads as a false timeout. The error is
    # kept, the output still drained, and its last bytes stay in memory (`recent`).

    def __init__(self, stream, path: Path, cap: int):
        super().__init__(daemon=True)
        self.stream, self.path, self.cap = stream, path, cap
        self.dropped = 0
        self.tail = bytearray()
        self.recent = bytearray()  # last bytes of everything, written or not
        self.write_error: str | None = None

    def _write(self, out, data: bytes) -> None:
        if out is None or self.write_error:
            return
        try:
            out.write(data)
            out.flush()
        except OSError as exc:
            self.write_error = str(exc)

    def run(self) -> None:
        written = 0
        try:
            out = open(self.path, "wb")
        except OSError as exc:
            out, self.write_error = None, str(exc)
        try:
            read = self.stream.read1 if hasattr(self.stream, "read1") else self.stream.read
            while chunk := read(65536):
                self.recent += chunk
                del self.recent[:-LOG_TAIL_BYTES]
                room = self.cap - written
                if room > 0:
                    self._write(out, chunk[:room])
                    written += min(room, len(chunk))
                    chunk = chunk[room:]
                if chunk:
                    self.dropped += len(chunk)
                    self.tail += chunk
                    del self.tail[:-LOG_TAIL_BYTES]
            if self.dropped:
                kept = len(self.tail)
                self._write(
                    out,
                    f"\n[dayone: log capped at {self.cap} bytes; "
                    f"{self.dropped - kept} bytes dropped; last {kept} bytes "
                    f"follow]\n".encode(),
                )
                self._write(out, bytes(self.tail))
        finally:
            if out is not None:
                try:
                    out.close()
                except OSError as exc:
                    self.write_error = self.write_error or str(exc)


def group_members(pgid: int) -> list[int]:
    """Live processes (not zombies) of a process group, from /proc."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # fields after "(comm)": state, ppid, pgrp
        if len(stat) > 2 and stat[2].isdigit() and int(stat[2]) == pgid and stat[0] != b"Z":
            pids.append(int(entry.name))
    return pids


def group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in a process group."""
    total_kb = 0
    for pid in group_members(pgid):
        try:
            with open(f"/proc/{pid}/status", "rb") as fh:
                for line in fh:
                    if line.startswith(b"VmRSS:"):
                        total_kb += int(line.split()[1])
                        break
        except (OSError, IndexError, ValueError):
            continue
    return total_kb / 1024


CGROUP_ROOT = Path("/sys/fs/cgroup")


def memory_cgroups(pid: int | str = "self", root: Path = CGROUP_ROOT) -> list[Path]:
    """The memory cgroup directories of a process, its own first, then each parent up to the
    root: cgroup v2 (`0::/path`) or v1's memory controller (`N:memory:/path`)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return []
    dirs: list[Path] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[1] == "" and parts[0] == "0":
            bases = [root, root / "unified"]
        elif "memory" in parts[1].split(","):
            bases = [root / "memory"]
        else:
            continue
        rel = Path(parts[2].lstrip("/"))
        for base in bases:
            here = base / rel
            if (here / "memory.events").exists() or (here / "memory.oom_control").exists():
                chain = [base / p for p in (rel, *rel.parents)]
                dirs.extend(d for d in chain if d.is_dir())
                break
    return dirs


def _read_counter(path: Path, key: str) -> int | None:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return None


def oom_kills(dirs: list[Path]) -> int | None:
    """OOM kills counted so far in these cgroups (v2 memory.events, v1 memory.oom_control),
    summed; None where none is readable."""
    counts = [
        c
        for d in dirs
        for c in (
            _read_counter(d / "memory.events", "oom_kill"),
            _read_counter(d / "memory.oom_control", "oom_kill"),
        )
        if c is not None
    ]
    return sum(counts) if counts else None


def memory_limits_mb(dirs: list[Path]) -> list[tuple[float, str]]:
    """(limit in MB, where) for each cgroup memory limit and the machine's memory."""
    limits: list[tuple[float, str]] = []
    for d in dirs:
        for name in ("memory.max", "memory.limit_in_bytes"):
            try:
                text = (d / name).read_text().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < 2**60:  # "max" or v1's near-2**63: no limit
                limits.append((int(text) / 2**20, f"cgroup {d} {name}"))
    try:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        meminfo = []
    for line in meminfo:
        key, _, value = line.partition(":")
        if key in ("MemTotal", "MemAvailable") and value.split()[:1] and value.split()[0].isdigit():
            limits.append((int(value.split()[0]) / 1024, f"the machine's {key}"))
    return limits


def kill_group(pgid: int, grace_s: float = KILL_GRACE_S) -> None:
    """SIGTERM the group, then SIGKILL whatever is left after the grace period."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _parent_death_signal():
    """prctl(PR_SET_PDEATHSIG, SIGKILL) for the child, so a runner
    killed -9 (a nightly killed mid-run) leaves no orphan probe behind. Looked up in the
    parent: nothing is imported between fork and exec. None where libc has no prctl."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


_PDEATHSIG = _parent_death_signal()


def die_with_parent() -> None:
    """For a Popen's preexec_fn: the process is killed when the one that started it dies.
    An engine's server may leave its starter's process group (SGLang's launch_server does),
    so killing the probe's group alone would orphan it."""
    if _PDEATHSIG is not None:
        _PDEATHSIG()


def _child_setup() -> None:
    import resource

    os.setsid()  # own session and process group: killed whole
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    die_with_parent()


def _network_prefix(no_network: bool) -> list[str]:
    """`unshare -rn` gives the child an empty network namespace where that is allowed."""
    if not no_network:
        return []
    try:
        ok = subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        raise OSError("no_network was asked for but `unshare -rn` does not work here")
    return ["unshare", "-rn"]


def _read_log(path: Path, limit: int) -> str:
    """The stored log, at most `limit` bytes, only if it is a regular file (a log path turned
    into /dev/full or a FIFO must not be read forever)."""
    try:
        with open(path, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return ""
            return fh.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""


def run_probe(req: ProbeRequest, log_dir: Path) -> ProbeOutcome:
    workdir = req.workdir or log_dir
    events_path = log_dir / "events.jsonl"
    log_path = log_dir / "probe.log"
    argv = req.child_argv(events_path, workdir)
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        workdir.mkdir(parents=True, exist_ok=True)
        events_path.unlink(missing_ok=True)
    except OSError as exc:  # the results directory full or unwritable
        why = f"cannot use the results directory {log_dir}: {exc}"
        return ProbeOutcome.not_started(why, log_path, f"dayone: {why}\n", argv)
    try:
        probes_root = req.probes_root or isolated_probes(
            Path(tempfile.gettempdir()) / f"dayone-probes-{os.getuid()}"
        )
    except OSError as exc:
        why = f"cannot copy the probes package for the child: {exc}"
        return ProbeOutcome.not_started(why, log_path, f"dayone: {why}\n", argv)
    env = child_environment(dict(os.environ), req.env, probes_root, workdir)
    cgroups = memory_cgroups()  # the child is born in ours
    oom_before = oom_kills(cgroups)
    limits = [(float(req.memory_mb), "the probe's memory_mb"), *memory_limits_mb(cgroups)]
    started_at = time.time()
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(
            _network_prefix(req.no_network) + argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
            preexec_fn=_child_setup,
        )
    except OSError as exc:
        text = f"dayone: could not start probe child: {exc}\n"
        try:
            log_path.write_text(text)
        except OSError:
            pass  # the results directory may be what failed
        return ProbeOutcome.not_started(f"could not start probe: {exc}", log_path, text, argv, started_at)
    capture = LogCapture(proc.stdout, log_path, req.log_cap_bytes)
    capture.start()
    timed_out = memory_exceeded = pids_exceeded = False
    peak = 0.0
    deadline = t0 + req.timeout_s
    while proc.poll() is None:
        rss = group_rss_mb(proc.pid)
        peak = max(peak, rss)
        if len(group_members(proc.pid)) > req.pids_max:  # a fork bomb
            pids_exceeded = True
            kill_group(proc.pid, grace_s=0)
            break
        if rss > req.memory_mb:
            memory_exceeded = True
            kill_group(proc.pid, grace_s=0)
            break
        if time.monotonic() > deadline:
            timed_out = True
            kill_group(proc.pid)
            break
        time.sleep(POLL_S)
    returncode = proc.wait()
    oom_after = oom_kills(cgroups)
    kill_group(proc.pid, grace_s=1.0)  # whatever the child left running (servers) goes too
    capture.join(timeout=10)
    duration = time.monotonic() - t0
    log_text, infra_error = _read_log(log_path, req.log_cap_bytes + 2 * LOG_TAIL_BYTES + 4096), None
    if pids_exceeded:
        log_text += (
            f"\n[dayone: killed: more than {req.pids_max} processes in the probe's "
            f"process group (fork bomb?)]\n"
        )
    if capture.write_error:  # disk full is ours, not the engine's
        infra_error = f"cannot write the probe log in {log_dir}: {capture.write_error}"
        log_text += f"\n[dayone: {infra_error}; last {len(capture.recent)} bytes of output follow]\n" + bytes(
            capture.recent
        ).decode("utf-8", "replace")
    limit_mb, limit_source = min(limits)
    return ProbeOutcome(
        read_events(events_path),
        returncode,
        timed_out,
        memory_exceeded,
        peak,
        log_path,
        log_text,
        duration,
        started_at,
        argv,
        pid=proc.pid,
        infra_error=infra_error,
        pids_exceeded=pids_exceeded,
        oom_kills_delta=(None if oom_before is None or oom_after is None else oom_after - oom_before),
        memory_limit_mb=limit_mb,
        memory_limit_source=limit_source,
    )
