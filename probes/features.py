"""Serving-feature stages, once, against any OpenAI-compatible server (probes.serving.Server).

An engine module with a running server calls, e.g.:

    features.stage_chat_template(server, model_dir)
    features.stage_tool_call(server, model_dir, parser="--tool-call-parser hermes")
    features.stage_json_schema(server, model_dir)
    features.stage_long_context(server, model_dir, window=512)

Each returns a StageOutcome or raises StageFailure. What they check:
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

Standard library only, plus jinja2 (and `tokenizers` where present) inside the engine's env.
Schemas use enums and booleans only: random weights inside a grammar can otherwise write
digits or whitespace until max_tokens runs out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from probes.outcome import HarnessError, StageFailure, StageOutcome
from probes.modelinfo import random_weights, read_json
from probes.serving import Server, free_port, http_json, start_server

# -- the fixed workload ------------------------------------------------------------------------

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
    "function": {"name": "get_weather", "description": "Current weather in a city.",
                 "parameters": WEATHER_SCHEMA, "strict": True},
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


# -- decisions (pure) ----------------------------------------------------------------------------

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


def template_from_files(files: dict[str, str]) -> str | None:
    """The chat template a model ships, from its file texts (name -> text), as transformers
    reads it: chat_template.jinja first, then chat_template.json, then tokenizer_config.json
    (a string, or a list of named templates: "default")."""
    if files.get("chat_template.jinja"):
        return files["chat_template.jinja"]
    for name in ("chat_template.json", "tokenizer_config.json"):
        try:
            value = json.loads(files.get(name) or "{}").get("chat_template")
        except (ValueError, AttributeError):
            continue
        if isinstance(value, list):
            named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
            value = named.get("default") or next(iter(named.values()), None)
        if isinstance(value, str) and value:
            return value
    return None


def special_tokens(files: dict[str, str]) -> dict[str, str]:
    """bos/eos/pad/unk as strings, for templates that print them."""
    out: dict[str, str] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        try:
            data = json.loads(files.get(name) or "{}")
        except ValueError:
            continue
        for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str) and key not in out:
                out[key] = value
    return out


def context_windows(config: dict[str, Any]) -> tuple[int | None, int | None]:
    """(window, sliding window) a config declares, looking into text_config for multimodal
    models. A sliding window counts only where some layer uses it (layer_types) or no layer
    types are given."""
    sections = [config, *(config[k] for k in ("text_config", "language_config", "llm_config")
                          if isinstance(config.get(k), dict))]
    window = sliding = None
    for section in sections:
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length",
                    "seq_length", "n_ctx"):
            if isinstance(section.get(key), int) and section[key] > 0:
                window = section[key]
                break
        sw = section.get("sliding_window")
        layer_types = section.get("layer_types")
        uses_sliding = not layer_types or any("sliding" in str(t) for t in layer_types)
        if isinstance(sw, int) and sw > 0 and uses_sliding and section.get("use_sliding_window",
                                                                             True):
            sliding = sw
    return window, sliding


def long_prompt_target(window: int, sliding: int | None, limit: int = LONG_LIMIT,
                       max_tokens: int = LONG_MAX_TOKENS) -> tuple[int, bool]:
    """(prompt tokens to aim for, capped?) for a window: near its end, leaving room to answer."""
    capped = window > limit
    usable = min(window, limit) - max_tokens
    target = max(int(usable * 0.97), 1)
    if sliding and target <= sliding < usable:
        target = usable  # past the sliding window is the point when there is one
    return target, capped


def repeats_for(target: int, overhead: int, per_repeat: float) -> int:
    return max(1, int((target - overhead) / per_repeat)) if per_repeat > 0 else 1


# -- model files -------------------------------------------------------------------------------

MODEL_TEXT_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json",
                    "special_tokens_map.json", "config.json")


def read_model_files(model_dir: Path) -> dict[str, str]:
    out = {}
    for name in MODEL_TEXT_FILES:
        try:
            out[name] = (Path(model_dir) / name).read_text(encoding="utf-8")
        except OSError:
            continue
    return out


def render_template(template: str, messages: list[dict[str, str]], specials: dict[str, str],
                    tools: list[dict[str, Any]] | None = None) -> str:
    """Render a chat template the way transformers does (sandboxed Jinja, trim_blocks,
    lstrip_blocks, raise_exception, tojson, strftime_now)."""
    try:
        from jinja2 import TemplateError
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as exc:
        raise HarnessError(f"jinja2 is missing from the engine environment: {exc}") from exc

    def raise_exception(message: str):
        raise TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: time.strftime(fmt)
    return env.from_string(template).render(messages=messages, tools=tools,
                                            add_generation_prompt=True, **specials)


def count_tokens(model_dir: Path, text: str) -> int | None:
    """Tokens in TEXT by the model's tokenizer.json, special tokens parsed, none added; None
    where the `tokenizers` package or the file is missing (the check is then skipped)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None
    path = Path(model_dir) / "tokenizer.json"
    if not path.exists():
        return None
    return len(Tokenizer.from_file(str(path)).encode(text, add_special_tokens=False).ids)


# -- server I/O --------------------------------------------------------------------------------

def _first_served(server: Server) -> dict[str, Any]:
    """The first entry of the server's /v1/models ({} when it answers nothing usable)."""
    try:
        status, body = http_json(f"{server.base_url}/v1/models", timeout=30)
    except OSError:
        return {}
    if status == 200 and isinstance(body, dict) and body.get("data"):
        first = body["data"][0]
        return first if isinstance(first, dict) else {}
    return {}


def served_model(server: Server) -> str | None:
    """The model id the server serves (first of /v1/models), for the requests' `model`."""
    return _first_served(server).get("id")


def served_window(server: Server) -> int | None:
    """The context length the server says it serves (vLLM's max_model_len), if it says."""
    value = _first_served(server).get("max_model_len")
    return value if isinstance(value, int) else None


def chat(server: Server, model: str | None, messages: list[dict[str, Any]], *,
         timeout: float = 300.0, **params: Any) -> tuple[int, Any, float]:
    """POST a chat completion; (HTTP status, body, seconds)."""
    payload: dict[str, Any] = {"messages": messages, "temperature": 0, **params}
    if model:
        payload["model"] = model
    t0 = time.perf_counter()
    status, body = http_json(f"{server.base_url}/v1/chat/completions", payload, timeout=timeout)
    return status, body, time.perf_counter() - t0


def refused(server: Server, what: str, status: int, body: Any) -> StageFailure:
    """The server answered with an error: put its words and its log's tail into the probe log
    (where the classifier reads them) and fail, to be classified from the log."""
    detail = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(detail, dict):
        detail = detail.get("message") or json.dumps(detail)
    detail = " ".join(str(detail).split())[:1000]
    print(f"dayone: server answered {what} with HTTP {status}: {detail}", flush=True)
    time.sleep(0.5)  # servers log the traceback after they answer
    tail = server.log_tail(60)
    if tail:
        print("dayone: server log tail:\n" + tail, flush=True)
    return StageFailure(f"server answered {what} with HTTP {status}: {detail[:300]}")


def _message(body: Any) -> dict[str, Any]:
    try:
        return body["choices"][0]["message"] or {}
    except (KeyError, IndexError, TypeError):
        return {}


def _usage(body: Any, key: str) -> int | None:
    try:
        value = body["usage"][key]
    except (KeyError, TypeError):
        return None
    return value if isinstance(value, int) else None


def answer_logprobs(body: Any) -> list[Any] | None:
    """The chosen tokens' logprobs of a chat answer, None where the server gave none. JSON has
    no NaN: servers write NaN (Python's json reads it), null, or a string."""
    try:
        content = body["choices"][0]["logprobs"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(content, list):
        return None
    out: list[Any] = []
    for item in content:
        value = item.get("logprob") if isinstance(item, dict) else None
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        out.append(value)
    return out


def _finish(body: Any) -> str | None:
    try:
        return body["choices"][0].get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None


# -- stages ------------------------------------------------------------------------------------

def stage_chat_template(server: Server, model_dir: Path, *, model: str | None = None
                        ) -> StageOutcome:
    files = read_model_files(model_dir)
    template = template_from_files(files)
    if template is None:
        raise StageFailure("chat_template is not set: the model ships no chat template",
                           "tokenizer_or_template")
    specials = special_tokens(files)
    messages = [dict(m) for m in TEMPLATE_TURNS]
    system_role = True
    try:
        try:
            rendered = render_template(template, messages, specials)
        except Exception as exc:  # a template may refuse a system turn (Gemma): not broken
            if "system" not in str(exc).lower():
                raise
            messages, system_role = messages[1:], False
            rendered = render_template(template, messages, specials)
    except Exception as exc:
        import traceback

        traceback.print_exc()  # jinja2's own words go into the log
        raise StageFailure(f"the model's chat template does not render: "
                           f"{type(exc).__module__}.{type(exc).__name__}: "
                           f"{' '.join(str(exc).split())[:300]}",
                           "tokenizer_or_template") from exc
    missing = [m["role"] for m in messages if m["content"] not in rendered]
    if missing:
        raise StageFailure(f"the chat template dropped the {', '.join(missing)} turn(s)",
                           "tokenizer_or_template")
    model = model or served_model(server)
    status, body, seconds = chat(server, model, messages, max_tokens=4)
    if status != 200:
        raise refused(server, "a chat request", status, body)
    server_tokens = _usage(body, "prompt_tokens")
    local_tokens = count_tokens(model_dir, rendered)
    metrics: dict[str, Any] = {"turns": len(messages), "system_role": system_role,
                               "rendered_chars": len(rendered), "template_tokens": local_tokens,
                               "server_prompt_tokens": server_tokens,
                               "latency_s": round(seconds, 4)}
    # One token of slack: some servers add a BOS the template already printed.
    if server_tokens is not None and local_tokens is not None and \
            abs(server_tokens - local_tokens) > 1:
        raise StageFailure(
            f"the server's prompt has {server_tokens} tokens, the model's chat template gives "
            f"{local_tokens}: the server did not use the model's template",
            "tokenizer_or_template", metrics=metrics)
    return StageOutcome(metrics=metrics)


TOOL_CALL_MAX_TOKENS = 256


def stage_tool_call(server: Server, model_dir: Path, *, parser: str | None = None,
                    model: str | None = None, extra: dict[str, Any] | None = None
                    ) -> StageOutcome:
    """PARSER: the flag(s) the engine started its server with to parse tool calls, recorded."""
    model = model or served_model(server)
    messages = [{"role": "user", "content": "What is the weather in Paris, in celsius?"}]
    status, body, seconds = chat(
        server, model, messages, max_tokens=TOOL_CALL_MAX_TOKENS, tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, **(extra or {}))
    if status != 200:
        raise refused(server, "a tool-call request", status, body)
    metrics: dict[str, Any] = {"tool_parser": parser, "tool_choice": "named",
                               "finish_reason": _finish(body),
                               "completion_tokens": _usage(body, "completion_tokens"),
                               "latency_s": round(seconds, 4)}
    calls = _message(body).get("tool_calls") or []
    unfinished = unfinished_call_of_random_weights(body, model_dir, "get_weather",
                                                   TOOL_CALL_MAX_TOKENS)
    if unfinished:
        return StageOutcome(status="skipped", metrics=metrics, message=(
            f"no verdict on random weights: {unfinished} (the argument grammar allows "
            "whitespace); the full tier decides"))
    if not calls:
        content = str(_message(body).get("content"))[:120]
        raise StageFailure(f"dayone-wrong-output: no tool call in the answer (content "
                           f"{content!r})", "wrong_output", metrics=metrics)
    function = calls[0].get("function") or {}
    metrics["tool_name"] = function.get("name")
    if function.get("name") != "get_weather":
        raise StageFailure(f"dayone-wrong-output: tool call names {function.get('name')!r}, "
                           "not get_weather", "wrong_output", metrics=metrics)
    args = function.get("arguments")
    _, problems = (args, schema_errors(args, WEATHER_SCHEMA)) if isinstance(args, dict) \
        else parse_json_answer(args, WEATHER_SCHEMA)
    if problems:
        raise StageFailure(f"dayone-wrong-output: tool call arguments: {'; '.join(problems)}",
                           "wrong_output", metrics=metrics)
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
    message = _message(body)
    content = str(message.get("content") or "")
    calls = [c for c in (message.get("tool_calls") or []) if isinstance(c, dict)]
    out_of_tokens = _finish(body) == "length" or (
        max_tokens is not None and (_usage(body, "completion_tokens") or 0) >= max_tokens)
    ran_out = "at max_tokens" if out_of_tokens else "unclosed"
    for call in calls:
        function = call.get("function") or {}
        args = function.get("arguments")
        if function.get("name") == name and isinstance(args, str) and _unclosed(args):
            return f"the {name} call's arguments {args[:40]!r} are {ran_out}"
    quoted = f'"{name}"'
    if quoted in content:
        rest = content[content.index(quoted) + len(quoted):]
        after = rest[rest.find("{"):] if "{" in rest else ""
        if out_of_tokens or _unclosed(after):
            return f"the {name} call left in content is {ran_out}"
    return None


def unfinished_call_of_random_weights(body: Any, model_dir: Path, name: str,
                                      max_tokens: int | None = None) -> str | None:
    """The engine forced the named call but random weights filled its arguments until they ran
    out (the argument grammar allows whitespace): a fact about the weights, not the engine.
    The reason, or None where the answer can be judged."""
    if not random_weights(model_dir):
        return None
    return unfinished_call(body, name, max_tokens)


def stage_json_schema(server: Server, model_dir: Path, *, model: str | None = None,
                      extra: dict[str, Any] | None = None) -> StageOutcome:
    model = model or served_model(server)
    messages = [{"role": "user", "content": "What is the capital of France? Answer in JSON."}]
    status, body, seconds = chat(
        server, model, messages, max_tokens=96,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA,
                                         "strict": True}}, **(extra or {}))
    if status != 200:
        raise refused(server, "a json_schema request", status, body)
    content = _message(body).get("content")
    metrics: dict[str, Any] = {"finish_reason": _finish(body),
                               "completion_tokens": _usage(body, "completion_tokens"),
                               "latency_s": round(seconds, 4)}
    _, problems = parse_json_answer(content, ANSWER_SCHEMA)
    if problems:
        raise StageFailure(f"dayone-wrong-output: guided JSON answer: {'; '.join(problems)}",
                           "wrong_output", metrics=metrics)
    return StageOutcome(metrics=metrics, output={"content": content})


def stage_long_context(server: Server, model_dir: Path, *, window: int | None = None,
                       model: str | None = None, limit: int = LONG_LIMIT,
                       logprobs: bool = True) -> StageOutcome:
    """WINDOW: the engine's configured context length if it chose one; else what the server
    says (max_model_len), else the model's config. LOGPROBS: ask for them (servers that do
    not support them ignore or refuse the field; pass False for those that refuse)."""
    config = read_json(Path(model_dir) / "config.json")
    if not config:  # the engine served it, so this is ours
        raise HarnessError("cannot read the model's config.json (missing, unreadable or not a "
                           "JSON object)")
    model_window, sliding = context_windows(config)
    window = window or served_window(server) or model_window
    if not window:
        raise HarnessError("no context window: neither the engine, the server nor "
                           "config.json names one")
    model = model or served_model(server)
    target, capped = long_prompt_target(window, sliding, limit)
    logprobs_ok = logprobs

    def ask(repeats: int, max_tokens: int = 1) -> tuple[int, Any, float]:
        text = "Read this and answer in one word." + LONG_FILLER * repeats
        extra = {"logprobs": True, "top_logprobs": 1} if max_tokens > 1 and logprobs_ok else {}
        return chat(server, model, [{"role": "user", "content": text}], max_tokens=max_tokens,
                    **extra)

    # Calibrate tokens per filler repeat from the server's own count (any tokenizer).
    counts = []
    for repeats in (1, 9):
        status, body, _ = ask(repeats)
        if status != 200 or _usage(body, "prompt_tokens") is None:
            raise refused(server, "a short calibration prompt", status, body)
        counts.append(_usage(body, "prompt_tokens"))
    per_repeat = (counts[1] - counts[0]) / 8
    overhead = counts[0] - per_repeat
    repeats = repeats_for(target, int(overhead), per_repeat)
    for attempt in range(2):
        expected = int(overhead + per_repeat * repeats)
        status, body, seconds = ask(repeats, LONG_MAX_TOKENS)
        got = _usage(body, "prompt_tokens") if status == 200 else None
        if attempt or got is None or got >= LONG_NEAR * target:
            break
        # Token merges across repeats make the count a little non-linear: correct once.
        per_repeat = (got - overhead) / repeats
        repeats = repeats_for(target, int(overhead), per_repeat)
    metrics: dict[str, Any] = {"window": window, "model_window": model_window,
                               "sliding_window": sliding, "window_capped": capped,
                               "target_prompt_tokens": target, "latency_s": round(seconds, 4)}
    if status != 200:
        raise refused(server, f"a {expected}-token prompt (window {window})", status, body)
    prompt_tokens = _usage(body, "prompt_tokens")
    completion = _usage(body, "completion_tokens")
    content = _message(body).get("content")
    logprobs = answer_logprobs(body)
    metrics["logprobs"] = logprobs is not None
    metrics.update(prompt_tokens=prompt_tokens, completion_tokens=completion,
                   finish_reason=_finish(body),
                   past_sliding_window=bool(sliding and prompt_tokens and
                                            prompt_tokens > sliding),
                   prompt_tok_s=round(prompt_tokens / seconds, 1) if prompt_tokens and seconds
                   else None)
    if prompt_tokens is not None and prompt_tokens < expected * 0.98:
        raise StageFailure(f"dayone-wrong-output: the server kept {prompt_tokens} of about "
                           f"{expected} prompt tokens (truncated)", "wrong_output",
                           metrics=metrics)
    if prompt_tokens is not None and prompt_tokens < LONG_NEAR * target:
        raise HarnessError(f"long prompt has {prompt_tokens} tokens, aimed at {target}")
    # Non-finite logits past some position: where the server returns logprobs they show it;
    # where it does not (transformers serve), greedy argmax over NaN picks token 0 each step,
    # a special token, and the answer decodes to nothing at all.
    bad = [v for v in (logprobs or []) if not isinstance(v, (int, float)) or not
           math.isfinite(v)]
    if bad:
        raise StageFailure(f"dayone-wrong-output: non-finite logprobs answering a "
                           f"{prompt_tokens}-token prompt: {bad[:4]}", "wrong_output",
                           metrics=metrics)
    if not completion or content == "" or content is None:
        raise StageFailure(f"dayone-wrong-output: no text for a {prompt_tokens}-token prompt "
                           f"({completion} tokens generated, all special)", "wrong_output",
                           metrics=metrics)
    return StageOutcome(metrics=metrics)


# -- transformers serve ------------------------------------------------------------------------

def start_transformers_serve(model_dir: Path, workdir: Path, *, python: str = sys.executable,
                             device: str = "cpu", timeout_s: float = 120.0) -> Server:
    """`transformers serve` (transformers[serving]) on MODEL_DIR, offline, ready on /health.

    Its /v1/models answers 500 until HF_HOME/hub exists, so the workdir gets its own. It
    ignores tool_choice, response_format and logprobs (it logs "Ignoring unsupported fields"):
    tool_call and json_schema do not apply to it.
    """
    port = free_port()
    hf_home = Path(workdir) / "hf-home"
    (hf_home / "hub").mkdir(parents=True, exist_ok=True)
    argv = [python, "-m", "transformers.cli.transformers", "serve",
            str(Path(model_dir).resolve()), "--host", "127.0.0.1", "--port", str(port),
            "--device", device, "--log-level", "info"]
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return start_server(argv, port, Path(workdir) / "transformers-serve.log",
                        ready_path="/health", timeout_s=timeout_s, env=env)


# -- by hand -----------------------------------------------------------------------------------

STAGE_FUNCTIONS = {"chat_template": stage_chat_template, "tool_call": stage_tool_call,
                   "json_schema": stage_json_schema, "long_context": stage_long_context}


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
            kwargs = {"parser": args.parser} if stage == "tool_call" else {}
            event = outcome_event(
                stage, lambda f=STAGE_FUNCTIONS[stage], kw=kwargs: f(server, args.model, **kw))
            print(json.dumps(event, default=str), flush=True)
            ok = ok and event["status"] in ("pass", "degraded")
    finally:
        if args.serve:
            server.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
