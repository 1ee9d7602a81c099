"""Serving stages, once, against any OpenAI-compatible server (probes.serving.Server).

An engine module with a running server calls, e.g. (probes/engines/base.py:ServerEngine does):

    features.stage_serve(server, model_dir, max_tokens=16, params={"ignore_eos": True})
    features.stage_chat_template(server, model_dir)
    features.stage_tool_call(server, model_dir, parser="--tool-call-parser hermes")
    features.stage_json_schema(server, model_dir)
    features.stage_long_context(server, model_dir, window=512)

Each returns a StageOutcome or raises StageFailure. What they check:
- serve: the engine's default chat request answered by the assistant with tokens, the server
  using the model's template (how that is told: probes/chat_template.py).
- chat_template: the model's own template renders system/user/assistant turns (a template that
  does not render is `tokenizer_or_template`), and the server's prompt for the same messages
  has the length that template gives (so the server used it, not a default).
- tool_call: a tool schema in, a parsed tool call out (the tool forced by name: random weights
  never choose one); its arguments are JSON valid against the schema. Engines that need a
  parser flag pass it, and it is recorded. On random weights (fixtures, arch-tier copies) a
  forced call whose arguments run to max_tokens is `skipped`, not red: whitespace inside the
  grammar is the weights' choice.
- json_schema: guided decoding returns JSON valid against the schema.
- long_context: a prompt near the model's window (and past its sliding window, where it has
  one) is accepted whole and answered with real tokens.

Standard library only, plus what probes/chat_template.py imports inside the engine's env.
Schemas use enums and booleans only: random weights inside a grammar can otherwise write
digits or whitespace until max_tokens runs out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from probes import chat_template, workload
from probes.chat_template import render_template, template_from_files  # noqa: F401 (API)
from probes.modelinfo import model_config, random_weights
from probes.outcome import HarnessError, StageFailure, StageOutcome
from probes.serving import (
    ChatAnswer,
    Server,
    answer_logprobs,  # noqa: F401 (API)
    free_port,
    refused,
    served_model,
    served_window,
    start_server,
)

# The fixed workload

TEMPLATE_TURNS: tuple[dict[str, str], ...] = (
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Say hello in one word."},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Once more, please."},
)

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "Rome", "Tokyo"]},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    # strict: the arguments must follow the schema. Without it vLLM 0.32 constrains only the
    # call's envelope, and random weights gave arguments "Infinity".
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": WEATHER_SCHEMA,
        "strict": True,
    },
}
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "capital": {"type": "string", "enum": ["Paris", "Rome", "Tokyo"]},
        "sure": {"type": "boolean"},
    },
    "required": ["capital", "sure"],
    "additionalProperties": False,
}

LONG_FILLER = " The quick brown fox jumps over the lazy dog."
LONG_MAX_TOKENS = 8
LONG_NEAR = 0.9  # "near the window": at least this share of it
LONG_LIMIT = 8192  # tokens; a probe on CPU does not send 128k-token prompts


# Decisions (pure)


def schema_errors(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Where VALUE breaks SCHEMA (the JSON-Schema subset our schemas use), [] when valid."""
    errors: list[str] = []
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    kind = schema.get("type")
    if kind in ("integer", "number"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind == "integer":
            ok = ok and float(value).is_integer()
        if not ok:
            return [f"{path}: expected {kind}, got {type(value).__name__}"]
    elif kind and not isinstance(value, types[kind]):
        return [f"{path}: expected {kind}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not one of {schema['enum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing required {key!r}")
        for key, item in value.items():
            if key in props:
                errors += schema_errors(item, props[key], f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected property {key!r}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{path}[{i}]")
    return errors


def parse_json_answer(text: str | None, schema: dict[str, Any]) -> tuple[Any, list[str]]:
    """(value, problems) for a model's JSON answer."""
    if text is None:
        return None, ["no content"]
    try:
        value = json.loads(text)
    except ValueError as exc:
        return None, [f"not valid JSON ({exc.msg} at {exc.pos}): {text[:120]!r}"]
    return value, schema_errors(value, schema)


def context_windows(config: dict[str, Any]) -> tuple[int | None, int | None]:
    """(window, sliding window) a config declares, looking into text_config for multimodal
    models. A sliding window counts only where some layer uses it (layer_types) or no layer
    types are given."""
    sections = [
        config,
        *(
            config[k]
            for k in ("text_config", "language_config", "llm_config")
            if isinstance(config.get(k), dict)
        ),
    ]
    window = sliding = None
    for section in sections:
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
            if isinstance(section.get(key), int) and section[key] > 0:
                window = section[key]
                break
        sw = section.get("sliding_window")
        layer_types = section.get("layer_types")
        uses_sliding = not layer_types or any("sliding" in str(t) for t in layer_types)
        if isinstance(sw, int) and sw > 0 and uses_sliding and section.get("use_sliding_window", True):
            sliding = sw
    return window, sliding


def long_prompt_target(
    window: int, sliding: int | None, limit: int = LONG_LIMIT, max_tokens: int = LONG_MAX_TOKENS
) -> tuple[int, bool]:
    """(prompt tokens to aim for, capped?) for a window: near its end, leaving room to answer."""
    capped = window > limit
    usable = min(window, limit) - max_tokens
    target = max(int(usable * 0.97), 1)
    if sliding and target <= sliding < usable:
        target = usable  # past the sliding window is the point when there is one
    return target, capped


def repeats_for(target: int, overhead: int, per_repeat: float) -> int:
    return max(1, int((target - overhead) / per_repeat)) if per_repeat > 0 else 1


# Stages

SERVE_TEMPLATE_CHECKS = ("applied", "gguf")


def stage_serve(
    server: Server,
    model_dir: Path,
    *,
    max_tokens: int,
    model: str | None = None,
    params: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    template: str = "applied",
    log_lines: int = 40,
) -> StageOutcome:
    """The `serve` stage: the engine's default chat request (workload.CHAT_MESSAGES), answered
    by the assistant with tokens, through the model's own template. TEMPLATE says how the
    server's use of it is checked (probes/chat_template.py): "applied", the server's prompt
    has exactly the tokens transformers' apply_chat_template gives (a server that silently
    used another template fails); "gguf", llama.cpp's server says it took the template the
    GGUF carries (else `degraded`, template, where the model ships one). PARAMS: the engine's
    request fields (forced length, logit bias); METRICS: the engine's own, recorded."""
    if template not in SERVE_TEMPLATE_CHECKS:
        raise HarnessError(f"unknown serve template check {template!r}")
    messages = [dict(m) for m in workload.CHAT_MESSAGES]
    answer = server.chat(messages, model=model, max_tokens=max_tokens, **(params or {}))
    if not answer.ok:
        print(f"dayone: chat completion answered {answer.status}: {answer.excerpt(2000)}", flush=True)
        print(server.log_tail(log_lines), flush=True)  # the server's reason, for the classifier
        raise StageFailure(f"chat completion answered HTTP {answer.status}: {answer.excerpt(500)}")
    content = answer.content
    out = {
        **(metrics or {}),
        "chat_s": round(answer.seconds, 4),
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "finish_reason": answer.finish_reason,
    }
    if (
        answer.message.get("role") not in (None, "assistant")
        or not isinstance(content, str)
        or not content
        or not answer.completion_tokens
    ):
        raise StageFailure(
            f"dayone-wrong-output: empty or malformed answer: {answer.excerpt(500)}",
            "wrong_output",
            metrics=out,
        )
    result = StageOutcome(
        metrics=out,
        message=f"answered {content[:80]!r}",
        output={"chat": {"messages": messages, "text": content}},
    )
    if template == "gguf":
        out["chat_template"] = (
            "gguf" if chat_template.gguf_template_used(server.log_tail(400)) else "fallback"
        )
        if out["chat_template"] != "gguf" and chat_template.find(model_dir) is not None:
            return StageOutcome(
                status="degraded",
                metrics=out,
                failure_class="template",
                message="the GGUF lost the model's chat template: the server "
                "fell back to its default chat format",
                output=result.output,
            )
        return result
    expected = chat_template.applied_tokens(model_dir, messages)
    out["template_prompt_tokens"] = expected
    problem = chat_template.prompt_mismatch(answer.prompt_tokens, expected, unsaid_ok=False)
    if problem:
        raise StageFailure(problem, "tokenizer_or_template", metrics=out)
    return result


def stage_chat_template(server: Server, model_dir: Path, *, model: str | None = None) -> StageOutcome:
    """Every role through the model's own template, rendered here; the server's prompt must
    have its length, with one token of slack (some servers add a BOS the template printed)."""
    files = chat_template.read_model_files(model_dir)
    template = chat_template.template_from_files(files)
    if template is None:
        raise StageFailure(
            "chat_template is not set: the model ships no chat template", "tokenizer_or_template"
        )
    try:
        rendered, messages, system_role = chat_template.render_turns(
            template, files, [dict(m) for m in TEMPLATE_TURNS]
        )
    except Exception as exc:
        import traceback

        traceback.print_exc()  # jinja2's own words go into the log
        raise StageFailure(
            f"the model's chat template does not render: "
            f"{type(exc).__module__}.{type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]}",
            "tokenizer_or_template",
        ) from exc
    missing = [m["role"] for m in messages if m["content"] not in rendered]
    if missing:
        raise StageFailure(
            f"the chat template dropped the {', '.join(missing)} turn(s)", "tokenizer_or_template"
        )
    answer = server.chat(messages, model=model or served_model(server), max_tokens=4)
    if answer.status != 200:
        raise refused(server, "a chat request", answer)
    local_tokens = chat_template.count_tokens(model_dir, rendered)
    metrics: dict[str, Any] = {
        "turns": len(messages),
        "system_role": system_role,
        "rendered_chars": len(rendered),
        "template_tokens": local_tokens,
        "server_prompt_tokens": answer.prompt_tokens,
        "latency_s": round(answer.seconds, 4),
    }
    problem = chat_template.prompt_mismatch(answer.prompt_tokens, local_tokens, slack=1)
    if problem:
        raise StageFailure(problem, "tokenizer_or_template", metrics=metrics)
    return StageOutcome(metrics=metrics)


TOOL_CALL_MAX_TOKENS = 256


def stage_tool_call(
    server: Server,
    model_dir: Path,
    *,
    parser: str | None = None,
    model: str | None = None,
    extra: dict[str, Any] | None = None,
) -> StageOutcome:
    """PARSER: the flag(s) the engine started its server with to parse tool calls, recorded."""
    messages = [{"role": "user", "content": "What is the weather in Paris, in celsius?"}]
    answer = server.chat(
        messages,
        model=model or served_model(server),
        max_tokens=TOOL_CALL_MAX_TOKENS,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        **(extra or {}),
    )
    if answer.status != 200:
        raise refused(server, "a tool-call request", answer)
    metrics: dict[str, Any] = {
        "tool_parser": parser,
        "tool_choice": "named",
        "finish_reason": answer.finish_reason,
        "completion_tokens": answer.completion_tokens,
        "latency_s": round(answer.seconds, 4),
    }
    calls = answer.message.get("tool_calls") or []
    unfinished = unfinished_call_of_random_weights(
        answer.body, model_dir, "get_weather", TOOL_CALL_MAX_TOKENS
    )
    if unfinished:
        return StageOutcome(
            status="skipped",
            metrics=metrics,
            message=(
                f"no verdict on random weights: {unfinished} (the argument grammar allows "
                "whitespace); the full tier decides"
            ),
        )
    if not calls:
        content = str(answer.content)[:120]
        raise StageFailure(
            f"dayone-wrong-output: no tool call in the answer (content {content!r})",
            "wrong_output",
            metrics=metrics,
        )
    function = calls[0].get("function") or {}
    metrics["tool_name"] = function.get("name")
    if function.get("name") != "get_weather":
        raise StageFailure(
            f"dayone-wrong-output: tool call names {function.get('name')!r}, not get_weather",
            "wrong_output",
            metrics=metrics,
        )
    args = function.get("arguments")
    _, problems = (
        (args, schema_errors(args, WEATHER_SCHEMA))
        if isinstance(args, dict)
        else parse_json_answer(args, WEATHER_SCHEMA)
    )
    if problems:
        raise StageFailure(
            f"dayone-wrong-output: tool call arguments: {'; '.join(problems)}",
            "wrong_output",
            metrics=metrics,
        )
    return StageOutcome(metrics=metrics, output={"tool_call": function})


def _unclosed(text: str) -> bool:
    """JSON text cut off: empty or whitespace only, or more `{`/`[` opened than closed."""
    if not text.strip():
        return True
    try:
        json.loads(text)
        return False
    except ValueError:
        return (text.count("{") + text.count("[")) > (text.count("}") + text.count("]"))


def unfinished_call(body: Any, name: str, max_tokens: int | None = None) -> str | None:
    """How the forced call NAME ran out before its arguments closed, or None: the answer is
    whole (right or wrong) or never named the call. Every form an engine answers with: the
    call parsed into tool_calls with arguments cut off or whitespace only, or left unparsed in
    `content` (a `<tool_call>` the parser could not read), with a finish_reason of `length`,
    a completion that used every token, or neither (engines that report `stop` or
    `tool_calls` for a named call)."""
    answer = ChatAnswer(200, body, 0.0)
    content = str(answer.content or "")
    calls = [c for c in (answer.message.get("tool_calls") or []) if isinstance(c, dict)]
    out_of_tokens = answer.finish_reason == "length" or (
        max_tokens is not None and (answer.completion_tokens or 0) >= max_tokens
    )
    ran_out = "at max_tokens" if out_of_tokens else "unclosed"
    for call in calls:
        function = call.get("function") or {}
        args = function.get("arguments")
        if function.get("name") == name and isinstance(args, str) and _unclosed(args):
            return f"the {name} call's arguments {args[:40]!r} are {ran_out}"
    quoted = f'"{name}"'
    if quoted in content:
        rest = content[content.index(quoted) + len(quoted) :]
        after = rest[rest.find("{") :] if "{" in rest else ""
        if out_of_tokens or _unclosed(after):
            return f"the {name} call left in content is {ran_out}"
    return None


def unfinished_call_of_random_weights(
    body: Any, model_dir: Path, name: str, max_tokens: int | None = None
) -> str | None:
    """The engine forced the named call but random weights filled its arguments until they ran
    out (the argument grammar allows whitespace): a fact about the weights, not the engine.
    The reason, or None where the answer can be judged."""
    if not random_weights(model_dir):
        return None
    return unfinished_call(body, name, max_tokens)


def stage_json_schema(
    server: Server, model_dir: Path, *, model: str | None = None, extra: dict[str, Any] | None = None
) -> StageOutcome:
    messages = [{"role": "user", "content": "What is the capital of France? Answer in JSON."}]
    answer = server.chat(
        messages,
        model=model or served_model(server),
        max_tokens=96,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA, "strict": True},
        },
        **(extra or {}),
    )
    if answer.status != 200:
        raise refused(server, "a json_schema request", answer)
    content = answer.content
    metrics: dict[str, Any] = {
        "finish_reason": answer.finish_reason,
        "completion_tokens": answer.completion_tokens,
        "latency_s": round(answer.seconds, 4),
    }
    _, problems = parse_json_answer(content, ANSWER_SCHEMA)
    if problems:
        raise StageFailure(
            f"dayone-wrong-output: guided JSON answer: {'; '.join(problems)}", "wrong_output", metrics=metrics
        )
    return StageOutcome(metrics=metrics, output={"content": content})


def stage_long_context(
    server: Server,
    model_dir: Path,
    *,
    window: int | None = None,
    model: str | None = None,
    limit: int = LONG_LIMIT,
    logprobs: bool = True,
    config: dict[str, Any] | None = None,
) -> StageOutcome:
    """WINDOW: the engine's configured context length if it chose one; else what the server
    says (max_model_len), else the model's config. LOGPROBS: ask for them (servers that do
    not support them ignore or refuse the field; pass False for those that refuse). CONFIG:
    the model's config.json where the engine read it already."""
    config = model_config(model_dir) if config is None else config
    if not config:  # the engine served it, so this is ours
        raise HarnessError("cannot read the model's config.json (missing, unreadable or not a JSON object)")
    model_window, sliding = context_windows(config)
    window = window or served_window(server) or model_window
    if not window:
        raise HarnessError("no context window: neither the engine, the server nor config.json names one")
    model = model or served_model(server)
    target, capped = long_prompt_target(window, sliding, limit)

    def ask(repeats: int, max_tokens: int = 1) -> ChatAnswer:
        text = "Read this and answer in one word." + LONG_FILLER * repeats
        extra = {"logprobs": True, "top_logprobs": 1} if max_tokens > 1 and logprobs else {}
        return server.chat([{"role": "user", "content": text}], model=model, max_tokens=max_tokens, **extra)

    # Calibrate tokens per filler repeat from the server's own count (any tokenizer).
    counts = []
    for repeats in (1, 9):
        answer = ask(repeats)
        if answer.status != 200 or answer.prompt_tokens is None:
            raise refused(server, "a short calibration prompt", answer)
        counts.append(answer.prompt_tokens)
    per_repeat = (counts[1] - counts[0]) / 8
    overhead = counts[0] - per_repeat
    repeats = repeats_for(target, int(overhead), per_repeat)
    for attempt in range(2):
        expected = int(overhead + per_repeat * repeats)
        answer = ask(repeats, LONG_MAX_TOKENS)
        got = answer.prompt_tokens if answer.status == 200 else None
        if attempt or got is None or got >= LONG_NEAR * target:
            break
        # Token merges across repeats make the count a little non-linear: correct once.
        per_repeat = (got - overhead) / repeats
        repeats = repeats_for(target, int(overhead), per_repeat)
    metrics: dict[str, Any] = {
        "window": window,
        "model_window": model_window,
        "sliding_window": sliding,
        "window_capped": capped,
        "target_prompt_tokens": target,
        "latency_s": round(answer.seconds, 4),
    }
    if answer.status != 200:
        raise refused(server, f"a {expected}-token prompt (window {window})", answer)
    prompt_tokens, completion = answer.prompt_tokens, answer.completion_tokens
    content, seconds = answer.content, answer.seconds
    answered_logprobs = answer.logprobs
    metrics["logprobs"] = answered_logprobs is not None
    metrics.update(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        finish_reason=answer.finish_reason,
        past_sliding_window=bool(sliding and prompt_tokens and prompt_tokens > sliding),
        prompt_tok_s=round(prompt_tokens / seconds, 1) if prompt_tokens and seconds else None,
    )
    if prompt_tokens is not None and prompt_tokens < expected * 0.98:
        raise StageFailure(
            f"dayone-wrong-output: the server kept {prompt_tokens} of about "
            f"{expected} prompt tokens (truncated)",
            "wrong_output",
            metrics=metrics,
        )
    if prompt_tokens is not None and prompt_tokens < LONG_NEAR * target:
        raise HarnessError(f"long prompt has {prompt_tokens} tokens, aimed at {target}")
    # Non-finite logits past some position: where the server returns logprobs they show it;
    # where it does not (transformers serve), greedy argmax over NaN picks token 0 each step,
    # a special token, and the answer decodes to nothing at all.
    bad = [v for v in (answered_logprobs or []) if not isinstance(v, (int, float)) or not math.isfinite(v)]
    if bad:
        raise StageFailure(
            f"dayone-wrong-output: non-finite logprobs answering a {prompt_tokens}-token prompt: {bad[:4]}",
            "wrong_output",
            metrics=metrics,
        )
    if not completion or content == "" or content is None:
        raise StageFailure(
            f"dayone-wrong-output: no text for a {prompt_tokens}-token prompt "
            f"({completion} tokens generated, all special)",
            "wrong_output",
            metrics=metrics,
        )
    return StageOutcome(metrics=metrics)


# transformers serve


def start_transformers_serve(
    model_dir: Path,
    workdir: Path,
    *,
    python: str = sys.executable,
    device: str = "cpu",
    timeout_s: float = 120.0,
) -> Server:
    """`transformers serve` (transformers[serving]) on MODEL_DIR, offline, ready on /health.

    Its /v1/models answers 500 until HF_HOME/hub exists, so the workdir gets its own. It
    ignores tool_choice, response_format and logprobs (it logs "Ignoring unsupported fields"):
    tool_call and json_schema do not apply to it.
    """
    port = free_port()
    hf_home = Path(workdir) / "hf-home"
    (hf_home / "hub").mkdir(parents=True, exist_ok=True)
    argv = [
        python,
        "-m",
        "transformers.cli.transformers",
        "serve",
        str(Path(model_dir).resolve()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        device,
        "--log-level",
        "info",
    ]
    env = {
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    return start_server(
        argv,
        port,
        Path(workdir) / "transformers-serve.log",
        ready_path="/health",
        timeout_s=timeout_s,
        env=env,
    )


# By hand

STAGE_FUNCTIONS = {
    "serve": stage_serve,
    "chat_template": stage_chat_template,
    "tool_call": stage_tool_call,
    "json_schema": stage_json_schema,
    "long_context": stage_long_context,
}


def main(argv: list[str] | None = None) -> int:
    """Check a running OpenAI-compatible server (--url), or one `transformers serve` started
    here (--serve transformers): one JSON `end` event per stage on stdout, every stage run."""
    from probes.child import outcome_event

    p = argparse.ArgumentParser(prog="python -m probes.features", description=main.__doc__)
    p.add_argument("--model", required=True, type=Path, help="the model's directory")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="base URL of a running server, e.g. http://127.0.0.1:8000")
    where.add_argument("--serve", choices=["transformers"])
    p.add_argument("--server-log", type=Path, default=None, help="the running server's log")
    p.add_argument("--stages", default=",".join(STAGE_FUNCTIONS))
    p.add_argument("--parser", default=None, help="tool-call parser flag(s) the server has")
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = [s for s in stages if s not in STAGE_FUNCTIONS]
    if unknown:
        p.error(f"unknown stage(s) {unknown}; known: {', '.join(STAGE_FUNCTIONS)}")
    workdir = args.workdir or Path.cwd()
    if args.serve:
        server = start_transformers_serve(args.model, workdir)
    else:
        server = Server(None, args.url.rstrip("/"), args.server_log or Path(os.devnull))
    ok = True
    try:
        for stage in stages:
            kwargs: dict[str, Any] = {"parser": args.parser} if stage == "tool_call" else {}
            if stage == "serve":  # as vLLM's and SGLang's probes ask: a forced length
                kwargs = {
                    "model": served_model(server),
                    "max_tokens": workload.MAX_NEW_TOKENS,
                    "params": {"min_tokens": workload.MAX_NEW_TOKENS, "ignore_eos": True},
                }
            event = outcome_event(
                stage, lambda f=STAGE_FUNCTIONS[stage], kw=kwargs: f(server, args.model, **kw)
            )
            print(json.dumps(event, default=str), flush=True)
            ok = ok and event["status"] in ("pass", "degraded")
    finally:
        if args.serve:
            server.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
