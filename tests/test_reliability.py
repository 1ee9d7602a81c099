"""Faults the lead's tests/test_runner_faults.py does not cover: a fork bomb, gigabytes of log,
a full results directory, engine servers that never come up or die mid-request, and the nightly
killed -9 at random points, many times. Each case notes its figures for docs/reliability.md
(tests/reliability_report.py) before asserting them.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import fault_probe, json_answer
from probes.runner import ProbeRequest, group_members
from tests.reliability_report import note

ROOT = Path(__file__).resolve().parent.parent
STAGES = ["load", "generate"]


def probe(
    tmp_path: Path,
    *,
    python: str = sys.executable,
    options: dict | None = None,
    log_dir: Path | None = None,
    **kw,
) -> tuple[list[dict], object]:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    req = ProbeRequest(
        engine="fault",
        model_dir=model,
        stages=STAGES,
        python=python,
        options=options or {"fault": "ok"},
        **kw,
    )
    return fault_probe(req, log_dir or tmp_path / "run")


def verdict(record: dict) -> str:
    return f"{record['status']}/{record['failure_class']}"


def leftovers(outcome) -> list[int]:
    return group_members(outcome.pid) if outcome.pid else []


# Fork bomb

FORK_BOMB = """\
import os, sys, time
print("fork bomb: doubling 9 times", flush=True)
for _ in range(9):  # bounded (512 processes) so a broken watchdog cannot take the machine down
    os.fork()
time.sleep(120)
"""


def test_fork_bomb_is_stopped_by_the_pids_limit(tmp_path, validate_record):
    """The probe child forks until the group holds 512 processes; the watchdog's pids limit
    kills the whole group: a readable fail/crash, nothing left running."""
    bomb = tmp_path / "bomb.py"
    bomb.write_text(FORK_BOMB)
    shim = tmp_path / "python"  # what the runner starts as the engine's python
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} {bomb}\n")
    shim.chmod(0o755)
    runs, outs, left, seconds = 3, [], [], []
    for i in range(runs):
        t0 = time.monotonic()
        records, outcome = probe(
            tmp_path, python=str(shim), pids_max=64, timeout_s=60, log_dir=tmp_path / f"run{i}"
        )
        seconds.append(time.monotonic() - t0)
        time.sleep(0.3)
        outs.append(verdict(records[0]))
        left.append(len(leftovers(outcome)))
        assert outcome.pids_exceeded, outcome.log_text[-500:]
        assert "processes" in outcome.log_text
        validate_record(records[0])
    note(
        "faults",
        "fork bomb (512 processes, pids limit 64)",
        tried=runs,
        outcomes=outs,
        expected="fail/crash, group killed",
        held=set(outs) == {"fail/crash"} and not any(left),
        detail=f"killed after {max(seconds):.1f} s at most; {sum(left)} processes left",
    )
    assert set(outs) == {"fail/crash"} and not any(left)


# Log flood


def test_gigabytes_of_log_are_capped_and_classified(tmp_path):
    lines = 35_000  # x 60 kB = 2.1 GB on stdout
    cap = 1024 * 1024
    t0 = time.monotonic()
    records, outcome = probe(
        tmp_path, options={"fault": "flood", "flood_lines": lines}, log_cap_bytes=cap, timeout_s=240
    )
    seconds = time.monotonic() - t0
    size = outcome.log_path.stat().st_size
    flooded = lines * len("flood " * 10000 + "\n")
    held = (
        size < cap + 70 * 1024
        and verdict(records[0]) == "fail/unsupported_architecture"
        and not leftovers(outcome)
    )
    note(
        "faults",
        "log flood on stdout",
        tried=1,
        outcomes=[verdict(records[0])],
        expected="log capped, engine's last line still classifies",
        held=held,
        detail=f"{flooded / 1e9:.1f} GB written, log kept {size / 1e6:.2f} MB, {seconds:.0f} s",
    )
    assert size < cap + 70 * 1024, size
    assert verdict(records[0]) == "fail/unsupported_architecture"
    assert "bytes dropped" in outcome.log_text


# Disk full on the results directory


def test_log_on_a_full_disk_is_error_infra_not_a_hang(tmp_path, validate_record):
    """probe.log lands on /dev/full (every write: ENOSPC). The capture used to die and leave the
    child blocked on a full pipe: a false timeout after the whole time limit."""
    outs, seconds = [], []
    for fault in ("flood", "raise", "ok"):
        run = tmp_path / f"run-{fault}"
        run.mkdir()
        (run / "probe.log").symlink_to("/dev/full")
        t0 = time.monotonic()
        records, outcome = probe(
            tmp_path, options={"fault": fault, "flood_lines": 100}, log_dir=run, timeout_s=60
        )
        seconds.append(time.monotonic() - t0)
        outs.append(verdict(records[0]))
        validate_record(records[0])
        assert not leftovers(outcome)
    # A failing engine's verdict needs its log: ours to fix (error/infra), never a false red.
    # A stage that reported pass did pass: the missing log does not change that.
    want = ["error/infra", "error/infra", "pass/None"]
    held = outs == want and max(seconds) < 30
    note(
        "faults",
        "results directory full (log on /dev/full)",
        tried=len(outs),
        outcomes=outs,
        expected="error/infra for failing engines, pass stays pass, within seconds",
        held=held,
        detail=f"slowest {max(seconds):.1f} s of a 60 s limit",
    )
    assert outs == want, outs
    assert max(seconds) < 30


DISK_FULL_DRIVER = """\
import json, sys
from pathlib import Path
from probes.runner import ProbeRequest, run_probe
from probes.record import build_records
full, model = Path(sys.argv[1]), Path(sys.argv[2])
out = []
for name, fault in [("fills-up", "flood"), ("already-full", "ok")]:
    req = ProbeRequest(engine="fault", model_dir=model, stages=["load", "generate"],
                       options={"fault": fault, "flood_lines": 100}, timeout_s=30)
    o = run_probe(req, full / name)
    recs = build_records(stages=req.stages, outcome=o, engine="fault", engine_version="1",
                         model={"id": "m"})
    out.append([name, recs[0]["status"], recs[0]["failure_class"], recs[0]["message"]])
print(json.dumps(out))
"""


def test_a_really_full_filesystem_is_error_infra(tmp_path):
    """A 32 kB tmpfs in a user+mount namespace: the first probe fills it, the second finds it
    full before it starts. Skipped where unprivileged namespaces are off."""
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -rm (user + mount namespace) not allowed here")
    full, model = tmp_path / "full", tmp_path / "model"
    full.mkdir(), model.mkdir()
    script = tmp_path / "driver.py"
    script.write_text(DISK_FULL_DRIVER)
    shell = f"mount -t tmpfs -o size=32k tmpfs {full} && {sys.executable} {script} {full} {model}"
    got = json_answer(["unshare", "-rm", "sh", "-c", shell], timeout=120)
    outs = [f"{status}/{cls}" for _name, status, cls, _msg in got]
    note(
        "faults",
        "results directory full (real 32 kB tmpfs)",
        tried=len(got),
        outcomes=outs,
        expected="error/infra",
        held=all(o == "error/infra" for o in outs),
        detail="; ".join(f"{n}: {m}"[:90] for n, _s, _c, m in got),
    )
    assert outs == ["error/infra", "error/infra"], got
    assert all("No space left" in m for *_, m in got), got


# Engine servers

NEVER_HEALTHY = """\
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(__import__("sys").argv[1])), H).serve_forever()
"""

DIES_MID_REQUEST = """\
import http.server, json, os, subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])  # a worker of its own
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"data": []}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        os._exit(1)  # dies with the request half-way
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                if fh.read().rsplit(b")", 1)[1].split()[0] != b"Z":
                    out.append(pid)
        except OSError:
            continue
    return out


def test_server_that_never_becomes_healthy_is_a_timeout(tmp_path):
    from probes.outcome import StageFailure
    from probes.serving import descendants, free_port, start_server

    script = tmp_path / "never.py"
    script.write_text(NEVER_HEALTHY)
    outs, left = [], []
    for _ in range(2):
        port = free_port()
        t0 = time.monotonic()
        with pytest.raises(StageFailure) as caught:
            start_server([sys.executable, str(script), str(port)], port, tmp_path / "srv.log", timeout_s=3)
        outs.append(f"{caught.value.status}/{caught.value.failure_class}")
        assert time.monotonic() - t0 < 20
        left += _alive(descendants(os.getpid()))
    note(
        "faults",
        "engine server never healthy (503 forever)",
        tried=len(outs),
        outcomes=outs,
        expected="timeout/timeout, server stopped",
        held=outs == ["timeout/timeout"] * 2 and not left,
        detail=f"{len(left)} processes left",
    )
    assert outs == ["timeout/timeout"] * 2 and not left


PROBE_WITH_DYING_SERVER = """\
import json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from probes.serving import descendants, free_port, start_server
port = free_port()
server = start_server([sys.executable, sys.argv[2], str(port)], port, Path(sys.argv[3]),
                      timeout_s=30)
Path(sys.argv[4]).write_text(json.dumps([server.proc.pid, *descendants(server.proc.pid)]))
try:
    server.chat([{"role": "user", "content": "hi"}], timeout=30)
except Exception as exc:
    print(f"engine server died mid-request: {type(exc).__name__}: {exc}", flush=True)
    server.stop(grace_s=2)
    sys.exit(1)
"""


def test_server_that_dies_mid_request_fails_fast_and_leaves_nothing(tmp_path):
    """A probe child whose engine server (with a worker of its own) dies mid-request. The
    server's own stop() cannot see the worker once the server is gone (it is reparented); the
    runner's process-group kill is what leaves nothing behind."""
    dies, child, pids = tmp_path / "dies.py", tmp_path / "child.py", tmp_path / "pids.json"
    dies.write_text(DIES_MID_REQUEST)
    child.write_text(PROBE_WITH_DYING_SERVER)
    shim = tmp_path / "python"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} {child} {ROOT} {dies} {tmp_path / 'srv.log'} {pids}\n")
    shim.chmod(0o755)
    t0 = time.monotonic()
    records, outcome = probe(tmp_path, python=str(shim), timeout_s=60)
    seconds = time.monotonic() - t0
    time.sleep(0.3)
    tree = json.loads(pids.read_text())
    left = _alive(tree)
    out = verdict(records[0])
    note(
        "faults",
        "engine server dies mid-request",
        tried=1,
        outcomes=[out],
        expected="fail within seconds, server and its worker gone",
        held=out.startswith("fail/") and seconds < 30 and not left,
        detail=f"{seconds:.1f} s; {len(tree)} server processes, {len(left)} left",
    )
    assert out.startswith("fail/") and "died mid-request" in outcome.log_text
    assert not left, left


LEAVES_ITS_GROUP = """\
import http.server, json, os, sys
os.setpgrp()  # as SGLang's launch_server does: out of the probe's process group
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"data": [{"id": "m"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

PROBE_HOLDING_A_SERVER = """\
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from probes.serving import free_port, start_server
port = free_port()
server = start_server([sys.executable, sys.argv[2], str(port)], port, Path(sys.argv[3]),
                      timeout_s=30)
Path(sys.argv[4]).write_text(str(server.proc.pid))
time.sleep(300)
"""


def test_a_server_that_leaves_the_probes_group_dies_with_the_probe(tmp_path):
    """A probe killed outright (its runner killed, a nightly stopped) takes its engine's server
    with it, even one that left the probe's process group, where the group kill cannot reach."""
    server, child, pid_file = tmp_path / "server.py", tmp_path / "child.py", tmp_path / "pid"
    server.write_text(LEAVES_ITS_GROUP)
    child.write_text(PROBE_HOLDING_A_SERVER)
    proc = subprocess.Popen(
        [sys.executable, str(child), str(ROOT), str(server), str(tmp_path / "srv.log"), str(pid_file)]
    )
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        pid = int(pid_file.read_text())
        assert os.getpgid(pid) == pid  # it did leave the probe's group
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while _alive([pid]) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _alive([pid])
    for orphan in left:  # a failing run must not leave its server behind either
        os.kill(orphan, signal.SIGKILL)
    assert not left


# The nightly killed -9 at random points

NIGHTLY_MODELS = 10


def nightly_driver(home: str) -> None:
    """One nightly over local models, probed by the fault engine (full tier: used in place)."""
    from rich.console import Console

    import matrix.environments
    from matrix.discover import DiscoveredModel
    from matrix.nightly import NightlyOptions, run_nightly

    # The fault engine needs no packages: its environment is this interpreter (the venv
    # builder refuses an empty requirement list, see the report to the lead).
    matrix.environments.ensure_env = lambda engine, version=None, say=None, **_kw: (
        matrix.environments.Environment("fault", "1", "local", str(ROOT), sys.executable, {}, 0.0, 0.0, [])
    )

    home_path = Path(home)
    models = []
    for i in range(NIGHTLY_MODELS):
        d = home_path / "models" / f"m{i}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "model.safetensors.index.json").write_text("{}")
        # As the arch tier's shrunk copies do: the directory names its model and revision.
        (d / "dayone.json").write_text(json.dumps({"id": f"org/m{i}", "revision": f"rev{i}"}))
        models.append(DiscoveredModel(id=f"org/m{i}", revision=f"rev{i}", source="local", model_dir=str(d)))
    opts = NightlyOptions(
        engines=["fault"],
        tier="full",
        jobs=2,
        db=f"sqlite:///{home_path / 'dayone.db'}",
        work_dir=home_path / "nightly",
        timeout_s=60,
    )
    report = run_nightly(
        None, opts, models=models, say=lambda _m: None, console=Console(file=open(os.devnull, "w"))
    )
    print(json.dumps(report.summary()))


def _start_nightly(home: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from tests.test_reliability import nightly_driver; nightly_driver({str(home)!r})",
        ],
        cwd=ROOT,
        env={**os.environ, "DAYONE_HOME": str(home), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _rows(home: Path) -> Counter:
    db = home / "dayone.db"
    if not db.exists():
        return Counter()
    with sqlite3.connect(db) as c:
        try:
            got = c.execute(
                "select m.model_id, m.revision, e.environment_id, r.stage, r.status"
                " from results r join model_revisions m on m.id ="
                " r.model_revision_pk join environments e on e.id ="
                " r.environment_pk"
            ).fetchall()
        except sqlite3.OperationalError:  # killed before the schema was there
            return Counter()
    return Counter(got)


def _probe_children(home: Path) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            except OSError:
                continue
            if b"probes.child" in cmd and str(home).encode() in cmd:
                out.append(int(entry.name))
    return _alive(out)


def test_nightly_killed_at_random_points_ends_with_the_rows_of_a_clean_run(tmp_path):
    ref = tmp_path / "ref"
    t0 = time.monotonic()
    clean = _start_nightly(ref)
    out, err = clean.communicate(timeout=300)
    assert clean.returncode == 0, err[-3000:]
    clean_s = time.monotonic() - t0
    reference = _rows(ref)
    assert len(reference) == NIGHTLY_MODELS * len(STAGES) and max(reference.values()) == 1
    # An erroring probe is retried on resume, which would count as doubled rows: the clean
    # run must reach real verdicts for the resume check to mean anything.
    assert not [k for k in reference if k[-1] == "error"], reference

    rng = random.Random(11)
    rounds, kills_per_round, kills, orphans = 5, 2, 0, 0
    progress, doubled, lost, same = [], 0, 0, 0
    for n in range(rounds):  # each round from an empty store: kill, kill, resume
        home = tmp_path / f"killed{n}"
        for _ in range(kills_per_round):
            proc = _start_nightly(home)
            time.sleep(rng.uniform(0.1, clean_s))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                kills += 1
            proc.communicate(timeout=60)
            time.sleep(0.5)  # the kernel delivers the probe children's parent-death signal
            orphans += len(_probe_children(home))
            progress.append(sum(_rows(home).values()))
        final = _start_nightly(home)
        _out, err = final.communicate(timeout=300)
        assert final.returncode == 0, err[-3000:]
        resumed = _rows(home)
        doubled += sum(n - 1 for n in resumed.values() if n > 1)
        lost += sum((reference - resumed).values())
        same += resumed == reference
    held = same == rounds and not orphans
    note(
        "faults",
        "nightly killed -9 at a random point, then resumed",
        tried=kills,
        outcomes=Counter({"same rows as a clean run": same, "rows differ": rounds - same}),
        expected="exactly the rows of an uninterrupted run, no orphan probe",
        held=held,
        detail=f"{rounds} rounds of {NIGHTLY_MODELS * 2} rows; rows stored at "
        f"each kill: {progress}; lost {lost}, doubled {doubled}, "
        f"orphan probes {orphans}",
    )
    assert doubled == 0 and lost == 0 and same == rounds
    assert orphans == 0
