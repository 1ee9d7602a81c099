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
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 32,
    "max_position_embeddings": 512,
    "initializer_range": 0.2,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
}

# Healthy fixtures: model_type -> config overrides that keep the family's switches on.
FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {},
    "qwen3": {},
    "mistral": {"sliding_window": None},
    "phi3": {"head_dim": None, "pad_token_id": 0},  # phi3 derives head_dim = hidden / heads
    "gemma3_text": {
        "sliding_window": 64,
        "layer_types": ["sliding_attention", "full_attention"],
        "query_pre_attn_scalar": 32,
        "tie_word_embeddings": True,
    },
    "qwen3_moe": {
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "decoder_sparse_step": 1,
        "norm_topk_prob": True,
        "mlp_only_layers": [],
    },
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": None},
}

# Broken fixtures: what each is, built from the llama fixture.
BROKEN: dict[str, str] = {
    "broken-unknown-arch": "an architecture no engine knows (model_type dayone_zorblax)",
    "broken-truncated-weights": "model.safetensors cut to half its size",
    "broken-missing-weights": "no weights file at all",
    "broken-unreadable-config": "config.json is not valid JSON",
}


# llama.cpp: per-family tokenizer details real releases have and converters check.
# llama.cpp's convert_hf_to_gguf reads a Phi-3-family vocab as byte-level BPE only when
# tokenizer_class says GPT2Tokenizer (as Phi-4 ships it; else it wants a SentencePiece
# tokenizer.model), and llama.cpp's vocab loader requires Phi's <|endoftext|> token in any model
# named phi3. Without these the fixture, not the engine, would be red.
TOKENIZER_STYLE: dict[str, dict[str, Any]] = {
    "phi3": {"extra_special": ("<|endoftext|>",), "tokenizer_class": "GPT2Tokenizer"},
}


# Tokenizer styles as releases ship them in tokenizer.json. "byte_level": GPT-2/Llama 3/Qwen
# style. "sentencepiece": Llama 2/Gemma style (spaces as U+2581, unknown bytes as <0xNN>
# tokens); converters check for it by shape (llama.cpp reads Gemma 4 only in this form).
TOKENIZER_STYLES = ("byte_level", "sentencepiece")
SPACE = "\u2581"


def _byte_level_bpe(vocab_size: int, specials: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


def _sentencepiece_bpe(
    vocab_size: int, specials: list[str], *, with_model: bool = False, dummy_prefix: bool = False
) -> Any:
    """BPE with byte fallback: specials, then the 256 byte tokens, then what the corpus trains
    (the ids a SentencePiece model converted to tokenizer.json has).

    `with_model`: the copy also gets a tokenizer.model (probes.spm), so the merges are the ones
    a SentencePiece model implies (every split of a piece, best-scored first) and, with
    `dummy_prefix`, a space is prepended as SentencePiece's default does (Llama 2, Phi-3)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    from probes.spm import complete_merges

    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.normalizer = normalizers.Replace(" ", SPACE)
    trained.train_from_iterator(
        CORPUS,
        trainer=trainers.BpeTrainer(
            vocab_size=max(vocab_size - len(byte_tokens), len(specials) + 1),
            special_tokens=specials,
            show_progress=False,
        ),
    )
    model = json.loads(trained.to_str())["model"]
    learned = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    ordered = specials + byte_tokens + [t for t, _ in learned if t not in specials and t not in byte_tokens]
    vocab = {t: i for i, t in enumerate(ordered)}
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    if with_model:
        first = len(specials) + len(byte_tokens)
        merges = complete_merges(vocab, {t: -float(i) for t, i in vocab.items() if i >= first})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    replace = normalizers.Replace(" ", SPACE)
    tok.normalizer = (
        normalizers.Sequence([normalizers.Prepend(SPACE), replace])
        if with_model and dummy_prefix
        else replace
    )
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if with_model and dummy_prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(steps)
    tok.add_special_tokens(specials)
    return tok


def build_tokenizer(
    out_dir: Path,
    vocab_size: int = 384,
    extra_special: tuple[str, ...] = (),
    tokenizer_class: str = "PreTrainedTokenizerFast",
    style: str = "byte_level",
    sentencepiece_model: bool = False,
    dummy_prefix: bool = False,
    config_keys: dict | None = None,
):
    """Train a BPE tokenizer locally (STYLE: one of TOKENIZER_STYLES) and save it with a chat
    template. `sentencepiece_model`: shaped so that a tokenizer.model can be written from it
    (probes.shrink.released.write_tokenizer_model), with SentencePiece's dummy prefix or not.
    `config_keys`: more tokenizer_config.json entries, as a family's releases state them."""
    from transformers import PreTrainedTokenizerFast

    specials = [*SPECIAL_TOKENS, *extra_special]
    if style not in TOKENIZER_STYLES:
        raise ValueError(f"unknown tokenizer style {style!r}; known: {', '.join(TOKENIZER_STYLES)}")
    if style == "sentencepiece":
        tok = _sentencepiece_bpe(
            vocab_size, specials, with_model=sentencepiece_model, dummy_prefix=dummy_prefix
        )
    else:
        tok = _byte_level_bpe(vocab_size, specials)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        chat_template=CHAT_TEMPLATE,
    )
    fast.save_pretrained(out_dir)
    # Write what real releases write, so older transformers (4.x) read it too: the generic
    # fast tokenizer class (5.x saves its new "TokenizersBackend" name) and the chat template
    # inside tokenizer_config.json as well as in chat_template.jinja.
    config_path = out_dir / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text())
    tok_config.update(tokenizer_class=tokenizer_class, chat_template=CHAT_TEMPLATE)
    tok_config.update(config_keys or {})
    config_path.write_text(json.dumps(tok_config, indent=2) + "\n")
    return fast


def build_family(model_type: str, out_dir: Path) -> None:
    from transformers import AutoConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out_dir, **TOKENIZER_STYLE.get(model_type, {}))
    overrides = {**COMMON, **FAMILIES[model_type], "vocab_size": len(tok)}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    config = AutoConfig.for_model(model_type, **overrides)
    _save_random(config, out_dir)
    _add_release_keys(out_dir / "config.json")
    _write_meta(out_dir, model_type, f"tiny random {model_type}")


def _add_release_keys(config_path: Path) -> None:
    """Also write the config keys real releases carry under their original names.

    transformers 5.x renamed some on save (num_experts -> num_local_experts, rope_theta ->
    rope_parameters); released config.json files keep the old names, which older engines read.
    Without them a 4.x engine builds 128 experts and fails: a false red caused by our fixture."""
    config = json.loads(config_path.read_text())
    if "num_local_experts" in config and config.get("model_type") == "qwen3_moe":
        config.setdefault("num_experts", config["num_local_experts"])
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope:
        config.setdefault("rope_theta", rope["rope_theta"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _save_random(config, out_dir: Path, auto_class: str = "AutoModelForCausalLM") -> None:
    """Seeded random float32 weights for `config`, saved as safetensors (pad id 0 so
    generate() does not warn)."""
    import torch
    import transformers

    torch.manual_seed(SEED)
    model = getattr(transformers, auto_class).from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = 0
    model.save_pretrained(out_dir, safe_serialization=True)


def _write_meta(out_dir: Path, family: str, about: str) -> None:
    meta = {
        "id": f"dayone-fixtures/{out_dir.name}",
        "family": family,
        "release_date": RELEASE_DATE,
        "about": about,
        "weights": "random",
    }
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


# Fine-tune and serving-feature fixtures
# Not in all_names() (the default build, which every engine's tests probe): the multimodal
# ones are not plain causal LMs and the broken template only breaks chat. Build them by name:
#   python -m probes.fixtures OUT --only broken-chat-template broken-long-rope \
#       gemma4-multimodal molmo2-multimodal
FEATURE_FIXTURES: dict[str, str] = {
    "broken-chat-template": "the llama fixture whose chat template does not parse (Jinja "
    "syntax error): chat fails, plain generation works",
    "gemma4-multimodal": "a shrunk Gemma 4 with vision and audio towers: their projections are "
    "Gemma4ClippableLinear, which PEFT cannot wrap when targeted by name",
    "molmo2-multimodal": "a shrunk Molmo 2: its forward demands mm_token_type_ids when "
    "training, which a text-only training loop does not pass",
    "broken-long-rope": "a Phi-3 with LongRoPE whose long_factor is all zeros: fine up to "
    "its original 128 positions, non-finite logits past them",
}

# Jinja that does not parse: an unclosed for-loop, as a hand-edited template often ships.
BROKEN_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_broken_chat_template(llama_dir: Path, out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(llama_dir, out_dir)
    # Both places a template lives (transformers prefers the .jinja file; older readers and
    # other engines read tokenizer_config.json).
    (out_dir / "chat_template.jinja").write_text(BROKEN_CHAT_TEMPLATE)
    config_path = out_dir / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text())
    if "chat_template" in tok_config:
        tok_config["chat_template"] = BROKEN_CHAT_TEMPLATE
        config_path.write_text(json.dumps(tok_config, indent=2) + "\n")
    _write_meta(out_dir, "broken", FEATURE_FIXTURES["broken-chat-template"])


def build_gemma4_multimodal(out_dir: Path) -> None:
    from transformers.models.gemma4.configuration_gemma4 import Gemma4Config

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = len(build_tokenizer(out_dir))
    special = 3  # <unk>: the media token ids only matter when media is passed
    text = {
        **COMMON,
        "vocab_size": vocab,
        "vocab_size_per_layer_input": vocab,
        "hidden_size_per_layer_input": 16,
        "sliding_window": 64,
        "layer_types": ["sliding_attention", "full_attention"],
        "tie_word_embeddings": True,
    }
    # use_clipped_linears on: the released towers have it, and it is what makes their
    # projections Gemma4ClippableLinear (the module PEFT does not know).
    vision = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "patch_size": 4,
        "position_embedding_size": 64,
        "use_clipped_linears": True,
    }
    audio = {
        "hidden_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "subsampling_conv_channels": [8, 4],
        "output_proj_dims": 64,
        "use_clipped_linears": True,
    }
    config = Gemma4Config(
        text_config=text,
        vision_config=vision,
        audio_config=audio,
        boi_token_id=special,
        eoi_token_id=special,
        image_token_id=special,
        video_token_id=special,
        boa_token_id=special,
        eoa_token_index=special,
        audio_token_id=special,
        tie_word_embeddings=True,
    )
    _save_random(config, out_dir)
    _write_meta(out_dir, "gemma4", FEATURE_FIXTURES["gemma4-multimodal"])


def build_molmo2_multimodal(out_dir: Path) -> None:
    from transformers.models.molmo2.configuration_molmo2 import Molmo2Config

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = len(build_tokenizer(out_dir))
    text = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 32,
        "vocab_size": vocab,
        "additional_vocab_size": 16,
        "max_position_embeddings": 512,
        "rope_scaling_layers": [0, 1],
    }
    vision = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "image_size": [28, 28],
        "patch_size": 14,
        "num_position_embeddings": 4,
    }
    adapter = {
        "vision_feature_layer": [-1, -2],
        "hidden_size": 64,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "intermediate_size": 128,
        "text_hidden_size": 64,
    }
    # Media token ids live in the additional vocabulary, right after the text vocabulary.
    config = Molmo2Config(
        text_config=text,
        vision_config=vision,
        adapter_config=adapter,
        image_start_token_id=vocab,
        low_res_image_start_token_id=vocab + 1,
        image_end_token_id=vocab + 2,
        image_patch_id=vocab + 3,
        frame_start_token_id=vocab + 4,
        frame_end_token_id=vocab + 5,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    _save_random(config, out_dir, "AutoModelForImageTextToText")
    _write_meta(out_dir, "molmo2", FEATURE_FIXTURES["molmo2-multimodal"])


def build_broken_long_rope(out_dir: Path) -> None:
    from transformers import AutoConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = len(build_tokenizer(out_dir))
    half_head = 32 // 2  # phi3: head_dim = hidden / heads = 64 / 2
    # A shipped config with wrong long factors passes validation (only their count is
    # checked) and breaks only past original_max_position_embeddings: a long-context bug.
    rope = {
        "rope_type": "longrope",
        "rope_theta": 10000.0,
        "original_max_position_embeddings": 128,
        "short_factor": [1.0] * half_head,
        "long_factor": [0.0] * half_head,
    }
    overrides = {
        **COMMON,
        "head_dim": None,
        "vocab_size": vocab,
        "original_max_position_embeddings": 128,
        "rope_parameters": rope,
    }
    config = AutoConfig.for_model("phi3", **{k: v for k, v in overrides.items() if v is not None})
    _save_random(config, out_dir)
    _write_meta(out_dir, "broken", FEATURE_FIXTURES["broken-long-rope"])


def build_feature_fixture(name: str, out_root: Path, target: Path) -> None:
    if name == "broken-chat-template":
        if not (out_root / "llama" / "model.safetensors").exists():
            build_family("llama", out_root / "llama")
        build_broken_chat_template(out_root / "llama", target)
    elif name == "gemma4-multimodal":
        build_gemma4_multimodal(target)
    elif name == "molmo2-multimodal":
        build_molmo2_multimodal(target)
    elif name == "broken-long-rope":
        build_broken_long_rope(target)
    else:
        raise ValueError(f"unknown feature fixture {name!r}")


def _world_readable(folder: Path) -> None:
    """safetensors writes 0600: a probe container running as another user could not read it."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode | (0o555 if path.is_dir() else 0o444))


def all_names() -> list[str]:
    return [*FAMILIES, *BROKEN]


def build(out_root: Path, only: list[str] | None = None) -> list[Path]:
    names = only or all_names()
    known = [*all_names(), *FEATURE_FIXTURES]  # feature fixtures build by name too
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise SystemExit(f"unknown fixture(s) {unknown}; known: {', '.join(known)}")
    out_root.mkdir(parents=True, exist_ok=True)
    built = []
    for name in names:
        target = out_root / name
        if name in FAMILIES:
            build_family(name, target)
        elif name in FEATURE_FIXTURES:
            build_feature_fixture(name, out_root, target)
        else:
            if not (out_root / "llama" / "model.safetensors").exists():
                build_family("llama", out_root / "llama")
            build_broken(name, out_root / "llama", target)
        _world_readable(target)
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
