"""Reference releases: what real hub releases ship, for the arch tier to shrink from.

Each entry is `<root>/<model_type>/<org>__<name>/`: exact bytes of that repo's small files
(config.json, generation_config.json, tokenizer_config.json, special_tokens_map.json,
chat_template.jinja, tokenizer files) and a SOURCE file (`key: value` lines) saying where the
bytes came from. The packaged catalogue is this folder (copied offline from public mirrors, see
README.md); `dayone releases refresh` writes one from the hub in the same layout, and the folders
in $DAYONE_RELEASES (os.pathsep-separated) win over the packaged one.

Pure lookup, standard library only: no hub access here (that is matrix/releases.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

PACKAGED = Path(__file__).resolve().parent
ENV = "DAYONE_RELEASES"

# Files of a release the catalogue keeps: configuration and tokenizer, never weights.
CONFIG_FILES = (
    "config.json",
    "generation_config.json",
    "params.json",
    "configuration.json",
    "preprocessor_config.json",
    "processor_config.json",
)
# The files of a tokenizer that transformers reads itself: what a shrunk copy carries.
HF_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "spiece.model",
    "sentencepiece.bpe.model",
)
# The catalogue also keeps vocabularies that only other libraries read (mistral-common's
# tekken, tiktoken's), as the release ships them.
TOKENIZER_FILES = (*HF_TOKENIZER_FILES, "tekken.json", "qwen.tiktoken", "tiktoken.model")
MAX_FILE_BYTES = 4 * 1024 * 1024  # larger tokenizer files are left out (and said so in SOURCE)
# A note saying the bytes were re-saved by someone else, or are not the base release.
NOT_PRISTINE = re.compile(r"\bNOT (pristine|a base release)\b")


@dataclass(frozen=True)
class Release:
    """One catalogued release: which repo, which bytes, and how far to trust them."""

    model_type: str
    repo: str
    path: Path
    files: tuple[str, ...]
    pristine: bool
    source: str  # "hub", or the mirror the bytes were copied from ("github:owner/name")
    commit: str | None  # the commit of `source` the bytes are from
    revision: str | None  # the hub commit sha, when the bytes came from the hub
    notes: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()  # files the repo has that the catalogue left out (size, LFS)
    # The copy is of the release's text model (a multimodal release's `text_config`, of the
    # type asked for): Gemma 4 and Qwen 3.5 ship only their multimodal config.
    text_part: bool = False

    def file(self, name: str) -> Path:
        return self.path / name

    def has_vocabulary(self) -> bool:
        """The release's own tokenizer is here, not only its configuration."""
        names = set(self.files)
        return (
            "tokenizer.json" in names
            or {"vocab.json", "merges.txt"} <= names
            or bool(names & {"tokenizer.model", "spiece.model", "sentencepiece.bpe.model"})
        )

    def digest(self) -> str:
        """What the files say, hashed: a changed release is a new sweep revision."""
        h = hashlib.sha1()
        for name in self.files:
            h.update(name.encode() + b"\0" + self.file(name).read_bytes() + b"\0")
        return h.hexdigest()

    def config(self) -> dict[str, Any]:
        """The config the copy is shrunk from: config.json, or its text_config for a text part
        (the release's dtype where the text part names none)."""
        data = json.loads(self.file("config.json").read_text(encoding="utf-8"))
        if not self.text_part:
            return data
        text = dict(data.get("text_config") or {})
        for key in ("dtype", "torch_dtype"):
            if key in data and "dtype" not in text and "torch_dtype" not in text:
                text[key] = data[key]
        return text

    def lineage(self) -> dict[str, object]:
        """The model record's `lineage`: the release this copy was shrunk from."""
        out: dict[str, object] = {
            "source": "release",
            "repo": self.repo,
            "revision": self.revision,
            "pristine": self.pristine,
        }
        if self.text_part:
            out["part"] = "text_config"
        if self.source != "hub":
            out["copied_from"] = f"{self.source}@{self.commit}" if self.commit else self.source
        return out


def parse_source(text: str) -> dict[str, list[str]]:
    """SOURCE's `key: value` lines; a key may repeat (file:, note:)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and " " not in key.strip():
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def read_entry(path: Path) -> Release | None:
    """The entry in `path` (`<model_type>/<org>__<name>/`), or None when it is not one."""
    try:
        fields = parse_source((path / "SOURCE").read_text(encoding="utf-8"))
    except OSError:
        return None
    if not (path / "config.json").is_file():
        return None
    first = {k: v[0] for k, v in fields.items()}
    notes = tuple(fields.get("note", []))
    files = tuple(
        sorted(
            p.name
            for p in path.iterdir()
            if p.is_file() and p.name != "SOURCE" and not p.name.startswith(".")
        )
    )
    source = first.get("source", "hub")
    return Release(
        model_type=path.parent.name,
        repo=first.get("hf_repo_id") or path.name.replace("__", "/", 1),
        path=path,
        files=files,
        pristine=not any(NOT_PRISTINE.search(n) for n in notes),
        source=source,
        commit=first.get("commit"),
        revision=first.get("revision") if source == "hub" else None,
        notes=notes,
        missing=tuple(v.split()[0] for v in fields.get("not-copied", []) if v),
    )


def roots() -> list[Path]:
    """Where entries are read from, first wins: $DAYONE_RELEASES, then the packaged ones."""
    extra = [Path(p) for p in os.environ.get(ENV, "").split(os.pathsep) if p]
    return [*extra, PACKAGED]


def entries(model_type: str | None = None, *, where: list[Path] | None = None) -> list[Release]:
    """Every entry (of `model_type`), in preference order: by root, then pristine ones, then
    those with their own vocabulary, then by repo."""
    found: list[Release] = []
    for root in where if where is not None else roots():
        if model_type:
            dirs = [root / model_type]
        else:
            dirs = sorted(p for p in root.glob("*") if p.is_dir() and p.name[0] not in "_.")
        batch = [
            r
            for d in dirs
            if d.is_dir()
            for e in sorted(d.iterdir())
            if e.is_dir()
            if (r := read_entry(e)) is not None
        ]
        batch.sort(key=lambda r: (r.model_type, not r.pristine, not r.has_vocabulary(), r.repo))
        found += batch
    return found


def lookup(model_type: str, *, where: list[Path] | None = None) -> Release | None:
    """The release a shrunk copy of `model_type` starts from; None: no release known. A type
    with no release of its own may be the text model of a multimodal one (gemma4_text in
    Gemma 4's config.json): that release, as its text part."""
    found = entries(model_type, where=where)
    if found:
        return found[0]
    for release in entries(where=where):
        try:
            text = json.loads(release.file("config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        part = text.get("text_config") if isinstance(text, dict) else None
        if isinstance(part, dict) and part.get("model_type") == model_type and states_geometry(part):
            return replace(release, text_part=True)
    return None


GEOMETRY_KEYS = ("hidden_size", "n_embd", "d_model")


def states_geometry(config: dict[str, Any]) -> bool:
    """The text_config says what its model is. Fuyu's says only `{"model_type": "persimmon"}`
    (its geometry is at the top level, under Fuyu's names): a copy from it would start from
    transformers' defaults, not from the release, so it is no release of that type."""
    return any(key in config for key in GEOMETRY_KEYS)


def model_types(*, where: list[Path] | None = None) -> list[str]:
    return sorted({r.model_type for r in entries(where=where)})
