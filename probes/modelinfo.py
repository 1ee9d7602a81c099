"""What a model directory says about itself, read defensively (it is untrusted input)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

MAX_CONFIG_BYTES = 1024 * 1024


@dataclass
class ModelInfo:
    id: str
    revision: str | None
    model_type: str | None
    architecture: str | None
    release_date: str | None = None
    family: str | None = None

    def as_record(self) -> dict:
        return {k: v for k, v in asdict(self).items()}


def _read_json(path: Path) -> dict | None:
    try:
        if path.is_symlink() or path.stat().st_size > MAX_CONFIG_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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


def read_model_info(model_dir: Path, model_id: str | None = None) -> ModelInfo:
    model_dir = Path(model_dir)
    config = _read_json(model_dir / "config.json") or {}
    meta = _read_json(model_dir / "dayone.json") or {}
    archs = config.get("architectures")
    model_type = config.get("model_type")
    return ModelInfo(
        id=model_id or meta.get("id") or model_dir.name or os.fspath(model_dir),
        revision=meta.get("revision") or local_revision(model_dir),
        model_type=model_type if isinstance(model_type, str) else None,
        architecture=archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None,
        release_date=meta.get("release_date") if isinstance(meta.get("release_date"), str) else None,
        family=meta.get("family") if isinstance(meta.get("family"), str) else None,
    )
