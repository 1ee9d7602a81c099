"""Filling a reference releases catalogue from the hub (`dayone releases refresh`).

Per model_type: the most downloaded repo whose config says that model_type, at its current
commit; its configuration and tokenizer files only (never weights), each under the size limit
(a larger one is listed as not copied). Written in probes.releases' layout, with a SOURCE file,
into a folder the catalogue then reads first ($DAYONE_RELEASES).
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probes.releases import CONFIG_FILES, MAX_FILE_BYTES, TOKENIZER_FILES

CANDIDATES = 20  # repos looked at per model_type, most downloaded first


@dataclass
class Refreshed:
    model_type: str
    repo: str | None = None
    revision: str | None = None
    downloads: int | None = None
    files: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    error: str | None = None


def pick(model_type: str, listed: Sequence[Any]) -> Any | None:
    """The most downloaded listed repo whose config states `model_type` (a tag alone is not
    enough: fine-tunes and quantizations carry their base's tags)."""
    ok = [
        m
        for m in listed
        if isinstance(getattr(m, "config", None), dict) and m.config.get("model_type") == model_type
    ]
    return max(ok, key=lambda m: getattr(m, "downloads", 0) or 0, default=None)


def wanted_files(names: Sequence[str]) -> list[str]:
    """A repo's files the catalogue keeps: top-level configuration and tokenizer files."""
    keep = set(CONFIG_FILES) | set(TOKENIZER_FILES)
    return sorted(n for n in names if "/" not in n and n in keep)


def refresh(
    out: Path,
    model_types: Sequence[str],
    *,
    endpoint: str | None = None,
    token: str | bool | None = None,
    max_file_bytes: int = MAX_FILE_BYTES,
    say: Callable[[str], None] = print,
) -> list[Refreshed]:
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url

    api = HfApi(endpoint=endpoint, token=token)
    rows = []
    for model_type in model_types:
        row = Refreshed(model_type)
        rows.append(row)
        try:
            listed = list(
                api.list_models(
                    filter=model_type, sort="downloads", limit=CANDIDATES, expand=["config", "downloads"]
                )
            )
            chosen = pick(model_type, listed)
            if chosen is None:
                row.error = f"no repo tagged {model_type} states model_type {model_type}"
                say(f"{model_type}: {row.error}")
                continue
            info = api.model_info(chosen.id, files_metadata=True)
            row.repo, row.revision = info.id, info.sha
            row.downloads = getattr(chosen, "downloads", None)
            sizes = {s.rfilename: getattr(s, "size", None) for s in info.siblings or []}
            target = Path(out) / model_type / info.id.replace("/", "__", 1)
            staging = target.with_name(target.name + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            files, skipped = [], []
            for name in wanted_files(list(sizes)):
                size = sizes[name]
                if size is None:
                    size = get_hf_file_metadata(
                        hf_hub_url(info.id, name, revision=info.sha, endpoint=endpoint), token=token
                    ).size
                if size is not None and size > max_file_bytes:
                    skipped.append(f"{name} (over {max_file_bytes} bytes: {size})")
                    continue
                path = hf_hub_download(
                    info.id,
                    name,
                    revision=info.sha,
                    endpoint=endpoint,
                    token=token,
                    cache_dir=Path(out) / ".hf",
                )
                shutil.copyfile(path, staging / name)
                files.append(name)
            if "config.json" not in files:
                shutil.rmtree(staging)
                row.error = f"{info.id} has no config.json"
                say(f"{model_type}: {row.error}")
                continue
            row.files, row.skipped = tuple(files), tuple(skipped)
            (staging / "SOURCE").write_text(source_text(row), encoding="utf-8")
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
            say(
                f"{model_type}: {info.id} @ {info.sha[:8]} ({len(files)} files"
                + (f", {len(skipped)} too big" if skipped else "")
                + ")"
            )
        except Exception as exc:  # noqa: BLE001 - one type's hub error never stops the rest
            row.error = f"{type(exc).__name__}: {exc}"[:300]
            say(f"{model_type}: {row.error}")
    return rows


def source_text(row: Refreshed) -> str:
    lines = [
        f"hf_repo_id: {row.repo}",
        "source: hub",
        f"revision: {row.revision}",
        f"downloads: {row.downloads}",
        f"fetched: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
    ]
    lines += [f"file: {n}" for n in row.files]
    lines += [f"not-copied: {s}" for s in row.skipped]
    lines.append(f"note: the most downloaded repo stating model_type {row.model_type}")
    return "\n".join(lines) + "\n"
