"""Probe one model in one engine environment: the host-side shell around probes.runner.

Ensures the engine's environment, runs the child in isolation, turns what it left into
records. No verdict is decided here (probes.record does that); this is I/O.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from matrix import environments
from probes.engines import get_spec
from probes.modelinfo import read_model_info
from probes.record import build_records
from probes.runner import ProbeRequest, run_probe
from probes.stages import order_stages

PROBES_ROOT = Path(__file__).resolve().parent.parent  # the folder that holds `probes/`


def dayone_home() -> Path:
    return Path(os.environ.get("DAYONE_HOME", "~/.dayone")).expanduser()


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


def reproduce_commands(engine: str, python: str, model_dir: Path, stages: list[str]
                       ) -> dict[str, str]:
    """The bare command that reproduces each stage: the engine's own API where the registry
    has a template, else the probe child run by hand."""
    spec = get_spec(engine)
    quoted = {"python": shlex.quote(python), "model": shlex.quote(str(model_dir)),
              "model_py": repr(str(model_dir))}  # inside a python -c "..." string
    out = {}
    for stage in stages:
        template = spec.reproduce.get(stage)
        if template:
            out[stage] = template.format(**quoted)
        else:
            out[stage] = (f"PYTHONPATH={shlex.quote(str(PROBES_ROOT))} {quoted['python']} -m "
                          f"probes.child --engine {engine} --model {quoted['model']} "
                          f"--stages {stage} --events /tmp/dayone-events.jsonl")
    return out


def probe(model_dir: Path, engine: str, version: str | None = None,
          stages: list[str] | None = None, *, model_id: str | None = None,
          settings: ProbeSettings | None = None,
          say: Callable[[str], None] = print) -> list[dict[str, Any]]:
    settings = settings or ProbeSettings()
    spec = get_spec(engine)
    stages = order_stages(stages or list(spec.stages))
    model_dir = Path(model_dir).resolve()
    model = read_model_info(model_dir, model_id).as_record()
    run_id = settings.run_id or new_run_id()
    logs_root = settings.logs_root or dayone_home() / "logs"
    if settings.executor == "docker":
        return _probe_in_docker(model_dir, engine, version, stages, model, run_id, logs_root,
                                settings, say)
    env = environments.ensure_env(engine, version, say=say)
    log_dir = logs_root / run_id / _safe(model["id"]) / f"{engine}-{env.version}"
    req = ProbeRequest(engine=engine, model_dir=model_dir, stages=stages, python=env.python,
                       probes_root=PROBES_ROOT, options=dict(settings.options),
                       timeout_s=settings.timeout_s, memory_mb=settings.memory_mb,
                       env=dict(spec.env), no_network=settings.no_network)
    outcome = run_probe(req, log_dir)
    return build_records(
        stages=stages, outcome=outcome, engine=engine, engine_version=env.version, model=model,
        tier=settings.tier, run_id=run_id,
        environment={"environment_id": env.environment_id},
        reproduce=reproduce_commands(engine, env.python, model_dir, stages),
        host=socket.gethostname())


def _probe_in_docker(model_dir: Path, engine: str, version: str | None, stages: list[str],
                     model: dict[str, Any], run_id: str, logs_root: Path,
                     settings: ProbeSettings, say: Callable[[str], None]) -> list[dict[str, Any]]:
    from matrix import docker_executor as dx

    spec = get_spec(engine)
    version = version or spec.default_version
    log_dir = logs_root / run_id / _safe(model["id"]) / f"{engine}-{version}-docker"
    req = ProbeRequest(engine=engine, model_dir=model_dir, stages=stages,
                       options=dict(settings.options), timeout_s=settings.timeout_s,
                       memory_mb=settings.memory_mb, env=dict(spec.env))
    environment: dict[str, Any] = {}
    try:
        image = dx.ensure_image(engine, version, say=say)
        outcome = dx.run_probe(req, log_dir, image)  # memory limit: req.memory_mb
        environment = image.as_environment()
    except dx.ImageBuildError as exc:  # our infrastructure, never the engine's fail
        outcome = dx.build_failure_outcome(exc, log_dir)
    return build_records(
        stages=stages, outcome=outcome, engine=engine, engine_version=version, model=model,
        tier=settings.tier, run_id=run_id, environment=environment,
        reproduce={s: " ".join(outcome.argv) for s in stages} if outcome.argv else None,
        host=socket.gethostname())
