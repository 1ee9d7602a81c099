"""The pure shrink of a config dict: sizes shrink, switches stay. Standard library only."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from probes.shrink.rules import Rules, ShrinkError, evaluate, load_rules
from probes.shrink.rules import is_int as _is_int

# Choosing layers: one of each kind, in the released order


def choose_layers(
    signatures: list[Any], *, min_layers: int, max_prefix: int, min_prefix: int = 0
) -> list[int]:
    """Indices of the layers to keep.

    The shortest prefix that holds every distinct layer signature (so patterns such as 3 linear :
    1 full, or 5 sliding : 1 full, keep their order and period); if that prefix is longer than
    `max_prefix`, the first layer of each signature instead."""
    n = len(signatures)
    if n == 0:
        return []
    wanted = set(map(_hashable, signatures))
    seen: set[Any] = set()
    prefix = n
    for i, sig in enumerate(signatures):
        seen.add(_hashable(sig))
        if seen == wanted:
            prefix = i + 1
            break
    prefix = min(n, max(prefix, min_layers, min_prefix))
    if prefix <= max_prefix:
        return list(range(prefix))
    firsts: dict[Any, int] = {}
    for i, sig in enumerate(signatures):
        firsts.setdefault(_hashable(sig), i)
    chosen = sorted(firsts.values())
    # Families validate the last layer (Gemma: full attention last): end on the released last
    # kind, keeping the released order.
    last = _hashable(signatures[-1])
    if _hashable(signatures[chosen[-1]]) != last:
        chosen.append(next(i for i in range(chosen[-1] + 1, n) if _hashable(signatures[i]) == last))
    for i in range(n):
        if len(chosen) >= min(min_layers, n):
            break
        if i not in chosen:
            chosen = sorted([*chosen, i])
    return chosen


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


# The pure shrink of a config dict


@dataclass
class ShrinkPlan:
    """What the shrink decided, for the record and for tests."""

    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    token_map: dict[int, int] = field(default_factory=dict)


AliasFn = Callable[[str | None], dict[str, str]]


def shrink_config_dict(
    config: dict[str, Any],
    *,
    rules: Rules | None = None,
    aliases: AliasFn | None = None,
    keep_vocab: bool = False,
    cap_positions: bool = False,
    scale: int = 1,
    compact: bool = False,
    vocab_size: int | None = None,
    as_released: bool = False,
    keep_ratio: bool | None = None,
) -> ShrinkPlan:
    """A shrunk copy of a config.json dict (sub-configs included). Pure: no transformers here.

    `aliases(model_type)` gives the config class's attribute_map (canonical -> stored name), so
    `n_embd` is treated as `hidden_size`. `keep_vocab` keeps the vocabulary (a real tokenizer is
    kept beside it). `cap_positions` also caps learned position tables. `scale` divides the
    targets further and `compact` keeps only the first layer of each kind and shrinks
    secondary sizes (per-layer input dims): both for when a first shrink is still too big, as
    with a release's real 262k-token vocabulary. `vocab_size`: the vocabulary to shrink to (the
    size of the tokenizer that will go with the copy; default from the rules). `as_released`:
    the config is a release's, so keep what it states exactly: its q/kv head ratio (uncapped)
    and its dtype, or none when it names none (no bf16 default)."""
    rules = rules or load_rules()
    if vocab_size is not None:
        rules = Rules(
            targets={**rules.targets, "vocab_size": vocab_size}, keys=rules.keys, families=rules.families
        )
    plan = ShrinkPlan(config=copy.deepcopy(config))
    for key in ("id2label", "label2id"):  # classification heads: never per-layer, never sizes
        plan.config.pop(key, None)
    state = _State(
        rules=rules,
        aliases=aliases or (lambda _t: {}),
        keep_vocab=keep_vocab,
        cap_positions=cap_positions,
        scale=max(1, scale),
        plan=plan,
        root=plan.config,
        compact=compact,
        keep_ratio=as_released if keep_ratio is None else keep_ratio,
    )
    _shrink_one(plan.config, state, path="")
    if state.keep_vocab is False:
        _remap_token_ids(plan.config, state)
    if not as_released and not plan.config.get("dtype") and not plan.config.get("torch_dtype"):
        # No released dtype (a default config): most releases ship bf16, and engines take other
        # paths for it (vLLM's CPU gated-delta-net needs bf16).
        dtype = rules.family(plan.config.get("model_type")).get("dtype", rules.targets["dtype"])
        plan.config["dtype"] = dtype
        plan.notes.append(f"dtype: none given, using {dtype}")
    return plan


@dataclass
class _State:
    rules: Rules
    aliases: AliasFn
    keep_vocab: bool
    cap_positions: bool
    scale: int
    plan: ShrinkPlan
    root: dict[str, Any]
    compact: bool = False
    vocab: int | None = None
    keep_ratio: bool = False  # a release's q/kv ratio is a kernel choice: never capped


def _shrink_one(d: dict[str, Any], st: _State, path: str) -> None:
    rules, keys, t = st.rules, st.rules.keys, st.rules.targets
    model_type = d.get("model_type") if isinstance(d.get("model_type"), str) else None
    fam = rules.family(model_type)
    if fam.get("unshrinkable"):
        raise ShrinkError(f"{model_type}: {fam['unshrinkable']}")
    for key, value in fam.get("before", {}).items():
        _set_path(d, key, evaluate(value, d, st.root))
    for key in fam.get("drop", []):
        d.pop(key, None)
    keep = set(fam.get("keep", []))

    # Canonical names: rename stored aliases (n_embd) to what the rules know (hidden_size).
    known = _known_keys(keys)
    renamed: dict[str, str] = {}
    # A family's own aliases: names its config class reads but does not map (BLOOM's releases
    # state the width as n_embed).
    aliases = {**(st.aliases(model_type) or {}), **fam.get("aliases", {})}
    for canonical, stored in aliases.items():
        if canonical in known and stored in d and canonical not in d and stored not in known:
            d[canonical] = d.pop(stored)
            renamed[canonical] = stored

    # Sub-configs first (towers), each by its own family's rules.
    text = d.get("text_config") if isinstance(d.get("text_config"), dict) else None
    old_text_width = text.get("hidden_size") if text else None
    for key in keys["sub_configs"]:
        if isinstance(d.get(key), dict) and key not in keep:
            _shrink_one(d[key], st, path=f"{path}{key}.")
    if text and _is_int(old_text_width) and text.get("hidden_size") != old_text_width:
        # Projections from the other towers into the text model (adapter_out_dim,
        # out_hidden_size, projector_output_dim) follow the text model's new width.
        out_re = re.compile(r"(out|text|projector|proj)")
        for key in keys["sub_configs"]:
            tower = d.get(key)
            if key == "text_config" or not isinstance(tower, dict):
                continue
            for name, value in list(tower.items()):
                if value == old_text_width and _is_int(value) and out_re.search(name):
                    tower[name] = text["hidden_size"]

    _shrink_layers(d, st, path, fam, keep)
    _shrink_heads_and_width(d, st, path, keep)
    _shrink_intermediate(d, st, keep)
    _shrink_experts(d, st, path, keep)
    _shrink_windows(d, st, path, fam, keep)
    if not st.keep_vocab:
        vocab_re = re.compile(keys["vocab_pattern"])
        for key, value in list(d.items()):
            if key in keep or not vocab_re.search(key) or not _is_int(value):
                continue
            if value > t["vocab_size"]:
                d[key] = t["vocab_size"]
                st.vocab = t["vocab_size"]
    multiple = fam.get("vocab_multiple")
    if _is_int(multiple) and _is_int(d.get("vocab_size")) and "vocab_size" not in keep:
        # Mamba-family releases pad the vocabulary (llama.cpp's converter pads the GGUF's to
        # the multiple and then expects as many embedding rows)
        d["vocab_size"] = -(-d["vocab_size"] // multiple) * multiple
    if st.compact:
        for key in keys.get("compact_sizes", []):
            if _is_int(d.get(key)) and d[key] > 16 and key not in keep:
                d[key] = 16
    if st.cap_positions:
        for key in keys["positions"]:
            if _is_int(d.get(key)) and d[key] > t["max_positions"] and key not in keep:
                d[key] = t["max_positions"]

    for key, value in fam.get("set", {}).items():
        _set_path(d, key, evaluate(value, d, st.root))
    for note in fam.get("notes", []):
        st.plan.notes.append(f"{path}{model_type}: {note}")

    for canonical, stored in renamed.items():
        d[stored] = d.pop(canonical)


def _set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    """`attn_config.rope_theta` sets a field of a nested config."""
    *parents, last = dotted.split(".")
    for part in parents:
        d = d.setdefault(part, {})
    d[last] = value


def _known_keys(keys: dict[str, Any]) -> set[str]:
    known = {"hidden_size", "vocab_size", "intermediate_size", "layer_types"}
    for name in (
        "layer_count",
        "head_dim",
        "experts",
        "top_k",
        "expert_groups",
        "positions",
        "dense_prefix",
        "kv_shared",
    ):
        known.update(keys[name])
    for pair in keys["head_pairs"]:
        known.update(k for k in pair if k)
    return known


def _layer_count_key(d: dict[str, Any], keys: dict[str, Any]) -> str | None:
    for key in keys["layer_count"]:
        if _is_int(d.get(key)):
            return key
    return None


def _shrink_layers(d: dict[str, Any], st: _State, path: str, fam: dict[str, Any], keep: set[str]) -> None:
    keys, t = st.rules.keys, st.rules.targets
    count_key = _layer_count_key(d, keys)
    kinds_key = fam.get("layer_kinds")
    per_layer_strings = set(fam.get("per_layer_strings", []))
    n = d.get(count_key) if count_key else None
    if n is None:
        # Families whose layer count is the length of a list (Nemotron-H's layers_block_type).
        for key in ([kinds_key] if kinds_key else []) + ["layer_types", "layers_block_type"]:
            if isinstance(d.get(key), (list, str)) and d[key]:
                n = len(d[key])
                break
    if not _is_int(n) or n <= 1:
        return
    # Everything indexed by layer: lists and pattern strings of length n, dicts keyed "05".
    skip_lists = set(fam.get("not_per_layer", [])) | {"architectures"}
    index_lists = [
        k
        for k in keys["layer_index_lists"] + fam.get("layer_index_lists", [])
        if isinstance(d.get(k), list) and all(_is_int(x) for x in d[k])
    ]
    skip_lists |= set(index_lists)
    per_layer: list[str] = [
        k
        for k, v in d.items()
        if k not in skip_lists
        and (
            (isinstance(v, list) and len(v) == n)
            or (isinstance(v, str) and k in per_layer_strings and len(v) == n)
        )
    ]
    # Per-layer overrides keyed by layer index (Gemma 4's per_layer_config: {"05": {...}}).
    per_layer_dicts = [
        k
        for k, v in d.items()
        if "layer" in k and isinstance(v, dict) and v and all(str(x).isdigit() for x in v)
    ]
    # A dense prefix (DeepSeek's first_k_dense_replace): keep one dense layer, then MoE.
    dense_keys = [k for k in keys["dense_prefix"] if _is_int(d.get(k)) and d[k] > 0]
    for k in dense_keys:
        d[k] = 1
    min_prefix = 0
    period_re, offset_re = re.compile(keys["period_pattern"]), re.compile(keys["offset_pattern"])
    for key, value in d.items():
        if _is_int(value) and value > 0 and key not in keep:
            if period_re.search(key) and value <= n:
                min_prefix = max(min_prefix, value)
            elif offset_re.search(key) and value < n:
                min_prefix = max(min_prefix, value + 1)
    min_prefix = max(min_prefix, fam.get("min_layers", 0))

    def signature(i: int) -> tuple[Any, ...]:
        return (
            tuple(d[k][i] for k in per_layer)
            + tuple(f"{i:02d}" in d[k] or str(i) in d[k] or i in d[k] for k in per_layer_dicts)
            + tuple(i in d[k] for k in index_lists)
            + tuple(i < d[k] for k in dense_keys)
        )

    shared_key = next((k for k in keys["kv_shared"] if _is_int(d.get(k)) and d[k] > 0), None)
    max_prefix = 0 if st.compact else fam.get("max_prefix_layers", t["max_prefix_layers"])
    if shared_key:
        # KV sharing: the last k layers reuse earlier layers' caches. Keep producers of each
        # kind, then one consumer of each kind.
        first_shared = n - d[shared_key]
        producers = choose_layers(
            [signature(i) for i in range(first_shared)],
            min_layers=t["num_layers"],
            max_prefix=max_prefix,
            min_prefix=min_prefix,
        )
        consumers: dict[Any, int] = {}
        for i in range(first_shared, n):
            consumers.setdefault(_hashable(signature(i)), i)
        chosen = producers + sorted(consumers.values())
        d[shared_key] = len(consumers)
    else:
        chosen = choose_layers(
            [signature(i) for i in range(n)],
            min_layers=t["num_layers"],
            max_prefix=max_prefix,
            min_prefix=min_prefix,
        )
    chosen = list(fam.get("layers", chosen)) if "layers" in fam else chosen
    new_index = {old: new for new, old in enumerate(chosen)}
    for k in per_layer:
        v = d[k]
        picked = [v[i] for i in chosen]
        d[k] = "".join(picked) if isinstance(v, str) else picked
    for k in per_layer_dicts:
        width = max((len(str(x)) for x in d[k]), default=2)
        d[k] = {str(new_index[int(x)]).zfill(width): val for x, val in d[k].items() if int(x) in new_index}
    for k in index_lists:
        d[k] = [new_index[i] for i in d[k] if i in new_index]
    # A dense prefix stated twice (GLM-5's first_k_dense_replace beside its mlp_layer_types):
    # the count is the kept list's, so engines reading either see the same layers dense.
    kinds = d.get("mlp_layer_types")
    if isinstance(kinds, list) and kinds and "dense" in kinds:
        leading = next((i for i, kind in enumerate(kinds) if kind != "dense"), len(kinds))
        for k in dense_keys:
            d[k] = leading
    for key in keys["layer_count"]:
        if _is_int(d.get(key)) and d[key] == n:
            d[key] = len(chosen)
    # Encoder-decoder: the other stack is shrunk to the same few layers.
    for key in keys["layer_count"]:
        if _is_int(d.get(key)) and d[key] > len(chosen) and key not in keep:
            d[key] = max(1, min(d[key], t["num_layers"]))
    if chosen != list(range(n)):
        st.plan.notes.append(f"{path}layers: kept {chosen} of {n}")


def _shrink_heads_and_width(d: dict[str, Any], st: _State, path: str, keep: set[str]) -> None:
    keys, t = st.rules.keys, st.rules.targets
    hidden = d.get("hidden_size")
    head_dim_key = next((k for k in keys["head_dim"] if _is_int(d.get(k)) and d[k] > 0), None)
    primary_q: tuple[int, int] | None = None  # (old, new) heads of the main attention
    for q_key, kv_key in keys["head_pairs"]:
        q = d.get(q_key)
        if not _is_int(q) or q <= 0 or q_key in keep:
            continue
        kv = d.get(kv_key) if kv_key else None
        if _is_int(kv) and 0 < kv < q and q % kv == 0:
            new_kv = 1 if kv < q else 2
            new_q = new_kv * (q // kv if st.keep_ratio else min(q // kv, 4))
        elif _is_int(kv) and kv == 1:
            new_q, new_kv = min(q, 2), 1
        else:
            new_q = min(q, 2)
            new_kv = new_q if _is_int(kv) and kv > 0 else None
        d[q_key] = new_q
        if kv_key and new_kv is not None and _is_int(d.get(kv_key)):
            d[kv_key] = new_kv
        if primary_q is None:
            primary_q = (q, new_q)
    if not _is_int(hidden) or hidden <= 0 or "hidden_size" in keep:
        return
    # Keep the released relation of width and heads: where hidden == heads * head_dim (derived
    # or stated), shrink both together so head_dim stays; where it differs (Gemma 4: 2304 vs
    # 8 x 256), keep it different, so an engine assuming equality is caught.
    # Latent attention (MLA: kv_lora_rank) sizes its heads apart from the width: DeepSeek-V3's
    # 7168 / 128 heads = 56 is no head size, and tying them gave a width of 112, which no
    # release has and vLLM's CPU MoE kernels reject (they need multiples of 32).
    latent = any(_is_int(d.get(k)) for k in keys.get("latent_attention", []))
    tied = (
        primary_q is not None
        and not latent
        and (
            (head_dim_key is None and hidden % primary_q[0] == 0)
            or (head_dim_key is not None and hidden == primary_q[0] * d[head_dim_key])
        )
    )
    if tied and primary_q is not None:
        head_dim = d[head_dim_key] if head_dim_key else hidden // primary_q[0]
        new_q = primary_q[1]
        while (
            new_q > 1
            and new_q * head_dim > t["max_hidden_size"]
            and not (st.keep_ratio and new_q == primary_q[1])
        ):
            new_q //= 2
        new_hidden = new_q * head_dim
        if new_q != primary_q[1]:
            for q_key, kv_key in keys["head_pairs"]:
                if d.get(q_key) == primary_q[1]:
                    d[q_key] = new_q
                    if kv_key and _is_int(d.get(kv_key)) and d[kv_key] > new_q:
                        d[kv_key] = new_q
                    break
    else:
        new_hidden = max(t["min_hidden_size"], t["hidden_size"] // st.scale)
    new_hidden = min(hidden, new_hidden)
    d["hidden_size"] = new_hidden
    # Other widths that were the model width (lru_width, embedding_size, ...) follow it.
    width_re = re.compile(r"(size|dim|width)$")
    skip = set(keys["head_dim"]) | {"hidden_size"}
    inter_re = re.compile(keys["intermediate_pattern"])
    for key, value in list(d.items()):
        if (
            key not in skip
            and key not in keep
            and _is_int(value)
            and value == hidden
            and width_re.search(key)
            and not inter_re.search(key)
            and "vocab" not in key
            and "head" not in key
        ):
            d[key] = new_hidden


def _shrink_intermediate(d: dict[str, Any], st: _State, keep: set[str]) -> None:
    keys, t = st.rules.keys, st.rules.targets
    target = max(16, t["intermediate_size"] // st.scale)
    inter_re = re.compile(keys["intermediate_pattern"])
    for key, value in list(d.items()):
        if key in keep or not inter_re.search(key) or "multiple" in key or "ratio" in key:
            continue
        if _is_int(value) and value > target:
            d[key] = target
        elif isinstance(value, list) and value and all(_is_int(v) for v in value):
            d[key] = [min(v, target) for v in value]


def _shrink_experts(d: dict[str, Any], st: _State, path: str, keep: set[str]) -> None:
    keys, t = st.rules.keys, st.rules.targets
    top_k = max((d[k] for k in keys["top_k"] if _is_int(d.get(k))), default=1)
    groups = max((d[k] for k in keys["expert_groups"] if _is_int(d.get(k))), default=1)
    for key in keys["experts"]:
        value = d.get(key)
        if not _is_int(value) or value <= 0 or key in keep:
            continue
        want = max(t["num_experts"], 2 * top_k, 2 * groups if groups > 1 else 0)
        want = math.ceil(want / groups) * groups
        if want < value:
            d[key] = want


def _shrink_windows(d: dict[str, Any], st: _State, path: str, fam: dict[str, Any], keep: set[str]) -> None:
    """Sliding windows and attention chunks to `targets.window`, SSM / linear-attention chunks
    to `targets.chunk` (why: the rules file), so the workload's long prompt crosses them. Only a
    window that is on: an integer above the target, below the config's own position limit (Phi-3
    128k states 262144: no window in effect), not switched off by use_sliding_window."""
    keys, t = st.rules.keys, st.rules.targets
    limits = [d[k] for k in keys["positions"] if _is_int(d.get(k)) and d[k] > 0]
    limit = min(limits) if limits else None
    off = d.get("use_sliding_window") is False
    groups = (
        (keys.get("windows", []) + fam.get("window_keys", []), t.get("window"), True),
        (keys.get("chunks", []) + fam.get("chunk_keys", []), t.get("chunk"), False),
    )
    for names, target, is_window in groups:
        if not _is_int(target):
            continue
        for key in names:
            value = d.get(key)
            if key in keep or not _is_int(value) or value <= target:
                continue
            if is_window and (off or (limit is not None and value >= limit)):
                continue
            d[key] = target
            st.plan.notes.append(f"{path}{key}: {value} -> {target} (the workload's long prompt crosses it)")


def _remap_token_ids(config: dict[str, Any], st: _State) -> None:
    """Special token ids past the shrunk vocabulary move to its top, distinct ids stay distinct,
    the same id maps the same way in every tower."""
    vocab = st.vocab
    if vocab is None:
        return
    token_re = re.compile(st.rules.keys["token_id_pattern"])
    mapping = st.plan.token_map

    def remap(value: Any) -> Any:
        if _is_int(value) and value >= vocab:
            if value not in mapping:
                mapping[value] = vocab - 1 - len(mapping)
            return mapping[value]
        if isinstance(value, list):
            return [remap(v) for v in value]
        return value

    def walk(d: dict[str, Any]) -> None:
        for key, value in d.items():
            if isinstance(value, dict):
                walk(value)
            elif isinstance(key, str) and token_re.search(key):
                d[key] = remap(value)

    walk(config)
