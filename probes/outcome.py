"""What a stage ends with: its outcome, the two ways it fails, and an exception as the one line
a record's message and the log classifier read. Standard library only: every stage module
(engines, parity, features, serving, throughput) and the child build on it."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StageOutcome:
    status: str = "pass"
    metrics: dict[str, Any] = field(default_factory=dict)
    message: str | None = None
    failure_class: str | None = None
    # Bulky, non-scalar output (token ids, logprobs): kept in the record's `output` field.
    output: dict[str, Any] | None = None


class StageFailure(Exception):
    """The engine did run but its result is wrong in a way we detected (not a crash)."""

    def __init__(
        self,
        message: str,
        failure_class: str | None = None,
        *,
        status: str = "fail",
        metrics: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.failure_class = failure_class
        self.status = status
        self.metrics = metrics or {}


class HarnessError(Exception):
    """Our side failed (bad option, missing reference, tool missing): `error` / `infra`."""


def one_line(exc: BaseException, limit: int = 500) -> str:
    """The exception as one line, as `traceback` names it (module-qualified outside builtins):
    multi-line messages (PEFT's module reprs) keep every part, joined; past `limit`, cut and
    marked ` ...`."""
    text = " ".join(
        line.strip()
        for line in "".join(traceback.format_exception_only(type(exc), exc)).splitlines()
        if line.strip()
    )
    return (text[:limit] + " ...") if len(text) > limit else (text or type(exc).__name__)
