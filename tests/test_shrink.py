"""The arch tier's shrink: sizes shrink, switches stay.

The planning half is pure and tested here directly; building and generating run in the
transformers engine environment, in a subprocess, on the families that motivated the project.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from probes.fixtures import TOKENIZER_STYLES
from probes.shrink import (
    ShrinkError,
    choose_layers,
    evaluate,
    load_rules,
    load_variants,
    shrink_config_dict,
    split_variant,
)

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "tests" / "fakehub" / "recordings" / "files"

# The families that motivated dayone, and what of each must survive the shrink.
FAMILIES = [
    "gemma4_text",
    "qwen3_5_text",
    "qwen3_5_moe_text",
    "qwen3_next",
    "gpt_oss",
    "llama4_text",
    "gemma3_text",
    "qwen3_moe",
    "nemotron_h",
    "deepseek_v3",
]


# Pure: choosing layers


def test_prefix_keeps_the_released_pattern():
    kinds = (["linear_attention"] * 3 + ["full_attention"]) * 8
    assert choose_layers(kinds, min_layers=2, max_prefix=8) == [0, 1, 2, 3]


def test_long_pattern_keeps_one_of_each_kind_and_the_last_kind():
    kinds = ["mamba"] * 9 + ["attention"] + ["mamba"] * 22
    assert choose_layers(kinds, min_layers=2, max_prefix=8) == [0, 9, 10]
    kinds = ["sliding"] * 9 + ["full"]
    assert choose_layers(kinds, min_layers=2, max_prefix=8) == [0, 9]


def test_uniform_layers_keep_the_minimum():
    assert choose_layers(["x"] * 30, min_layers=2, max_prefix=8) == [0, 1]
    assert choose_layers(["x"], min_layers=2, max_prefix=8) == [0]


# Pure: config dicts


def gemma4_like() -> dict:
    types = (["sliding_attention"] * 5 + ["full_attention"]) * 5
    return {
        "model_type": "gemma4_text",
        "vocab_size": 262144,
        "vocab_size_per_layer_input": 262144,
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 30,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "sliding_window": 512,
        "layer_types": types,
        "hidden_size_per_layer_input": 256,
        "per_layer_config": {f"{i:02d}": {"head_dim": 512} for i in range(5, 30, 6)},
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
        "image_token_id": 258880,
        "dtype": "bfloat16",
    }


def test_windows_and_chunks_shrink_only_where_they_are_on():
    """Sliding windows and chunks become smaller than the workload's long prompt; a window that
    is off (null, use_sliding_window false, or not below the position limit) stays as it was."""
    rules = load_rules()
    window, chunk = rules.targets["window"], rules.targets["chunk"]
    base = {
        "hidden_size": 1024,
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
    }

    def shrunk(**kw):
        return shrink_config_dict({**base, **kw}).config

    assert shrunk(model_type="gemma2", sliding_window=4096)["sliding_window"] == window
    assert shrunk(model_type="gpt_oss", sliding_window=128)["sliding_window"] == window
    assert shrunk(model_type="mistral", sliding_window=None)["sliding_window"] is None
    assert "sliding_window" not in shrunk(model_type="llama")
    assert (
        shrunk(model_type="qwen2", sliding_window=32768, use_sliding_window=False)["sliding_window"] == 32768
    )
    assert (
        shrunk(model_type="phi3", sliding_window=262144, max_position_embeddings=131072)["sliding_window"]
        == 262144
    )
    assert shrunk(model_type="gemma3_text", sliding_window=8)["sliding_window"] == 8
    assert (
        shrunk(
            model_type="recurrent_gemma",
            attention_window_size=2048,
            block_types=["recurrent", "recurrent", "attention"],
            num_hidden_layers=3,
        )["attention_window_size"]
        == window
    )
    assert (
        shrunk(model_type="falcon_h1", mamba_chunk_size=256, mamba_expand=2, mamba_d_head=64)[
            "mamba_chunk_size"
        ]
        == chunk
    )
    assert (
        shrunk(model_type="mamba2", chunk_size=256, num_heads=128, head_dim=64, expand=2, n_groups=8)[
            "chunk_size"
        ]
        == chunk
    )
    # chunk_size is a family's own key: xlstm's means something else and stays
    assert shrunk(model_type="xlstm", chunk_size=64)["chunk_size"] == 64
    # Llama 4's chunk stays as released: llama.cpp hard-codes 8192 (see the rules file)
    l4 = shrink_config_dict(
        {
            "model_type": "llama4",
            "text_config": {**base, "model_type": "llama4_text", "attention_chunk_size": 8192},
        }
    ).config
    assert l4["text_config"]["attention_chunk_size"] == 8192
    assert chunk & (chunk - 1) == 0 and chunk >= 16  # SSD kernels: a power of two, >= 16
    assert window < 64 and chunk < 64


def test_gemma4_switches_survive():
    cfg = shrink_config_dict(gemma4_like()).config
    assert cfg["layer_types"] == ["sliding_attention"] * 5 + ["full_attention"]
    assert cfg["num_hidden_layers"] == 6
    # the per-layer override follows its full-attention layer into the new numbering
    assert cfg["per_layer_config"] == {"05": {"head_dim": 512}}
    assert cfg["head_dim"] == 256
    assert cfg["sliding_window"] == load_rules().targets["window"]  # small: the workload crosses it
    assert cfg["dtype"] == "bfloat16"
    # width differs from heads x head_dim in the release (2304 vs 2048): kept different
    assert cfg["hidden_size"] != cfg["num_attention_heads"] * cfg["head_dim"]
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]  # still grouped-query
    assert cfg["vocab_size"] == cfg["vocab_size_per_layer_input"] == 512
    assert cfg["image_token_id"] < 512 and cfg["pad_token_id"] == 0


def test_tied_width_keeps_head_dim():
    src = {
        "model_type": "llama",
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "num_hidden_layers": 32,
        "intermediate_size": 14336,
        "vocab_size": 128256,
    }
    cfg = shrink_config_dict(src).config
    assert cfg["hidden_size"] // cfg["num_attention_heads"] == 128
    assert cfg["num_attention_heads"] % cfg["num_key_value_heads"] == 0
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]


def test_deepseek_groups_dense_prefix_and_rope_dims():
    src = {
        "model_type": "deepseek_v3",
        "hidden_size": 7168,
        "num_hidden_layers": 61,
        "num_attention_heads": 128,
        "num_key_value_heads": 128,
        "n_routed_experts": 256,
        "num_experts_per_tok": 8,
        "n_group": 8,
        "topk_group": 4,
        "first_k_dense_replace": 3,
        "qk_rope_head_dim": 64,
        "qk_nope_head_dim": 128,
        "v_head_dim": 128,
        "kv_lora_rank": 512,
        "moe_intermediate_size": 2048,
        "intermediate_size": 18432,
        "vocab_size": 129280,
    }
    cfg = shrink_config_dict(src).config
    assert cfg["num_experts_per_tok"] == 8 and cfg["n_group"] == 8 and cfg["topk_group"] == 4
    assert cfg["n_routed_experts"] % 8 == 0 and cfg["n_routed_experts"] >= 16
    assert cfg["first_k_dense_replace"] == 1 and cfg["num_hidden_layers"] == 2  # dense, then MoE
    assert (cfg["qk_rope_head_dim"], cfg["qk_nope_head_dim"], cfg["v_head_dim"]) == (64, 128, 128)
    assert cfg["kv_lora_rank"] == 512
    # latent attention's heads are sized apart from the width: 7168 / 128 = 56 is no head size,
    # and a width of 2 x 56 = 112 is one no release has (vLLM's CPU MoE needs multiples of 32)
    assert cfg["hidden_size"] % 32 == 0


@pytest.mark.parametrize(
    "src,relation",
    [
        (
            {
                "model_type": "phi",
                "hidden_size": 2560,
                "intermediate_size": 10240,
                "num_attention_heads": 32,
                "num_hidden_layers": 32,
                "vocab_size": 51200,
            },
            lambda c: c["intermediate_size"] == 4 * c["hidden_size"],
        ),
        (
            {
                "model_type": "gpt_bigcode",
                "n_embd": 6144,
                "n_inner": 24576,
                "n_head": 48,
                "n_layer": 40,
                "vocab_size": 49152,
                "multi_query": True,
            },
            lambda c: c["n_inner"] == 4 * c["n_embd"],
        ),
        (
            {
                "model_type": "mamba",
                "hidden_size": 768,
                "intermediate_size": 1536,
                "expand": 2,
                "num_hidden_layers": 24,
                "vocab_size": 50280,
                "state_size": 16,
            },
            lambda c: c["intermediate_size"] == 2 * c["hidden_size"] and c["vocab_size"] % 16 == 0,
        ),
        (
            {
                "model_type": "ernie4_5_moe",
                "hidden_size": 2560,
                "intermediate_size": 12288,
                "moe_intermediate_size": 1536,
                "moe_num_shared_experts": 2,
                "num_attention_heads": 20,
                "num_key_value_heads": 4,
                "num_hidden_layers": 28,
                "moe_num_experts": 64,
                "moe_k": 6,
                "vocab_size": 103424,
            },
            lambda c: c["intermediate_size"] == c["moe_intermediate_size"] * 2 * c["num_key_value_heads"],
        ),
    ],
)
def test_shrink_keeps_the_relations_releases_state(src, relation):
    """Converters assume what every release states (llama.cpp writes 4 x n_embd for Phi and
    StarCoder, asserts Mamba's d_inner = 2 x d_model, sizes ERNIE's shared expert by
    intermediate_size // kv heads, pads Mamba vocabularies): a copy keeps it."""
    # GPTBigCodeConfig's attribute_map names n_embd hidden_size (the build reads it from there)
    aliases = (
        {"hidden_size": "n_embd", "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"}
        if src["model_type"] == "gpt_bigcode"
        else {}
    )
    cfg = shrink_config_dict(src, vocab_size=443, aliases=lambda _t: aliases).config
    assert relation(cfg), cfg


def test_llama4_routes_top1_still():
    src = {
        "model_type": "llama4_text",
        "hidden_size": 5120,
        "num_hidden_layers": 48,
        "num_attention_heads": 40,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "num_local_experts": 16,
        "num_experts_per_tok": 1,
        "intermediate_size": 8192,
        "no_rope_layers": [1, 1, 1, 0] * 12,
        "moe_layers": list(range(48)),
        "vocab_size": 202048,
    }
    cfg = shrink_config_dict(src).config
    assert cfg["num_experts_per_tok"] == 1 and cfg["num_local_experts"] == 4
    assert cfg["no_rope_layers"] == [1, 1, 1, 0] and cfg["moe_layers"] == [0, 1, 2, 3]


def test_nemotron_h_pattern_string_keeps_each_block_kind():
    pattern = "M-M-M-M*-M-M-M-M*-M-M-M-M-M*-ME-M-M-"
    src = {
        "model_type": "nemotron_h",
        "hybrid_override_pattern": pattern,
        "num_hidden_layers": len(pattern),
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "mamba_num_heads": 128,
        "mamba_head_dim": 64,
        "n_groups": 8,
        "vocab_size": 131072,
    }
    cfg = shrink_config_dict(src).config
    new = cfg["hybrid_override_pattern"]
    assert set(new) == set(pattern) and len(new) == cfg["num_hidden_layers"]
    assert cfg["mamba_head_dim"] == 64
    assert cfg["mamba_num_heads"] * cfg["mamba_head_dim"] == 2 * cfg["hidden_size"]


def test_kv_shared_layers_keep_producers_and_consumers():
    types = (["sliding_attention"] * 4 + ["full_attention"]) * 7
    src = {
        "model_type": "gemma3n_text",
        "num_hidden_layers": 35,
        "layer_types": types,
        "num_kv_shared_layers": 15,
        "hidden_size": 2048,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "head_dim": 256,
        "vocab_size": 262400,
    }
    cfg = shrink_config_dict(src).config
    n, shared = cfg["num_hidden_layers"], cfg["num_kv_shared_layers"]
    assert shared == 2
    assert set(cfg["layer_types"][: n - shared]) == set(cfg["layer_types"][n - shared :]) == set(types)


def test_multimodal_shrinks_every_tower_and_maps_token_ids_once():
    src = {
        "model_type": "gemma4",
        "image_token_id": 258880,
        "audio_token_id": 258881,
        "text_config": {**gemma4_like(), "model_type": "gemma4_text"},
        "vision_config": {
            "model_type": "gemma4_vision",
            "hidden_size": 768,
            "num_hidden_layers": 16,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
        },
    }
    cfg = shrink_config_dict(src).config
    assert cfg["text_config"]["num_hidden_layers"] == 6
    assert cfg["vision_config"]["num_hidden_layers"] == 2
    assert cfg["vision_config"]["hidden_size"] < 768
    assert cfg["text_config"]["image_token_id"] == cfg["image_token_id"] < 512
    assert cfg["audio_token_id"] != cfg["image_token_id"]


def test_family_rule_can_refuse_with_why():
    with pytest.raises(ShrinkError, match="musicgen.*audio model"):
        shrink_config_dict({"model_type": "musicgen", "hidden_size": 1024})


def test_rule_expressions_are_data_not_code():
    assert evaluate("=2 * hidden_size // head_dim", {"hidden_size": 128, "head_dim": 64}, {}) == 4
    assert evaluate("=text_config.hidden_size", {}, {"text_config": {"hidden_size": 96}}) == 96
    with pytest.raises(ShrinkError):
        evaluate("=__import__('os').system('true')", {}, {})
    with pytest.raises(ShrinkError, match="no value for missing"):
        evaluate("=missing + 1", {}, {})


def test_rules_file_is_consistent():
    rules = load_rules()
    for name, fam in rules.families.items():
        assert set(fam) <= {
            "notes",
            "set",
            "before",
            "drop",
            "keep",
            "min_layers",
            "per_layer_strings",
            "layer_index_lists",
            "unshrinkable",
            "dtype",
            "default_kwargs",
            "max_prefix_layers",
            "layers",
            "layer_kinds",
            "not_per_layer",
            "model_class",
            "engine_options",
            "released_architectures",
            "tokenizer_style",
            "aliases",
            "window_keys",
            "chunk_keys",
            "tokenizer_model",
            "add_dummy_prefix",
            "unused_weights_from",
            "saved_key_renames",
            "saved_config_values",
            "saved_config_pattern",
            "vocab_multiple",
            "saved_config_keys",
            "special_tokens",
            "tokenizer_config_keys",
            "release_tokenizer",
            "unlike_release",
            "saved_config_renames",
            "saved_config_per_layer",
            "saved_config_drop",
            "saved_config_overrides",
        }, name
        for pattern, _replacement in fam.get("saved_key_renames", []):
            re.compile(pattern)
        assert fam.get("tokenizer_style", "byte_level") in TOKENIZER_STYLES, name
        # a tokenizer.model is written only from a SentencePiece-style tokenizer
        assert not fam.get("tokenizer_model") or fam.get("tokenizer_style") == "sentencepiece"


# Real: build + generate


def run_tf(
    tf_env, script: str, *, env: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tf_env.python, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


@pytest.fixture(scope="module")
def shrunk_families(tf_env, tmp_path_factory) -> dict:
    """The motivating families, shrunk from transformers' default configs, each generating."""
    out = tmp_path_factory.mktemp("shrunk")
    proc = run_tf(
        tf_env,
        f"""
        import json, sys
        from probes.shrink import sweep
        rows = sweep({str(out)!r}, {FAMILIES!r})
        print(json.dumps(rows))
    """,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["model_type"]: r for r in json.loads(proc.stdout.strip().splitlines()[-1])}
    return {"out": out, "rows": rows}


@pytest.mark.parametrize("model_type", FAMILIES)
def test_family_shrinks_and_generates(shrunk_families, model_type):
    row = shrunk_families["rows"][model_type]
    assert row["status"] == "ok", row.get("why")
    assert len(row["tokens"]) == 4
    assert 0 < row["params"] <= load_rules().targets["max_params"]
    model_dir = shrunk_families["out"] / model_type
    assert (model_dir / "model.safetensors").exists()
    assert (model_dir / "tokenizer.json").exists()  # the fixtures' tokenizer
    meta = json.loads((model_dir / "dayone.json").read_text())
    assert meta["tier"] == "arch" and meta["id"] == f"arch/{model_type}"
    assert meta["tokenizer"] == "fixture" and len(meta["revision"]) == 40


def test_shrunk_switches_match_the_default_config(shrunk_families, tf_env):
    """Compare each saved config of a type with no catalogued release with transformers' own
    default: same switches."""
    proc = run_tf(
        tf_env,
        f"""
        import json
        from transformers import AutoConfig
        out = {{}}
        for t in {FAMILIES!r}:
            d = AutoConfig.for_model(t).to_dict()
            out[t] = d
        print(json.dumps(out, default=str))
    """,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    defaults = json.loads(proc.stdout.strip().splitlines()[-1])
    from probes import releases

    # Families with a catalogued release start from it (tests/test_releases.py checks those).
    for t in [f for f in FAMILIES if releases.lookup(f) is None]:
        src = defaults[t]
        got = json.loads((shrunk_families["out"] / t / "config.json").read_text())
        for key in (
            "head_dim",
            "num_experts_per_tok",
            "top_k_experts",
            "qk_rope_head_dim",
            "v_head_dim",
            "linear_key_head_dim",
            "mamba_head_dim",
        ):
            if src.get(key) is not None:
                assert got.get(key) == src[key], (t, key)
        for key in ("sliding_window", "attention_chunk_size", "chunk_size"):
            # a window or chunk stays set (or unset) and never grows; small where it shrank
            assert (got.get(key) is None) == (src.get(key) is None), (t, key)
            if src.get(key) is not None:
                assert got[key] <= src[key], (t, key)
        pattern = load_rules().family(t).get("saved_config_pattern")
        if pattern and pattern["to"] in got:  # written in the releases' words (Nemotron-H)
            words = {letter: kind for kind, letter in pattern["letters"].items()}
            got[pattern["from"]] = [words[c] for c in got.pop(pattern["to"])]
        before = load_rules().family(t).get("before", {})
        for key in ("layer_types", "layers_block_type"):
            if src.get(key):
                # a family rule may start from a release's layer list instead of the default's
                kinds = evaluate(before[key], src, src) if key in before else src[key]
                assert set(got[key]) == set(kinds), (t, key)
        assert got["dtype"] == "bfloat16"


def test_shrink_a_recorded_release_keeps_its_tokenizer_vocab(tf_env, tmp_path):
    """A release with its own tokenizer keeps the vocabulary; the shrink compacts to fit."""
    src = tmp_path / "release"
    src.mkdir()
    (src / "config.json").write_text((RECORDED / "google/gemma-4-E2B-it/config.json").read_text())
    proc = run_tf(
        tf_env,
        f"""
        from pathlib import Path
        from probes.fixtures import build_tokenizer
        from probes.shrink import shrink_path, check_generates
        build_tokenizer(Path({str(src)!r}))
        r = shrink_path(Path({str(src)!r}), Path({str(tmp_path / "out")!r}),
                        meta={{"id": "google/gemma-4-E2B-it", "revision": "abc123"}})
        print(r.params, check_generates(r.out_dir))
    """,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["vocab_size"] == 262144  # the release's, untouched
    assert set(cfg["layer_types"]) == {"sliding_attention", "full_attention"}
    meta = json.loads((tmp_path / "out" / "dayone.json").read_text())
    assert (meta["id"], meta["revision"], meta["tier"]) == ("google/gemma-4-E2B-it", "abc123", "arch")
    assert meta["tokenizer"] == "release"
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == (src / "tokenizer.json").read_bytes()


def test_cli_reports_why_a_shrink_fails(tf_env, tmp_path):
    rules = json.loads((ROOT / "probes" / "shrink_rules.json").read_text())
    rules["targets"]["max_params"] = 1000
    (tmp_path / "rules.json").write_text(json.dumps(rules))
    proc = subprocess.run(
        [tf_env.python, "-m", "probes.shrink", "--model-type", "qwen3", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DAYONE_SHRINK_RULES": str(tmp_path / "rules.json")},
        timeout=300,
    )
    assert proc.returncode == 2
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert answer["status"] == "error" and answer["why"].startswith("shrink failed:")
    assert "params" in answer["why"]

    proc = subprocess.run(
        [tf_env.python, "-m", "probes.shrink", "--model-type", "no_such_arch", str(tmp_path / "out2")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert proc.returncode == 2
    assert "no_such_arch" in json.loads(proc.stdout.strip().splitlines()[-1])["why"]


def test_sentencepiece_style_tokenizer_has_the_release_shape(tf_env, tmp_path):
    """Gemma 4's copies get a SentencePiece-style tokenizer.json (llama.cpp's converter reads
    Gemma 4 only in that shape): BPE with byte fallback, the 256 byte tokens in the base
    vocabulary, spaces as U+2581; text round-trips, bytes outside the corpus included."""
    proc = run_tf(
        tf_env,
        f"""
        from pathlib import Path
        from probes.fixtures import build_tokenizer
        tok = build_tokenizer(Path({str(tmp_path)!r}), vocab_size=512, style="sentencepiece")
        text = "The capital of Zürich is not 東京"
        ids = tok(text)["input_ids"]
        print(len(tok), tok.decode(ids) == text, tok.convert_ids_to_tokens(ids)[:2])
    """,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    size, roundtrip, _first = proc.stdout.split(" ", 2)
    assert int(size) <= 512 and roundtrip == "True"
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    model = data["model"]
    assert model["type"] == "BPE" and model["byte_fallback"] is True
    assert data["decoder"]["type"] == "Sequence"
    assert all(f"<0x{b:02X}>" in model["vocab"] for b in range(256))
    assert any("\u2581" in t for t in model["vocab"])
    assert load_rules().family("gemma4_text")["tokenizer_style"] == "sentencepiece"


def test_unknown_tokenizer_style_is_refused(tf_env, tmp_path):
    proc = run_tf(
        tf_env,
        f"""
        from pathlib import Path
        from probes.fixtures import build_tokenizer
        build_tokenizer(Path({str(tmp_path)!r}), style="wordpiece")
    """,
    )
    assert proc.returncode != 0 and "unknown tokenizer style 'wordpiece'" in proc.stderr


# Sweep variants


def test_variants_file_is_consistent():
    variants = load_variants()
    assert "gemma4_text+moe" in variants  # Gemma 4's MoE release: its default config is dense
    for token, entry in variants.items():
        base, name = token.split("+", 1)
        assert base and name and set(entry) <= {"why", "set"} and entry["why"], token
        assert split_variant(token) == (base, entry["set"])
    assert split_variant("llama") == ("llama", {})
    with pytest.raises(ShrinkError, match="unknown sweep variant 'llama\\+nope'"):
        split_variant("llama+nope")


def test_variant_revision_is_its_own_and_base_revisions_ignore_the_variants(tmp_path):
    from probes.shrink import recipe_revision, rules_text, sweep_revision

    # a type with no catalogued release: the rules alone (the variants file does not enter)
    assert sweep_revision("olmo2", "5.23.0") == recipe_revision("olmo2", "5.23.0", rules_text())
    # gemma4_text starts from Gemma 4's release (its text part): the release enters, and its
    # MoE variant, built from the default config, is a revision of its own
    assert sweep_revision("gemma4_text", "5.23.0") != recipe_revision("gemma4_text", "5.23.0", rules_text())
    assert sweep_revision("gemma4_text+moe", "5.23.0") != sweep_revision("gemma4_text", "5.23.0")


def test_a_copy_is_revised_by_what_engines_read(tmp_path):
    """The sweep's revision of a built copy: its files, and dayone.json only where a probe
    reads it; so a rule change that leaves a copy as it was is not new work."""
    from probes.shrink.catalogue import copy_revision

    copy = tmp_path / "llama"
    copy.mkdir()
    (copy / "config.json").write_text('{"model_type": "llama"}')
    (copy / "model.safetensors").write_bytes(b"weights")
    (copy / "dayone.json").write_text(json.dumps({"notes": ["a"], "engine_options": {}}))
    first = copy_revision(copy, "5.23.0")
    assert copy_revision(copy, "5.23.0") == first
    assert copy_revision(copy, "5.24.0") != first  # another reference
    (copy / "dayone.json").write_text(json.dumps({"notes": ["b"], "engine_options": {}}))
    assert copy_revision(copy, "5.23.0") == first  # notes are for people
    (copy / "dayone.json").write_text(json.dumps({"notes": ["b"], "engine_options": {"vllm": {"x": 1}}}))
    second = copy_revision(copy, "5.23.0")
    assert second != first  # a probe reads these
    (copy / "dayone.json").write_text(
        json.dumps({"notes": ["b"], "engine_options": {"vllm": {"x": 1}}, "release_tokenizer": "tiktoken"})
    )
    assert copy_revision(copy, "5.23.0") != second  # llama.cpp's convert reads it
    (copy / "dayone.json").write_text(json.dumps({"notes": ["b"], "engine_options": {"vllm": {"x": 1}}}))
    assert copy_revision(copy, "5.23.0") == second  # where unset, as it always was
    (copy / "tokenizer.model").write_bytes(b"spm")
    assert copy_revision(copy, "5.23.0") != second  # a new file engines read
    (copy / "tokenizer.model").unlink()
    (copy / "model.safetensors").write_bytes(b"weightz")
    assert copy_revision(copy, "5.23.0") != second


def test_variant_shrinks_with_its_switches_on(tf_env, tmp_path):
    out = tmp_path / "moe"
    proc = subprocess.run(
        [tf_env.python, "-m", "probes.shrink", "--model-type", "gemma4_text+moe", str(out), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "gemma4_text" and cfg["enable_moe_block"] is True
    assert cfg["top_k_experts"] == 8 and cfg["num_experts"] >= 8  # routing kept, experts shrunk
    assert cfg["hidden_size_per_layer_input"] == 0
    meta = json.loads((out / "dayone.json").read_text())
    assert meta["id"] == "arch/gemma4_text+moe"


def test_nested_sub_configs_lose_save_bookkeeping_only(tmp_path):
    from probes.shrink.build import _strip_nested_bookkeeping

    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "model_type": "dbrx",
                "output_attentions": False,  # top level: left alone
                "attn_config": {
                    "_name_or_path": "",
                    "output_attentions": False,
                    "clip_qkv": 8.0,
                    "return_dict": True,
                    "model_type": "",
                    "problem_type": "regression",
                    "dtype": "bfloat16",
                    "is_encoder_decoder": False,
                },
                "vision_config": {"_name_or_path": "", "model_type": "siglip", "dtype": "bfloat16"},
                "text_config": {"hidden_size": 64, "output_attentions": False},
            }
        )
    )  # not saved whole
    _strip_nested_bookkeeping(path)
    got = json.loads(path.read_text())
    assert got["attn_config"] == {
        "clip_qkv": 8.0,
        "model_type": "",
        "problem_type": "regression",
    }  # a set value stays
    assert got["output_attentions"] is False and got["text_config"]["output_attentions"] is False
    # a model's own sub-config keeps its dtype; a part's config (model_type "") has none
    assert got["vision_config"] == {"model_type": "siglip", "dtype": "bfloat16"}


def test_a_copy_names_the_class_releases_name(tf_env, tmp_path):
    # Engines choose their implementation by config.json's architectures: a copy must carry
    # the released name where it differs from transformers' class (Phi-3.5-MoE).
    out = tmp_path / "phimoe"
    proc = subprocess.run(
        [tf_env.python, "-m", "probes.shrink", "--model-type", "phimoe", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "config.json").read_text())["architectures"] == ["PhiMoEForCausalLM"]


def test_a_saved_config_speaks_the_releases_words(tmp_path):
    """transformers 5.23 writes hybrid layer kinds in its own words (linear_attention /
    full_attention) and Nemotron-H's pattern as a list; releases, and the converters and
    engines that read them, use mamba / attention and hybrid_override_pattern."""
    from probes.shrink.build import _config_in_release_words

    saved = {
        "granitemoehybrid": {"layer_types": ["linear_attention", "full_attention"]},
        "nemotron_h": {"layers_block_type": ["linear_attention", "moe", "full_attention", "mlp"]},
        "llama": {"layer_types": ["full_attention"]},
        "gpt_neox": {"rope_parameters": {"partial_rotary_factor": 0.25}},
        "gpt-sw3": {"n_positions": 1024, "n_ctx": 512},
        "hunyuan_v1_moe": {"intermediate_size": 128, "num_hidden_layers": 2, "moe_topk": [8, 8]},
        "deepseek_v4": {
            "layer_types": [
                "sliding_attention",
                "compressed_sparse_attention",
                "heavily_compressed_attention",
            ],
            "mlp_layer_types": ["hash_moe", "moe", "moe"],
            "compress_rates": {"compressed_sparse_attention": 4},
        },
        "gemma4_text": {
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
            "head_dim": 256,
            "per_layer_config": {"1": {"head_dim": 512}, "3": {"head_dim": 512}},
        },
        "mimo_v2_flash": {
            "layer_types": ["full_attention", "sliding_attention"],
            "mlp_layer_types": ["dense", "sparse"],
            "head_dim": 192,
            "v_head_dim": 128,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "sliding_window": 16,
            "rms_norm_eps": 1e-5,
            "rope_parameters": {
                "full_attention": {"rope_theta": 5e6, "partial_rotary_factor": 0.334},
                "sliding_attention": {"rope_theta": 1e4},
            },
        },
    }
    got = {}
    for model_type, config in saved.items():
        path = tmp_path / f"{model_type}.json"
        path.write_text(json.dumps(config))
        _config_in_release_words(path, model_type)
        got[model_type] = json.loads(path.read_text())
    assert got["granitemoehybrid"]["layer_types"] == ["mamba", "attention"]
    assert got["nemotron_h"] == {"hybrid_override_pattern": "ME*-"}
    assert got["llama"] == saved["llama"]  # a family without the rule is left as saved
    assert got["gpt_neox"]["rotary_pct"] == 0.25  # the key Pythia's releases state
    assert got["gpt-sw3"]["n_ctx"] == 512  # a key the copy has is left as it is
    # Hunyuan-A13B's per-layer lists (llama.cpp's converter reads them) and the switches
    # vLLM's and SGLang's native models read (QK-norm on, the shared expert mixed in)
    hunyuan = got["hunyuan_v1_moe"]
    assert hunyuan["moe_intermediate_size"] == [128, 128] and hunyuan["num_shared_expert"] == [1, 1]
    assert (hunyuan["use_qk_norm"], hunyuan["use_mixed_mlp_moe"], hunyuan["use_cla"]) == (True, True, False)
    # DeepSeek-V4-Flash's compress_ratios and num_hash_layers, not 5.23's own three keys
    assert got["deepseek_v4"] == {"compress_ratios": [0, 4, 128], "num_hash_layers": 1}
    # MiMo-V2-Flash's keys beside 5.23's (which 5.23 reads), its window without the query
    mimo = got["mimo_v2_flash"]
    assert (mimo["hybrid_layer_pattern"], mimo["moe_layer_freq"]) == ([0, 1], [0, 1])
    assert (mimo["swa_num_key_value_heads"], mimo["swa_head_dim"], mimo["swa_rope_theta"]) == (2, 192, 1e4)
    assert mimo["sliding_window"] == mimo["sliding_window_size"] == 15
    assert mimo["layernorm_epsilon"] == 1e-5 and "rope_parameters" not in mimo
    assert mimo["layer_types"] == saved["mimo_v2_flash"]["layer_types"]
    # Gemma 4's full-attention head size as its releases state it (transformers 5.14 and the
    # engines that read head_dim globally fail on 5.23's per_layer_config)
    gemma = got["gemma4_text"]
    assert (gemma["global_head_dim"], gemma["head_dim"]) == (512, 256) and "per_layer_config" not in gemma
    path = tmp_path / "odd.json"
    path.write_text(json.dumps({"layers_block_type": ["linear_attention", "zorblax"]}))
    with pytest.raises(ShrinkError, match="zorblax"):
        _config_in_release_words(path, "nemotron_h")
    for overrides, why in (
        ({"1": {"head_dim": 512}, "3": {"head_dim": 256}}, "differs across layers"),
        ({"1": {"head_dim": 512}}, "not the full-attention layers"),
        ({"1": {"rope_theta": 1}, "3": {"rope_theta": 1}}, "no key for"),
    ):
        path.write_text(json.dumps({**saved["gemma4_text"], "per_layer_config": overrides}))
        with pytest.raises(ShrinkError, match=why):
            _config_in_release_words(path, "gemma4_text")


def test_hunyuan_routes_several_experts_per_layer():
    """transformers' default Hunyuan-MoE config has one expert and top-1, which no release
    has (Hunyuan-A13B: 8 of 64): the copy routes as the release does, top-k per layer."""
    src = {
        "model_type": "hunyuan_v1_moe",
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 11008,
        "num_experts": 1,
        "moe_topk": 1,
        "vocab_size": 290943,
    }
    cfg = shrink_config_dict(src, vocab_size=443).config
    assert cfg["moe_topk"] == [cfg["moe_topk"][0]] * cfg["num_hidden_layers"]
    assert 1 < cfg["moe_topk"][0] < cfg["num_experts"]


def test_a_fixture_tokenizer_states_what_the_releases_tokenizer_config_does(tf_env, tmp_path):
    """DeepSeek's tokenizer_config.json says add_bos_token (llama.cpp's converter asserts it):
    a copy built with the fixture tokenizer says it too, and tokenizes as before."""
    proc = run_tf(
        tf_env,
        f"""
        import json
        from pathlib import Path
        from probes.shrink.build import _fixture_tokenizer
        for t in ("deepseek_v32", "llama"):
            out = Path({str(tmp_path)!r}) / t
            out.mkdir()
            tok = _fixture_tokenizer(out, t)
            config = json.loads((out / "tokenizer_config.json").read_text())
            print(json.dumps([t, config.get("add_bos_token"), config["tokenizer_class"],
                              tok("The capital of France is").input_ids]))
    """,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r[0]: r[1:] for r in map(json.loads, proc.stdout.strip().splitlines())}
    assert rows["deepseek_v32"][:2] == [True, "LlamaTokenizerFast"]
    assert rows["llama"][0] is None
    assert rows["deepseek_v32"][2] == rows["llama"][2]


def test_a_copy_unlike_every_release_says_so_in_its_lineage(tf_env, tmp_path):
    """DeepSeek-V4's releases ship quantized weights no random copy has: its copy's lineage
    says how it differs (its reds are then no verdict), and its weights carry the releases'
    names (embed.weight, layers.N..., hc_head_base), which transformers reads back whole."""
    proc = run_tf(
        tf_env,
        f"""
        import json, torch
        from pathlib import Path
        from safetensors import safe_open
        from transformers import AutoModelForCausalLM
        from probes.shrink import shrink_model_type
        out = Path({str(tmp_path)!r}) / "deepseek_v4"
        shrink_model_type("deepseek_v4", out)
        names = sorted(safe_open(str(out / "model.safetensors"), "pt").keys())
        _, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
        print(json.dumps({{"lineage": json.loads((out / "dayone.json").read_text())["lineage"],
                          "names": names, "info": {{k: list(v) for k, v in info.items()}}}}))
    """,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["lineage"]["source"] == "synthetic" and "FP8" in got["lineage"]["unlike_release"]
    assert "embed.weight" in got["names"] and "hc_head_base" in got["names"]
    assert not any(n.startswith("model.") for n in got["names"])
    assert not any(got["info"].values()), got["info"]  # no missing or unexpected weights


def test_a_dense_prefix_stated_twice_stays_one():
    """GLM-5 states its dense prefix as first_k_dense_replace and as mlp_layer_types: after the
    layers are chosen both name the same dense layers (engines read the one, transformers the
    other; llama.cpp once looked for a router in a dense layer)."""
    src = {
        "model_type": "glm_moe_dsa",
        "hidden_size": 6144,
        "num_hidden_layers": 78,
        "num_attention_heads": 64,
        "num_key_value_heads": 64,
        "first_k_dense_replace": 3,
        "mlp_layer_types": ["dense"] * 3 + ["sparse"] * 75,
        "n_routed_experts": 256,
        "num_experts_per_tok": 8,
        "kv_lora_rank": 512,
        "qk_rope_head_dim": 64,
        "vocab_size": 154880,
    }
    cfg = shrink_config_dict(src, vocab_size=443).config
    kinds = cfg["mlp_layer_types"]
    assert "sparse" in kinds and len(kinds) == cfg["num_hidden_layers"]
    assert cfg["first_k_dense_replace"] == kinds.index("sparse")
