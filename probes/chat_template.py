"""A model's chat template, once: find it, render it, count its tokens, check a server used it.

Two stages check the template: `serve` (the engine's default request; the server's prompt must
have exactly the tokens transformers' `apply_chat_template` gives, or, for llama.cpp, the server
must say it took the template the GGUF carries) and `chat_template` (every role; the template
rendered here, counted with one token of slack). Both decide here.

Standard library at import; jinja2, `tokenizers` and transformers only inside the functions that
need them (the probe child's engine environment has them).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from probes.outcome import HarnessError

# The files a template and its special tokens come from, in the order transformers reads them.
MODEL_TEXT_FILES = (
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
# llama-cpp-python's words when its server takes the template written into the GGUF.
GGUF_TEMPLATE_LINE = "Using gguf chat template"


# Find


def read_model_files(model_dir: Path) -> dict[str, str]:
    out = {}
    for name in MODEL_TEXT_FILES:
        try:
            out[name] = (Path(model_dir) / name).read_text(encoding="utf-8")
        except OSError:
            continue
    return out


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


def find(model_dir: Path) -> str | None:
    """The chat template MODEL_DIR ships, None when it ships none."""
    return template_from_files(read_model_files(model_dir))


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


# Render


def render_template(
    template: str,
    messages: list[dict[str, str]],
    specials: dict[str, str],
    tools: list[dict[str, Any]] | None = None,
) -> str:
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
        return json.dumps(
            value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: time.strftime(fmt)
    return env.from_string(template).render(
        messages=messages, tools=tools, add_generation_prompt=True, **specials
    )


def render_turns(
    template: str, files: dict[str, str], turns: list[dict[str, str]]
) -> tuple[str, list[dict[str, str]], bool]:
    """(rendered text, the messages rendered, system role kept?). A template may refuse a
    system turn (Gemma): that is not broken, the turns are rendered without it. Any other
    error is raised."""
    specials = special_tokens(files)
    try:
        return render_template(template, turns, specials), turns, True
    except Exception as exc:
        if "system" not in str(exc).lower():
            raise
        return render_template(template, turns[1:], specials), turns[1:], False


# Count


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


def applied_tokens(model_dir: Path, messages: list[dict[str, str]]) -> int | None:
    """Token count of the model's own chat template applied to MESSAGES by transformers
    (None if the model has no template): what a server that uses the model's template must
    see."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if not getattr(tok, "chat_template", None):
        return None
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


# Check (pure)


def prompt_mismatch(
    server_tokens: int | None, template_tokens: int | None, slack: int = 0, unsaid_ok: bool = True
) -> str | None:
    """Why the server's prompt is not the template's (more than SLACK tokens apart), None when
    it is, when the template's count is unknown, or (UNSAID_OK) when the server gave none."""
    if template_tokens is None or (server_tokens is None and unsaid_ok):
        return None
    if server_tokens is not None and abs(server_tokens - template_tokens) <= slack:
        return None
    return (
        f"the server's prompt has {server_tokens} tokens, the model's chat template gives "
        f"{template_tokens}: the server did not use the model's template"
    )


def gguf_template_used(server_log: str) -> bool:
    """llama-cpp-python's server took the chat template written into the GGUF."""
    return GGUF_TEMPLATE_LINE in server_log
