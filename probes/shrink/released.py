"""A shrunk copy that says what its release says: the release's key layout, class names, dtype,
generation config, special tokens, chat template and tokenizer kind.

Engines read these files, not only the weights: a key the release lacks (gpt2's `n_ctx`), a
renamed one, a class name of transformers' where the release has its own, or a tokenizer of
another kind would make a verdict about our copy, not about the engine on the release. Where the
release's own vocabulary is catalogued it travels unchanged (probes.shrink.build); where only its
tokenizer configuration is, the fixtures' tokenizer is trained in the release's kind and carries
the release's special tokens and chat template.

Transformers-side helpers (the tokenizer check imports transformers inside a function).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probes.modelinfo import read_json
from probes.releases import Release
from probes.shrink.config import ShrinkPlan
from probes.shrink.rules import is_int, load_rules

ROLES = ("bos_token", "eos_token", "pad_token", "unk_token")
# The fixture tokenizer's own tokens for the roles a config names by id (probes.fixtures).
FIXTURE_ROLES = {"bos_token": "<s>", "eos_token": "</s>"}
MAX_SPECIALS = 64  # of a release's special tokens, the ones a small vocabulary carries
# Files of the release copied beside the weights as they are (a multimodal release's processor).
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
# What describes the release's weights, not ours (random, unquantized): left out of the copy.
WEIGHTS_ONLY_KEYS = ("quantization_config",)
# Tokenizer classes of SentencePiece releases (a tokenizer.model): their copies get the
# SentencePiece-style fixture (spaces as U+2581, byte fallback).
SENTENCEPIECE_FILES = ("tokenizer.model", "spiece.model", "sentencepiece.bpe.model")


@dataclass
class Specials:
    """The release's special tokens as the copy's tokenizer has them."""

    roles: dict[str, str | None] = field(default_factory=dict)  # bos_token -> "<bos>"
    ids: dict[int, int] = field(default_factory=dict)  # release id -> copy id
    by_content: dict[str, int] = field(default_factory=dict)
    vocab: dict[str, int] = field(default_factory=dict)  # the copy's whole vocabulary


def drop_weights_only(source: dict[str, Any]) -> list[str]:
    """Leave out of a release's config what describes its weights, not ours; notes on it."""
    return [
        f"{key}: left out (it describes the release's weights, not ours)"
        for key in WEIGHTS_ONLY_KEYS
        if source.pop(key, None) is not None
    ]


def tokenizer_style(release: Release, model_type: str | None) -> str:
    """The release's tokenizer kind: SentencePiece where it ships (or lists) a tokenizer.model,
    else the family rule's style (byte-level unless said)."""
    if any(name in release.files or name in release.missing for name in SENTENCEPIECE_FILES):
        return "sentencepiece"
    return str(load_rules().family(model_type).get("tokenizer_style", "byte_level"))


def wants_tokenizer_model(release: Release | None, model_type: str | None) -> bool:
    """The copy carries a tokenizer.model: its release ships (or lists) one, or the family rule
    says its releases do (`tokenizer_model`, for families with no catalogued release)."""
    if release is not None and ("tokenizer.model" in release.files or "tokenizer.model" in release.missing):
        return True
    return bool(load_rules().family(model_type).get("tokenizer_model"))


def tokenizer_options(release: Release | None, model_type: str | None) -> dict[str, Any]:
    """build_tokenizer's options for a fixture tokenizer in the release's kind: the style, and
    for a copy with a tokenizer.model SentencePiece's dummy prefix as the family's converters
    read it (rule `add_dummy_prefix`, SentencePiece's default on; Gemma's releases have it off)."""
    family = load_rules().family(model_type)
    style = (
        tokenizer_style(release, model_type)
        if release is not None
        else str(family.get("tokenizer_style", "byte_level"))
    )
    with_model = style == "sentencepiece" and wants_tokenizer_model(release, model_type)
    return {
        "style": style,
        "sentencepiece_model": with_model,
        "dummy_prefix": with_model and bool(family.get("add_dummy_prefix", True)),
    }


def write_tokenizer_model(out_dir: Path, check_texts: tuple[str, ...]) -> str:
    """Write out_dir/tokenizer.model from its tokenizer.json (probes.spm) when SentencePiece's
    algorithm gives the same ids on every check text; a note saying what was done."""
    from tokenizers import Tokenizer

    from probes import spm

    path = out_dir / "tokenizer.json"
    if not path.exists():
        return "tokenizer.model: not written (no tokenizer.json)"
    found = spm.pieces_from_tokenizer_json(read_json(path))
    if isinstance(found, str):
        return f"tokenizer.model: not written ({found})"
    pieces, prefix = found
    tok = Tokenizer.from_file(str(path))
    for text in check_texts:
        ours, theirs = (
            spm.encode(text, pieces, dummy_prefix=prefix),
            tok.encode(text, add_special_tokens=False).ids,
        )
        if ours != theirs:
            return (
                f"tokenizer.model: not written (SentencePiece reads {text[:30]!r} as "
                f"{ours[:8]}, tokenizer.json as {theirs[:8]})"
            )
    tok_config = (
        read_json(out_dir / "tokenizer_config.json") if (out_dir / "tokenizer_config.json").exists() else {}
    )
    roles = {role: _content(tok_config.get(f"{role}_token")) for role in ("unk", "bos", "eos", "pad")}
    (out_dir / "tokenizer.model").write_bytes(
        spm.model_bytes(pieces, dummy_prefix=prefix, roles={k: v for k, v in roles.items() if v})
    )
    return (
        "tokenizer.model: written from tokenizer.json (the release ships one, LFS-sized; "
        f"SentencePiece reads the {len(check_texts)} check texts as tokenizer.json does)"
    )


def _content(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def chat_template(release: Release) -> str | None:
    if "chat_template.jinja" in release.files:
        return release.file("chat_template.jinja").read_text(encoding="utf-8")
    value = read_json(release.file("tokenizer_config.json")).get("chat_template")
    return value if isinstance(value, str) else None  # a list of named templates: not kept


def special_tokens(
    release: Release, source: dict[str, Any]
) -> tuple[dict[str, str | None], dict[int, str], list[str]]:
    """(role -> content, release id -> content, the specials the copy carries, in order)."""
    tok_config = read_json(release.file("tokenizer_config.json"))
    smap = read_json(release.file("special_tokens_map.json"))
    roles = {r: _content(tok_config.get(r)) or _content(smap.get(r)) for r in ROLES}
    decoder = {
        int(k): c
        for k, v in (tok_config.get("added_tokens_decoder") or {}).items()
        if str(k).isdigit() and (c := _content(v))
    }
    # Media and other named tokens (image_token_id -> tokenizer_config's image_token) map by
    # name; one the release names by id alone gets a placeholder special of ours. Otherwise its
    # id would land on an ordinary token of the fixture tokenizer, which a prompt produces
    # (Gemma 4's image id fell on a piece of "The capital of France is": every engine and
    # transformers then read that piece as an image slot, each its own way).
    for scope in (source, source.get("text_config") or {}):
        for key, value in scope.items():
            role = _named_role(key)
            if role is None or role in ROLES or roles.get(role):
                continue
            values = value if isinstance(value, list) else [value]
            if not values or not all(is_int(v) for v in values):
                continue
            roles[role] = _content(tok_config.get(role)) or (
                None if all(v in decoder for v in values) else f"<|dayone_{role}|>"
            )
    # A release catalogued without its tokenizer files names bos/eos by id alone: those ids
    # are the fixture tokenizer's own bos/eos, not whatever piece lands there.
    for role, fixture_token in FIXTURE_ROLES.items():
        value = source.get(f"{role}_id")
        values = value if isinstance(value, list) else [value]
        if roles.get(role) is None and values and all(is_int(v) and v not in decoder for v in values):
            roles[role] = fixture_token
    template = chat_template(release) or ""
    named_ids = [
        v
        for scope in (
            source,
            source.get("text_config") or {},
            read_json(release.file("generation_config.json")),
        )
        for k, value in scope.items()
        if k.endswith("_token_id")
        for v in (value if isinstance(value, list) else [value])
        if is_int(v)
    ]
    wanted = [c for c in roles.values() if c]
    # Other named tokens (Gemma 3's boi_token, image_token): the class reads them by name.
    wanted += [c for k, v in tok_config.items() if k.endswith("_token") and (c := _content(v))]
    wanted += [decoder[i] for i in named_ids if i in decoder]
    # A release token the template happens to contain is one of its specials only if the
    # release says so: Gemma 2 lists "\n" (an ordinary piece, special false), which as a
    # special of ours would split every newline out in one engine and not in another.
    specials = {
        int(k)
        for k, v in (tok_config.get("added_tokens_decoder") or {}).items()
        if str(k).isdigit() and isinstance(v, dict) and v.get("special", True)
    }
    wanted += [c for i, c in decoder.items() if c in template and i in specials and c.strip()]
    wanted += [c for c in smap.get("additional_special_tokens") or [] if isinstance(c, str) and c in template]
    ordered = list(dict.fromkeys(wanted))[:MAX_SPECIALS]
    return roles, decoder, ordered


def _named_role(key: str) -> str | None:
    """image_token_id / eoa_token_index -> image_token / eoa_token; None for other keys."""
    for suffix in ("_token_id", "_token_index"):
        if key.endswith(suffix):
            return key[: -len(suffix)] + "_token"
    return None


def fixture_tokenizer(
    out_dir: Path, release: Release, source: dict[str, Any], vocab_size: int
) -> tuple[Any, Specials]:
    """The fixtures' tokenizer in the release's kind, with the release's special tokens."""
    from probes.fixtures import SPECIAL_TOKENS, build_tokenizer

    roles, decoder, ordered = special_tokens(release, source)
    extra = tuple(c for c in ordered if c not in SPECIAL_TOKENS)
    tok = build_tokenizer(
        out_dir,
        vocab_size=vocab_size,
        extra_special=extra,
        **tokenizer_options(release, source.get("model_type")),
    )
    vocab = tok.get_vocab()
    specials = Specials(roles=roles, by_content={c: vocab[c] for c in ordered if c in vocab}, vocab=vocab)
    specials.ids = {i: specials.by_content[c] for i, c in decoder.items() if c in specials.by_content}
    return tok, specials


def _map_value(key: str, value: Any, specials: Specials) -> Any:
    role = _named_role(key)
    role_id = specials.by_content.get(specials.roles.get(role) or "") if role else None

    def one(v: Any) -> Any:
        if not is_int(v):
            return v
        if v in specials.ids:
            return specials.ids[v]
        return role_id if role_id is not None else v

    return [one(v) for v in value] if isinstance(value, list) else one(value)


def map_token_ids(config: dict[str, Any], specials: Specials) -> None:
    """Point the release's special token ids at the same tokens in the copy's tokenizer (ids
    of a vocabulary we replaced mean nothing; media token ids are left to the shrink)."""
    pattern = re.compile(load_rules().keys["token_id_pattern"])
    for scope in (config, config.get("text_config")):
        if isinstance(scope, dict):
            for key, value in list(scope.items()):
                if isinstance(key, str) and pattern.search(key) and value is not None:
                    scope[key] = _map_value(key, value, specials)


def write_as_released(
    out_dir: Path, release: Release, plan: ShrinkPlan, tok: Any, specials: Specials | None
) -> None:
    """After save_pretrained: the copy's files in the release's own layout."""
    out_dir = Path(out_dir)
    released_keys = set(release.config())
    added = sorted(set(plan.config) - released_keys)
    if added:
        plan.notes.append(f"config keys the release lacks, set by the rules: {added}")
    # The shrunk release config, key for key (save_pretrained writes transformers' own layout:
    # every default, renamed keys, its class names).
    _write_json(out_dir / "config.json", plan.config)
    generation = out_dir / "generation_config.json"
    if "generation_config.json" in release.files:
        gen = read_json(release.file("generation_config.json"))
        if specials is not None:
            map_token_ids(gen, specials)
            _clamp_ids(gen, plan)
        _write_json(generation, gen)
    else:
        generation.unlink(missing_ok=True)
    for name in PROCESSOR_FILES:
        if name in release.files and not release.text_part:  # a text copy has no processor
            shutil.copy2(release.file(name), out_dir / name)
    if specials is not None:
        _tokenizer_as_released(out_dir, release, specials, plan)


def _clamp_ids(gen: dict[str, Any], plan: ShrinkPlan) -> None:
    pattern = re.compile(load_rules().keys["token_id_pattern"])
    vocab = plan.config.get("vocab_size") or (plan.config.get("text_config") or {}).get("vocab_size")
    for key, value in list(gen.items()):
        if not pattern.search(key) or not is_int(vocab):
            continue
        values = value if isinstance(value, list) else [value]
        fixed = [plan.token_map.get(v, v) if is_int(v) and v >= vocab else v for v in values]
        gen[key] = fixed if isinstance(value, list) else fixed[0]


def _tokenizer_as_released(out_dir: Path, release: Release, specials: Specials, plan: ShrinkPlan) -> None:
    """tokenizer_config.json: the fixture's tokens (their ids), the release's settings, roles
    and chat template (none where the release has none: a base model has no chat)."""
    path = out_dir / "tokenizer_config.json"
    ours = read_json(path)
    theirs = read_json(release.file("tokenizer_config.json"))
    merged = {
        k: v
        for k, v in theirs.items()
        if k
        not in (
            "added_tokens_decoder",
            "auto_map",
            "tokenizer_file",
            "vocab_file",
            "merges_file",
            "chat_template",
            "tokenizer_class",
            "additional_special_tokens",
            "extra_special_tokens",
            *ROLES,
        )
    }
    if ours.get("added_tokens_decoder"):
        merged["added_tokens_decoder"] = ours["added_tokens_decoder"]
    for role in ROLES:
        merged[role] = specials.roles.get(role) if specials.roles.get(role) in specials.by_content else None
    template = chat_template(release)
    (out_dir / "chat_template.jinja").unlink(missing_ok=True)
    if template:
        merged["chat_template"] = template
        (out_dir / "chat_template.jinja").write_text(template, encoding="utf-8")
    wanted_class = theirs.get("tokenizer_class")
    merged["tokenizer_class"] = wanted_class or ours.get("tokenizer_class")
    _write_json(path, merged)
    if "special_tokens_map.json" in release.files:
        smap = {r: c for r, c in specials.roles.items() if c in specials.by_content}
        _write_json(out_dir / "special_tokens_map.json", smap)
    if wanted_class and not _tokenizer_loads(out_dir, len(specials.vocab)):
        # The release's class needs its own vocabulary files (a slow SentencePiece class with
        # no tokenizer.model here): the generic fast class reads the same tokenizer.json.
        merged["tokenizer_class"] = "PreTrainedTokenizerFast"
        _write_json(path, merged)
        plan.notes.append(
            f"tokenizer_class: {wanted_class} does not read the fixture's "
            "tokenizer.json as it is; PreTrainedTokenizerFast"
        )


def _tokenizer_loads(out_dir: Path, size: int) -> bool:
    """The class reads our tokenizer.json as it is: no token added past the vocabulary (a
    class's own default tokens, Gemma's <mask>, would get ids the embedding lacks)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(out_dir)
        return len(tok) == size and bool(tok("Hello world")["input_ids"])
    except Exception:  # noqa: BLE001 - any failure means the class cannot read our files
        return False


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(copy.deepcopy(data), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
