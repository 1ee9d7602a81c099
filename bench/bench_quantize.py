"""What the quantize stage costs, per architecture and type: is it cheap enough to run in every
sweep by default?

    python bench/bench_quantize.py [--root DIR] [--types llama,qwen3,...] [--quant Q8_0,Q4_K_M,...]

For each architecture's arch-tier copy (the sweep's shrunk copies under --root, default
$DAYONE_HOME/nightly/sweep/<transformers version>/, else ~/.dayone's; read only), one probe
child in the llamacpp environment runs convert, load, generate, quantize with the sweep's own
options (matrix/nightly.py:probe_options). Per type, from the quantize record: the quantizer's
time (`quantize_s`), the quantized copy's load time, its verdict, its size against the
converted GGUF, and how many tensors fell back outside the type's mix; per architecture the
whole quantize stage next to the convert+load+generate it follows. Prints a table, writes
bench/results/quantize.json. Timings are never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from matrix.environments import ensure_env  # noqa: E402
from matrix.nightly import probe_options  # noqa: E402
from probes.modelinfo import read_model_info  # noqa: E402
from probes.quantize import FLAT_FACTS  # noqa: E402
from probes.record import build_records  # noqa: E402
from probes.runner import ProbeRequest, run_probe  # noqa: E402

STAGES = ["convert", "load", "generate", "quantize"]
DEFAULT_TYPES = (
    "llama",
    "qwen2",
    "qwen3",
    "gemma2",
    "gemma3_text",
    "phi3",
    "mistral",
    "qwen3_moe",
    "olmo2",
    "starcoder2",
    "granite",
    "gpt_neox",
)
DEFAULT_QUANT = "Q8_0,Q4_K_M,Q6_K,Q4_0"


def sweep_root() -> Path | None:
    for home in (os.environ.get("DAYONE_HOME"), str(Path.home() / ".dayone")):
        if not home:
            continue
        roots = sorted((Path(home) / "nightly" / "sweep").glob("*/"))
        if roots:
            return roots[-1]
    return None


def bench_one(model: Path, python: str, quant: str, work: Path) -> dict:
    options = {**probe_options(model), "quant_types": quant}
    req = ProbeRequest(
        engine="llamacpp", model_dir=model, stages=STAGES, python=python, options=options, timeout_s=900
    )
    t0 = time.perf_counter()
    outcome = run_probe(req, work / model.name)
    wall = time.perf_counter() - t0
    records = {
        r["stage"]: r
        for r in build_records(
            stages=STAGES,
            outcome=outcome,
            engine="llamacpp",
            engine_version=None,
            model=read_model_info(model).as_record(),
        )
    }
    q = records["quantize"]
    base_bytes = (records["convert"]["metrics"] or {}).get("gguf_bytes")
    types = {}
    for name, t in ((q.get("output") or {}).get("types") or {}).items():
        types[name] = {k: t.get(k) for k in (*FLAT_FACTS, "tensor_types")}
        if base_bytes and t.get("gguf_bytes"):
            types[name]["size_ratio"] = round(t["gguf_bytes"] / base_bytes, 3)
    return {
        "architecture": model.name,
        "probe_wall_s": round(wall, 3),
        "stages": {
            s: {"status": r["status"], "failure_class": r["failure_class"], "duration_s": r["duration_s"]}
            for s, r in records.items()
        },
        "quantize_stage_s": q["duration_s"],
        "quantize_message": q["message"],
        "source_gguf_bytes": base_bytes,
        "types": types,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, default=None, help="arch-tier copies, one folder per model type")
    parser.add_argument("--types", default=",".join(DEFAULT_TYPES))
    parser.add_argument("--quant", default=DEFAULT_QUANT, help="quantization types")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "quantize.json")
    args = parser.parse_args()
    root = args.root or sweep_root()
    if root is None:
        raise SystemExit("no arch-tier copies: run `dayone sweep` once or pass --root")
    env = ensure_env("llamacpp", say=lambda m: print(m, file=sys.stderr))
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory(prefix="dayone-bench-quantize-") as tmp:
        for arch in [t for t in args.types.split(",") if t]:
            model = root / arch
            if not (model / "config.json").exists():
                print(f"{arch}: no copy under {root}", file=sys.stderr)
                continue
            row = bench_one(model, env.python, args.quant, Path(tmp))
            rows.append(row)
            prior = sum(row["stages"][s]["duration_s"] or 0 for s in STAGES[:-1])
            print(
                f"{arch:14s} quantize stage {row['quantize_stage_s']:7.3f} s "
                f"(convert+load+generate {prior:6.3f} s)  "
                f"{row['stages']['quantize']['status']}"
            )
            for name, t in row["types"].items():
                print(
                    f"    {name:7s} quantize {t['quantize_s']:7.4f} s  load {t['load_s']:7.4f} s"
                    f"  x{t.get('size_ratio')}  fallback {t['fallback_tensors']}/"
                    f"{t['quantized_tensors']}  {t['status']}"
                    f"{' (' + t['failure_class'] + ')' if t['failure_class'] else ''}"
                    f"  gap {t['max_logprob_gap']}"
                )
    stage_s = [r["quantize_stage_s"] for r in rows if r["quantize_stage_s"] is not None]
    result = {
        "bench": "quantize",
        "machine": platform.machine(),
        "cpu": platform.processor(),
        "engine": "llamacpp",
        "python": env.python,
        "root": str(root),
        "quant_types": args.quant.split(","),
        "architectures": rows,
        "quantize_stage_s": {
            "total": round(sum(stage_s), 3),
            "max": max(stage_s, default=None),
            "mean": round(sum(stage_s) / len(stage_s), 3) if stage_s else None,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"quantize stage: total {result['quantize_stage_s']['total']} s over {len(rows)} "
        f"architectures; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
