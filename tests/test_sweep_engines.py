"""The architecture map in every engine: CI's representative subset of `dayone sweep`.

Real engines on shrunk copies: transformers (the reference), llama.cpp, vLLM and SGLang, three
probes at once as the sweep runs them. Every (architecture, engine) ends with a verdict for each
architecture stage; one the shrink refuses is an `error` with why in every engine; parallel
probes share one transformers reference per revision.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from probes.engines import get_spec
from probes.stages import ARCH_MAP_STAGES

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("transformers", "llamacpp", "vllm", "sglang")
# gemma4_text: the Gemma 4 text stack (llama.cpp needs its SentencePiece-style tokenizer), and
# its MoE release as a sweep variant; gpt_oss: attention sinks, which SGLang's CPU attention
# backend lacks; musicgen: refused by the shrink.
TYPES = ("gemma4_text", "gemma4_text+moe", "gpt_oss", "musicgen")


def results(home: Path) -> dict[tuple[str, str, str], tuple[str, str | None, str | None]]:
    with sqlite3.connect(home / "dayone.db") as db:
        rows = db.execute(
            "select m.model_id, e.engine_name, r.stage, r.status, r.failure_class, r.message"
            " from results r join model_revisions m on m.id = r.model_revision_pk"
            " join environments e on e.id = r.environment_pk"
        ).fetchall()
    return {(m, e, s): (st, fc, msg) for m, e, s, st, fc, msg in rows}


@pytest.fixture(scope="module")
def swept(tf_env, tmp_path_factory) -> tuple[Path, dict]:
    home = tmp_path_factory.mktemp("sweep-engines")
    env = {**os.environ, "DAYONE_HOME": str(home), "PYTHONPATH": str(ROOT)}
    args = [
        sys.executable,
        "-m",
        "service.cli",
        "sweep",
        "--types",
        ",".join(TYPES),
        "--jobs",
        "3",
        "--max-heavy",
        "2",
        "--timeout",
        "600",
    ]
    for engine in ENGINES:
        args += ["--engine", engine]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return home, results(home)


def test_every_architecture_has_a_verdict_in_every_engine(swept):
    _home, got = swept
    for model_type in TYPES:
        for engine in ENGINES:
            stages = [s for s in get_spec(engine).stages if s in ARCH_MAP_STAGES]
            for stage in stages:
                assert (f"arch/{model_type}", engine, stage) in got, (model_type, engine, stage)
    # the map asks architecture questions only: no serving-feature stage on random weights
    assert {stage for (_m, _e, stage) in got} <= set(ARCH_MAP_STAGES)


def test_refused_architecture_is_an_error_with_why_everywhere(swept):
    _home, got = swept
    for engine in ENGINES:
        status, _cls, message = got[("arch/musicgen", engine, "load")]
        assert status == "error" and message.startswith("shrink failed: musicgen")


def test_verdicts_of_the_motivating_families(swept):
    _home, got = swept
    assert got[("arch/gemma4_text", "transformers", "generate")][0] == "pass"
    assert got[("arch/gemma4_text+moe", "transformers", "generate")][0] == "pass"
    # our fixture tokenizer in Gemma 4's own shape: conversion is llama.cpp's verdict, not ours
    assert got[("arch/gemma4_text", "llamacpp", "convert")][0] == "pass"
    assert got[("arch/gemma4_text", "llamacpp", "generate")][0] == "pass"
    assert got[("arch/gpt_oss", "vllm", "generate")][0] == "pass"
    status, failure_class, _msg = got[("arch/gpt_oss", "sglang", "load")]
    assert (status, failure_class) == ("fail", "kernel_or_dtype")
    # SGLang reads config.head_dim, which transformers 5 keeps per layer for Gemma 4
    status, failure_class, _msg = got[("arch/gemma4_text", "sglang", "load")]
    assert (status, failure_class) == ("fail", "config_conflict")


def test_parallel_probes_share_one_reference(swept):
    home, got = swept
    for (model, engine, stage), (_status, _cls, message) in got.items():
        if stage == "parity" and got[(model, "transformers", "generate")][0] == "pass":
            assert "no transformers reference" not in (message or ""), (model, engine, message)
    for model_type in ("gemma4_text", "gemma4_text+moe", "gpt_oss"):
        safe = model_type.replace("+", "_")  # as the log directory names it
        refs = list((home / "nightly" / "logs").glob(f"*/arch_{safe}/transformers-*-reference"))
        assert len(refs) <= 1, refs  # none when an earlier run cached this revision's


def test_second_sweep_plans_nothing(swept):
    home, _got = swept
    env = {**os.environ, "DAYONE_HOME": str(home), "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "service.cli", "sweep", "--types", ",".join(TYPES)]
    for engine in ENGINES:
        args += ["--engine", engine]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["tasks"] == 0
