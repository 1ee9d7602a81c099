"""The arch-tier sweep: every causal-LM architecture the reference transformers knows, shrunk
(from its catalogued release where there is one, probes.releases) in one reference process,
then probed in every given engine environment on the nightly's execution (bounded, journaled,
resumable): the full map of which engine runs which architecture.

    dayone sweep [--types a,b] [--shard i/n] [--engine E ...] [--jobs N]
    (or python -m matrix.nightly --sweep [--types a,b] [--shard i/n])

`--shard i/n` probes one n-th of the architectures (a CI job of the nightly's matrix each):
which shard a type is in depends on the type alone (`sweep_shard_of`).

The main job (`dayone demo`) runs the same sweep over the newest families only
(matrix/newest_families.json, read by `newest_families`).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from matrix import probing
from matrix.nightly import (
    NightlyOptions,
    NightlyReport,
    Shrinker,
    _Context,
    _prepare,
    _reference_python,
    execute,
)
from matrix.plan import plan
from probes.stages import ADAPTER_STAGES, ARCH_MAP_STAGES, FINETUNE_STAGES, QUANT_STAGES

NEWEST_FAMILIES_PATH = Path(__file__).resolve().parent / "newest_families.json"


def newest_families(path: Path | None = None) -> dict[str, str]:
    """{model_type: family} of the newest families the main job probes besides the fixtures,
    in the file's order (matrix/newest_families.json)."""
    data = json.loads(Path(path or NEWEST_FAMILIES_PATH).read_text(encoding="utf-8"))
    return {f["model_type"]: f["family"] for f in data["families"]}


@dataclass(frozen=True)
class SweepModel:
    """One architecture the reference knows, as a model: `arch/<model_type>`."""

    id: str
    revision: str
    model_type: str
    model_dir: str | None = None
    skip_reason: str | None = None
    architecture: str | None = None
    created_at: str | None = None
    lineage: dict[str, Any] | None = None  # the release it is shrunk from, or synthetic


def sweep_shard_of(model_type: str, shards: int) -> int:
    """The 1-based shard a type belongs to: a hash of the type alone, so it stays put whatever
    the list's order or the other types (a new architecture moves no other)."""
    digest = hashlib.sha256(model_type.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shards + 1


def parse_shard(text: str) -> tuple[int, int]:
    """`i/n` (1-based, as GitHub matrices count) -> (i, n); anything else is a clear error."""
    index, sep, count = text.strip().partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/n, e.g. 1/4") from None
    if not sep or n < 1 or not 1 <= i <= n:
        raise ValueError(f"--shard {text!r}: expected i/n with 1 <= i <= n, e.g. 1/4")
    return i, n


def select_shard(types: Iterable[str], shard: tuple[int, int] | None) -> list[str]:
    """The types of one shard, in the order given (all of them without a shard)."""
    if shard is None:
        return list(types)
    i, n = shard
    return [t for t in types if sweep_shard_of(t, n) == i]


def sweep_stages(options: NightlyOptions) -> tuple[str, ...]:
    """The stages the sweep runs: the map's, less the quantize stages under --no-quantize and
    the fine-tuning ones under --no-finetune."""
    tuning = FINETUNE_STAGES + ADAPTER_STAGES  # training, and serving what was trained
    left_out = (() if options.quantize else QUANT_STAGES) + (() if options.finetune else tuning)
    return tuple(s for s in ARCH_MAP_STAGES if s not in left_out)


def run_sweep(
    options: NightlyOptions,
    *,
    types: Sequence[str] | None = None,
    shard: tuple[int, int] | None = None,
    say: Callable[[str], None] = print,
    console: Any = None,
) -> NightlyReport:
    """The arch tier over every causal-LM architecture the reference transformers knows, in
    every given engine environment: the full map of which engine runs which architecture.
    A type that cannot be shrunk gets `error` records with why, never silence."""
    started = time.monotonic()
    run_id, journal, envs, done, unresolved = _prepare(replace(options, tier="arch"), say)
    report = NightlyReport(run_id=run_id, errors=unresolved)
    ref = _reference_python(envs, say)
    ref_version = _python_package_version(ref, "transformers")
    if not types:
        proc = subprocess.run(
            [ref, "-m", "probes.shrink", "--list-types"],
            capture_output=True,
            text=True,
            env=probing.engine_env_vars(),
            timeout=300,
            check=True,
        )
        types = proc.stdout.split()
    types = select_shard(types, shard)
    # Every copy is built first (one reference process, about a second a type): its revision is
    # a hash of the copy itself, so only copies that changed are probed again.
    root = options.home() / "sweep" / ref_version
    rows = {row["model_type"]: row for row in _build_sweep(ref, root, types, say)}
    models = [_sweep_model(t, rows.get(t), ref_version) for t in types]
    report.discovered = len(models)
    targets = [replace(t, stages=tuple(s for s in t.stages if s in sweep_stages(options))) for t, _e in envs]
    tasks = plan(models, targets, done, max_error_attempts=options.max_error_attempts)
    report.tasks = tasks
    say(
        f"sweep {run_id}: {len(models)} architectures (transformers {ref_version}"
        + (f", shard {shard[0]}/{shard[1]}" if shard else "")
        + "), "
        f"{len(envs)} environments -> {len(tasks)} probes"
    )
    if tasks and not options.dry_run:
        shrinker = Shrinker(root, ref, prebuilt=True)
        for m in models:
            if m.model_dir is None:
                why = (rows.get(m.model_type) or {}).get("why", "not built")
                shrinker.remember_failure(
                    m.id, m.revision, f"shrink failed: {why}", shrinker.type_command(m.model_type)
                )
        tasks = [
            replace(
                t,
                model_dir=next(
                    (m.model_dir for m in models if (m.id, m.revision) == (t.model_id, t.revision)), None
                ),
            )
            for t in tasks
        ]
        ctx = _Context(
            options=replace(options, tier="arch"),
            run_id=run_id,
            journal=journal,
            shrinker=shrinker,
            models={(m.id, m.revision): m for m in models},
        )
        execute(tasks, ctx, report, console)
        if options.store:
            journal.clear()
    report.seconds = time.monotonic() - started
    return report


def _sweep_model(model_type: str, row: dict[str, Any] | None, ref_version: str) -> SweepModel:
    """The sweep's model of one type: revised by its built copy's content (a type that could
    not be shrunk keeps the revision of its recipe, so a rule change tries it again)."""
    from probes.shrink.catalogue import copy_revision, sweep_revision, type_lineage

    lineage = type_lineage(model_type)
    if row is None or row.get("status") != "ok":
        return SweepModel(
            id=f"arch/{model_type}",
            revision=sweep_revision(model_type, ref_version),
            model_type=model_type,
            lineage=lineage,
        )
    return SweepModel(
        id=f"arch/{model_type}",
        model_type=model_type,
        lineage=lineage,
        revision=copy_revision(row["out_dir"], ref_version),
        model_dir=row["out_dir"],
        architecture=row.get("architecture"),
    )


def _build_sweep(
    python: str, root: Path, types: Sequence[str], say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Shrink every needed type in one reference process (import once, ~1 s a type)."""
    report = root / "shrink-report.json"
    root.mkdir(parents=True, exist_ok=True)
    say(f"shrinking {len(types)} architectures into {root}")
    proc = subprocess.run(
        [
            python,
            "-m",
            "probes.shrink",
            "--sweep",
            str(root),
            "--types",
            ",".join(types),
            "--no-generate",
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=3600,
        env=probing.engine_env_vars(),
    )
    if proc.returncode != 0 or not report.exists():
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [{"model_type": t, "status": "error", "why": f"sweep shrink crashed: {why}"} for t in types]
    return json.loads(report.read_text())["rows"]


def _python_package_version(python: str, package: str) -> str:
    proc = subprocess.run(
        [python, "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return proc.stdout.strip()
