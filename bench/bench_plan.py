"""The planner at scale: 10,000 models x 20 environments x 6 stages with a full history.

    python bench/bench_plan.py [--models 10000] [--envs 20] [--stages 6] [--repeat 3]

Times building the history index (1.2 M result rows), planning with everything done (the
nothing-new night: plans zero), and planning a night where 1% of the models have a new sha.
Prints the figures and writes bench/results/plan.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from matrix.plan import DoneIndex, EnvironmentTarget, plan  # noqa: E402

STAGE_NAMES = ("load", "generate", "parity", "serve", "throughput", "finetune", "tool_call", "json_schema")


@dataclass(frozen=True)
class Model:
    id: str
    revision: str


def scenario(n_models: int, n_envs: int, n_stages: int):
    models = [Model(f"org{i % 97}/model-{i}", f"{i:040x}") for i in range(n_models)]
    envs = [
        EnvironmentTarget(
            f"env-{j:04d}", f"engine{j % 4}", f"1.{j}.0", STAGE_NAMES[:n_stages], heavy=j % 4 == 1
        )
        for j in range(n_envs)
    ]
    rows = [
        (m.id, m.revision, e.environment_id, s, "pass" if (i + k) % 7 else "fail")
        for i, m in enumerate(models)
        for k, e in enumerate(envs)
        for s in e.stages
    ]
    return models, envs, rows


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", type=int, default=10_000)
    ap.add_argument("--envs", type=int, default=20)
    ap.add_argument("--stages", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "plan.json"))
    args = ap.parse_args(argv)

    models, envs, rows = scenario(args.models, args.envs, args.stages)
    index_s, plan_none_s, plan_new_s = [], [], []
    for _ in range(args.repeat):
        t, index = timed(lambda: DoneIndex.from_rows(rows))
        index_s.append(t)
        t, tasks = timed(lambda index=index: plan(models, envs, index))
        plan_none_s.append(t)
        assert tasks == [], "a full history must plan nothing"
        changed = [Model(m.id, m.revision + "x") if i % 100 == 0 else m for i, m in enumerate(models)]
        t, tasks_new = timed(lambda changed=changed, index=index: plan(changed, envs, index))
        plan_new_s.append(t)
    tracemalloc.start()
    index = DoneIndex.from_rows(rows)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    result = {
        "models": args.models,
        "environments": args.envs,
        "stages": args.stages,
        "history_rows": len(rows),
        "index_build_s": round(statistics.median(index_s), 4),
        "plan_nothing_new_s": round(statistics.median(plan_none_s), 4),
        "plan_1pct_new_s": round(statistics.median(plan_new_s), 4),
        "planned_tasks_1pct_new": len(tasks_new),
        "planned_stages_1pct_new": sum(len(t.stages) for t in tasks_new),
        "index_peak_mb": round(peak / 2**20, 1),
        "repeat": args.repeat,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": __import__("os").cpu_count(),
    }
    print(
        f"history: {len(rows):,} result rows "
        f"({args.models:,} models x {args.envs} environments x {args.stages} stages)"
    )
    print(f"build index:          {result['index_build_s']:.3f} s (peak {result['index_peak_mb']} MB)")
    print(f"plan, nothing new:    {result['plan_nothing_new_s']:.3f} s -> 0 tasks")
    print(
        f"plan, 1% new shas:    {result['plan_1pct_new_s']:.3f} s -> "
        f"{len(tasks_new):,} tasks, {result['planned_stages_1pct_new']:,} stages"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
