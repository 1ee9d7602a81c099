"""Stage `finetune` end to end through `dayone probe --json`, with the real PEFT and TRL.

PEFT: LoRA on all linear layers and on the attention projections, steps, save, reload, merge.
TRL: one SFTTrainer step on a chat-formatted sample. Each passes on the healthy llama fixture
and fails, with its class, on the fixture built to break it.
"""

from __future__ import annotations

import math
import subprocess

import pytest
from conftest import build_fixtures, json_lines, run_dayone

from matrix import environments
from probes.engines import get_spec, peft_engine
from probes.outcome import one_line

FIXTURES = ("llama", "gemma4-multimodal", "molmo2-multimodal", "broken-chat-template")

# (engine, fixture) -> (status, failure_class)
EXPECT = {
    ("peft", "llama"): ("pass", None),
    ("peft", "gemma4-multimodal"): ("fail", "unsupported_layer"),
    ("peft", "molmo2-multimodal"): ("fail", "missing_inputs"),
    ("trl", "llama"): ("pass", None),
    ("trl", "broken-chat-template"): ("fail", "tokenizer_or_template"),
    ("trl", "molmo2-multimodal"): ("fail", "missing_inputs"),
}


@pytest.fixture(scope="module")
def ft_fixtures(tf_env, tmp_path_factory):
    return build_fixtures(tf_env, tmp_path_factory.mktemp("ft-fixtures"), FIXTURES)


@pytest.fixture(scope="module")
def probed(ft_fixtures):
    """Each (engine, fixture) probed once, through the CLI."""
    out = {}
    for engine, name in EXPECT:
        proc = run_dayone("probe", str(ft_fixtures / name), "--engine", engine, "--json", "--no-store")
        (record,) = json_lines(proc.stdout)
        out[engine, name] = record
    return out


@pytest.mark.parametrize("case", list(EXPECT), ids=lambda c: f"{c[0]}-{c[1]}")
def test_finetune_verdict(probed, case, validate_record):
    record = validate_record(probed[case])
    assert record["stage"] == "finetune"
    assert (record["status"], record["failure_class"]) == EXPECT[case], (
        record["message"],
        record["log_excerpt"],
    )
    if record["status"] == "fail":
        assert record["message"] and record["log_excerpt"]


def test_peft_lora_lifecycle_on_healthy_model(probed):
    m = probed["peft", "llama"]["metrics"]
    assert m["attention_targets"] == "q_proj,k_proj,v_proj,o_proj"
    for run in ("all_linear", "attention"):
        assert m[f"{run}_loss_last"] < m[f"{run}_loss_first"]
        assert m[f"{run}_steps_per_s"] > 0
        assert m[f"{run}_adapter_mb"] > 0
        # Reload and merge agree with the trained adapter; the adapter changed the output.
        assert m[f"{run}_reload_diff"] <= 1e-4 and m[f"{run}_merge_diff"] <= 1e-4
        assert m[f"{run}_adapter_effect_diff"] > 1e-2
    # all-linear wraps the MLP too: more modules and parameters than attention only.
    assert m["all_linear_lora_modules"] > m["attention_lora_modules"] > 0
    assert m["all_linear_trainable_params"] > m["attention_trainable_params"]
    assert m["peak_rss_mb"] > 0
    engine = probed["peft", "llama"]["engine"]
    # no version asked: the newest release built on this machine, else the registry's default
    newest = environments.newest_built("peft")
    assert engine["name"] == "peft"
    assert engine["version"] == (newest.version if newest else get_spec("peft").default_version)
    assert {"peft", "transformers", "torch"} <= set(engine["packages"])


def test_gemma4_towers_break_attention_targets_not_all_linear(probed):
    record = probed["peft", "gemma4-multimodal"]
    assert "Gemma4ClippableLinear" in record["message"]
    assert record["message"].count("\n") == 0
    # all-linear picks the wrapped nn.Linear inside and ran its whole lifecycle first.
    m = record["metrics"]
    assert m["all_linear_loss_last"] < m["all_linear_loss_first"]
    assert m["all_linear_merge_diff"] <= 1e-4
    assert "attention_loss_first" not in m


def test_missing_inputs_name_the_input(probed):
    for engine in ("peft", "trl"):
        assert "mm_token_type_ids" in probed[engine, "molmo2-multimodal"]["message"]


def test_trl_sft_step(probed):
    m = probed["trl", "llama"]["metrics"]
    assert m["sft_steps"] == 1 and math.isfinite(m["sft_loss"])
    assert m["sft_steps_per_s"] > 0 and m["sft_tokens"] > 0 and m["peak_rss_mb"] > 0
    assert "TemplateSyntaxError" in probed["trl", "broken-chat-template"]["message"]


def test_reproduce_command_fails_the_same_way_without_dayone(probed):
    cmd = probed["peft", "gemma4-multimodal"]["reproduce"]
    assert "-m probes" not in cmd and "service.cli" not in cmd  # the libraries alone
    proc = subprocess.run(cmd, shell=True, check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Target module Gemma4ClippableLinear(" in proc.stderr


# Decisions (pure)


def test_attention_targets_only_names_the_model_has():
    names = [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.o_proj",
        "model.layers.0.mlp.up_proj",
        "vision.blocks.0.attn.qkv_proj",
        "lm_head",
    ]
    assert peft_engine.attention_targets(names) == ["q_proj", "o_proj", "qkv_proj"]
    assert peft_engine.attention_targets(["lm_head", "mlp.fc1"]) == []


@pytest.mark.parametrize(
    "losses, problem",
    [
        ([5.0, 4.0, 3.5], None),
        ([5.0, 5.2, 4.9], None),  # not monotonic, but it went down
        ([5.0, 5.1], "did not decrease"),
        ([5.0, 4.6, 5.3, 5.4], None),  # fell, then overshot: training works
        ([5.0, 5.0, 5.0, 5.0], "did not decrease over 4 steps (5.0000, 5.0000"),
        ([5.0, float("nan")], "non-finite loss at step 2"),
        ([float("inf")], "non-finite loss at step 1"),
        ([], "no optimizer step"),
    ],
)
def test_loss_problem(losses, problem):
    found = peft_engine.loss_problem(losses)
    assert (found is None) if problem is None else (problem in found)


def test_one_line_flattens_and_caps():
    exc = ValueError("Target module Foo(\n  (linear): Linear()\n) is not supported." + "x" * 900)
    line = one_line(exc, peft_engine.LINE_LIMIT)
    assert "\n" not in line and line.startswith("ValueError: Target module Foo( (linear)")
    assert len(line) == 600 and line.endswith("...")


# A merge in bfloat16 rounds the merged weights: exact in float32 or red; in bfloat16 beyond
# the dtype's own noise, degraded with both figures (figures of the kind a tiny Gemma 4 gives).
HEALTHY = {"adapter_effect": 1.2, "reload": 0.0, "merge": 0.14, "merge_float32": 7.7e-5}


@pytest.mark.parametrize(
    "diffs, dtype, noise, problem, drift",
    [
        (HEALTHY, "bfloat16", 0.19, None, None),  # 0.14 merged, where bfloat16 itself moves 0.19
        (HEALTHY, "bfloat16", 0.01, None, "move 0.14"),  # beyond 4x a small noise: degraded
        ({**HEALTHY, "merge_float32": 0.3}, "bfloat16", 0.19, "0.3 in float32", None),  # wrong merge
        ({**HEALTHY, "adapter_effect": 0.0}, "bfloat16", 0.19, "does not change", None),
        ({**HEALTHY, "reload": 0.05}, "bfloat16", 0.19, "reloaded adapter's logits", None),
        ({"adapter_effect": 1.0, "reload": 0.0, "merge": 2e-6}, "float32", 0.0, None, None),
        ({"adapter_effect": 1.0, "reload": 0.0, "merge": 0.01}, "float32", 0.0, "0.01 in float32", None),
    ],
)
def test_adapter_problem_and_merge_drift(diffs, dtype, noise, problem, drift):
    found = peft_engine.adapter_problem("all_linear", diffs, dtype, noise)
    assert (found is None) if problem is None else (problem in found), found
    if problem is None:
        moved = peft_engine.merge_drift("all_linear", diffs, dtype, noise)
        assert (moved is None) if drift is None else (drift in moved and "float32 they agree" in moved), moved


def test_the_sft_sample_is_text_where_the_copy_has_no_chat_template():
    from probes.engines import trl_engine

    assert set(trl_engine.sft_sample(True)) == {"messages"}
    text = trl_engine.sft_sample(False)["text"]
    assert all(m["content"] in text for m in trl_engine.CHAT_SAMPLE)


def test_the_sft_sample_drops_the_system_turn_only_where_the_template_refuses_it():
    from jinja2 import Environment
    from probes.engines import trl_engine

    class Tok:  # renders like a tokenizer: the template's own exception where it raises
        def __init__(self, template: str):
            env = Environment()
            env.globals["raise_exception"] = self.refuse
            self.template = env.from_string(template)

        @staticmethod
        def refuse(message: str):
            raise ValueError(message)

        def apply_chat_template(self, messages, tokenize=False):
            return self.template.render(messages=messages)

    gemma = Tok(  # as Gemma's release template words it
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    plain = Tok("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{% endfor %}")
    broken = Tok("{{ raise_exception('no') }}")
    assert trl_engine.template_takes_system(gemma) is False
    assert trl_engine.template_takes_system(plain) is True
    assert trl_engine.template_takes_system(broken) is True  # its failure shows in the run
    roles = [m["role"] for m in trl_engine.sft_sample(True, takes_system=False)["messages"]]
    assert roles == ["user", "assistant"]
    assert [m["role"] for m in trl_engine.sft_sample(True)["messages"]][0] == "system"
