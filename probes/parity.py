"""Parity: does an engine's greedy continuation agree with the transformers reference?

Shared by every engine, implemented once. Standard library only.

The rule is vLLM's `check_logprobs_close` (tests/models/utils.py): walk both greedy
continuations token by token; at the first position where they differ, each side's token must be
in the other side's top-k, and the comparison of that prompt stops there (the sequences have
diverged, later tokens say nothing). Two engines in different precisions (bf16 vs f32) may
legitimately swap two near-tied tokens: that is `degraded`, not red. A token outside the other's
top-k is `fail` / `wrong_output`. Where the tokens agree we also compare the logprobs both sides
report for the same token ids: a huge gap on agreeing tokens (scaled logits, a wrong softmax) is
also `wrong_output`, since the argmax alone can survive such bugs.

The reference is the transformers engine's generate `output` for the same model revision and
workload, computed once and reused (`reference_path_for`, `write_reference`, `load_reference`).

Random weights (the arch tier, fixtures) have near-flat distributions: whether token 5 is 127 or
327 can depend on bf16 rounding alone. So the reference is run twice, in its released dtype and in
float32, and carries what that says about precision:
- each prompt's precision horizon (`precision_horizons`): the first token where transformers in
  float32 leaves its own released-dtype answer. It explains a divergence (`precision drift`), but
  never excuses one: at the divergence, each side's token must still be in the other's top-k, or
  it is `wrong_output`, past the horizon too.
- the logprob noise (`logprob_noise`): the largest |logprob difference| between the two runs on
  the tokens where they agree. The tolerance on an engine's agreeing tokens is a small multiple
  of it plus a floor (`logprob_tolerance`): above it, `degraded` (logprob drift: a kernel can keep
  every greedy token while its logprobs move), never green; far above it, `wrong_output`. A
  float32 reference is its own float32 run: noise 0, the tolerance is the floor.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from probes import workload
from probes.outcome import HarnessError, StageOutcome

# Nats. A gap on agreeing tokens no precision explains (scaled logits, a wrong softmax): the
# argmax alone can survive such bugs. Above the tolerance too, this is `wrong_output`.
MAX_LOGPROB_GAP = 2.0

# The tolerance on agreeing tokens' logprobs: NOISE_MULTIPLE x the reference's own precision noise
# + LOGPROB_FLOOR. An engine in the released dtype and the reference in the released dtype both
# sit about one noise away from float32, so up to twice it apart; the third is margin. The floor
# is what two float32 implementations of the same model differ by, with room. Measured against
# transformers float32 on the fixtures: llama.cpp's f32 GGUF 0.0035-0.0088 nats (gemma3_text
# aside: 0.70), vLLM 0.32 on gemma3_text 5e-6, SGLang 0.5.23's CPU path on llama 0.056.
NOISE_MULTIPLE = 3.0
LOGPROB_FLOOR = 0.1

# Why a parity stage is degraded (the record's failure_class; see probes/stages.py).
PRECISION_DRIFT = "precision_drift"
LOGPROB_DRIFT = "logprob_drift"

# Bump when what a reference file holds changes, so cached ones are computed again
# (2: precision horizons; 3: logprob noise).
REFERENCE_FORMAT = 3

Completion = Mapping[str, Any]  # {"prompt", "prompt_ids", "token_ids", "top_logprobs", ...}


@dataclass(frozen=True)
class ParityResult:
    status: str  # pass / degraded / fail
    failure_class: str | None
    message: str
    metrics: dict[str, Any] = field(default_factory=dict)
    details: list[dict[str, Any]] = field(default_factory=list)  # one per prompt


def _top(step: list[list[float]] | list[tuple[int, float]], k: int) -> dict[int, float]:
    """A step's top-k as {token_id: logprob}; lists arrive sorted best first."""
    return {int(tok): float(lp) for tok, lp in list(step)[:k]}


def compare_completion(ref: Completion, got: Completion, top_k: int) -> dict[str, Any]:
    """One prompt: where it diverged, whether the divergence is within top-k, the worst logprob
    gap on the tokens both rank in their top-k, at the steps before it diverged."""
    ref_ids, got_ids = list(ref["token_ids"]), list(got["token_ids"])
    ref_top, got_top = ref.get("top_logprobs") or [], got.get("top_logprobs") or []
    steps = min(len(ref_ids), len(got_ids), len(ref_top), len(got_top))
    detail: dict[str, Any] = {
        "prompt": ref.get("prompt"),
        "tokens_compared": 0,
        "first_divergence": None,
        "within_top_k": True,
        "max_logprob_gap": 0.0,
        "gap_at": None,
    }
    for i in range(steps):
        ref_k, got_k = _top(ref_top[i], top_k), _top(got_top[i], top_k)
        detail["tokens_compared"] = i + 1
        if ref_ids[i] != got_ids[i]:
            detail["first_divergence"] = i
            detail["reference_token"], detail["engine_token"] = ref_ids[i], got_ids[i]
            # vLLM's rule: each side's choice must be among the other's top-k.
            detail["within_top_k"] = got_ids[i] in ref_k and ref_ids[i] in got_k
            # How far the reference's top-k spans there: on a near-flat distribution (random
            # weights) a few hundredths of a nat reorder it, which the verdict's reader should see.
            if len(ref_k) > 1:
                detail["reference_top_k_span"] = round(max(ref_k.values()) - min(ref_k.values()), 6)
            break
        # Logprobs compare where the greedy tokens agree: at a swap of two near-tied tokens
        # the gap on the swapped pair is the swap itself, which the top-k rule judges.
        for tok in ref_k.keys() & got_k.keys():
            gap = abs(ref_k[tok] - got_k[tok])
            if gap > detail["max_logprob_gap"]:
                detail["max_logprob_gap"], detail["gap_at"] = gap, i
    if steps < max(len(ref_ids), len(got_ids)) and detail["first_divergence"] is None:
        # One side stopped early (or reported fewer logprob steps): a divergence at `steps`.
        detail["first_divergence"] = steps
        detail["within_top_k"] = False
        detail["length_mismatch"] = [len(ref_ids), len(got_ids)]
    detail["max_logprob_gap"] = round(detail["max_logprob_gap"], 6)
    return detail


def logprob_tolerance(noise: float | None) -> float | None:
    """The largest gap allowed on agreeing tokens' logprobs before parity says `logprob drift`:
    NOISE_MULTIPLE x the reference's measured precision noise + LOGPROB_FLOOR; None where the
    noise is unknown (a reference whose float32 twin did not run: only MAX_LOGPROB_GAP holds)."""
    if noise is None:
        return None
    return round(NOISE_MULTIPLE * max(0.0, float(noise)) + LOGPROB_FLOOR, 6)


def check_logprobs_close(
    reference: list[Completion],
    candidate: list[Completion],
    *,
    top_k: int | None = None,
    max_logprob_gap: float = MAX_LOGPROB_GAP,
    horizons: Mapping[str, int | None] | None = None,
    noise: float | None = None,
) -> ParityResult:
    """The verdict of comparing an engine's completions with the reference's, prompt by prompt.

    horizons, noise: what the reference's float32 twin said (see the module docstring).
    Completions pair up by prompt text. Raises ValueError when they cannot be paired (a harness
    problem: the two runs did not use the same workload)."""
    by_prompt = {c.get("prompt"): c for c in candidate}
    missing = [r.get("prompt") for r in reference if r.get("prompt") not in by_prompt]
    if missing or not reference:
        raise ValueError(
            f"engine output lacks reference prompt(s) {missing!r}" if missing else "empty reference"
        )
    k = top_k or min(len(s) for c in (*reference, *candidate) for s in (c.get("top_logprobs") or [[None]]))
    details, token_mismatch = [], []
    for ref in reference:
        got = by_prompt[ref.get("prompt")]
        if (
            ref.get("prompt_ids") is not None
            and got.get("prompt_ids") is not None
            and list(ref["prompt_ids"]) != list(got["prompt_ids"])
        ):
            token_mismatch.append(ref.get("prompt"))
        detail = compare_completion(ref, got, k)
        horizon = (horizons or {}).get(ref.get("prompt"))
        if horizon is not None:
            detail["precision_horizon"] = horizon
            if detail["first_divergence"] is not None and detail["first_divergence"] >= horizon:
                detail["within_precision_noise"] = True
        details.append(detail)
    diverged = [d for d in details if d["first_divergence"] is not None]
    divergences = [d["first_divergence"] for d in diverged]
    tolerance = logprob_tolerance(noise)
    metrics = {
        "prompts_compared": len(details),
        "tokens_compared": sum(d["tokens_compared"] for d in details),
        "first_divergence": min(divergences) if divergences else None,
        "prompts_diverged": len(diverged),
        "max_logprob_gap": max(d["max_logprob_gap"] for d in details),
        "logprob_tolerance": tolerance,
        "reference_noise": None if noise is None else round(float(noise), 6),
        "top_k": k,
    }
    if token_mismatch:
        return ParityResult(
            "fail",
            "tokenizer_or_template",
            f"parity failed: the prompt tokenizes differently from the reference for {token_mismatch[0]!r}",
            metrics,
            details,
        )
    # vLLM's rule holds everywhere: past the precision horizon a divergence is expected, not
    # excused (with a horizon of 0, garbage from the first token would otherwise be amber).
    outside = [d for d in diverged if not d["within_top_k"]]
    if outside:
        d = outside[0]
        if "length_mismatch" in d:
            what = f"lengths {d['length_mismatch'][1]} vs reference {d['length_mismatch'][0]}"
        else:
            what = (
                f"token {d['engine_token']} vs reference {d['reference_token']}, "
                f"not within each other's top-{k}"
            )
        span = d.get("reference_top_k_span")
        if span is not None and span < LOGPROB_FLOOR:
            what += f"; the reference's top-{k} spans only {span:.3f} nats there (a near-flat distribution)"
        if d.get("within_precision_noise"):
            what += (
                f" (past the reference's precision horizon, token "
                f"{d['precision_horizon']}, but no precision puts a token outside the "
                f"top-{k})"
            )
        return ParityResult(
            "fail",
            "wrong_output",
            f"parity failed: {d['prompt']!r} diverges at token {d['first_divergence']}: {what}",
            metrics,
            details,
        )
    worst = max(details, key=lambda d: d["max_logprob_gap"])
    gap = worst["max_logprob_gap"]
    where = f"on {worst['prompt']!r} at token {worst['gap_at']}"
    if gap > max(max_logprob_gap, tolerance or 0.0):
        return ParityResult(
            "fail",
            "wrong_output",
            f"parity failed: logprobs of agreeing tokens differ by {gap:.3f} "
            f"nats (limit {max_logprob_gap}) {where}",
            metrics,
            details,
        )
    drift = tolerance is not None and gap > tolerance
    if drift:
        how = (
            f"logprob drift: agreeing tokens' logprobs differ by {gap:.4f} nats {where}, "
            f"above the tolerance {tolerance:.4f} ({NOISE_MULTIPLE:g} x the reference's "
            f"precision noise {noise:.4f} + {LOGPROB_FLOOR:g})"
        )
    if diverged:
        noisy = [d for d in diverged if d.get("within_precision_noise")]
        why = (
            f"within top-{k}"
            if not noisy
            else f"within top-{k}, past the reference's precision horizon (transformers in "
            f"float32 leaves its own answer at token {noisy[0]['precision_horizon']} of "
            f"{noisy[0]['prompt']!r})"
        )
        message = (
            f"precision drift: greedy output diverges from the reference on "
            f"{len(diverged)} of {len(details)} prompts (first at token "
            f"{metrics['first_divergence']}), {why}"
        )
        if drift:
            return ParityResult("degraded", LOGPROB_DRIFT, f"{how}; {message}", metrics, details)
        return ParityResult("degraded", PRECISION_DRIFT, message, metrics, details)
    if drift:
        return ParityResult(
            "degraded",
            LOGPROB_DRIFT,
            f"{how}; all {metrics['tokens_compared']} greedy tokens agree",
            metrics,
            details,
        )
    within = "" if tolerance is None else f", logprobs within {tolerance:g} nats"
    return ParityResult(
        "pass",
        None,
        f"{metrics['tokens_compared']} tokens agree with the reference{within}",
        metrics,
        details,
    )


# The reference: computed once per model revision and workload, reused
def workload_key(
    prompts: tuple[str, ...] | list[str] = workload.PROMPTS,
    max_new_tokens: int = workload.MAX_NEW_TOKENS,
    top_k: int = workload.TOP_K,
) -> str:
    blob = json.dumps(
        {
            "prompts": list(prompts),
            "max_new_tokens": max_new_tokens,
            "top_k": top_k,
            "format": REFERENCE_FORMAT,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _field(model_info: Any, name: str) -> Any:
    if isinstance(model_info, Mapping):
        return model_info.get(name)
    return getattr(model_info, name, None)


def reference_path_for(
    model_info: Any,
    cache_dir: Path | str,
    *,
    prompts: tuple[str, ...] | list[str] = workload.PROMPTS,
    max_new_tokens: int = workload.MAX_NEW_TOKENS,
    top_k: int = workload.TOP_K,
) -> Path:
    """Where the transformers reference for this model revision and workload lives.

    model_info: a probes.modelinfo.ModelInfo or its record dict (id, revision)."""
    model_id = str(_field(model_info, "id") or "model")
    revision = str(_field(model_info, "revision") or "unknown")
    safe_id = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_id)[:80] or "model"
    return (
        Path(cache_dir) / "references" / safe_id / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', revision)[:64]}-"
        f"{workload_key(prompts, max_new_tokens, top_k)}.json"
    )


def precision_horizons(reference: list[Completion], other: list[Completion]) -> dict[str, int | None]:
    """{prompt: first token where `other` (transformers in float32) leaves the reference's
    greedy tokens, or None where they agree throughout}."""
    by_prompt = {c.get("prompt"): list(c.get("token_ids") or []) for c in other}
    out: dict[str, int | None] = {}
    for ref in reference:
        mine, theirs = list(ref.get("token_ids") or []), by_prompt.get(ref.get("prompt"))
        if theirs is None:
            continue
        out[ref.get("prompt")] = next(
            (i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b),
            None if len(mine) == len(theirs) else min(len(mine), len(theirs)),
        )
    return out


def logprob_noise(reference: list[Completion], other: list[Completion]) -> float | None:
    """The reference's precision noise: the largest |logprob difference| between it and `other`
    (transformers in float32) on the tokens both rank in their top-k, up to where they diverge.
    None when no prompt pairs up (nothing measured)."""
    by_prompt = {c.get("prompt"): c for c in other}
    pairs = [(ref, by_prompt[ref.get("prompt")]) for ref in reference if ref.get("prompt") in by_prompt]
    if not pairs:
        return None
    k = min((len(s) for pair in pairs for c in pair for s in (c.get("top_logprobs") or [])), default=0)
    if k == 0:
        return None
    return max(compare_completion(ref, got, k)["max_logprob_gap"] for ref, got in pairs)


@dataclass(frozen=True)
class Reference:
    """What a reference file holds: the completions and what its float32 twin said."""

    completions: list[dict[str, Any]]
    horizons: dict[str, int | None] = field(default_factory=dict)  # {}: none measured
    noise: float | None = None  # None: unknown (no twin ran and the reference is not float32)


def write_reference(
    path: Path | str,
    generate_record: Mapping[str, Any],
    horizons: Mapping[str, int | None] | None = None,
    noise: float | None = None,
) -> Path:
    """Save a transformers `generate` result record (status pass, with `output`) as reference,
    with its precision horizons and logprob noise when known (noise 0.0: the reference ran in
    float32 itself).

    Written atomically: a parallel probe reads either nothing or the whole file."""
    if (
        generate_record.get("stage") != "generate"
        or generate_record.get("status") != "pass"
        or not (generate_record.get("output") or {}).get("completions")
    ):
        raise ValueError("a reference needs a passing generate record with completions")
    if noise is not None and not (isinstance(noise, (int, float)) and noise >= 0):
        raise ValueError(f"logprob noise must be a non-negative number, not {noise!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = generate_record.get("engine") or {}
    data = {
        "model": generate_record.get("model"),
        "engine": {
            "name": engine.get("name"),
            "version": engine.get("version"),
            "packages": engine.get("packages"),
        },
        "output": generate_record["output"],
    }
    if horizons is not None:
        data["precision_horizons"] = dict(horizons)
    if noise is not None:
        data["logprob_noise"] = float(noise)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_reference(path: Path | str) -> Reference:
    """A file written by write_reference (or a bare output: no horizons, noise unknown)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    output = data.get("output", data) if isinstance(data, dict) else None
    completions = output.get("completions") if isinstance(output, dict) else None
    if not isinstance(completions, list) or not completions:
        raise ValueError(f"{path}: no reference completions")
    horizons = data.get("precision_horizons")
    noise = data.get("logprob_noise")
    return Reference(
        completions,
        {str(k): (int(v) if isinstance(v, int) else None) for k, v in horizons.items()}
        if isinstance(horizons, dict)
        else {},
        float(noise)
        if isinstance(noise, (int, float)) and not isinstance(noise, bool) and noise >= 0
        else None,
    )


def load_reference(path: Path | str) -> list[dict[str, Any]]:
    """The reference completions from a file written by write_reference (or a bare output)."""
    return read_reference(path).completions


def load_horizons(path: Path | str) -> dict[str, int | None]:
    """The reference's precision horizons ({} for a reference written without them)."""
    return read_reference(path).horizons


def reference_prompt_ids(options: Mapping[str, Any]) -> dict[str, list[int]]:
    """{prompt: reference prompt token ids} when the host passed a reference, else {}.

    Engines feed these ids so both sides see the same tokens."""
    path = options.get("reference_path")
    if not path or not Path(path).exists():
        return {}
    return {
        c["prompt"]: list(c["prompt_ids"]) for c in load_reference(path) if c.get("prompt_ids") is not None
    }


def parity_stage(options: Mapping[str, Any], completions: list[Completion], top_k: int) -> StageOutcome:
    """The `parity` stage of any engine: its generate completions against the reference.

    Returns a StageOutcome; a missing reference is ours (HarnessError -> error/infra)."""
    import sys

    path = options.get("reference_path")
    if not path:
        raise HarnessError(
            "parity needs a transformers reference: options['reference_path'] "
            "is not set (run the transformers generate stage first)"
        )
    try:
        reference = read_reference(path)
    except (OSError, ValueError) as exc:
        raise HarnessError(f"unreadable parity reference {path}: {exc}") from exc
    try:
        result = check_logprobs_close(
            reference.completions,
            completions,
            top_k=top_k,
            max_logprob_gap=float(options.get("max_logprob_gap", MAX_LOGPROB_GAP)),
            horizons=reference.horizons,
            noise=reference.noise,
        )
    except ValueError as exc:
        raise HarnessError(f"parity: {exc}") from exc
    if result.status != "pass":
        print(f"dayone: {result.message}", file=sys.stderr, flush=True)
    return StageOutcome(
        status=result.status,
        metrics=result.metrics,
        message=result.message,
        failure_class=result.failure_class,
        output={"details": result.details},
    )
