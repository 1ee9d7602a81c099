"""The arch tier: a shrunk copy of an architecture, random weights, every switch kept.

From a config.json (and tokenizer files when there are any) build a small model of the same
architecture: few layers (one of each layer kind, in the released order), small widths, few
experts, a small vocabulary, but the released head dims, routing top-k, sliding window, KV
sharing, per-layer overrides and dtype. Engines reject other head dims or fail only at generate,
so a shrink that changed a switch would turn our choice into a false verdict on the engine.

Standard library at import: the planning half (`shrink_config_dict`) is pure and runs anywhere;
the building half imports transformers and torch inside its functions and so runs in the
transformers engine environment (the probe child side).

    python -m probes.shrink CONFIG_OR_DIR OUT_DIR [--model-type T] [--check]
    python -m probes.shrink --list-types          # every causal-LM type, then sweep_variants.json
    python -m probes.shrink --sweep OUT_ROOT [--types a,b] [--report failures.json]
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import math
import operator
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

RULES_PATH = Path(__file__).with_name("shrink_rules.json")
VARIANTS_PATH = Path(__file__).with_name("sweep_variants.json")
SHRINK_VERSION = 4  # bump when a rule change alters what a shrink builds (4: nested configs)

# Files of a tokenizer that travel with the shrunk copy unchanged.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json", "merges.txt", "vocab.txt", "added_tokens.json", "chat_template.jinja",
    "chat_template.json", "spiece.model", "sentencepiece.bpe.model",
)


class ShrinkError(Exception):
    """The architecture could not be shrunk automatically; the message says why."""


# --------------------------------------------------------------------------------------------
# Rules (data)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rules:
    targets: dict[str, Any]
    keys: dict[str, Any]
    families: dict[str, dict[str, Any]]

    def family(self, model_type: str | None) -> dict[str, Any]:
        return self.families.get(model_type or "", {})


def load_rules(path: str | None = None) -> Rules:
    """The rules file: `path`, else $DAYONE_SHRINK_RULES, else probes/shrink_rules.json."""
    return _load_rules(str(path or os.environ.get("DAYONE_SHRINK_RULES") or RULES_PATH))


@lru_cache(maxsize=4)
def _load_rules(path: str) -> Rules:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return Rules(targets=data["targets"], keys=data["keys"], families=data.get("families", {}))


# --------------------------------------------------------------------------------------------
# Expressions in family rules: names, numbers, + - * // /, min, max, a.b lookups
# --------------------------------------------------------------------------------------------

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv, ast.Div: operator.truediv, ast.Mod: operator.mod,
}
_FUNCS: dict[str, Callable[..., Any]] = {"min": min, "max": max, "len": len, "int": int}


def evaluate(expr: Any, local: dict[str, Any], root: dict[str, Any]) -> Any:
    """Evaluate a rule value: non-strings are literals; strings starting with '=' are expressions."""
    if not (isinstance(expr, str) and expr.startswith("=")):
        return copy.deepcopy(expr)
    tree = ast.parse(expr[1:].strip(), mode="eval")

    def lookup(path: list[str]) -> Any:
        for scope in (local, root):
            value: Any = scope
            for part in path:
                if not isinstance(value, dict) or part not in value:
                    break
                value = value[part]
            else:
                return value
        raise ShrinkError(f"rule expression {expr!r}: no value for {'.'.join(path)}")

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
            return node.value
        if isinstance(node, ast.Name):
            return lookup([node.id])
        if isinstance(node, ast.Attribute):
            parts: list[str] = []
            cur: ast.AST = node
            while isinstance(cur, ast.Attribute):
                parts.insert(0, cur.attr)
                cur = cur.value
            if not isinstance(cur, ast.Name):
                raise ShrinkError(f"rule expression {expr!r}: unsupported lookup")
            return lookup([cur.id, *parts])
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS:
            return _FUNCS[node.func.id](*[walk(a) for a in node.args])
        if isinstance(node, ast.List):
            return [walk(e) for e in node.elts]
        raise ShrinkError(f"rule expression {expr!r}: unsupported syntax {type(node).__name__}")

    return walk(tree)


# --------------------------------------------------------------------------------------------
# Choosing layers: one of each kind, in the released order
# --------------------------------------------------------------------------------------------

def choose_layers(signatures: list[Any], *, min_layers: int, max_prefix: int,
                  min_prefix: int = 0) -> list[int]:
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


# --------------------------------------------------------------------------------------------
# The pure shrink of a config dict
# --------------------------------------------------------------------------------------------

@dataclass
class ShrinkPlan:
    """What the shrink decided, for the record and for tests."""

    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    token_map: dict[int, int] = field(default_factory=dict)


AliasFn = Callable[[str | None], dict[str, str]]


def shrink_config_dict(config: dict[str, Any], *, rules: Rules | None = None,
                       aliases: AliasFn | None = None, keep_vocab: bool = False,
                       cap_positions: bool = False, scale: int = 1,
                       compact: bool = False, vocab_size: int | None = None) -> ShrinkPlan:
    """A shrunk copy of a config.json dict (sub-configs included). Pure: no transformers here.

    `aliases(model_type)` gives the config class's attribute_map (canonical -> stored name), so
    `n_embd` is treated as `hidden_size`. `keep_vocab` keeps the vocabulary (a real tokenizer is
    kept beside it). `cap_positions` also caps learned position tables. `scale` divides the
    targets further and `compact` keeps only the first layer of each kind and shrinks
    secondary sizes (per-layer input dims): both for when a first shrink is still too big, as
    with a release's real 262k-token vocabulary. `vocab_size`: the vocabulary to shrink to (the
    size of the tokenizer that will go with the copy; default from the rules)."""
    rules = rules or load_rules()
    if vocab_size is not None:
        rules = Rules(targets={**rules.targets, "vocab_size": vocab_size}, keys=rules.keys,
                      families=rules.families)
    plan = ShrinkPlan(config=copy.deepcopy(config))
    for key in ("id2label", "label2id"):  # classification heads: never per-layer, never sizes
        plan.config.pop(key, None)
    state = _State(rules=rules, aliases=aliases or (lambda _t: {}), keep_vocab=keep_vocab,
                   cap_positions=cap_positions, scale=max(1, scale), plan=plan,
                   root=plan.config, compact=compact)
    _shrink_one(plan.config, state, path="")
    if state.keep_vocab is False:
        _remap_token_ids(plan.config, state)
    if not plan.config.get("dtype") and not plan.config.get("torch_dtype"):
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
    for canonical, stored in (st.aliases(model_type) or {}).items():
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
    if not st.keep_vocab:
        vocab_re = re.compile(keys["vocab_pattern"])
        for key, value in list(d.items()):
            if key in keep or not vocab_re.search(key) or not _is_int(value):
                continue
            if value > t["vocab_size"]:
                d[key] = t["vocab_size"]
                st.vocab = t["vocab_size"]
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
    for name in ("layer_count", "head_dim", "experts", "top_k", "expert_groups", "positions",
                 "dense_prefix", "kv_shared"):
        known.update(keys[name])
    for pair in keys["head_pairs"]:
        known.update(k for k in pair if k)
    return known


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _layer_count_key(d: dict[str, Any], keys: dict[str, Any]) -> str | None:
    for key in keys["layer_count"]:
        if _is_int(d.get(key)):
            return key
    return None


def _shrink_layers(d: dict[str, Any], st: _State, path: str, fam: dict[str, Any],
                   keep: set[str]) -> None:
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
    index_lists = [k for k in keys["layer_index_lists"] + fam.get("layer_index_lists", [])
                   if isinstance(d.get(k), list) and all(_is_int(x) for x in d[k])]
    skip_lists |= set(index_lists)
    per_layer: list[str] = [k for k, v in d.items()
                            if k not in skip_lists
                            and ((isinstance(v, list) and len(v) == n)
                                 or (isinstance(v, str) and k in per_layer_strings and len(v) == n))]
    # Per-layer overrides keyed by layer index (Gemma 4's per_layer_config: {"05": {...}}).
    per_layer_dicts = [k for k, v in d.items() if "layer" in k and isinstance(v, dict) and v
                       and all(str(x).isdigit() for x in v)]
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
        return (tuple(d[k][i] for k in per_layer)
                + tuple(f"{i:02d}" in d[k] or str(i) in d[k] or i in d[k] for k in per_layer_dicts)
                + tuple(i in d[k] for k in index_lists)
                + tuple(i < d[k] for k in dense_keys))

    shared_key = next((k for k in keys["kv_shared"] if _is_int(d.get(k)) and d[k] > 0), None)
    max_prefix = 0 if st.compact else fam.get("max_prefix_layers", t["max_prefix_layers"])
    if shared_key:
        # KV sharing: the last k layers reuse earlier layers' caches. Keep producers of each
        # kind, then one consumer of each kind.
        first_shared = n - d[shared_key]
        producers = choose_layers([signature(i) for i in range(first_shared)],
                                  min_layers=t["num_layers"], max_prefix=max_prefix,
                                  min_prefix=min_prefix)
        consumers: dict[Any, int] = {}
        for i in range(first_shared, n):
            consumers.setdefault(_hashable(signature(i)), i)
        chosen = producers + sorted(consumers.values())
        d[shared_key] = len(consumers)
    else:
        chosen = choose_layers([signature(i) for i in range(n)], min_layers=t["num_layers"],
                               max_prefix=max_prefix, min_prefix=min_prefix)
    chosen = list(fam.get("layers", chosen)) if "layers" in fam else chosen
    new_index = {old: new for new, old in enumerate(chosen)}
    for k in per_layer:
        v = d[k]
        picked = [v[i] for i in chosen]
        d[k] = "".join(picked) if isinstance(v, str) else picked
    for k in per_layer_dicts:
        width = max((len(str(x)) for x in d[k]), default=2)
        d[k] = {str(new_index[int(x)]).zfill(width): val for x, val in d[k].items()
                if int(x) in new_index}
    for k in index_lists:
        d[k] = [new_index[i] for i in d[k] if i in new_index]
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
            new_q = new_kv * min(q // kv, 4)
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
    tied = primary_q is not None and (
        (head_dim_key is None and hidden % primary_q[0] == 0)
        or (head_dim_key is not None and hidden == primary_q[0] * d[head_dim_key]))
    if tied and primary_q is not None:
        head_dim = d[head_dim_key] if head_dim_key else hidden // primary_q[0]
        new_q = primary_q[1]
        while new_q > 1 and new_q * head_dim > t["max_hidden_size"]:
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
        if (key not in skip and key not in keep and _is_int(value) and value == hidden
                and width_re.search(key) and not inter_re.search(key) and "vocab" not in key
                and "head" not in key):
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


# --------------------------------------------------------------------------------------------
# Building (transformers side: imports inside functions)
# --------------------------------------------------------------------------------------------

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
        return {"out_dir": str(self.out_dir), "model_type": self.model_type,
                "architecture": self.architecture, "params": self.params, "dtype": self.dtype,
                "notes": self.notes, "seconds": round(self.seconds, 3)}


def causal_lm_model_types() -> list[str]:
    """Every model_type the installed transformers can build as a causal LM."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def sweep_types() -> list[str]:
    """What the sweep covers: every causal-LM model_type, then the variants file's entries
    whose base this transformers knows."""
    types = causal_lm_model_types()
    known = set(types)
    return types + [v for v in sorted(load_variants()) if v.split("+", 1)[0] in known]


def load_variants(path: Path | None = None) -> dict[str, dict[str, Any]]:
    data = json.loads(Path(path or VARIANTS_PATH).read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def split_variant(token: str) -> tuple[str, dict[str, Any]]:
    """`gemma4_text+moe` -> ("gemma4_text", the switches it sets); a plain type -> (type, {})."""
    if "+" not in token:
        return token, {}
    variants = load_variants()
    if token not in variants:
        raise ShrinkError(f"unknown sweep variant {token!r}; known: {', '.join(sorted(variants))}")
    return token.split("+", 1)[0], dict(variants[token].get("set", {}))


def sweep_revision(token: str, transformers_version: str) -> str:
    """The revision of `arch/<token>`: the rules, plus the variant's own entry for a variant."""
    extra = ""
    if "+" in token:
        extra = json.dumps(load_variants().get(token), sort_keys=True)
    return recipe_revision(token, transformers_version, rules_text() + extra)


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
        raise ShrinkError(f"config rejected after shrink: {_first_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - config validators raise many types
        raise ShrinkError(f"config rejected after shrink: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[:3])[:400]


def _dtype_name(d: dict[str, Any]) -> str:
    value = d.get("dtype") or d.get("torch_dtype") or load_rules().targets["dtype"]
    return str(value).replace("torch.", "")


def model_class(config: Any) -> Any:
    """The class to build: the family's release class where AutoModelForCausalLM would build
    only part of it (Mllama's text model), else AutoModelForCausalLM."""
    import transformers

    name = load_rules().family(getattr(config, "model_type", None)).get("model_class")
    return getattr(transformers, name) if name else transformers.AutoModelForCausalLM


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


def plan_shrink(source: dict[str, Any], *, keep_vocab: bool, vocab_size: int | None = None
                ) -> tuple[ShrinkPlan, Any, int]:
    """Shrink, build the config, count parameters on the meta device; escalate if too big."""
    max_params = int(load_rules().targets["max_params"])
    attempts = [dict(cap_positions=False, scale=1), dict(cap_positions=True, scale=1),
                dict(cap_positions=True, scale=4, compact=True)]
    params = 0
    for attempt in attempts:
        plan = shrink_config_dict(source, aliases=_aliases, keep_vocab=keep_vocab,
                                  vocab_size=vocab_size, **attempt)
        config = _config_from_dict(plan.config)
        try:
            params = count_params_meta(config)
        except ShrinkError:
            raise
        except Exception as exc:  # noqa: BLE001 - model constructors raise many types
            raise ShrinkError(f"model build failed after shrink: {_first_line(exc)}") from exc
        if params <= max_params:
            return plan, config, params
    raise ShrinkError(f"shrink failed: {params} params (limit {max_params}); "
                      "a size field the rules do not know")


def shrink_config(source: dict[str, Any], out_dir: Path, *, tokenizer_dir: Path | None = None,
                  seed: int = 0, meta: dict[str, Any] | None = None) -> ShrinkResult:
    """Build the shrunk copy of `source` (a config.json dict) in out_dir (an HF directory)."""
    import torch

    started = time.monotonic()
    source = copy.deepcopy(source)
    tok_files = [p for p in (tokenizer_dir.iterdir() if tokenizer_dir else [])
                 if p.name in TOKENIZER_FILES]
    keep_vocab = bool(tok_files)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = None if keep_vocab else _fixture_tokenizer(out_dir, source.get("model_type"))
    # The embedding rows equal the tokenizer's size, as in a release: converters such as
    # llama.cpp's size the GGUF vocabulary from the tokenizer and reject a mismatch.
    plan, config, params = plan_shrink(source, keep_vocab=keep_vocab,
                                       vocab_size=len(tok) if tok is not None else None)
    dtype_name = _dtype_name(plan.config)
    dtype = getattr(torch, dtype_name, None)
    if not isinstance(dtype, torch.dtype):
        raise ShrinkError(f"unknown dtype {dtype_name!r}")
    release_class = load_rules().family(source.get("model_type")).get("model_class")
    if release_class:
        config.architectures = [release_class]
    elif not getattr(config, "architectures", None):
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(source.get("model_type", ""))
        config.architectures = [arch] if arch else None
    torch.manual_seed(seed)
    try:
        model = _build(config, dtype=dtype)
    except Exception as exc:  # noqa: BLE001
        raise ShrinkError(f"model build failed after shrink: {_first_line(exc)}") from exc
    _randomize_zero_inits(model, seed)
    model.save_pretrained(out_dir, safe_serialization=True)
    _strip_nested_bookkeeping(out_dir / "config.json")
    vocab = _vocab_size(config)
    if keep_vocab:
        for p in tok_files:
            shutil.copy2(p, out_dir / p.name)
    else:
        _align_tokenizer(out_dir, vocab, tok)
    info = {"tier": "arch", "shrink_version": SHRINK_VERSION, "params": params,
            # "fixture": a tokenizer we trained (no release knows its pre-tokenizer hash)
            "tokenizer": "release" if keep_vocab else "fixture",
            "source_model_type": source.get("model_type"), "notes": plan.notes,
            "token_map": {str(k): v for k, v in plan.token_map.items()}, **(meta or {})}
    engine_options = load_rules().family(source.get("model_type")).get("engine_options")
    if engine_options:
        # What engines must be told about this copy (not the release): e.g. no MTP weights.
        info["engine_options"] = engine_options
    (out_dir / "dayone.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    archs = getattr(config, "architectures", None) or [None]
    return ShrinkResult(out_dir=out_dir, model_type=str(source.get("model_type")),
                        architecture=archs[0], params=params, dtype=dtype_name, notes=plan.notes,
                        seconds=time.monotonic() - started)


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
NESTED_BOOKKEEPING = {"_name_or_path": "", "output_attentions": False,
                      "output_hidden_states": False, "return_dict": True,
                      "chunk_size_feed_forward": 0, "problem_type": None, "architectures": None,
                      "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
                      "label2id": {"LABEL_0": 0, "LABEL_1": 1}}


def _strip_nested_bookkeeping(config_path: Path) -> None:
    config = json.loads(config_path.read_text())
    changed = False
    for value in config.values():
        if isinstance(value, dict) and "_name_or_path" in value:  # a sub-config saved whole
            for key, default in NESTED_BOOKKEEPING.items():
                if key in value and value[key] == default:
                    del value[key]
                    changed = True
    if changed:
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _fixture_tokenizer(out_dir: Path, model_type: str | None) -> Any:
    """The fixtures' BPE for a copy whose source has no tokenizer, in the style the family's
    releases ship (rule `tokenizer_style`; byte-level unless said)."""
    from probes.fixtures import build_tokenizer

    rules = load_rules()
    return build_tokenizer(out_dir, vocab_size=rules.targets["vocab_size"],
                           style=rules.family(model_type).get("tokenizer_style", "byte_level"))


def _align_tokenizer(out_dir: Path, vocab_size: int, tok: Any) -> None:
    """Point the config's bos/eos/pad ids at the fixture tokenizer's special tokens (ids of a
    vocabulary we replaced mean nothing; image/audio token ids stay as shrunk)."""
    if len(tok) > vocab_size:
        # A copy whose tokenizer does not fit would fail in every engine for a reason of ours
        # (BLT's 260-id byte vocabulary): refuse, so it is reported as ours, not the engine's.
        for name in TOKENIZER_FILES:
            (out_dir / name).unlink(missing_ok=True)
        raise ShrinkError(f"no tokenizer fits: vocab {vocab_size} is smaller than the "
                          f"fixture tokenizer's {len(tok)} ids (byte-level BPE)")
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
           "pad_token_id": tok.pad_token_id}
    for name in ("config.json", "generation_config.json"):
        path = out_dir / name
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        for scope in (data, data.get("text_config")):
            if isinstance(scope, dict):
                scope.update({k: v for k, v in ids.items() if name == "config.json" or k in scope})
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def recipe_revision(model_type: str, transformers_version: str, rules_text: str) -> str:
    """The revision of a sweep model (`arch/<type>`): what decides its shrunk copy, hashed. A new
    reference transformers or a rule change is a new revision, so the sweep probes it again."""
    key = f"{model_type}\0{transformers_version}\0{SHRINK_VERSION}\0{rules_text}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()


def rules_text(path: str | None = None) -> str:
    return Path(path or os.environ.get("DAYONE_SHRINK_RULES") or RULES_PATH).read_text("utf-8")


def shrink_model_type(model_type: str, out_dir: Path, *, seed: int = 0) -> ShrinkResult:
    """The sweep's entry: the default config transformers has for `model_type`, shrunk."""
    import transformers
    from transformers import AutoConfig

    token = model_type  # a model_type, or BASE+VARIANT from the variants file
    model_type, switches = split_variant(token)
    fam = load_rules().family(model_type)
    if fam.get("unshrinkable"):
        raise ShrinkError(f"{model_type}: {fam['unshrinkable']}")
    kwargs = {**fam.get("default_kwargs", {}), **switches}
    try:
        source = AutoConfig.for_model(model_type, **kwargs).to_dict()
    except Exception as exc:  # noqa: BLE001
        raise ShrinkError(f"no default config for {token}: {_first_line(exc)}") from exc
    source["model_type"] = model_type
    revision = sweep_revision(token, transformers.__version__)
    return shrink_config(source, out_dir, seed=seed,
                         meta={"id": f"arch/{token}", "revision": revision,
                               "source": f"transformers {transformers.__version__}: {token}"})


def shrink_path(config_or_dir: Path, out_dir: Path, *, model_type: str | None = None,
                seed: int = 0, meta: dict[str, Any] | None = None) -> ShrinkResult:
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
    return shrink_config(source, out_dir, tokenizer_dir=config_path.parent, seed=seed,
                         meta={"source": str(config_path), **(meta or {})})


def check_generates(model_dir: Path, max_new_tokens: int = 4) -> list[int]:
    """Load the shrunk copy back from disk and generate greedily: the shrink's own smoke test."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    vocab = _vocab_size(model.config)
    ids = torch.tensor([[min(5 + i * 7, vocab - 1) for i in range(6)]])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                             pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


# --------------------------------------------------------------------------------------------
# Sweep: every causal-LM type the installed transformers knows
# --------------------------------------------------------------------------------------------

def sweep(out_root: Path, types: list[str] | None = None, *, generate: bool = True,
          progress: Callable[[str, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Shrink (and generate with) each type; one row per type, `ok` or `error` with why."""
    import torch

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    torch.set_num_threads(1)
    rows = []
    for model_type in types or sweep_types():
        started = time.monotonic()
        row: dict[str, Any] = {"model_type": model_type}
        try:
            result = shrink_model_type(model_type, Path(out_root) / model_type)
            row.update(params=result.params, architecture=result.architecture,
                       dtype=result.dtype, out_dir=str(result.out_dir))
            if generate:
                row["tokens"] = check_generates(result.out_dir)
            row["status"] = "ok"
        except ShrinkError as exc:
            row.update(status="error", stage="shrink", why=str(exc))
        except Exception as exc:  # noqa: BLE001 - the sweep reports, never drops
            row.update(status="error", stage="generate" if "params" in row else "shrink",
                       why=_first_line(exc))
        row["seconds"] = round(time.monotonic() - started, 2)
        rows.append(row)
        if progress:
            progress(model_type, row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m probes.shrink", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", help="config.json or a directory holding one")
    parser.add_argument("out_dir", nargs="?")
    parser.add_argument("--model-type", help="shrink transformers' default config of this type"
                        " (or override the source's model_type)")
    parser.add_argument("--check", action="store_true", help="generate a few tokens after")
    parser.add_argument("--list-types", action="store_true")
    parser.add_argument("--sweep", metavar="OUT_ROOT")
    parser.add_argument("--types", help="comma-separated model types for --sweep")
    parser.add_argument("--report", help="write the sweep's rows (JSON) here")
    parser.add_argument("--no-generate", action="store_true",
                        help="--sweep: build only (the engines' probes generate)")
    parser.add_argument("--meta", help="JSON object for dayone.json (id, revision, ...)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.list_types:
        print("\n".join(sweep_types()))
        return 0
    if args.sweep:
        types = [t for t in (args.types or "").split(",") if t] or None

        def show(model_type: str, row: dict[str, Any]) -> None:
            mark = "ok" if row["status"] == "ok" else f"ERROR {row.get('why', '')[:160]}"
            print(f"{model_type:28s} {row['seconds']:6.2f}s {mark}", flush=True)

        rows = sweep(Path(args.sweep), types, progress=show, generate=not args.no_generate)
        ok = sum(r["status"] == "ok" for r in rows)
        what = "shrunk" if args.no_generate else "shrunk and generated"
        print(f"{what}: {ok}/{len(rows)} ({100.0 * ok / max(1, len(rows)):.1f}%)")
        if args.report:
            Path(args.report).write_text(json.dumps(
                {"ok": ok, "total": len(rows), "rows": rows}, indent=2) + "\n")
        return 0
    if args.model_type and args.source and not args.out_dir:
        args.source, args.out_dir = None, args.source  # `--model-type T OUT_DIR`
    if not args.out_dir or not (args.source or args.model_type):
        parser.error("give CONFIG_OR_DIR OUT_DIR, or --model-type T OUT_DIR")
    try:
        meta = json.loads(args.meta) if args.meta else None
        if args.source and args.out_dir:
            result = shrink_path(Path(args.source), Path(args.out_dir),
                                 model_type=args.model_type, seed=args.seed, meta=meta)
        else:
            result = shrink_model_type(args.model_type, Path(args.out_dir), seed=args.seed)
        report = result.as_dict()
        if args.check:
            report["tokens"] = check_generates(result.out_dir)
    except ShrinkError as exc:
        print(json.dumps({"status": "error", "why": str(exc)}))
        return 2
    print(json.dumps({"status": "ok", **report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
