"""Container overhead per probe, per engine: the docker executor against the local one, same
model (the tiny llama fixture), same engine, same lock, side by side in one run.

    python bench/bench_docker.py [--engine E ...] [--repeat 3]

Stages: load + generate (llama.cpp: convert + load + generate). Prints each engine's medians,
the overhead and the ratio against the goal (<= 2 s or <= 1.10x, whichever is larger); writes
bench/results/docker.json. Also times the parts of the overhead: an empty container (create,
start, wait, remove) and the image check when cached.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import bench_llamacpp  # noqa: E402
from matrix import docker_executor as dx  # noqa: E402
from matrix.environments import ensure_env  # noqa: E402
from probes.engines import ENGINES  # noqa: E402
from probes.record import build_records  # noqa: E402
from probes.runner import ProbeRequest, run_probe  # noqa: E402

ENGINE_STAGES = {
    "transformers": ["load", "generate"],
    "llamacpp": ["convert", "load", "generate"],
    "vllm": ["load", "generate"],
    "sglang": ["load", "generate"],
}
GOAL_S, GOAL_RATIO = 2.0, 1.10


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def make_fixture(python: str, out: Path) -> Path:
    model = bench_llamacpp.make_fixture(python, out)
    for path in [out, *out.rglob("*")]:  # the probe user in the container must read it
        path.chmod(path.stat().st_mode | (0o555 if path.is_dir() else 0o444))
    return model


def statuses(outcome, model: Path, engine: str) -> list[str]:
    records = build_records(
        stages=ENGINE_STAGES[engine],
        outcome=outcome,
        engine=engine,
        engine_version=None,
        model={"id": model.name},
    )
    return [r["status"] for r in records]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", action="append", choices=sorted(ENGINE_STAGES))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "docker.json")
    args = parser.parse_args()
    client = dx.connect()
    tmp = Path(tempfile.mkdtemp(prefix="dayone-bench-docker-"))
    model = make_fixture(ensure_env("transformers", say=lambda _m: None).python, tmp / "fixtures")
    results = [
        bench_engine(engine, client, model, tmp / engine, args.repeat)
        for engine in args.engine or list(ENGINE_STAGES)
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def bench_engine(engine: str, client, model: Path, tmp: Path, repeat: int) -> dict:
    stages = ENGINE_STAGES[engine]
    env = ensure_env(engine, ENGINES[engine].default_version, say=lambda _m: None)
    dx.ensure_image(engine, env.version, client=client, say=print)  # built outside the timings
    image_check_s, image = timed(lambda: dx.ensure_image(engine, env.version, client=client))
    tmp.mkdir(parents=True)
    req = ProbeRequest(
        engine=engine,
        model_dir=model,
        stages=stages,
        python=env.python,
        memory_mb=8192,
        timeout_s=600,
        env=dict(ENGINES[engine].env),
    )
    passed = ["pass"] * len(stages)

    # Warm both paths once (page cache, first import), then alternate so drift hits both.
    run_probe(req, tmp / "warm-local")
    dx.run_probe(req, tmp / "warm-docker", image, client=client)
    local, docker_s = [], []
    for i in range(repeat):
        dt, out = timed(lambda i=i: run_probe(req, tmp / f"local-{i}"))
        assert statuses(out, model, engine) == passed, out.log_text[-2000:]
        local.append(dt)
        dt, out = timed(lambda i=i: dx.run_probe(req, tmp / f"docker-{i}", image, client=client))
        assert statuses(out, model, engine) == passed, out.log_text[-2000:]
        docker_s.append(dt)

    # The bare container cost: same sandbox, an empty Python instead of the probe.
    empty = []
    for i in range(repeat):
        cfg = dx.container_config(req, image.image_id, tmp / f"empty-{i}", dx.Limits(), ["-c", "pass"])
        cfg["entrypoint"] = ["python3"]
        dx._prepare_out_dir(tmp / f"empty-{i}")
        dt, _ = timed(lambda cfg=cfg, i=i: dx.run_container(client, cfg, tmp / f"empty-{i}" / "log", 60))
        empty.append(dt)
    local_empty = [
        timed(lambda: subprocess.run([env.python, "-c", "pass"], check=True))[0] for _ in range(repeat)
    ]

    med_local, med_docker = statistics.median(local), statistics.median(docker_s)
    goal = max(GOAL_S, med_local * (GOAL_RATIO - 1))
    result = {
        "engine": engine,
        "stages": stages,
        "model": "tiny llama fixture",
        "repeat": repeat,
        "local_s": [round(x, 3) for x in local],
        "docker_s": [round(x, 3) for x in docker_s],
        "local_median_s": round(med_local, 3),
        "docker_median_s": round(med_docker, 3),
        "overhead_s": round(med_docker - med_local, 3),
        "ratio": round(med_docker / med_local, 3),
        "goal_overhead_s": round(goal, 3),
        "within_goal": med_docker - med_local <= goal,
        "empty_container_median_s": round(statistics.median(empty), 3),
        "empty_local_python_median_s": round(statistics.median(local_empty), 3),
        "image_check_cached_s": round(image_check_s, 3),
        # Read the ratio with these: a local venv without .pyc files (uv does not compile them
        # and PYTHONDONTWRITEBYTECODE=1 keeps imports from writing them) recompiles
        # torch/transformers on every probe; the image's pip precompiles them.
        "local_env_pyc_files": sum(1 for _ in Path(env.path).rglob("*.pyc")),
        "local_python": env.python,
        "image": image.tag,
        "image_digest": image.image_id,
        "docker_server": client.version().get("Version"),
        "storage_driver": client.info().get("Driver"),
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(
        f"{engine} per probe ({'+'.join(stages)}, median of {repeat}): local "
        f"{med_local:.2f} s, docker {med_docker:.2f} s, overhead "
        f"{med_docker - med_local:+.2f} s, ratio {med_docker / med_local:.2f}x "
        f"(goal <= {goal:.2f} s: {'met' if result['within_goal'] else 'missed'})"
    )
    print(
        f"  empty container {result['empty_container_median_s']:.2f} s vs empty local python "
        f"{result['empty_local_python_median_s']:.2f} s; cached image check "
        f"{image_check_s:.2f} s"
    )
    return result


if __name__ == "__main__":
    sys.exit(main())
