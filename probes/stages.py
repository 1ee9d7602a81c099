"""The one list of stages and statuses, and the rule for stages after a failure."""

from __future__ import annotations

# Every stage any engine may run, in the order a probe runs them. An engine runs the subset it
# declares, always in this order.
STAGES: tuple[str, ...] = (
    "convert",
    "load",
    "generate",
    "parity",
    "serve",
    "chat_template",
    "tool_call",
    "json_schema",
    "long_context",
    "throughput",
    "finetune",
)

# The stages of the architecture map (`dayone sweep`): does the engine run the architecture and
# compute it as transformers does. Serving features need a release's own tokenizer and trained
# weights (random weights inside a tool-call grammar write whitespace until max_tokens), so on
# our shrunk copies with our tokenizer they would measure us, not the engine; throughput on a
# random toy is noise. The nightly's arch tier on a real release still runs every stage.
ARCH_MAP_STAGES: tuple[str, ...] = ("convert", "load", "generate", "parity")

STATUSES: tuple[str, ...] = ("pass", "degraded", "fail", "oom", "timeout", "error", "skipped",
                             "n/a", "needs-gpu")

# The two "no verdict" kinds: neither red nor ours, shown grey, each with why. `n/a`: the stage
# (or the whole probe) does not apply, e.g. an encoder in a map of generators
# (probes/modelinfo.py:not_generative). `needs-gpu`: the engine's path does not exist on this
# hardware (a CUDA-only kernel on CPU; the failure class `not_on_cpu`).
NO_VERDICT_STATUSES: frozenset[str] = frozenset({"n/a", "needs-gpu"})

# Why a `degraded` stage is not green: the failure_class it names (the classes of a red are
# probes/classify.py's). `slow` only from a measured throughput.
DEGRADED_REASONS: tuple[str, ...] = ("transformers_fallback", "unlisted_architecture",
                                     "precision_drift", "logprob_drift", "template", "slow",
                                     "failed_requests")

# A stage ending in one of these is healthy (shown green or amber).
GOOD_STATUSES: frozenset[str] = frozenset({"pass", "degraded"})
# A stage ending in one of these lets the next stage run: a stage that ran and gave no verdict
# (`skipped` by the stage itself, e.g. a tool call on random weights; `n/a`) blocks nothing.
CONTINUE_STATUSES: frozenset[str] = GOOD_STATUSES | {"skipped", "n/a"}

# Statuses that are the engine's fault (shown red); `error` is ours and never counted against it.
ENGINE_FAULT_STATUSES: frozenset[str] = frozenset({"fail"})


def order_stages(stages: list[str] | tuple[str, ...]) -> list[str]:
    """Sort stages into probe order; unknown names raise ValueError with the known list."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {', '.join(STAGES)}")
    return sorted(dict.fromkeys(stages), key=STAGES.index)


def blocked_message(stage: str, status: str) -> str:
    return f"blocked by {stage} ({status})"


def is_good(status: str) -> bool:
    return status in GOOD_STATUSES


def lets_next_run(status: str) -> bool:
    return status in CONTINUE_STATUSES
