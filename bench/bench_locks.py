"""What locks cost: resolving a release's lock (today, and as on its release day), and building
its environment from the lock, against building it from the request as before locks.

    python bench/bench_locks.py [ENGINE==VERSION ...] [--repeats N]

Side by side in one run, each repeat into fresh folders (uv's own download cache stays warm,
as on any machine that built once): `uv pip compile` of the request (today / release),
`uv pip sync` of the lock into a new venv, and `uv pip install` of the request into a new venv.
Prints medians and the ratios, writes bench/results/locks.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from matrix import environments, locks
from probes import tools
from probes.engines import get_spec, parse_engine_arg


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _venv(root: Path) -> Path:
    subprocess.run(
        [tools.find_uv(), "venv", "--quiet", "--python", sys.executable, str(root / "venv")], check=True
    )
    return root / "venv" / "bin" / "python"


def _uv_pip(verb: str, python: Path, sources: list[str], *args: str) -> None:
    subprocess.run(
        [
            tools.find_uv(),
            "pip",
            verb,
            "--quiet",
            "--compile-bytecode",
            "--python",
            str(python),
            "--index-strategy",
            "unsafe-best-match",
            *sources,
            *args,
        ],
        check=True,
    )


def bench(target: str, repeats: int) -> dict:
    name, version = parse_engine_arg(target)
    spec = get_spec(name)
    version = version or spec.default_version
    sources = environments.sources(spec, version, say=lambda m: None)
    say = lambda m: None  # noqa: E731
    times: dict[str, list[float]] = {
        "lock_today_s": [],
        "lock_release_s": [],
        "install_from_lock_s": [],
        "install_from_request_s": [],
    }
    lock = None
    for _ in range(repeats):
        times["lock_today_s"].append(_timed(lambda: locks.compile_lock(spec, version, "today", sources, say)))
        times["lock_release_s"].append(
            _timed(lambda: locks.compile_lock(spec, version, "release", sources, say))
        )
        lock = locks.compile_lock(spec, version, "today", sources, say)
        with tempfile.TemporaryDirectory(prefix="dayone-bench-lock-") as tmp:
            lockfile = Path(tmp) / "lock.txt"
            lockfile.write_text(lock.content)
            times["install_from_lock_s"].append(
                _timed(partial(_uv_pip, "sync", _venv(Path(tmp)), sources, str(lockfile)))
            )
        with tempfile.TemporaryDirectory(prefix="dayone-bench-req-") as tmp:
            times["install_from_request_s"].append(
                _timed(
                    partial(
                        _uv_pip,
                        "install",
                        _venv(Path(tmp)),
                        sources,
                        *environments.requirements(spec, version),
                    )
                )
            )
    med = {k: round(statistics.median(v), 3) for k, v in times.items()}
    locked_build = med["lock_today_s"] + med["install_from_lock_s"]
    return {
        "target": f"{name}=={version}",
        "repeats": repeats,
        "packages": len(lock.packages) if lock else 0,
        "median": med,
        "all": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "ratio_locked_build_vs_request_build": round(locked_build / med["install_from_request_s"], 3),
        "ratio_rebuild_from_lock_vs_request_build": round(
            med["install_from_lock_s"] / med["install_from_request_s"], 3
        ),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", default=["transformers==5.23.0"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    report = [bench(t, args.repeats) for t in args.targets]
    for r in report:
        m = r["median"]
        print(
            f"{r['target']} ({r['packages']} packages, median of {r['repeats']}): "
            f"lock today {m['lock_today_s']:.2f} s, lock as released {m['lock_release_s']:.2f} s; "
            f"install from the lock {m['install_from_lock_s']:.2f} s vs from the request "
            f"{m['install_from_request_s']:.2f} s; lock + install / request install "
            f"{r['ratio_locked_build_vs_request_build']:.2f}x, rebuild from a kept lock "
            f"{r['ratio_rebuild_from_lock_vs_request_build']:.2f}x"
        )
    out = Path(__file__).parent / "results" / "locks.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
