"""The nightly: discover -> plan -> execute -> ingest, resumable (the arch-tier sweep over
every architecture is matrix/sweep.py, on the same execution).

Discovery and planning are the pure functions of matrix.discover and matrix.plan; this module is
the shell around them: it resolves engine environments, shrinks each new architecture once (in
the reference transformers environment), runs probes with bounded, engine-aware parallelism
(a heavy engine such as vLLM runs alone), shows progress live (rich), and keeps a journal.

Resumable: every finished (model revision, environment) appends all its records to the journal
in one write, then ingests them (idempotent). A new run first ingests the journal, then plans
against the store and the journal together, so a run killed at any point is finished by the
next one, with no result lost or stored twice.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matrix import probing
from matrix.discover import DiscoveredModel, Watchlist, discover
from matrix.plan import DoneIndex, EnvironmentTarget, ProbeTask, plan, summarize
from probes.engines import REFERENCE_ENGINE
from probes.record import Record, unrun_records
from probes.runner import read_events


# Pure helpers


def synthetic_records(
    task: ProbeTask,
    *,
    status: str,
    message: str,
    tier: str,
    run_id: str,
    failure_class: str | None = None,
    model: dict[str, Any] | None = None,
    reproduce: str | None = None,
    now: dt.datetime | None = None,
) -> list[Record]:
    """Records for stages that never ran: `skipped` (gated, no config) or `error` (our shrink
    failed), one per stage, in the result contract."""
    started = (now or dt.datetime.now(dt.timezone.utc)).isoformat()
    return unrun_records(
        stages=task.stages,
        model=model or {"id": task.model_id, "revision": task.revision or None},
        engine={"name": task.engine, "version": task.version, "environment_id": task.environment_id},
        status=status,
        message=message,
        started_at=started,
        tier=tier,
        run_id=run_id,
        failure_class=failure_class,
        reproduce=reproduce,
    )


FINAL_ERROR_CLASSES = frozenset({"shrink"})  # deterministic for a revision: retrying is waste


def plan_status(status: str, failure_class: str | None) -> str:
    """The status the planner sees: an `error` is retried, unless retrying cannot help (our
    shrink of this exact revision failed: the same rules give the same answer)."""
    if status == "error" and failure_class in FINAL_ERROR_CLASSES:
        return "error-final"
    return status


def done_rows(records: Iterable[dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    """(model id, revision, environment id, stage, status) of records, for the DoneIndex."""
    rows = []
    for r in records:
        try:
            rows.append(
                (
                    r["model"]["id"],
                    r["model"].get("revision") or "",
                    r["engine"]["environment_id"],
                    r["stage"],
                    plan_status(r["status"], r.get("failure_class")),
                )
            )
        except (KeyError, TypeError, AttributeError):
            continue
    return rows


def next_task(pending: Sequence[ProbeTask], heavy_running: int, max_heavy: int = 1) -> int | None:
    """Index of the next task to start: in order, except that a heavy engine waits while
    `max_heavy` heavy ones run (a light task may pass it)."""
    for i, task in enumerate(pending):
        if not task.heavy or heavy_running < max_heavy:
            return i
    return None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80] or "model"


# The journal: what this and earlier interrupted runs finished


class Journal:
    """Append-only JSON lines of records; one task's records go in one write."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        if not records:
            return
        data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

    def clear(self) -> None:
        with self._lock:
            self.path.unlink(missing_ok=True)

    def read(self) -> list[dict[str, Any]]:
        # A line torn by a kill mid-write is skipped, as the runner skips a torn event: that
        # task runs again.
        return read_events(self.path)


# Settings and report


@dataclass
class NightlyOptions:
    engines: list[str] = field(default_factory=lambda: [REFERENCE_ENGINE])
    tier: str = "arch"
    jobs: int = 2
    max_heavy: int = 1
    store: bool = True
    db: str | None = None
    out: Path | None = None  # this run's records, JSON lines (CI artifacts)
    work_dir: Path | None = None  # shrunk copies, journal, downloads
    timeout_s: float = 900.0
    memory_mb: int = 8192
    endpoint: str | None = None
    token: str | bool | None = None
    max_error_attempts: int = 2
    dry_run: bool = False
    run_id: str | None = None
    # Run each new red's bare reproduce command once, right after its probe (matrix/confirm.py).
    confirm: bool = True
    # The sweep's quantize stage (probes/stages.py:QUANT_STAGES) where the engine runs one.
    quantize: bool = True
    # The sweep's fine-tuning stage (probes/stages.py:FINETUNE_STAGES) in PEFT and TRL.
    finetune: bool = True
    # Which locks of each release to probe (matrix/locks.py): "today", "release" or both;
    # two that lock alike are one environment, probed once.
    resolutions: tuple[str, ...] = ("today",)
    # Where each probe runs: "local" (a venv) or "docker" (the engine's image, of image_flavor).
    executor: str = "local"
    image_flavor: str = "cpu"

    def home(self) -> Path:
        if self.work_dir:
            return Path(self.work_dir)
        from matrix.paths import dayone_home

        return dayone_home() / "nightly"


@dataclass
class NightlyReport:
    run_id: str
    discovered: int = 0
    tasks: list[ProbeTask] = field(default_factory=list)
    finished: int = 0
    records: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "discovered": self.discovered,
            **summarize(self.tasks),
            "finished": self.finished,
            "records": self.records,
            "statuses": dict(self.statuses),
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
        }


# Environments and history


def resolve_environments(
    engines: Sequence[str],
    say: Callable[[str], None] = print,
    resolutions: Sequence[str] = ("today",),
    unresolved: list[str] | None = None,
) -> list[tuple[EnvironmentTarget, Any]]:
    """Each engine's environment per resolution asked; the release-day one first (so a night's
    series reads "as released, then as installed today"), and one target per environment.
    With `unresolved`, one that cannot be resolved or built is said and listed there with why,
    and the others go on (no verdict about the engine: it never ran); without, it raises."""
    from matrix.environments import ensure_env
    from matrix.locks import RESOLUTIONS
    from probes.engines import get_spec, parse_engine_arg

    ordered = [r for r in reversed(RESOLUTIONS) if r in resolutions]
    out: list[tuple[EnvironmentTarget, Any]] = []
    for arg in engines:
        name, version = parse_engine_arg(arg)
        spec = get_spec(name)
        for resolution in ordered:
            try:
                env = ensure_env(name, version, say=say, resolution=resolution)
            except RuntimeError as exc:
                if unresolved is None:
                    raise
                why = f"{arg} ({resolution}): not probed, its environment cannot be made: {exc}"
                say(why)
                unresolved.append(why)
                continue
            if any(t.environment_id == env.environment_id for t, _ in out):
                continue  # both resolutions locked alike: one environment
            out.append(
                (
                    EnvironmentTarget(
                        environment_id=env.environment_id,
                        engine=name,
                        version=env.version,
                        stages=tuple(spec.stages),
                        heavy=spec.heavy,
                        resolution=resolution,
                    ),
                    env,
                )
            )
    return out


def store_rows(db: str | None) -> list[tuple[str, str, str, str, str]]:
    """What the store holds: the latest status per cell and stage, plus each error seen (so a
    stage that keeps erroring is retried a bounded number of nights)."""
    from sqlalchemy import func, select

    from matrix.store import CellLatest, Environment, ModelRevision, Result, open_store

    store = open_store(db)
    try:
        with store.session() as session:
            latest = session.execute(
                select(
                    ModelRevision.model_id,
                    ModelRevision.revision,
                    Environment.environment_id,
                    CellLatest.stage,
                    CellLatest.status,
                )
                .join(ModelRevision, ModelRevision.id == CellLatest.model_revision_pk)
                .join(Environment, Environment.id == CellLatest.environment_pk)
                .where(CellLatest.status != "error")
            ).all()
            errors = session.execute(
                select(
                    ModelRevision.model_id,
                    ModelRevision.revision,
                    Environment.environment_id,
                    Result.stage,
                    Result.failure_class,
                    func.count(),
                )
                .join(ModelRevision, ModelRevision.id == Result.model_revision_pk)
                .join(Environment, Environment.id == Result.environment_pk)
                .where(Result.status == "error")
                .group_by(
                    ModelRevision.model_id,
                    ModelRevision.revision,
                    Environment.environment_id,
                    Result.stage,
                    Result.failure_class,
                )
            ).all()
    finally:
        store.close()
    rows: list[tuple[str, str, str, str, str]] = [
        (m, rev, env, stage, status) for m, rev, env, stage, status in latest
    ]
    for model_id, revision, env_id, stage, failure_class, count in errors:
        rows += [(model_id, revision, env_id, stage, plan_status("error", failure_class))] * int(count)
    return rows


def ingest(db: str | None, records: Sequence[dict[str, Any]]) -> Any:
    from matrix.ingest import ingest_records
    from matrix.store import open_store

    store = open_store(db)
    try:
        with store.writing() as session:
            return ingest_records(session, records)
    finally:
        store.close()


# Arch tier: one shrunk copy per model revision, built in the reference environment


class ShrinkFailed(Exception):
    def __init__(self, why: str, command: str):
        super().__init__(why)
        self.command = command


class Shrinker:
    """Builds (once) and remembers the shrunk copy of each model revision. `prebuilt`: the
    copies exist already (the sweep builds every type in one process) and tasks point at them."""

    def __init__(self, root: Path, reference_python: str, prebuilt: bool = False):
        self.root = Path(root)
        self.python = reference_python
        self.prebuilt = prebuilt
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self._failed: dict[tuple[str, str], ShrinkFailed] = {}

    def out_dir(self, model_id: str, revision: str) -> Path:
        return self.root / _safe(model_id) / (revision[:16] or "local")

    def command(self, source: str, out: Path, meta: dict[str, Any]) -> list[str]:
        return [self.python, "-m", "probes.shrink", source, str(out), "--meta", json.dumps(meta)]

    def bare(self, cmd: list[str]) -> str:
        return f"PYTHONPATH={shlex.quote(str(probing.probes_root()))} {shlex.join(cmd)}"

    def type_command(self, model_type: str) -> str:
        return self.bare(
            [self.python, "-m", "probes.shrink", "--model-type", model_type, str(self.root / model_type)]
        )

    def shrink(self, task: ProbeTask, meta: dict[str, Any]) -> tuple[Path, str]:
        key = (task.model_id, task.revision)
        if self.prebuilt:
            if key in self._failed:
                raise self._failed[key]
            typed = self.type_command(task.model_id.split("/", 1)[-1])
            if not task.model_dir:
                raise ShrinkFailed("shrink failed: no shrunk copy was built", typed)
            return Path(task.model_dir), typed
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._failed:
                raise self._failed[key]
            out = self.out_dir(*key)
            cmd = self.command(str(task.model_dir), out, meta)
            bare = self.bare(cmd)
            if (out / "dayone.json").exists() and (out / "config.json").exists():
                return out, bare
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=900, env=probing.engine_env_vars()
            )
            answer = _last_json(proc.stdout)
            if proc.returncode != 0 or answer.get("status") != "ok":
                why = answer.get("why") or (proc.stderr.strip().splitlines() or ["no output"])[-1]
                self._failed[key] = ShrinkFailed(f"shrink failed: {why}", bare)
                raise self._failed[key]
            return out, bare

    def remember_failure(self, model_id: str, revision: str, why: str, command: str) -> None:
        self._failed[(model_id, revision)] = ShrinkFailed(why, command)


def _last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return {}


# Execution


@dataclass
class _Context:
    options: NightlyOptions
    run_id: str
    journal: Journal
    shrinker: Shrinker | None
    models: dict[tuple[str, str], Any]
    out_lock: threading.Lock = field(default_factory=threading.Lock)


def _model_meta(model: Any) -> dict[str, Any]:
    created = getattr(model, "created_at", None)
    meta = {"id": model.id, "revision": model.revision or None}
    if created:
        meta["release_date"] = str(created)[:10]
    if getattr(model, "model_type", None):
        meta["family"] = model.model_type
    return meta


def run_task(task: ProbeTask, ctx: _Context) -> list[Record]:
    """One (model revision, environment): the records of its stages, whatever happens."""
    from matrix.probing import ProbeSettings, probe

    opts = ctx.options
    model = ctx.models.get((task.model_id, task.revision))
    meta = _model_meta(model) if model is not None else {"id": task.model_id, "revision": task.revision}
    record_model = {
        "id": task.model_id,
        "revision": task.revision or None,
        "model_type": getattr(model, "model_type", None),
        "architecture": getattr(model, "architecture", None),
    }
    if lineage := getattr(model, "lineage", None):  # a sweep copy's origin, also when never built
        record_model["lineage"] = lineage
    if task.skip_reason:
        return synthetic_records(
            task,
            status="skipped",
            message=task.skip_reason,
            tier=opts.tier,
            run_id=ctx.run_id,
            model=record_model,
        )
    shrink_cmd = None
    try:
        if opts.tier == "arch":
            assert ctx.shrinker is not None
            model_dir, shrink_cmd = ctx.shrinker.shrink(task, meta)
        else:
            model_dir = _download_full(task, model, opts)
    except ShrinkFailed as exc:
        return synthetic_records(
            task,
            status="error",
            failure_class="shrink",
            message=str(exc),
            tier=opts.tier,
            run_id=ctx.run_id,
            model=record_model,
            reproduce=exc.command,
        )
    except Exception as exc:  # noqa: BLE001 - a download error is ours, not the engine's
        return synthetic_records(
            task,
            status="error",
            failure_class="infra",
            message=f"{type(exc).__name__}: {exc}"[:500],
            tier=opts.tier,
            run_id=ctx.run_id,
            model=record_model,
        )
    settings = ProbeSettings(
        timeout_s=opts.timeout_s,
        memory_mb=opts.memory_mb,
        tier=opts.tier,
        run_id=ctx.run_id,
        logs_root=opts.home() / "logs",
        options=probe_options(model_dir),
        resolution=task.resolution,
        executor=opts.executor,
        image_flavor=opts.image_flavor,
    )
    records = probe(
        Path(model_dir),
        task.engine,
        task.version,
        list(task.stages),
        model_id=task.model_id,
        settings=settings,
        say=lambda _m: None,
    )
    if opts.confirm:
        # Before the shrink prefix: the copy is right here, and shrinking it again while other
        # probes read it would be a race of ours, not the engine's.
        from matrix.confirm import ConfirmSettings, confirm_records

        records = confirm_records(
            records, ConfirmSettings(timeout_s=opts.timeout_s, memory_mb=opts.memory_mb), say=lambda _m: None
        )
    if shrink_cmd:
        # The verdict must be reproducible from nothing but the release's config: the shrink
        # command first, then the engine's own.
        for r in records:
            r["reproduce"] = f"{shrink_cmd} && {r['reproduce']}" if r.get("reproduce") else shrink_cmd
    return records


def probe_options(model_dir: Path) -> dict[str, Any]:
    """Engine options a shrunk copy needs, so that no verdict is about our copy: with a tokenizer
    we trained, llama.cpp's converter may fall back on an unknown pre-tokenizer hash (on a
    release's own tokenizer it may not: there an unknown hash is a day-one failure); and what
    the shrink rules say engines must be told (dayone.json `engine_options`: a Qwen 3.5 copy
    has no multi-token-prediction weights, so its GGUF conversion gets --no-mtp)."""
    try:
        meta = json.loads((Path(model_dir) / "dayone.json").read_text())
    except (OSError, ValueError):
        return {}
    if meta.get("tier") != "arch":
        return {}
    options: dict[str, Any] = dict(meta.get("engine_options") or {})
    if meta.get("tokenizer") == "fixture":
        options["pretokenizer_fallback"] = True
    return options


def _download_full(task: ProbeTask, model: Any, opts: NightlyOptions) -> Path:
    """Full tier: the real weights at the planned sha; a local model is used in place."""
    if getattr(model, "source", "hub") == "local" and task.model_dir:
        return Path(task.model_dir)
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(
            task.model_id,
            revision=task.revision or None,
            endpoint=opts.endpoint,
            token=opts.token,
            cache_dir=opts.home() / "hf",
        )
    )


def execute(tasks: Sequence[ProbeTask], ctx: _Context, report: NightlyReport, console: Any = None) -> None:
    """Run the tasks, `jobs` at a time, at most `max_heavy` heavy engines at once, with a live
    progress bar; each task's records are journaled, written to --out and ingested as it ends."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)
    opts = ctx.options
    pending = list(tasks)
    running: dict[cf.Future, ProbeTask] = {}
    with (
        Progress(
            TextColumn("[bold]nightly"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=console,
            transient=False,
        ) as progress,
        cf.ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool,
    ):
        bar = progress.add_task("", total=len(pending))
        while pending or running:
            heavy = sum(1 for t in running.values() if t.heavy)
            while pending and len(running) < max(1, opts.jobs):
                i = next_task(pending, heavy, opts.max_heavy)
                if i is None:
                    break
                task = pending.pop(i)
                heavy += task.heavy
                running[pool.submit(run_task, task, ctx)] = task
            progress.update(
                bar, description=", ".join(f"{t.model_id} x {t.engine}" for t in running.values())[:120]
            )
            done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
            for future in done:
                task = running.pop(future)
                try:
                    records = future.result()
                except Exception as exc:  # noqa: BLE001 - a harness bug is an `error` record
                    records = synthetic_records(
                        task,
                        status="error",
                        failure_class="infra",
                        message=f"harness: {type(exc).__name__}: {exc}",
                        tier=opts.tier,
                        run_id=ctx.run_id,
                    )
                _finish(task, records, ctx, report)
                statuses = Counter(r["status"] for r in records)
                bare = Counter(
                    (r.get("confirmation") or {}).get("verdict") for r in records if r.get("confirmation")
                )
                progress.console.print(
                    f"{task.model_id} @ {task.revision[:8]} x {task.engine} {task.version}: "
                    + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
                    + ("; bare: " + ", ".join(f"{n} {v}" for v, n in sorted(bare.items())) if bare else "")
                )
                progress.advance(bar)


def _finish(task: ProbeTask, records: list[dict[str, Any]], ctx: _Context, report: NightlyReport) -> None:
    ctx.journal.append(records)
    if ctx.options.out:
        with ctx.out_lock, open(ctx.options.out, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    if ctx.options.store:
        ingest(ctx.options.db, records)
    report.finished += 1
    report.records += len(records)
    report.statuses.update(r["status"] for r in records)


# Entry points


def _prepare(
    options: NightlyOptions, say: Callable[[str], None]
) -> tuple[str, Journal, list[tuple[EnvironmentTarget, Any]], DoneIndex, list[str]]:
    """(run id, journal, the environments, what is done, why each environment that could not be
    made was left out)."""
    from matrix.probing import new_run_id

    run_id = options.run_id or new_run_id()
    journal = Journal(options.home() / "journal.jsonl")
    previous = journal.read()
    if options.store and previous:
        ingest(options.db, previous)  # a killed run's finished tasks: stored once, idempotent
    unresolved: list[str] = []
    envs = resolve_environments(
        options.engines, say=say, resolutions=options.resolutions, unresolved=unresolved
    )
    rows = done_rows(previous)
    if options.store or (options.db or os.environ.get("DAYONE_DB")) or _store_file_exists():
        rows += store_rows(options.db)
    return run_id, journal, envs, DoneIndex.from_rows(rows), unresolved


def _store_file_exists() -> bool:
    from matrix.paths import dayone_home

    return (dayone_home() / "dayone.db").exists()


def _reference_python(envs: list[tuple[EnvironmentTarget, Any]], say: Callable[[str], None]) -> str:
    """The reference transformers, the release copies are shrunk in: a probed environment of that
    release where the night has one. Never another transformers release the night probes: an
    older one may not know the architecture, or saves the copy otherwise."""
    from matrix.environments import ensure_env
    from probes.engines import get_spec

    reference = get_spec(REFERENCE_ENGINE).default_version
    for target, env in envs:
        if target.engine == REFERENCE_ENGINE and target.version == reference:
            return env.python

    return ensure_env(REFERENCE_ENGINE, say=say).python


def run_nightly(
    watchlist: Watchlist | None,
    options: NightlyOptions,
    *,
    models: Sequence[DiscoveredModel] | None = None,
    say: Callable[[str], None] = print,
    console: Any = None,
) -> NightlyReport:
    """Discover (or take `models`), plan against the store and the journal, execute, ingest."""
    started = time.monotonic()
    run_id, journal, envs, done, unresolved = _prepare(options, say)
    report = NightlyReport(run_id=run_id, errors=unresolved)
    if models is None:
        found = discover(
            watchlist or Watchlist(),
            endpoint=options.endpoint,
            token=options.token,
            cache_dir=options.home() / "hf",
        )
        models = found.models
        report.errors += found.errors
    report.discovered = len(models)
    report.tasks = plan(models, [t for t, _e in envs], done, max_error_attempts=options.max_error_attempts)
    say(
        f"nightly {run_id}: {report.discovered} models, {len(envs)} environments -> "
        f"{len(report.tasks)} probes ({summarize(report.tasks)['stages']} stages)"
    )
    if report.tasks and not options.dry_run:
        shrinker = (
            Shrinker(options.home() / "arch", _reference_python(envs, say))
            if options.tier == "arch"
            else None
        )
        ctx = _Context(
            options=options,
            run_id=run_id,
            journal=journal,
            shrinker=shrinker,
            models={(m.id, m.revision or ""): m for m in models},
        )
        execute(report.tasks, ctx, report, console)
        if options.store:
            journal.clear()  # everything it held is in the store now
    report.seconds = time.monotonic() - started
    return report


if __name__ == "__main__":  # a thin runner for tests and cron until the CLI has `nightly`
    import argparse

    ap = argparse.ArgumentParser(prog="python -m matrix.nightly")
    ap.add_argument("--watchlist")
    ap.add_argument("--engine", action="append", default=[])
    ap.add_argument("--tier", default="arch")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--no-store", action="store_true")
    ap.add_argument("--endpoint")
    ap.add_argument("--work-dir")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--types")
    ap.add_argument("--shard", help="with --sweep: i/n, one n-th of the architectures")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--no-confirm", action="store_true", help="do not confirm new reds bare")
    a = ap.parse_args()
    from matrix.discover import load_watchlist

    opts = NightlyOptions(
        engines=a.engine or [REFERENCE_ENGINE],
        tier=a.tier,
        jobs=a.jobs,
        store=not a.no_store,
        out=Path(a.out) if a.out else None,
        endpoint=a.endpoint,
        token=False if a.endpoint else None,
        work_dir=Path(a.work_dir) if a.work_dir else None,
        dry_run=a.dry_run,
        confirm=not a.no_confirm,
    )
    if a.shard and not a.sweep:
        ap.error("--shard splits the sweep: give --sweep too")
    if a.sweep:
        from matrix.sweep import parse_shard, run_sweep

        try:
            shard = parse_shard(a.shard) if a.shard else None
        except ValueError as exc:
            ap.error(str(exc))
        rep = run_sweep(opts, types=[t for t in (a.types or "").split(",") if t] or None, shard=shard)
    else:
        rep = run_nightly(load_watchlist(a.watchlist) if a.watchlist else None, opts)
    print(json.dumps(rep.summary()))
    sys.exit(0)
