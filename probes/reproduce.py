"""Bare reproductions: one small script per stage, written beside the probe's logs.

A record's `reproduce` must re-decide its verdict without dayone: the script imports only the
standard library and the engine (never `probes`), runs the same workload as the probe (prompts,
max_tokens, dtype, window, server flags: generated into it from the probe's own constants) and
exits 0 when the stage passes, 1 with the engine's own error when it fails, NO_VERDICT when the
bare check cannot decide this stage here. Parity prints both token lists and the first
divergent position, decided by the probe's own rule (its source is written into the script).

The script bodies are templates in `probes/bare/` (common.py + one per engine), kept in ONE
place; this module only fills in the constants. Standard library only.
"""

from __future__ import annotations

import functools
import inspect
import shlex
import threading
from pathlib import Path
from typing import Any

from probes import features, parity, throughput, workload
from probes.engines import EngineSpec, base, get_spec
from probes.modelinfo import read_config

TEMPLATES = Path(__file__).with_name("bare")
NO_VERDICT = 3  # the exit status of a bare check without a verdict (common.py says the same)
MARKER = "dayone-bare:"  # every line the bare script says itself starts with this
# The probe's rules, written into every script as source, so the bare verdict is the probe's.
EMBEDDED = (
    parity.ParityResult,
    parity._top,
    parity.compare_completion,
    parity.logprob_tolerance,
    parity.check_logprobs_close,
    features.schema_errors,
)
# The module constants those rules read.
RULE_CONSTANTS = ("NOISE_MULTIPLE", "LOGPROB_FLOOR", "PRECISION_DRIFT", "LOGPROB_DRIFT")
# inspect.getsource parses with `ast`, whose recursion guard is not thread-safe on CPython 3.11
# (probes written from two threads raised "AST constructor recursion depth mismatch").
_SOURCE_LOCK = threading.Lock()


@functools.cache
def _embedded_source() -> str:
    with _SOURCE_LOCK:
        return "\n\n".join(inspect.getsource(obj) for obj in EMBEDDED)


def _reference(options: dict[str, Any]) -> tuple[str | None, dict[str, list[int]]]:
    path = options.get("reference_path")
    if not path or not Path(path).exists():
        return None, {}
    return str(path), parity.reference_prompt_ids(options)


def constants(
    engine: str,
    stage: str,
    model_dir: Path,
    log_dir: Path,
    python: str,
    options: dict[str, Any],
    stages: list[str],
) -> dict[str, Any]:
    """What the script of ENGINE's STAGE needs, from the probe's own constants and options."""
    config = read_config(model_dir)
    if stage == "lora":  # the served adapter is held to the merged model's reference
        options = {**options, "reference_path": options.get("lora_reference_path")}
    reference, prompt_ids = _reference(options)
    window, sliding = features.context_windows(config)
    server_window = base.context_window(config)
    long_window = (
        (int(options["max_model_len"]) if options.get("max_model_len") else server_window) or window or 0
    )
    out: dict[str, Any] = {
        "STAGE": stage,
        "ENGINE": engine,
        "MODEL": str(model_dir),
        "PROMPTS": list(options.get("prompts") or workload.PROMPTS),
        "MAX_NEW_TOKENS": int(options.get("max_new_tokens", workload.MAX_NEW_TOKENS)),
        "TOP_K": int(options.get("top_k", workload.TOP_K)),
        "CHAT_MESSAGES": [dict(m) for m in workload.CHAT_MESSAGES],
        "TRUST_REMOTE_CODE": bool(options.get("trust_remote_code", False)),
        "REFERENCE_PATH": reference,
        "PROMPT_IDS": prompt_ids,
        "MAX_LOGPROB_GAP": float(options.get("max_logprob_gap", parity.MAX_LOGPROB_GAP)),
        "SERVED_NAME": base.SERVED_NAME,
        "TEMPLATE_TURNS": [dict(m) for m in features.TEMPLATE_TURNS],
        "WEATHER_TOOL": features.WEATHER_TOOL,
        "ANSWER_SCHEMA": features.ANSWER_SCHEMA,
        "LONG_FILLER": features.LONG_FILLER,
        "LONG_MAX_TOKENS": features.LONG_MAX_TOKENS,
        "LONG_WINDOW": long_window,
        "LONG_TARGET": features.long_prompt_target(long_window, sliding)[0] if long_window else 0,
        "RANDOM_WEIGHTS": _random_weights(model_dir),
        "THROUGHPUT_PROMPT": throughput.user_prompt(),
        "THROUGHPUT_OUTPUT_LEN": throughput.OUTPUT_LEN,
        "THROUGHPUT_REQUESTS": throughput.PROMPTS_PER_SLOT,
        "DTYPE": options.get("dtype"),
    }
    if engine in ("vllm", "sglang"):
        out["DTYPE"] = str(options.get("dtype") or base.model_dtype(config))
        out["WINDOW"] = int(options["max_model_len"]) if options.get("max_model_len") else server_window
        out["SERVER_ARGS"] = _server_args(engine, model_dir, out["DTYPE"], out["WINDOW"], options, stages)
    if stage == "lora":
        out["LORA_ADAPTER"] = options.get("lora_adapter")
    if engine == "llamacpp":
        from probes import gguf_convert
        from probes.engines.llamacpp import eos_token_ids, pretokenizer_fallback

        out.update(
            CONVERTER=str(
                options.get("converter_dir") or Path(python).parent.parent / gguf_convert.CONVERTER_DIRNAME
            ),
            GGUF_OUT=str(log_dir / "bare-model.gguf"),
            OUTTYPE=str(options.get("gguf_outtype") or gguf_convert.outtype_for(config)),
            CONVERT_ARGS=[str(a) for a in options.get("convert_args", ())],
            PRETOKENIZER_FALLBACK=pretokenizer_fallback(options, model_dir),
            N_CTX=int(options.get("n_ctx", 512)),
            EOS_IDS=eos_token_ids(model_dir),
        )
        if stage == "quantize":
            from probes import quantize

            out.update(
                QUANT_TYPES=[dict(vars(t), mix=list(t.mix)) for t in quantize.selected_types(options)],
                QUANT_DIR=str(log_dir),
                QUANTIZE_INPUT=options.get("quantize_input"),
            )
    if engine in ("peft", "trl"):
        from probes.engines import peft_engine, trl_engine

        out.update(
            TRAIN_TEXTS=list(peft_engine.TRAIN_TEXTS),
            CHAT_SAMPLE=[dict(m) for m in trl_engine.CHAT_SAMPLE],
            STEPS=int(options.get("finetune_steps", peft_engine.STEPS))
            if engine == "peft"
            else int(options.get("sft_steps", trl_engine.SFT_STEPS)),
            LEARNING_RATE=peft_engine.LEARNING_RATE,
            LORA_RANK=peft_engine.LORA_RANK,
            ATTENTION_PROJECTIONS=list(peft_engine.ATTENTION_PROJECTIONS),
            MERGE_EXACT=peft_engine.MERGE_EXACT,
        )
    return out


def _random_weights(model_dir: Path) -> bool:
    from probes.modelinfo import random_weights

    try:
        return bool(random_weights(model_dir))
    except Exception:  # noqa: BLE001 - an unreadable model dir: the engine will say so
        return False


def _server_args(
    engine: str, model_dir: Path, dtype: str, window: int | None, options: dict[str, Any], stages: list[str]
) -> list[str]:
    """The server flags the probe starts the engine with ({port} is filled in by the script)."""
    trust = bool(options.get("trust_remote_code"))
    if engine == "vllm":
        from probes.engines import vllm_engine

        return vllm_engine.server_flags(model_dir, "{port}", dtype, window, stages, trust)
    from probes.engines import sglang_engine

    return sglang_engine.server_flags(model_dir, "{port}", dtype, window, options, trust)


def _spec(engine: str | EngineSpec) -> EngineSpec:
    return engine if isinstance(engine, EngineSpec) else get_spec(engine)


def script_text(engine: str | EngineSpec, stage: str, values: dict[str, Any]) -> str:
    """The whole script: constants, the embedded rules, common.py, the engine's template."""
    spec = _spec(engine)
    if spec.bare_template is None:
        raise KeyError(f"no bare reproduction for engine {spec.name!r}")
    lines = [
        '"""dayone bare reproduction: {} {} of {}.'.format(spec.name, stage, values["MODEL"]),
        "",
        "Standard library + the engine only. Exit 0: the stage passes; 1: it fails (the",
        f"engine's own error above); {NO_VERDICT}: no verdict here. Written by dayone.",
        '"""',
        "from __future__ import annotations",
        "",
        "from dataclasses import dataclass, field",
        "from typing import Any, Mapping",
        "",
        "Completion = Mapping[str, Any]",
    ]
    lines += [f"{name} = {value!r}" for name, value in values.items()]
    lines += [f"{name} = {getattr(parity, name)!r}" for name in RULE_CONSTANTS]
    text = "\n".join(lines) + "\n\n"
    text += _embedded_source() + "\n\n"
    text += (TEMPLATES / "common.py").read_text(encoding="utf-8") + "\n\n"
    text += (TEMPLATES / f"{spec.bare_template}.py").read_text(encoding="utf-8")
    return text + '\n\nif __name__ == "__main__":\n    run(STAGE)\n'


def bare_env(engine: str | EngineSpec, log_dir: Path, options: dict[str, Any]) -> dict[str, str]:
    """The variables the probe's child gives the engine, for the reproduce line."""
    spec = _spec(engine)
    env, engine = dict(spec.env), spec.name
    if engine == "vllm":
        env.update(
            {
                "VLLM_CPU_KVCACHE_SPACE": str(options.get("kv_cache_gib", 1)),
                "VLLM_CACHE_ROOT": str(log_dir / "vllm-cache"),
                "HF_HOME": str(log_dir / "hf-home"),
                "TRANSFORMERS_OFFLINE": "1",
            }
        )
        if not options.get("torch_compile", False):
            env["TORCHDYNAMO_DISABLE"] = "1"
    if engine == "sglang":
        env.update(
            {
                "HF_HOME": str(log_dir / "hf-home"),
                "TRANSFORMERS_OFFLINE": "1",
                "SGLANG_DISABLE_REQUEST_LOGGING": "1",
                "SGLANG_PYSPY_DUMP_BEFORE_CRASH": "0",
                "SGLANG_CUDA_COREDUMP_BEFORE_CRASH": "0",
            }
        )
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def write_scripts(
    engine: str | EngineSpec,
    stages: list[str],
    model_dir: Path,
    log_dir: Path,
    python: str,
    options: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Write `<log_dir>/reproduce-<stage>.py` for each stage; {stage: the shell line that runs
    it}. Engines without templates (internal ones) get none. ENGINE: its spec (resolved once
    by the caller), or its name."""
    options = dict(options or {})
    spec = _spec(engine)
    if spec.bare_template is None:
        return {}
    log_dir.mkdir(parents=True, exist_ok=True)
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(bare_env(spec, log_dir, options).items()))
    out = {}
    for stage in stages:
        path = log_dir / f"reproduce-{stage}.py"
        values = constants(spec.name, stage, Path(model_dir), log_dir, python, options, stages)
        path.write_text(script_text(spec, stage, values), encoding="utf-8")
        out[stage] = f"{env} {shlex.quote(python)} {shlex.quote(str(path))}".strip()
    return out
