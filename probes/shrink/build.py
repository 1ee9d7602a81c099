"""Building a shrunk copy (transformers side: transformers and torch are imported inside the
functions, so this runs in the transformers engine environment, the probe child side)."""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probes.releases import HF_TOKENIZER_FILES, Release
from probes.shrink import released
from probes.shrink.config import ShrinkPlan, shrink_config_dict
from probes.shrink.rules import SHRINK_VERSION, ShrinkError, evaluate, load_rules
from probes.shrink.rules import is_int as _is_int

# Files of a tokenizer that travel with the shrunk copy unchanged.
TOKENIZER_FILES = HF_TOKENIZER_FILES


@dataclass
class ShrinkResult:
    out_dir: Path
    model_type: str
    architecture: str | None
    params: int
    dtype: str
    notes: list[str]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "model_type": self.model_type,
            "architecture": self.architecture,
            "params": self.params,
            "dtype": self.dtype,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }


def _aliases(model_type: str | None) -> dict[str, str]:
    from transformers import CONFIG_MAPPING

    if not model_type or model_type not in CONFIG_MAPPING:
        return {}
    return dict(getattr(CONFIG_MAPPING[model_type], "attribute_map", {}) or {})


def _config_from_dict(d: dict[str, Any]) -> Any:
    from transformers import AutoConfig

    d = copy.deepcopy(d)
    model_type = d.pop("model_type", None)
    if not model_type:
        raise ShrinkError("config.json has no model_type")
    for key in ("transformers_version", "_name_or_path"):
        d.pop(key, None)
    try:
        return AutoConfig.for_model(model_type, **d)
    except ValueError as exc:
        if "Unrecognized model" in str(exc) or "does not recognize" in str(exc):
            raise ShrinkError(f"transformers does not know model_type {model_type!r}") from exc
        raise ShrinkError(f"config rejected after shrink: {first_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - config validators raise many types
        raise ShrinkError(f"config rejected after shrink: {first_line(exc)}") from exc


def first_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[:3])[:400]


def _dtype_name(d: dict[str, Any], default: str | None = None) -> str:
    value = d.get("dtype") or d.get("torch_dtype") or default or load_rules().targets["dtype"]
    return str(value).replace("torch.", "")


def model_class(config: Any) -> Any:
    """The class to build: the family's release class where AutoModelForCausalLM would build
    only part of it (Mllama's text model); else the class the config's `architectures` names
    where transformers has it for this config (a release's own: Qwen 3.5 ships
    Qwen3_5ForConditionalGeneration, whose weights sit under model.language_model, while
    AutoModelForCausalLM builds the text model alone, a layout no release has); else
    AutoModelForCausalLM."""
    import transformers

    name = load_rules().family(getattr(config, "model_type", None)).get("model_class")
    if name:
        return getattr(transformers, name)
    named = (getattr(config, "architectures", None) or [None])[0]
    cls = getattr(transformers, named, None) if isinstance(named, str) else None
    if cls is not None and getattr(cls, "config_class", None) is type(config):
        return cls
    return transformers.AutoModelForCausalLM


def _build(config: Any, **kwargs: Any) -> Any:
    cls = model_class(config)
    if cls.__name__ == "AutoModelForCausalLM":
        return cls.from_config(config, **kwargs)
    return cls._from_config(config, **kwargs)


def count_params_meta(config: Any) -> int:
    """Parameter count of the model this config builds, without allocating it."""
    import torch

    with torch.device("meta"):
        model = _build(config)
    return sum(p.numel() for p in model.parameters())


def plan_shrink(
    source: dict[str, Any], *, keep_vocab: bool, vocab_size: int | None = None, as_released: bool = False
) -> tuple[ShrinkPlan, Any, int]:
    """Shrink, build the config, count parameters on the meta device; escalate if too big."""
    max_params = int(load_rules().targets["max_params"])
    attempts: list[dict[str, Any]] = [
        dict(cap_positions=False, scale=1),
        dict(cap_positions=True, scale=1),
        dict(cap_positions=True, scale=4, compact=True),
    ]
    if as_released:
        # Last: a release's q/kv ratio capped (Falcon 180B's 232:8), said in the notes.
        attempts.append(dict(cap_positions=True, scale=4, compact=True, keep_ratio=False))
    params = 0
    for attempt in attempts:
        plan = shrink_config_dict(
            source,
            aliases=_aliases,
            keep_vocab=keep_vocab,
            vocab_size=vocab_size,
            as_released=as_released,
            **attempt,
        )
        if attempt.get("keep_ratio") is False:
            plan.notes.append("q/kv head ratio capped at 4: the released ratio is over the size limit")
        config = _config_from_dict(plan.config)
        try:
            params = count_params_meta(config)
        except ShrinkError:
            raise
        except Exception as exc:  # noqa: BLE001 - model constructors raise many types
            raise ShrinkError(f"model build failed after shrink: {first_line(exc)}") from exc
        if params <= max_params:
            return plan, config, params
    raise ShrinkError(
        f"shrink failed: {params} params (limit {max_params}); a size field the rules do not know"
    )


def shrink_config(
    source: dict[str, Any],
    out_dir: Path,
    *,
    tokenizer_dir: Path | None = None,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
    release: Release | None = None,
) -> ShrinkResult:
    """Build the shrunk copy of `source` (a config.json dict) in out_dir (an HF directory).

    `release`: `source` is that catalogued release's config; the copy keeps its key layout,
    architectures, dtype, generation config and tokenizer kind (see probes.shrink.released)."""
    import torch

    started = time.monotonic()
    source = copy.deepcopy(source)
    if release is not None:
        tokenizer_dir = release.path if release.has_vocabulary() else None
    tok_files = [p for p in (tokenizer_dir.iterdir() if tokenizer_dir else []) if p.name in TOKENIZER_FILES]
    keep_vocab = bool(tok_files)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specials = None
    dropped = released.drop_weights_only(source) if release is not None else []
    plan = None
    if keep_vocab:
        tok = None
        try:
            plan, config, params = plan_shrink(source, keep_vocab=True, as_released=release is not None)
        except ShrinkError as exc:
            if release is None or "params" not in str(exc):
                raise
            # The release's vocabulary alone is over the size limit (GPT-J's 50k rows x a
            # 256-wide head): the fixtures' tokenizer in its kind, with its special tokens.
            keep_vocab, tok_files = False, []
            dropped.append(
                f"tokenizer: the release's vocabulary is over the size limit "
                f"({first_line(exc)}); the fixtures' tokenizer in its kind"
            )
    if plan is None:
        if release is not None:
            tok, specials = released.fixture_tokenizer(
                out_dir, release, source, load_rules().targets["vocab_size"]
            )
            released.map_token_ids(source, specials)
        else:
            tok = _fixture_tokenizer(out_dir, source.get("model_type"))
        # The embedding rows equal the tokenizer's size, as in a release: converters such as
        # llama.cpp's size the GGUF vocabulary from the tokenizer and reject a mismatch.
        plan, config, params = plan_shrink(
            source, keep_vocab=False, vocab_size=len(tok), as_released=release is not None
        )
    plan.notes[:0] = dropped
    # A release that names no dtype is read as float32 by every engine.
    dtype_name = _dtype_name(plan.config, "float32" if release is not None else None)
    dtype = getattr(torch, dtype_name, None)
    if not isinstance(dtype, torch.dtype):
        raise ShrinkError(f"unknown dtype {dtype_name!r}")
    release_class = load_rules().family(source.get("model_type")).get("model_class")
    if release is not None and source.get("architectures"):
        config.architectures = list(source["architectures"])  # the release's own class names
    elif release_class:
        config.architectures = [release_class]
    elif not getattr(config, "architectures", None):
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(source.get("model_type", ""))
        config.architectures = [arch] if arch else None
    torch.manual_seed(seed)
    try:
        model = _build(config, dtype=dtype)
    except Exception as exc:  # noqa: BLE001
        raise ShrinkError(f"model build failed after shrink: {first_line(exc)}") from exc
    _randomize_zero_inits(model, seed)
    model.save_pretrained(out_dir, safe_serialization=True)
    plan.notes.extend(_add_unused_released_weights(model, config, out_dir, seed, dtype))
    _rename_saved_keys(out_dir, config)
    _strip_nested_bookkeeping(out_dir / "config.json")
    if release is None:
        _config_in_release_words(out_dir / "config.json", source.get("model_type"))
    released_names = load_rules().family(source.get("model_type")).get("released_architectures")
    if release is None and released_names:
        # save_pretrained writes transformers' class name; engines pick their implementation
        # by the name releases carry (vLLM registers PhiMoEForCausalLM, not PhimoeForCausalLM)
        config.architectures = list(released_names)
        saved = json.loads((out_dir / "config.json").read_text())
        saved["architectures"] = list(released_names)
        (out_dir / "config.json").write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    vocab = _vocab_size(config)
    if keep_vocab:
        for p in tok_files:
            shutil.copy2(p, out_dir / p.name)
    elif release is None:
        _align_tokenizer(out_dir, vocab, tok)
    if release is not None:
        released.write_as_released(out_dir, release, plan, tok, specials)
        if release.text_part and getattr(config, "architectures", None):
            # the release names its multimodal class; its text model is transformers' causal LM
            saved = json.loads((out_dir / "config.json").read_text())
            saved.setdefault("architectures", list(config.architectures))
            (out_dir / "config.json").write_text(json.dumps(saved, indent=2) + "\n")
    if (
        released.wants_tokenizer_model(release, source.get("model_type"))
        and not (out_dir / "tokenizer.model").exists()
    ):
        from probes.fixtures import CORPUS
        from probes.workload import PROMPTS

        plan.notes.append(released.write_tokenizer_model(out_dir, (*CORPUS, *PROMPTS)))
    info = {
        "tier": "arch",
        "shrink_version": SHRINK_VERSION,
        "params": params,
        # "fixture": a tokenizer we trained (no release knows its pre-tokenizer hash)
        "tokenizer": "release" if keep_vocab else "fixture",
        "source_model_type": source.get("model_type"),
        "notes": plan.notes,
        "token_map": {str(k): v for k, v in plan.token_map.items()},
        **(meta or {}),
    }
    family = load_rules().family(source.get("model_type"))
    info["lineage"] = release.lineage() if release is not None else {"source": "synthetic"}
    if family.get("unlike_release"):
        # What no copy of ours can share with the releases (their quantized weights): its
        # reds are no verdict (probes.record.unlike_release_verdict).
        info["lineage"] = {**info["lineage"], "unlike_release": family["unlike_release"]}
    if not keep_vocab and family.get("release_tokenizer"):
        # A tokenizer of another kind than the copy's, which a copy cannot carry (remote code):
        # what reads it (llama.cpp's converter) can give no verdict on the copy.
        info["release_tokenizer"] = family["release_tokenizer"]
    engine_options = family.get("engine_options")
    if engine_options:
        # What engines must be told about this copy (not the release): e.g. no MTP weights.
        info["engine_options"] = engine_options
    (out_dir / "dayone.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    archs = getattr(config, "architectures", None) or [None]
    return ShrinkResult(
        out_dir=out_dir,
        model_type=str(source.get("model_type")),
        architecture=archs[0],
        params=params,
        dtype=dtype_name,
        notes=plan.notes,
        seconds=time.monotonic() - started,
    )


def _add_unused_released_weights(model: Any, config: Any, out_dir: Path, seed: int, dtype: Any) -> list[str]:
    """Tensors the family's releases ship that the reference transformers no longer builds
    (it lists them in `_keys_to_ignore_on_load_unexpected`: Gemma 4's KV-shared layers carry
    k/v projections that recent transformers skips, while the launch release reads them).
    A copy without them is not what releases ship: an older engine fills them at random. They
    come from the same model built with the rule `unused_weights_from` (config overrides under
    which the reference builds them), the same seed."""
    import re

    import torch
    from safetensors.torch import load_file, save_file

    overrides = load_rules().family(getattr(config, "model_type", None)).get("unused_weights_from")
    if not overrides:
        return []
    patterns = [
        (f"{prefix}." if prefix else "", pattern)
        for prefix, module in model.named_modules()
        for pattern in getattr(module, "_keys_to_ignore_on_load_unexpected", None) or []
    ]
    if not patterns:
        return []
    sibling_config = copy.deepcopy(config)
    for dotted, value in overrides.items():
        target = sibling_config
        *parents, leaf = dotted.split(".")
        for name in parents:
            target = getattr(target, name)
        setattr(target, leaf, value)
    torch.manual_seed(seed)
    sibling = _build(sibling_config, dtype=dtype)
    _randomize_zero_inits(sibling, seed)
    files = sorted(out_dir.glob("*.safetensors"))
    if len(files) != 1:
        raise ShrinkError(
            f"expected one safetensors file to add the release's unused weights, found {len(files)}"
        )
    saved = load_file(str(files[0]))
    extra = {
        name: tensor.detach().contiguous()
        for name, tensor in sibling.state_dict().items()
        if name not in saved
        and any(
            name.startswith(prefix) and re.search(pattern, name[len(prefix) :])
            for prefix, pattern in patterns
        )
    }
    if not extra:
        return []
    save_file({**saved, **extra}, str(files[0]), metadata={"format": "pt"})
    return [
        f"{len(extra)} tensors the releases ship and recent transformers ignores, added (e.g. {min(extra)})"
    ]


def _rename_saved_keys(out_dir: Path, config: Any) -> None:
    """Weight names as the family's releases carry them (rule `saved_key_renames`), where
    transformers' save format differs: Gemma 3 releases keep the vision tower under
    vision_tower.vision_model., which SGLang's loader expects and transformers reads back."""
    import re

    from safetensors.torch import load_file, save_file

    renames = load_rules().family(getattr(config, "model_type", None)).get("saved_key_renames")
    if not renames:
        return
    for path in sorted(out_dir.glob("*.safetensors")):
        tensors = load_file(str(path))
        renamed = {}
        for name, tensor in tensors.items():
            for pattern, replacement in renames:
                name = re.sub(pattern, replacement, name)
            renamed[name] = tensor
        save_file(renamed, str(path), metadata={"format": "pt"})


def _config_in_release_words(config_path: Path, model_type: str | None) -> None:
    """A saved default config in the words the family's releases use where transformers 5.23
    writes its own (Granite 4.0-H's layer_types mamba / attention, Nemotron-H's
    hybrid_override_pattern, DeepSeek-V4's compress_ratios) or no longer writes a key they state
    (GPT-NeoX's rotary_pct, DeepSeek-V4's num_hash_layers): converters and other engines read
    the releases' words only, and transformers reads both."""
    fam = load_rules().family(model_type)
    values, pattern = fam.get("saved_config_values"), fam.get("saved_config_pattern")
    keys, renames = fam.get("saved_config_keys"), fam.get("saved_config_renames") or {}
    dropped, overrides = fam.get("saved_config_drop") or (), fam.get("saved_config_overrides")
    per_layer = fam.get("saved_config_per_layer")
    if not (values or pattern or keys or renames or dropped or overrides or per_layer):
        return
    data = json.loads(config_path.read_text())
    for key, expr in (keys or {}).items():
        data.setdefault(key, evaluate(expr, data, data))
    # Values transformers writes in its own convention (MiMo's sliding_window counts the query)
    data.update({key: evaluate(expr, data, data) for key, expr in (overrides or {}).items()})
    for scope in (data, data.get("text_config")):
        if not isinstance(scope, dict):
            continue
        for key, words in (values or {}).items():
            if isinstance(scope.get(key), list):
                scope[key] = [words.get(v, v) if isinstance(v, str) else v for v in scope[key]]
        if pattern and isinstance(scope.get(pattern["from"]), list):
            kinds = scope.pop(pattern["from"])
            unknown = sorted({k for k in kinds if k not in pattern["letters"]})
            if unknown:
                raise ShrinkError(f"{pattern['from']}: no pattern letter for {unknown}")
            scope[pattern["to"]] = "".join(pattern["letters"][k] for k in kinds)
        for key, release_key in renames.items():
            if key in scope:
                scope[release_key] = scope.pop(key)
        for key in dropped:  # transformers' own form of what the releases state otherwise
            scope.pop(key, None)
        if per_layer and isinstance(scope.get("per_layer_config"), dict):
            scope.update(_per_layer_in_release_words(scope, per_layer))
    kinds, dense = data.get("mlp_layer_types"), data.get("first_k_dense_replace")
    if (
        isinstance(kinds, list)
        and _is_int(dense)
        and dense != next((i for i, kind in enumerate(kinds) if kind != "dense"), len(kinds))
    ):
        raise ShrinkError(f"first_k_dense_replace {dense} disagrees with mlp_layer_types {kinds}")
    config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _per_layer_in_release_words(scope: dict[str, Any], words: dict[str, str]) -> dict[str, Any]:
    """Take transformers' per_layer_config (overrides keyed by layer index, Gemma 4 since 5.15)
    out of `scope` and give its values the releases' scalar keys (`global_head_dim`). They name
    one value for every full-attention layer, so the overrides must say exactly that."""
    overrides = scope.pop("per_layer_config")
    layer_types = scope.get("layer_types") or []
    full = {str(i) for i, kind in enumerate(layer_types) if kind == "full_attention"}
    if {str(int(i)) for i in overrides} != full:
        raise ShrinkError(
            f"per_layer_config overrides layers {sorted(overrides)}, "
            f"not the full-attention layers {sorted(full)}"
        )
    out: dict[str, Any] = {}
    for attr in sorted({a for o in overrides.values() for a in o}):
        if attr not in words:
            raise ShrinkError(f"per_layer_config sets {attr!r}, which the releases have no key for")
        found = {json.dumps(o.get(attr)) for o in overrides.values()}
        if len(found) != 1:
            raise ShrinkError(
                f"per_layer_config: {attr} differs across layers; the releases state one {words[attr]}"
            )
        out[words[attr]] = json.loads(found.pop())
    return out


def _randomize_zero_inits(model: Any, seed: int) -> None:
    """Some layers start at zero (gates, biases, norms stored as offsets): a zero gate makes
    every engine agree trivially. Give zero-initialised tensors small random values."""
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _name, p in model.named_parameters():
            if p.numel() and p.dim() >= 1 and torch.count_nonzero(p) == 0 and p.is_floating_point():
                p.copy_((torch.randn(p.shape, generator=gen) * 0.02).to(p.dtype))


def _vocab_size(config: Any) -> int:
    for cfg in (config, getattr(config, "text_config", None)):
        value = getattr(cfg, "vocab_size", None) if cfg is not None else None
        if _is_int(value):
            return value
    return load_rules().targets["vocab_size"]


# What transformers writes into a nested sub-config (DBRX's attn_config, MPT's) when it saves one
# whole: bookkeeping no release carries. An older transformers inside an engine refuses the
# unknown keys (vLLM 0.32: "Found unknown kwargs={'_name_or_path': ''...}"), a red of ours.
NESTED_BOOKKEEPING = {
    "_name_or_path": "",
    "output_attentions": False,
    "output_hidden_states": False,
    "return_dict": True,
    "chunk_size_feed_forward": 0,
    "problem_type": None,
    "architectures": None,
    "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
    "label2id": {"LABEL_0": 0, "LABEL_1": 1},
}


def _strip_nested_bookkeeping(config_path: Path) -> None:
    config = json.loads(config_path.read_text())
    changed = False
    for value in config.values():
        if isinstance(value, dict) and "_name_or_path" in value:  # a sub-config saved whole
            # A part's config that is no model of its own (DBRX's attn_config, ffn_config:
            # model_type "") carries no dtype or encoder flag in a release (SGLang 0.5.23:
            # "Found unknown kwargs={'dtype': 'bfloat16', 'is_encoder_decoder': False}").
            part = value.get("model_type") == ""
            extra = {"is_encoder_decoder": False} if part else {}
            for key, default in {**NESTED_BOOKKEEPING, **extra}.items():
                if key in value and value[key] == default:
                    del value[key]
                    changed = True
            for key in ("dtype", "torch_dtype") if part else ():
                if value.pop(key, None) is not None:
                    changed = True
            width = config.get("hidden_size", config.get("d_model"))
            if part and "hidden_size" in value and value["hidden_size"] == width:
                del value["hidden_size"]  # the model's width, copied in (DBRX's ffn_config)
                changed = True
    if changed:
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _fixture_tokenizer(out_dir: Path, model_type: str | None) -> Any:
    """The fixtures' BPE for a copy whose source has no tokenizer, in the style the family's
    releases ship (rule `tokenizer_style`; byte-level unless said)."""
    from probes.fixtures import build_tokenizer

    # The family's releases' special tokens (GLM's [gMASK], <|user|>): converters look them up.
    family = load_rules().family(model_type)
    # What the releases' tokenizer_config.json states besides the tokens (DeepSeek's
    # add_bos_token and class), which converters read from the file.
    return build_tokenizer(
        out_dir,
        vocab_size=load_rules().targets["vocab_size"],
        extra_special=tuple(family.get("special_tokens", ())),
        config_keys=family.get("tokenizer_config_keys"),
        **released.tokenizer_options(None, model_type),
    )


def _align_tokenizer(out_dir: Path, vocab_size: int, tok: Any) -> None:
    """Point the config's bos/eos/pad ids at the fixture tokenizer's special tokens (ids of a
    vocabulary we replaced mean nothing; image/audio token ids stay as shrunk)."""
    if len(tok) > vocab_size:
        # A copy whose tokenizer does not fit would fail in every engine for a reason of ours
        # (BLT's 260-id byte vocabulary): refuse, so it is reported as ours, not the engine's.
        for name in TOKENIZER_FILES:
            (out_dir / name).unlink(missing_ok=True)
        raise ShrinkError(
            f"no tokenizer fits: vocab {vocab_size} is smaller than the "
            f"fixture tokenizer's {len(tok)} ids (byte-level BPE)"
        )
    ids = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    for name in ("config.json", "generation_config.json"):
        path = out_dir / name
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        for scope in (data, data.get("text_config")):
            if isinstance(scope, dict):
                scope.update({k: v for k, v in ids.items() if name == "config.json" or k in scope})
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def shrink_path(
    config_or_dir: Path,
    out_dir: Path,
    *,
    model_type: str | None = None,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
) -> ShrinkResult:
    """Shrink a released config.json (or a directory with one, and maybe tokenizer files)."""
    src = Path(config_or_dir)
    config_path = src / "config.json" if src.is_dir() else src
    try:
        source = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ShrinkError(f"cannot read {config_path}: {exc}") from exc
    if not isinstance(source, dict):
        raise ShrinkError(f"{config_path} is not a JSON object")
    if model_type:
        source["model_type"] = model_type
    # meta (id, revision, release_date, family of the release) goes to dayone.json, so the
    # shrunk copy's results are filed under the release it stands for.
    return shrink_config(
        source,
        out_dir,
        tokenizer_dir=config_path.parent,
        seed=seed,
        meta={"source": str(config_path), **(meta or {})},
    )


def check_generates(model_dir: Path, max_new_tokens: int = 4) -> list[int]:
    """Load the shrunk copy back from disk and generate greedily: the shrink's own smoke test."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    vocab = _vocab_size(model.config)
    ids = torch.tensor([[min(5 + i * 7, vocab - 1) for i in range(6)]])
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,
            pad_token_id=0,
        )
    return out[0, ids.shape[1] :].tolist()
