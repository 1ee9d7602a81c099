"""Is a red the engine's? The bare reproduction's outcome against the probe's verdict. Pure.

A red (`fail`, `timeout`, `oom`) is *confirmed* when the bare script (the engine alone, no
dayone) fails the same way: the same status, the same failure class and the same telling line
once addresses, numbers and paths are set aside (for wrong output the numbers stay: the same
divergent tokens). A bare pass means the red was ours: the record becomes `error` /
`harness_disagrees`. A bare failure of another kind keeps the red, unconfirmed, with both lines.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from probes.classify import classify, status_for_class, telling_line
from probes.record import Record

RED_STATUSES: frozenset[str] = frozenset({"fail", "timeout", "oom"})
HARNESS_DISAGREES = "harness_disagrees"
NO_VERDICT_EXIT = 3
BARE_MARK = "dayone-bare:"  # how a bare script says its own verdict (probes/bare/)
NO_VERDICT_MARK = f"{BARE_MARK} no verdict"

# What a confirmation may conclude (the record's `confirmation.verdict`).
CONFIRMED, DISAGREES, DIFFERS, NO_VERDICT = ("confirmed", "harness_disagrees", "differs", "no_verdict")

_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
_SET = re.compile(r"\{('[^']*'(?:, '[^']*')*)\}")
# a set cut short where the telling line is cut: two runs cut it after other items
_CUT_SET = re.compile(r"\{'[^{}]*$")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[^\s'\",:()\[\]]+)+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_PREFIX = re.compile(r"^(?:dayone(?:-bare)?:\s*(?:stage \w+ failed:\s*)?)+")
_WRAPPERS = re.compile(r"^(?:engine died \([^)]*\):\s*|LoRA \w+:\s*)")


@dataclass(frozen=True)
class BareOutcome:
    """What the bare command did (from the watchdog that ran it)."""

    returncode: int | None
    timed_out: bool
    memory_exceeded: bool
    log_text: str
    log_path: str | None = None
    duration_s: float = 0.0


@dataclass(frozen=True)
class Confirmation:
    confirmed: bool | None
    verdict: str  # confirmed / harness_disagrees / differs / no_verdict
    message: str
    bare_status: str
    bare_failure_class: str | None
    bare_line: str | None
    probe_line: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_red(status: str) -> bool:
    return status in RED_STATUSES


def normalise(line: str | None, keep_numbers: bool = False) -> str:
    """A telling line without what differs between two runs of the same failure."""
    if not line:
        return ""
    text = _WRAPPERS.sub("", _PREFIX.sub("", line.strip()))
    # a set's repr lists its items in hash order, which differs between two runs
    text = _SET.sub(lambda m: "{" + ", ".join(sorted(m.group(1).split(", "))) + "}", text)
    text = _CUT_SET.sub("{...", text)
    text = _ADDRESS.sub("<addr>", text)
    text = _PATH.sub("<path>", text)
    if not keep_numbers:
        text = _NUMBER.sub("<n>", text)
    return " ".join(text.split())


def line_of(log_text: str, engine: str | None) -> tuple[str | None, str]:
    """(telling line, failure class) of a log: the rule's line, else the most telling one."""
    m = classify(log_text, engine)
    if m.rule is not None:
        return m.line, m.failure_class
    told = telling_line(log_text)
    return (told[0] if told else None), m.failure_class


def bare_verdict(bare: BareOutcome, engine: str | None) -> tuple[str, str | None, str | None]:
    """(status, failure class, telling line) of the bare run."""
    if bare.memory_exceeded:
        return "oom", "out_of_memory", "killed: memory over the limit"
    if bare.timed_out:
        return "timeout", "timeout", "no answer within the time limit"
    if bare.returncode == 0:
        return "pass", None, None
    if bare.returncode == NO_VERDICT_EXIT and NO_VERDICT_MARK in bare.log_text:
        said = next((ln for ln in reversed(bare.log_text.splitlines()) if NO_VERDICT_MARK in ln), None)
        return "no_verdict", None, said
    line, klass = line_of(bare.log_text, engine)
    if line is None:  # the engine said nothing telling: the bare check's own reason is the line
        line = next(
            (ln.strip() for ln in reversed(bare.log_text.splitlines()) if ln.startswith(BARE_MARK)), None
        )
    rc = bare.returncode
    # killed by a signal (a shell reports it as 128 + N) with nothing the rules know
    if rc is not None and (rc < 0 or 128 < rc < 160) and klass == "unknown":
        klass = "crash"
    status = status_for_class(klass)
    return ("fail" if status == "error" else status), klass, line


def decide(record: Mapping[str, Any], probe_log: str, bare: BareOutcome) -> Confirmation:
    """The confirmation of one red record, given its probe's log and the bare run."""
    engine = (record.get("engine") or {}).get("name")
    status, klass = record["status"], record.get("failure_class")
    probe_line, log_class = line_of(probe_log, engine) if probe_log else (None, None)
    # The engine module may name the class itself (llama.cpp's convert: conversion_failed);
    # the same rules over the bare log give the class of the probe's log.
    classes = {klass, log_class}
    probe_line = probe_line or record.get("message")
    if klass == "wrong_output" and record.get("stage") == "parity" and record.get("message"):
        # Parity's own divergence decided it; the log holds every stage's, and a later one
        # (llama.cpp's quantize compares its quantized copies) would be taken for parity's.
        # (quantize's message is a summary of its types; its line is the log's last, its own.)
        probe_line = record["message"]
    b_status, b_class, b_line = bare_verdict(bare, engine)

    def result(confirmed: bool | None, verdict: str, message: str) -> Confirmation:
        return Confirmation(confirmed, verdict, message, b_status, b_class, b_line, probe_line)

    if b_status == "no_verdict":
        return result(None, NO_VERDICT, f"the bare check gives no verdict here: {b_line}")
    if b_status in ("pass", "degraded"):
        return result(
            False,
            DISAGREES,
            f"the probe said {status} ({klass or 'no class'}: {probe_line}); the bare "
            f"command passes: the red was the harness's, not the engine's",
        )
    if b_status == status and status in ("timeout", "oom"):
        return result(True, CONFIRMED, f"the bare command also ends in {status}")
    keep = klass == "wrong_output"
    same_line = normalise(probe_line, keep) == normalise(b_line, keep)
    if (
        b_status == status
        and b_class in classes
        and (same_line or klass == "crash" or not (probe_line or b_line))
    ):
        return result(True, CONFIRMED, f"the bare command fails the same way: {b_line}")
    if (
        b_status == status
        and b_class in classes
        and klass not in ("unknown", "crash")
        and not keep
        and _same_rule_words(probe_line, b_line)
    ):
        return result(True, CONFIRMED, f"the bare command fails the same way: {b_line}")
    if (
        b_status == status
        and b_class in classes
        and keep
        and record.get("stage") == "finetune"
        and finetune_problem(b_line) is not None
        and finetune_problem(_first_failure(probe_line)) == finetune_problem(b_line)
    ):
        return result(True, CONFIRMED, f"the bare command fails the same way: {b_line}")
    return result(
        False,
        DIFFERS,
        f"the bare command fails differently: probe {status} ({klass}): "
        f"{probe_line}; bare {b_status} ({b_class}): {b_line}",
    )


# What a fine-tuning run's wrong result is, in the words both the probe (peft_engine,
# trl_engine) and its bare script use: the bare recipe words its checks its own way and stops
# at the first, so a fine-tune red is the same failure when the first problem is of one kind.
FINETUNE_PROBLEMS: tuple[tuple[str, str], ...] = (
    ("non-finite", "non-finite loss"),
    ("not finite", "non-finite loss"),
    ("did not decrease", "loss did not decrease"),
    ("no optimizer step", "no training step"),
    ("does not change", "the adapter has no effect"),
    ("reloaded", "the reloaded adapter differs"),
    ("merged", "the merged model differs"),
    ("SFT ran", "SFT stopped early"),
    ("saved no adapter", "no adapter saved"),
)


def finetune_problem(line: str | None) -> str | None:
    """The kind of a fine-tuning run's wrong result named in `line`, or None."""
    return next((kind for words, kind in FINETUNE_PROBLEMS if words in (line or "")), None)


def _first_failure(line: str | None) -> str | None:
    """The first run's failure of a fine-tune message that lists every run's (`; `-joined)."""
    return (line or "").split("; ")[0] or None


def _same_rule_words(a: str | None, b: str | None) -> bool:
    """One line contains the other once normalised (a wrapper added words around the same
    engine message, e.g. the probe's 'engine died (...)' or the converter's 'ERROR:')."""
    na, nb = normalise(a), normalise(b)
    return bool(na and nb) and (na in nb or nb in na)


def confirmed_record(
    record: Record, c: Confirmation, *, log_path: str | None, command: str | None, at: str, duration_s: float
) -> Record:
    """The record with its confirmation: a harness disagreement turns it `error`, the probe's
    own verdict kept in `confirmation`."""
    out = record.copy()
    out["confirmed"] = c.confirmed
    out["confirmation"] = {
        **c.as_dict(),
        "log_path": log_path,
        "command": command,
        "at": at,
        "duration_s": round(duration_s, 3),
        "probe_status": record["status"],
        "probe_failure_class": record.get("failure_class"),
        "probe_log_path": record.get("log_path"),
    }
    if c.verdict == DISAGREES:
        out["status"] = "error"
        out["failure_class"] = HARNESS_DISAGREES
        out["message"] = c.message
    return out
