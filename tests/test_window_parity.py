"""An engine told a different sliding window than transformers diverges, and parity catches it.

The arch tier shrinks sliding windows (probes/shrink_rules.json) and the workload's long prompt
(probes/workload.py) is several windows long, so a window an engine gets wrong shows in parity.
Real engine, no mocks: a shrunk copy of a sliding-window architecture whose llama.cpp port reads
the window from the GGUF (llama.cpp 0.3.36 applies SWA from the GGUF for gemma2, gemma3,
cohere2, gpt-oss; it ignores Phi-3's and hard-codes Llama 4's chunk), the transformers reference
computed from that copy, then llama.cpp given the copy (its window: pass, 0.0007 nats measured)
and copies whose config says another window: smaller (4), and larger than the whole prompt
(4096, as if the engine ignored the window). Measured: both diverge at the long prompt's first
new token, with disjoint top-5s: fail / wrong_output.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import json_answer
from matrix.nightly import probe_options
from probes import parity, workload
from probes.modelinfo import read_model_info
from probes.record import build_records
from probes.runner import ProbeRequest, run_probe
from probes.shrink import load_rules

pytestmark = pytest.mark.slow

# Gemma 3 1B's release shrunk (5 sliding : 1 full, as released): llama.cpp reads its window
# from the GGUF. (Cohere 2's default-config copy does not convert: no rotary_pct.)
FAMILY = "gemma3_text"
WINDOW = load_rules().targets["window"]
WRONG_WINDOWS = (4, 4096)  # smaller; longer than the whole prompt (no window in effect)
STAGES = ["convert", "load", "generate", "parity"]


def probe(
    python: str, engine: str, model: Path, stages: list[str], log_dir: Path, options: dict | None = None
) -> list[dict]:
    req = ProbeRequest(
        engine=engine, model_dir=model, stages=stages, python=python, options=options or {}, timeout_s=600
    )
    outcome = run_probe(req, log_dir)
    return build_records(
        stages=stages,
        outcome=outcome,
        engine=engine,
        engine_version=None,
        model=read_model_info(model).as_record(),
    )


def set_config(model: Path, **values) -> None:
    path = model / "config.json"
    config = json.loads(path.read_text())
    config.update(values)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def lc_env():
    from matrix.environments import ensure_env

    return ensure_env("llamacpp", say=lambda m: print(m, file=sys.stderr))


@pytest.fixture(scope="module")
def copies(tf_env, tmp_path_factory) -> dict:
    """The shrunk copy as the arch tier builds it, and copies of it told another window."""
    root = tmp_path_factory.mktemp("window")
    row = json_answer(
        [
            tf_env.python,
            "-c",
            textwrap.dedent(f"""
        import json
        from probes.shrink import sweep
        print(json.dumps(sweep({str(root / "built")!r}, [{FAMILY!r}])))
    """),
        ],
        timeout=900,
    )[0]
    assert row["status"] == "ok", row
    right = root / "built" / FAMILY
    config = json.loads((right / "config.json").read_text())
    assert config["sliding_window"] == WINDOW  # the shrink made it small
    kinds = set(config.get("layer_types") or ["sliding_attention", "full_attention"])
    assert kinds == {"sliding_attention", "full_attention"}  # both kinds kept (or a pattern)
    # float32 (weights upcast exactly on both sides): the reference is its own float32 twin,
    # noise 0, so agreeing tokens are held to the float32 floor and nothing is precision.
    set_config(right, dtype="float32")
    out = {"right": right}
    for w in WRONG_WINDOWS:
        wrong = root / f"window-{w}"
        shutil.copytree(right, wrong)
        set_config(wrong, sliding_window=w)
        out[w] = wrong
    return out


@pytest.fixture(scope="module")
def reference(tf_env, copies, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("window-ref")
    records = probe(tf_env.python, "transformers", copies["right"], ["load", "generate"], work / "logs")
    assert [r["status"] for r in records] == ["pass", "pass"], [r["message"] for r in records]
    assert records[0]["metrics"]["dtype"] == "float32"
    return parity.write_reference(work / "reference.json", records[1], noise=0.0)


def long_prompt_tokens(reference: Path) -> int:
    ref = parity.load_reference(reference)
    return next(len(c["prompt_ids"]) for c in ref if c["prompt"] == workload.PROMPTS[-1])


def by_stage(records: list[dict]) -> dict[str, dict]:
    return {r["stage"]: r for r in records}


def llama_cpp_stages(lc_env, model: Path, reference: Path, log_dir: Path) -> dict[str, dict]:
    """llama.cpp's records of every stage for `model`, parity held to `reference`, by stage."""
    options = {**probe_options(model), "reference_path": str(reference)}
    return by_stage(probe(lc_env.python, "llamacpp", model, STAGES, log_dir, options))


def test_the_long_prompt_is_several_windows_long(reference):
    assert long_prompt_tokens(reference) > 4 * WINDOW


def test_llama_cpp_with_the_copys_window_passes(lc_env, copies, reference, tmp_path):
    stages = llama_cpp_stages(lc_env, copies["right"], reference, tmp_path / "logs")
    assert [stages[s]["status"] for s in STAGES] == ["pass"] * 4, [(s, stages[s]["message"]) for s in STAGES]
    logs = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "logs").rglob("*") if p.is_file())
    assert f"n_swa                 = {WINDOW}" in logs  # llama.cpp applied the copy's window
    par = stages["parity"]["metrics"]
    assert par["first_divergence"] is None
    assert par["tokens_compared"] == len(workload.PROMPTS) * workload.MAX_NEW_TOKENS
    print(f"window {WINDOW}: parity {stages['parity']['status']}, max logprob gap {par['max_logprob_gap']}")


@pytest.mark.parametrize("window", WRONG_WINDOWS)
def test_llama_cpp_told_another_window_is_caught(window, lc_env, copies, reference, tmp_path):
    stages = llama_cpp_stages(lc_env, copies[window], reference, tmp_path / "logs")
    assert [stages[s]["status"] for s in STAGES[:3]] == ["pass"] * 3, [
        (s, stages[s]["message"]) for s in STAGES
    ]
    par = stages["parity"]
    assert (par["status"], par["failure_class"]) in {
        ("fail", "wrong_output"),
        ("degraded", "logprob_drift"),
    }, par["message"]
    # the long prompt is where it shows: it diverges, or its logprobs move past the tolerance
    long = next(d for d in par["output"]["details"] if d["prompt"] == workload.PROMPTS[-1])
    assert (
        long["first_divergence"] is not None or long["max_logprob_gap"] > par["metrics"]["logprob_tolerance"]
    ), long
    # the first step of the long prompt: each side's top token and the other's logprob of it
    got = next(c for c in stages["generate"]["output"]["completions"] if c["prompt"] == workload.PROMPTS[-1])
    ref = next(c for c in parity.load_reference(reference) if c["prompt"] == workload.PROMPTS[-1])
    ref0, got0 = dict(map(tuple, ref["top_logprobs"][0])), dict(map(tuple, got["top_logprobs"][0]))
    shared = {t: round(abs(ref0[t] - got0[t]), 4) for t in ref0.keys() & got0.keys()}
    print(
        f"window {window}: long prompt step 0: reference top {ref['token_ids'][0]} "
        f"({max(ref0.values()):.4f}), engine top {got['token_ids'][0]} "
        f"({max(got0.values()):.4f}), |delta| on shared top-5 tokens {shared}"
    )
    print(
        f"window {window} (reference {WINDOW}): parity {par['status']}/"
        f"{par['failure_class']}: {par['message']}; long prompt: first divergence "
        f"{long['first_divergence']}, max logprob gap {long['max_logprob_gap']}"
    )
