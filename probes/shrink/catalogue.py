"""What the sweep covers (every causal-LM type of the installed transformers, then the
variants file's entries), each entry's revision, the source config of each type, and the sweep
loop itself (probe child side: transformers inside the functions)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from probes import releases
from probes.shrink.build import ShrinkResult, check_generates, first_line, shrink_config
from probes.shrink.rules import SHRINK_VERSION, VARIANTS_PATH, ShrinkError, load_rules, rules_text


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


def release_of(token: str) -> releases.Release | None:
    """The catalogued release a sweep entry starts from. A variant's switches go onto its type's
    own release only: on a multimodal release's text part they would make a model no one
    released (Gemma 4 E2B's dense text config with MoE on), so such a variant starts from the
    default config, as before the text parts were catalogued."""
    base, _sep, variant = token.partition("+")
    release = releases.lookup(base)
    return None if release is not None and release.text_part and variant else release


def sweep_revision(token: str, transformers_version: str) -> str:
    """The revision of `arch/<token>`: the rules, plus the variant's own entry for a variant,
    plus the catalogued release it starts from (a refreshed release is a new revision)."""
    extra = ""
    if "+" in token:
        extra = json.dumps(load_variants().get(token), sort_keys=True)
    release = release_of(token)
    if release is not None:
        extra += f"\0release {release.repo} {release.digest()}"
    return recipe_revision(token, transformers_version, rules_text() + extra)


# What a copy's dayone.json holds that changes a probe of it (the rest is notes for people).
PROBED_META = ("engine_options", "lineage", "token_map")
# Fields a probe reads that few copies carry: hashed only where set, so that adding one leaves
# every other copy's revision (and its stored results) as it was.
PROBED_META_IF_SET = ("release_tokenizer",)


def copy_revision(model_dir: Path | str, transformers_version: str) -> str:
    """The revision of a built copy: a hash of what the engines read (every file but
    dayone.json, by name and content) and of the dayone.json fields a probe uses. A rule,
    catalogue or builder change that leaves a copy byte for byte as it was is not new work; one
    that changes it is, whatever file it lives in."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256(f"{transformers_version}\0".encode("utf-8"))
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        name = path.relative_to(model_dir).as_posix()
        if name == "dayone.json":
            meta = json.loads(path.read_text(encoding="utf-8"))
            probed = {k: meta.get(k) for k in PROBED_META}
            probed.update({k: meta[k] for k in PROBED_META_IF_SET if k in meta})
            data = json.dumps(probed, sort_keys=True).encode()
        else:
            data = path.read_bytes()
        digest.update(f"{name}\0{hashlib.sha256(data).hexdigest()}\0".encode("utf-8"))
    return digest.hexdigest()[:40]


def type_lineage(token: str) -> dict[str, Any]:
    """Where the copy of a sweep entry starts: a catalogued release, or transformers' default
    config (`synthetic`)."""
    release = release_of(token)
    return release.lineage() if release is not None else {"source": "synthetic"}


def recipe_revision(model_type: str, transformers_version: str, rules_text: str) -> str:
    """The revision of a sweep model (`arch/<type>`): what decides its shrunk copy, hashed. A new
    reference transformers or a rule change is a new revision, so the sweep probes it again."""
    key = f"{model_type}\0{transformers_version}\0{SHRINK_VERSION}\0{rules_text}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()


def shrink_model_type(model_type: str, out_dir: Path, *, seed: int = 0) -> ShrinkResult:
    """The sweep's entry: the catalogued release of `model_type` (probes.releases), shrunk;
    transformers' default config for a type with no known release."""
    import transformers
    from transformers import AutoConfig

    token = model_type  # a model_type, or BASE+VARIANT from the variants file
    model_type, switches = split_variant(token)
    fam = load_rules().family(model_type)
    if fam.get("unshrinkable"):
        raise ShrinkError(f"{model_type}: {fam['unshrinkable']}")
    revision = sweep_revision(token, transformers.__version__)
    release = release_of(token)
    if release is not None:
        source = release.config()
        if source.get("model_type") != model_type:
            raise ShrinkError(
                f"catalogued release {release.repo} is model_type "
                f"{source.get('model_type')!r}, not {model_type!r}"
            )
        source.update(switches)
        origin = f"release {release.repo}"
    else:
        kwargs = {**fam.get("default_kwargs", {}), **switches}
        try:
            source = AutoConfig.for_model(model_type, **kwargs).to_dict()
        except Exception as exc:  # noqa: BLE001
            raise ShrinkError(f"no default config for {token}: {first_line(exc)}") from exc
        source["model_type"] = model_type
        origin = f"transformers {transformers.__version__}"
    meta = {"id": f"arch/{token}", "revision": revision, "source": f"{origin}: {token}"}
    return _stamped(
        shrink_config(source, out_dir, seed=seed, release=release, meta=meta), transformers.__version__
    )


def _stamped(result: ShrinkResult, transformers_version: str) -> ShrinkResult:
    """The copy's dayone.json names its revision: the hash of the copy as built (records of
    its probes are filed under it)."""
    path = Path(result.out_dir) / "dayone.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["recipe_revision"] = meta.get("revision")
    meta["revision"] = copy_revision(result.out_dir, transformers_version)
    path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return result


def sweep(
    out_root: Path,
    types: list[str] | None = None,
    *,
    generate: bool = True,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
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
        row: dict[str, Any] = {"model_type": model_type, "lineage": type_lineage(model_type)}
        try:
            result = shrink_model_type(model_type, Path(out_root) / model_type)
            row.update(
                params=result.params,
                architecture=result.architecture,
                dtype=result.dtype,
                out_dir=str(result.out_dir),
            )
            if generate:
                row["tokens"] = check_generates(result.out_dir)
            row["status"] = "ok"
        except ShrinkError as exc:
            row.update(status="error", stage="shrink", why=str(exc))
        except Exception as exc:  # noqa: BLE001 - the sweep reports, never drops
            row.update(status="error", stage="generate" if "params" in row else "shrink", why=first_line(exc))
        row["seconds"] = round(time.monotonic() - started, 2)
        rows.append(row)
        if progress:
            progress(model_type, row)
    return rows
