"""Fine-tune stage figures: LoRA steps/s and peak memory (PEFT), one SFT step (TRL).

Builds the fixture models named, probes each with the `peft` and `trl` engines through the
normal pipeline (isolated child, own venv), prints the figures and writes
bench/results/finetune.json. On a GPU machine the same stage runs on CUDA (hardware says so).

    python bench/bench_finetune.py [--fixtures llama,gemma3_text,qwen3] [--out FILE]
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--fixtures", default="llama,gemma3_text,qwen3")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "finetune.json")
    args = p.parse_args()
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"host": platform.node(), "cpus": os.cpu_count(), "load_avg": os.getloadavg(), "rows": rows},
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
