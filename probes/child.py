"""The probe child: runs inside the engine's own environment.

    python -m probes.child --engine NAME --model DIR --stages load,generate --events FILE

Writes one JSON event per line to FILE, flushed as it goes, so a crash keeps what finished:
  {"event": "env", "engine": {...}}                      once the engine module is imported
  {"event": "start", "stage": S}                          before each stage
  {"event": "end", "stage": S, "status": ..., ...}        after each stage (with "oom_kills":
                                                          the memory cgroup's OOM kills in it)
A stage that fails (not pass/degraded/skipped) blocks only the stages that need it
(`probes.stages.blocker`): those are not run (the host marks them skipped), the others still are.
Tracebacks go to stderr, which the host captures into the log and classifies.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from probes.engines import load_engine_class
from probes.outcome import HarnessError, StageFailure, one_line
from probes.runner import memory_cgroups, oom_kills
from probes.stages import blocker, order_stages

PROBES_DIR = Path(__file__).resolve().parent


# What decides whether an engine runs as its own release would: where these come from.
KEY_PACKAGES = ("transformers", "torch", "huggingface-hub", "pydantic", "packaging", "tokenizers")


def _inside(path: str | os.PathLike[str] | None, prefix: Path) -> bool | None:
    if not path:
        return None
    return prefix == Path(path).resolve() or prefix in Path(path).resolve().parents


def package_origins(names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """For each installed distribution: its version, where its metadata and its top module lie,
    and whether both are inside this environment (sys.prefix). Found the way `import` finds
    them (sys.path order), without importing them."""
    prefix = Path(sys.prefix).resolve()
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        dist_path = getattr(dist, "_path", None)
        module = name.replace("-", "_")
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            found = None
        origin = found.origin if found and found.origin not in (None, "namespace") else None
        places = [p for p in (dist_path, origin) if p]
        out[name] = {
            "version": dist.version,
            "file": str(origin or dist_path or ""),
            "in_env": all(_inside(p, prefix) for p in places),
        }
    return out


def _emit(stream: TextIO, event: dict[str, Any]) -> None:
    stream.write(json.dumps(event, default=str) + "\n")
    stream.flush()
    os.fsync(stream.fileno())


def raised_by_harness(exc: BaseException) -> bool:
    """True when every frame of the traceback is our own probe code: our bug, not the engine's.

    An exception from inside the engine (or a library it calls) has at least one frame outside
    the probes package.
    """
    tb = exc.__traceback__
    frames = []
    while tb is not None:
        frames.append(Path(tb.tb_frame.f_code.co_filename).resolve())
        tb = tb.tb_next
    return bool(frames) and all(PROBES_DIR in f.parents for f in frames)


def outcome_event(stage: str, run) -> dict[str, Any]:
    """Run one stage; always returns an `end` event, never raises."""
    t0 = time.monotonic()
    try:
        outcome = run()
        event = {
            "status": outcome.status,
            "metrics": outcome.metrics,
            "message": outcome.message,
            "failure_class": outcome.failure_class,
            "output": outcome.output,
        }
    except StageFailure as exc:
        print(f"dayone: stage {stage} failed: {exc}", file=sys.stderr, flush=True)
        event = {
            "status": exc.status,
            "failure_class": exc.failure_class,
            "message": str(exc),
            "metrics": exc.metrics,
        }
    except HarnessError as exc:
        traceback.print_exc()
        event = {"status": "error", "failure_class": "infra", "message": str(exc)}
    except MemoryError as exc:
        traceback.print_exc()
        event = {"status": "oom", "failure_class": "out_of_memory", "message": one_line(exc)}
    except Exception as exc:  # the engine raised: classified by the host from the log
        traceback.print_exc()
        if raised_by_harness(exc):
            event = {"status": "error", "failure_class": "infra", "message": f"harness bug: {one_line(exc)}"}
        else:
            event = {"status": "fail", "failure_class": None, "message": one_line(exc)}
    sys.stderr.flush()
    sys.stdout.flush()
    event.update(event="end", stage=stage, duration_s=round(time.monotonic() - t0, 4))
    return event


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m probes.child")
    parser.add_argument("--engine", required=True)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--stages", required=True, help="comma-separated")
    parser.add_argument("--events", required=True, type=Path)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--options", default="{}", help="JSON object of engine options")
    args = parser.parse_args(argv)

    stages = order_stages([s for s in args.stages.split(",") if s])
    options = json.loads(args.options)
    workdir = args.workdir or args.events.parent
    with open(args.events, "a", encoding="utf-8") as events:
        try:
            engine_cls = load_engine_class(args.engine)
            engine = engine_cls(args.model, options, workdir)
            engine.requested_stages = tuple(stages)
            names = tuple(dict.fromkeys(n for n in (engine_cls.package, *KEY_PACKAGES) if n))
            _emit(
                events,
                {
                    "event": "env",
                    "engine": engine.describe(),
                    "prefix": sys.prefix,
                    "imports": package_origins(names),
                },
            )
        except Exception as exc:  # the engine could not even be imported: its env is broken
            traceback.print_exc()
            _emit(events, {"event": "setup_failed", "message": one_line(exc)})
            return 3
        try:
            statuses: dict[str, str] = {}
            cgroups = memory_cgroups()
            for stage in stages:
                if blocker(stage, statuses):
                    continue
                _emit(events, {"event": "start", "stage": stage, "t": time.time()})
                before = oom_kills(cgroups)
                event = outcome_event(stage, lambda s=stage: engine.run_stage(s))
                after = oom_kills(cgroups)
                if before is not None and after is not None:
                    # an engine's worker killed by the OOM killer reads as its crash otherwise
                    event["oom_kills"] = after - before
                _emit(events, event)
                statuses[stage] = event["status"]
        finally:
            try:
                engine.close()
            except Exception:
                traceback.print_exc()
    return 0


if __name__ == "__main__":
    sys.exit(main())
