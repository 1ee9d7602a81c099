"""SGLang through its server protocol, on the fixture models, as far as its CPU path goes.

CPU is not SGLang's target: its environment is dayone's workaround (matrix/env_patches.py:
sglang_cpu) and every record must say hardware=cpu-unsupported-path. One server start (minutes
on a busy 2-core machine) serves every stage of a probe, so the cases here are few: llama through
every stage, and an architecture no engine knows.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from matrix import env_patches
from matrix.environments import ensure_env
from matrix.probing import ProbeSettings, probe
from probes.engines.sglang_engine import CPU_LABEL, completion_from_generate, cpu_path_limit, top_logprobs
from probes.parity import write_reference

VERSION = "0.5.23"
ALL_STAGES = ["load", "generate", "parity", "serve", "throughput"]
TEST_THROUGHPUT = {"concurrency": [1, 4], "repeats": 2, "prompts_per_slot": 2}


def test_generate_answer_to_completion():
    body = {
        "text": "ab",
        "output_ids": [5, 6],
        "meta_info": {
            "output_token_logprobs": [[-0.1, 5, None], [-0.2, 6, None]],
            "output_top_logprobs": [[[-0.1, 5, None], [-2.0, 9, None]], [[-3.0, 1, None], [-0.2, 6, None]]],
        },
    }
    c = completion_from_generate("p", [1, 2], body, 5)
    assert c["token_ids"] == [5, 6] and c["prompt_ids"] == [1, 2]
    assert c["top_logprobs"] == [[[5, -0.1], [9, -2.0]], [[6, -0.2], [1, -3.0]]]
    assert top_logprobs([[-1.0, 3, None], [-0.5, 4, None]], 1) == [[4, -0.5]]


def test_transformers_fallback_is_read_from_sglangs_own_words():
    from probes.engines.sglang_engine import fallback_line

    log = (
        "[2026-11-23 10:00:01] GPTNeoXForCausalLM has no SGLang implementation, falling back "
        "to Transformers implementation. Some features may not be supported and performance "
        "may not be optimal.\n[2026-11-23 10:00:01] Using Transformers backend.\n"
    )
    assert fallback_line(log) == (
        "GPTNeoXForCausalLM has no SGLang implementation, falling back to Transformers implementation"
    )
    assert fallback_line("[x] Using Transformers backend.\n") == "Using Transformers backend"
    # The refusal (no implementation and no compatible fallback) is a load failure, not this.
    refused = (
        "ValueError: BloomForCausalLM has no SGlang implementation and the Transformers "
        "implementation is not compatible with SGLang."
    )
    assert fallback_line(refused) is None and fallback_line("") is None


def test_cpu_path_limits_are_ours_not_the_engines(tmp_path):
    # Real lines from SGLang 0.5.23 on this CPU path.
    assert cpu_path_limit(
        "noise\nAssertionError: extra_buffer requires platform support for Mamba cache state snapshots.\n",
        "Qwen3_5ForCausalLM",
        None,
    ).startswith("AssertionError: extra_buffer")
    models = tmp_path / "models"
    models.mkdir()
    (models / "qwen3_5_text.py").write_text("class Qwen3_5ForCausalLM(nn.Module):\n    pass\n")
    log = (
        "[..] Ignore import error when loading sglang.srt.models.grok: '_OpNamespace' "
        "'sgl_kernel' object has no attribute 'fused_moe_router_cpu'\n"
        "[..] Ignore import error when loading sglang.srt.models.qwen3_5_text: '_OpNamespace' "
        "'sgl_kernel' object has no attribute 'fused_sigmoid_mul_cpu'\n"
        "ValueError: Model architectures ['Qwen3_5ForCausalLM'] are not supported for now.\n"
    )
    why = cpu_path_limit(log, "Qwen3_5ForCausalLM", models)
    assert why and "qwen3_5_text (which implements Qwen3_5ForCausalLM)" in why
    assert "fused_sigmoid_mul_cpu" in why
    # A module that failed to import but does not implement the model: the engine's verdict.
    assert cpu_path_limit(log, "ZorblaxForCausalLM", models) is None
    assert cpu_path_limit("ValueError: something else\n", "LlamaForCausalLM", models) is None


def test_env_version_from_the_env_folder():
    assert env_patches.env_version(Path("/c/envs/sglang-0.5.23-abc123/venv/bin/python")) == "0.5.23"
    with pytest.raises(RuntimeError):
        env_patches.env_version(Path("/x/venv/bin/python"))


@pytest.fixture(scope="module")
def sglang_env():
    return ensure_env("sglang", VERSION)


def test_env_is_the_recorded_cpu_workaround(sglang_env):
    # sglang itself comes from the lock without its dependencies (EngineSpec.no_deps): its
    # CUDA kernels (sglang-kernel, flashinfer) are neither locked nor installed.
    lock_text = (Path(sglang_env.path) / "lock.txt").read_text()
    assert f"sglang=={VERSION} " in lock_text
    assert "sglang-kernel" not in sglang_env.packages and "flashinfer-python" not in lock_text
    done = env_patches.recorded_patches(Path(sglang_env.python))
    assert any("sgl_kernel" in d for d in done) and any("torchvision" in d for d in done)
    assert sglang_env.packages["torch"].startswith("2.13.0")  # not the 2.14.1 sglang pins
    assert sglang_env.packages["sglang"] == VERSION


@pytest.fixture(scope="module")
def probed(sglang_env, fixtures_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("sglang-logs")
    refs = tmp_path_factory.mktemp("sglang-refs")
    ref = probe(
        fixtures_dir / "llama",
        "transformers",
        stages=["load", "generate"],
        settings=ProbeSettings(timeout_s=600),
        say=lambda m: None,
    )[-1]
    assert ref["status"] == "pass"
    ref_path = write_reference(refs / "llama.json", ref)

    def run(name: str, stages: list[str]) -> list[dict]:
        return probe(
            fixtures_dir / name,
            "sglang",
            VERSION,
            stages,
            say=lambda m: None,
            settings=ProbeSettings(
                timeout_s=1500,
                memory_mb=12000,
                logs_root=home,
                options={"reference_path": str(ref_path), "throughput": TEST_THROUGHPUT},
            ),
        )

    return {
        "llama": run("llama", ALL_STAGES),
        "broken-unknown-arch": run("broken-unknown-arch", ["load", "generate"]),
        "home": home,
    }


def test_llama_through_every_stage_on_the_cpu_path(probed, validate_record):
    records = {r["stage"]: r for r in probed["llama"]}
    assert list(records) == ALL_STAGES
    for r in records.values():
        validate_record(r)
        assert r["engine"]["hardware"] == CPU_LABEL
        assert r["engine"]["name"] == "sglang" and r["engine"]["version"] == VERSION
        assert r["status"] in ("pass", "degraded"), (r["stage"], r["message"], r["log_excerpt"])
    assert records["load"]["metrics"]["architecture"] == "LlamaForCausalLM"
    assert "not an upstream-supported target" in records["load"]["message"]
    completions = records["generate"]["output"]["completions"]
    assert all(len(c["token_ids"]) == 16 and len(c["top_logprobs"]) == 16 for c in completions)
    assert records["parity"]["status"] == "pass", records["parity"]["message"]
    serve = records["serve"]["metrics"]
    assert serve["prompt_tokens"] == serve["template_prompt_tokens"]
    tp = records["throughput"]["metrics"]
    for c in (1, 4):
        assert tp[f"c{c}_completed"] == c * 2 and tp[f"c{c}_failed"] == 0
        assert tp[f"c{c}_median_ttft_ms"] > 0 and tp[f"c{c}_p99_itl_ms"] > 0
        assert tp[f"c{c}_x_reference"] > 0


def test_unknown_architecture_fails_at_load(probed, validate_record):
    load, generate = probed["broken-unknown-arch"]
    validate_record(load)
    assert (load["status"], load["failure_class"]) == ("fail", "unsupported_architecture"), (
        load["message"],
        load["log_excerpt"],
    )
    assert load["engine"]["hardware"] == CPU_LABEL
    assert generate["status"] == "skipped"


def test_no_sglang_process_left(probed):
    needle = str(probed["home"]).encode()
    left = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                env = Path(f"/proc/{entry.name}/environ").read_bytes()
                cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            except OSError:
                continue
            if needle in env or needle in cmd:
                left.append(cmd.replace(b"\0", b" ").decode(errors="replace")[:200])
    assert not left, left
