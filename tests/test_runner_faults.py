"""The runner turns every way a probe child can die into a record, never a traceback."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from conftest import fault_probe
from probes.runner import ProbeRequest, group_members

STAGES = ["load", "generate"]


def probe_fault(tmp_path: Path, fault: str, **kw) -> tuple[list[dict], object]:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    options = {"fault": fault, **kw.pop("options", {})}
    req = ProbeRequest(
        engine="fault", model_dir=model, stages=STAGES, python=sys.executable, options=options, **kw
    )
    return fault_probe(req, tmp_path / "run")


@pytest.mark.parametrize(
    "fault,signal_name", [("segfault", "SIGSEGV"), ("abort", "SIGABRT"), ("kill", "SIGKILL")]
)
def test_child_killed_by_signal_is_a_crash(tmp_path, validate_record, fault, signal_name):
    records, outcome = probe_fault(tmp_path, fault)
    load, generate = records
    assert (load["status"], load["failure_class"]) == ("fail", "crash")
    assert signal_name in load["message"]
    assert generate["status"] == "skipped"
    assert group_members(outcome.pid) == []
    for r in records:
        validate_record(r)


def test_hang_is_a_timeout_and_the_group_is_killed(tmp_path, validate_record):
    t0 = time.monotonic()
    records, outcome = probe_fault(tmp_path, "hang", timeout_s=3)
    assert time.monotonic() - t0 < 20
    load, generate = records
    assert (load["status"], load["failure_class"]) == ("timeout", "timeout")
    assert generate["status"] == "skipped"
    assert outcome.timed_out
    assert group_members(outcome.pid) == []
    validate_record(load)


def test_memory_blow_up_is_oom(tmp_path, validate_record):
    records, outcome = probe_fault(tmp_path, "memory", memory_mb=400, timeout_s=60)
    load = records[0]
    assert (load["status"], load["failure_class"]) == ("oom", "out_of_memory"), load["message"]
    assert outcome.memory_exceeded and outcome.peak_rss_mb > 400
    validate_record(load)


def test_log_flood_is_capped_and_still_classified(tmp_path):
    cap = 256 * 1024
    records, outcome = probe_fault(
        tmp_path, "flood", log_cap_bytes=cap, options={"flood_lines": 1500}
    )  # ~90 MB on stdout
    size = outcome.log_path.stat().st_size
    assert size < cap + 70 * 1024 + 512, size
    assert "bytes dropped" in outcome.log_text
    # The engine's last word survives in the tail and decides the class.
    assert records[0]["failure_class"] == "unsupported_architecture"


def test_exit_without_signal_and_without_message_is_a_crash(tmp_path):
    records, _ = probe_fault(tmp_path, "exit")
    assert (records[0]["status"], records[0]["failure_class"]) == ("fail", "crash")
    assert "exit status 7" in records[0]["message"]


def test_our_own_bug_is_error_infra_not_the_engines_fail(tmp_path):
    records, _ = probe_fault(tmp_path, "harness_bug")
    assert (records[0]["status"], records[0]["failure_class"]) == ("error", "infra")


def test_engine_exception_is_classified_from_the_log(tmp_path):
    records, _ = probe_fault(
        tmp_path,
        "raise",
        options={"message": "Model architectures ['FooForCausalLM'] are not supported for now."},
    )
    assert (records[0]["status"], records[0]["failure_class"]) == ("fail", "unsupported_architecture")


def test_missing_interpreter_is_infra(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    req = ProbeRequest(engine="fault", model_dir=model, stages=STAGES, python=str(tmp_path / "no-python"))
    records, _outcome = fault_probe(req, tmp_path / "run")
    assert (records[0]["status"], records[0]["failure_class"]) == ("error", "infra")


def test_healthy_fault_engine_passes(tmp_path):
    records, outcome = probe_fault(tmp_path, "ok")
    assert [r["status"] for r in records] == ["pass", "pass"]
    assert outcome.returncode == 0


# The host's OOM killer is not an engine crash


def _memory_cgroup(tmp_path: Path, limit_mb: int) -> Path | None:
    """A fresh memory cgroup (v2 or v1's memory controller) with a small limit and no swap,
    under the one this test runs in; None where none can be made."""
    from probes.runner import memory_cgroups

    for here in memory_cgroups():
        v2 = (here / "memory.events").exists()
        cg = here / f"dayone-test-{os.getpid()}-{tmp_path.name}"
        try:
            cg.mkdir()
            limit = str(limit_mb * 2**20)
            (cg / ("memory.max" if v2 else "memory.limit_in_bytes")).write_text(limit)
            for swap in ("memory.swap.max", "memory.memsw.limit_in_bytes"):
                if (cg / swap).exists():
                    (cg / swap).write_text("0" if v2 else limit)
            return cg
        except OSError:
            if cg.exists():
                cg.rmdir()
    return None


@pytest.mark.parametrize(
    "fault, rc, words",
    [
        ("memory", -9, "OOM kill"),  # the child itself is killed
        ("memory_worker", 0, "took a process of the engine"),  # its worker is; it reports that
    ],
)
def test_kernel_oom_kill_in_a_small_cgroup_is_oom_not_crash(tmp_path, validate_record, fault, rc, words):
    cg = _memory_cgroup(tmp_path, 300)
    if cg is None:
        pytest.skip("no writable memory cgroup here")
    # The runner itself goes into the cgroup, so its child is born there; the watchdog's own
    # limit is far above, so only the kernel's OOM killer can end the child.
    script = f"""
import json, os, sys
from pathlib import Path
Path({str(cg / "cgroup.procs")!r}).write_text(str(os.getpid()))
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_runner_faults import probe_fault
records, outcome = probe_fault(Path({str(tmp_path)!r}), {fault!r}, memory_mb=100000,
                               timeout_s=120)
print(json.dumps({{"records": records, "delta": outcome.oom_kills_delta,
                   "rc": outcome.returncode}}))
"""
    import json
    import subprocess

    try:
        out = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=Path(__file__).parent.parent,
        )
    finally:
        time.sleep(0.5)
        try:
            cg.rmdir()
        except OSError:
            pass
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.splitlines()[-1])
    load, generate = got["records"]
    assert got["rc"] == rc and got["delta"] >= 1, got
    assert (load["status"], load["failure_class"]) == ("oom", "out_of_memory"), load["message"]
    assert words in load["message"]
    assert generate["status"] == "skipped"
    for r in got["records"]:
        validate_record(r)


def test_a_self_inflicted_sigkill_with_little_memory_stays_a_crash(tmp_path):
    records, outcome = probe_fault(tmp_path, "kill")
    assert outcome.oom_kills_delta in (0, None) and outcome.memory_limit_mb
    assert outcome.peak_rss_mb < 0.9 * outcome.memory_limit_mb
    assert (records[0]["status"], records[0]["failure_class"]) == ("fail", "crash")


# A red blocks only the stages that need it


def test_a_failed_middle_stage_blocks_its_dependents_and_independent_stages_still_run(
    tmp_path, validate_record
):
    stages = ["load", "generate", "parity", "serve", "tool_call", "json_schema", "throughput"]
    model = tmp_path / "model"
    model.mkdir()
    req = ProbeRequest(
        engine="fault",
        model_dir=model,
        stages=stages,
        python=sys.executable,
        options={"fault": "ok", "fail_stages": ["generate", "tool_call"]},
    )
    records, outcome = fault_probe(req, tmp_path / "run")
    ran = [e["stage"] for e in outcome.events if e.get("event") == "start"]
    assert ran == ["load", "generate", "serve", "tool_call", "json_schema", "throughput"]
    got = {r["stage"]: (r["status"], r["message"]) for r in records}
    assert got["generate"][0] == "fail" and "generate exploded" in got["generate"][1]
    assert got["parity"] == ("skipped", "blocked by generate (fail)")
    assert got["tool_call"][0] == "fail"
    assert got["json_schema"][0] == got["throughput"][0] == got["serve"][0] == "pass"
    for r in records:
        validate_record(r)
