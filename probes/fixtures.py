"""Tiny random HF checkpoints that dayone builds itself: seeded, deterministic, seconds on CPU.

    python -m probes.fixtures OUT_DIR [--only NAME ...]

Runs inside the transformers environment (needs torch, transformers, tokenizers). Healthy
fixtures cover the common families; broken ones are what a tracker must recognise. Sizes are
tiny but head_dim is 32 (vLLM's CPU attention refuses 16) and every family's switches are on.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

SEED = 1234
RELEASE_DATE = "2026-01-15"

# A small fixed corpus: enough merges for a few hundred tokens, deterministic.
CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)",
    "Once upon a time, in a small village, there lived an old clockmaker and his cat.",
    "You are a helpful assistant. Say hello in one word. Hello! How can I help you today?",
    "Models load, generate, and answer questions about the weather, numbers, and code.",
] * 4

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

COMMON: dict[str, Any] = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
    "max_position_embeddings": 512, "initializer_range": 0.2,
    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False,
}

# Healthy fixtures: model_type -> config overrides that keep the family's switches on.
FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {},
    "qwen3": {},
    "mistral": {"sliding_window": None},
    "phi3": {"head_dim": None, "pad_token_id": 0},  # phi3 derives head_dim = hidden / heads
    "gemma3_text": {"sliding_window": 64, "layer_types": ["sliding_attention", "full_attention"],
                    "query_pre_attn_scalar": 32, "tie_word_embeddings": True},
    "qwen3_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                  "decoder_sparse_step": 1, "norm_topk_prob": True, "mlp_only_layers": []},
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": None},
}

# Broken fixtures: what each is, built from the llama fixture.
BROKEN: dict[str, str] = {
    "broken-unknown-arch": "an architecture no engine knows (model_type dayone_zorblax)",
    "broken-truncated-weights": "model.safetensors cut to half its size",
    "broken-missing-weights": "no weights file at all",
    "broken-unreadable-config": "config.json is not valid JSON",
}


def build_tokenizer(out_dir: Path, vocab_size: int = 384):
    """Train a byte-level BPE tokenizer locally and save it with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        unk_token="<unk>", chat_template=CHAT_TEMPLATE)
    fast.save_pretrained(out_dir)
    return fast


def build_family(model_type: str, out_dir: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out_dir)
    overrides = {**COMMON, **FAMILIES[model_type], "vocab_size": len(tok)}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    config = AutoConfig.for_model(model_type, **overrides)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = 0
    model.save_pretrained(out_dir, safe_serialization=True)
    _write_meta(out_dir, model_type, f"tiny random {model_type}")


def _write_meta(out_dir: Path, family: str, about: str) -> None:
    meta = {"id": f"dayone-fixtures/{out_dir.name}", "family": family,
            "release_date": RELEASE_DATE, "about": about}
    (out_dir / "dayone.json").write_text(json.dumps(meta, indent=2) + "\n")


def build_broken(name: str, llama_dir: Path, out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(llama_dir, out_dir)
    weights = out_dir / "model.safetensors"
    config_path = out_dir / "config.json"
    if name == "broken-unknown-arch":
        config = json.loads(config_path.read_text())
        config.update(model_type="dayone_zorblax", architectures=["ZorblaxForCausalLM"])
        config_path.write_text(json.dumps(config, indent=2))
    elif name == "broken-truncated-weights":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif name == "broken-missing-weights":
        weights.unlink()
    elif name == "broken-unreadable-config":
        config_path.write_text('{"model_type": "llama", "hidden_size": 64,,, oops')
    else:
        raise ValueError(f"unknown broken fixture {name!r}")
    _write_meta(out_dir, "broken", BROKEN[name])


def all_names() -> list[str]:
    return [*FAMILIES, *BROKEN]


def build(out_root: Path, only: list[str] | None = None) -> list[Path]:
    names = only or all_names()
    unknown = sorted(set(names) - set(all_names()))
    if unknown:
        raise SystemExit(f"unknown fixture(s) {unknown}; known: {', '.join(all_names())}")
    out_root.mkdir(parents=True, exist_ok=True)
    built = []
    for name in names:
        target = out_root / name
        if name in FAMILIES:
            build_family(name, target)
        else:
            if not (out_root / "llama" / "model.safetensors").exists():
                build_family("llama", out_root / "llama")
            build_broken(name, out_root / "llama", target)
        print(f"built {target}", flush=True)
        built.append(target)
    return built


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m probes.fixtures", description=__doc__)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--only", nargs="*", default=None, help="fixture names (default: all)")
    args = p.parse_args(argv)
    build(args.out_dir, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
