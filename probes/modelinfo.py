"""What a model directory says about itself, read defensively (it is untrusted input)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MAX_CONFIG_BYTES = 1024 * 1024


@dataclass
class ModelInfo:
    id: str
    revision: str | None
    model_type: str | None
    architecture: str | None
    release_date: str | None = None
    family: str | None = None
    # An arch-tier copy's origin (dayone.json): the release it was shrunk from, or "synthetic".
    lineage: dict | None = None

    def as_record(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "lineage" or v is not None}


def _read_json(path: Path) -> dict | None:
    # No symlink (O_NOFOLLOW), only a regular file (a FIFO named
    # config.json used to block forever), and deep nesting is a RecursionError, not a crash.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_CONFIG_BYTES:
            return None
        raw = os.read(fd, MAX_CONFIG_BYTES + 1)
        data = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    finally:
        os.close(fd)
    return data if isinstance(data, dict) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def escaping_links(model_dir: Path) -> list[str]:
    """Entries of a model directory that are symlinks resolving outside
    it (config.json -> /etc/passwd), which the engine would follow. A Hugging Face cache
    snapshot (`.../snapshots/<rev>/x -> ../../blobs/<hash>`) may point into its repo's blobs."""
    root = Path(os.path.realpath(model_dir))
    allowed = [root]
    if root.parent.name == "snapshots":
        allowed.append(root.parent.parent / "blobs")
    out = []
    for dirpath, dirnames, filenames in os.walk(root):  # does not descend into dir symlinks
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if not path.is_symlink():
                continue
            target = Path(os.path.realpath(path))
            if not any(target == a or a in target.parents for a in allowed):
                out.append(path.relative_to(root).as_posix())
    return sorted(out)


def local_revision(model_dir: Path) -> str | None:
    """A content fingerprint of a local model directory: names, sizes, and the small files.

    Big weight files count by name and size only, so fingerprinting a 60 GB model is instant;
    a truncated copy still differs (its size does)."""
    h = hashlib.sha256()
    try:
        entries = sorted(p for p in model_dir.rglob("*") if p.is_file() and not p.is_symlink())
    except OSError:
        return None
    for p in entries:
        rel = p.relative_to(model_dir).as_posix()
        size = p.stat().st_size
        h.update(f"{rel}\0{size}\0".encode("utf-8", "surrogateescape"))
        if size <= MAX_CONFIG_BYTES:
            h.update(p.read_bytes())
    return h.hexdigest()[:40]


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of our own making or a trusted copy (no size cap: released tokenizer
    configs run to megabytes); {} when missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # deep nesting in a hostile file
        return {}
    return data if isinstance(data, dict) else {}


def model_config(model_dir: Path) -> dict[str, Any]:
    """The model's config.json as the engine reads it, in the probe child: {} when missing,
    unreadable or not an object (the engine itself reports that at load). Not read_config's
    guarded read: the host already refused links out of the model directory, and an HF cache
    snapshot's config.json is a link into its blobs."""
    return read_json(Path(model_dir) / "config.json")


def read_config(model_dir: Path) -> dict:
    """The model's config.json, read defensively; {} when missing or unreadable."""
    return _read_json(Path(model_dir) / "config.json") or {}


def read_model_info(model_dir: Path, model_id: str | None = None) -> ModelInfo:
    model_dir = Path(model_dir)
    config = _read_json(model_dir / "config.json") or {}
    meta = _read_json(model_dir / "dayone.json") or {}
    archs = config.get("architectures")
    model_type = config.get("model_type")
    return ModelInfo(
        id=model_id or _text(meta.get("id")) or model_dir.name or os.fspath(model_dir),
        revision=_text(meta.get("revision")) or local_revision(model_dir),
        model_type=model_type if isinstance(model_type, str) else None,
        architecture=archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None,
        release_date=meta.get("release_date") if isinstance(meta.get("release_date"), str) else None,
        family=meta.get("family") if isinstance(meta.get("family"), str) else None,
        lineage=meta.get("lineage") if isinstance(meta.get("lineage"), dict) else None,
    )


def random_weights(model_dir: Path) -> bool:
    """A model we built (a fixture, or an arch-tier shrunk copy): its weights are random."""
    meta = _read_json(Path(model_dir) / "dayone.json") or {}
    return meta.get("weights") == "random" or meta.get("tier") == "arch"


# Sub-configs of a multimodal model, and the files its processor is read from.
TOWER_KEYS = ("vision_config", "audio_config", "vision_tower_config", "visual")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


PROCESSOR_ERROR = re.compile(
    r"Can't load (image processor|feature extractor|processor)"
    r"|preprocessor_config\.json|processor_config\.json"
)


# An engine looking a token up by its text (vLLM's Gemma 3 processor: vocab["\n\n"]; Fuyu's:
# "|SPEAKER|") and not finding it.
# A KeyError naming a parameter (vLLM's DBRX loader: 'blocks.0.ffn.experts.w13_weight') is the
# engine's own, not a token lookup.
WEIGHT_NAME = re.compile(r"^[A-Za-z_]\w*(\.\w+)+$")
# Nor is one naming a config key (SGLang's DeepSeek-V4 reads rope_scaling
# ["original_max_position_embeddings"]): snake_case words, which no vocabulary's tokens are.
CONFIG_KEY = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")
TOKEN_LOOKUP_ERROR = re.compile(r"KeyError: ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")


def token_the_copy_lacks(model_dir: Path, error: str) -> str | None:
    """Why a load that failed looking up a token says nothing about the engine: the copy
    carries the fixtures' tokenizer (the release's vocabulary is not catalogued: an LFS
    file), which lacks a token the release's vocabulary has and the engine reads. None when
    the copy has the token, carries the release's own vocabulary, or the error is another."""
    import ast

    meta = _read_json(Path(model_dir) / "dayone.json") or {}
    found = TOKEN_LOOKUP_ERROR.findall(error or "")
    if meta.get("tokenizer") != "fixture" or not found:
        return None
    try:
        token = ast.literal_eval(found[-1])
    except (ValueError, SyntaxError):
        return None
    tokenizer = _read_json(Path(model_dir) / "tokenizer.json") or {}
    vocab = (tokenizer.get("model") or {}).get("vocab") or {}
    added = {t.get("content") for t in tokenizer.get("added_tokens") or [] if isinstance(t, dict)}
    if (
        not isinstance(token, str)
        or token in vocab
        or token in added
        or WEIGHT_NAME.match(token)
        or CONFIG_KEY.match(token)
    ):
        return None
    return (
        f"our arch-tier copy's tokenizer (the fixtures', in the release's kind) has no "
        f"token {token!r}, which the engine looks up and the release's own vocabulary "
        "(not catalogued) carries"
    )


def tokenizer_the_copy_cannot_carry(model_dir: Path) -> str | None:
    """Why a tokenizer failure says nothing about the engine: the family's releases ship a
    tokenizer of their own (remote code) that the copy, built with the fixtures' tokenizer,
    cannot carry. None for a copy with the release's tokenizer or a family without one."""
    meta = _read_json(Path(model_dir) / "dayone.json") or {}
    release_tokenizer = meta.get("release_tokenizer")
    if meta.get("tokenizer") != "fixture" or not isinstance(release_tokenizer, str):
        return None
    return f"our arch-tier copy carries the fixtures' tokenizer; the releases ship {release_tokenizer[:300]}"


def incomplete_multimodal_copy(model_dir: Path, config: dict, error: str = "") -> str | None:
    """Why a copy we built cannot be judged as a multimodal model: a shrunk default config has
    no processor files, which every multimodal release ships and engines read at load; or its
    fixture tokenizer lacks a token the engine's processor reads. None for a release, a text
    model, or a copy that has them. ERROR: what the load said (a model without a tower
    sub-config, such as Fuyu, shows itself multimodal there)."""
    if random_weights(model_dir):
        lacking = token_the_copy_lacks(model_dir, error)
        if lacking:
            return lacking
    towers = [k for k in TOWER_KEYS if k in config]  # a key set to null: a tower left out
    multimodal = bool(towers) or bool(PROCESSOR_ERROR.search(error))
    if not random_weights(model_dir) or not multimodal:
        return None
    missing = [k for k in towers if not config.get(k)]
    has_files = any((Path(model_dir) / name).exists() for name in PROCESSOR_FILES)
    if has_files and not missing:
        return None
    what = [f"no processor files ({' / '.join(PROCESSOR_FILES)})"] if not has_files else []
    what += [f"{k} null (the default config leaves the tower out)" for k in missing]
    return (
        f"our arch-tier copy of a multimodal model has {', '.join(what)}, where a release "
        "ships them and the engine reads them"
    )


# Generative or not: the map covers decoder-only generators
NOT_GENERATIVE_PATH = Path(__file__).with_name("not_generative.json")


def not_generative_types(path: Path = NOT_GENERATIVE_PATH) -> dict[str, str]:
    """{model_type: why it is not a decoder-only generator}, from the data file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {t: group["why"] for group in data["groups"] for t in group["types"]}


def not_generative(config: dict | None, model_type: str | None = None) -> str | None:
    """Why a model is not a decoder-only generator (its probe is `n/a`), or None if it is one.

    config: its config.json (untrusted: anything not a dict says nothing); model_type: the type
    when no config is at hand (a map row)."""
    config = config if isinstance(config, dict) else {}
    kind = config.get("model_type") if isinstance(config.get("model_type"), str) else model_type
    if config.get("is_encoder_decoder") is True:
        return f"{kind or 'this model'} is an encoder-decoder (is_encoder_decoder in its config)"
    why = not_generative_types().get(kind or "")
    return f"{kind}: {why}" if why else None
