"""How long finding an already-built engine environment takes (the cache hit path).

    python bench/bench_envs.py [ENGINE==VERSION ...]
Prints min/median/max over repeats and writes bench/results/envs.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from matrix import environments
from probes.engines import get_spec, parse_engine_arg


def main(argv: list[str]) -> None:
    targets = argv or ["transformers==5.23.0"]
    report = {}
    for target in targets:
        name, version = parse_engine_arg(target)
        version = version or get_spec(name).default_version
        environments.build_env(get_spec(name), version)  # build once if missing
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            environments.build_env(get_spec(name), version, say=lambda m: None)
            times.append(time.perf_counter() - t0)
        report[target] = {
            "min_s": min(times),
            "median_s": statistics.median(times),
            "max_s": max(times),
            "repeats": len(times),
        }
        print(
            f"{target}: cached environment found in median {report[target]['median_s'] * 1000:.2f} ms "
            f"(min {min(times) * 1000:.2f}, max {max(times) * 1000:.2f})"
        )
    out = Path(__file__).parent / "results" / "envs.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
