"""The runner turns every way a probe child can die into a record, never a traceback."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from probes.modelinfo import read_model_info
from probes.record import build_records
from probes.runner import ProbeRequest, group_members, run_probe

STAGES = ["load", "generate"]


def probe_fault(tmp_path: Path, fault: str, **kw) -> tuple[list[dict], object]:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    options = {"fault": fault, **kw.pop("options", {})}
    req = ProbeRequest(engine="fault", model_dir=model, stages=STAGES, python=sys.executable,
                       options=options, **kw)
    outcome = run_probe(req, tmp_path / "run")
    records = build_records(stages=STAGES, outcome=outcome, engine="fault", engine_version="1",
                            model=read_model_info(model).as_record())
    return records, outcome


@pytest.mark.parametrize("fault,signal_name", [("segfault", "SIGSEGV"), ("abort", "SIGABRT"),
                                               ("kill", "SIGKILL")])
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
    records, outcome = probe_fault(tmp_path, "flood", log_cap_bytes=cap,
                                   options={"flood_lines": 1500})  # ~90 MB on stdout
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
    records, _ = probe_fault(tmp_path, "raise",
                             options={"message": "Model architectures ['FooForCausalLM'] are not supported for now."})
    assert (records[0]["status"], records[0]["failure_class"]) == ("fail", "unsupported_architecture")


def test_missing_interpreter_is_infra(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    req = ProbeRequest(engine="fault", model_dir=model, stages=STAGES,
                       python=str(tmp_path / "no-python"))
    outcome = run_probe(req, tmp_path / "run")
    records = build_records(stages=STAGES, outcome=outcome, engine="fault", engine_version="1",
                            model=read_model_info(model).as_record())
    assert (records[0]["status"], records[0]["failure_class"]) == ("error", "infra")


def test_healthy_fault_engine_passes(tmp_path):
    records, outcome = probe_fault(tmp_path, "ok")
    assert [r["status"] for r in records] == ["pass", "pass"]
    assert outcome.returncode == 0
