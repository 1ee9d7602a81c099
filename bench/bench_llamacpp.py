"""What the llamacpp probe costs next to bare llama-cpp-python doing the same work.

    python bench/bench_llamacpp.py [--repeat 3] [--model DIR]

Same tiny model (the llama fixture unless --model), same environment, same GGUF, same
workload (3 prompts x 16 forced greedy tokens, top-5 logprobs, 1 thread):
- the probe: `run_probe` with stages convert, load, generate, parity, serve; per-stage durations
  from its records, and the child's wall time;
- bare: one script in the engine env that imports llama_cpp, loads the GGUF and runs the same
  greedy loop (no dayone); and the release's converter run by hand.
Prints medians and ratios; writes bench/results/llamacpp.json. Timings are never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from matrix.environments import ensure_env  # noqa: E402
from probes import gguf_convert, parity, workload  # noqa: E402
from probes.modelinfo import read_model_info  # noqa: E402
from probes.record import build_records  # noqa: E402
from probes.runner import ProbeRequest, run_probe  # noqa: E402

STAGES = ["convert", "load", "generate", "parity", "serve"]

# The bare script: what a user would write to get the same numbers, nothing of dayone's.
BARE = r"""
import json, sys, time
t_start = time.perf_counter()
import numpy as np
import llama_cpp
t_import = time.perf_counter()
gguf, prompts, n_new = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
top_k, eos = int(sys.argv[4]), json.loads(sys.argv[5])
llm = llama_cpp.Llama(model_path=gguf, n_ctx=512, n_batch=512, logits_all=True, n_threads=1,
                      n_threads_batch=1, seed=0, verbose=False)
t_load = time.perf_counter()
for prompt in prompts:
    ids = llm.tokenize(prompt.encode(), add_bos=True, special=False)
    llm.reset(); llm.eval(ids)
    for _ in range(n_new):
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        lp = logits - (logits.max() + np.log(np.exp(logits - logits.max()).sum()))
        top = np.argsort(-lp, kind="stable")[:top_k]
        logits[eos] = -np.inf
        llm.eval([int(np.argmax(logits))])
t_gen = time.perf_counter()
print(json.dumps({"import_s": t_import - t_start, "load_s": t_load - t_import,
                  "generate_s": t_gen - t_load}))
"""


def med(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def make_fixture(tf_python: str, out: Path) -> Path:
    subprocess.run(
        [tf_python, "-m", "probes.fixtures", str(out), "--only", "llama"],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return out / "llama"


def make_reference(tf_python: str, model: Path, work: Path) -> Path:
    path = parity.reference_path_for(read_model_info(model), work / "cache")
    req = ProbeRequest(engine="transformers", model_dir=model, stages=["load", "generate"], python=tf_python)
    out = run_probe(req, work / "ref")
    records = build_records(
        stages=["load", "generate"],
        outcome=out,
        engine="transformers",
        engine_version=None,
        model={"id": model.name},
    )
    return parity.write_reference(path, records[1])


def probe_once(python: str, model: Path, reference: Path, log_dir: Path) -> dict:
    req = ProbeRequest(
        engine="llamacpp",
        model_dir=model,
        stages=STAGES,
        python=python,
        options={"reference_path": str(reference)},
    )
    t0 = time.perf_counter()
    out = run_probe(req, log_dir)
    wall = time.perf_counter() - t0
    records = build_records(
        stages=STAGES, outcome=out, engine="llamacpp", engine_version=None, model={"id": model.name}
    )
    statuses = {r["stage"]: r["status"] for r in records}
    if set(statuses.values()) != {"pass"}:
        raise SystemExit(f"probe did not pass: {statuses}; log {out.log_path}")
    stage_s = {r["stage"]: r["duration_s"] for r in records}
    load_m = next(r["metrics"] for r in records if r["stage"] == "load")
    gen_m = next(r["metrics"] for r in records if r["stage"] == "generate")
    return {
        "wall_s": wall,
        "stage_s": stage_s,
        "load_s": load_m["load_s"],
        "generate_s": gen_m["generate_s"],
        "gguf": str(log_dir / "model.gguf"),
    }


def bare_once(python: str, gguf: str, eos: list[int]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            python,
            "-c",
            BARE,
            gguf,
            json.dumps(list(workload.PROMPTS)),
            str(workload.MAX_NEW_TOKENS),
            str(workload.TOP_K),
            json.dumps(eos),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - t0
    return {"wall_s": wall, **json.loads(proc.stdout.strip().splitlines()[-1])}


def bare_convert_once(python: str, model: Path, out: Path) -> float:
    """The release's converter by hand (with the fixture's pre-tokenizer fallback, which a bare
    run of the converter cannot do on a locally trained tokenizer)."""
    folder = Path(python).parent.parent / gguf_convert.CONVERTER_DIRNAME
    t0 = time.perf_counter()
    subprocess.run(
        [
            python,
            "-m",
            "probes.gguf_convert",
            "--converter",
            str(folder),
            "--pretokenizer-fallback",
            "gpt-2",
            "--",
            str(model),
            "--outfile",
            str(out),
            "--outtype",
            "f32",
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "llamacpp.json")
    args = parser.parse_args()

    env = ensure_env("llamacpp")
    tf = ensure_env("transformers")
    work = Path(tempfile.mkdtemp(prefix="dayone-bench-llamacpp-"))
    model = args.model or make_fixture(tf.python, work / "fixtures")
    reference = make_reference(tf.python, model, work)
    config = json.loads((model / "config.json").read_text())
    eos = [config["eos_token_id"]] if isinstance(config.get("eos_token_id"), int) else []

    probes, bares, converts = [], [], []
    for i in range(args.repeat):
        probes.append(probe_once(env.python, model, reference, work / f"probe-{i}"))
        bares.append(bare_once(env.python, probes[0]["gguf"], eos))
        converts.append(bare_convert_once(env.python, model, work / f"bare-{i}.gguf"))

    stage = {s: med([p["stage_s"][s] for p in probes]) for s in STAGES}
    probe_lg = med([p["stage_s"]["load"] + p["stage_s"]["generate"] for p in probes])
    bare_lg = med([b["load_s"] + b["generate_s"] for b in bares])
    # The child without convert/serve vs the bare process (import + load + generate).
    probe_core = med([p["wall_s"] - p["stage_s"]["convert"] - p["stage_s"]["serve"] for p in probes])
    bare_wall = med([b["wall_s"] for b in bares])
    bare_convert = med(converts)
    result = {
        "what": "llamacpp probe (convert, load, generate, parity, serve) vs bare "
        "llama-cpp-python, tiny llama fixture, 3 prompts x 16 tokens, 1 thread",
        "engine": {
            "llama-cpp-python": env.version,
            "llama.cpp": gguf_convert.converter_info(
                Path(env.python).parent.parent / gguf_convert.CONVERTER_DIRNAME
            ).get("llama_cpp_commit"),
        },
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "repeat": args.repeat,
        "probe_stage_s": stage,
        "probe_wall_s": med([p["wall_s"] for p in probes]),
        "probe_load_plus_generate_s": probe_lg,
        "bare_load_plus_generate_s": bare_lg,
        "ratio_load_plus_generate": round(probe_lg / bare_lg, 3) if bare_lg else None,
        "probe_child_without_convert_serve_s": probe_core,
        "bare_process_wall_s": bare_wall,
        "ratio_process": round(probe_core / bare_wall, 3) if bare_wall else None,
        "probe_convert_s": stage["convert"],
        "bare_convert_s": bare_convert,
        "ratio_convert": round(stage["convert"] / bare_convert, 3) if bare_convert else None,
        "bare_import_s": med([b["import_s"] for b in bares]),
    }
    print(f"probe stages (median of {args.repeat}): " + ", ".join(f"{s} {v:.3f}s" for s, v in stage.items()))
    print(f"probe wall {result['probe_wall_s']:.2f}s")
    print(
        f"load+generate: probe {probe_lg:.4f}s, bare {bare_lg:.4f}s, "
        f"ratio {result['ratio_load_plus_generate']}"
    )
    print(
        f"process without convert/serve: probe {probe_core:.2f}s, bare {bare_wall:.2f}s, "
        f"ratio {result['ratio_process']}"
    )
    print(
        f"convert: probe {stage['convert']:.2f}s, bare {bare_convert:.2f}s, ratio {result['ratio_convert']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
