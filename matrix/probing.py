"""Probe one model in one engine environment: the host-side shell around probes.runner.

Ensures the engine's environment, runs the child in isolation, turns what it left into
records. No verdict is decided here (probes.record does that); this is I/O.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import subprocess
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from matrix import environments
from matrix.paths import dayone_home
from probes import parity, reproduce
from probes.engines import REFERENCE_ENGINE, EngineSpec, get_spec
from probes.modelinfo import escaping_links, not_generative, read_config, read_model_info
from probes.record import (
    Record,
    build_records,
    iso,
    not_applicable_records,
    refused_records,
    with_skipped_stage,
)
from probes.runner import ProbeRequest, child_environment, isolated_probes, run_probe
from probes.stages import order_stages, skip_message


def probes_root() -> Path:
    """The folder put on a probe child's PYTHONPATH: a copy of `probes` alone, in the cache
    (the folder above the installed package is site-packages, full of host packages)."""
    return isolated_probes(environments.cache_dir() / "probes")


def engine_env_vars() -> dict[str, str]:
    """Environment variables for any `python -m probes.X` run in an engine's environment."""
    return child_environment(dict(os.environ), {}, probes_root())


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80] or "model"


@dataclass
class ProbeSettings:
    timeout_s: float = 600.0
    memory_mb: int = 8192
    tier: str = "arch"
    run_id: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    logs_root: Path | None = None
    no_network: bool = False
    executor: str = "local"  # "local" (venv + process group) or "docker" (a container)
    # The docker executor's image: "cpu" (the venv's lock on dayone's base) or "production"
    # (the engine's own release image underneath: GPU runners).
    image_flavor: str = "cpu"
    log_suffix: str = ""  # "-reference": the reference probe's logs beside, never over, a probe's
    # Which lock of the engine release (matrix/locks.py): "today" (as pip installs it today)
    # or "release" (as on its release day).
    resolution: str = "today"


def reproduce_commands(
    engine: str | EngineSpec,
    python: str,
    model_dir: Path,
    stages: list[str],
    log_dir: Path | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The bare command that reproduces each stage: a small script of the engine's own API
    written into LOG_DIR (probes/reproduce.py), run with the probe's variables. Engines without
    a bare template (internal ones) get none."""
    if log_dir is None:
        import tempfile

        log_dir = Path(tempfile.mkdtemp(prefix="dayone-reproduce-"))
    return reproduce.write_scripts(engine, stages, Path(model_dir), Path(log_dir), python, options)


def probe(
    model_dir: Path,
    engine: str,
    version: str | None = None,
    stages: list[str] | None = None,
    *,
    model_id: str | None = None,
    settings: ProbeSettings | None = None,
    say: Callable[[str], None] = print,
) -> list[Record]:
    settings = settings or ProbeSettings()
    spec = get_spec(engine)
    stages = order_stages(stages or list(spec.stages))
    model_dir = Path(model_dir).resolve()
    model = read_model_info(model_dir, model_id).as_record()
    run_id = settings.run_id or new_run_id()
    asked = stages  # the stages as asked: refusals name them all, parity included

    def refuse(failure_class: str, message: str, engine_version: str | None = None) -> list[Record]:
        return refused_records(
            stages=asked,
            engine=engine,
            engine_version=engine_version or version or spec.default_version,
            model=model,
            failure_class=failure_class,
            tier=settings.tier,
            run_id=run_id,
            host=socket.gethostname(),
            message=message,
        )

    escapes = escaping_links(model_dir)
    if escapes:  # untrusted input: no engine may read outside the model directory
        return refuse(
            "corrupt_or_missing_weights", f"model directory links outside itself: {', '.join(escapes[:5])}"
        )
    why_not = not_generative(read_config(model_dir))
    if why_not:  # the probe does not apply: no verdict, not red, nothing run
        return not_applicable_records(
            stages=stages,
            engine=engine,
            engine_version=version or spec.default_version,
            model=model,
            why=why_not,
            tier=settings.tier,
            run_id=run_id,
            host=socket.gethostname(),
        )
    logs_root = settings.logs_root or dayone_home() / "logs"
    if settings.executor == "docker":
        return _probe_in_docker(model_dir, spec, version, stages, model, run_id, logs_root, settings, say)
    try:
        env = environments.ensure_env(spec, version, say=say, resolution=settings.resolution)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:  # ours, not the engine's
        return refuse("infra", f"the engine environment could not be built: {str(exc).strip()}")
    if env.broken:
        return refuse("infra", env.broken, env.version)
    options = dict(settings.options)
    no_reference = None
    if "parity" in stages and engine != REFERENCE_ENGINE:
        ref, no_reference = ensure_reference(model_dir, model, settings, say)
        if ref:
            options["reference_path"] = str(ref)
        else:  # not the engine's fault: parity is skipped, the later stages still run
            stages = [s for s in stages if s != "parity"]
    no_adapter = None
    # An adapter the caller names (with its merged model's reference) is served as it is.
    if "lora" in stages and not (options.get("lora_adapter") and options.get("lora_reference_path")):
        served, no_adapter = ensure_adapter(model_dir, model, settings, say)
        if served:
            options.update(served)
        else:  # not the engine's fault either: the served-adapter stage is skipped with why
            stages = [s for s in stages if s != "lora"]
    resolution = "" if settings.resolution == "today" else f"-{settings.resolution}"
    log_dir = (
        logs_root / run_id / _safe(model["id"]) / f"{engine}-{env.version}{resolution}{settings.log_suffix}"
    )
    req = ProbeRequest(
        engine=engine,
        model_dir=model_dir,
        stages=stages,
        python=env.python,
        probes_root=probes_root(),
        options=options,
        timeout_s=settings.timeout_s,
        memory_mb=settings.memory_mb,
        env=dict(spec.env),
        no_network=settings.no_network,
    )
    outcome = run_probe(req, log_dir)
    records = build_records(
        stages=stages,
        outcome=outcome,
        engine=engine,
        engine_version=env.version,
        model=model,
        tier=settings.tier,
        run_id=run_id,
        environment={
            "environment_id": env.environment_id,
            "resolved_packages": env.packages,
            "lock": env.lock or None,
        },
        reproduce=reproduce_commands(spec, env.python, model_dir, stages, log_dir, options),
        host=socket.gethostname(),
    )
    for stage, missing in (("parity", no_reference), ("lora", no_adapter)):
        if missing and records:
            why = skip_message(stage, {r["stage"]: r["status"] for r in records}, missing)
            records = with_skipped_stage(records, stage, why, iso(outcome.started_at))
    return records


def ensure_reference(
    model_dir: Path, model: dict[str, Any], settings: ProbeSettings, say: Callable[[str], None]
) -> tuple[Path | None, str | None]:
    """The transformers reference output for this model revision: computed once, reused.

    Returns (path, None), or (None, why) when transformers itself cannot produce it."""
    path = parity.reference_path_for(model, environments.cache_dir())
    path.parent.mkdir(parents=True, exist_ok=True)
    # Probes run in parallel (a nightly runs two engines at once): the first to come computes
    # the reference, the others wait for it and read it.
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return path, None
        say(f"computing the transformers reference for {model['id']} (once per revision)")
        ref_settings = ProbeSettings(
            timeout_s=settings.timeout_s,
            memory_mb=settings.memory_mb,
            tier=settings.tier,
            run_id=settings.run_id,
            options={"trust_remote_code": settings.options.get("trust_remote_code", False)},
            logs_root=settings.logs_root,
            log_suffix="-reference",
        )
        records = probe(
            model_dir,
            REFERENCE_ENGINE,
            None,
            ["load", "generate"],
            model_id=model["id"],
            settings=ref_settings,
            say=say,
        )
        generate = next((r for r in records if r["stage"] == "generate"), None)
        if generate is None or generate["status"] != "pass":
            bad = next((r for r in records if r["status"] != "pass"), records[-1])
            return None, (
                f"no transformers reference: transformers {bad['stage']} "
                f"{bad['status']} ({bad.get('failure_class') or bad.get('message')})"
            )
        horizons, noise = _precision(model_dir, model, records, generate, ref_settings, say)
        return parity.write_reference(path, generate, horizons, noise), None


def ensure_adapter(
    model_dir: Path, model: dict[str, Any], settings: ProbeSettings, say: Callable[[str], None]
) -> tuple[dict[str, Any] | None, str | None]:
    """A LoRA adapter PEFT trained on this model revision, and the transformers reference of the
    model with it merged: made once, reused (as the reference is). Returns the options a
    serving engine's `lora` stage reads, or (None, why) where PEFT could not make one."""
    from probes.engines import peft_engine  # its recipe names the adapter: a new one, a new adapter

    recipe = f"r{peft_engine.LORA_RANK}-s{peft_engine.STEPS}-lr{peft_engine.LEARNING_RATE:g}"
    root = (
        environments.cache_dir()
        / "adapters"
        / _safe(model["id"])
        / f"{_safe(str(model.get('revision')))}-{recipe}"
    )
    root.mkdir(parents=True, exist_ok=True)
    made_by = root / "made_by.json"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not made_by.exists():
            say(f"training the LoRA adapter to serve for {model['id']} (once per revision)")
            records = probe(
                model_dir,
                "peft",
                None,
                ["adapter"],
                model_id=model["id"],
                settings=replace(
                    settings,
                    options={
                        "trust_remote_code": settings.options.get("trust_remote_code", False),
                        "adapter_out": str(root),
                    },
                    log_suffix="-adapter",
                ),
                say=say,
            )
            made = records[0]
            engine = made["engine"]
            facts: dict[str, Any] = {
                "engine": f"peft {engine['version']}",
                "environment_id": engine.get("environment_id"),
                "targets": (made.get("metrics") or {}).get("adapter_targets"),
                "seconds": made.get("duration_s"),
            }
            if made["status"] != "pass":
                facts["failed"] = (
                    f"no adapter to serve: peft {made['status']} "
                    f"({made.get('failure_class') or made.get('message')})"
                )
                if made["status"] == "error":  # ours (an environment, a bug): tried again next time
                    return None, facts["failed"]
            # PEFT's own failure is kept too: each engine release would train it again
            made_by.write_text(json.dumps(facts) + "\n", encoding="utf-8")
        facts = json.loads(made_by.read_text(encoding="utf-8"))
        if facts.get("failed"):
            return None, facts["failed"]
    merged = {"id": f"{model['id']}+lora", "revision": f"{model.get('revision')}-lora-{recipe}"}
    ref, why = ensure_reference(root / "merged", merged, settings, say)
    if ref is None:
        return None, f"no reference for the merged adapter: {why}"
    return {
        "lora_adapter": str(root / "adapter"),
        "lora_reference_path": str(ref),
        "lora_made_by": "{engine} on {targets}".format(**facts),
        "lora_adapter_s": facts.get("seconds"),
    }, None


def _precision(
    model_dir: Path,
    model: dict[str, Any],
    records: list[Record],
    released: Record,
    settings: ProbeSettings,
    say: Callable[[str], None],
) -> tuple[dict[str, int | None] | None, float | None]:
    """(precision horizons, logprob noise): run the reference again in float32; where its tokens
    leave the released-dtype ones, and how far its logprobs move where they agree (see
    probes.parity). A float32 model is its own twin: no horizons (parity stays strict), noise
    0. Where the twin did not run: (None, None), noise unknown."""
    load = next((r for r in records if r["stage"] == "load"), None)
    dtype = (load["metrics"] if load else {}).get("dtype")
    if dtype == "float32":
        return None, 0.0
    if dtype is None:
        return None, None
    twin = probe(
        model_dir,
        REFERENCE_ENGINE,
        None,
        ["load", "generate"],
        model_id=model["id"],
        settings=replace(
            settings, options={**settings.options, "dtype": "float32"}, log_suffix="-reference-float32"
        ),
        say=say,
    )
    generate = next((r for r in twin if r["stage"] == "generate"), None)
    if generate is None or generate["status"] != "pass":
        return None, None
    released_out, twin_out = released["output"]["completions"], generate["output"]["completions"]
    return (parity.precision_horizons(released_out, twin_out), parity.logprob_noise(released_out, twin_out))


def _probe_in_docker(
    model_dir: Path,
    spec: EngineSpec,
    version: str | None,
    stages: list[str],
    model: dict[str, Any],
    run_id: str,
    logs_root: Path,
    settings: ProbeSettings,
    say: Callable[[str], None],
) -> list[Record]:
    from matrix import docker_executor as dx

    engine = spec.name
    version = version or spec.default_version
    log_dir = logs_root / run_id / _safe(model["id"]) / f"{engine}-{version}-docker"
    req = ProbeRequest(
        engine=engine,
        model_dir=model_dir,
        stages=stages,
        options=dict(settings.options),
        timeout_s=settings.timeout_s,
        memory_mb=settings.memory_mb,
        env=dict(spec.env),
    )
    environment: dict[str, Any] = {}
    try:
        image = dx.ensure_image(
            engine, version, settings.image_flavor, say=say, resolution=settings.resolution
        )
        outcome = dx.run_probe(req, log_dir, image)  # memory limit: req.memory_mb
        environment = image.as_environment()
    except dx.ImageBuildError as exc:  # our infrastructure, never the engine's fail
        outcome = dx.build_failure_outcome(exc, log_dir)
    return build_records(
        stages=stages,
        outcome=outcome,
        engine=engine,
        engine_version=version,
        model=model,
        tier=settings.tier,
        run_id=run_id,
        environment=environment,
        reproduce={s: " ".join(outcome.argv) for s in stages} if outcome.argv else None,
        host=socket.gethostname(),
    )
