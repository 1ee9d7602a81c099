"""The shared `throughput` stage for every OpenAI-compatible server.

Streaming chat completions at concurrency 1 and N, fixed prompt and output lengths, medians over
repeats, in the vocabulary of `vllm bench serve` (TTFT, TPOT, ITL, E2EL: mean / median / p99 in
ms; request, output and total token throughput). The same definitions as vLLM's bench:
TTFT is the first streamed chunk with choices, ITL every gap between later chunks, TPOT
(latency - TTFT) / (output tokens - 1) per request, output tokens from the usage chunk.

Standard library only, except `reference_figures`, which imports transformers inside the
probe child (every serving engine's env has it). The `serve` check is probes/features.py's.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from probes.outcome import HarnessError, StageFailure, StageOutcome

# The fixed workload. Small, so a probe on 2 CPU cores takes seconds; options override.
INPUT_WORDS = 32  # words of the user turn (the record says how many tokens that made)
OUTPUT_LEN = 32
CONCURRENCY = (1, 4)
PROMPTS_PER_SLOT = 4  # requests per run = concurrency * this (vLLM bench: --num-prompts)
REPEATS = 3
# "Far below the reference": output throughput under this fraction of transformers' own
# figure for the same workload (at the highest concurrency) is degraded / slow.
SLOW_BELOW = 0.25
METRIC_NAMES = ("ttft", "tpot", "itl", "e2el")
FILLER = (
    "the capital of france is paris and the capital of italy is rome while models load "
    "generate and answer questions about weather numbers and code once upon a time"
).split()


@dataclass
class RequestResult:
    ok: bool
    start: float = 0.0
    ttft: float = 0.0
    itl: list[float] = field(default_factory=list)
    latency: float = 0.0
    output_tokens: int = 0
    prompt_tokens: int = 0
    text: str = ""
    error: str | None = None


def user_prompt(words: int = INPUT_WORDS) -> str:
    """A fixed, deterministic user turn of `words` words."""
    return " ".join(FILLER[i % len(FILLER)] for i in range(words))


def _sse_messages(resp: http.client.HTTPResponse):
    """The `data:` payloads of a server-sent event stream, as they arrive."""
    buf = b""
    while True:
        chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            message, buf = buf.split(b"\n\n", 1)
            for line in message.decode("utf-8", "replace").splitlines():
                if line.startswith("data:"):
                    yield line[5:].strip()


def stream_chat(
    base_url: str, model: str, messages: list[dict[str, str]], output_len: int, timeout: float = 300.0
) -> RequestResult:
    """One streamed chat completion, timed the way `vllm bench serve` (openai-chat) times it."""
    url = urllib.parse.urlsplit(base_url)
    payload = {
        "model": model,
        "messages": messages,
        "max_tokens": output_len,
        "max_completion_tokens": output_len,
        "min_tokens": output_len,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    result = RequestResult(ok=False)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    st = time.perf_counter()
    result.start = st
    last = st
    try:
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=json.dumps(payload),
            headers={"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        if resp.status != 200:
            result.error = f"HTTP {resp.status}: {resp.read().decode('utf-8', 'replace')[:500]}"
            return result
        first = False
        for data in _sse_messages(resp):
            if data == "[DONE]":
                continue
            now = time.perf_counter()
            event = json.loads(data)
            if event.get("choices"):
                if not first:
                    first, result.ttft = True, now - st
                else:
                    result.itl.append(now - last)
                result.text += event["choices"][0].get("delta", {}).get("content") or ""
                last = now
            elif usage := event.get("usage"):
                result.output_tokens = int(usage.get("completion_tokens") or 0)
                result.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        result.ok = first
        result.latency = last - st
        if not first:
            result.error = "no streamed chunk with choices"
        if not result.output_tokens:  # no usage chunk: count chunks, as vLLM's bench does
            result.output_tokens = len(result.itl) + 1 if first else 0
    except (OSError, http.client.HTTPException, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    return result


def percentile(values: list[float], p: float) -> float:
    """numpy.percentile's default (linear interpolation), without numpy."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def summarize(results: list[RequestResult], duration_s: float) -> dict[str, float]:
    """One run's metrics, named as `vllm bench serve` names them (times in ms)."""
    done = [r for r in results if r.ok]
    series: dict[str, list[float]] = {name: [] for name in METRIC_NAMES}
    for r in done:
        series["ttft"].append(r.ttft)
        series["e2el"].append(r.latency)
        series["itl"] += r.itl
        if r.output_tokens > 1:
            series["tpot"].append((r.latency - r.ttft) / (r.output_tokens - 1))
    total_in = sum(r.prompt_tokens for r in done)
    total_out = sum(r.output_tokens for r in done)
    out: dict[str, float] = {
        "completed": len(done),
        "failed": len(results) - len(done),
        "duration_s": duration_s,
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(done) / duration_s if duration_s else 0.0,
        "output_throughput": total_out / duration_s if duration_s else 0.0,
        "total_token_throughput": (total_in + total_out) / duration_s if duration_s else 0.0,
    }
    for name, values in series.items():
        ms = [v * 1000 for v in values]
        out[f"mean_{name}_ms"] = statistics.fmean(ms) if ms else 0.0
        out[f"median_{name}_ms"] = statistics.median(ms) if ms else 0.0
        out[f"p99_{name}_ms"] = percentile(ms, 99)
    return out


def run_once(
    base_url: str,
    model: str,
    messages: list[dict[str, str]],
    output_len: int,
    concurrency: int,
    num_prompts: int,
) -> tuple[dict[str, float], list[RequestResult]]:
    """num_prompts requests, at most `concurrency` in flight (request rate unbounded)."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(
            pool.map(lambda _: stream_chat(base_url, model, messages, output_len), range(num_prompts))
        )
    return summarize(results, time.perf_counter() - t0), results


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each metric's median over repeated runs."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def benchmark(
    base_url: str,
    model: str,
    *,
    input_words: int = INPUT_WORDS,
    output_len: int = OUTPUT_LEN,
    concurrency: tuple[int, ...] = CONCURRENCY,
    prompts_per_slot: int = PROMPTS_PER_SLOT,
    repeats: int = REPEATS,
) -> tuple[dict[int, dict[str, float]], list[str]]:
    """{concurrency: median metrics} and the errors of failed requests (first few)."""
    messages = [{"role": "user", "content": user_prompt(input_words)}]
    warm = stream_chat(base_url, model, messages, output_len)  # as vLLM's bench: one test run
    errors = [warm.error] if warm.error else []
    figures: dict[int, dict[str, float]] = {}
    for c in concurrency:
        runs = []
        for _ in range(repeats):
            metrics, results = run_once(base_url, model, messages, output_len, c, c * prompts_per_slot)
            runs.append(metrics)
            errors += [r.error for r in results if r.error][:3]
        figures[c] = median_of(runs)
        figures[c]["num_prompts"] = c * prompts_per_slot
        figures[c]["repeats"] = repeats
    return figures, errors[:5]


def flat_metrics(figures: dict[int, dict[str, float]], prefix: str = "") -> dict[str, float]:
    """{1: {...}, 4: {...}} -> {"c1_mean_ttft_ms": ..., "c4_output_throughput": ...} (the
    record's metrics are flat scalars)."""
    return {
        f"{prefix}c{c}_{k}": round(v, 4) if isinstance(v, float) else v
        for c, m in figures.items()
        for k, v in m.items()
    }


def verdict(
    figures: dict[int, dict[str, float]],
    reference: dict[int, dict[str, float]] | None,
    slow_below: float = SLOW_BELOW,
) -> tuple[str, str | None, str | None, dict[str, float]]:
    """(status, failure_class, message, ratio metrics). Pure.

    Ratios are output throughput over the reference's at the same concurrency; the verdict
    looks at the highest concurrency both measured (batching is what a server is for).
    """
    ratios: dict[str, float] = {}
    for c, m in figures.items():
        ref = (reference or {}).get(c, {}).get("output_throughput")
        if ref:
            ratios[f"c{c}_x_reference"] = round(m["output_throughput"] / ref, 3)
    failed = sum(m.get("failed", 0) for m in figures.values())
    if any(m.get("completed", 0) == 0 for m in figures.values()):
        return "fail", None, "no request completed", ratios
    if failed:
        return ("degraded", "failed_requests", f"{failed:g} requests failed (median over repeats)", ratios)
    shared = [c for c in figures if f"c{c}_x_reference" in ratios]
    if not shared:
        return "pass", None, "no reference figure to compare with", ratios
    top = max(shared)
    ratio = ratios[f"c{top}_x_reference"]
    message = f"output throughput at concurrency {top}: {ratio:g}x the transformers reference"
    if ratio < slow_below:
        return "degraded", "slow", f"{message} (below {slow_below:g}x)", ratios
    return "pass", None, message, ratios


# Child side: transformers for the reference
def reference_figures(
    model_dir: Path,
    *,
    input_words: int = INPUT_WORDS,
    output_len: int = OUTPUT_LEN,
    concurrency: tuple[int, ...] = CONCURRENCY,
    prompts_per_slot: int = PROMPTS_PER_SLOT,
    repeats: int = REPEATS,
    threads: int | None = 1,
) -> tuple[dict[int, dict[str, float]], dict]:
    """The same workload in plain transformers (greedy generate, batch = concurrency), timed
    end to end per batch: the figure an engine's throughput is compared with.

    One thread by default, as vLLM's CPU worker computes with one (it keeps a core for its
    server): on a shared 2-core machine two OpenMP threads made a tiny model 25x slower
    (1.1 s against 0.04 s for 32 tokens), which would flatter every engine."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import transformers

    if threads:
        torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="auto").eval()
    messages = [{"role": "user", "content": user_prompt(input_words)}]
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        text = messages[0]["content"]
    ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    def generate(batch: int) -> None:
        inputs = ids.repeat(batch, 1)
        with torch.no_grad():
            model.generate(
                inputs,
                attention_mask=torch.ones_like(inputs),
                do_sample=False,
                max_new_tokens=output_len,
                min_new_tokens=output_len,
                pad_token_id=pad,
            )

    generate(1)  # warm-up
    figures: dict[int, dict[str, float]] = {}
    for c in concurrency:
        n = c * prompts_per_slot
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            latencies = []
            for _ in range(n // c):
                b0 = time.perf_counter()
                generate(c)
                latencies += [time.perf_counter() - b0] * c
            dur = time.perf_counter() - t0
            runs.append(
                {
                    "duration_s": dur,
                    "request_throughput": n / dur,
                    "output_throughput": n * output_len / dur,
                    "mean_e2el_ms": statistics.fmean(latencies) * 1000,
                }
            )
        figures[c] = median_of(runs)
    about = {
        "reference_engine": f"transformers {transformers.__version__}",
        "reference_threads": torch.get_num_threads(),
        "reference_prompt_tokens": int(ids.shape[1]),
    }
    return figures, about


# The stage
def options_workload(options: dict[str, Any]) -> dict[str, Any]:
    o = options.get("throughput") or {}
    return {
        "input_words": int(o.get("input_words", INPUT_WORDS)),
        "output_len": int(o.get("output_len", OUTPUT_LEN)),
        "concurrency": tuple(int(c) for c in o.get("concurrency", CONCURRENCY)),
        "prompts_per_slot": int(o.get("prompts_per_slot", PROMPTS_PER_SLOT)),
        "repeats": int(o.get("repeats", REPEATS)),
    }


def reference_in_subprocess(
    model_dir: Path, load: dict[str, Any], timeout_s: float = 600.0, threads: int = 1
) -> tuple[dict[int, dict[str, float]], dict]:
    """reference_figures in a fresh interpreter: the probe child may be pinned to one core by
    the engine (vLLM binds its OpenMP threads), which would make the reference unfairly slow."""
    code = (
        "import json, os, sys; from pathlib import Path; "
        "os.sched_setaffinity(0, range(os.cpu_count() or 1)); "
        "from probes.throughput import reference_figures; "
        "a = json.loads(sys.argv[1]); a['concurrency'] = tuple(a['concurrency']); "
        "f, about = reference_figures(Path(a.pop('model_dir')), **a); "
        "print('DAYONE-REFERENCE ' + json.dumps({'figures': f, 'about': about}))"
    )
    args = json.dumps(
        {**load, "concurrency": list(load["concurrency"]), "model_dir": str(model_dir), "threads": threads}
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_NUM_THREADS", "KMP_AFFINITY", "GOMP_CPU_AFFINITY", "LD_PRELOAD")
    }
    proc = subprocess.run(
        [sys.executable, "-c", code, args], capture_output=True, text=True, timeout=timeout_s, env=env
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("DAYONE-REFERENCE ")), None)
    if proc.returncode or line is None:
        print(proc.stdout[-2000:] + proc.stderr[-4000:], flush=True)
        raise HarnessError(f"the transformers reference for throughput failed (exit {proc.returncode})")
    data = json.loads(line.split(" ", 1)[1])
    return {int(c): m for c, m in data["figures"].items()}, data["about"]


def stage(
    base_url: str,
    model: str,
    model_dir: Path,
    options: dict[str, Any],
    before_reference: Callable[[], None] | None = None,
) -> StageOutcome:
    """The `throughput` stage against a running server, plus the transformers reference.

    before_reference: called between the two (stop the server, so the reference has the
    machine to itself). options["throughput"] may set the workload, "slow_below" and
    "reference": false; options["throughput_reference"] may carry figures measured elsewhere
    ({"1": {"output_throughput": ...}, ...}).
    """
    load = options_workload(options)
    figures, errors = benchmark(base_url, model, **load)
    for e in errors:
        print(f"dayone: throughput request failed: {e}", flush=True)
    if before_reference:
        before_reference()
    given = options.get("throughput_reference")
    if given:
        reference = {int(c): m for c, m in given.items()}
        about: dict[str, Any] = {"reference_engine": "given"}
    elif (options.get("throughput") or {}).get("reference", True):
        reference, about = reference_in_subprocess(
            model_dir, load, threads=int((options.get("throughput") or {}).get("reference_threads", 1))
        )
    else:
        reference, about = None, {}
    slow_below = float((options.get("throughput") or {}).get("slow_below", SLOW_BELOW))
    status, failure_class, message, ratios = verdict(figures, reference, slow_below)
    metrics: dict[str, Any] = {
        "input_words": load["input_words"],
        "output_len": load["output_len"],
        "concurrency": ",".join(map(str, load["concurrency"])),
        "repeats": load["repeats"],
        **flat_metrics(figures),
        **about,
        **ratios,
        **{
            f"reference_c{c}_output_throughput": round(m["output_throughput"], 3)
            for c, m in (reference or {}).items()
        },
    }
    if status == "fail":
        raise StageFailure(f"throughput: {message}; {errors[0] if errors else ''}", metrics=metrics)
    return StageOutcome(
        status,
        metrics,
        message,
        failure_class,
        output={
            "figures": {str(c): m for c, m in figures.items()},
            "reference": {str(c): m for c, m in (reference or {}).items()},
            "errors": errors,
        },
    )
