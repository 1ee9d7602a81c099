"""Fine-tune stage figures: LoRA steps/s and peak memory (PEFT), one SFT step (TRL).

Builds the fixture models named, probes each with the `peft` and `trl` engines through the
normal pipeline (isolated child, own venv), prints the figures and writes
bench/results/finetune.json. On a GPU machine the same stage runs on CUDA (hardware says so).

    python bench/bench_finetune.py [--fixtures llama,gemma3_text,qwen3] [--out FILE]
    python bench/bench_finetune.py --sweep-records FILE.jsonl [--out FILE]

`--sweep-records` reads a sweep's records instead (`dayone sweep --out FILE`, the map's
fine-tune group) and gives the time per architecture of the finetune stage, and of the served
adapter's `lora` stage (vLLM), per engine release: median, 90th percentile and the slowest, over
every architecture it ran on (for `lora`, PEFT's training of the adapter apart, once per copy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from matrix.environments import ensure_env
from matrix.probing import ProbeSettings, probe

FIGURES = (
    "all_linear_steps_per_s",
    "attention_steps_per_s",
    "all_linear_trainable_params",
    "sft_steps_per_s",
    "sft_tokens",
    "peak_rss_mb",
    "peak_cuda_mb",
)


def sweep_figures(path: Path) -> list[dict]:
    """Per (engine, release, stage): seconds per architecture of the finetune and lora stages in
    a sweep's records."""
    import statistics

    times: dict[tuple[str, str, str], list[tuple[float, str, float]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r.get("stage") in ("finetune", "lora") and r.get("status") not in ("n/a", "skipped", "error"):
            key = (r["engine"]["name"], r["engine"]["version"], r["stage"])
            made = float((r.get("metrics") or {}).get("adapter_train_s") or 0.0)
            times.setdefault(key, []).append((float(r["duration_s"]), r["model"]["id"], made))
    rows = []
    for (engine, version, stage), got in sorted(times.items()):
        seconds = sorted(t for t, _, _ in got)
        slowest = max(got)
        row = {
            "engine": engine,
            "version": version,
            "stage": stage,
            "architectures": len(got),
            "median_s": round(statistics.median(seconds), 2),
            "p90_s": round(seconds[int(0.9 * (len(seconds) - 1))], 2),
            "max_s": round(slowest[0], 2),
            "slowest": slowest[1],
            "total_s": round(sum(seconds), 1),
        }
        if stage == "lora":
            row["adapter_train_median_s"] = round(statistics.median(m for _, _, m in got), 2)
        rows.append(row)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--fixtures", default="llama,gemma3_text,qwen3")
    p.add_argument("--sweep-records", type=Path, help="a sweep's records (JSON lines) instead of fixtures")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.sweep_records:
        rows = sweep_figures(args.sweep_records)
        for row in rows:
            print(json.dumps(row))
        return _write(args.out or ROOT / "bench" / "results" / "finetune_sweep.json", rows)
    names = [n for n in args.fixtures.split(",") if n]
    quiet = lambda m: None
    tf = ensure_env("transformers", say=quiet)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dayone-bench-ft-") as tmp:
        fixtures = Path(tmp) / "fixtures"
        subprocess.run(
            [tf.python, "-m", "probes.fixtures", str(fixtures), "--only", *names],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for engine in ("peft", "trl"):
            ensure_env(engine, say=quiet)
            for name in names:
                t0 = time.perf_counter()
                (record,) = probe(
                    fixtures / name,
                    engine,
                    stages=["finetune"],
                    say=quiet,
                    settings=ProbeSettings(logs_root=Path(tmp) / "logs"),
                )
                wall = time.perf_counter() - t0
                m = record["metrics"]
                row = {
                    "engine": engine,
                    "fixture": name,
                    "status": record["status"],
                    "failure_class": record["failure_class"],
                    "stage_s": record["duration_s"],
                    "probe_wall_s": round(wall, 2),
                    "hardware": record["engine"].get("hardware"),
                    **{k: m[k] for k in FIGURES if k in m},
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    return _write(args.out or ROOT / "bench" / "results" / "finetune.json", rows)


def _write(out: Path, rows: list[dict]) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"host": platform.node(), "cpus": os.cpu_count(), "load_avg": os.getloadavg(), "rows": rows},
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
