"""The architecture map (`dayone map`): pure over records, and the command over a real store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import dayone_at
from matrix import archmap


def rec(
    arch: str,
    engine: str,
    stage: str,
    status: str,
    *,
    failure_class: str | None = None,
    message: str | None = None,
    minute: int = 0,
    version: str = "1.0",
) -> dict:
    return {
        "schema_version": 1,
        "model": {"id": f"arch/{arch}", "revision": "r1"},
        "engine": {"name": engine, "version": version, "environment_id": f"{engine}-x"},
        "tier": "arch",
        "stage": stage,
        "status": status,
        "failure_class": failure_class,
        "message": message,
        "started_at": f"2026-11-23T10:{minute:02d}:00Z",
        "duration_s": 1.0,
        "run_id": "r",
    }


RECORDS = [
    rec("llama", "vllm", "load", "pass"),
    rec("llama", "vllm", "generate", "pass"),
    rec("llama", "vllm", "parity", "degraded", message="diverges within top-5"),
    rec("llama", "llamacpp", "convert", "pass"),
    rec("llama", "llamacpp", "load", "pass"),
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
    # Every stage shows: the blocked generate is there beside the failed load.
    assert amap["gpt_oss"]["sglang"].label() == "fail: load (kernel_or_dtype), generate skipped"
    assert [s.stage for s in amap["llama"]["vllm"].stages] == ["load", "generate", "parity"]
    assert amap["musicgen"]["vllm"].message == "shrink failed: audio"


def test_newest_result_of_the_newest_version_decides():
    later = RECORDS + [
        rec("gpt_oss", "sglang", "load", "pass", minute=5, version="1.1"),
        rec("gpt_oss", "sglang", "generate", "pass", minute=6, version="1.1"),
    ]
    assert archmap.arch_map(later)["gpt_oss"]["sglang"].label() == "pass"


def test_a_rows_lineage_is_its_newest_copys():
    """A rule change moved persimmon from Fuyu's text part (a release) to a synthetic copy:
    the row says what its newest records were probed on, in whatever order they come."""
    old = rec("persimmon", "vllm", "load", "error", minute=1)
    new = rec("persimmon", "vllm", "load", "pass", minute=9)
    old["model"]["lineage"] = {"source": "release", "repo": "adept/fuyu-8b"}
    new["model"]["lineage"] = {"source": "synthetic"}
    for order in ([old, new], [new, old]):
        assert archmap.lineages(order) == {"persimmon": {"source": "synthetic"}}


def test_coverage_counts_verdicts_in_every_engine_and_lists_the_rest_with_why():
    amap = archmap.arch_map(RECORDS)
    cover = archmap.coverage(amap, ["vllm", "sglang", "llamacpp"])
    assert cover["architectures"] == 3 and cover["verdict_in_every_engine"] == 0
    cover = archmap.coverage(amap, ["vllm"])
    assert (cover["verdict_in_every_engine"], cover["percent"]) == (2, 66.7)
    assert cover["per_engine"]["vllm"] == {"degraded": 1, "pass": 1, "error": 1}
    assert cover["without_verdict"] == [
        {"architecture": "musicgen", "engine": "vllm", "status": "error", "why": "shrink failed: audio"}
    ]


def test_the_fine_tune_group_is_counted_apart_from_the_inference_engines():
    records = [
        *RECORDS,
        rec("llama", "peft", "finetune", "pass"),
        rec("gpt_oss", "peft", "finetune", "fail", failure_class="unsupported_layer"),
        rec("llama", "trl", "finetune", "pass"),
    ]
    doc = archmap.map_document(records)
    assert doc["groups"] == {"inference": ["llamacpp", "sglang", "vllm"], "finetune": ["peft", "trl"]}
    assert doc["engines"] == ["llamacpp", "sglang", "vllm", "peft", "trl"]  # the group's columns last
    # the coverage figure is the inference engines' alone, as without fine-tuning results
    assert doc["coverage"] == archmap.map_document(RECORDS)["coverage"]
    tuning = doc["finetune_coverage"]
    assert set(tuning["per_engine"]) == {"peft", "trl"} and tuning["verdict_in_every_engine"] == 1
    assert doc["cells"]["gpt_oss"]["peft"]["status"] == "fail"
    assert archmap.map_document(RECORDS)["finetune_coverage"] is None


def test_markdown_escapes_pipes():
    amap = {"x|y": {"vllm": archmap.MapCell("fail", "load", "a|b")}}
    text = archmap.map_markdown(amap, ["vllm", "sglang"])
    assert "| x|y |" not in text and "fail: load (a\\|b) | - |" in text


def test_map_command_over_a_real_store(tmp_path):
    records = tmp_path / "r.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    run = dayone_at(tmp_path, timeout=120)
    empty = run("map")
    assert empty.returncode != 0 and "run `dayone sweep` first" in empty.stderr
    assert run("ingest", str(records)).returncode == 0
    md = run("map", "--markdown", "-e", "vllm")
    assert md.returncode == 0, md.stderr
    assert md.stdout.splitlines()[0] == "| architecture | vllm |"
    assert "2/3 generative architectures (66.7%) have a verdict in every inference engine" in md.stderr
    data = json.loads(run("map", "--json").stdout)
    assert data["cells"]["gpt_oss"]["sglang"]["failure_class"] == "kernel_or_dtype"


# No verdict kinds, every stage shown, generators apart: records built by probes.record
from probes.record import build_records, not_applicable_records  # noqa: E402
from probes.runner import ProbeOutcome  # noqa: E402


def probed(
    arch: str,
    engine: str,
    ends: dict[str, tuple[str, str | None, str | None]],
    stages: list[str],
    log: str = "",
    t: float = 1_795_000_000.0,
) -> list[dict]:
    """Records the way a probe makes them: the child's end events (or none, for a stage it
    never reported) through probes.record.build_records."""
    events = [
        {"event": "end", "stage": s, "status": st, "failure_class": fc, "message": msg, "duration_s": 1.0}
        for s, (st, fc, msg) in ends.items()
    ]
    outcome = ProbeOutcome(
        events=events,
        returncode=1 if log else 0,
        timed_out=False,
        memory_exceeded=False,
        peak_rss_mb=10.0,
        log_path=Path("/x/probe.log"),
        log_text=log,
        duration_s=2.0,
        started_at=t,
        argv=[],
    )
    return build_records(
        stages=stages,
        outcome=outcome,
        engine=engine,
        engine_version="1.0",
        model={"id": f"arch/{arch}", "revision": "r1", "model_type": arch},
        run_id="run1",
    )


ARCH = ["convert", "load", "generate", "parity"]
CUDA_ONLY = "NotImplementedError: Sparse Attention is not supported on CPU."


def built_records() -> list[dict]:
    ok = ("pass", None, None)
    return [
        # A green load over an `error` generate (ours): never a green cell.
        *probed(
            "qwen3",
            "vllm",
            {"load": ok, "generate": ("error", "infra", "harness bug: x")},
            ["load", "generate", "parity"],
        ),
        # vLLM's fallback: degraded, named, no measurement claimed.
        *probed(
            "gpt_neox",
            "vllm",
            {
                "load": ("degraded", "transformers_fallback", "ran on vLLM's transformers fallback"),
                "generate": ok,
                "parity": ok,
            },
            ["load", "generate", "parity"],
        ),
        # Logprob drift: degraded with the figures in the message.
        *probed(
            "gpt_neox",
            "llamacpp",
            {
                "convert": ok,
                "load": ok,
                "generate": ok,
                "parity": (
                    "degraded",
                    "logprob_drift",
                    "logprob drift: 0.2000 nats above the tolerance 0.0500",
                ),
            },
            ARCH,
        ),
        # A CUDA-only kernel on CPU: the child's load failed, the log says why.
        *probed(
            "deepseek_v32",
            "vllm",
            {"load": ("fail", None, "load failed")},
            ["load", "generate", "parity"],
            log=CUDA_ONLY,
        ),
        *probed("deepseek_v32", "llamacpp", {s: ok for s in ARCH}, ARCH),
        # An encoder: n/a everywhere, nothing run.
        *[
            r
            for e in ("vllm", "llamacpp")
            for r in not_applicable_records(
                stages=["load", "generate", "parity"],
                engine=e,
                engine_version="1.0",
                model={"id": "arch/bert", "revision": "r1", "model_type": "bert"},
                why="bert: an encoder",
                run_id="run1",
            )
        ],
        # A seq2seq type whose old records still say fail: listed apart by its type.
        *probed("bart", "vllm", {"load": ("fail", "unknown", "no")}, ["load", "generate"]),
    ]


def test_built_records_are_valid_and_carry_the_new_statuses(validate_record, monkeypatch):
    import probes.classify as classify

    # The class h3's rules give a CUDA-only kernel; until those rules land, the same class
    # from a one-rule set, so the status mapping is what this checks.
    rule = classify.Rule("not_on_cpu", "not_on_cpu", __import__("re").compile("not supported on CPU"))
    monkeypatch.setattr(classify, "load_rules", lambda path=None: (rule,))
    records = built_records()
    for r in records:
        validate_record(r)
    by = {(r["model"]["id"], r["engine"]["name"], r["stage"]): r for r in records}
    assert by[("arch/deepseek_v32", "vllm", "load")]["status"] == "needs-gpu"
    assert by[("arch/deepseek_v32", "vllm", "generate")]["message"] == "blocked by load (needs-gpu)"
    assert by[("arch/bert", "vllm", "parity")]["status"] == "n/a"


def test_map_over_a_real_store_every_stage_and_no_verdict_kinds(tmp_path, monkeypatch):
    import probes.classify as classify

    rule = classify.Rule("not_on_cpu", "not_on_cpu", __import__("re").compile("not supported on CPU"))
    monkeypatch.setattr(classify, "load_rules", lambda path=None: (rule,))
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in built_records()))
    run = dayone_at(tmp_path, timeout=120)
    ingested = run("ingest", str(path))
    assert ingested.returncode == 0, ingested.stderr
    data = json.loads(run("map", "--json").stdout)
    cells = data["cells"]
    qwen3 = cells["qwen3"]["vllm"]
    assert qwen3["status"] == "error" and qwen3["stage"] == "generate"
    assert qwen3["stages"]["load"]["status"] == "pass"
    assert qwen3["stages"]["parity"]["status"] == "skipped"
    assert cells["gpt_neox"]["vllm"]["failure_class"] == "transformers_fallback"
    assert cells["gpt_neox"]["llamacpp"]["failure_class"] == "logprob_drift"
    assert cells["deepseek_v32"]["vllm"]["status"] == "needs-gpu"
    assert set(data["not_generative"]) == {"bert", "bart"}
    assert "encoder" in data["not_generative"]["bert"]["why"]
    assert data["not_generative"]["bart"]["cells"]["vllm"]["status"] == "fail"
    cover = data["coverage"]
    # Generators only: qwen3 (error) and deepseek_v32 (needs-gpu) lack a verdict in vllm.
    assert (cover["architectures"], cover["verdict_in_every_engine"]) == (3, 1)
    assert cover["not_generative"] == 2
    assert cover["per_engine"]["vllm"] == {"error": 1, "degraded": 1, "needs-gpu": 1}
    md = run("map", "--markdown")
    assert md.returncode == 0, md.stderr
    table = md.stdout
    assert "| qwen3 | - | error: generate (infra), parity skipped |" in table
    assert (
        "| deepseek_v32 | pass | needs-gpu: load (not_on_cpu), generate skipped, parity skipped |"
    ) in table
    # The fallback cell says when the architecture was last native; these records name no
    # class, so only the measured release is known.
    assert (
        "| gpt_neox | degraded: parity (logprob_drift) | "
        "degraded: load (transformers_fallback); never native in the releases probed "
        "(1.0) |" in table
    )
    head, apart = table.split("Not decoder-only generators")
    assert "bert" not in head and "bart" not in head
    assert "| bert |" in apart and "| bart |" in apart
    assert "1/3 generative architectures (33.3%)" in md.stderr and "2 not generative" in md.stderr
    plain = run("map")
    assert plain.returncode == 0 and "needs-gpu" in plain.stdout and "bart" in plain.stdout


@pytest.mark.parametrize(
    "config,model_type,apart",
    [
        ({"model_type": "bert"}, None, True),
        ({"model_type": "whisper", "is_encoder_decoder": True}, None, True),
        ({"model_type": "zorb", "is_encoder_decoder": True}, None, True),  # a new seq2seq type
        ({"model_type": "llama"}, None, False),
        ({"model_type": "modernbert-decoder"}, None, False),  # a decoder, despite the name
        (None, "xlm-roberta", True),
        (None, "trocr", True),
        (None, "gpt2", False),
        ({"model_type": "llama", "is_encoder_decoder": "yes"}, None, False),  # untrusted: only true
    ],
)
def test_not_generative_decides_from_the_config_or_the_listed_type(config, model_type, apart):
    from probes.modelinfo import not_generative

    assert (not_generative(config, model_type) is not None) is apart


def test_a_probe_of_an_encoder_is_n_a_without_running_anything(tmp_path, validate_record):
    from matrix.probing import probe

    model = tmp_path / "bert"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps({"model_type": "bert", "architectures": ["BertLMHeadModel"]})
    )
    records = probe(model, "vllm", "0.32.0", ["load", "generate", "parity"], say=lambda m: None)
    assert [r["status"] for r in records] == ["n/a"] * 3
    assert "encoder" in records[0]["message"]
    for r in records:
        validate_record(r)


def test_the_map_says_why_the_converter_failed():
    # the converter's cause is its own class: an unknown architecture is not a tokenizer problem
    from probes.classify import CONVERSION_CAUSES, classify

    logs = {
        "bert": "INFO:hf-to-gguf:Model architecture: BertLMHeadModel\n"
        "ERROR:hf-to-gguf:Model BertLMHeadModel is not supported",
        "phi": "NotImplementedError: BPE pre-tokenizer was not recognized - update get_vocab_base_pre()",
        "molmo": "    n_head = self.hparams[\"num_attention_heads\"]\nKeyError: 'num_attention_heads'",
    }
    records = []
    for arch, log in logs.items():
        klass = classify(log, "llamacpp").failure_class
        assert klass in CONVERSION_CAUSES
        records.append(rec(arch, "llamacpp", "convert", "fail", failure_class=klass))
    amap = archmap.arch_map(records)
    assert amap["bert"]["llamacpp"].label() == "fail: convert (conversion_unknown_architecture)"
    assert amap["phi"]["llamacpp"].label() == "fail: convert (conversion_tokenizer)"
    assert amap["molmo"]["llamacpp"].label() == "fail: convert (conversion_missing_config)"
