"""The one list of stages and statuses, what each stage needs, and the rule for stages after a
failure: a red blocks only the stages that need it (transitively)."""

from __future__ import annotations

from collections.abc import Mapping

# Every stage any engine may run, in the order a probe runs them. An engine runs the subset it
# declares, always in this order (PEFT's `adapter`, the LoRA a `lora` stage serves, is made by
# the host on its own, like the transformers reference, and declared by no engine).
STAGES: tuple[str, ...] = (
    "convert",
    "load",
    "generate",
    "parity",
    "quantize",
    "lora",
    "serve",
    "chat_template",
    "tool_call",
    "json_schema",
    "long_context",
    "throughput",
    "finetune",
    "adapter",
)

# The stages of the architecture map (`dayone sweep`): does the engine run the architecture and
# compute it as transformers does. Serving features need a release's own tokenizer and trained
# weights (random weights inside a tool-call grammar write whitespace until max_tokens), so on
# our shrunk copies with our tokenizer they would measure us, not the engine; throughput on a
# random toy is noise. The nightly's arch tier on a real release still runs every stage.
# `quantize` (llama.cpp's own quantizer on the converted GGUF, judged against it) costs well
# under a second a type on a shrunk copy, so the sweep runs it unless asked not to
# (`dayone sweep --no-quantize`); the map shows it apart from the engine's own verdict
# (QUANT_STAGES). `finetune` is what the fine-tuning engines (PEFT, TRL) run on the same copy,
# a few seconds a type: their columns form the map's fine-tune group (FINETUNE_STAGES), apart
# from the inference engines' coverage figure.
# `lora` is the fine-tuned adapter served (vLLM's --enable-lora: PEFT's adapter against the merged
# model in transformers), shown as the cell's `lora` sub-cell and dropped with the fine-tune group.
ARCH_MAP_STAGES: tuple[str, ...] = ("convert", "load", "generate", "parity", "quantize", "lora", "finetune")
# Stages about a quantized copy, not the engine on the model as released: a cell's status leaves
# them out, the map shows them as the cell's `quant` sub-cell (matrix/archmap.py).
QUANT_STAGES: tuple[str, ...] = ("quantize",)
# The stages of a fine-tuning engine: an engine that runs only these is in the map's fine-tune
# group, not an inference engine of the coverage figure (matrix/archmap.py:inference_engines).
FINETUNE_STAGES: tuple[str, ...] = ("finetune",)
# Stages about a fine-tuned adapter served by an inference engine, not the engine on the model as
# released: like QUANT_STAGES, a sub-cell of their own (`lora`), left out of the cell's status.
ADAPTER_STAGES: tuple[str, ...] = ("lora",)

# What each stage needs to have gone well before it can tell anything. From the engines: load
# reads llama.cpp's converted GGUF; generate and parity use the loaded model and its
# completions; serve starts the server (vLLM's own process, SGLang's from load, llama.cpp's from
# the GGUF) and every feature stage and throughput talk to that server; finetune is a training
# run of its own (and `adapter`, PEFT's LoRA made for serving, is another); `lora` serves such
# an adapter on the loaded model's engine and compares it with the merged model; quantize
# compares each quantized copy with the unquantized GGUF's own greedy output, so it needs that
# to generate (not to agree with transformers). A need the engine does not run (no convert
# outside llama.cpp) is passed over.
NEEDS: dict[str, tuple[str, ...]] = {
    "convert": (),
    "load": ("convert",),
    "generate": ("load",),
    "parity": ("generate",),
    "quantize": ("generate",),
    "lora": ("load",),
    "serve": ("load",),
    "chat_template": ("serve",),
    "tool_call": ("serve",),
    "json_schema": ("serve",),
    "long_context": ("serve",),
    "throughput": ("serve",),
    "finetune": (),
    "adapter": (),
}

STATUSES: tuple[str, ...] = (
    "pass",
    "degraded",
    "fail",
    "oom",
    "timeout",
    "error",
    "skipped",
    "n/a",
    "needs-gpu",
)

# The two "no verdict" kinds: neither red nor ours, shown grey, each with why. `n/a`: the stage
# (or the whole probe) does not apply, e.g. an encoder in a map of generators
# (probes/modelinfo.py:not_generative). `needs-gpu`: the engine's path does not exist on this
# hardware (a CUDA-only kernel on CPU; the failure class `not_on_cpu`).
NO_VERDICT_STATUSES: frozenset[str] = frozenset({"n/a", "needs-gpu"})

# Why a `degraded` stage is not green: the failure_class it names (the classes of a red are
# probes/classify.py's). `slow` only from a measured throughput; `quantization_drift`: a
# quantized copy within its type's tolerance of the unquantized GGUF (probes/quantize.py).
DEGRADED_REASONS: tuple[str, ...] = (
    "transformers_fallback",
    "unlisted_architecture",
    "precision_drift",
    "logprob_drift",
    "template",
    "slow",
    "failed_requests",
    "quantization_drift",
)

# A stage ending in one of these is healthy (shown green or amber).
GOOD_STATUSES: frozenset[str] = frozenset({"pass", "degraded"})
# A stage ending in one of these lets the stages that need it run: a stage that ran and gave
# no verdict (`skipped` by the stage itself, e.g. a tool call on random weights; `n/a`) blocks
# nothing.
CONTINUE_STATUSES: frozenset[str] = GOOD_STATUSES | {"skipped", "n/a"}


def order_stages(stages: list[str] | tuple[str, ...]) -> list[str]:
    """Sort stages into probe order; unknown names raise ValueError with the known list."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {', '.join(STAGES)}")
    return sorted(dict.fromkeys(stages), key=STAGES.index)


def needs_of(stage: str) -> list[str]:
    """Every stage `stage` needs, directly or through another, in probe order."""
    seen: set[str] = set()
    todo = list(NEEDS[stage])
    while todo:
        need = todo.pop()
        if need not in seen:
            seen.add(need)
            todo.extend(NEEDS[need])
    return sorted(seen, key=STAGES.index)


def blocker(stage: str, statuses: Mapping[str, str]) -> tuple[str, str] | None:
    """(stage, status) of the first stage `stage` needs that ended red, or None: it may run.

    `statuses` holds the final status of the stages decided so far; a stage blocked itself is
    passed over (its own blocker is among `stage`'s needs too)."""
    for need in needs_of(stage):
        status = statuses.get(need)
        if status is not None and not lets_next_run(status):
            return need, status
    return None


def blocked_message(stage: str, status: str) -> str:
    return f"blocked by {stage} ({status})"


def skip_message(stage: str, statuses: Mapping[str, str], why: str) -> str:
    """Why `stage`, taken out before the run for `why` (parity without a reference), is
    skipped: if what it needs went red on its own, that, as for any stage; else `why`."""
    blocked = blocker(stage, statuses)
    return blocked_message(*blocked) if blocked else why


def lets_next_run(status: str) -> bool:
    return status in CONTINUE_STATUSES
