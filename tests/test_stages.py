"""What each stage needs, and which stages a red blocks (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from probes.record import oom_evidence, stage_verdicts
from probes.runner import ProbeOutcome
from probes.stages import NEEDS, STAGES, blocker, needs_of, skip_message


def test_needs_name_only_known_earlier_stages():
    assert set(NEEDS) == set(STAGES)
    for stage, needs in NEEDS.items():
        assert all(STAGES.index(n) < STAGES.index(stage) for n in needs), stage


@pytest.mark.parametrize(
    "stage, needs",
    [
        ("convert", []),
        ("load", ["convert"]),
        ("generate", ["convert", "load"]),
        ("parity", ["convert", "load", "generate"]),
        ("serve", ["convert", "load"]),
        ("tool_call", ["convert", "load", "serve"]),
        ("throughput", ["convert", "load", "serve"]),
        ("finetune", []),
    ],
)
def test_needs_are_transitive(stage, needs):
    assert needs_of(stage) == needs


@pytest.mark.parametrize(
    "stage, statuses, expected",
    [
        ("json_schema", {"load": "pass", "serve": "pass", "tool_call": "fail"}, None),
        ("throughput", {"load": "pass", "serve": "pass", "tool_call": "fail"}, None),
        ("throughput", {"load": "pass", "serve": "fail"}, ("serve", "fail")),
        ("tool_call", {"load": "timeout"}, ("load", "timeout")),  # serve blocked itself
        ("tool_call", {"load": "timeout", "serve": "skipped"}, ("load", "timeout")),
        ("serve", {"load": "pass", "generate": "fail", "parity": "skipped"}, None),
        ("parity", {"load": "pass", "generate": "oom"}, ("generate", "oom")),
        ("parity", {"load": "pass", "generate": "degraded"}, None),
        ("load", {"convert": "error"}, ("convert", "error")),
        ("load", {}, None),  # no convert in this engine
        ("finetune", {"load": "fail"}, None),
        ("json_schema", {"load": "pass", "serve": "pass", "chat_template": "skipped"}, None),
    ],
)
def test_blocker(stage, statuses, expected):
    assert blocker(stage, statuses) == expected


def _outcome(tmp_path: Path, events, returncode=0, **kw) -> ProbeOutcome:
    return ProbeOutcome(
        events,
        returncode,
        kw.pop("timed_out", False),
        kw.pop("memory_exceeded", False),
        kw.pop("peak_rss_mb", 10.0),
        tmp_path / "probe.log",
        "",
        1.0,
        0.0,
        [],
        **kw,
    )


def _end(stage, status, fc=None, msg=None):
    return {"event": "end", "stage": stage, "status": status, "failure_class": fc, "message": msg}


def test_host_marks_only_dependents_skipped(tmp_path):
    stages = ["load", "generate", "parity", "serve", "tool_call", "json_schema", "throughput"]
    events = [
        _end("load", "pass"),
        _end("generate", "fail", "wrong_output", "no tokens"),
        _end("serve", "pass"),
        _end("tool_call", "fail", "wrong_output", "no call"),
        _end("json_schema", "pass"),
        _end("throughput", "degraded"),
    ]
    got = {s: (v.status, v.message) for s, v, _e in stage_verdicts(stages, _outcome(tmp_path, events), "x")}
    assert got["parity"] == ("skipped", "blocked by generate (fail)")
    assert got["json_schema"][0] == "pass" and got["throughput"][0] == "degraded"


def test_a_red_on_a_copy_unlike_every_release_is_no_verdict(tmp_path):
    """DeepSeek-V4 releases ship FP8 / FP4 weights no random bf16 copy has: a red there says
    nothing about the engine (no verdict, with its words); a pass and an oom stay as they are."""
    events = [_end("convert", "pass"), _end("load", "fail", "unknown", "KeyError: 'w1.scale'")]
    got = {
        s: (v.status, v.message)
        for s, v, _e in stage_verdicts(
            ["convert", "load", "generate"], _outcome(tmp_path, events), "x", "FP8 weights"
        )
    }
    assert got["convert"] == ("pass", None)
    assert got["load"][0] == "error" and "no verdict" in got["load"][1]
    assert "FP8 weights" in got["load"][1] and "KeyError: 'w1.scale'" in got["load"][1]
    assert got["generate"] == ("skipped", "blocked by load (error)")
    plain = stage_verdicts(["load"], _outcome(tmp_path, events[1:]), "x")[0][1]
    assert plain.status == "fail"  # the same red on a copy like its releases is the engine's
    oom = [_end("load", "oom", "out_of_memory", "killed")]
    assert stage_verdicts(["load"], _outcome(tmp_path, oom), "x", "FP8")[0][1].status == "oom"


def test_a_child_that_died_blocks_everything_after_it(tmp_path):
    stages = ["load", "generate", "serve", "finetune"]
    events = [_end("load", "pass")]
    got = [
        (s, v.status, v.message)
        for s, v, _e in stage_verdicts(stages, _outcome(tmp_path, events, returncode=-11), "x")
    ]
    assert got[1][1] == "fail" and "SIGSEGV" in got[1][2]
    assert got[2][1:] == got[3][1:] == ("skipped", "blocked by generate (fail)")


@pytest.mark.parametrize(
    "kw, expected",
    [
        ({"returncode": -9, "oom_kills_delta": 1, "memory_limit_mb": 8192.0}, "OOM kill"),
        (
            {
                "returncode": -9,
                "oom_kills_delta": 0,
                "peak_rss_mb": 7500.0,
                "memory_limit_mb": 8000.0,
                "memory_limit_source": "cgroup x memory.max",
            },
            "94% of cgroup x memory.max",
        ),
        (
            {"returncode": -9, "oom_kills_delta": None, "peak_rss_mb": 7000.0, "memory_limit_mb": 8000.0},
            None,
        ),  # 88%: not near
        ({"returncode": -9, "oom_kills_delta": 0, "memory_limit_mb": 8192.0}, None),  # a crash
        ({"returncode": -11, "oom_kills_delta": 1, "memory_limit_mb": 8192.0}, None),  # SIGSEGV
        ({"returncode": 1, "oom_kills_delta": 1, "memory_limit_mb": 8192.0}, None),
        ({"returncode": -9, "oom_kills_delta": 1, "timed_out": True}, None),  # the watchdog's
        ({"returncode": -9, "oom_kills_delta": None, "memory_limit_mb": None}, None),
    ],
)
def test_oom_evidence(tmp_path, kw, expected):
    got = oom_evidence(_outcome(tmp_path, [], **kw))
    assert (got is None) if expected is None else (expected in got), got


def test_a_sigkill_with_an_oom_kill_is_oom_and_without_is_a_crash(tmp_path):
    kill = {"returncode": -9, "memory_limit_mb": 8192.0}
    oom = stage_verdicts(["load"], _outcome(tmp_path, [], oom_kills_delta=2, **kill), "x")[0][1]
    crash = stage_verdicts(["load"], _outcome(tmp_path, [], oom_kills_delta=0, **kill), "x")[0][1]
    assert (oom.status, oom.failure_class) == ("oom", "out_of_memory")
    assert "2 OOM kill" in oom.message
    assert (crash.status, crash.failure_class) == ("fail", "crash")


@pytest.mark.parametrize(
    "status, fc, kills, expected",
    [
        ("fail", "crash", 1, "oom"),
        ("fail", "unknown", 2, "oom"),
        ("fail", "crash", 0, "fail"),
        ("fail", "unknown", None, "fail"),
        ("fail", "wrong_output", 1, "fail"),  # a wrong answer is not a death
        ("fail", "unsupported_architecture", 1, "fail"),
        ("pass", None, 1, "pass"),
    ],
)
def test_a_stage_whose_worker_the_oom_killer_took(status, fc, kills, expected):
    from probes.record import Verdict, stage_oom

    got = stage_oom(Verdict(status, fc, "EngineCore died"), {"oom_kills": kills})
    assert got.status == expected
    if expected == "oom":
        assert got.failure_class == "out_of_memory" and "EngineCore died" in got.message


def test_a_stage_taken_out_before_the_run_says_its_own_blocker_first():
    """Parity without a reference is skipped for that reason, unless what it needs went red
    on its own: then it says so, as any blocked stage does."""
    why = "no transformers reference"
    assert skip_message("parity", {"load": "pass", "generate": "pass"}, why) == why
    assert skip_message("parity", {"load": "pass", "generate": "fail"}, why) == "blocked by generate (fail)"
    assert skip_message("parity", {"load": "oom", "generate": "skipped"}, why) == "blocked by load (oom)"
