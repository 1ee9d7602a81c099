"""The architecture map (`dayone map`): pure over records, and the command over a real store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from matrix import archmap

ROOT = Path(__file__).resolve().parent.parent


def rec(arch: str, engine: str, stage: str, status: str, *, failure_class: str | None = None,
        message: str | None = None, minute: int = 0, version: str = "1.0") -> dict:
    return {"schema_version": 1, "model": {"id": f"arch/{arch}", "revision": "r1"},
            "engine": {"name": engine, "version": version, "environment_id": f"{engine}-x"},
            "tier": "arch", "stage": stage, "status": status, "failure_class": failure_class,
            "message": message, "started_at": f"2026-11-23T10:{minute:02d}:00Z",
            "duration_s": 1.0, "run_id": "r"}


RECORDS = [
    rec("llama", "vllm", "load", "pass"), rec("llama", "vllm", "generate", "pass"),
    rec("llama", "vllm", "parity", "degraded", message="diverges within top-5"),
    rec("llama", "llamacpp", "convert", "pass"), rec("llama", "llamacpp", "load", "pass"),
    rec("gpt_oss", "sglang", "load", "fail", failure_class="kernel_or_dtype", message="sinks"),
    rec("gpt_oss", "sglang", "generate", "skipped", message="blocked by load (fail)"),
    rec("gpt_oss", "vllm", "load", "pass"),
    rec("musicgen", "vllm", "load", "error", failure_class="shrink", message="shrink failed: audio"),
    rec("other/model", "vllm", "load", "fail"),  # not from the sweep: not on the map
]
RECORDS[-1]["model"]["id"] = "org/model"


def test_map_cells_name_the_deciding_stage_and_class():
    amap = archmap.arch_map(RECORDS)
    assert sorted(amap) == ["gpt_oss", "llama", "musicgen"]
    assert amap["llama"]["vllm"].label() == "degraded: parity"
    assert amap["llama"]["llamacpp"].label() == "pass"
    assert amap["gpt_oss"]["sglang"].label() == "fail: load (kernel_or_dtype)"
    assert amap["musicgen"]["vllm"].message == "shrink failed: audio"


def test_newest_result_of_the_newest_version_decides():
    later = RECORDS + [rec("gpt_oss", "sglang", "load", "pass", minute=5, version="1.1"),
                       rec("gpt_oss", "sglang", "generate", "pass", minute=6, version="1.1")]
    assert archmap.arch_map(later)["gpt_oss"]["sglang"].label() == "pass"


def test_coverage_counts_verdicts_in_every_engine_and_lists_the_rest_with_why():
    amap = archmap.arch_map(RECORDS)
    cover = archmap.coverage(amap, ["vllm", "sglang", "llamacpp"])
    assert cover["architectures"] == 3 and cover["verdict_in_every_engine"] == 0
    cover = archmap.coverage(amap, ["vllm"])
    assert (cover["verdict_in_every_engine"], cover["percent"]) == (2, 66.7)
    assert cover["per_engine"]["vllm"] == {"degraded": 1, "pass": 1, "error": 1}
    assert cover["without_verdict"] == [{"architecture": "musicgen", "engine": "vllm",
                                         "status": "error", "why": "shrink failed: audio"}]


def test_markdown_escapes_pipes():
    amap = {"x|y": {"vllm": archmap.MapCell("fail", "load", "a|b")}}
    text = archmap.map_markdown(amap, ["vllm", "sglang"])
    assert "| x|y |" not in text and "fail: load (a\\|b) | - |" in text


def test_map_command_over_a_real_store(tmp_path):
    records = tmp_path / "r.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    env = {**os.environ, "DAYONE_HOME": str(tmp_path)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "service.cli", *a], cwd=ROOT,  # noqa: E731
                                    env=env, capture_output=True, text=True, timeout=120)
    empty = run("map")
    assert empty.returncode != 0 and "run `dayone sweep` first" in empty.stderr
    assert run("ingest", str(records)).returncode == 0
    md = run("map", "--markdown", "-e", "vllm")
    assert md.returncode == 0, md.stderr
    assert md.stdout.splitlines()[0] == "| architecture | vllm |"
    assert "2/3 architectures (66.7%) have a verdict in every engine" in md.stderr
    data = json.loads(run("map", "--json").stdout)
    assert data["cells"]["gpt_oss"]["sglang"]["failure_class"] == "kernel_or_dtype"


def test_the_map_says_why_the_converter_failed():
    # the converter's cause is its own class: an unknown architecture is not a tokenizer problem
    from probes.classify import CONVERSION_CAUSES, classify

    logs = {"bert": "INFO:hf-to-gguf:Model architecture: BertLMHeadModel\n"
                    "ERROR:hf-to-gguf:Model BertLMHeadModel is not supported",
            "phi": "NotImplementedError: BPE pre-tokenizer was not recognized - update "
                   "get_vocab_base_pre()",
            "molmo": "    n_head = self.hparams[\"num_attention_heads\"]\n"
                     "KeyError: 'num_attention_heads'"}
    records = []
    for arch, log in logs.items():
        klass = classify(log, "llamacpp").failure_class
        assert klass in CONVERSION_CAUSES
        records.append(rec(arch, "llamacpp", "convert", "fail", failure_class=klass))
    amap = archmap.arch_map(records)
    assert amap["bert"]["llamacpp"].label() == "fail: convert (conversion_unknown_architecture)"
    assert amap["phi"]["llamacpp"].label() == "fail: convert (conversion_tokenizer)"
    assert amap["molmo"]["llamacpp"].label() == "fail: convert (conversion_missing_config)"
