"""Stage `lora`: a fine-tuned adapter served. PEFT trains a LoRA on the copy (once per revision,
the host's `adapter` probe), vLLM loads it with enable_lora, and its greedy tokens and logprobs
are held to the model with the adapter merged, in transformers. Real PEFT, real vLLM, real
transformers on the fixtures."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import build_fixtures

from matrix import archmap, environments
from matrix.environments import ensure_env
from matrix.probing import ProbeSettings, ensure_adapter, probe
from matrix.summary import Observation
from probes import parity
from probes.modelinfo import read_model_info

VLLM = "0.32.0"


@pytest.fixture(scope="module")
def fixtures(tf_env, tmp_path_factory) -> Path:
    ensure_env("vllm", VLLM)
    ensure_env("peft")
    return build_fixtures(tf_env, tmp_path_factory.mktemp("lora-fixtures"), ["llama", "gemma4-multimodal"])


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> ProbeSettings:
    return ProbeSettings(timeout_s=900, memory_mb=12000, logs_root=tmp_path_factory.mktemp("lora-logs"))


@pytest.fixture(scope="module")
def served(fixtures, settings):
    """(the llama fixture's record model, the adapter's options, vLLM's records of load,
    generate, parity and lora)."""
    llama = fixtures / "llama"
    model = read_model_info(llama).as_record()
    options, why = ensure_adapter(llama, model, settings, lambda m: None)
    assert options, why
    records = probe(llama, "vllm", VLLM, ["load", "generate", "parity", "lora"], settings=settings)
    return model, options, records


def test_the_served_adapter_answers_as_the_merged_model(served, validate_record):
    model, options, records = served
    stages = {r["stage"]: validate_record(r) for r in records}
    lora = stages["lora"]
    assert lora["status"] == "pass", (lora["message"], lora["log_excerpt"])
    assert lora["metrics"]["tokens_compared"] == stages["parity"]["metrics"]["tokens_compared"]
    assert lora["metrics"]["lora_rank"] == 8
    made_by = lora["metrics"]["adapter_made_by"]
    assert made_by.startswith("peft ") and "q_proj" in made_by
    assert lora["reproduce"].endswith("reproduce-lora.py")
    # The check has teeth: the merged model does not answer as the base model does.
    base = parity.read_reference(parity.reference_path_for(model, environments.cache_dir()))
    merged = parity.read_reference(options["lora_reference_path"])
    assert parity.check_logprobs_close(base.completions, merged.completions, top_k=5).status == "fail"


def test_an_adapter_that_is_not_the_merged_one_is_caught(served, fixtures, settings, tmp_path):
    """The same adapter with its B matrices negated, held to the true merged model: a red."""
    _model, options, _records = served
    bad = tmp_path / "negated"
    shutil.copytree(options["lora_adapter"], bad)
    negate = (
        "import sys; from safetensors.torch import load_file, save_file; p = sys.argv[1]; "
        "w = load_file(p); save_file({k: (-v if 'lora_B' in k else v) for k, v in w.items()}, p)"
    )
    done = subprocess.run(
        [ensure_env("peft").python, "-c", negate, str(bad / "adapter_model.safetensors")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    records = probe(
        fixtures / "llama",
        "vllm",
        VLLM,
        ["load", "lora"],
        settings=ProbeSettings(
            timeout_s=settings.timeout_s,
            memory_mb=settings.memory_mb,
            logs_root=settings.logs_root,
            options={**options, "lora_adapter": str(bad)},
        ),
    )
    lora = next(r for r in records if r["stage"] == "lora")
    assert (lora["status"], lora["failure_class"]) == ("fail", "wrong_output"), lora["message"]
    assert lora["message"].startswith("the served adapter against the merged model in transformers")


def test_a_copy_peft_cannot_adapt_skips_the_served_stage_with_peft_words(fixtures, settings):
    """Gemma 4's vision tower names its projections q_proj too, in a layer PEFT cannot wrap: no
    adapter to serve, said once (PEFT's own failure is kept, not trained again per release)."""
    gemma = fixtures / "gemma4-multimodal"
    # a revision of its own, so that the shared cache holds no adapter (or refusal) for it yet
    model = {**read_model_info(gemma).as_record(), "revision": f"test-{uuid.uuid4().hex[:12]}"}
    try:
        for _ in range(2):
            got, why = ensure_adapter(gemma, model, settings, lambda m: None)
            assert (
                got is None and why and why.startswith("no adapter to serve: peft fail (unsupported_layer)")
            )
        made = list(Path(settings.logs_root).glob(f"*/{model['id'].replace('/', '_')}/peft-*-adapter"))
        assert len(made) == 1
    finally:
        for mine in (environments.cache_dir() / "adapters").glob(f"*/{model['revision']}-*"):
            shutil.rmtree(mine, ignore_errors=True)
    model = read_model_info(gemma).as_record()
    _, why = ensure_adapter(gemma, model, settings, lambda m: None)
    records = probe(gemma, "vllm", VLLM, ["load", "lora"], settings=settings)
    lora = next(r for r in records if r["stage"] == "lora")
    if records[0]["status"] == "pass":  # else lora is blocked by vLLM's own load verdict
        assert (lora["status"], lora["message"]) == ("skipped", why)


def test_the_map_shows_the_served_adapter_apart_from_the_engine_verdict():
    import datetime as dt

    at = dt.datetime(2026, 12, 7, tzinfo=dt.timezone.utc)
    obs = [
        Observation("arch/llama", "vllm", "0.32.0", "load", "pass", at),
        Observation(
            "arch/llama", "vllm", "0.32.0", "lora", "fail", at, failure_class="unsupported_architecture"
        ),
    ]
    cell = archmap.cell_of(obs)
    assert cell.status == "pass" and cell.lora is not None and cell.lora.status == "fail"
    assert cell.label() == "pass; lora fail (unsupported_architecture)"
    assert cell.as_dict()["lora"]["stages"]["lora"]["failure_class"] == "unsupported_architecture"
