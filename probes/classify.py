"""Failure classification: ordered rules kept as data (rules.json), first match wins.

Rules are tried in file order against each line of the log; within a rule the LAST matching
line wins (the engine's final word is usually the real reason). A rule may be limited to some
engines. `unknown` is an honest answer.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

RULES_PATH = Path(__file__).with_name("rules.json")

# Why the HF -> GGUF converter failed, when its log says (else `conversion_failed`): an
# architecture it does not know, a tokenizer it cannot read, a config key it needs.
CONVERSION_CAUSES: tuple[str, ...] = (
    "conversion_unknown_architecture",
    "conversion_tokenizer",
    "conversion_missing_config",
)

# The classes a result may name (shared/design/failures.md); rules.json may only use these.
# `not_on_cpu`: a limit of the engine on a CPU-only host (a CUDA-only kernel or path), which the
# map shows as needing a GPU rather than as a red.
FAILURE_CLASSES: tuple[str, ...] = (
    "unsupported_architecture",
    "config_conflict",
    "conversion_failed",
    *CONVERSION_CAUSES,
    "unsupported_layer",
    "missing_inputs",
    "tokenizer_or_template",
    "wrong_output",
    "kernel_or_dtype",
    "not_on_cpu",
    "out_of_memory",
    "remote_code_required",
    "corrupt_or_missing_weights",
    "slow",
    "crash",
    "infra",
    "timeout",
    "unknown",
    "harness_disagrees",
    "quantization_failed",
)

# The status a failure class implies; every other class is the engine's `fail`.
# `not_on_cpu`: the engine's path does not exist on this hardware, no verdict (not red).
# `harness_disagrees`: the bare reproduction passed where the probe said red (ours).
STATUS_FOR_CLASS: dict[str, str] = {
    "out_of_memory": "oom",
    "timeout": "timeout",
    "infra": "error",
    "not_on_cpu": "needs-gpu",
    "harness_disagrees": "error",
}


@dataclass(frozen=True)
class Rule:
    name: str
    failure_class: str
    pattern: re.Pattern[str]
    engines: tuple[str, ...] = ()  # empty: any engine


@dataclass(frozen=True)
class Match:
    failure_class: str
    rule: str | None
    line: str | None
    line_no: int | None


@lru_cache(maxsize=None)
def load_rules(path: Path = RULES_PATH) -> tuple[Rule, ...]:
    data = json.loads(path.read_text(encoding="utf-8"))
    rules = []
    for raw in data["rules"]:
        if raw["class"] not in FAILURE_CLASSES:
            raise ValueError(f"rule {raw['name']}: unknown class {raw['class']!r}")
        rules.append(
            Rule(raw["name"], raw["class"], re.compile(raw["pattern"]), tuple(raw.get("engines", ())))
        )
    return tuple(rules)


def rules_version(path: Path = RULES_PATH) -> str:
    """Which rules gave a class: a digest of rules.json, so a stored change names its rules."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def classify(log_text: str, engine: str | None = None, rules: tuple[Rule, ...] | None = None) -> Match:
    """The class the rules give a log; Match('unknown', None, None, None) if none matches."""
    lines = log_text.splitlines()
    for rule in rules if rules is not None else load_rules():
        if rule.engines and engine not in rule.engines:
            continue
        for no in range(len(lines) - 1, -1, -1):
            if rule.pattern.search(lines[no]):
                return Match(rule.failure_class, rule.name, lines[no].strip()[:2000], no + 1)
    return Match("unknown", None, None, None)


# When no rule matches, the line that says the most: an engine's own load error, else the
# last Python exception line (a generic wrapper such as "server exited ... before it was
# ready" tells a reader nothing).
TELLING_LINES = (
    re.compile(r"error loading model: .+"),
    re.compile(r"^\s*(?:[\w.]+\.)?[A-Z]\w*(?:Error|Exception)(?::\s.*)?$"),
)
# What an engine's worker puts before the lines it relays (`[rank0]: `, `(EngineCore pid=7) `):
# the same exception reads the same with or without it.
_RELAY_PREFIX = re.compile(r"^\s*(?:\[rank\d+\]:\s*|\([\w-]+ pid=\d+\)\s*)+")


def telling_line(log_text: str) -> tuple[str, int] | None:
    """(line, 1-based number) of the most telling line of a log, or None."""
    lines = [_RELAY_PREFIX.sub("", line) for line in log_text.splitlines()]
    for pattern in TELLING_LINES:
        for no in range(len(lines) - 1, -1, -1):
            if pattern.search(lines[no]):
                return lines[no].strip()[:2000], no + 1
    return None


def status_for_class(failure_class: str | None) -> str:
    return STATUS_FOR_CLASS.get(failure_class or "", "fail")


def excerpt(log_text: str, line_no: int | None, context: int = 3, tail: int = 30) -> str:
    """The matched line with a little context, or the log's last lines."""
    lines = log_text.splitlines()
    if line_no:
        lo, hi = max(0, line_no - 1 - context), min(len(lines), line_no + context)
        return "\n".join(lines[lo:hi])
    return "\n".join(lines[-tail:])
