"""Run one probe child in isolation and collect what it left behind.

Host side, standard library only. The child gets its own process group (killed whole on timeout
or memory blow-up, and after it exits, so no engine server outlives it), a time limit, a memory
limit (resident memory of the whole group, polled), no core dumps, and its stdout/stderr captured
to a log file with a size cap (head kept, tail kept, the middle dropped and counted).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
    # Directory put on the child's PYTHONPATH so `import probes` works in the engine env.
    probes_root: Path = Path(__file__).resolve().parent.parent
    options: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 600.0
    memory_mb: int = 8192
    log_cap_bytes: int = 4 * 1024 * 1024
    workdir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    no_network: bool = False

    def child_argv(self, events: Path, workdir: Path) -> list[str]:
        return [self.python, "-m", "probes.child", "--engine", self.engine,
                "--model", str(self.model_dir), "--stages", ",".join(self.stages),
                "--events", str(events), "--workdir", str(workdir),
                "--options", json.dumps(self.options)]


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

    def __init__(self, stream, path: Path, cap: int):
        super().__init__(daemon=True)
        self.stream, self.path, self.cap = stream, path, cap
        self.dropped = 0
        self.tail = bytearray()

    def run(self) -> None:
        written = 0
        with open(self.path, "wb") as out:
            while chunk := self.stream.read1(65536) if hasattr(self.stream, "read1") else self.stream.read(65536):
                room = self.cap - written
                if room > 0:
                    out.write(chunk[:room])
                    written += min(room, len(chunk))
                    chunk = chunk[room:]
                if chunk:
                    self.dropped += len(chunk)
                    self.tail += chunk
                    del self.tail[:-LOG_TAIL_BYTES]
            if self.dropped:
                kept = len(self.tail)
                out.write(f"\n[dayone: log capped at {self.cap} bytes; "
                          f"{self.dropped - kept} bytes dropped; last {kept} bytes follow]\n"
                          .encode())
                out.write(bytes(self.tail))


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


def _child_setup() -> None:
    import resource

    os.setsid()  # own session and process group: killed whole
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


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


def run_probe(req: ProbeRequest, log_dir: Path) -> ProbeOutcome:
    log_dir.mkdir(parents=True, exist_ok=True)
    workdir = req.workdir or log_dir
    workdir.mkdir(parents=True, exist_ok=True)
    events_path = log_dir / "events.jsonl"
    events_path.unlink(missing_ok=True)
    log_path = log_dir / "probe.log"
    argv = req.child_argv(events_path, workdir)
    env = {**os.environ, **req.env,
           "PYTHONPATH": str(req.probes_root), "PYTHONUNBUFFERED": "1",
           "PYTHONFAULTHANDLER": "1", "TMPDIR": str(workdir)}
    started_at = time.time()
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(_network_prefix(req.no_network) + argv,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env, cwd=workdir,
                                preexec_fn=_child_setup)
    except OSError as exc:
        log_path.write_text(f"dayone: could not start probe child: {exc}\n")
        return ProbeOutcome([], None, False, False, 0.0, log_path, log_path.read_text(),
                            0.0, started_at, argv, infra_error=f"could not start probe: {exc}")
    capture = LogCapture(proc.stdout, log_path, req.log_cap_bytes)
    capture.start()
    timed_out = memory_exceeded = False
    peak = 0.0
    deadline = t0 + req.timeout_s
    while proc.poll() is None:
        rss = group_rss_mb(proc.pid)
        peak = max(peak, rss)
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
    kill_group(proc.pid, grace_s=1.0)  # whatever the child left running (servers) goes too
    capture.join(timeout=10)
    duration = time.monotonic() - t0
    return ProbeOutcome(read_events(events_path), returncode, timed_out, memory_exceeded, peak,
                        log_path, log_path.read_text(encoding="utf-8", errors="replace"),
                        duration, started_at, argv, pid=proc.pid)
